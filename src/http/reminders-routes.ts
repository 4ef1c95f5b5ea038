import type {} from '@fastify/swagger' // adds tags, summary and security to route schemas
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { AuditLog } from '../audit/audit.ts'
import { RpmError } from '../errors.ts'
import type { AccessBasis, AccessPolicy } from '../identity/access.ts'
import type { Auth } from '../identity/auth.ts'
import { READING_TYPES } from '../ingest/types.ts'
import { CLIENT_REQUEST_ID } from '../reminders/records.ts'
import type { Reminders } from '../reminders/reminders.ts'
import type { OccurrenceStatus, ScheduleInput, SchedulePatch } from '../reminders/types.ts'
import { makeGuards } from './guards.ts'
import { bearer, errorResponses, idPattern } from './schemas.ts'

export interface ReminderRouteDeps {
  reminders: Reminders
  auth: Auth
  access: AccessPolicy
  audit: AuditLog
}

const nullableString = (maxLength: number, description: string) => ({ type: ['string', 'null'], maxLength, description }) as const

// Formats (HH:MM, weekdays, dates, zones) are checked by the reminders module, whose errors name
// the item (times[1]); the schemas carry the types and sizes.
const timesField = {
  type: 'array',
  maxItems: 24,
  items: { type: 'string', maxLength: 16 },
  description: 'Local times "HH:MM" (24-hour) in the patient\'s time zone, e.g. ["08:00","20:00"]',
} as const
const daysField = {
  type: 'array',
  maxItems: 7,
  items: { type: 'integer' },
  description: 'ISO weekdays, 1 = Monday ... 7 = Sunday (default: every day)',
} as const
const timezoneField = nullableString(64, 'IANA time zone of the times, e.g. America/New_York; null or absent: the patient\'s time zone')

export const scheduleSchema = {
  type: 'object',
  required: ['id', 'patientId', 'kind', 'medication', 'dose', 'readingType', 'instructions', 'timezone', 'times', 'days', 'startsOn', 'endsOn', 'active', 'createdBy', 'createdAt', 'updatedAt', 'nextDueAt', 'clientRequestId'],
  properties: {
    id: { type: 'string', description: 'Also the medicationId a device sends in medication_taken' },
    patientId: { type: 'string' },
    kind: { type: 'string', enum: ['medication', 'measurement'] },
    medication: { type: ['string', 'null'] },
    dose: { type: ['string', 'null'] },
    readingType: { type: ['string', 'null'], enum: [...READING_TYPES, null] },
    instructions: { type: ['string', 'null'] },
    timezone: { type: ['string', 'null'], description: 'The schedule\'s own zone; null follows the patient\'s' },
    times: { type: 'array', items: { type: 'string' } },
    days: { type: 'array', items: { type: 'integer' } },
    startsOn: { type: 'string', description: 'First local date (YYYY-MM-DD)' },
    endsOn: { type: ['string', 'null'], description: 'Last local date, inclusive' },
    active: { type: 'boolean' },
    createdBy: { type: 'string' },
    createdAt: { type: 'string', format: 'date-time' },
    updatedAt: { type: 'string', format: 'date-time' },
    nextDueAt: { type: ['string', 'null'], description: 'The next reminder within 8 days' },
    clientRequestId: { type: ['string', 'null'], description: 'The id the creating client gave its request, if any' },
  },
} as const

