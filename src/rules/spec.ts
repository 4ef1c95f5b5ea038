import type { ReadingType } from '../ingest/types.ts'
import type { Severity } from '../store/schema.ts'

/**
 * Rules as written in rules/*.yaml (and in per-patient overrides), and as compiled for the
 * evaluator. The file form is small on purpose: a clinician reads `systolicMmHg: "> 180"`.
 */

/** Canonical value fields per reading type (see ingest/types.ts CanonicalValues). */
export const READING_FIELDS: Record<ReadingType, readonly string[]> = {
  blood_pressure: ['systolicMmHg', 'diastolicMmHg', 'pulseBpm'],
  glucose: ['glucoseMgDl'],
  spo2: ['spo2Percent', 'pulseBpm'],
  heart_rate: ['heartRateBpm'],
  weight: ['weightKg'],
  temperature: ['temperatureC'],
}
export const ALL_FIELDS = [...new Set(Object.values(READING_FIELDS).flat())]

/** Device kinds that measure each reading type: missing-data rules apply to patients who have one. */
export const KINDS_MEASURING: Record<ReadingType, readonly string[]> = {
  blood_pressure: ['bp_cuff'],
  glucose: ['glucometer'],
  spo2: ['oximeter'],
  heart_rate: ['oximeter', 'bp_cuff'],
  weight: ['scale'],
  temperature: ['thermometer'],
}

export type Op = '>' | '>=' | '<' | '<='
export interface Comparison { op: Op; value: number }
export interface FieldTest extends Comparison { field: string }
export interface Condition { mode: 'any' | 'all'; tests: FieldTest[] }

interface RuleCommon {
  id: string
  title: string
  /** The clinical source, shown with the rule. */
  source?: string
  /** After a provider resolves this rule's alert, matching readings at the same or a lower severity are recorded as suppressed (not silently) for this long. */
  cooldownMs?: number
  enabled: boolean
  /** Where it was written, for messages. */
  file: string
  line: number
}

export interface ThresholdRule extends RuleCommon {
  kind: 'threshold'
  reading: ReadingType
  /** Least to most severe; the worst level that holds is the alert's severity. */
  levels: Array<{ severity: Severity; when: Condition }>
  /** A level holds only when this many readings in a row match it. */
  consecutive: number
  /** ... and only when the matching readings span at least this long. */
  forMs?: number
  /** Hysteresis: clears only when this holds (on `consecutive` readings in a row); default: no level matches. */
  clear?: { when: Condition; consecutive: number }
}

export interface DeltaRule extends RuleCommon {
  kind: 'delta'
  reading: ReadingType
  field: string
  /** Compares with the lowest (rise) or highest (fall) value measured within this window before the reading. */
  windowMs: number
  direction: 'rise' | 'fall'
  levels: Array<{ severity: Severity; change: Comparison }>
  clear?: Comparison
}

export interface MissingRule extends RuleCommon {
  kind: 'missing'
  reading: ReadingType | 'any'
  afterMs: number
  severity: Severity
}

export interface OfflineRule extends RuleCommon {
  kind: 'offline'
  afterMs: number
  severity: Severity
}

export interface EventRule extends RuleCommon {
  kind: 'event'
  event: 'dose.missed'
  clearOn?: 'dose.taken'
  severity: Severity
}

export type Rule = ThresholdRule | DeltaRule | MissingRule | OfflineRule | EventRule
export type RuleKind = Rule['kind']

// --- the file form ----------------------------------------------------------------------------

