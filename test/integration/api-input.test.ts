import { Ajv } from 'ajv'
import addFormats from 'ajv-formats'
import { afterEach, describe, expect, it } from 'vitest'
import { build } from '../../device-simulator/readings.ts'
import { api, connectDevice, login, startGateway, type ApiResponse, type TestDevice, type TestGateway } from '../helpers.ts'

const PASSWORD = 'a long enough password'
const BODY_LIMIT = 64 * 1024

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
  pattern?: string
  format?: string
  minLength?: number
  maxLength?: number
  minimum?: number
  maximum?: number
  items?: Schema
}

interface Parameter {
  in: 'path' | 'query' | 'header'
  name: string
  required?: boolean
  schema: Schema
}

interface Operation {
  method: string
  path: string
  parameters: Parameter[]
  body?: Schema
  secured: boolean
}

/**
 * A signed-in admin, a provider on the care team, and one patient with a device that has sent a
 * reading, so every route has real ids to work on.
 */
async function gateway(): Promise<{ t: TestGateway; token: string; providerToken: string; dev: TestDevice }> {
  t = await startGateway()
  const patient = await t.gateway.registry.addPatient({ name: 'Dana Doe', timezone: 'UTC' })
  const device = await t.gateway.registry.addDevice({ patientId: patient.id, kind: 'bp_cuff' })
  const dev = { patientId: patient.id, deviceId: device.id, secret: device.secret }
  await t.gateway.users.add({ username: 'admin.input', password: PASSWORD, role: 'admin' })
  const client = await connectDevice(t, dev)
  for (const seq of [1, 2]) {
    await client.publishAsync(`devices/${dev.deviceId}/readings`, JSON.stringify(build.bloodPressure(120 + seq, 80, 70, { seq, measuredAt: new Date(Date.now() - seq * 60_000).toISOString() })), { qos: 1 })
  }
  await client.endAsync()
  await t.gateway.users.add({ username: 'provider.input', password: PASSWORD, role: 'provider' })
  await t.gateway.users.addToCareTeam(patient.id, 'provider.input')
  const { accessToken } = await login(t, 'admin.input', PASSWORD)
  const provider = await login(t, 'provider.input', PASSWORD)
  return { t, token: accessToken, providerToken: provider.accessToken, dev }
}

/** The operations of the OpenAPI document under /api/v1. */
function operations(doc: { paths: Record<string, Record<string, any>> }): Operation[] {
  const ops: Operation[] = []
  for (const [path, item] of Object.entries(doc.paths)) {
    if (!path.startsWith('/api/v1/')) continue
    for (const [method, op] of Object.entries(item)) {
      if (!['get', 'post', 'put', 'patch', 'delete'].includes(method)) continue
      const body = op.requestBody?.content?.['application/json']?.schema as Schema | undefined
      ops.push({ method: method.toUpperCase(), path, parameters: (op.parameters ?? []) as Parameter[], ...(body ? { body } : {}), secured: Array.isArray(op.security) && op.security.length > 0 })
    }
  }
  return ops
}

/** Every route fastify serves under /api/v1, from its route tree, as `METHOD /path/{param}`. */
function servedRoutes(tree: string): string[] {
  const routes: string[] = []
  const stack: string[] = []
  for (const line of tree.split('\n')) {
    const m = /^((?:│ {3}| {4})*)(?:├── |└── )(.*?)(?: \(([A-Z, ]+)\))?$/.exec(line)
    if (!m) continue
    stack.length = m[1]!.length / 4
    stack.push(m[2]!)
    const path = stack.join('').replace(/:(\w+)/g, '{$1}')
    if (!path.startsWith('/api/v1/') || !m[3]) continue
    for (const method of m[3].split(', ')) if (method !== 'HEAD') routes.push(`${method} ${path}`)
  }
  return routes.sort()
}

const validator = new Ajv({ strict: false })
addFormats.default(validator)

/** A value that satisfies `schema`, or undefined when this simple generator cannot make one. */
function validValue(schema: Schema): unknown {
  const type = Array.isArray(schema.type) ? schema.type.find((x) => x !== 'null') : schema.type
  if (schema.enum) return schema.enum[0]
  let value: unknown
  switch (type) {
    case 'string': {
      if (schema.format === 'date-time') return new Date().toISOString()
      const length = Math.min(Math.max(schema.minLength ?? 1, 12), schema.maxLength ?? 12)
      const candidates = ['x'.repeat(length), 'abc', 'abc-1', 'a1']
      value = schema.pattern ? candidates.find((c) => new RegExp(schema.pattern!, 'u').test(c) && c.length >= (schema.minLength ?? 0)) : candidates[0]
      break
    }
    case 'integer':
    case 'number':
      value = schema.minimum ?? Math.min(1, schema.maximum ?? 1)
      break
    case 'boolean':
      value = true
      break
    case 'array':
      value = []
      break
    case 'object':
      value = sample(schema)
      break
  }
  return value !== undefined && validator.validate(schema, value) ? value : undefined
}