export const occurrenceSchema = {
  type: 'object',
  required: ['id', 'scheduleId', 'patientId', 'kind', 'medication', 'dose', 'readingType', 'scheduled', 'dueAt', 'localDate', 'localTime', 'status', 'postedAt', 'messageId', 'takenAt', 'confirmedAt', 'confirmedBy', 'source', 'missedAt'],
  properties: {
    id: { type: 'string' },
    scheduleId: { type: 'string' },
    patientId: { type: 'string' },
    kind: { type: 'string', enum: ['medication', 'measurement'] },
    medication: { type: ['string', 'null'] },
    dose: { type: ['string', 'null'] },
    readingType: { type: ['string', 'null'] },
    scheduled: { type: 'boolean', description: 'false: a dose a device reported when none was due (dueAt is when it was taken)' },
    dueAt: { type: 'string', format: 'date-time' },
    localDate: { type: 'string' },
    localTime: { type: 'string', description: 'The scheduled local time of the slot' },
    status: { type: 'string', enum: ['pending', 'taken', 'missed', 'done'], description: 'done: a measurement reminder completed by a reading' },
    postedAt: { type: ['string', 'null'], description: 'When the reminder was sent; null when none was (confirmed early, or the gateway was down)' },
    messageId: { type: ['string', 'null'], description: 'The reminder message in the patient\'s thread' },
    takenAt: { type: ['string', 'null'], description: 'When the dose was taken (or the reading measured), as reported' },
    confirmedAt: { type: ['string', 'null'], description: 'When the confirmation was recorded' },
    confirmedBy: { type: ['string', 'null'], description: 'A user id, or device:{deviceId}' },
    source: { type: ['string', 'null'], description: 'api, device, thread or reading; gateway_down for a reminder not sent because the gateway was down' },
    missedAt: { type: ['string', 'null'] },
  },
} as const

const countsSchema = {
  taken: { type: 'integer' },
  done: { type: 'integer' },
  missed: { type: 'integer' },
  pending: { type: 'integer' },
  unsent: { type: 'integer', description: 'Came due while the gateway was down; not in the rate' },
  unscheduled: { type: 'integer', description: 'Doses taken when none was due; not in the rate' },
  rate: { type: ['number', 'null'], description: 'taken / (taken + missed); null when there is nothing to count' },
} as const

const periodSchema = {
  type: 'object',
  required: ['from', 'to', 'taken', 'missed', 'pending', 'unsent', 'unscheduled', 'rate', 'measurements', 'schedules'],
  properties: {
    from: { type: 'string', format: 'date-time' },
    to: { type: 'string', format: 'date-time' },
    taken: countsSchema.taken,
    missed: countsSchema.missed,
    pending: countsSchema.pending,
    unsent: countsSchema.unsent,
    unscheduled: countsSchema.unscheduled,
    rate: countsSchema.rate,
    measurements: {
      type: 'object',
      required: ['done', 'missed', 'pending', 'unsent', 'rate'],
      properties: { done: countsSchema.done, missed: countsSchema.missed, pending: countsSchema.pending, unsent: countsSchema.unsent, rate: { type: ['number', 'null'], description: 'done / (done + missed)' } },
    },
    schedules: {
      type: 'array',
      items: {
        type: 'object',
        required: ['scheduleId', 'kind', 'medication', 'dose', 'readingType', 'active', 'taken', 'done', 'missed', 'pending', 'unsent', 'unscheduled', 'rate'],
        properties: {
          scheduleId: { type: 'string' },
          kind: { type: 'string', enum: ['medication', 'measurement'] },
          medication: { type: ['string', 'null'] },
          dose: { type: ['string', 'null'] },
          readingType: { type: ['string', 'null'] },
          active: { type: 'boolean' },
          ...countsSchema,
          rate: { type: ['number', 'null'], description: '(taken + done) / (taken + done + missed)' },
        },
      },
    },
  },
} as const

const adherenceSchema = {
  type: 'object',
  required: ['patientId', 'asOf', 'last7Days', 'last30Days'],
  properties: { patientId: { type: 'string' }, asOf: { type: 'string', format: 'date-time' }, last7Days: periodSchema, last30Days: periodSchema },
} as const

