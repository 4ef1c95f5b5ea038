/**
 * Generated bad input on every route of the OpenAPI document (fast-check): path parameters,
 * query strings and bodies shaped after each route's schema with wrong types, unicode, huge and
 * odd numbers, deep nesting, unknown fields, and arbitrary JSON, sent as an admin, a provider, a
 * patient or nobody. No answer is a 500, every error has the {code, message, details?} shape,
 * and no error carries patient data the request did not bring itself.
 * (test/integration/api-input.test.ts sends a fixed set of bad inputs to each route.)
 */
import fc from 'fast-check'
import { afterEach, describe, expect, it } from 'vitest'
import { build } from '../../../device-simulator/readings.ts'
import { api, connectDevice, signInAs, startGateway, type Caller, type TestGateway } from '../../helpers.ts'
import { nested } from './payloads.ts'

const SEED = Number(process.env.FUZZ_SEED ?? 20261125)
const RUNS = 700

let t: TestGateway | undefined

afterEach(async () => {
  await t?.stop()
  t = undefined
})

type Schema = {
  type?: string | string[]
  properties?: Record<string, Schema>
  required?: string[]
  enum?: unknown[]
  format?: string
  items?: Schema
  maxLength?: number
}

interface Operation {
  method: string
  path: string
  params: Array<{ in: 'path' | 'query' | 'header'; name: string; schema: Schema }>
  body?: Schema
  form: boolean
}

function operations(doc: { paths: Record<string, Record<string, any>> }): Operation[] {
  const ops: Operation[] = []
  for (const [path, item] of Object.entries(doc.paths)) {
    if (!path.startsWith('/api/v1/')) continue
    for (const [method, op] of Object.entries(item)) {
      if (!['get', 'post', 'put', 'patch', 'delete'].includes(method)) continue
      const content = op.requestBody?.content ?? {}
      const body = (content['application/json'] ?? content['application/x-www-form-urlencoded'])?.schema as Schema | undefined
      ops.push({ method: method.toUpperCase(), path, params: op.parameters ?? [], ...(body ? { body } : {}), form: !content['application/json'] && !!content['application/x-www-form-urlencoded'] })
    }
  }
  return ops
}

const odd = fc.constantFrom<unknown>(null, true, 0, -1, 1e308, -1e308, 2 ** 53 + 2, 5e-324, '', ' ', 'null', 'NaN', '1e999', '../../etc/passwd', '%00', '<script>alert(1)</script>', "'; DROP TABLE readings; --", '__proto__', 'constructor', [], {}, { __proto__: { admin: true } })
const unicode = fc.string({ unit: 'grapheme', maxLength: 30 })
const binaryish = fc.string({ unit: 'binary', maxLength: 30 })
const long = fc.integer({ min: 300, max: 20_000 }).map((n) => 'x'.repeat(n))
/** A JSON value nested deep (a raw token, spliced into the body text). */
const deep = fc.record({ depth: fc.integer({ min: 50, max: 6000 }), kind: fc.constantFrom<'array' | 'object'>('array', 'object') }).map(({ depth, kind }) => ({ [RAW]: nested(depth, kind) }))
const RAW = '\u0000raw'

/** A value for a field of this schema: often of the right kind, often not. */
function valueFor(s: Schema, depth = 0): fc.Arbitrary<unknown> {
  const type = Array.isArray(s.type) ? s.type[0] : s.type
  let right: fc.Arbitrary<unknown>
  if (s.enum) right = fc.constantFrom(...s.enum)
  else if (type === 'string' && s.format === 'date-time') right = fc.date({ noInvalidDate: true }).map((d) => d.toISOString())
  else if (type === 'string') right = fc.oneof(fc.string({ maxLength: 24 }), fc.constantFrom('abc', 'a1', 'abc-1', 'pat-1', 'bp-crisis'))
  else if (type === 'integer') right = fc.integer({ min: -10, max: 10_000 })
  else if (type === 'number') right = fc.double({ noNaN: true, noDefaultInfinity: true })
  else if (type === 'boolean') right = fc.boolean()
  else if (type === 'array') right = fc.array(s.items && depth < 3 ? valueFor(s.items, depth + 1) : fc.jsonValue({ maxDepth: 1 }), { maxLength: 4 })
  else if (type === 'object' && depth < 3) right = objectFor(s, depth + 1)
  else right = fc.jsonValue({ maxDepth: 2 })
  return fc.oneof({ weight: 6, arbitrary: right }, { weight: 1, arbitrary: odd }, { weight: 1, arbitrary: unicode }, { weight: 1, arbitrary: binaryish }, { weight: 1, arbitrary: long }, { weight: 1, arbitrary: deep })
}

function objectFor(s: Schema, depth = 0): fc.Arbitrary<Record<string, unknown>> {
  const props = Object.entries(s.properties ?? {})
  return fc
    .tuple(
      fc.record(Object.fromEntries(props.map(([k, v]) => [k, valueFor(v, depth)])), { requiredKeys: [] }),
      fc.oneof({ weight: 4, arbitrary: fc.constant({}) }, { weight: 1, arbitrary: fc.dictionary(fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom('__proto__', 'constructor')), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 2 }) }),
    )
    .map(([known, extra]) => ({ ...known, ...extra }))
}

