import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { RuleError } from '../../src/rules/compile.ts'
import { evaluateDelta, evaluateThreshold, type Sample } from '../../src/rules/evaluate.ts'
import { addNeed, placeSample } from '../../src/rules/history.ts'
import { RuleLoadError, checkOverride, loadRuleDir, parseRuleFile, type LoadedRule } from '../../src/rules/load.ts'
import { parseComparison, parseDuration, type DeltaRule, type Rule, type ThresholdRule } from '../../src/rules/spec.ts'

const SHIPPED = fileURLToPath(new URL('../../rules', import.meta.url))
const shipped = loadRuleDir(SHIPPED)

const HOUR = 3_600_000
const T0 = Date.parse('2026-11-25T08:00:00Z')

const loaded = (id: string): LoadedRule => {
  const l = shipped.rules.get(id)
  if (!l) throw new Error(`no shipped rule ${id}`)
  return l
}
const threshold = (id: string): ThresholdRule => {
  const r = loaded(id).rule
  if (r.kind !== 'threshold') throw new Error(`${id} is a ${r.kind} rule`)
  return r
}
const delta = (id: string): DeltaRule => {
  const r = loaded(id).rule
  if (r.kind !== 'delta') throw new Error(`${id} is a ${r.kind} rule`)
  return r
}

/** One patient's readings, oldest first; `t` in hours after T0 (one hour apart unless given). */
const series = (...readings: Array<Record<string, number> | [hours: number, values: Record<string, number>]>): Sample[] =>
  readings.map((r, i) => (Array.isArray(r) ? { readingId: i + 1, t: T0 + r[0] * HOUR, values: r[1] } : { readingId: i + 1, t: T0 + i * HOUR, values: r }))

/** The verdict on the newest of these readings. */
const onLast = (rule: ThresholdRule | DeltaRule, samples: Sample[]) =>
  rule.kind === 'threshold' ? evaluateThreshold(rule, samples, samples.length - 1) : evaluateDelta(rule, samples, samples.length - 1)

/** Compiles rules written in a test, failing the test on any problem. */
function compiled(text: string): Rule[] {
  const { rules, problems } = parseRuleFile('test.yaml', text)
  expect(problems).toEqual([])
  return rules.map((l) => l.rule)
}

const bp = (systolicMmHg: number, diastolicMmHg: number) => ({ systolicMmHg, diastolicMmHg, pulseBpm: 72 })

describe('the shipped rules', () => {
  it('load without a problem, each with its clinical source and where it was written', () => {
    expect([...shipped.rules.keys()].sort()).toEqual([
      'bp-crisis', 'bp-low', 'bp-stage-2', 'device-offline', 'fever', 'glucose-high', 'glucose-low', 'heart-rate-high', 'heart-rate-low',
      'missed-dose', 'no-readings', 'spo2-low', 'weight-gain-day', 'weight-gain-week',
    ])
    for (const { rule } of shipped.rules.values()) {
      expect(rule.source, rule.id).toMatch(/\S/)
      expect(rule.enabled, rule.id).toBe(true)
      expect(rule.file, rule.id).toMatch(/\.yaml$/)
      expect(rule.line, rule.id).toBeGreaterThan(0)
    }
  })

  it('silence and event rules have the documented timing and severity', () => {
    expect(loaded('no-readings').rule).toMatchObject({ kind: 'missing', reading: 'any', afterMs: 48 * HOUR, severity: 'warning' })
    expect(loaded('device-offline').rule).toMatchObject({ kind: 'offline', afterMs: 24 * HOUR, severity: 'info' })
    expect(loaded('missed-dose').rule).toMatchObject({ kind: 'event', event: 'dose.missed', clearOn: 'dose.taken', severity: 'warning' })
    expect(loaded('bp-stage-2').rule.cooldownMs).toBe(12 * HOUR)
  })
})