const patientParams = { type: 'object', required: ['patientId'], additionalProperties: false, properties: { patientId: { type: 'string', pattern: idPattern } } } as const
const scheduleParams = { type: 'object', required: ['scheduleId'], additionalProperties: false, properties: { scheduleId: { type: 'string', pattern: idPattern } } } as const
const occurrenceParams = { type: 'object', required: ['occurrenceId'], additionalProperties: false, properties: { occurrenceId: { type: 'string', pattern: idPattern } } } as const

/** Medication and measurement reminders under /api/v1: schedules, occurrences, confirmations, adherence. */
export async function reminderRoutes(app: FastifyInstance, deps: ReminderRouteDeps): Promise<void> {
  const { reminders } = deps
  const records = reminders.records
  const guards = makeGuards(deps)
  const { record, signedIn, audited } = guards
  guards.auditFailures(app)
  if (!app.hasRequestDecorator('principal')) app.decorateRequest('principal', null)

  const noPatient = (patientId: string) => new RpmError('RPM_ERR_NOT_FOUND', `no patient ${patientId}`, { details: { field: 'patientId' } })

  /** Clinical access to the patient, or 404 as for one that does not exist (audited). */
  const clinical = (req: FastifyRequest, patientId: string, action: string): Promise<AccessBasis> =>
    guards.clinical(req, patientId, action, { target: patientId, error: noPatient(patientId) })


  /**
   * Who may change what, once the caller may see the patient at all: schedules are a care-team
   * decision (basis care_team), a dose is confirmed by the patient or their care team. Checked
   * after the 404 for a patient the caller may not see, so it tells nothing that caller could not see.
   */
  const requireBasis = (req: FastifyRequest, basis: AccessBasis, allowed: AccessBasis[], action: string, target: string, what: string): void => {
    if (allowed.includes(basis)) return
    record(req, action, 'denied', target, { code: 'RPM_ERR_FORBIDDEN', basis })
    throw new RpmError('RPM_ERR_FORBIDDEN', what)
  }
  const CARE_TEAM_ONLY = 'only a provider on the patient\'s care team may change reminders'

  /** A schedule the caller may see, else 404 (the same answer whether it exists or not). */
  const visibleSchedule = async (req: FastifyRequest, scheduleId: string, action: string) => {
    const notFound = new RpmError('RPM_ERR_NOT_FOUND', `no reminder schedule ${scheduleId}`, { details: { field: 'scheduleId' } })
    const row = records.scheduleRow(scheduleId)
    if (!row) {
      record(req, action, 'denied', scheduleId, { code: notFound.code })
      throw notFound
    }
    const basis = await guards.clinical(req, row.patient_id, action, { target: scheduleId, error: notFound })
    return { patientId: row.patient_id, basis }
  }

  app.get<{ Params: { patientId: string } }>('/api/v1/patients/:patientId/reminders', {
    onRequest: signedIn(),
    schema: {
      tags: ['reminders'],
      summary: 'A patient\'s reminder schedules (active first)',
      security: bearer,
      params: patientParams,
      response: { 200: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: scheduleSchema } } }, ...errorResponses },
    },
  }, async (req) => {
    const { patientId } = req.params
    const basis = await clinical(req, patientId, 'reminders.read')
    const items = audited(req, 'reminders.read', patientId, () => records.schedules(patientId))
    record(req, 'reminders.read', 'allowed', patientId, { basis, count: items.length })
    return { items }
  })

  app.post<{ Params: { patientId: string }; Body: ScheduleInput }>('/api/v1/patients/:patientId/reminders', {
    onRequest: signedIn(),
    schema: {
      tags: ['reminders'],
      summary: 'Add a medication or measurement reminder (a provider on the care team): 201 the first time, 200 with the same schedule when its clientRequestId was already used (a retry)',
      security: bearer,
      params: patientParams,
      body: {
        type: 'object',
        required: ['kind', 'times'],
        additionalProperties: false,
        properties: {
          kind: { type: 'string', enum: ['medication', 'measurement'] },
          medication: { type: 'string', maxLength: 200, description: 'Required for a medication reminder, e.g. Metformin' },
          dose: { type: 'string', maxLength: 100, description: 'e.g. 500 mg' },
          readingType: { type: 'string', enum: [...READING_TYPES], description: 'Required for a measurement reminder' },
          instructions: { type: 'string', maxLength: 500, description: 'e.g. with food' },
          times: timesField,
          days: daysField,
          startsOn: { type: 'string', maxLength: 10, description: 'First local date YYYY-MM-DD (default: today in the patient\'s zone)' },
          endsOn: { ...nullableString(10, 'Last local date YYYY-MM-DD, inclusive (default: none)') },
          timezone: timezoneField,
          clientRequestId: { type: 'string', pattern: CLIENT_REQUEST_ID.source, description: 'Your id for this request, unique per patient; reuse it when you retry' },
        },
      },
      response: { 200: scheduleSchema, 201: scheduleSchema, ...errorResponses },
    },
  }, async (req, reply) => {
    const { patientId } = req.params
    const basis = await clinical(req, patientId, 'reminder.create')
    requireBasis(req, basis, ['care_team'], 'reminder.create', patientId, CARE_TEAM_ONLY)
    const { schedule, created } = audited(req, 'reminder.create', patientId, () => records.createScheduleOnce(patientId, req.body, req.principal!.userId))
    record(req, 'reminder.create', 'allowed', patientId, { basis, scheduleId: schedule.id, kind: schedule.kind, created })
    // A retry (the same clientRequestId) answers the schedule the first request created.
    return reply.status(created ? 201 : 200).send(schedule)
  })

  app.patch<{ Params: { scheduleId: string }; Body: SchedulePatch }>('/api/v1/reminders/:scheduleId', {
    onRequest: signedIn(),
    schema: {
      tags: ['reminders'],
      summary: 'Change a reminder\'s times, days, dose, instructions, end date, zone or active flag (a provider on the care team)',
      security: bearer,
      params: scheduleParams,
      body: {
        type: 'object',
        additionalProperties: false,
        minProperties: 1,
        properties: {
          times: timesField,
          days: daysField,
          dose: nullableString(100, 'null removes it'),
          instructions: nullableString(500, 'null removes them'),
          endsOn: nullableString(10, 'Last local date YYYY-MM-DD; null: no end'),
          timezone: timezoneField,
          active: { type: 'boolean' },
        },
      },
      response: { 200: scheduleSchema, ...errorResponses },
    },
  }, async (req) => {
    const { scheduleId } = req.params
    const { patientId, basis } = await visibleSchedule(req, scheduleId, 'reminder.update')
    requireBasis(req, basis, ['care_team'], 'reminder.update', scheduleId, CARE_TEAM_ONLY)
    const schedule = audited(req, 'reminder.update', scheduleId, () => records.updateSchedule(scheduleId, req.body))
    record(req, 'reminder.update', 'allowed', scheduleId, { patientId, basis, fields: Object.keys(req.body) })
    return schedule
  })

  app.delete<{ Params: { scheduleId: string } }>('/api/v1/reminders/:scheduleId', {
    onRequest: signedIn(),
    schema: {
      tags: ['reminders'],
      summary: 'Stop a reminder: it is deactivated, and its history (occurrences, adherence) stays',
      security: bearer,
      params: scheduleParams,
      response: { 200: scheduleSchema, ...errorResponses },
    },
  }, async (req) => {
    const { scheduleId } = req.params
    const { patientId, basis } = await visibleSchedule(req, scheduleId, 'reminder.deactivate')
    requireBasis(req, basis, ['care_team'], 'reminder.deactivate', scheduleId, CARE_TEAM_ONLY)
    const schedule = audited(req, 'reminder.deactivate', scheduleId, () => records.deactivateSchedule(scheduleId))
    record(req, 'reminder.deactivate', 'allowed', scheduleId, { patientId, basis })
    return schedule
  })

  app.get<{ Params: { patientId: string }; Querystring: { since?: string; until?: string; status?: OccurrenceStatus; limit?: number } }>('/api/v1/patients/:patientId/reminders/occurrences', {
    onRequest: signedIn(),
    schema: {
      tags: ['reminders'],
      summary: 'Reminders that came due (and doses taken when none was), newest first',
      security: bearer,
      params: patientParams,
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: {
          since: { type: 'string', format: 'date-time', description: 'Due at or after' },
          until: { type: 'string', format: 'date-time', description: 'Due at or before' },
          status: { type: 'string', enum: ['pending', 'taken', 'missed', 'done'] },
          limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
        },
      },
      response: {
        200: { type: 'object', required: ['items', 'hasMore'], properties: { items: { type: 'array', items: occurrenceSchema }, hasMore: { type: 'boolean', description: 'More match: ask again with until before the last item\'s dueAt' } } },
        ...errorResponses,
      },
    },
  }, async (req) => {
    const { patientId } = req.params
    const basis = await clinical(req, patientId, 'reminder_occurrences.read')
    const page = audited(req, 'reminder_occurrences.read', patientId, () => records.occurrences(patientId, req.query))
    record(req, 'reminder_occurrences.read', 'allowed', patientId, { basis, count: page.items.length })
    return page
  })

  app.post<{ Params: { occurrenceId: string }; Body: { takenAt?: string } }>('/api/v1/reminder-occurrences/:occurrenceId/taken', {
    onRequest: signedIn(),
    schema: {
      tags: ['reminders'],
      summary: 'Confirm a dose: the patient, or a provider on the care team on their behalf; {} means taken now. Confirming again answers the same state',
      security: bearer,
      params: occurrenceParams,
      body: {
        type: 'object',
        additionalProperties: false,
        properties: {
          takenAt: { type: 'string', maxLength: 40, description: 'When it was taken (ISO-8601 with a zone; default now); within earlyMinutes before and graceMinutes after the dose was due' },
        },
      },
      response: { 200: occurrenceSchema, ...errorResponses },
    },
  }, async (req) => {
    const { occurrenceId } = req.params
    const notFound = new RpmError('RPM_ERR_NOT_FOUND', `no reminder occurrence ${occurrenceId}`, { details: { field: 'occurrenceId' } })
    const row = records.occurrenceRow(occurrenceId)
    if (!row) {
      record(req, 'dose.confirm', 'denied', occurrenceId, { code: notFound.code })
      throw notFound
    }
    const basis = await guards.clinical(req, row.patient_id, 'dose.confirm', { target: occurrenceId, error: notFound })
    requireBasis(req, basis, ['self', 'care_team'], 'dose.confirm', occurrenceId, 'only the patient or a provider on their care team may confirm a dose')
    const takenAt = req.body.takenAt
    const { occurrence, changed } = audited(req, 'dose.confirm', occurrenceId, () =>
      reminders.confirm(occurrenceId, { source: 'api', by: req.principal!.userId, ...(takenAt !== undefined ? { takenAt } : {}) }),
    )
    record(req, 'dose.confirm', 'allowed', occurrenceId, { patientId: row.patient_id, basis, changed })
    return occurrence
  })

  app.get<{ Params: { patientId: string } }>('/api/v1/patients/:patientId/adherence', {
    onRequest: signedIn(),
    schema: {
      tags: ['reminders'],
      summary: 'Adherence over the last 7 and 30 days: medication doses taken, missed and pending, the rate, measurements, per schedule',
      security: bearer,
      params: patientParams,
      response: { 200: adherenceSchema, ...errorResponses },
    },
  }, async (req) => {
    const { patientId } = req.params
    const basis = await clinical(req, patientId, 'adherence.read')
    const result = audited(req, 'adherence.read', patientId, () => records.adherence(patientId))
    record(req, 'adherence.read', 'allowed', patientId, { basis })
    return result
  })
}
