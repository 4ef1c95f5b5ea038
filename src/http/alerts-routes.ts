import type {} from '@fastify/swagger' // adds tags, summary and security to route schemas
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { sql } from 'kysely'
import type { AuditLog } from '../audit/audit.ts'
import type { Clock } from '../clock.ts'
import { RpmError } from '../errors.ts'
import type { AccessBasis, AccessPolicy } from '../identity/access.ts'
import type { Auth } from '../identity/auth.ts'
import { announceEffects, toAlert } from '../rules/alerts.ts'
import type { RuleEngine } from '../rules/engine.ts'
import { addOnCall } from '../rules/on-call.ts'
import { SEVERITIES } from '../rules/types.ts'
import type { EventBus } from '../events.ts'
import type { Store } from '../store/db.ts'
import type { AlertTable } from '../store/schema.ts'
import type { Severity } from '../store/schema.ts'
import { makeGuards } from './guards.ts'
import { bearer, errorResponses, idPattern } from './schemas.ts'
import { visiblePatientIds } from './threads-routes.ts'

export interface AlertRouteDeps {
  rules: RuleEngine
  store: Store
  bus: EventBus
  auth: Auth
  access: AccessPolicy
  audit: AuditLog
  clock: Clock
}

const nullableString = { type: ['string', 'null'] } as const
const severity = { type: 'string', enum: [...SEVERITIES] } as const

export const alertSchema = {
  type: 'object',
  required: ['id', 'patientId', 'ruleId', 'ruleKind', 'title', 'readingType', 'severity', 'status', 'openedAt', 'updatedAt', 'count', 'tier'],
  properties: {
    id: { type: 'string' },
    patientId: { type: 'string' },
    ruleId: { type: 'string' },
    ruleKind: { type: 'string', enum: ['threshold', 'delta', 'missing', 'offline', 'event'] },
    title: { type: 'string' },
    readingType: nullableString,
    severity,
    status: { type: 'string', enum: ['open', 'acknowledged', 'resolved'] },
    openedAt: { type: 'string', format: 'date-time' },
    updatedAt: { type: 'string', format: 'date-time' },
    count: { type: 'integer', description: 'Readings (or events) that matched while it was open, the first included' },
    lastReadingId: { type: ['integer', 'null'] },
    lastMeasuredAt: nullableString,
    lastValues: { type: ['object', 'null'], additionalProperties: true, description: 'What matched last: canonical reading values; a change with its baseline; hours without data; offline devices' },
    acknowledgedAt: nullableString,
    acknowledgedBy: nullableString,
    resolvedAt: nullableString,
    resolvedBy: { type: ['string', 'null'], description: 'Null when the clear condition resolved it' },
    resolution: { type: ['string', 'null'], enum: ['auto', 'manual', null] },
    note: nullableString,
    snoozedUntil: nullableString,
    snoozedBy: nullableString,
    snoozeSeverity: { type: ['string', 'null'], enum: [...SEVERITIES, null] },
    tier: { type: 'integer', description: 'Escalation tier reached: 0 care team, 1 on-call provider, 2 admins' },
    nextEscalationAt: nullableString,
    reminders: { type: 'integer' },
  },
} as const

const alertDetailSchema = {
  ...alertSchema,
  required: [...alertSchema.required, 'events', 'recipients'],
  properties: {
    ...alertSchema.properties,
    events: {
      type: 'array',
      description: 'Everything that happened to the alert, suppressions (duplicate, snoozed, cooldown) included with their reason',
      items: {
        type: 'object',
        required: ['id', 'at', 'type', 'actor', 'details'],
        properties: { id: { type: 'integer' }, at: { type: 'string' }, type: { type: 'string' }, actor: nullableString, details: { type: ['object', 'null'], additionalProperties: true } },
      },
    },
    recipients: {
      type: 'array',
      description: 'Who the alert reached by escalation beyond the care team',
      items: { type: 'object', required: ['userId', 'tier', 'addedAt'], properties: { userId: { type: 'string' }, tier: { type: 'integer' }, addedAt: { type: 'string' } } },
    },
  },
} as const