describe('every shipped threshold at its boundaries (one reading)', () => {
  // [rule, values just on the safe side, values just over the line, severity raised]
  const cases: Array<[string, string, Record<string, number>, Record<string, number>, string]> = [
    // ACC/AHA 2017 crisis: > 180 systolic and/or > 120 diastolic.
    ['bp-crisis', 'systolic 180 / 181', bp(180, 80), bp(181, 80), 'urgent'],
    ['bp-crisis', 'diastolic 120 / 121', bp(150, 120), bp(150, 121), 'urgent'],
    ['bp-low', 'systolic 90 / 89', bp(90, 60), bp(89, 60), 'warning'],
    // ADA: level 1 < 70, level 2 < 54 mg/dL.
    ['glucose-low', 'level 1: 70 / 69', { glucoseMgDl: 70 }, { glucoseMgDl: 69 }, 'warning'],
    ['glucose-low', 'level 2: 54 / 53', { glucoseMgDl: 54 }, { glucoseMgDl: 53 }, 'urgent'],
    ['glucose-high', 'warning: 250 / 251', { glucoseMgDl: 250 }, { glucoseMgDl: 251 }, 'warning'],
    ['glucose-high', 'urgent: 400 / 401', { glucoseMgDl: 400 }, { glucoseMgDl: 401 }, 'urgent'],
    // BTS 2017: < 92 warning, < 88 urgent.
    ['spo2-low', 'warning: 92 / 91', { spo2Percent: 92, pulseBpm: 80 }, { spo2Percent: 91, pulseBpm: 80 }, 'warning'],
    ['spo2-low', 'urgent: 88 / 87', { spo2Percent: 88, pulseBpm: 80 }, { spo2Percent: 87, pulseBpm: 80 }, 'urgent'],
    ['heart-rate-high', '120 / 121', { heartRateBpm: 120 }, { heartRateBpm: 121 }, 'warning'],
    ['heart-rate-low', '40 / 39', { heartRateBpm: 40 }, { heartRateBpm: 39 }, 'warning'],
    // CDC: fever >= 38.0 C; >= 39.5 C urgent.
    ['fever', 'warning: 37.9 / 38.0', { temperatureC: 37.9 }, { temperatureC: 38.0 }, 'warning'],
    ['fever', 'urgent: 39.4 / 39.5', { temperatureC: 39.4 }, { temperatureC: 39.5 }, 'urgent'],
  ]
  it.each(cases)('%s %s', (id, _name, below, over, severity) => {
    const rule = threshold(id)
    expect(onLast(rule, series(below)).severity).not.toBe(severity)
    const raised = onLast(rule, series(over))
    expect(raised.severity).toBe(severity)
    expect(raised.values).toEqual(over)
  })

  it('one step past the line stays at the level; the worst level that holds wins', () => {
    expect(onLast(threshold('bp-crisis'), series(bp(182, 122))).severity).toBe('urgent')
    expect(onLast(threshold('glucose-low'), series({ glucoseMgDl: 54 })).severity).toBe('warning')
    expect(onLast(threshold('glucose-low'), series({ glucoseMgDl: 40 })).severity).toBe('urgent')
    expect(onLast(threshold('glucose-high'), series({ glucoseMgDl: 600 })).severity).toBe('urgent')
    expect(onLast(threshold('spo2-low'), series({ spo2Percent: 80 })).severity).toBe('urgent')
    expect(onLast(threshold('fever'), series({ temperatureC: 41 })).severity).toBe('urgent')
  })

  it('readings of normal values raise nothing and clear every rule', () => {
    const normal: Array<[string, Record<string, number>]> = [
      ['bp-crisis', bp(118, 76)], ['bp-low', bp(118, 76)], ['glucose-low', { glucoseMgDl: 100 }], ['glucose-high', { glucoseMgDl: 100 }],
      ['spo2-low', { spo2Percent: 97 }], ['heart-rate-high', { heartRateBpm: 70 }], ['heart-rate-low', { heartRateBpm: 70 }], ['fever', { temperatureC: 36.8 }],
    ]
    for (const [id, values] of normal) expect(onLast(threshold(id), series(values)), id).toMatchObject({ severity: null, clear: true })
    expect(onLast(threshold('bp-stage-2'), series(bp(118, 76), bp(118, 76))), 'bp-stage-2').toMatchObject({ severity: null, clear: true })
  })
})

