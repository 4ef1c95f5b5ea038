import type {} from '@fastify/swagger' // adds tags, summary and security to route schemas
import formbody from '@fastify/formbody'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { AuditLog } from '../audit/audit.ts'
import { RpmError } from '../errors.ts'
import type { AccessPolicy } from '../identity/access.ts'
import type { Auth } from '../identity/auth.ts'
import { type Preferences, toSmsView } from '../notify/directory.ts'
import type { Notifier } from '../notify/notifier.ts'
import { toView } from '../notify/outbox.ts'
import { IANAZone } from 'luxon'
import { HHMM } from '../notify/quiet-hours.ts'
import type { NotificationStatus } from '../store/schema.ts'
import { makeGuards } from './guards.ts'
import { bearer, errorResponses, idPattern } from './schemas.ts'

export interface NotifyRouteDeps {
  notifier: Notifier
  auth: Auth
  access: AccessPolicy
  audit: AuditLog
  /** The gateway's public URL as Twilio calls it (notify.sms.publicUrl); '' turns the callbacks off. */
  publicUrl: string
}

const E164 = '^\\+[1-9][0-9]{6,14}$'
const base64url = (min: number, max: number) => ({ type: 'string', minLength: min, maxLength: max, pattern: '^[A-Za-z0-9_-]+=*$' }) as const

const subscriptionSchema = {
  type: 'object',
  required: ['id', 'type', 'platform', 'label', 'createdAt', 'lastSuccessAt'],
  properties: {
    id: { type: 'string' },
    type: { type: 'string', enum: ['webpush', 'fcm'] },
    platform: { type: 'string', enum: ['web', 'android', 'ios'] },
    label: { type: ['string', 'null'] },
    createdAt: { type: 'string', format: 'date-time' },
    lastSuccessAt: { type: ['string', 'null'], description: 'The last notification the push service accepted for it' },
  },
} as const

const quietHoursSchema = {
  type: ['object', 'null'],
  required: ['start', 'end', 'timezone'],
  additionalProperties: false,
  description: 'Messages wait until the end; urgent and critical alerts, reminders and tests do not. null: none',
  properties: {
    start: { type: 'string', pattern: HHMM, description: 'HH:MM local time' },
    end: { type: 'string', pattern: HHMM, description: 'HH:MM local time (may be the next day: 22:00-07:00)' },
    timezone: { type: 'string', minLength: 1, maxLength: 64, description: 'IANA time zone, e.g. Europe/Berlin' },
  },
} as const

const preferencesSchema = {
  type: 'object',
  required: ['channels', 'messages', 'quietHours'],
  additionalProperties: false,
  properties: {
    channels: {
      type: 'object',
      required: ['webpush', 'fcm', 'sms'],
      additionalProperties: false,
      properties: { webpush: { type: 'boolean' }, fcm: { type: 'boolean' }, sms: { type: 'boolean' } },
    },
    messages: { type: 'boolean', description: 'Push for new messages' },
    quietHours: quietHoursSchema,
  },
} as const

const smsSchema = {
  type: 'object',
  required: ['phone', 'consentedAt', 'consentSource', 'optedOutAt', 'optOutSource', 'verifiedAt', 'active'],
  properties: {
    phone: { type: 'string' },
    consentedAt: { type: ['string', 'null'], format: 'date-time' },
    consentSource: { type: ['string', 'null'] },
    optedOutAt: { type: ['string', 'null'], format: 'date-time' },
    optOutSource: { type: ['string', 'null'], description: 'user, sms reply STOP, or twilio error 21610' },
    verifiedAt: { type: ['string', 'null'], format: 'date-time', description: 'When the code texted to the number came back' },
    active: { type: 'boolean', description: 'Consent given, number verified, not withdrawn: SMS may be sent' },
  },
} as const

