import type { Severity } from '../store/schema.ts'
import { compare, type Condition, type DeltaRule, type ThresholdRule } from './spec.ts'

/** One reading as the evaluator sees it: canonical values by field, time in epoch ms. */
export interface Sample {
  readingId: number
  t: number
  values: Readonly<Record<string, number>>
}

/**
 * What a rule says about a reading: the severity to raise (null: none), whether the clear
 * condition holds, and the values worth showing. Between the raise and the clear thresholds
 * (hysteresis) both are off: an open alert stays as it is.
 */
export interface Verdict {
  severity: Severity | null
  clear: boolean
  values: Record<string, unknown>
}

const NOTHING: Verdict = { severity: null, clear: false, values: {} }

export function holds(c: Condition, values: Readonly<Record<string, number>>): boolean {
  if (c.mode === 'any') return c.tests.some((t) => values[t.field] !== undefined && compare(values[t.field]!, t))
  return c.tests.every((t) => values[t.field] !== undefined && compare(values[t.field]!, t))
}

/** True when the last `n` samples up to `index` (in time order) all satisfy `c`. */
function lastInARow(c: Condition, samples: readonly Sample[], index: number, n: number): boolean {
  if (index + 1 < n) return false
  for (let k = 0; k < n; k++) if (!holds(c, samples[index - k]!.values)) return false
  return true
}

/** How long `c` has held: from the first of the unbroken run of matching samples ending at `index`. */
function heldForMs(c: Condition, samples: readonly Sample[], index: number): number {
  if (!holds(c, samples[index]!.values)) return -1
  let j = index
  while (j > 0 && holds(c, samples[j - 1]!.values)) j--
  return samples[index]!.t - samples[j]!.t
}

/**
 * A threshold rule on the reading at `index` of `samples` (one patient's readings of the rule's
 * type, oldest first). The worst level that holds wins; a level with `consecutive: N` holds only
 * when the last N readings all match it, and with `for` only when the matching run spans that long.
 */
export function evaluateThreshold(rule: ThresholdRule, samples: readonly Sample[], index: number): Verdict {
  const current = samples[index]
  if (!current) return NOTHING
  let severity: Severity | null = null
  for (const level of rule.levels) {
    if (!lastInARow(level.when, samples, index, rule.consecutive)) continue
    if (rule.forMs !== undefined && heldForMs(level.when, samples, index) < rule.forMs) continue
    severity = level.severity
  }
  const values: Record<string, unknown> = { ...current.values }
  if (severity !== null) return { severity, clear: false, values }
  const clear = rule.clear
    ? lastInARow(rule.clear.when, samples, index, rule.clear.consecutive)
    : !rule.levels.some((l) => holds(l.when, current.values))
  return { severity: null, clear, values }
}

const round = (x: number) => Math.round(x * 1000) / 1000

/**
 * A change-over-a-window rule: the reading against the lowest (rise) or highest (fall) value
 * measured in the window before it. Without an earlier reading in the window it says nothing.
 */
export function evaluateDelta(rule: DeltaRule, samples: readonly Sample[], index: number): Verdict {
  const current = samples[index]
  const value = current?.values[rule.field]
  if (current === undefined || value === undefined) return NOTHING
  let baseline: Sample | undefined
  for (let j = index - 1; j >= 0; j--) {
    const s = samples[j]!
    if (s.t < current.t - rule.windowMs) break
    const v = s.values[rule.field]
    if (v === undefined) continue
    const b = baseline?.values[rule.field]
    if (b === undefined || (rule.direction === 'rise' ? v < b : v > b)) baseline = s
  }
  if (!baseline) return NOTHING
  const base = baseline.values[rule.field]!
  const change = round(rule.direction === 'rise' ? value - base : base - value)
  let severity: Severity | null = null
  for (const level of rule.levels) if (compare(change, level.change)) severity = level.severity
  const values = {
    [rule.field]: value,
    change,
    baseline: base,
    baselineAt: new Date(baseline.t).toISOString(),
    windowHours: rule.windowMs / 3_600_000,
  }
  if (severity !== null) return { severity, clear: false, values }
  const clear = rule.clear ? compare(change, rule.clear) : !rule.levels.some((l) => compare(change, l.change))
  return { severity: null, clear, values }
}