describe('bp-stage-2: >= 140/90 on 3 readings in a row', () => {
  const rule = threshold('bp-stage-2')

  it('needs three consecutive readings at or over the line', () => {
    expect(onLast(rule, series(bp(140, 80))).severity).toBeNull()
    expect(onLast(rule, series(bp(140, 80), bp(140, 80))).severity).toBeNull()
    expect(onLast(rule, series(bp(140, 80), bp(140, 80), bp(140, 80))).severity).toBe('warning')
    // Diastolic alone counts (any:), and the three may cross by different fields.
    expect(onLast(rule, series(bp(120, 90), bp(120, 90), bp(120, 90))).severity).toBe('warning')
    expect(onLast(rule, series(bp(145, 80), bp(120, 92), bp(139, 90))).severity).toBe('warning')
    // Just under on both: nothing.
    expect(onLast(rule, series(bp(139, 89), bp(139, 89), bp(139, 89))).severity).toBeNull()
  })

  it('a reading under the line breaks the run', () => {
    const broken = series(bp(150, 95), bp(150, 95), bp(139, 89), bp(150, 95), bp(150, 95))
    expect(onLast(rule, broken).severity).toBeNull()
    expect(onLast(rule, [...broken, { readingId: 6, t: T0 + 5 * HOUR, values: bp(150, 95) }]).severity).toBe('warning')
    // Only the last three count: an earlier run does not carry over past a normal reading.
    expect(onLast(rule, series(bp(150, 95), bp(150, 95), bp(150, 95), bp(130, 80))).severity).toBeNull()
  })

  it('clears at the home target (< 135/85) only on two readings in a row; between the lines neither', () => {
    // 138/88: under the raise line, over the clear line.
    expect(onLast(rule, series(bp(150, 95), bp(138, 88)))).toMatchObject({ severity: null, clear: false })
    expect(onLast(rule, series(bp(150, 95), bp(134, 84)))).toMatchObject({ severity: null, clear: false })
    expect(onLast(rule, series(bp(150, 95), bp(134, 84), bp(134, 84)))).toMatchObject({ severity: null, clear: true })
    expect(onLast(rule, series(bp(134, 84), bp(135, 84), bp(134, 84)))).toMatchObject({ severity: null, clear: false })
    expect(onLast(rule, series(bp(134, 84), bp(134, 85), bp(134, 84)))).toMatchObject({ severity: null, clear: false })
  })
})

describe('hysteresis: between the raise and the clear lines neither happens', () => {
  // [rule, in the band, first value that clears]
  const cases: Array<[string, Record<string, number>, Record<string, number>]> = [
    ['bp-crisis', bp(165, 105), bp(159, 99)],
    ['bp-crisis', bp(160, 90), bp(159, 90)],
    ['bp-crisis', bp(150, 100), bp(150, 99)],
    ['bp-low', bp(94, 60), bp(95, 60)],
    ['glucose-low', { glucoseMgDl: 79 }, { glucoseMgDl: 80 }],
    ['glucose-high', { glucoseMgDl: 201 }, { glucoseMgDl: 200 }],
    ['spo2-low', { spo2Percent: 93 }, { spo2Percent: 94 }],
    ['heart-rate-high', { heartRateBpm: 111 }, { heartRateBpm: 110 }],
    ['heart-rate-low', { heartRateBpm: 44 }, { heartRateBpm: 45 }],
    ['fever', { temperatureC: 37.5 }, { temperatureC: 37.4 }],
  ]
  it.each(cases)('%s: %o stays, %o clears', (id, band, clears) => {
    const rule = threshold(id)
    expect(onLast(rule, series(band))).toMatchObject({ severity: null, clear: false })
    expect(onLast(rule, series(clears))).toMatchObject({ severity: null, clear: true })
  })

  it('without a clear: condition, a rule clears as soon as no level holds', () => {
    const [rule] = compiled(`rules:
  - id: hr-plain
    title: Fast heart rate, no hysteresis
    kind: threshold
    reading: heart_rate
    levels:
      - severity: warning
        any: { heartRateBpm: "> 120" }
`) as [ThresholdRule]
    expect(onLast(rule, series({ heartRateBpm: 121 }))).toMatchObject({ severity: 'warning', clear: false })
    expect(onLast(rule, series({ heartRateBpm: 120 }))).toMatchObject({ severity: null, clear: true })
  })
})