function safeDecode(url: string): string {
  try {
    return decodeURIComponent(url)
  } catch {
    return url
  }
}

/** JSON text with the raw deep tokens spliced in. */
function toText(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (v && typeof v === 'object' && RAW in v ? `\u0001${(v as Record<string, string>)[RAW]}\u0001` : v)).replace(/"\\u0001(.*?)\\u0001"/g, (_, inner: string) => JSON.parse(`"${inner}"`) as string)
}

describe('HTTP: generated bad input on every route', () => {
  it(`${RUNS} generated requests across the OpenAPI routes: never a 500, errors in shape, no patient data in an error`, async () => {
    t = await startGateway()
    const g = t.gateway
    // A patient whose name, words and values are easy to spot in an answer.
    const PATIENT_NAME = 'Philippa Quenby-Marchbanks'
    const SECRET_TEXT = 'xylophone symptom 7731'
    const patient = await g.registry.addPatient({ name: PATIENT_NAME, id: 'mrn-48213', timezone: 'UTC' })
    const device = await g.registry.addDevice({ patientId: patient.id, kind: 'bp_cuff' })
    const password = 'http fuzz password 1'
    await g.users.add({ username: 'fuzz.admin', password, role: 'admin' })
    await g.users.add({ username: 'fuzz.nurse', password, role: 'provider' })
    await g.users.addToCareTeam(patient.id, 'fuzz.nurse')
    await g.users.add({ username: 'fuzz.patient', password, role: 'patient', patientId: patient.id })
    const cuff = await connectDevice(t, { patientId: patient.id, deviceId: device.id, secret: device.secret })
    await cuff.publishAsync(`devices/${device.id}/readings`, JSON.stringify(build.bloodPressure(187.5, 121.5, 99, { seq: 1 })), { qos: 1 })
    await cuff.endAsync()
    const who: Record<string, Caller | undefined> = {
      admin: await signInAs(t, 'fuzz.admin', password),
      provider: await signInAs(t, 'fuzz.nurse', password),
      patient: await signInAs(t, 'fuzz.patient', password),
      nobody: undefined,
    }
    const usernames: Record<string, string> = { admin: 'fuzz.admin', provider: 'fuzz.nurse', patient: 'fuzz.patient' }
    const threadId = g.threads.ensure(patient.id).id
    const posted = await api(t, 'POST', `/api/v1/threads/${threadId}/messages`, { token: who.patient!.token, body: { clientMessageId: 'secret-1', text: SECRET_TEXT } })
    expect(posted.status).toBe(201)
    const alertId = (g.store.sqlite.prepare('SELECT id FROM alerts LIMIT 1').get() as { id: string }).id
    const ids: Record<string, string[]> = {
      patientId: [patient.id], deviceId: [device.id], threadId: [threadId], messageId: [posted.body.id ?? posted.body.message?.id ?? 'msg-1'],
      alertId: [alertId], ruleId: ['bp-crisis', 'spo2-low'], scheduleId: ['sch-000000000000'], occurrenceId: ['occ-000000000000'], subscriptionId: ['sub-000000000000'],
    }
    const secrets = [PATIENT_NAME, 'Philippa', 'Quenby', SECRET_TEXT, 'xylophone', '187.5', '121.5']

    const doc = (await api(t, 'GET', '/docs/json')).body
    const ops = operations(doc)
    expect(ops.length).toBeGreaterThan(40)
    const request = fc.record({
      op: fc.integer({ min: 0, max: ops.length - 1 }),
      role: fc.constantFrom('admin', 'provider', 'patient', 'nobody', 'admin', 'provider'),
      pathValues: fc.array(
        fc.oneof(
          { weight: 6, arbitrary: fc.constant(undefined) },
          { weight: 4, arbitrary: fc.oneof(fc.string({ maxLength: 20 }), unicode, long, fc.constantFrom('..', '.', '%2e%2e', 'a/b', ' ', 'mrn-48213 ')) },
          // Sent as is, not percent-encoded: malformed escapes.
          { weight: 1, arbitrary: fc.constantFrom('%', '%E0%A4%A', '%ZZ', '%c0%ae%c0%ae', '%ff').map((raw) => ({ raw })) },
        ),
        { minLength: 3, maxLength: 3 },
      ),
      query: fc.array(fc.tuple(fc.nat(), fc.oneof(fc.string({ maxLength: 20 }), unicode, long, fc.integer().map(String), fc.constantFrom('', 'true', '-1', '1e999', '2026-13-45T99:99:99Z', 'null', '[]'))), { maxLength: 4 }),
      extraQuery: fc.option(fc.tuple(fc.string({ maxLength: 10 }), fc.string({ maxLength: 10 }))),
      bodyKind: fc.constantFrom('schema', 'schema', 'schema', 'json', 'text', 'none', 'form'),
      json: fc.jsonValue({ maxDepth: 3 }),
      text: fc.oneof(fc.string({ maxLength: 100 }), fc.constantFrom('{', '{"a":', '[1,2', 'null', '"x"', '\u0000', '{"__proto__":{"x":1}}')),
      seed: fc.nat(),
    })
    const statuses: Record<string, number> = {}
    /** Errors that are not {code: RPM_ERR_*, message, details?}, one example per status and code. */
    const outOfShape = new Map<string, string>()
    const perRoute = new Map<string, number>()

    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        const op = ops[r.op]!
        const name = `${op.method} ${op.path}`
        perRoute.set(name, (perRoute.get(name) ?? 0) + 1)
        let i = 0
        const path = op.path.replace(/\{(\w+)\}/g, (_, p: string) => {
          const v = r.pathValues[i++ % 3]
          if (typeof v === 'object') return v.raw
          return encodeURIComponent(v ?? ids[p]?.[r.seed % (ids[p]?.length ?? 1)] ?? 'abc')
        })
        const params = new URLSearchParams()
        const queryParams = op.params.filter((p) => p.in === 'query')
        for (const [n, v] of r.query) if (queryParams.length) params.set(queryParams[n % queryParams.length]!.name, v)
        if (r.extraQuery) params.set(r.extraQuery[0], r.extraQuery[1])
        const url = params.size ? `${path}?${params}` : path
        let raw: string | undefined
        let contentType: string | undefined
        if (op.method !== 'GET' && r.bodyKind !== 'none') {
          if (r.bodyKind === 'schema' && op.body) raw = toText(fc.sample(objectFor(op.body), { seed: r.seed, numRuns: 1 })[0])
          else if (r.bodyKind === 'json') raw = JSON.stringify(r.json)
          else if (r.bodyKind === 'form') {
            raw = new URLSearchParams(Object.entries(fc.sample(objectFor(op.body ?? {}), { seed: r.seed, numRuns: 1 })[0]!).map(([k, v]): [string, string] => [k, String(v)])).toString()
            contentType = 'application/x-www-form-urlencoded'
          } else raw = r.text
        }
        const caller = who[r.role]
        const send = () => api(t!, op.method, url, { ...(caller ? { token: caller.token } : {}), ...(raw !== undefined ? { raw, contentType: contentType ?? 'application/json' } : {}) })
        let res = await send()
        if (res.status === 401 && caller) {
          // The fuzz signed this caller out (logout, refresh reuse): sign in again and resend.
          Object.assign(caller, await signInAs(t!, usernames[r.role]!, password))
          res = await send()
        }
        statuses[res.status] = (statuses[res.status] ?? 0) + 1
        const what = `${name} as ${r.role}: ${url.slice(0, 200)} ${raw?.slice(0, 200) ?? ''} -> ${res.status} ${res.text.slice(0, 300)}`
        if (res.status >= 500) throw new Error(`a 5xx: ${what}`)
        if (res.status >= 400 && res.status !== 404 || (res.status === 404 && res.body)) {
          const keys = Object.keys(res.body ?? {})
          if (!/^application\/json/.test(res.headers.get('content-type') ?? '') || !keys.includes('code') || !keys.includes('message') || keys.some((k) => !['code', 'message', 'details'].includes(k)) || !/^RPM_ERR_[A-Z_]+$/.test(res.body.code)) {
            const key = `${res.status} ${res.body?.code ?? res.headers.get('content-type')}`
            if (!outOfShape.has(key)) outOfShape.set(key, what.slice(0, 400))
          }
          if (/\bat .+:\d+:\d+|node_modules|\/src\/|\.ts\b/.test(res.text)) throw new Error(`internals in an error: ${what}`)
          const sent = `${safeDecode(url).toLowerCase()} ${raw?.toLowerCase() ?? ''}`
          for (const s of secrets) {
            if (res.text.includes(s) && !sent.includes(s.toLowerCase())) throw new Error(`patient data (${s}) in an error: ${what}`)
          }
        }
      }),
      { seed: SEED, numRuns: RUNS },
    ).finally(() => console.log('[http-fuzz] seed %d: %j', SEED, { routes: perRoute.size, of: ops.length, statuses, outOfShape: Object.fromEntries(outOfShape) }))
    expect(perRoute.size).toBe(ops.length)
    // FINDING (fails until fixed): a path parameter over fastify's maxParamLength (100) gets
    // fastify's own 414 {"error","code":"FST_ERR_MAX_PARAM_LENGTH","message","statusCode"}, a
    // malformed percent-encoding its 400 FST_ERR_BAD_URL, both echoing the whole path, and a URL
    // over Node's 16 KiB header limit fastify's default 431 {"error","message","statusCode"}: none
    // reaches the error handler. Fix (src/http/server.ts): pass Fastify `frameworkErrors(err, req,
    // reply)` answering `{code: 'RPM_ERR_BAD_REQUEST', message: 'the URL is malformed or a path
    // parameter is too long', details: {location: 'params'}}` with err.statusCode, and a
    // `clientErrorHandler(err, socket)` that writes the same shape for 400/413/431 before ending
    // the socket.
    expect(Object.fromEntries(outOfShape)).toEqual({})
    expect((await api(t, 'GET', '/readyz')).status).toBe(200)
  }, 120_000)
})
