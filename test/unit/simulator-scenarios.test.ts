import mqttPacket from 'mqtt-packet'
import { describe, expect, it } from 'vitest'
import { INVALID_CASES, invalidItem, invalidPayload } from '../../device-simulator/invalid.ts'
import { Random, seedFrom } from '../../device-simulator/random.ts'
import {
  checkKinds,
  connectivityWindow,
  type DeviceModel,
  FLEET,
  goesOffline,
  invalidCycle,
  KIND_TYPES,
  planPublish,
  publishBytes,
  SCENARIO_NAMES,
  SCENARIOS,
  type ScenarioName,
} from '../../device-simulator/scenarios.ts'
import { hfExtraWeightKg, hfSchedule, makeProfile } from '../../device-simulator/vitals.ts'
import { ReadingValidator } from '../../src/ingest/readings.ts'
import type { DeviceKind } from '../../src/store/schema.ts'

// The gateway's own validator, with its default limits (ingest.maxFutureSkewSeconds, maxAgeDays).
const validator = new ReadingValidator({ maxFutureSkewMs: 300_000, maxAgeMs: 365 * 86_400_000 })
const NOW = Date.parse('2026-11-25T07:30:00Z')
const DAY = 86_400_000

function model(kind: DeviceKind, index = 0, seed = 1): DeviceModel {
  return {
    deviceId: `sim-test-${index}`,
    kind,
    index,
    profile: makeProfile(new Random(seedFrom(seed, 'patient', index)), index),
    rng: new Random(seedFrom(seed, kind, index)),
    nextSeq: 1,
    built: {},
    typeCursor: 0,
  }
}

/** n PUBLISHes from one device, each parsed and checked by the gateway's validator. */
function run(scenario: ScenarioName, d: DeviceModel, n: number, batch = 1) {
  const next = invalidCycle()
  return Array.from({ length: n }, (_, i) => {
    const plan = planPublish(d, { scenario, nowMs: NOW + i * 1000, batch, maxBatchSize: 500, nextInvalidCase: next })
    return { plan, now: NOW + i * 1000 }
  })
}

function canonical(scenario: ScenarioName, kind: DeviceKind, n: number, index = 0) {
  return run(scenario, model(kind, index), n).map(({ plan, now }) => {
    const result = validator.check(JSON.parse(plan.payload), now)
    if (!result.ok) throw new Error(`${plan.payload}: ${result.code} ${result.message}`)
    return result.reading
  })
}

