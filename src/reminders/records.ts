import { randomBytes } from 'node:crypto'
import type { Database as Sqlite, Statement } from 'better-sqlite3'
import type { Clock } from '../clock.ts'
import { RpmError } from '../errors.ts'
import { READING_TYPES } from '../ingest/types.ts'
import type { ReminderOccurrenceTable, ReminderScheduleTable } from '../store/schema.ts'
import { ALL_DAYS, isLocalDate, isLocalTime, isTimeZone, localDate, nextDue, nextDueAfter, type ScheduleTimes } from './schedule.ts'
import {
  type Adherence,
  type AdherencePeriod,
  GATEWAY_DOWN,
  type OccurrenceQuery,
  type ReminderOccurrence,
  type ReminderSchedule,
  type ScheduleAdherence,
  type ScheduleInput,
  type SchedulePatch,
} from './types.ts'

/** A schedule row with its patient's time zone. */
export type ScheduleRow = ReminderScheduleTable & { patient_timezone: string }
/** An occurrence row with what it needs of its schedule. */
export type OccurrenceRow = ReminderOccurrenceTable & Pick<ReminderScheduleTable, 'kind' | 'medication' | 'dose' | 'reading_type'>

/** gateway_state key: how far the reminder clock has processed (ISO instant). */
export const CURSOR_KEY = 'reminders.cursor'
/** A client's id for a request, as for messages' clientMessageId. */
export const CLIENT_REQUEST_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/
const MAX_TIMES = 24
const LIMITS = { medication: 200, dose: 100, instructions: 500 } as const
const DAY_MS = 86_400_000
/** How far ahead a schedule's nextDueAt looks (as nextDue). */
const NEXT_DUE_HORIZON_MS = 8 * DAY_MS

export const newId = (prefix: string) => `${prefix}-${randomBytes(6).toString('hex')}`

const bad = (field: string, message: string) => new RpmError('RPM_ERR_BAD_REQUEST', message, { details: { field } })

/** The zone a schedule's times are in: its own, or its patient's. */
export const zoneOf = (row: ScheduleRow): string => row.timezone ?? row.patient_timezone

export function timesOf(row: ScheduleRow): ScheduleTimes {
  return {
    times: JSON.parse(row.times_json) as string[],
    days: JSON.parse(row.days_json) as number[],
    startsOn: row.starts_on,
    endsOn: row.ends_on,
    timezone: zoneOf(row),
  }
}

/**
 * What next_due_at holds for a schedule: its first slot after `afterMs` (ISO UTC), or null when
 * it is inactive, has ended, or its zone is unknown here (nothing the clock could compute).
 */
export function nextDueOf(row: ScheduleRow, afterMs: number): string | null {
  if (row.active !== 1) return null
  const times = timesOf(row)
  if (!isTimeZone(times.timezone)) return null
  return nextDueAfter(times, afterMs)?.dueAt ?? null
}

export function toOccurrence(row: OccurrenceRow): ReminderOccurrence {
  return {
    id: row.id,
    scheduleId: row.schedule_id,
    patientId: row.patient_id,
    kind: row.kind,
    medication: row.medication,
    dose: row.dose,
    readingType: row.reading_type,
    scheduled: row.scheduled === 1,
    dueAt: row.due_at,
    localDate: row.local_date,
    localTime: row.local_time,
    status: row.status,
    postedAt: row.posted_at,
    messageId: row.message_id,
    takenAt: row.taken_at,
    confirmedAt: row.confirmed_at,
    confirmedBy: row.confirmed_by,
    source: row.source,
    missedAt: row.missed_at,
  }
}

function checkText(field: keyof typeof LIMITS, value: string | null | undefined): string | null {
  if (value === undefined || value === null) return null
  const v = value.trim()
  if (v.length === 0) throw bad(field, `${field} must not be empty`)
  if (v.length > LIMITS[field]) throw bad(field, `${field} must be at most ${LIMITS[field]} characters`)
  return v
}

