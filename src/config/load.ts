import { readFileSync } from 'node:fs'
import path from 'node:path'
import { Ajv, type ErrorObject } from 'ajv'
import YAML from 'yaml'
import { RpmError } from '../errors.ts'
import { configSchema, type GatewayConfig } from './schema.ts'

export type { GatewayConfig } from './schema.ts'

type Json = null | boolean | number | string | Json[] | { [key: string]: Json }
type SchemaNode = { type?: string; properties?: Record<string, SchemaNode>; items?: SchemaNode }

/** `mqtt.maxPacketBytes` -> `RPM_MQTT_MAX_PACKET_BYTES`. */
export function envName(keyPath: string): string {
  return 'RPM_' + keyPath.split('.').map((part) => part.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('_')
}

/** Every leaf key of the schema with its type, e.g. ['http.port', 'integer'] or ['x.list', 'array:integer']. */
function leaves(node: SchemaNode, prefix = ''): Array<[string, string]> {
  if (node.type === 'object' && node.properties) {
    return Object.entries(node.properties).flatMap(([key, child]) => leaves(child, prefix ? `${prefix}.${key}` : key))
  }
  if (node.type === 'array' && node.items?.type === 'integer') return [[prefix, 'array:integer']]
  return [[prefix, node.type ?? 'string']]
}

const LEAVES = leaves(configSchema as unknown as SchemaNode)

/** The keys the schema allows under `keyPath` ('' for the top level). */
function keysAt(keyPath: string): string[] {
  let node: SchemaNode | undefined = configSchema as unknown as SchemaNode
  for (const part of keyPath ? keyPath.split('.') : []) node = node?.properties?.[part]
  return Object.keys(node?.properties ?? {})
}

function fromEnv(raw: string, type: string, name: string): Json {
  switch (type) {
    case 'integer':
    case 'number': {
      const n = Number(raw)
      if (raw.trim() === '' || !Number.isFinite(n)) throw invalid(`${name}: expected a number, got "${raw}"`)
      return n
    }
    case 'boolean':
      if (/^(true|1|yes|on)$/i.test(raw)) return true
      if (/^(false|0|no|off)$/i.test(raw)) return false
      throw invalid(`${name}: expected true or false, got "${raw}"`)
    case 'array':
      return raw.split(',').map((s) => s.trim()).filter(Boolean)
    case 'array:integer':
      return raw.split(',').map((s) => s.trim()).filter(Boolean).map((s) => {
        const n = Number(s)
        if (!Number.isInteger(n)) throw invalid(`${name}: expected whole numbers separated by commas, got "${raw}"`)
        return n
      })
    default:
      return raw
  }
}

function setPath(target: Record<string, Json>, keyPath: string, value: Json): void {
  const parts = keyPath.split('.')
  let node = target
  for (const part of parts.slice(0, -1)) {
    const next = node[part]
    if (next === undefined || next === null || typeof next !== 'object' || Array.isArray(next)) node[part] = {}
    node = node[part] as Record<string, Json>
  }
  node[parts[parts.length - 1]!] = value
}

function invalid(message: string, details?: unknown): RpmError {
  return new RpmError('RPM_ERR_CONFIG_INVALID', `invalid configuration: ${message}`, { details })
}

function describe(error: ErrorObject, sources: Map<string, string>): string {
  const key = error.instancePath.slice(1).replaceAll('/', '.')
  const where = (k: string) => (sources.has(k) ? ` (from ${sources.get(k)})` : '')
  if (error.keyword === 'additionalProperties') {
    const extra = key ? `${key}.${error.params.additionalProperty}` : String(error.params.additionalProperty)
    const known = keysAt(key).map((k) => (key ? `${key}.${k}` : k))
    return `unknown key "${extra}"${where(extra)}${known.length > 0 ? `: expected one of ${known.join(', ')}` : ''}`
  }
  if (error.keyword === 'enum') {
    return `${key}${where(key)}: expected one of ${(error.params.allowedValues as string[]).join(', ')}`
  }
  return `${key || '(root)'}${where(key)}: ${error.message ?? 'is invalid'}`
}

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true })
const validate = ajv.compile<GatewayConfig>(configSchema as object)

export interface LoadOptions {
  /** A JSON or YAML file. */
  file?: string
  env?: NodeJS.ProcessEnv
  /** Values from the command line (e.g. --data-dir), applied last. */
  overrides?: Record<string, Json>
}

/**
 * Loads the configuration once: defaults, then the file, then RPM_* environment variables,
 * then overrides. Anything unknown or mistyped stops start-up with the key named.
 */
export function loadConfig(options: LoadOptions = {}): Readonly<GatewayConfig> {
  const env = options.env ?? process.env
  const sources = new Map<string, string>()
  let doc: Record<string, Json> = {}

  if (options.file) {
    let text: string
    try {
      text = readFileSync(options.file, 'utf8')
    } catch (err) {
      throw invalid(`cannot read ${options.file}: ${(err as Error).message}`)
    }
    try {
      const parsed: unknown = options.file.endsWith('.json') ? JSON.parse(text) : YAML.parse(text)
      if (parsed !== null && parsed !== undefined) {
        if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('expected a mapping of keys at the top level')
        doc = parsed as Record<string, Json>
      }
    } catch (err) {
      throw invalid(`${options.file}: ${(err as Error).message}`)
    }
  }

  for (const [keyPath, type] of LEAVES) {
    const name = envName(keyPath)
    const raw = env[name]
    if (raw === undefined) continue
    setPath(doc, keyPath, fromEnv(raw, type, name))
    sources.set(keyPath, name)
  }
  for (const [keyPath, value] of Object.entries(options.overrides ?? {})) {
    setPath(doc, keyPath, value)
    sources.set(keyPath, 'the command line')
  }

  if (!validate(doc)) {
    const messages = (validate.errors ?? []).map((e) => describe(e, sources))
    throw invalid(messages.join('; '), { errors: messages })
  }
  const config = doc as unknown as GatewayConfig
  config.dataDir = path.resolve(config.dataDir)
  return deepFreeze(config)
}

/** RPM_* variables that name no configuration key (a typo, most likely). */
export function unknownEnvNames(env: NodeJS.ProcessEnv = process.env): string[] {
  const known = new Set(LEAVES.map(([k]) => envName(k)))
  return Object.keys(env).filter((name) => name.startsWith('RPM_') && !known.has(name) && !/^RPM_BUILD/.test(name))
}

function deepFreeze<T>(value: T): Readonly<T> {
  if (value && typeof value === 'object') {
    for (const child of Object.values(value)) deepFreeze(child)
    Object.freeze(value)
  }
  return value
}