describe('weight gain (delta rules, against the lowest weight in the window before)', () => {
  const day = delta('weight-gain-day')
  const week = delta('weight-gain-week')

  it('day: >= 0.9 kg within 30 hours', () => {
    expect(onLast(day, series([0, { weightKg: 80 }], [24, { weightKg: 80.8 }])).severity).toBeNull()
    const raised = onLast(day, series([0, { weightKg: 80 }], [24, { weightKg: 80.9 }]))
    expect(raised.severity).toBe('warning')
    expect(raised.values).toEqual({ weightKg: 80.9, change: 0.9, baseline: 80, baselineAt: new Date(T0).toISOString(), windowHours: 30 })
    expect(onLast(day, series([0, { weightKg: 80 }], [24, { weightKg: 81 }])).severity).toBe('warning')
  })

  it('day: a weigh-in exactly 30 hours before counts; one earlier is outside the window', () => {
    expect(onLast(day, series([0, { weightKg: 80 }], [30, { weightKg: 81 }])).severity).toBe('warning')
    expect(onLast(day, [{ readingId: 1, t: T0 - 60_000, values: { weightKg: 80 } }, { readingId: 2, t: T0 + 30 * HOUR, values: { weightKg: 81 } }])).toEqual({
      severity: null, clear: false, values: {},
    })
  })

  it('week: >= 2.26 kg (5 lb) within 7 days, against the lowest weight of the week', () => {
    expect(onLast(week, series([0, { weightKg: 80 }], [144, { weightKg: 82.25 }])).severity).toBeNull()
    expect(onLast(week, series([0, { weightKg: 80 }], [144, { weightKg: 82.26 }])).severity).toBe('warning')
    // 5.0 lb as ingest stores it (2.268 kg).
    expect(onLast(week, series([0, { weightKg: 81.647 }], [144, { weightKg: 83.915 }])).severity).toBe('warning')
    expect(onLast(week, series([0, { weightKg: 80 }], [168, { weightKg: 82.3 }])).severity).toBe('warning')
    // The lowest weight in the week is the baseline, not the first or the latest.
    const lowest = onLast(week, series([0, { weightKg: 81 }], [48, { weightKg: 80 }], [96, { weightKg: 81.5 }], [144, { weightKg: 82.3 }]))
    expect(lowest).toMatchObject({ severity: 'warning', values: { change: 2.3, baseline: 80 } })
    // 2.3 kg over 7 days and 1 minute: outside the window, and the 1.3 kg within it is not enough.
    const outside = [{ readingId: 1, t: T0 - 60_000, values: { weightKg: 80 } }, { readingId: 2, t: T0 + 96 * HOUR, values: { weightKg: 81 } }, { readingId: 3, t: T0 + 168 * HOUR, values: { weightKg: 82.3 } }]
    expect(onLast(week, outside)).toMatchObject({ severity: null, values: { change: 1.3, baseline: 81 } })
  })

  it('pounds converted to kilograms: a 2 lb gain in a day raises', () => {
    // 2 lb = 0.907 kg, as ingest stores it.
    expect(onLast(day, series([0, { weightKg: 81.647 }], [20, { weightKg: 82.554 }])).severity).toBe('warning')
  })

  it('without an earlier weight in the window it says nothing: neither raise nor all clear', () => {
    expect(onLast(day, series({ weightKg: 95 }))).toEqual({ severity: null, clear: false, values: {} })
    expect(onLast(week, series({ weightKg: 95 }))).toEqual({ severity: null, clear: false, values: {} })
  })

  it('a loss is no gain; clears only under its clear line (day < 0.5 kg, week < 1.4 kg)', () => {
    expect(onLast(day, series([0, { weightKg: 80 }], [12, { weightKg: 79 }]))).toMatchObject({ severity: null, clear: true, values: { change: -1 } })
    expect(onLast(day, series([0, { weightKg: 80 }], [12, { weightKg: 80.5 }]))).toMatchObject({ severity: null, clear: false })
    expect(onLast(day, series([0, { weightKg: 80 }], [12, { weightKg: 80.4 }]))).toMatchObject({ severity: null, clear: true })
    expect(onLast(week, series([0, { weightKg: 80 }], [72, { weightKg: 81.4 }]))).toMatchObject({ severity: null, clear: false })
    expect(onLast(week, series([0, { weightKg: 80 }], [72, { weightKg: 81.3 }]))).toMatchObject({ severity: null, clear: true })
  })
})

