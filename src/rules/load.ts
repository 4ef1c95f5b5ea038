import { readdirSync, readFileSync } from 'node:fs'
import { basename, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Ajv, type ErrorObject } from 'ajv'
import { LineCounter, isMap, isNode, isSeq, parseDocument, type Document } from 'yaml'
import { RuleError, compileRule } from './compile.ts'
import { ALL_FIELDS, overrideSchema, ruleFileSchema, type RawRule, type Rule, type RuleOverride } from './spec.ts'

/** Where a rule file is wrong: the file, the line, the field (a dotted path) and what was expected. */
export interface RuleProblem {
  file: string
  line: number
  field: string
  message: string
}

export class RuleLoadError extends Error {
  constructor(readonly problems: RuleProblem[]) {
    super(problems.map((p) => `${p.file}:${p.line}: ${p.field}: ${p.message}`).join('\n'))
  }
}

export interface LoadedRule {
  /** As written, so a patient's override can be applied and compiled again. */
  raw: RawRule
  rule: Rule
}

export interface RuleSet {
  dir: string
  files: string[]
  rules: Map<string, LoadedRule>
}

const ajv = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true })
const validFile = ajv.compile<{ rules: RawRule[] }>(ruleFileSchema)
const validOverride = ajv.compile<RuleOverride>(overrideSchema)

/** "/rules/0/levels/1/any" -> "rules[0].levels[1].any" */
const dotted = (pointer: string): string =>
  pointer.split('/').slice(1).reduce((out, part) => (/^\d+$/.test(part) ? `${out}[${part}]` : out ? `${out}.${part}` : part), '')

/** The clearest sentence for one ajv error, naming the field. */
export function describe(e: ErrorObject): { pointer: string; message: string } {
  const params = e.params as Record<string, unknown>
  switch (e.keyword) {
    case 'required':
      return { pointer: `${e.instancePath}/${params.missingProperty as string}`, message: 'is required' }
    case 'additionalProperties':
      return { pointer: `${e.instancePath}/${params.additionalProperty as string}`, message: 'is not a known key here' }
    case 'enum':
      return { pointer: e.instancePath, message: `must be one of ${(params.allowedValues as unknown[]).join(', ')}` }
    case 'pattern': {
      const key = e.instancePath.split('/').pop() ?? ''
      const what = ['for', 'window', 'after', 'cooldown'].includes(key)
        ? 'a duration such as 90m, 24h, 7d or 1d12h'
        : ALL_FIELDS.includes(key) || key === 'change'
          ? 'a comparison such as "> 180" or ">= 0.9"'
          : 'lowercase letters, digits and dashes'
      return { pointer: e.instancePath, message: `must be ${what}` }
    }
    default:
      return { pointer: e.instancePath, message: e.message ?? 'is invalid' }
  }
}

/** The line of the deepest node the pointer reaches in the YAML document. */
function lineOf(doc: Document, lines: LineCounter, pointer: string): number {
  const parts: Array<string | number> = pointer.split('/').slice(1).map((p) => (/^\d+$/.test(p) ? Number(p) : p))
  let node: unknown = doc.contents
  let offset = 0
  for (const part of parts) {
    if (isNode(node) && node.range) offset = node.range[0]
    if (isMap(node)) {
      const pair = node.items.find((i) => isNode(i.key) && (i.key as { value?: unknown }).value === part)
      if (!pair) break
      if (isNode(pair.key) && pair.key.range) offset = pair.key.range[0]
      node = pair.value
    } else if (isSeq(node) && typeof part === 'number') {
      node = node.items[part]
    } else break
  }
  if (isNode(node) && node.range && parts.length > 0 && !isMap(node) && !isSeq(node)) offset = node.range[0]
  return lines.linePos(offset).line
}

/** Parses and checks one rule file's text. */
export function parseRuleFile(file: string, text: string): { rules: LoadedRule[]; problems: RuleProblem[] } {
  const lines = new LineCounter()
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true })
  if (doc.errors.length > 0) {
    return {
      rules: [],
      problems: doc.errors.map((e) => ({ file, line: lines.linePos(e.pos[0]).line, field: '(yaml)', message: e.message.split('\n')[0]! })),
    }
  }
  const data = doc.toJS() as unknown
  if (!validFile(data)) {
    const seen = new Set<string>()
    const problems: RuleProblem[] = []
    for (const e of validFile.errors ?? []) {
      const { pointer, message } = describe(e)
      const key = `${pointer} ${message}`
      if (seen.has(key)) continue
      seen.add(key)
      problems.push({ file, line: lineOf(doc, lines, pointer), field: dotted(pointer) || '(file)', message })
    }
    return { rules: [], problems }
  }
  const rules: LoadedRule[] = []
  const problems: RuleProblem[] = []
  data.rules.forEach((raw, i) => {
    const base = `/rules/${i}`
    const line = lineOf(doc, lines, base)
    try {
      rules.push({ raw, rule: compileRule(raw, file, line) })
    } catch (err) {
      const pointer = err instanceof RuleError ? base + err.path : base
      problems.push({ file, line: lineOf(doc, lines, pointer), field: dotted(pointer), message: (err as Error).message })
    }
  })
  return { rules, problems }
}

/**
 * Loads every *.yaml / *.yml file of a directory. All or nothing: any problem in any file
 * refuses the whole set (the caller keeps the rules it had), with every problem listed.
 */
export function loadRuleDir(dir: string): RuleSet {
  let names: string[]
  try {
    names = readdirSync(dir).filter((n) => /\.ya?ml$/.test(n)).sort()
  } catch (err) {
    throw new RuleLoadError([{ file: dir, line: 0, field: '(directory)', message: `cannot read the rules directory: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` }])
  }
  const problems: RuleProblem[] = []
  const rules = new Map<string, LoadedRule>()
  for (const name of names) {
    const file = join(dir, name)
    let text: string
    try {
      text = readFileSync(file, 'utf8')
    } catch (err) {
      problems.push({ file: name, line: 0, field: '(file)', message: `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` })
      continue
    }
    const parsed = parseRuleFile(basename(file), text)
    problems.push(...parsed.problems)
    for (const r of parsed.rules) {
      const first = rules.get(r.rule.id)
      if (first) {
        problems.push({ file: r.rule.file, line: r.rule.line, field: 'id', message: `${r.rule.id} is already defined in ${first.rule.file}:${first.rule.line}` })
      } else rules.set(r.rule.id, r)
    }
  }
  if (problems.length > 0) throw new RuleLoadError(problems)
  return { dir, files: names, rules }
}

/** Checks a per-patient override for a rule: the merged rule must be valid. Throws RuleError with a pointer into the override. */
export function checkOverride(loaded: LoadedRule, override: unknown): { override: RuleOverride; rule: Rule } {
  if (!validOverride(override)) {
    const { pointer, message } = describe(validOverride.errors![0]!)
    throw new RuleError(pointer, message)
  }
  const raw = { ...loaded.raw, ...override }
  return { override, rule: compileRule(raw, loaded.rule.file, loaded.rule.line) }
}

export { dotted }

/** The rules directory: the configured one (relative to the working directory), or the one shipped with the gateway. */
export const rulesDir = (configured: string): string => (configured ? resolve(configured) : fileURLToPath(new URL('../../rules', import.meta.url)))