const SEVERITY = { type: 'string', enum: ['info', 'warning', 'urgent', 'critical'] } as const
const DURATION = { type: 'string', pattern: '^(?=\\d)(\\d+d)?(\\d+h)?(\\d+m)?(\\d+s)?$', description: 'e.g. 90m, 24h, 7d, 1d12h' } as const
const COMPARISON = { type: 'string', pattern: '^\\s*(>=|<=|>|<)\\s*-?\\d+(\\.\\d+)?\\s*$', description: 'e.g. "> 180", ">= 0.9"' } as const
const FIELD_MAP = { type: 'object', minProperties: 1, additionalProperties: false, properties: Object.fromEntries(ALL_FIELDS.map((f) => [f, COMPARISON])) } as const
const CONDITION_PROPS = { any: FIELD_MAP, all: FIELD_MAP } as const
const ID = { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,63}$' } as const

/** The tunable parts of a rule: what a per-patient override may set. */
const tunable = {
  enabled: { type: 'boolean' },
  severity: SEVERITY,
  consecutive: { type: 'integer', minimum: 1, maximum: 50 },
  for: DURATION,
  window: DURATION,
  after: DURATION,
  cooldown: DURATION,
  levels: {
    type: 'array',
    minItems: 1,
    maxItems: 4,
    items: {
      type: 'object',
      additionalProperties: false,
      required: ['severity'],
      properties: { severity: SEVERITY, ...CONDITION_PROPS, change: COMPARISON },
    },
  },
  clear: {
    type: 'object',
    additionalProperties: false,
    properties: { ...CONDITION_PROPS, change: COMPARISON, consecutive: { type: 'integer', minimum: 1, maximum: 50 } },
  },
} as const

export const overrideSchema = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: tunable,
} as const

export const ruleFileSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['rules'],
  properties: {
    rules: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['id', 'title', 'kind'],
        properties: {
          id: ID,
          title: { type: 'string', minLength: 1, maxLength: 120 },
          source: { type: 'string', maxLength: 500 },
          kind: { type: 'string', enum: ['threshold', 'delta', 'missing', 'offline', 'event'] },
          reading: { type: 'string', enum: ['blood_pressure', 'glucose', 'spo2', 'heart_rate', 'weight', 'temperature', 'any'] },
          field: { type: 'string', enum: ALL_FIELDS },
          direction: { type: 'string', enum: ['rise', 'fall'] },
          event: { type: 'string', enum: ['dose.missed'] },
          clearOn: { type: 'string', enum: ['dose.taken'] },
          ...tunable,
        },
      },
    },
  },
} as const

/** The file form of one rule (after schema validation). */
export interface RawRule {
  id: string
  title: string
  source?: string
  kind: RuleKind
  reading?: ReadingType | 'any'
  field?: string
  direction?: 'rise' | 'fall'
  event?: 'dose.missed'
  clearOn?: 'dose.taken'
  enabled?: boolean
  severity?: Severity
  consecutive?: number
  for?: string
  window?: string
  after?: string
  cooldown?: string
  levels?: Array<{ severity: Severity; any?: Record<string, string>; all?: Record<string, string>; change?: string }>
  clear?: { any?: Record<string, string>; all?: Record<string, string>; change?: string; consecutive?: number }
}

/** A per-patient override: the tunable keys of a rule. */
export type RuleOverride = Pick<RawRule, 'enabled' | 'severity' | 'consecutive' | 'for' | 'window' | 'after' | 'cooldown' | 'levels' | 'clear'>

export function parseDuration(text: string): number {
  const m = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(text)
  if (!m) throw new Error(`not a duration: ${text}`)
  const [d, h, min, s] = m.slice(1).map((x) => Number(x ?? 0)) as [number, number, number, number]
  return (((d * 24 + h) * 60 + min) * 60 + s) * 1000
}

export function parseComparison(text: string): Comparison {
  const m = /^\s*(>=|<=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$/.exec(text)
  if (!m) throw new Error(`not a comparison: ${text}`)
  return { op: m[1] as Op, value: Number(m[2]) }
}

export const compare = (x: number, c: Comparison): boolean =>
  c.op === '>' ? x > c.value : c.op === '>=' ? x >= c.value : c.op === '<' ? x < c.value : x <= c.value

export const formatComparison = (c: Comparison): string => `${c.op} ${c.value}`