describe('rules written for a test', () => {
  it('direction: fall compares with the highest value in the window', () => {
    const [rule] = compiled(`rules:
  - id: spo2-drop
    title: Oxygen saturation falling
    kind: delta
    reading: spo2
    field: spo2Percent
    direction: fall
    window: 6h
    levels:
      - severity: warning
        change: ">= 4"
      - severity: urgent
        change: ">= 8"
    clear: { change: "< 2" }
`) as [DeltaRule]
    expect(onLast(rule, series({ spo2Percent: 97 }, { spo2Percent: 95 }, { spo2Percent: 94 }))).toMatchObject({ severity: null, clear: false, values: { change: 3, baseline: 97 } })
    expect(onLast(rule, series({ spo2Percent: 95 }, { spo2Percent: 97 }, { spo2Percent: 93 }))).toMatchObject({ severity: 'warning', values: { change: 4, baseline: 97 } })
    expect(onLast(rule, series({ spo2Percent: 97 }, { spo2Percent: 89 }))).toMatchObject({ severity: 'urgent', values: { change: 8 } })
    // A rise is no fall.
    expect(onLast(rule, series({ spo2Percent: 89 }, { spo2Percent: 97 }))).toMatchObject({ severity: null, clear: true, values: { change: -8 } })
  })

  it('for: a level holds only when the unbroken run of matching readings spans that long', () => {
    const [rule] = compiled(`rules:
  - id: fever-sustained
    title: Fever for 2 hours
    kind: threshold
    reading: temperature
    for: 2h
    levels:
      - severity: warning
        any: { temperatureC: ">= 38.0" }
`) as [ThresholdRule]
    expect(rule.forMs).toBe(2 * HOUR)
    const hot = { temperatureC: 38.4 }
    expect(onLast(rule, series([0, hot]))).toMatchObject({ severity: null, clear: false })
    expect(onLast(rule, series([0, hot], [1, hot]))).toMatchObject({ severity: null, clear: false })
    expect(onLast(rule, series([0, hot], [1.99, hot])).severity).toBeNull()
    expect(onLast(rule, series([0, hot], [1, hot], [2, hot])).severity).toBe('warning')
    // A normal reading in between starts the run again.
    const broken = series([0, hot], [1, { temperatureC: 37.0 }], [2, hot], [3, hot])
    expect(onLast(rule, broken).severity).toBeNull()
    expect(onLast(rule, [...broken, { readingId: 5, t: T0 + 4 * HOUR, values: hot }]).severity).toBe('warning')
  })

  it('consecutive applies to each level: the worst level that holds on the whole run wins', () => {
    const [rule] = compiled(`rules:
  - id: spo2-twice
    title: Low oxygen saturation, confirmed
    kind: threshold
    reading: spo2
    consecutive: 2
    levels:
      - severity: warning
        any: { spo2Percent: "< 92" }
      - severity: urgent
        any: { spo2Percent: "< 88" }
`) as [ThresholdRule]
    expect(onLast(rule, series({ spo2Percent: 85 })).severity).toBeNull()
    expect(onLast(rule, series({ spo2Percent: 90 }, { spo2Percent: 85 })).severity).toBe('warning')
    expect(onLast(rule, series({ spo2Percent: 86 }, { spo2Percent: 85 })).severity).toBe('urgent')
    expect(onLast(rule, series({ spo2Percent: 85 }, { spo2Percent: 93 })).severity).toBeNull()
  })

  it('all: needs every field; a reading without the field does not match', () => {
    const [rule] = compiled(`rules:
  - id: bp-both
    title: Both high
    kind: threshold
    reading: blood_pressure
    levels:
      - severity: warning
        all: { systolicMmHg: ">= 140", diastolicMmHg: ">= 90" }
`) as [ThresholdRule]
    expect(onLast(rule, series(bp(140, 90))).severity).toBe('warning')
    expect(onLast(rule, series(bp(150, 89))).severity).toBeNull()
    expect(onLast(rule, series({ systolicMmHg: 150 })).severity).toBeNull()
  })
})

describe('durations and comparisons', () => {
  it('parses what the schema allows', () => {
    expect(parseDuration('90m')).toBe(90 * 60_000)
    expect(parseDuration('24h')).toBe(24 * HOUR)
    expect(parseDuration('7d')).toBe(7 * 24 * HOUR)
    expect(parseDuration('1d12h')).toBe(36 * HOUR)
    expect(parseDuration('30s')).toBe(30_000)
    expect(parseComparison('> 180')).toEqual({ op: '>', value: 180 })
    expect(parseComparison('>=0.9')).toEqual({ op: '>=', value: 0.9 })
    expect(parseComparison(' <= -1.5 ')).toEqual({ op: '<=', value: -1.5 })
    expect(parseComparison('< 70')).toEqual({ op: '<', value: 70 })
  })

  it('refuses anything else', () => {
    for (const bad of ['2 days', '12', 'h', '1h1d', '-1h']) expect(() => parseDuration(bad), bad).toThrow(/not a duration/)
    for (const bad of ['180', '=> 180', '> 1e3', '> abc', '== 5', '>']) expect(() => parseComparison(bad), bad).toThrow(/not a comparison/)
  })
})

