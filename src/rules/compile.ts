import { READING_TYPES, type ReadingType } from '../ingest/types.ts'
import type { Severity } from '../store/schema.ts'
import {
  READING_FIELDS, parseComparison, parseDuration,
  type Condition, type RawRule, type Rule, type RuleOverride,
} from './spec.ts'
import { severityRank } from './types.ts'

/** A rule that is well-formed JSON but does not make sense; `path` is a JSON pointer into the rule. */
export class RuleError extends Error {
  constructor(readonly path: string, message: string) {
    super(message)
  }
}

/** Keys each kind uses; any other tunable key is a mistake worth naming. */
const KEYS: Record<Rule['kind'], readonly string[]> = {
  threshold: ['reading', 'levels', 'clear', 'consecutive', 'for', 'cooldown'],
  delta: ['reading', 'field', 'window', 'direction', 'levels', 'clear', 'cooldown'],
  missing: ['reading', 'after', 'severity'],
  offline: ['after', 'severity'],
  event: ['event', 'clearOn', 'severity', 'cooldown'],
}
const COMMON = new Set(['id', 'title', 'source', 'kind', 'enabled'])

function condition(raw: { any?: Record<string, string>; all?: Record<string, string> }, path: string, reading: ReadingType, defaultMode: 'any' | 'all'): Condition {
  if (raw.any && raw.all) throw new RuleError(path, 'use either any or all, not both')
  const map = raw.any ?? raw.all
  if (!map) throw new RuleError(path, `needs any: or all: with at least one field of a ${reading} reading (${READING_FIELDS[reading].join(', ')})`)
  const mode = raw.any ? 'any' : raw.all ? 'all' : defaultMode
  const tests = Object.entries(map).map(([field, text]) => {
    if (!READING_FIELDS[reading].includes(field)) {
      throw new RuleError(`${path}/${mode}/${field}`, `${field} is not a field of a ${reading} reading (use ${READING_FIELDS[reading].join(', ')})`)
    }
    return { field, ...parseComparison(text) }
  })
  return { mode, tests }
}

function duration(text: string | undefined, path: string, required: boolean): number | undefined {
  if (text === undefined) {
    if (required) throw new RuleError(path, `is required (a duration such as 24h)`)
    return undefined
  }
  const ms = parseDuration(text)
  if (ms <= 0) throw new RuleError(path, 'must be longer than zero')
  return ms
}

function ascending(levels: Array<{ severity: Severity }>, path: string): void {
  for (let i = 1; i < levels.length; i++) {
    if (severityRank(levels[i]!.severity) <= severityRank(levels[i - 1]!.severity)) {
      throw new RuleError(`${path}/${i}/severity`, 'levels go from the least to the most severe, each severity once')
    }
  }
}

/** Turns a schema-valid rule from a file (or a rule with a patient's override applied) into the evaluator's form. */
export function compileRule(raw: RawRule, file: string, line: number): Rule {
  for (const key of Object.keys(raw)) {
    if (!COMMON.has(key) && !KEYS[raw.kind].includes(key)) throw new RuleError(`/${key}`, `${key} does not apply to a ${raw.kind} rule`)
  }
  const common = {
    id: raw.id,
    title: raw.title,
    ...(raw.source !== undefined ? { source: raw.source } : {}),
    enabled: raw.enabled ?? true,
    file,
    line,
  }
  const cooldownMs = duration(raw.cooldown, '/cooldown', false)
  const withCooldown = cooldownMs !== undefined ? { cooldownMs } : {}
  const reading = (allowAny: boolean): ReadingType => {
    if (raw.reading === undefined) throw new RuleError('/reading', `is required: one of ${READING_TYPES.join(', ')}`)
    if (raw.reading === 'any' && !allowAny) throw new RuleError('/reading', `must be one reading type (${READING_TYPES.join(', ')}) for a ${raw.kind} rule`)
    return raw.reading as ReadingType
  }
  const severity = (): Severity => {
    if (raw.severity === undefined) throw new RuleError('/severity', 'is required: info, warning, urgent or critical')
    return raw.severity
  }
  switch (raw.kind) {
    case 'threshold': {
      const type = reading(false)
      if (!raw.levels) throw new RuleError('/levels', 'is required: at least one level with a severity and any: or all:')
      const levels = raw.levels.map((l, i) => {
        if (l.change !== undefined) throw new RuleError(`/levels/${i}/change`, 'change belongs to a delta rule; a threshold level uses any: or all:')
        return { severity: l.severity, when: condition(l, `/levels/${i}`, type, 'any') }
      })
      ascending(raw.levels, '/levels')
      let clear: { when: Condition; consecutive: number } | undefined
      if (raw.clear) {
        if (raw.clear.change !== undefined) throw new RuleError('/clear/change', 'change belongs to a delta rule; a threshold clear uses any: or all:')
        clear = { when: condition(raw.clear, '/clear', type, 'all'), consecutive: raw.clear.consecutive ?? 1 }
      }
      const forMs = duration(raw.for, '/for', false)
      return {
        ...common, ...withCooldown, kind: 'threshold', reading: type, levels, consecutive: raw.consecutive ?? 1,
        ...(forMs !== undefined ? { forMs } : {}), ...(clear ? { clear } : {}),
      }
    }
    case 'delta': {
      const type = reading(false)
      if (!raw.field) throw new RuleError('/field', `is required: one of ${READING_FIELDS[type].join(', ')}`)
      if (!READING_FIELDS[type].includes(raw.field)) throw new RuleError('/field', `${raw.field} is not a field of a ${type} reading (use ${READING_FIELDS[type].join(', ')})`)
      if (!raw.levels) throw new RuleError('/levels', 'is required: at least one level with a severity and change:')
      const levels = raw.levels.map((l, i) => {
        if (l.change === undefined || l.any || l.all) throw new RuleError(`/levels/${i}`, 'a delta level has a severity and change: (e.g. ">= 0.9"), nothing else')
        const change = parseComparison(l.change)
        return { severity: l.severity, change }
      })
      ascending(raw.levels, '/levels')
      if (raw.clear && (raw.clear.any || raw.clear.all || raw.clear.consecutive !== undefined || raw.clear.change === undefined)) {
        throw new RuleError('/clear', 'a delta clear is change: only (e.g. "< 0.5")')
      }
      return {
        ...common, ...withCooldown, kind: 'delta', reading: type, field: raw.field, windowMs: duration(raw.window, '/window', true)!,
        direction: raw.direction ?? 'rise', levels, ...(raw.clear?.change !== undefined ? { clear: parseComparison(raw.clear.change) } : {}),
      }
    }
    case 'missing':
      return { ...common, kind: 'missing', reading: raw.reading === 'any' ? 'any' : reading(true), afterMs: duration(raw.after, '/after', true)!, severity: severity() }
    case 'offline':
      return { ...common, kind: 'offline', afterMs: duration(raw.after, '/after', true)!, severity: severity() }
    case 'event':
      if (!raw.event) throw new RuleError('/event', 'is required: dose.missed')
      return { ...common, ...withCooldown, kind: 'event', event: raw.event, ...(raw.clearOn ? { clearOn: raw.clearOn } : {}), severity: severity() }
  }
}

/** A rule with one patient's override applied: the override's keys replace the rule's. */
export function applyOverride(raw: RawRule, override: RuleOverride): RawRule {
  return { ...raw, ...override }
}