/** A body with every required field, each valid; undefined when one cannot be made. */
function sample(schema: Schema): Record<string, unknown> | undefined {
  const body: Record<string, unknown> = {}
  for (const name of schema.required ?? []) {
    const value = validValue(schema.properties?.[name] ?? {})
    if (value === undefined) return undefined
    body[name] = value
  }
  return validator.validate(schema, body) ? body : undefined
}

/** A value of another JSON type than `schema` allows (for a JSON body: no coercion applies). */
function wrongType(schema: Schema): unknown {
  const types = Array.isArray(schema.type) ? schema.type : [schema.type]
  if (types.includes('string')) return 12345
  if (types.includes('integer') || types.includes('number')) return '12'
  if (types.includes('boolean')) return 'yes'
  if (types.includes('array')) return { not: 'a list' }
  if (types.includes('object')) return 'not an object'
  return undefined
}

/** A query string value that cannot pass `schema`, or undefined. */
function badQueryValue(schema: Schema): string | undefined {
  if (schema.type === 'integer' || schema.type === 'number') return 'abc'
  if (schema.type === 'boolean') return 'perhaps'
  if (schema.enum) return 'not-one-of-them'
  if (schema.format === 'date-time') return 'yesterday'
  if (schema.maxLength !== undefined) return 'q'.repeat(schema.maxLength + 1)
  if (schema.pattern) return 'has spaces and /slashes/'
  return undefined
}

/** The error contract: a 4xx with {code, message, details?}, JSON, and nothing of the server's insides. */
function expectClientError(res: ApiResponse, what: string, status?: number): void {
  if (status !== undefined) expect(res.status, `${what}: ${res.text}`).toBe(status)
  expect(res.status, `${what}: ${res.text}`).toBeGreaterThanOrEqual(400)
  expect(res.status, `${what}: ${res.text}`).toBeLessThan(500)
  expect(res.headers.get('content-type'), what).toMatch(/^application\/json/)
  expect(Object.keys(res.body ?? {}).filter((k) => !['code', 'message', 'details'].includes(k)), what).toEqual([])
  expect(res.body.code, what).toMatch(/^RPM_ERR_[A-Z_]+$/)
  expect(res.body.message, what).toEqual(expect.any(String))
  if ('details' in res.body) expect(res.body.details, what).toEqual(expect.any(Object))
  expect(res.text, what).not.toMatch(/\bat .+:\d+:\d+|node_modules|\/src\/|\.ts\b/)
}

function expectValidationError(res: ApiResponse, what: string, location: string, field?: string): void {
  expectClientError(res, what, 400)
  expect(res.body.code, what).toBe('RPM_ERR_BAD_REQUEST')
  expect(res.body.details, what).toMatchObject({ location, ...(field ? { field } : {}) })
}

describe('the OpenAPI document', () => {
  it('is served at /docs/json and lists every /api/v1 route, and /docs serves the UI', async () => {
    const { t } = await gateway()
    const res = await api(t, 'GET', '/docs/json')
    expect(res.status).toBe(200)
    expect(res.body.openapi).toMatch(/^3\./)
    const documented = operations(res.body).map((o) => `${o.method} ${o.path}`).sort()
    expect(documented).toEqual(servedRoutes(t.gateway.http.printRoutes({ commonPrefix: false })))
    // The contract's fixed paths, whatever else is added.
    expect(documented).toEqual(expect.arrayContaining([
      'POST /api/v1/auth/login', 'POST /api/v1/auth/refresh', 'POST /api/v1/auth/logout',
      'GET /api/v1/patients', 'GET /api/v1/patients/{patientId}', 'GET /api/v1/patients/{patientId}/readings',
    ]))

    const ui = await fetch(`${t.urls.http}/docs`)
    expect(ui.status).toBe(200)
    expect(ui.headers.get('content-type')).toMatch(/^text\/html/)
    expect(await ui.text()).toMatch(/swagger/i)
  })
})