describe('a bad rule file is refused with its file, line, field and what was expected', () => {
  /** The problems found in one file; the file's lines are numbered from 1. */
  const problemsOf = (text: string) => parseRuleFile('vitals.yaml', text).problems
  const lineOf = (text: string, needle: string) => text.split('\n').findIndex((l) => l.includes(needle)) + 1

  const bpFile = (levels: string, extra = '') => `# A comment first, so lines are not trivially 1.
rules:
  - id: bp-test
    title: Test rule
    kind: threshold
    reading: blood_pressure
${extra}    levels:
${levels}`

  it('a comparison that is not one', () => {
    const text = bpFile('      - severity: urgent\n        any: { systolicMmHg: "over 180", diastolicMmHg: "> 120" }\n')
    expect(problemsOf(text)).toEqual([{
      file: 'vitals.yaml', line: lineOf(text, 'over 180'), field: 'rules[0].levels[0].any.systolicMmHg', message: 'must be a comparison such as "> 180" or ">= 0.9"',
    }])
  })

  it('an unknown severity', () => {
    const text = bpFile('      - severity: warning\n        any: { systolicMmHg: "> 140" }\n      - severity: severe\n        any: { systolicMmHg: "> 180" }\n')
    expect(problemsOf(text)).toEqual([{
      file: 'vitals.yaml', line: lineOf(text, 'severe'), field: 'rules[0].levels[1].severity', message: 'must be one of info, warning, urgent, critical',
    }])
  })

  it('a duration that is not one', () => {
    const text = bpFile('      - severity: warning\n        any: { systolicMmHg: ">= 140" }\n', '    for: 2 hours\n')
    expect(problemsOf(text)).toEqual([{
      file: 'vitals.yaml', line: lineOf(text, '2 hours'), field: 'rules[0].for', message: 'must be a duration such as 90m, 24h, 7d or 1d12h',
    }])
    const zero = bpFile('      - severity: warning\n        any: { systolicMmHg: ">= 140" }\n', '    for: 0m\n')
    expect(problemsOf(zero)).toEqual([{ file: 'vitals.yaml', line: lineOf(zero, '0m'), field: 'rules[0].for', message: 'must be longer than zero' }])
  })

  it('a field of another reading type', () => {
    const text = bpFile('      - severity: warning\n        any: { glucoseMgDl: "> 250" }\n')
    expect(problemsOf(text)).toEqual([{
      file: 'vitals.yaml', line: lineOf(text, 'glucoseMgDl'), field: 'rules[0].levels[0].any.glucoseMgDl',
      message: 'glucoseMgDl is not a field of a blood_pressure reading (use systolicMmHg, diastolicMmHg, pulseBpm)',
    }])
  })

  it('a key the kind does not use', () => {
    const text = `rules:
  - id: weight-test
    title: Weight gain
    kind: delta
    reading: weight
    field: weightKg
    window: 30h
    consecutive: 2
    levels:
      - severity: warning
        change: ">= 0.9"
`
    expect(problemsOf(text)).toEqual([{ file: 'vitals.yaml', line: 8, field: 'rules[0].consecutive', message: 'consecutive does not apply to a delta rule' }])
    const change = bpFile('      - severity: warning\n        change: ">= 10"\n')
    expect(problemsOf(change)).toEqual([{
      file: 'vitals.yaml', line: lineOf(change, 'change'), field: 'rules[0].levels[0].change', message: 'change belongs to a delta rule; a threshold level uses any: or all:',
    }])
  })

  it('a misspelt key, a missing key, levels out of order', () => {
    const typo = bpFile('      - severity: warning\n        any: { systolicMmHg: ">= 140" }\n', '    consecutve: 3\n')
    expect(problemsOf(typo)).toEqual([{ file: 'vitals.yaml', line: lineOf(typo, 'consecutve'), field: 'rules[0].consecutve', message: 'is not a known key here' }])
    const noReading = `rules:\n  - id: g\n    title: G\n    kind: threshold\n    levels:\n      - severity: warning\n        any: { glucoseMgDl: "< 70" }\n`
    expect(problemsOf(noReading)).toEqual([{ file: 'vitals.yaml', line: 2, field: 'rules[0].reading', message: expect.stringMatching(/^is required: one of blood_pressure, glucose/) }])
    const order = bpFile('      - severity: urgent\n        any: { systolicMmHg: "> 180" }\n      - severity: warning\n        any: { systolicMmHg: "> 140" }\n')
    expect(problemsOf(order)).toEqual([{
      file: 'vitals.yaml', line: lineOf(order, 'severity: warning'), field: 'rules[0].levels[1].severity', message: 'levels go from the least to the most severe, each severity once',
    }])
  })

  it('a YAML syntax error, and a duplicate key', () => {
    const broken = 'rules:\n  - id: g\n    title: [unclosed\n'
    expect(problemsOf(broken)).toEqual([{ file: 'vitals.yaml', line: expect.any(Number), field: '(yaml)', message: expect.any(String) }])
    const twice = 'rules:\n  - id: g\n    id: h\n    title: G\n    kind: offline\n    after: 1h\n    severity: info\n'
    expect(problemsOf(twice)).toEqual([{ file: 'vitals.yaml', line: 3, field: '(yaml)', message: expect.stringMatching(/unique/i) }])
  })

  it('every problem of the file is listed, each on its own line', () => {
    const text = `rules:
  - id: one
    title: One
    kind: missing
    reading: any
    after: 2 days
    severity: warning
  - id: two
    title: Two
    kind: offline
    after: 24h
    severity: bad
`
    expect(problemsOf(text)).toEqual([
      { file: 'vitals.yaml', line: 6, field: 'rules[0].after', message: 'must be a duration such as 90m, 24h, 7d or 1d12h' },
      { file: 'vitals.yaml', line: 12, field: 'rules[1].severity', message: 'must be one of info, warning, urgent, critical' },
    ])
  })
})

