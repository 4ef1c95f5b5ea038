// A patient's rules as they apply (docs/rules.md "Per-patient thresholds"): the override in
// force replaces the rule's tunable keys; comparisons are strings such as "> 180".
import type { Condition, PatientRule, ReadingValues, RuleSpec, Severity } from '../api/types.ts'

export const TUNABLE_KEYS = ['levels', 'clear', 'consecutive', 'for', 'window', 'after', 'severity', 'cooldown', 'enabled'] as const

export type Op = '>' | '>=' | '<' | '<='

export function parseComparison(c: unknown): { op: Op; value: number } | null {
  if (typeof c !== 'string') return null
  const m = /^\s*(>=|<=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$/.exec(c)
  return m ? { op: m[1] as Op, value: Number(m[2]) } : null
}

export function holds(op: Op, a: number, b: number): boolean {
  return op === '>' ? a > b : op === '>=' ? a >= b : op === '<' ? a < b : a <= b
}

/** The rule as it applies to this patient: the override in force (unless it no longer fits). */
export function effectiveSpec(rule: PatientRule): RuleSpec {
  if (!rule.override || rule.override.problem) return rule.spec
  return { ...rule.spec, ...rule.override.override }
}

export function isMonitored(rule: PatientRule): boolean {
  return rule.enabled && effectiveSpec(rule)['enabled'] !== false
}

/** Matching comparisons of a condition, or null when the condition does not hold. */
function matching(cond: Condition | undefined, values: ReadingValues): Array<{ field: string; op: Op }> | null {
  if (!cond) return null
  const check = (entries: Array<[string, string]>) =>
    entries.map(([field, c]) => {
      const p = parseComparison(c)
      const v = values[field]
      return { field, op: p?.op ?? '>', ok: p !== null && v !== undefined && holds(p.op, v, p.value) }
    })
  if (cond.all) {
    const r = check(Object.entries(cond.all))
    return r.length && r.every((x) => x.ok) ? r : null
  }
  if (cond.any) {
    const r = check(Object.entries(cond.any)).filter((x) => x.ok)
    return r.length ? r : null
  }
  return null
}

export interface ThresholdLine {
  field: string
  op: Op
  value: number
  severity: Severity
  title: string
}

/** Every level's limits of the threshold rules for one reading type: the lines on a chart. */
export function thresholdLines(rules: PatientRule[], readingType: string): ThresholdLine[] {
  const out: ThresholdLine[] = []
  for (const rule of rules) {
    const spec = effectiveSpec(rule)
    if (spec.kind !== 'threshold' || spec.reading !== readingType || !isMonitored(rule)) continue
    for (const level of spec.levels ?? []) {
      for (const cond of [level.any, level.all]) {
        for (const [field, c] of Object.entries(cond ?? {})) {
          const p = parseComparison(c)
          if (p) out.push({ field, op: p.op, value: p.value, severity: level.severity, title: spec.title })
        }
      }
    }
  }
  return out
}

export type Assessment = { level: 'high' | 'low'; severity: Severity; title: string } | { level: 'normal' } | null

const RANK: Record<Severity, number> = { info: 0, warning: 1, urgent: 2, critical: 3 }

/** How one reading compares with the patient's limits: above, below, within, or nothing to compare with. */
export function assess(rules: PatientRule[], type: string, values: ReadingValues): Assessment {
  let compared = false
  let worst: { level: 'high' | 'low'; severity: Severity; title: string } | null = null
  for (const rule of rules) {
    const spec = effectiveSpec(rule)
    if (spec.kind !== 'threshold' || spec.reading !== type || !isMonitored(rule)) continue
    compared = true
    for (const level of spec.levels ?? []) {
      const hit = matching(level, values)
      if (!hit) continue
      if (!worst || RANK[level.severity] > RANK[worst.severity]) worst = { level: hit[0]!.op.startsWith('>') ? 'high' : 'low', severity: level.severity, title: spec.title }
    }
  }
  return worst ?? (compared ? { level: 'normal' } : null)
}

/** "Warning: systolic ≥ 140 or diastolic ≥ 90". */
export function describeCondition(cond: Condition | undefined, fieldLabel: (f: string) => string): string {
  if (!cond) return ''
  const parts = (o: Record<string, string> | undefined) => Object.entries(o ?? {}).map(([f, c]) => `${fieldLabel(f)} ${prettyOp(c)}`)
  if (cond.change) return `change ${prettyOp(cond.change)}`
  if (cond.all) return parts(cond.all).join(' and ')
  return parts(cond.any).join(' or ')
}

export function prettyOp(c: string): string {
  return c.replace('>=', '≥').replace('<=', '≤')
}
