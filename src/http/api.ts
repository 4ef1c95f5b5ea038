import type {} from '@fastify/swagger' // adds tags, summary and security to route schemas
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { AuditLog } from '../audit/audit.ts'
import { AddressGuard } from '../broker/guard.ts'
import type { Clock } from '../clock.ts'
import { RpmError, isRpmError } from '../errors.ts'
import type { AccessPolicy, AccessBasis } from '../identity/access.ts'
import type { Auth, Principal } from '../identity/auth.ts'
import type { Users } from '../identity/users.ts'
import { listReadings } from '../ingest/queries.ts'
import { READING_TYPES } from '../ingest/types.ts'
import { DEVICE_KINDS, type Registry, toPatient } from '../registry/registry.ts'
import type { Store } from '../store/db.ts'
import type { DeviceKind, Role } from '../store/schema.ts'
import { makeGuards } from './guards.ts'
import { auditEntrySchema, bearer, deviceSchema, errorResponses, idPattern, patientSchema, readingSchema, tokenSchema, userSchema } from './schemas.ts'

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null
    /** Set once this request has an audit entry, so a failure is not recorded twice. */
    audited: boolean
  }
}

export interface ApiDeps {
  store: Store
  auth: Auth
  access: AccessPolicy
  users: Users
  registry: Registry
  audit: AuditLog
  clock: Clock
  /** How a browser's session cookie is set: Secure off loopback, and how long it may live. */
  sessionCookie: { secure: boolean; maxAgeSeconds: number }
}

/**
 * A browser keeps its refresh token in this HttpOnly cookie instead of in script-readable
 * storage: only the auth routes receive it (Path), and never from another site (SameSite=Strict).
 */
export const REFRESH_COOKIE = 'rpm_refresh'

function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=')
    if (k === name) return decodeURIComponent(v.join('='))
  }
  return undefined
}

const patientParams = { type: 'object', required: ['patientId'], additionalProperties: false, properties: { patientId: { type: 'string', pattern: idPattern } } } as const