/** Times "HH:MM", each once, ascending; errors name the item (times[1]). */
function checkTimes(times: unknown): string[] {
  if (!Array.isArray(times) || times.length === 0) throw bad('times', 'times must list at least one local time, e.g. ["08:00","20:00"]')
  if (times.length > MAX_TIMES) throw bad('times', `times holds at most ${MAX_TIMES} entries`)
  times.forEach((t, i) => {
    if (typeof t !== 'string' || !isLocalTime(t)) throw bad(`times[${i}]`, `times[${i}] must be HH:MM (24-hour), e.g. 08:00 or 20:30`)
    if (times.indexOf(t) !== i) throw bad(`times[${i}]`, `times[${i}] repeats ${t}`)
  })
  return [...(times as string[])].sort()
}

function checkDays(days: unknown): number[] {
  if (!Array.isArray(days) || days.length === 0) throw bad('days', 'days must list at least one ISO weekday (1 = Monday ... 7 = Sunday)')
  days.forEach((d, i) => {
    if (!Number.isInteger(d) || (d as number) < 1 || (d as number) > 7) throw bad(`days[${i}]`, `days[${i}] must be an ISO weekday from 1 (Monday) to 7 (Sunday)`)
    if (days.indexOf(d) !== i) throw bad(`days[${i}]`, `days[${i}] repeats ${String(d)}`)
  })
  return [...(days as number[])].sort((a, b) => a - b)
}

function checkDate(field: string, value: string): string {
  if (!isLocalDate(value)) throw bad(field, `${field} must be a date YYYY-MM-DD`)
  return value
}

function checkZone(value: string | null | undefined): string | null {
  if (value === undefined || value === null) return null
  if (!isTimeZone(value)) throw bad('timezone', `timezone ${JSON.stringify(value)} is not an IANA time zone such as America/New_York`)
  return value
}

const rate = (done: number, missed: number): number | null => (done + missed === 0 ? null : Math.round((done / (done + missed)) * 10_000) / 10_000)

/** Called after a schedule was created or changed through these records (committed). */
export type ScheduleChanged = (row: ScheduleRow) => void

/**
 * Reminder schedules, their occurrences and adherence figures: what the API and the CLI read and
 * change. The reminder clock and confirmations live in Reminders.
 *
 * Each schedule keeps `next_due_at`, the next slot the clock has not processed, computed here
 * when it is created or changed and by the clock after each slot: a tick reads only the
 * schedules whose time has come.
 */
export class ReminderRecords {
  readonly #sqlite: Sqlite
  readonly #clock: Clock
  readonly #q: Record<string, Statement>
  readonly #changed: ScheduleChanged