describe('scenario readings', () => {
  it('every healthy reading of every kind and unit passes the gateway\'s validation', () => {
    for (const scenario of ['normal', 'offline', 'hypertensive-crisis', 'hypoglycaemia', 'low-spo2', 'hf-weight-gain'] as const) {
      for (const kind of Object.keys(KIND_TYPES) as DeviceKind[]) {
        for (const index of [0, 1, 2]) {
          const readings = canonical(scenario, kind, 60, index)
          expect(readings).toHaveLength(60)
          expect(new Set(readings.map((r) => r.seq)).size).toBe(60)
        }
      }
    }
  })

  it('normal: BP around 118/76, glucose 90-130 mg/dL, SpO2 95-99 %, weight steady', () => {
    const bp = canonical('normal', 'bp_cuff', 200).map((r) => r.values as { systolicMmHg: number; diastolicMmHg: number })
    const meanSys = bp.reduce((s, v) => s + v.systolicMmHg, 0) / bp.length
    const meanDia = bp.reduce((s, v) => s + v.diastolicMmHg, 0) / bp.length
    expect(meanSys).toBeGreaterThan(110)
    expect(meanSys).toBeLessThan(126)
    expect(meanDia).toBeGreaterThan(70)
    expect(meanDia).toBeLessThan(82)
    for (const v of bp) expect(v.systolicMmHg).toBeLessThan(130)

    for (const index of [0, 1]) {
      for (const r of canonical('normal', 'glucometer', 100, index)) {
        const mgDl = (r.values as { glucoseMgDl: number }).glucoseMgDl
        expect(mgDl).toBeGreaterThanOrEqual(89.5)
        expect(mgDl).toBeLessThanOrEqual(130.5)
      }
    }
    for (const r of canonical('normal', 'oximeter', 100)) {
      expect((r.values as { spo2Percent: number }).spo2Percent).toBeGreaterThanOrEqual(95)
    }
    for (const index of [0, 1]) {
      const kg = canonical('normal', 'scale', 50, index).map((r) => (r.values as { weightKg: number }).weightKg)
      expect(Math.max(...kg) - Math.min(...kg)).toBeLessThan(1)
    }
  })

  it('healthy glucometers report in mg/dL and mmol/L, scales in kg and lb', () => {
    const units = (kind: DeviceKind) => new Set([0, 1, 2, 3].map((i) => canonical('normal', kind, 1, i)[0]!.original.unit))
    expect(units('glucometer')).toEqual(new Set(['mg/dL', 'mmol/L']))
    expect(units('scale')).toEqual(new Set(['kg', 'lb']))
  })

  it('hypertensive-crisis: stage 2 readings, every 4th above 180 systolic or 120 diastolic', () => {
    const bp = canonical('hypertensive-crisis', 'bp_cuff', 80).map((r) => r.values as { systolicMmHg: number; diastolicMmHg: number })
    bp.forEach((v, i) => {
      const crisis = v.systolicMmHg > 180 || v.diastolicMmHg > 120
      expect(crisis).toBe(i % 4 === 3)
      expect(v.systolicMmHg >= 140 || v.diastolicMmHg >= 90).toBe(true)
      expect(v.systolicMmHg - v.diastolicMmHg).toBeGreaterThanOrEqual(25)
    })
  })

  it('hypoglycaemia: below 70 mg/dL, every 4th below 54, then a recovery, in either unit', () => {
    for (const index of [0, 1]) {
      const mgDl = canonical('hypoglycaemia', 'glucometer', 40, index).map((r) => (r.values as { glucoseMgDl: number }).glucoseMgDl)
      mgDl.forEach((v, i) => {
        if (i % 4 === 2) expect(v).toBeLessThan(54)
        else if (i % 4 === 3) expect(v).toBeGreaterThanOrEqual(70)
        else {
          expect(v).toBeLessThan(70)
          expect(v).toBeGreaterThanOrEqual(54)
        }
      })
    }
  })

  it('low-spo2: 88-91 %, every 3rd below 88 %', () => {
    const values = canonical('low-spo2', 'oximeter', 30).map((r) => (r.values as { spo2Percent: number }).spo2Percent)
    values.forEach((v, i) => {
      if (i % 3 === 2) expect(v).toBeLessThan(88)
      else {
        expect(v).toBeGreaterThanOrEqual(88)
        expect(v).toBeLessThanOrEqual(91)
      }
    })
  })

  it('hf-weight-gain: a day apart ending now, steady 3 days, then about 1 kg a day', () => {
    const d = model('scale', 0)
    d.plannedWeightReadings = 12
    const readings = run('hf-weight-gain', d, 12).map(({ plan, now }) => {
      const r = validator.check(JSON.parse(plan.payload), now)
      if (!r.ok) throw new Error(r.message)
      return { at: Date.parse(r.reading.measuredAt), kg: (r.reading.values as { weightKg: number }).weightKg, now }
    })
    for (let i = 1; i < readings.length; i++) {
      // Measured a simulated day apart (each was published a second after the one before).
      expect(readings[i]!.at - readings[i - 1]!.at).toBe(DAY + 1000)
    }
    expect(readings.at(-1)!.at).toBe(readings.at(-1)!.now)
    const base = readings[0]!.kg
    expect(Math.abs(readings[3]!.kg - base)).toBeLessThan(1)
    expect(readings[10]!.kg - base).toBeGreaterThan(6)
    expect(readings[10]!.kg - base).toBeLessThan(8)
    expect(hfExtraWeightKg(0)).toBe(0)
    expect(hfExtraWeightKg(5)).toBe(2)
    expect(hfExtraWeightKg(100)).toBe(7)
  })

  it('hf-weight-gain stays inside the gateway\'s age limit however many readings are planned', () => {
    expect(hfSchedule(0, 100_000).ageMs).toBeLessThanOrEqual(300 * DAY)
    expect(hfSchedule(99_999, 100_000).ageMs).toBe(0)
    expect(hfSchedule(20, 14).ageMs).toBe(0) // beyond the plan: measured now
  })

  it('a batch is one array of readings measured a minute apart', () => {
    const plan = run('normal', model('hub'), 1, 6)[0]!.plan
    const items = JSON.parse(plan.payload) as Array<{ type: string; measuredAt: string }>
    expect(items.map((r) => r.type)).toEqual(KIND_TYPES.hub)
    expect(Date.parse(items[5]!.measuredAt) - Date.parse(items[0]!.measuredAt)).toBe(5 * 60_000)
    expect(plan).toMatchObject({ units: 6, valid: 6, errors: [] })
  })

  it('checks that a scenario has a device to play it', () => {
    expect(checkKinds('hypoglycaemia', ['bp_cuff'])).toMatch(/glucometer or hub/)
    expect(checkKinds('hypoglycaemia', ['bp_cuff', 'hub'])).toBeNull()
    for (const s of SCENARIO_NAMES) expect(checkKinds(s, SCENARIOS[s].kinds)).toBeNull()
    expect(checkKinds('normal', FLEET)).toBeNull()
  })

  it('the same seed gives the same values', () => {
    const a = run('mixed', model('hub', 3, 42), 30).map((p) => p.plan.payload)
    const b = run('mixed', model('hub', 3, 42), 30).map((p) => p.plan.payload)
    const c = run('mixed', model('hub', 3, 43), 30).map((p) => p.plan.payload)
    expect(a).toEqual(b)
    expect(a).not.toEqual(c)
  })
})