describe('loading a directory: all or nothing', () => {
  const dirs: string[] = []
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
  })
  const copyOfShipped = () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'rpm-rules-unit-'))
    dirs.push(dir)
    cpSync(SHIPPED, dir, { recursive: true })
    return dir
  }
  const refusal = (dir: string): RuleLoadError => {
    try {
      loadRuleDir(dir)
    } catch (err) {
      if (err instanceof RuleLoadError) return err
      throw err
    }
    throw new Error('the directory was accepted')
  }

  it('a rule id defined in two files names both places', () => {
    const dir = copyOfShipped()
    writeFileSync(path.join(dir, 'zz-extra.yaml'), `# Someone copied a rule to tune it.
rules:
  - id: spo2-low
    title: Low oxygen saturation (copy)
    kind: threshold
    reading: spo2
    levels:
      - severity: warning
        any: { spo2Percent: "< 90" }
`)
    const err = refusal(dir)
    expect(err.problems).toEqual([{ file: 'zz-extra.yaml', line: 3, field: 'id', message: `spo2-low is already defined in oxygen-and-heart-rate.yaml:${loaded('spo2-low').rule.line}` }])
    expect(err.message).toBe(`zz-extra.yaml:3: id: spo2-low is already defined in oxygen-and-heart-rate.yaml:${loaded('spo2-low').rule.line}`)
  })

  it('one bad file refuses the whole set; problems of several files are all listed', () => {
    const dir = copyOfShipped()
    writeFileSync(path.join(dir, 'temperature.yaml'), 'rules:\n  - id: fever\n    title: Fever\n    kind: threshold\n    reading: temperature\n    levels:\n      - severity: hot\n        any: { temperatureC: ">= 38" }\n')
    writeFileSync(path.join(dir, 'weight.yaml'), 'rules:\n  - id: weight-gain-day\n    title: W\n    kind: delta\n    reading: weight\n    field: weightKg\n    levels:\n      - severity: warning\n        change: ">= 0.9"\n')
    const err = refusal(dir)
    expect(err.problems).toEqual([
      { file: 'temperature.yaml', line: 7, field: 'rules[0].levels[0].severity', message: 'must be one of info, warning, urgent, critical' },
      { file: 'weight.yaml', line: 2, field: 'rules[0].window', message: 'is required (a duration such as 24h)' },
    ])
  })

  it('reads *.yaml and *.yml only, in name order; a missing directory is a problem too', () => {
    const dir = copyOfShipped()
    writeFileSync(path.join(dir, 'notes.txt'), 'not: [a rule')
    writeFileSync(path.join(dir, 'a-first.yml'), 'rules:\n  - id: hr-extra\n    title: Extra\n    kind: offline\n    after: 2h\n    severity: info\n')
    const set = loadRuleDir(dir)
    expect(set.files[0]).toBe('a-first.yml')
    expect(set.files).not.toContain('notes.txt')
    expect(set.rules.get('hr-extra')?.rule).toMatchObject({ file: 'a-first.yml', line: 2, afterMs: 2 * HOUR })
    expect(refusal(path.join(dir, 'nope')).problems).toEqual([{ file: path.join(dir, 'nope'), line: 0, field: '(directory)', message: 'cannot read the rules directory: ENOENT' }])
  })
})