const ruleSchema = {
  type: 'object',
  required: ['id', 'title', 'kind', 'enabled', 'file', 'line', 'spec'],
  properties: {
    id: { type: 'string' },
    title: { type: 'string' },
    kind: { type: 'string' },
    source: { type: 'string' },
    reading: { type: 'string' },
    enabled: { type: 'boolean' },
    file: { type: 'string' },
    line: { type: 'integer' },
    spec: { type: 'object', additionalProperties: true, description: 'The rule as written in its file (see docs/rules.md)' },
  },
} as const

const overrideInfoSchema = {
  type: ['object', 'null'],
  required: ['version', 'override', 'reason', 'changedBy', 'changedAt', 'problem'],
  properties: {
    version: { type: 'integer' },
    override: { type: 'object', additionalProperties: true },
    reason: { type: 'string' },
    changedBy: { type: 'string' },
    changedAt: { type: 'string' },
    problem: { type: ['string', 'null'], description: 'Why the override does not apply (the rule changed since); null when it does' },
  },
} as const

const alertParams = { type: 'object', required: ['alertId'], additionalProperties: false, properties: { alertId: { type: 'string', pattern: idPattern } } } as const
const thresholdParams = {
  type: 'object',
  required: ['patientId', 'ruleId'],
  additionalProperties: false,
  properties: { patientId: { type: 'string', pattern: idPattern }, ruleId: { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,63}$' } },
} as const
const reason = { type: 'string', minLength: 5, maxLength: 1000, pattern: '\\S', description: 'Why: kept with the change and in the audit trail' } as const
const note = { type: 'string', minLength: 1, maxLength: 2000, pattern: '\\S' } as const

const rank = sql<number>`CASE severity WHEN 'critical' THEN 3 WHEN 'urgent' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END`

/** Alerts (inbox and actions), the rules in force, per-patient thresholds and the on-call list. */
export async function alertRoutes(app: FastifyInstance, deps: AlertRouteDeps): Promise<void> {
  const { rules, store, access, clock, bus } = deps
  const guards = makeGuards(deps)
  const { record, signedIn, clinical, audited } = guards
  guards.auditFailures(app)
  if (!app.hasRequestDecorator('principal')) app.decorateRequest('principal', null)

  const noAlert = (id: string) => new RpmError('RPM_ERR_NOT_FOUND', `no alert ${id}`, { details: { field: 'alertId' } })
  const noPatient = (id: string) => new RpmError('RPM_ERR_NOT_FOUND', `no patient ${id}`, { details: { field: 'patientId' } })

  /** The alert if the caller may see its patient; otherwise 404, as for one that does not exist. */
  const visibleAlert = async (req: FastifyRequest, alertId: string, action: string): Promise<{ patientId: string; basis: AccessBasis }> => {
    const alert = rules.alerts.get(alertId)
    if (!alert) {
      record(req, action, 'denied', alertId, { code: 'RPM_ERR_NOT_FOUND' })
      throw noAlert(alertId)
    }
    const basis = await clinical(req, alert.patientId, action, { target: alert.patientId, error: noAlert(alertId) })
    return { patientId: alert.patientId, basis }
  }

  // --- alerts --------------------------------------------------------------------------------------

  app.get<{ Querystring: { status?: string; severity?: string; patientId?: string; limit?: number; cursor?: string } }>('/api/v1/alerts', {
    onRequest: signedIn(),
    schema: {
      tags: ['alerts'],
      summary: 'Alerts you may see, most severe first, then oldest first',
      description: 'status defaults to active (open and acknowledged). A provider sees the care teams\' patients and alerts escalated to them; a patient their own.',
      security: bearer,
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: {
          status: { type: 'string', enum: ['active', 'open', 'acknowledged', 'resolved', 'all'], default: 'active' },
          severity: { type: 'string', pattern: '^(info|warning|urgent|critical)(,(info|warning|urgent|critical))*$', description: 'One or more, comma-separated' },
          patientId: { type: 'string', pattern: idPattern },
          limit: { type: 'integer', minimum: 1, maximum: 500, default: 100 },
          cursor: { type: 'string', maxLength: 300 },
        },
      },
      response: {
        200: { type: 'object', required: ['items', 'nextCursor'], properties: { items: { type: 'array', items: alertSchema }, nextCursor: { type: ['string', 'null'] } } },
        ...errorResponses,
      },
    },
  }, async (req) => {
    const q = req.query
    let patientIds: string[]
    if (q.patientId) {
      await clinical(req, q.patientId, 'alerts.read', { target: q.patientId, error: noPatient(q.patientId) })
      patientIds = [q.patientId]
    } else {
      patientIds = await visiblePatientIds({ store, access, clock }, req.principal!)
    }
    const limit = q.limit ?? 100
    let query = store.db.selectFrom('alerts').selectAll().select(rank.as('rank'))
    if (patientIds.length === 0) return { items: [], nextCursor: null }
    query = query.where('patient_id', 'in', patientIds)
    const status = q.status ?? 'active'
    if (status === 'active') query = query.where('status', '<>', 'resolved')
    else if (status !== 'all') query = query.where('status', '=', status as AlertTable['status'])
    if (q.severity) query = query.where('severity', 'in', q.severity.split(',') as AlertTable['severity'][])
    if (q.cursor) {
      let c: { r: number; o: string; i: string }
      try {
        c = JSON.parse(Buffer.from(q.cursor, 'base64url').toString('utf8')) as { r: number; o: string; i: string }
        if (!Number.isInteger(c.r) || typeof c.o !== 'string' || typeof c.i !== 'string' || Number.isNaN(Date.parse(c.o))) throw new Error('shape')
      } catch {
        throw new RpmError('RPM_ERR_BAD_REQUEST', 'cursor is not one this server issued', { details: { field: 'cursor' } })
      }
      query = query.where((eb) =>
        eb.or([
          eb(rank, '<', c.r),
          eb.and([eb(rank, '=', c.r), eb('opened_at', '>', c.o)]),
          eb.and([eb(rank, '=', c.r), eb('opened_at', '=', c.o), eb('id', '>', c.i)]),
        ]))
    }
    const rows = (await query.orderBy(rank, 'desc').orderBy('opened_at', 'asc').orderBy('id', 'asc').limit(limit + 1).execute()) as Array<AlertTable & { rank: number }>
    const page = rows.slice(0, limit)
    const last = page[page.length - 1]
    const nextCursor = rows.length > limit && last ? Buffer.from(JSON.stringify({ r: last.rank, o: last.opened_at, i: last.id })).toString('base64url') : null
    // Whose alerts were shown, so the trail answers "who saw this patient's data".
    record(req, 'alerts.read', 'allowed', q.patientId, { count: page.length, status, patientIds: [...new Set(page.map((a) => a.patient_id))] })
    return { items: page.map(toAlert), nextCursor }
  })

  app.get<{ Params: { alertId: string } }>('/api/v1/alerts/:alertId', {
    onRequest: signedIn(),
    schema: {
      tags: ['alerts'],
      summary: 'One alert with its full history (raises, repeats, suppressions with their reason, escalations, actions)',
      security: bearer,
      params: alertParams,
      response: { 200: alertDetailSchema, ...errorResponses },
    },
  }, async (req) => {
    const { patientId, basis } = await visibleAlert(req, req.params.alertId, 'alert.read')
    const detail = rules.alerts.detail(req.params.alertId)
    record(req, 'alert.read', 'allowed', patientId, { alertId: detail.id, basis })
    return detail
  })

  const seenSeverity = {
    type: 'string',
    enum: ['info', 'warning', 'urgent', 'critical'],
    description: 'The severity the provider saw: if the alert has become worse since, 409 RPM_ERR_CONFLICT (details.field severity, details.current)',
  } as const
  const act = (name: 'acknowledge' | 'resolve' | 'snooze', summary: string, body: Record<string, unknown>, required: string[]) => {
    app.post<{ Params: { alertId: string }; Body: { note?: string; minutes?: number; reason?: string; severity?: Severity } }>(`/api/v1/alerts/:alertId/${name}`, {
      onRequest: signedIn('provider', 'admin'),
      // A POST without a body at all (no content type either, as a button sends it) is an empty
      // object; an empty body that claims to be JSON is still an error.
      preValidation: async (req) => {
        if (req.body === undefined && req.headers['content-type'] === undefined) req.body = {}
      },
      schema: {
        tags: ['alerts'],
        summary,
        security: bearer,
        params: alertParams,
        body: { type: 'object', additionalProperties: false, required, properties: { ...body, severity: seenSeverity } },
        response: { 200: alertSchema, ...errorResponses },
      },
    }, async (req) => {
      const action = `alert.${name}`
      const { patientId, basis } = await visibleAlert(req, req.params.alertId, action)
      const userId = req.principal!.userId
      const { alert, effects } = audited(req, action, patientId, () =>
        name === 'acknowledge'
          ? rules.alerts.acknowledge(req.params.alertId, userId, req.body.note, req.body.severity)
          : name === 'resolve'
            ? rules.alerts.resolve(req.params.alertId, userId, req.body.note!, req.body.severity)
            : rules.alerts.snooze(req.params.alertId, userId, req.body.minutes!, req.body.reason, req.body.severity))
      record(req, action, 'allowed', patientId, { alertId: alert.id, basis, ...(name === 'snooze' ? { minutes: req.body.minutes } : {}) })
      announceEffects(bus, effects)
      return alert
    })
  }
  act('acknowledge', 'Acknowledge an alert: escalation stops; the patient\'s thread says who took it', { note }, [])
  act('resolve', 'Resolve an alert with a note', { note }, ['note'])
  act('snooze', 'Snooze one alert (this patient and rule only) for some minutes: notifications and escalation wait; a worse reading breaks through', {
    minutes: { type: 'integer', minimum: 1, description: 'At most alerts.maxSnoozeMinutes for the alert\'s severity (critical: 30 by default)' },
    reason: { type: 'string', maxLength: 1000 },
  }, ['minutes'])

  // --- rules and per-patient thresholds --------------------------------------------------------------

  app.get('/api/v1/rules', {
    onRequest: signedIn(),
    schema: {
      tags: ['rules'],
      summary: 'The clinical rules in force, and the last refused change to the rule files (if any)',
      security: bearer,
      response: {
        200: {
          type: 'object',
          required: ['items', 'status'],
          properties: {
            items: { type: 'array', items: ruleSchema },
            status: {
              type: 'object',
              required: ['files', 'count', 'loadedAt', 'refused'],
              properties: {
                files: { type: 'array', items: { type: 'string' } },
                count: { type: 'integer' },
                loadedAt: { type: 'string' },
                refused: {
                  type: ['object', 'null'],
                  properties: {
                    at: { type: 'string' },
                    problems: { type: 'array', items: { type: 'object', properties: { file: { type: 'string' }, line: { type: 'integer' }, field: { type: 'string' }, message: { type: 'string' } } } },
                  },
                },
              },
            },
          },
        },
        ...errorResponses,
      },
    },
  }, async () => {
    const { dir: _dir, ...status } = rules.status()
    return { items: rules.rules().map(({ rule, raw }) => ruleView(rule, raw)), status }
  })

  app.get<{ Params: { patientId: string } }>('/api/v1/patients/:patientId/thresholds', {
    onRequest: signedIn(),
    schema: {
      tags: ['rules'],
      summary: 'Every rule as it applies to this patient, with the patient\'s override where there is one',
      security: bearer,
      params: { type: 'object', required: ['patientId'], additionalProperties: false, properties: { patientId: { type: 'string', pattern: idPattern } } },
      response: {
        200: {
          type: 'object',
          required: ['items'],
          properties: { items: { type: 'array', items: { ...ruleSchema, required: [...ruleSchema.required, 'override'], properties: { ...ruleSchema.properties, override: overrideInfoSchema } } } },
        },
        ...errorResponses,
      },
    },
  }, async (req) => {
    const { patientId } = req.params
    const basis = await clinical(req, patientId, 'thresholds.read', { target: patientId, error: noPatient(patientId) })
    const items = rules.effectiveRules(patientId).map(({ rule, raw, override }) => ({ ...ruleView(rule, raw), override }))
    record(req, 'thresholds.read', 'allowed', patientId, { basis })
    return { items }
  })

  /** Only a provider who may see the patient changes their thresholds. */
  const mayTune = async (req: FastifyRequest, patientId: string, action: string): Promise<AccessBasis> => {
    const basis = await clinical(req, patientId, action, { target: patientId, error: noPatient(patientId) })
    // An escalation lets a provider act on the alert, not change the patient's care plan.
    if (req.principal!.role !== 'provider' || basis !== 'care_team') {
      record(req, action, 'denied', patientId, { code: 'RPM_ERR_FORBIDDEN' })
      throw new RpmError('RPM_ERR_FORBIDDEN', 'only a provider on the patient\'s care team changes their thresholds')
    }
    return basis
  }

  app.put<{ Params: { patientId: string; ruleId: string }; Body: { override: Record<string, unknown>; reason: string } }>('/api/v1/patients/:patientId/thresholds/:ruleId', {
    onRequest: signedIn('provider'),
    schema: {
      tags: ['rules'],
      summary: 'Override a rule for one patient (e.g. SpO2 88% for a COPD patient); each change is a new version with who, when and why',
      description: 'override takes the tunable keys of a rule: levels, clear, consecutive, for, window, after, severity, cooldown, enabled. See docs/rules.md.',
      security: bearer,
      params: thresholdParams,
      body: {
        type: 'object',
        additionalProperties: false,
        required: ['override', 'reason'],
        properties: { override: { type: 'object', additionalProperties: true }, reason },
      },
      response: { 200: { type: 'object', required: ['version', 'rule'], properties: { version: { type: 'integer' }, rule: ruleSchema } }, ...errorResponses },
    },
  }, async (req) => {
    const { patientId, ruleId } = req.params
    const basis = await mayTune(req, patientId, 'thresholds.change')
    const { version } = audited(req, 'thresholds.change', patientId, () => rules.setOverride(patientId, ruleId, req.body.override, req.body.reason.trim(), req.principal!.userId))
    // The override and its reason are kept (versioned) in rule_overrides; the audit entry points there.
    record(req, 'thresholds.change', 'allowed', patientId, { ruleId, version, basis })
    const effective = rules.effectiveRules(patientId).find((e) => e.rule.id === ruleId)!
    return { version, rule: ruleView(effective.rule, effective.raw) }
  })

  app.delete<{ Params: { patientId: string; ruleId: string }; Body: { reason: string } }>('/api/v1/patients/:patientId/thresholds/:ruleId', {
    onRequest: signedIn('provider'),
    schema: {
      tags: ['rules'],
      summary: 'Return one patient to the rule\'s default (recorded as a new version with the reason)',
      security: bearer,
      params: thresholdParams,
      body: { type: 'object', additionalProperties: false, required: ['reason'], properties: { reason } },
      response: { 200: { type: 'object', required: ['version', 'rule'], properties: { version: { type: 'integer' }, rule: ruleSchema } }, ...errorResponses },
    },
  }, async (req) => {
    const { patientId, ruleId } = req.params
    const basis = await mayTune(req, patientId, 'thresholds.change')
    const { version, rule } = audited(req, 'thresholds.change', patientId, () => rules.setOverride(patientId, ruleId, null, req.body.reason.trim(), req.principal!.userId))
    record(req, 'thresholds.change', 'allowed', patientId, { ruleId, version, basis, reset: true })
    const loaded = rules.rules().find((l) => l.rule.id === rule.id)!
    return { version, rule: ruleView(loaded.rule, loaded.raw) }
  })

  app.get<{ Params: { patientId: string; ruleId: string } }>('/api/v1/patients/:patientId/thresholds/:ruleId/history', {
    onRequest: signedIn(),
    schema: {
      tags: ['rules'],
      summary: 'Every version of one patient\'s override of a rule, newest first (override null: back to the default)',
      security: bearer,
      params: thresholdParams,
      response: {
        200: {
          type: 'object',
          required: ['items'],
          properties: {
            items: {
              type: 'array',
              items: {
                type: 'object',
                required: ['version', 'override', 'reason', 'changedBy', 'changedAt'],
                properties: { version: { type: 'integer' }, override: { type: ['object', 'null'], additionalProperties: true }, reason: { type: 'string' }, changedBy: { type: 'string' }, changedAt: { type: 'string' } },
              },
            },
          },
        },
        ...errorResponses,
      },
    },
  }, async (req) => {
    const { patientId, ruleId } = req.params
    const basis = await clinical(req, patientId, 'thresholds.read', { target: patientId, error: noPatient(patientId) })
    if (!rules.rules().some((l) => l.rule.id === ruleId)) {
      record(req, 'thresholds.read', 'denied', patientId, { code: 'RPM_ERR_NOT_FOUND', ruleId })
      throw new RpmError('RPM_ERR_NOT_FOUND', `no rule ${ruleId}`, { details: { field: 'ruleId' } })
    }
    const items = rules.overrideHistory(patientId, ruleId)
    record(req, 'thresholds.read', 'allowed', patientId, { ruleId, basis })
    return { items }
  })

  // --- on call -------------------------------------------------------------------------------------

  const shiftSchema = {
    type: 'object',
    required: ['id', 'userId', 'startsAt', 'endsAt'],
    properties: { id: { type: 'integer' }, userId: { type: 'string' }, username: { type: 'string' }, startsAt: { type: 'string' }, endsAt: { type: 'string' } },
  } as const

  app.get('/api/v1/on-call', {
    onRequest: signedIn('provider', 'admin'),
    schema: {
      tags: ['alerts'],
      summary: 'On-call shifts now and ahead: the second escalation tier',
      security: bearer,
      response: { 200: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: shiftSchema } } }, ...errorResponses },
    },
  }, async () => {
    const rows = await store.db
      .selectFrom('on_call as o')
      .innerJoin('users as u', 'u.id', 'o.user_id')
      .select(['o.id', 'o.user_id', 'u.username', 'o.starts_at', 'o.ends_at'])
      .where('o.ends_at', '>', new Date(clock.now()).toISOString())
      .orderBy('o.starts_at')
      .execute()
    return { items: rows.map((r) => ({ id: r.id as unknown as number, userId: r.user_id, username: r.username, startsAt: r.starts_at, endsAt: r.ends_at })) }
  })

  app.post<{ Body: { username: string; startsAt?: string; endsAt: string } }>('/api/v1/on-call', {
    onRequest: signedIn('admin'),
    schema: {
      tags: ['alerts'],
      summary: 'Put a provider on call (admin)',
      security: bearer,
      body: {
        type: 'object',
        additionalProperties: false,
        required: ['username', 'endsAt'],
        properties: { username: { type: 'string', minLength: 1, maxLength: 64 }, startsAt: { type: 'string', format: 'date-time' }, endsAt: { type: 'string', format: 'date-time' } },
      },
      response: { 201: shiftSchema, ...errorResponses },
    },
  }, async (req, reply) => {
    const shift = await addOnCall(store, clock, req.body, req.principal!.userId)
    record(req, 'oncall.add', 'allowed', shift.userId, { shiftId: shift.id })
    return reply.status(201).send(shift)
  })
}

function ruleView(rule: { id: string; title: string; kind: string; enabled: boolean; file: string; line: number; source?: string }, raw: object) {
  const reading = (raw as { reading?: string }).reading
  return {
    id: rule.id,
    title: rule.title,
    kind: rule.kind,
    enabled: rule.enabled,
    file: rule.file,
    line: rule.line,
    ...(rule.source !== undefined ? { source: rule.source } : {}),
    ...(reading !== undefined ? { reading } : {}),
    spec: raw,
  }
}
