import type { NormalisedReading } from '../ingest/types.ts'
import type { Severity } from '../store/schema.ts'
import { evaluateDelta, evaluateThreshold, type Sample } from './evaluate.ts'
import { describeValues } from './format.ts'
import { checkOverride, type RuleSet } from './load.ts'
import type { Rule, RuleOverride } from './spec.ts'
import { worse } from './types.ts'

export interface SimulatedOutcome {
  /** Position of the reading in the input (0-based). */
  index: number
  measuredAt: string
  type: string
  ruleId: string
  title: string
  action: 'raise' | 'severity_raised' | 'repeat' | 'all_clear'
  severity: Severity | null
  what: string
}

/** The rules as they apply to one patient, given the patient's overrides in force (rule id -> override). */
export function rulesForPatient(set: RuleSet, overrides: ReadonlyMap<string, RuleOverride>): { rules: Rule[]; problems: string[] } {
  const problems: string[] = []
  const rules = [...set.rules.values()].map((loaded) => {
    const o = overrides.get(loaded.rule.id)
    if (!o) return loaded.rule
    try {
      return checkOverride(loaded, o).rule
    } catch (err) {
      problems.push(`${loaded.rule.id}: the patient's override does not apply (${(err as Error).message})`)
      return loaded.rule
    }
  })
  return { rules, problems }
}

/**
 * What a sequence of readings would raise, starting with no history and no open alerts: the
 * same evaluation the gateway runs on each reading (reading rules only: missing-data, offline and
 * event rules depend on time and other events).
 */
export function simulate(rules: readonly Rule[], readings: readonly NormalisedReading[]): SimulatedOutcome[] {
  const order = readings.map((r, index) => ({ r, index, t: Date.parse(r.measuredAt) })).sort((a, b) => a.t - b.t || a.index - b.index)
  const history = new Map<string, Sample[]>()
  const open = new Map<string, Severity>()
  const out: SimulatedOutcome[] = []
  for (const { r, index, t } of order) {
    const samples = history.get(r.type) ?? []
    samples.push({ readingId: index, t, values: r.values as unknown as Record<string, number> })
    history.set(r.type, samples)
    const at = samples.length - 1
    for (const rule of rules) {
      if (!rule.enabled || (rule.kind !== 'threshold' && rule.kind !== 'delta') || rule.reading !== r.type) continue
      const v = rule.kind === 'threshold' ? evaluateThreshold(rule, samples, at) : evaluateDelta(rule, samples, at)
      const current = open.get(rule.id)
      const base = { index, measuredAt: r.measuredAt, type: r.type, ruleId: rule.id, title: rule.title, what: describeValues(r.type, v.values) }
      if (v.severity !== null) {
        const action = current === undefined ? 'raise' : worse(v.severity, current) ? 'severity_raised' : 'repeat'
        if (action !== 'repeat') open.set(rule.id, v.severity)
        out.push({ ...base, action, severity: v.severity })
      } else if (v.clear && current !== undefined) {
        open.delete(rule.id)
        out.push({ ...base, action: 'all_clear', severity: null })
      }
    }
  }
  return out
}