describe('bad input on every /api/v1 route', () => {
  it('gets a 4xx with {code, message, details}: never a 500, never a stack trace', async () => {
    const { t, token: adminToken, providerToken, dev } = await gateway()
    const doc = (await api(t, 'GET', '/docs/json')).body
    const ops = operations(doc)
    expect(ops.length).toBeGreaterThan(10)
    const ids: Record<string, string> = { patientId: dev.patientId, deviceId: dev.deviceId }
    const url = (op: Operation, overrides: Record<string, string> = {}, query = '') =>
      op.path.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(overrides[name] ?? ids[name] ?? 'abc')) + query
    let checked = 0

    for (const op of ops) {
      const name = `${op.method} ${op.path}`
      // A route for another role refuses the admin before reading the body (403): its input is
      // checked as the provider, who may use it. The probe's body cannot be parsed, so it changes nothing.
      const probe = await api(t, op.method, url(op), { token: adminToken, ...(op.method === 'GET' ? {} : { raw: '{' }) })
      const token = probe.status === 403 ? providerToken : adminToken
      const send = (path: string, options: Parameters<typeof api>[3] = {}) => {
        checked++
        return api(t, op.method, path, { token, ...options })
      }
      const body = op.body ? sample(op.body) : undefined

      // Path parameters that cannot be ids.
      for (const p of op.parameters.filter((x) => x.in === 'path')) {
        const res = await send(url(op, { [p.name]: 'not an id/..' }), body ? { body } : {})
        expectValidationError(res, `${name} with ${p.name}='not an id/..'`, 'params', p.name)
      }

      // Query values of the wrong type or out of range.
      for (const p of op.parameters.filter((x) => x.in === 'query')) {
        const bad = badQueryValue(p.schema)
        if (bad === undefined) continue
        const res = await send(url(op, {}, `?${p.name}=${encodeURIComponent(bad)}`))
        expectValidationError(res, `${name} with ${p.name}=${bad.slice(0, 20)}`, 'querystring', p.name)
      }

      if (op.body) {
        const schema = op.body
        const exact = body !== undefined
        for (const field of schema.required ?? []) {
          const { [field]: _left, ...rest } = body ?? {}
          const res = await send(url(op), { body: rest })
          if (exact) expectValidationError(res, `${name} without ${field}`, 'body', field)
          else expectClientError(res, `${name} without ${field}`)
        }
        const unknown = await send(url(op), { body: { ...body, unexpectedField: 1 } })
        if (exact) expectValidationError(unknown, `${name} with an unknown field`, 'body', 'unexpectedField')
        else expectClientError(unknown, `${name} with an unknown field`)

        for (const [field, fieldSchema] of Object.entries(schema.properties ?? {})) {
          const wrong = wrongType(fieldSchema)
          if (wrong === undefined) continue
          const res = await send(url(op), { body: { ...body, [field]: wrong } })
          if (exact) expectValidationError(res, `${name} with ${field}=${JSON.stringify(wrong)}`, 'body', field)
          else expectClientError(res, `${name} with ${field}=${JSON.stringify(wrong)}`)
        }

        for (const raw of ['[]', '"text"', '42', 'true', 'null', '', '{"unterminated": ', '{"__proto__": {"admin": true}}']) {
          expectClientError(await send(url(op), { raw }), `${name} with body ${raw || '(empty)'}`, 400)
        }
        expectClientError(await send(url(op), { raw: JSON.stringify(body ?? {}), contentType: 'text/plain' }), `${name} as text/plain`)
      }

      if (op.method !== 'GET') {
        // Valid JSON, just too much of it.
        const big = JSON.stringify({ ...body, padding: 'p'.repeat(BODY_LIMIT + 1024) })
        const res = await send(url(op), { raw: big })
        expectClientError(res, `${name} with a ${big.length}-byte body`, 413)
        expect(res.body.code).toBe('RPM_ERR_PAYLOAD_TOO_LARGE')
      }

      if (op.secured) {
        // No token: refused before anything else happens, with the same error shape.
        checked++
        const res = await api(t, op.method, url(op), body ? { body } : {})
        expectClientError(res, `${name} without a token`, 401)
        expect(res.body.code).toBe('RPM_ERR_UNAUTHENTICATED')
      }
    }
    expect(checked).toBeGreaterThan(100)

    // None of it did harm: the admin is still signed in and the gateway still serves.
    expect((await api(t, 'GET', '/api/v1/me', { token: adminToken })).status).toBe(200)
    expect((await api(t, 'GET', '/readyz')).status).toBe(200)
  })
})

describe('readings pagination', () => {
  it('answers a cursor it did not issue with 400 naming the cursor, and follows the ones it did', async () => {
    const { t, dev } = await gateway()
    await t.gateway.users.add({ username: 'nurse.input', password: PASSWORD, role: 'provider' })
    await t.gateway.users.addToCareTeam(dev.patientId, 'nurse.input')
    const { accessToken: token } = await login(t, 'nurse.input', PASSWORD)
    const path = `/api/v1/patients/${dev.patientId}/readings`
    const first = await api(t, 'GET', `${path}?limit=1`, { token })
    expect(first.status).toBe(200)
    expect(first.body.items).toHaveLength(1)
    expect(first.body.nextCursor).toEqual(expect.any(String))
    const second = await api(t, 'GET', `${path}?limit=1&cursor=${first.body.nextCursor}`, { token })
    expect(second.status).toBe(200)
    expect(second.body.items.map((r: { seq: number }) => r.seq)).toEqual([2])
    expect(second.body.nextCursor).toBeNull()

    const forged = [
      'not-a-cursor',
      Buffer.from('no separator').toString('base64url'),
      Buffer.from('yesterday|5').toString('base64url'),
      Buffer.from(`${new Date().toISOString()}|five`).toString('base64url'),
      '%00%01',
    ]
    for (const cursor of forged) {
      const res = await api(t, 'GET', `${path}?cursor=${cursor}`, { token })
      expectClientError(res, `cursor ${cursor}`, 400)
      expect(res.body).toMatchObject({ code: 'RPM_ERR_BAD_REQUEST', details: { field: 'cursor' } })
    }
    const longCursor = await api(t, 'GET', `${path}?cursor=${'c'.repeat(201)}`, { token })
    expectValidationError(longCursor, 'a 201-character cursor', 'querystring', 'cursor')
  })
})