const notificationSchema = {
  type: 'object',
  required: ['id', 'userId', 'channel', 'kind', 'refId', 'urgent', 'status', 'attempts', 'reason', 'createdAt', 'sentAt', 'deliveryStatus'],
  properties: {
    id: { type: 'string' },
    userId: { type: 'string' },
    channel: { type: 'string', enum: ['webpush', 'fcm', 'sms'] },
    kind: { type: 'string', enum: ['message', 'alert', 'reminder', 'test'] },
    refId: { type: ['string', 'null'], description: 'The thread, alert or reminder occurrence it is about' },
    urgent: { type: 'boolean' },
    status: { type: 'string', enum: ['pending', 'sending', 'sent', 'failed', 'dropped'] },
    attempts: { type: 'integer' },
    reason: { type: ['string', 'null'], description: 'Why it failed, was dropped, or is being retried' },
    createdAt: { type: 'string', format: 'date-time' },
    sentAt: { type: ['string', 'null'], format: 'date-time' },
    deliveryStatus: { type: ['string', 'null'], description: 'SMS: the last status Twilio reported (delivered, undelivered, ...)' },
  },
} as const

/** Push subscriptions, SMS consent, preferences and the outbox under /api/v1/notifications; Twilio's callbacks. */
export async function notifyRoutes(app: FastifyInstance, deps: NotifyRouteDeps): Promise<void> {
  const { notifier, audit } = deps
  const { directory } = notifier
  const guards = makeGuards(deps)
  const { record, signedIn, audited } = guards
  guards.auditFailures(app)
  if (!app.hasRequestDecorator('principal')) app.decorateRequest('principal', null)
  const me = (req: FastifyRequest) => req.principal!.userId

  app.get('/api/v1/notifications/channels', {
    onRequest: signedIn(),
    schema: {
      tags: ['notifications'],
      summary: 'Which channels this gateway sends on, and the VAPID public key a browser subscribes with (applicationServerKey)',
      security: bearer,
      response: {
        200: {
          type: 'object',
          required: ['webpush', 'fcm', 'sms'],
          properties: {
            webpush: { type: 'object', required: ['state', 'publicKey'], properties: { state: { type: 'string' }, publicKey: { type: 'string' } } },
            fcm: { type: 'object', required: ['state'], properties: { state: { type: 'string', enum: ['up', 'failing', 'off'] } } },
            sms: { type: 'object', required: ['state'], properties: { state: { type: 'string', enum: ['up', 'failing', 'off'] } } },
          },
        },
        ...errorResponses,
      },
    },
  }, async () => {
    const states = notifier.channels()
    return { webpush: { state: states.webpush, publicKey: notifier.vapid.publicKey }, fcm: { state: states.fcm }, sms: { state: states.sms } }
  })

  type SubscriptionBody =
    | { type: 'webpush'; subscription: { endpoint: string; expirationTime?: number | null; keys: { p256dh: string; auth: string } }; label?: string }
    | { type: 'fcm'; token: string; platform: 'android' | 'ios' | 'web'; label?: string }

  app.post<{ Body: SubscriptionBody }>('/api/v1/notifications/subscriptions', {
    onRequest: signedIn(),
    schema: {
      tags: ['notifications'],
      summary: 'Register this browser (a PushSubscription as the browser gives it) or this app (an FCM registration token) for push: 201 when new, 200 when already known',
      security: bearer,
      body: {
        oneOf: [
          {
            type: 'object',
            required: ['type', 'subscription'],
            additionalProperties: false,
            properties: {
              type: { const: 'webpush' },
              subscription: {
                type: 'object',
                required: ['endpoint', 'keys'],
                additionalProperties: false,
                properties: {
                  endpoint: { type: 'string', minLength: 10, maxLength: 2048 },
                  expirationTime: { type: ['number', 'null'] },
                  keys: {
                    type: 'object',
                    required: ['p256dh', 'auth'],
                    additionalProperties: false,
                    properties: { p256dh: base64url(80, 100), auth: base64url(16, 32) },
                  },
                },
              },
              label: { type: 'string', maxLength: 100, description: 'e.g. Work laptop' },
            },
          },
          {
            type: 'object',
            required: ['type', 'token', 'platform'],
            additionalProperties: false,
            properties: {
              type: { const: 'fcm' },
              token: { type: 'string', minLength: 20, maxLength: 4096, pattern: '^[A-Za-z0-9_:.-]+$' },
              platform: { type: 'string', enum: ['android', 'ios', 'web'] },
              label: { type: 'string', maxLength: 100 },
            },
          },
        ],
      },
      response: { 200: subscriptionSchema, 201: subscriptionSchema, ...errorResponses },
    },
  }, async (req, reply) => {
    const body = req.body
    const action = 'notify.subscription.add'
    if (body.type === 'fcm' && !notifier.enabled('fcm')) {
      record(req, action, 'denied', undefined, { code: 'RPM_ERR_CHANNEL_OFF' })
      throw new RpmError('RPM_ERR_CHANNEL_OFF', 'FCM is not configured on this gateway (notify.fcm.serviceAccountFile)')
    }
    const { target, created } = audited(req, action, me(req), () =>
      directory.addTarget(me(req), body.type === 'webpush'
        ? { type: 'webpush', endpoint: body.subscription.endpoint, p256dh: body.subscription.keys.p256dh, auth: body.subscription.keys.auth, ...(body.label ? { label: body.label } : {}) }
        : { type: 'fcm', token: body.token, platform: body.platform, ...(body.label ? { label: body.label } : {}) }))
    record(req, action, 'allowed', target.id, { type: target.type, created })
    return reply.status(created ? 201 : 200).send(target)
  })

  app.get('/api/v1/notifications/subscriptions', {
    onRequest: signedIn(),
    schema: {
      tags: ['notifications'],
      summary: 'Your registered browsers and apps',
      security: bearer,
      response: { 200: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: subscriptionSchema } } }, ...errorResponses },
    },
  }, async (req) => ({ items: directory.targets(me(req)) }))

  app.delete<{ Params: { subscriptionId: string } }>('/api/v1/notifications/subscriptions/:subscriptionId', {
    onRequest: signedIn(),
    schema: {
      tags: ['notifications'],
      summary: 'Stop pushing to one of your browsers or apps (at sign-out, or when the user turns push off)',
      security: bearer,
      params: { type: 'object', required: ['subscriptionId'], additionalProperties: false, properties: { subscriptionId: { type: 'string', pattern: idPattern } } },
      response: { 204: { type: 'null' }, ...errorResponses },
    },
  }, async (req, reply) => {
    const id = req.params.subscriptionId
    if (!directory.removeTarget(me(req), id)) {
      record(req, 'notify.subscription.remove', 'denied', id, { code: 'RPM_ERR_NOT_FOUND' })
      throw new RpmError('RPM_ERR_NOT_FOUND', `no subscription ${id} of yours`, { details: { field: 'subscriptionId' } })
    }
    record(req, 'notify.subscription.remove', 'allowed', id)
    return reply.status(204).send()
  })

  app.get('/api/v1/notifications/preferences', {
    onRequest: signedIn(),
    schema: { tags: ['notifications'], summary: 'Your channels, message notifications and quiet hours', security: bearer, response: { 200: preferencesSchema, ...errorResponses } },
  }, async (req) => directory.preferences(me(req)))

  app.put<{ Body: Preferences }>('/api/v1/notifications/preferences', {
    onRequest: signedIn(),
    schema: { tags: ['notifications'], summary: 'Set your channels, message notifications and quiet hours', security: bearer, body: preferencesSchema, response: { 200: preferencesSchema, ...errorResponses } },
  }, async (req) => {
    const q = req.body.quietHours
    if (q && !IANAZone.isValidZone(q.timezone)) {
      record(req, 'notify.preferences.set', 'denied', me(req), { code: 'RPM_ERR_BAD_REQUEST', field: 'quietHours.timezone' })
      throw new RpmError('RPM_ERR_BAD_REQUEST', `quietHours.timezone: ${q.timezone} is not an IANA time zone`, { details: { field: 'quietHours.timezone' } })
    }
    const prefs = directory.setPreferences(me(req), req.body)
    record(req, 'notify.preferences.set', 'allowed', me(req))
    return prefs
  })

  app.get('/api/v1/notifications/sms', {
    onRequest: signedIn(),
    schema: {
      tags: ['notifications'],
      summary: 'Your SMS number and consent',
      security: bearer,
      response: { 200: smsSchema, ...errorResponses },
    },
  }, async (req) => {
    const c = directory.sms(me(req))
    if (!c) throw new RpmError('RPM_ERR_NOT_FOUND', 'no SMS number on record', { details: { field: 'phone' } })
    return toSmsView(c)
  })

  app.put<{ Body: { phone: string; consent: true; source?: string } }>('/api/v1/notifications/sms', {
    onRequest: signedIn(),
    schema: {
      tags: ['notifications'],
      summary: 'Agree to SMS at this number (E.164): consent is recorded with the time and where it was given, and a code is texted to the number; SMS starts once the code comes back (POST /api/v1/notifications/sms/verify). Replying STOP withdraws consent',
      security: bearer,
      body: {
        type: 'object',
        required: ['phone', 'consent'],
        additionalProperties: false,
        properties: {
          phone: { type: 'string', pattern: E164, description: 'E.164, e.g. +15551234567' },
          consent: { const: true, description: 'The user agrees to receive SMS from this gateway' },
          source: { type: 'string', maxLength: 200, description: 'Where consent was given, e.g. "console settings"' },
        },
      },
      response: { 200: smsSchema, ...errorResponses },
    },
  }, async (req) => {
    const action = 'notify.sms.consent'
    if (!notifier.enabled('sms')) {
      record(req, action, 'denied', me(req), { code: 'RPM_ERR_CHANNEL_OFF' })
      throw new RpmError('RPM_ERR_CHANNEL_OFF', 'SMS is not configured on this gateway (notify.sms)')
    }
    const source = `user ${me(req)}${req.body.source ? `: ${req.body.source}` : ' via api'}`
    const { contact, code } = directory.consentToSms(me(req), req.body.phone, source)
    if (code) await notifier.sendVerificationCode(me(req), req.body.phone, code)
    record(req, action, 'allowed', me(req), { source: req.body.source ?? 'api', verification: code ? 'sent' : 'already verified' })
    return toSmsView(contact)
  })

  app.post<{ Body: { code: string } }>('/api/v1/notifications/sms/verify', {
    onRequest: signedIn(),
    schema: {
      tags: ['notifications'],
      summary: 'The code texted to your number: the number is verified and SMS can start (5 tries, 10 minutes)',
      security: bearer,
      body: { type: 'object', required: ['code'], additionalProperties: false, properties: { code: { type: 'string', pattern: '^[0-9]{6}$' } } },
      response: { 200: smsSchema, ...errorResponses },
    },
  }, async (req) => {
    const c = audited(req, 'notify.sms.verify', me(req), () => directory.verifySms(me(req), req.body.code))
    record(req, 'notify.sms.verify', 'allowed', me(req))
    return toSmsView(c)
  })

  app.delete('/api/v1/notifications/sms', {
    onRequest: signedIn(),
    schema: { tags: ['notifications'], summary: 'Withdraw SMS consent (the number stays on record, marked opted out)', security: bearer, response: { 200: smsSchema, ...errorResponses } },
  }, async (req) => {
    const c = directory.optOutUser(me(req), `user ${me(req)} via api`)
    if (!c) throw new RpmError('RPM_ERR_NOT_FOUND', 'no SMS number on record', { details: { field: 'phone' } })
    record(req, 'notify.sms.opt_out', 'allowed', me(req))
    return toSmsView(c)
  })

  app.post('/api/v1/notifications/test', {
    onRequest: signedIn(),
    schema: {
      tags: ['notifications'],
      summary: 'Send a test notification to each of your browsers, apps and (with consent) your phone',
      security: bearer,
      response: { 202: { type: 'object', required: ['queued'], properties: { queued: { type: 'integer' } } }, ...errorResponses },
      description: 'At most one a minute per user (429 RPM_ERR_TOO_FREQUENT).',
    },
  }, async (req, reply) => {
    const queued = notifier.sendTest(me(req))
    record(req, 'notify.test', 'allowed', me(req), { queued })
    return reply.status(202).send({ queued })
  })

  app.get<{ Querystring: { status?: NotificationStatus; userId?: string; cursor?: string; limit?: number } }>('/api/v1/notifications', {
    onRequest: signedIn(),
    schema: {
      tags: ['notifications'],
      summary: 'Notifications, newest first: your own; an admin sees everyone\'s (status=failed lists what was given up)',
      security: bearer,
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: {
          status: { type: 'string', enum: ['pending', 'sending', 'sent', 'failed', 'dropped'] },
          userId: { type: 'string', pattern: idPattern, description: 'Admins only' },
          cursor: { type: 'string', pattern: idPattern },
          limit: { type: 'integer', minimum: 1, maximum: 500, default: 100 },
        },
      },
      response: {
        200: { type: 'object', required: ['items', 'nextCursor'], properties: { items: { type: 'array', items: notificationSchema }, nextCursor: { type: ['string', 'null'] } } },
        ...errorResponses,
      },
    },
  }, async (req) => {
    const q = req.query
    const admin = req.principal!.role === 'admin'
    if (q.userId && !admin && q.userId !== me(req)) {
      record(req, 'notify.list', 'denied', q.userId, { code: 'RPM_ERR_FORBIDDEN' })
      throw new RpmError('RPM_ERR_FORBIDDEN', 'only an admin may list another user\'s notifications', { details: { field: 'userId' } })
    }
    const limit = q.limit ?? 100
    const userId = admin ? q.userId : me(req)
    const rows = notifier.outbox.list({ ...(q.status ? { status: q.status } : {}), ...(userId ? { userId } : {}), ...(q.cursor ? { before: q.cursor } : {}), limit: limit + 1 })
    const items = rows.slice(0, limit).map(toView)
    return { items, nextCursor: rows.length > limit ? items[items.length - 1]!.id : null }
  })

  // --- Twilio's callbacks: form-encoded, signed with the account's auth token --------------------

  await app.register(async (hooks) => {
    await hooks.register(formbody)
    // The URL Twilio called, as configured: never taken from the request's Host header.
    const urlOf = (req: FastifyRequest) => deps.publicUrl.replace(/\/$/, '') + req.url
    const signatureOf = (req: FastifyRequest) => {
      const h = req.headers['x-twilio-signature']
      return Array.isArray(h) ? h[0] : h
    }
    const formOf = (req: FastifyRequest): Record<string, string> => {
      const out: Record<string, string> = {}
      for (const [k, v] of Object.entries((req.body ?? {}) as Record<string, unknown>)) out[k] = Array.isArray(v) ? String(v[0]) : String(v)
      return out
    }
    const refused = (req: FastifyRequest, action: string, err: unknown) => {
      if (err instanceof RpmError) audit.record({ actorType: 'anonymous', actorId: 'twilio', action, outcome: 'denied', address: req.ip, details: { code: err.code } })
    }
    const callbackSchema = (summary: string) => ({
      tags: ['notifications'],
      summary,
      consumes: ['application/x-www-form-urlencoded'],
      body: { type: 'object', additionalProperties: { type: 'string', maxLength: 2000 } },
    })

    hooks.post('/api/v1/notifications/sms/status', {
      schema: {
        // `?notification=<id>` is part of the signed URL the gateway gave Twilio; it is only looked up.
        ...callbackSchema('Twilio delivery status callback, at the URL the gateway gave Twilio (?notification=id); X-Twilio-Signature checked against notify.sms.publicUrl'),
        response: { 204: { type: 'null' }, ...errorResponses },
      },
    }, async (req, reply) => {
      try {
        notifier.smsStatus(signatureOf(req), urlOf(req), formOf(req))
      } catch (err) {
        refused(req, 'notify.sms.status', err)
        throw err
      }
      return reply.status(204).send()
    })

    hooks.post('/api/v1/notifications/sms/inbound', {
      schema: {
        ...callbackSchema('Twilio incoming SMS webhook: STOP withdraws SMS consent, START gives it again (answers empty TwiML)'),
        response: { 200: { type: 'string' }, ...errorResponses },
      },
    }, async (req, reply) => {
      let outcome: ReturnType<Notifier['smsInbound']>
      try {
        outcome = notifier.smsInbound(signatureOf(req), urlOf(req), formOf(req))
      } catch (err) {
        refused(req, 'notify.sms.inbound', err)
        throw err
      }
      for (const userId of outcome.users) {
        audit.record({ actorType: 'system', actorId: 'twilio', action: outcome.change === 'opted_out' ? 'notify.sms.opt_out' : 'notify.sms.consent', outcome: 'allowed', target: userId, details: { source: 'sms reply' } })
      }
      // Twilio replies to STOP and START itself; nothing more to say.
      return reply.status(200).header('content-type', 'text/xml').send('<?xml version="1.0" encoding="UTF-8"?><Response></Response>')
    })
  })
}