describe('invalid payloads', () => {
  it('every item-level case draws the error code it declares from the gateway\'s validator, seq intact', () => {
    for (const kind of Object.keys(KIND_TYPES) as DeviceKind[]) {
      const d = model(kind)
      for (const c of INVALID_CASES.filter((x) => x.level === 'item')) {
        for (let i = 0; i < KIND_TYPES[kind].length; i++) {
          const plan = planPublish(d, { scenario: 'invalid', nowMs: NOW, batch: 1, maxBatchSize: 500, nextInvalidCase: () => c.name })
          const item = JSON.parse(plan.payload) as { seq: number }
          const result = validator.check(item, NOW)
          expect(result.ok, `${kind} ${c.name}`).toBe(false)
          if (!result.ok) expect(result.code, `${kind} ${c.name}: ${result.message}`).toBe(c.code)
          expect(plan.errors).toEqual([{ code: c.code, case: c.name, seq: item.seq }])
          expect(plan).toMatchObject({ units: 1, valid: 0 })
        }
      }
    }
  })

  it('payload-level cases: cut-off JSON, an oversized batch, an empty batch', () => {
    const base = { type: 'heart_rate', value: 70, unit: 'bpm', measuredAt: new Date(NOW).toISOString(), seq: 9 }
    expect(() => JSON.parse(invalidPayload('bad-json', base, () => []))).toThrow()
    expect(JSON.parse(invalidPayload('batch-too-large', base, () => Array.from({ length: 501 }, () => ({}))))).toHaveLength(501)
    expect(JSON.parse(invalidPayload('empty-batch', base, () => []))).toEqual([])
    expect(() => invalidItem('bad-json', base, NOW)).toThrow()
  })

  it('the invalid scenario cycles through every case; payload-level ones go out alone, never in a batch', () => {
    const d = model('bp_cuff')
    const next = invalidCycle()
    const plans = Array.from({ length: 12 }, () => planPublish(d, { scenario: 'invalid', nowMs: NOW, batch: 4, maxBatchSize: 500, nextInvalidCase: next }))
    const seen = new Set(plans.flatMap((p) => p.errors.map((e) => e.case)))
    expect(seen).toEqual(new Set(INVALID_CASES.map((c) => c.name)))
    for (const p of plans) {
      expect(p.errors).toHaveLength(p.units)
      const payloadLevel = p.errors.filter((e) => INVALID_CASES.find((c) => c.name === e.case)!.level === 'payload')
      if (payloadLevel.length) expect(p.units).toBe(1)
      else expect(Array.isArray(JSON.parse(p.payload))).toBe(true)
    }
  })

  it('mixed: mostly stored, some refused, every refusal accounted for', () => {
    let units = 0
    let valid = 0
    let refused = 0
    for (let i = 0; i < 5; i++) {
      for (const { plan } of run('mixed', model(FLEET[i]!, i), 200)) {
        units += plan.units
        valid += plan.valid
        refused += plan.errors.length
      }
    }
    expect(valid + refused).toBe(units)
    expect(refused / units).toBeGreaterThan(0.02)
    expect(refused / units).toBeLessThan(0.1)
  })
})

describe('connectivity', () => {
  it('offline: every device drops; mixed: one in 7, of every kind', () => {
    expect(Array.from({ length: 10 }, (_, i) => goesOffline('offline', i)).every(Boolean)).toBe(true)
    expect(Array.from({ length: 10 }, (_, i) => goesOffline('normal', i)).some(Boolean)).toBe(false)
    const flaky = Array.from({ length: 35 }, (_, i) => i).filter((i) => goesOffline('mixed', i))
    expect(flaky).toHaveLength(5)
    expect(new Set(flaky.map((i) => FLEET[i % FLEET.length]))).toEqual(new Set(FLEET))
  })

  it('the first online stretch is short, so a run of a few seconds sees a drop', () => {
    const rng = new Random(5)
    for (let i = 0; i < 100; i++) {
      const first = connectivityWindow(rng, true)
      expect(first.onlineMs).toBeLessThanOrEqual(2500)
      expect(first.offlineMs).toBeGreaterThanOrEqual(1500)
      expect(connectivityWindow(rng, false).onlineMs).toBeGreaterThanOrEqual(4000)
    }
  })
})

describe('publishBytes', () => {
  it('is the size of the PUBLISH packet on the wire, as the gateway\'s packet limit counts it', () => {
    for (const size of [0, 10, 100, 20_000, 70_000]) {
      const payload = 'x'.repeat(size)
      const wire = mqttPacket.generate({ cmd: 'publish', topic: 'devices/sim-bp-0001/readings', payload, qos: 1, messageId: 7, retain: false, dup: false })
      expect(publishBytes('sim-bp-0001', payload)).toBe(wire.length)
    }
  })
})