describe('per-patient overrides (checkOverride)', () => {
  it('a valid override replaces the rule\'s keys and compiles against the rule', () => {
    // COPD: a baseline saturation of 88-92% is expected (BTS 2017 target for hypercapnic risk).
    const { rule } = checkOverride(loaded('spo2-low'), {
      levels: [{ severity: 'warning', any: { spo2Percent: '< 88' } }, { severity: 'urgent', any: { spo2Percent: '< 85' } }],
      clear: { all: { spo2Percent: '>= 90' } },
    })
    expect(rule).toMatchObject({ id: 'spo2-low', kind: 'threshold', reading: 'spo2', file: 'oxygen-and-heart-rate.yaml' })
    const r = rule as ThresholdRule
    expect(onLast(r, series({ spo2Percent: 89 }))).toMatchObject({ severity: null, clear: false })
    expect(onLast(r, series({ spo2Percent: 87 })).severity).toBe('warning')
    expect(onLast(r, series({ spo2Percent: 84 })).severity).toBe('urgent')
    expect(onLast(r, series({ spo2Percent: 90 })).clear).toBe(true)
    // The shipped rule is untouched.
    expect(onLast(threshold('spo2-low'), series({ spo2Percent: 89 })).severity).toBe('warning')

    const longer = checkOverride(loaded('no-readings'), { after: '72h', severity: 'info' }).rule
    expect(longer).toMatchObject({ kind: 'missing', afterMs: 72 * HOUR, severity: 'info' })
    expect(checkOverride(loaded('bp-stage-2'), { enabled: false }).rule.enabled).toBe(false)
  })

  const refused = (id: string, override: unknown): RuleError => {
    try {
      checkOverride(loaded(id), override)
    } catch (err) {
      if (err instanceof RuleError) return err
      throw err
    }
    throw new Error('the override was accepted')
  }

  it('an invalid override names the field in the override and what was expected', () => {
    expect(refused('spo2-low', { levels: [{ severity: 'warning', any: { spo2Percent: 'below 88' } }] })).toMatchObject({
      path: '/levels/0/any/spo2Percent', message: 'must be a comparison such as "> 180" or ">= 0.9"',
    })
    expect(refused('spo2-low', { levels: [{ severity: 'warning', any: { glucoseMgDl: '< 70' } }] })).toMatchObject({
      path: '/levels/0/any/glucoseMgDl', message: 'glucoseMgDl is not a field of a spo2 reading (use spo2Percent, pulseBpm)',
    })
    expect(refused('weight-gain-day', { consecutive: 2 })).toMatchObject({ path: '/consecutive', message: 'consecutive does not apply to a delta rule' })
    // Only the tunable keys: what a rule measures is not a patient's to change.
    expect(refused('spo2-low', { reading: 'glucose' })).toMatchObject({ path: '/reading', message: 'is not a known key here' })
    expect(refused('no-readings', { after: 'two days' })).toMatchObject({ path: '/after', message: 'must be a duration such as 90m, 24h, 7d or 1d12h' })
    expect(refused('fever', { levels: [{ severity: 'urgent', any: { temperatureC: '>= 39.5' } }, { severity: 'warning', any: { temperatureC: '>= 38' } }] })).toMatchObject({
      path: '/levels/1/severity',
    })
  })
})

describe('the history the engine keeps (placeSample)', () => {
  const rule = parseRuleFile('t.yaml', `rules:
  - id: spo2-sustained
    title: Sustained low SpO2
    kind: threshold
    reading: spo2
    for: 30m
    levels:
      - severity: warning
        any: { spo2Percent: "< 90" }
`).rules[0]!.rule as ThresholdRule

  it('keeps enough for a "for" run: readings every 20 minutes raise at 40 minutes, through trimming', () => {
    const needs = new Map()
    addNeed(needs, rule)
    const samples: Sample[] = []
    const verdicts = [0, 20, 40, 60].map((min, i) => {
      const index = placeSample(samples, { readingId: i + 1, t: T0 + min * 60_000, values: { spo2Percent: 89 } }, needs.get('spo2'))
      return evaluateThreshold(rule, samples, index).severity
    })
    expect(verdicts).toEqual([null, null, 'warning', 'warning'])
    // Trimmed all the same: only the last reading at or before the span's start stays behind it.
    expect(samples.map((s) => s.readingId)).toEqual([2, 3, 4])
  })

  it('places a late reading in time order, once', () => {
    const samples: Sample[] = []
    const need = { count: 3, spanMs: 0 }
    placeSample(samples, { readingId: 1, t: T0, values: {} }, need)
    placeSample(samples, { readingId: 2, t: T0 + 2000, values: {} }, need)
    expect(placeSample(samples, { readingId: 3, t: T0 + 1000, values: {} }, need)).toBe(1)
    expect(placeSample(samples, { readingId: 3, t: T0 + 1000, values: {} }, need)).toBe(1)
    expect(samples.map((s) => s.readingId)).toEqual([1, 3, 2])
  })
})