/** The REST API under /api/v1: sign-in and tokens, patients, devices, readings, users, audit. */
export async function apiRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  const { auth, access, users, registry, audit, store } = deps
  const loginGuard = new AddressGuard({ connectsPerMinute: 1_000_000, failuresBeforeDelay: 10, failureDelayMs: 500 }, deps.clock)
  app.addHook('onClose', async () => loginGuard.close())
  app.decorateRequest('principal', null)
  app.decorateRequest('audited', false)

  const guards = makeGuards({ auth, access, audit })
  const { record, signedIn } = guards
  guards.auditFailures(app)

  /** Clinical access to one patient; anything else answers 404 so the record's existence does not leak. */
  const clinical = (req: FastifyRequest, patientId: string, action: string): Promise<AccessBasis> =>
    guards.clinical(req, patientId, action, {
      target: patientId,
      error: new RpmError('RPM_ERR_NOT_FOUND', `no patient ${patientId}`, { details: { field: 'patientId' } }),
    })

  /** Demographic access (admins manage every patient; others as for clinical data). */
  const demographics = async (req: FastifyRequest, patientId: string, action: string): Promise<void> => {
    if (req.principal!.role !== 'admin') return void (await clinical(req, patientId, action))
    const exists = await store.db.selectFrom('patients').select('id').where('id', '=', patientId).executeTakeFirst()
    if (!exists) {
      record(req, action, 'denied', patientId, { code: 'RPM_ERR_NOT_FOUND' })
      throw new RpmError('RPM_ERR_NOT_FOUND', `no patient ${patientId}`, { details: { field: 'patientId' } })
    }
  }

  // --- sign-in -------------------------------------------------------------------------------

  const tokenAnswer = { type: 'object', properties: tokenSchema.properties, required: ['accessToken', 'expiresIn', 'tokenType'] } as const
  const setRefreshCookie = (reply: FastifyReply, token: string | null) => {
    const { secure, maxAgeSeconds } = deps.sessionCookie
    const attrs = ['Path=/api/v1/auth', 'HttpOnly', 'SameSite=Strict', ...(secure ? ['Secure'] : []), `Max-Age=${token === null ? 0 : maxAgeSeconds}`]
    reply.header('set-cookie', `${REFRESH_COOKIE}=${token === null ? '' : encodeURIComponent(token)}; ${attrs.join('; ')}`)
  }
  /** In cookie mode the refresh token goes into the HttpOnly cookie and not into the body. */
  const answer = <T extends { refreshToken: string }>(reply: FastifyReply, pair: T, cookie: boolean): T | Omit<T, 'refreshToken'> => {
    if (!cookie) return pair
    setRefreshCookie(reply, pair.refreshToken)
    const { refreshToken: _kept, ...rest } = pair
    return rest
  }

  app.post<{ Body: { username: string; password: string; session?: 'token' | 'cookie' } }>('/api/v1/auth/login', {
    schema: {
      tags: ['auth'],
      summary: 'Sign in: a short-lived access token and a rotating refresh token (in the body, or with session "cookie" in an HttpOnly cookie for browsers)',
      body: {
        type: 'object',
        required: ['username', 'password'],
        additionalProperties: false,
        properties: {
          username: { type: 'string', minLength: 1, maxLength: 64 },
          password: { type: 'string', minLength: 1, maxLength: 1024 },
          session: { type: 'string', enum: ['token', 'cookie'], description: 'cookie: the refresh token is set as the HttpOnly cookie rpm_refresh (Path=/api/v1/auth, SameSite=Strict) and left out of the body' },
        },
      },
      response: { 200: { type: 'object', properties: { ...tokenSchema.properties, user: userSchema }, required: [...tokenAnswer.required, 'user'] }, ...errorResponses },
    },
  }, async (req, reply) => {
    const delay = loginGuard.loginDelayMs(req.ip)
    if (delay > 0) await new Promise((r) => setTimeout(r, delay))
    try {
      const result = await auth.login(req.body.username, req.body.password, req.ip)
      loginGuard.loginSucceeded(req.ip)
      return answer(reply, result, req.body.session === 'cookie')
    } catch (err) {
      loginGuard.loginFailed(req.ip)
      throw err
    }
  })

  app.post<{ Body: { refreshToken?: string } | undefined }>('/api/v1/auth/refresh', {
    schema: {
      tags: ['auth'],
      summary: 'Trade a refresh token (once) for a new pair; a reused one ends the session. Without refreshToken in the body, the rpm_refresh cookie is used (and rotated)',
      body: { type: 'object', additionalProperties: false, properties: { refreshToken: { type: 'string', minLength: 1, maxLength: 256 } } },
      response: { 200: tokenAnswer, ...errorResponses },
    },
  }, async (req, reply) => {
    const fromBody = req.body?.refreshToken
    const token = fromBody ?? cookieValue(req.headers.cookie, REFRESH_COOKIE)
    if (!token) throw new RpmError('RPM_ERR_BAD_REQUEST', 'body: missing field refreshToken (or the rpm_refresh cookie)', { details: { location: 'body', field: 'refreshToken' } })
    try {
      return answer(reply, await auth.refresh(token, req.ip), fromBody === undefined)
    } catch (err) {
      if (fromBody === undefined) setRefreshCookie(reply, null)
      throw err
    }
  })

  app.post('/api/v1/auth/logout', {
    onRequest: signedIn(),
    schema: { tags: ['auth'], summary: 'Sign out: ends the session and its refresh tokens (and clears the rpm_refresh cookie)', security: bearer, response: { 204: { type: 'null' }, ...errorResponses } },
  }, async (req, reply: FastifyReply) => {
    await auth.logout(req.principal!, req.ip)
    if (cookieValue(req.headers.cookie, REFRESH_COOKIE) !== undefined) setRefreshCookie(reply, null)
    return reply.status(204).send()
  })

  app.get('/api/v1/me', {
    onRequest: signedIn(),
    schema: { tags: ['auth'], summary: 'The signed-in user', security: bearer, response: { 200: userSchema, ...errorResponses } },
  }, async (req) => users.get(req.principal!.userId))

  // --- patients ------------------------------------------------------------------------------

  app.get('/api/v1/patients', {
    onRequest: signedIn(),
    schema: {
      tags: ['patients'],
      summary: 'Patients you may see: yourself, your care teams\' patients, or all (admin)',
      security: bearer,
      response: { 200: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: patientSchema } } }, ...errorResponses },
    },
  }, async (req) => {
    const ids = await access.listable(req.principal!)
    let q = store.db.selectFrom('patients').selectAll().orderBy('name').orderBy('id')
    if (ids !== 'all') q = q.where('id', 'in', ids)
    // An empty list is a read too: it is recorded like any other.
    const items = ids !== 'all' && ids.length === 0 ? [] : (await q.execute()).map(toPatient)
    record(req, 'patients.list', 'allowed', undefined, { count: items.length })
    return { items }
  })

  app.post<{ Body: { name: string; id?: string; timezone?: string } }>('/api/v1/patients', {
    onRequest: signedIn('admin'),
    schema: {
      tags: ['patients'],
      summary: 'Add a patient (admin)',
      security: bearer,
      body: {
        type: 'object',
        required: ['name'],
        additionalProperties: false,
        properties: { name: { type: 'string', minLength: 1, maxLength: 200 }, id: { type: 'string', pattern: idPattern }, timezone: { type: 'string', maxLength: 64 } },
      },
      response: { 201: patientSchema, ...errorResponses },
    },
  }, async (req, reply) => {
    const patient = await registry.addPatient(req.body)
    record(req, 'patient.add', 'allowed', patient.id)
    return reply.status(201).send(patient)
  })

  app.get<{ Params: { patientId: string } }>('/api/v1/patients/:patientId', {
    onRequest: signedIn(),
    schema: { tags: ['patients'], summary: 'One patient', security: bearer, params: patientParams, response: { 200: patientSchema, ...errorResponses } },
  }, async (req) => {
    const { patientId } = req.params
    await demographics(req, patientId, 'patient.read')
    const patient = await registry.getPatient(patientId)
    record(req, 'patient.read', 'allowed', patientId)
    return patient
  })

  app.get<{ Params: { patientId: string }; Querystring: { type?: string; since?: string; until?: string; limit?: number; cursor?: string } }>(
    '/api/v1/patients/:patientId/readings',
    {
      onRequest: signedIn(),
      schema: {
        tags: ['readings'],
        summary: 'A patient\'s readings, newest first, with cursor pagination',
        security: bearer,
        params: patientParams,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            type: { type: 'string', enum: [...READING_TYPES] },
            since: { type: 'string', format: 'date-time' },
            until: { type: 'string', format: 'date-time' },
            limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
            cursor: { type: 'string', maxLength: 200 },
          },
        },
        response: {
          200: { type: 'object', required: ['items', 'nextCursor'], properties: { items: { type: 'array', items: readingSchema }, nextCursor: { type: ['string', 'null'] } } },
          ...errorResponses,
        },
      },
    },
    async (req) => {
      const { patientId } = req.params
      const basis = await clinical(req, patientId, 'readings.read')
      const page = await listReadings(store.db, { patientId, ...req.query })
      record(req, 'readings.read', 'allowed', patientId, { basis, count: page.items.length })
      return page
    },
  )

  // --- devices -------------------------------------------------------------------------------

  app.get<{ Params: { patientId: string } }>('/api/v1/patients/:patientId/devices', {
    onRequest: signedIn(),
    schema: {
      tags: ['devices'],
      summary: 'A patient\'s devices with their presence',
      security: bearer,
      params: patientParams,
      response: { 200: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: deviceSchema } } }, ...errorResponses },
    },
  }, async (req) => {
    const { patientId } = req.params
    await demographics(req, patientId, 'devices.read')
    await registry.getPatient(patientId)
    const items = await registry.listDevices(patientId)
    record(req, 'devices.read', 'allowed', patientId)
    return { items }
  })

  app.post<{ Params: { patientId: string }; Body: { kind?: DeviceKind; id?: string } }>('/api/v1/patients/:patientId/devices', {
    onRequest: signedIn('admin'),
    schema: {
      tags: ['devices'],
      summary: 'Provision a device (admin); the response holds its secret, shown once',
      security: bearer,
      params: patientParams,
      body: {
        type: 'object',
        additionalProperties: false,
        properties: { kind: { type: 'string', enum: [...DEVICE_KINDS] }, id: { type: 'string', pattern: idPattern } },
      },
      response: { 201: deviceSchema, ...errorResponses },
    },
  }, async (req, reply) => {
    const device = await registry.addDevice({ patientId: req.params.patientId, ...req.body })
    record(req, 'device.add', 'allowed', device.id, { patientId: device.patientId })
    reply.header('cache-control', 'no-store')
    return reply.status(201).send(device)
  })

  app.post<{ Params: { deviceId: string } }>('/api/v1/devices/:deviceId/disable', {
    onRequest: signedIn('admin'),
    schema: {
      tags: ['devices'],
      summary: 'Disable a device (admin): it can no longer connect',
      security: bearer,
      params: { type: 'object', required: ['deviceId'], additionalProperties: false, properties: { deviceId: { type: 'string', pattern: idPattern } } },
      response: { 200: deviceSchema, ...errorResponses },
    },
  }, async (req) => {
    const device = await registry.disableDevice(req.params.deviceId)
    record(req, 'device.disable', 'allowed', device.id)
    return device
  })

  // --- care teams and users ------------------------------------------------------------------

  app.get<{ Params: { patientId: string } }>('/api/v1/patients/:patientId/care-team', {
    onRequest: signedIn(),
    schema: {
      tags: ['care teams'],
      summary: 'The providers on a patient\'s care team',
      security: bearer,
      params: patientParams,
      response: { 200: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: userSchema } } }, ...errorResponses },
    },
  }, async (req) => {
    const { patientId } = req.params
    await demographics(req, patientId, 'careteam.read')
    const items = await users.careTeam(patientId)
    record(req, 'careteam.read', 'allowed', patientId, { count: items.length })
    return { items }
  })

  app.post<{ Params: { patientId: string }; Body: { provider: string } }>('/api/v1/patients/:patientId/care-team', {
    onRequest: signedIn('admin'),
    schema: {
      tags: ['care teams'],
      summary: 'Put a provider on the patient\'s care team (admin)',
      security: bearer,
      params: patientParams,
      body: { type: 'object', required: ['provider'], additionalProperties: false, properties: { provider: { type: 'string', minLength: 1, maxLength: 64, description: 'username or user id' } } },
      response: { 201: { type: 'object', properties: { patientId: { type: 'string' }, userId: { type: 'string' }, username: { type: 'string' } } }, ...errorResponses },
    },
  }, async (req, reply) => {
    const member = await users.addToCareTeam(req.params.patientId, req.body.provider)
    record(req, 'careteam.add', 'allowed', req.params.patientId, { userId: member.userId })
    return reply.status(201).send(member)
  })

  app.get('/api/v1/users', {
    onRequest: signedIn('admin'),
    schema: {
      tags: ['users'],
      summary: 'All users (admin)',
      security: bearer,
      response: { 200: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: userSchema } } }, ...errorResponses },
    },
  }, async (req) => {
    const items = await users.list()
    record(req, 'users.list', 'allowed', undefined, { count: items.length })
    return { items }
  })

  app.post<{ Body: { username: string; password: string; role: Role; name?: string; patientId?: string } }>('/api/v1/users', {
    onRequest: signedIn('admin'),
    schema: {
      tags: ['users'],
      summary: 'Add a user (admin); a patient user is linked to a patient record',
      security: bearer,
      body: {
        type: 'object',
        required: ['username', 'password', 'role'],
        additionalProperties: false,
        properties: {
          username: { type: 'string', minLength: 3, maxLength: 64 },
          password: { type: 'string', minLength: 12, maxLength: 1024 },
          role: { type: 'string', enum: ['patient', 'provider', 'admin'] },
          name: { type: 'string', maxLength: 200 },
          patientId: { type: 'string', pattern: idPattern },
        },
      },
      response: { 201: userSchema, ...errorResponses },
    },
  }, async (req, reply) => {
    const user = await users.add(req.body)
    record(req, 'user.add', 'allowed', user.id, { role: user.role })
    return reply.status(201).send(user)
  })

  // --- break-glass and audit -----------------------------------------------------------------

  app.post<{ Body: { patientId: string; reason: string; minutes?: number } }>('/api/v1/break-glass', {
    onRequest: signedIn('admin'),
    schema: {
      tags: ['access'],
      summary: 'Emergency access to one patient\'s clinical record (admin): needs a reason, expires on its own, is audited',
      security: bearer,
      body: {
        type: 'object',
        required: ['patientId', 'reason'],
        additionalProperties: false,
        properties: { patientId: { type: 'string', pattern: idPattern }, reason: { type: 'string', minLength: 1, maxLength: 500 }, minutes: { type: 'integer', minimum: 1, default: 30 } },
      },
      response: { 201: { type: 'object', properties: { id: { type: 'string' }, patientId: { type: 'string' }, expiresAt: { type: 'string' } } }, ...errorResponses },
    },
  }, async (req, reply) => {
    let grant: Awaited<ReturnType<AccessPolicy['breakGlass']>>
    try {
      grant = await access.breakGlass(req.principal!, req.body.patientId, req.body.reason, req.body.minutes ?? 30)
    } catch (err) {
      // A refused emergency-access request is as much a part of the record as a granted one.
      record(req, 'breakglass.grant', 'denied', req.body.patientId, { code: isRpmError(err) ? err.code : 'RPM_ERR_INTERNAL', reason: req.body.reason })
      throw err
    }
    record(req, 'breakglass.grant', 'allowed', req.body.patientId, { grantId: grant.id, reason: req.body.reason, expiresAt: grant.expiresAt })
    return reply.status(201).send(grant)
  })

  app.get<{ Querystring: { limit?: number; before?: number; actorId?: string; target?: string } }>('/api/v1/audit', {
    onRequest: signedIn('admin'),
    schema: {
      tags: ['audit'],
      summary: 'The audit trail, newest first (admin)',
      security: bearer,
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: {
          limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
          before: { type: 'integer', minimum: 1, description: 'entries with a smaller id (the previous page\'s nextBefore)' },
          actorId: { type: 'string', maxLength: 64 },
          target: { type: 'string', maxLength: 256 },
        },
      },
      response: {
        200: { type: 'object', required: ['items', 'nextBefore'], properties: { items: { type: 'array', items: auditEntrySchema }, nextBefore: { type: ['integer', 'null'] } } },
        ...errorResponses,
      },
    },
  }, async (req) => {
    const limit = req.query.limit ?? 100
    let q = store.db.selectFrom('audit').selectAll().orderBy('id', 'desc').limit(limit + 1)
    if (req.query.before) q = q.where('id', '<', req.query.before)
    if (req.query.actorId) q = q.where('actor_id', '=', req.query.actorId)
    if (req.query.target) q = q.where('target', '=', req.query.target)
    const rows = await q.execute()
    const page = rows.slice(0, limit)
    record(req, 'audit.read', 'allowed')
    return {
      items: page.map((r) => ({
        id: r.id,
        at: r.at,
        actorType: r.actor_type,
        actorId: r.actor_id,
        action: r.action,
        target: r.target,
        outcome: r.outcome,
        address: r.address,
        details: r.details_json ? JSON.parse(r.details_json) : null,
      })),
      nextBefore: rows.length > limit ? page[page.length - 1]!.id : null,
    }
  })
}