  constructor(sqlite: Sqlite, clock: Clock, onChange: ScheduleChanged = () => {}) {
    this.#sqlite = sqlite
    this.#clock = clock
    this.#changed = onChange
    const p = (sql: string) => sqlite.prepare(sql)
    const schedules = 'SELECT s.*, p.timezone AS patient_timezone FROM reminder_schedules s JOIN patients p ON p.id = s.patient_id'
    const occurrences = 'SELECT o.*, s.kind, s.medication, s.dose, s.reading_type FROM reminder_occurrences o JOIN reminder_schedules s ON s.id = o.schedule_id'
    this.#q = {
      patientZone: p('SELECT timezone FROM patients WHERE id = ?'),
      schedule: p(`${schedules} WHERE s.id = ?`),
      schedulesOf: p(`${schedules} WHERE s.patient_id = ? ORDER BY s.active DESC, s.created_at, s.id`),
      // The partial index reminder_schedules_next_due answers this without reading the others.
      due: p(`${schedules} WHERE s.active = 1 AND s.next_due_at <= ? ORDER BY s.next_due_at, s.id`),
      setNextDue: p('UPDATE reminder_schedules SET next_due_at = ? WHERE id = ?'),
      cursor: p('SELECT value FROM gateway_state WHERE key = ?'),
      byClientRequest: p('SELECT id FROM reminder_schedules WHERE patient_id = ? AND created_by = ? AND client_request_id = ?'),
      insertSchedule: p(`INSERT INTO reminder_schedules (id, patient_id, kind, medication, dose, reading_type, instructions, timezone, times_json, days_json,
        starts_on, ends_on, active, created_by, created_at, updated_at, next_due_at, client_request_id)
        VALUES (@id, @patient_id, @kind, @medication, @dose, @reading_type, @instructions, @timezone, @times_json, @days_json,
        @starts_on, @ends_on, @active, @created_by, @created_at, @updated_at, @next_due_at, @client_request_id)`),
      updateSchedule: p(`UPDATE reminder_schedules SET dose = @dose, instructions = @instructions, timezone = @timezone, times_json = @times_json,
        days_json = @days_json, ends_on = @ends_on, active = @active, updated_at = @updated_at, next_due_at = @next_due_at WHERE id = @id`),
      occurrence: p(`${occurrences} WHERE o.id = ?`),
      byMessage: p(`${occurrences} WHERE o.message_id = ?`),
      counts: p(`SELECT schedule_id, status, scheduled, source = '${GATEWAY_DOWN}' AS unsent, COUNT(*) AS n FROM reminder_occurrences
        WHERE patient_id = ? AND due_at > ? AND due_at <= ? GROUP BY schedule_id, status, scheduled, unsent`),
    }
  }

  #now(): number {
    return this.#clock.now()
  }

  /** The next reminder within 8 days of now, or null. */
  #nextWithin8Days(row: ScheduleRow): string | null {
    const times = timesOf(row)
    if (row.active !== 1 || row.next_due_at === null || !isTimeZone(times.timezone)) return null
    const now = this.#now()
    const stored = Date.parse(row.next_due_at)
    // next_due_at is the first slot the clock has not processed: once it lies ahead, it is also
    // the next one from now. Before the tick that processes it, work it out.
    if (stored > now) return stored - now <= NEXT_DUE_HORIZON_MS ? row.next_due_at : null
    return nextDue(times, now)?.dueAt ?? null
  }

  #toSchedule(row: ScheduleRow): ReminderSchedule {
    const times = timesOf(row)
    return {
      id: row.id,
      patientId: row.patient_id,
      kind: row.kind,
      medication: row.medication,
      dose: row.dose,
      readingType: row.reading_type,
      instructions: row.instructions,
      timezone: row.timezone,
      times: [...times.times],
      days: [...times.days],
      startsOn: row.starts_on,
      endsOn: row.ends_on,
      active: row.active === 1,
      createdBy: row.created_by,
      createdAt: row.created_at,
      updatedAt: row.updated_at,
      nextDueAt: this.#nextWithin8Days(row),
      clientRequestId: row.client_request_id,
    }
  }

  #patientZone(patientId: string): string {
    const row = this.#q.patientZone!.get(patientId) as { timezone: string } | undefined
    if (!row) throw new RpmError('RPM_ERR_NOT_FOUND', `no patient ${patientId}`, { details: { field: 'patientId' } })
    return row.timezone
  }

  /** The zone the times will be read in; a patient's zone unknown to this system is an error too. */
  #effectiveZone(own: string | null, patientZone: string): string {
    const zone = own ?? patientZone
    if (!isTimeZone(zone)) throw bad('timezone', `the patient's time zone ${JSON.stringify(zone)} is not a known IANA zone: give timezone`)
    return zone
  }

  scheduleRow(id: string): ScheduleRow | undefined {
    return this.#q.schedule!.get(id) as ScheduleRow | undefined
  }

  /** Active schedules whose next_due_at is at or before `nowMs`, soonest first: what a tick works on. */
  dueRows(nowMs: number): ScheduleRow[] {
    return this.#q.due!.all(new Date(nowMs).toISOString()) as ScheduleRow[]
  }

  /** Stores where the reminder clock looks next for a schedule (in the caller's transaction, if any). */
  setNextDue(scheduleId: string, nextDueAt: string | null): void {
    this.#q.setNextDue!.run(nextDueAt, scheduleId)
  }

  /** How far the reminder clock has processed (epoch ms), or null before its first start. */
  cursor(): number | null {
    const row = this.#q.cursor!.get(CURSOR_KEY) as { value: string } | undefined
    return row ? Date.parse(row.value) : null
  }

  schedule(id: string): ReminderSchedule {
    const row = this.scheduleRow(id)
    if (!row) throw new RpmError('RPM_ERR_NOT_FOUND', `no reminder schedule ${id}`, { details: { field: 'scheduleId' } })
    return this.#toSchedule(row)
  }

  schedules(patientId: string): ReminderSchedule[] {
    this.#patientZone(patientId)
    return (this.#q.schedulesOf!.all(patientId) as ScheduleRow[]).map((r) => this.#toSchedule(r))
  }

  createSchedule(patientId: string, input: ScheduleInput, createdBy: string): ReminderSchedule {
    return this.createScheduleOnce(patientId, input, createdBy).schedule
  }

  /**
   * Creates a schedule; with `clientRequestId`, once per patient, creator and id: a retry answers
   * the schedule the first request created (as it is now, even if the retry's body differs) with
   * created = false, and creates nothing.
   */
  createScheduleOnce(patientId: string, input: ScheduleInput, createdBy: string): { schedule: ReminderSchedule; created: boolean } {
    const patientZone = this.#patientZone(patientId)
    const clientRequestId = input.clientRequestId ?? null
    if (clientRequestId !== null && (typeof clientRequestId !== 'string' || !CLIENT_REQUEST_ID.test(clientRequestId))) {
      throw bad('clientRequestId', 'clientRequestId must be 1-64 characters: letters, digits and . _ : - (starting with a letter or digit)')
    }
    const first = () => (clientRequestId === null ? undefined : (this.#q.byClientRequest!.get(patientId, createdBy, clientRequestId) as { id: string } | undefined))
    const retried = first()
    if (retried) return { schedule: this.schedule(retried.id), created: false }
    const kind = input.kind
    if (kind !== 'medication' && kind !== 'measurement') throw bad('kind', 'kind must be medication or measurement')
    const medication = checkText('medication', input.medication)
    const dose = checkText('dose', input.dose)
    let readingType: string | null = null
    if (kind === 'medication') {
      if (!medication) throw bad('medication', 'medication is required for a medication reminder')
      if (input.readingType !== undefined) throw bad('readingType', 'readingType belongs to measurement reminders')
    } else {
      if (input.readingType === undefined) throw bad('readingType', `readingType is required for a measurement reminder: one of ${READING_TYPES.join(', ')}`)
      if (!(READING_TYPES as readonly string[]).includes(input.readingType)) throw bad('readingType', `readingType must be one of ${READING_TYPES.join(', ')}`)
      if (medication !== null) throw bad('medication', 'medication belongs to medication reminders')
      if (dose !== null) throw bad('dose', 'dose belongs to medication reminders')
      readingType = input.readingType
    }
    const times = checkTimes(input.times)
    const days = input.days === undefined ? [...ALL_DAYS] : checkDays(input.days)
    const timezone = checkZone(input.timezone)
    const zone = this.#effectiveZone(timezone, patientZone)
    const now = this.#now()
    const startsOn = input.startsOn === undefined ? localDate(now, zone) : checkDate('startsOn', input.startsOn)
    const endsOn = input.endsOn === undefined || input.endsOn === null ? null : checkDate('endsOn', input.endsOn)
    if (endsOn !== null && endsOn < startsOn) throw bad('endsOn', 'endsOn must not be before startsOn')
    const at = new Date(now).toISOString()
    const row: ScheduleRow = {
      id: newId('rem'),
      patient_id: patientId,
      kind,
      medication,
      dose,
      reading_type: readingType,
      instructions: checkText('instructions', input.instructions),
      timezone,
      times_json: JSON.stringify(times),
      days_json: JSON.stringify(days),
      starts_on: startsOn,
      ends_on: endsOn,
      active: 1,
      created_by: createdBy,
      created_at: at,
      updated_at: at,
      next_due_at: null,
      client_request_id: clientRequestId,
      patient_timezone: patientZone,
    }
    // Nothing is due from before the schedule existed.
    row.next_due_at = nextDueOf(row, now)
    const { patient_timezone: _, ...table } = row
    try {
      this.#q.insertSchedule!.run(table satisfies ReminderScheduleTable)
    } catch (err) {
      // A retry that raced the first request (and lost at the unique index) answers the first.
      const raced = (err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE' ? first() : undefined
      if (!raced) throw err
      return { schedule: this.schedule(raced.id), created: false }
    }
    this.#changed(row)
    return { schedule: this.schedule(row.id), created: true }
  }

  /** Changes what may change; the medication and kind stay (a new medication is a new schedule). */
  updateSchedule(id: string, patch: SchedulePatch): ReminderSchedule {
    const row = this.scheduleRow(id)
    if (!row) throw new RpmError('RPM_ERR_NOT_FOUND', `no reminder schedule ${id}`, { details: { field: 'scheduleId' } })
    if (patch.dose !== undefined && patch.dose !== null && row.kind !== 'medication') throw bad('dose', 'dose belongs to medication reminders')
    const timezone = patch.timezone === undefined ? row.timezone : checkZone(patch.timezone)
    this.#effectiveZone(timezone, row.patient_timezone)
    const endsOn = patch.endsOn === undefined ? row.ends_on : patch.endsOn === null ? null : checkDate('endsOn', patch.endsOn)
    if (endsOn !== null && endsOn < row.starts_on) throw bad('endsOn', 'endsOn must not be before startsOn')
    const now = this.#now()
    const updated: ScheduleRow = {
      ...row,
      dose: patch.dose === undefined ? row.dose : checkText('dose', patch.dose),
      instructions: patch.instructions === undefined ? row.instructions : checkText('instructions', patch.instructions),
      timezone,
      times_json: patch.times === undefined ? row.times_json : JSON.stringify(checkTimes(patch.times)),
      days_json: patch.days === undefined ? row.days_json : JSON.stringify(checkDays(patch.days)),
      ends_on: endsOn,
      active: patch.active === undefined ? row.active : patch.active ? 1 : 0,
      updated_at: new Date(now).toISOString(),
    }
    // The new times apply from where the clock has got to (its cursor), or from a slot of this
    // schedule it has not processed yet (a tick still to come, a failed post to retry); never
    // from before the schedule existed. Inactive, it has no next slot, so reactivating it does
    // not catch up the reminders of the time it was stopped.
    let from = this.cursor() ?? now
    if (row.active === 1 && row.next_due_at !== null) from = Math.min(from, Date.parse(row.next_due_at) - 1)
    updated.next_due_at = nextDueOf(updated, Math.max(from, Date.parse(row.created_at)))
    this.#q.updateSchedule!.run({
      id,
      dose: updated.dose,
      instructions: updated.instructions,
      timezone: updated.timezone,
      times_json: updated.times_json,
      days_json: updated.days_json,
      ends_on: updated.ends_on,
      active: updated.active,
      updated_at: updated.updated_at,
      next_due_at: updated.next_due_at,
    })
    this.#changed(updated)
    return this.#toSchedule(updated)
  }

  /** No further reminders; its occurrences stay as the record. Deactivating twice changes nothing. */
  deactivateSchedule(id: string): ReminderSchedule {
    const row = this.scheduleRow(id)
    if (row && row.active === 0) return this.#toSchedule(row)
    return this.updateSchedule(id, { active: false })
  }

  occurrenceRow(id: string): OccurrenceRow | undefined {
    return this.#q.occurrence!.get(id) as OccurrenceRow | undefined
  }

  occurrenceByMessage(messageId: string): OccurrenceRow | undefined {
    return this.#q.byMessage!.get(messageId) as OccurrenceRow | undefined
  }

  /** A patient's occurrences, newest due first. */
  occurrences(patientId: string, query: OccurrenceQuery = {}): { items: ReminderOccurrence[]; hasMore: boolean } {
    this.#patientZone(patientId)
    const limit = query.limit ?? 100
    const where = ['o.patient_id = ?']
    const args: unknown[] = [patientId]
    for (const [field, op] of [['since', '>='], ['until', '<=']] as const) {
      const v = query[field]
      if (v === undefined) continue
      const ms = Date.parse(v)
      if (Number.isNaN(ms)) throw bad(field, `${field} must be an ISO-8601 date-time`)
      where.push(`o.due_at ${op} ?`)
      args.push(new Date(ms).toISOString())
    }
    if (query.status !== undefined) {
      where.push('o.status = ?')
      args.push(query.status)
    }
    const rows = this.#sqlite
      .prepare(`SELECT o.*, s.kind, s.medication, s.dose, s.reading_type FROM reminder_occurrences o JOIN reminder_schedules s ON s.id = o.schedule_id
        WHERE ${where.join(' AND ')} ORDER BY o.due_at DESC, o.id DESC LIMIT ?`)
      .all(...args, limit + 1) as OccurrenceRow[]
    return { items: rows.slice(0, limit).map(toOccurrence), hasMore: rows.length > limit }
  }

  /** Adherence over the last 7 and 30 days (by due time). */
  adherence(patientId: string): Adherence {
    this.#patientZone(patientId)
    const now = this.#now()
    const schedules = this.#q.schedulesOf!.all(patientId) as ScheduleRow[]
    return {
      patientId,
      asOf: new Date(now).toISOString(),
      last7Days: this.#period(patientId, schedules, now - 7 * DAY_MS, now),
      last30Days: this.#period(patientId, schedules, now - 30 * DAY_MS, now),
    }
  }

  #period(patientId: string, schedules: ScheduleRow[], fromMs: number, toMs: number): AdherencePeriod {
    const from = new Date(fromMs).toISOString()
    const to = new Date(toMs).toISOString()
    const rows = this.#q.counts!.all(patientId, from, to) as Array<{ schedule_id: string; status: string; scheduled: number; unsent: number; n: number }>
    const per = new Map<string, ScheduleAdherence>()
    for (const s of schedules) {
      per.set(s.id, {
        scheduleId: s.id, kind: s.kind, medication: s.medication, dose: s.dose, readingType: s.reading_type, active: s.active === 1,
        taken: 0, done: 0, missed: 0, pending: 0, unsent: 0, unscheduled: 0, rate: null,
      })
    }
    for (const r of rows) {
      const s = per.get(r.schedule_id)
      if (!s) continue
      if (r.scheduled === 0) s.unscheduled += r.n
      else if (r.status === 'missed' && r.unsent === 1) s.unsent += r.n
      else if (r.status === 'taken' || r.status === 'done' || r.status === 'missed' || r.status === 'pending') s[r.status] += r.n
    }
    const items = [...per.values()].filter((s) => s.active || s.taken + s.done + s.missed + s.pending + s.unsent + s.unscheduled > 0)
    for (const s of items) s.rate = rate(s.taken + s.done, s.missed)
    const sum = (kind: string, key: 'taken' | 'done' | 'missed' | 'pending' | 'unsent' | 'unscheduled') =>
      items.filter((s) => s.kind === kind).reduce((n, s) => n + s[key], 0)
    const taken = sum('medication', 'taken')
    const missed = sum('medication', 'missed')
    const done = sum('measurement', 'done')
    const missedMeasurements = sum('measurement', 'missed')
    return {
      from,
      to,
      taken,
      missed,
      pending: sum('medication', 'pending'),
      unsent: sum('medication', 'unsent'),
      unscheduled: sum('medication', 'unscheduled'),
      rate: rate(taken, missed),
      measurements: { done, missed: missedMeasurements, pending: sum('measurement', 'pending'), unsent: sum('measurement', 'unsent'), rate: rate(done, missedMeasurements) },
      schedules: items,
    }
  }
}
