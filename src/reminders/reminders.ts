import cron, { type ScheduledTask } from 'node-cron'
import type { Database as Sqlite, Statement } from 'better-sqlite3'
import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { GatewayConfig } from '../config/load.ts'
import { RpmError } from '../errors.ts'
import type { EventBus, GatewayEvents } from '../events.ts'
import type { Store } from '../store/db.ts'
import type { ReminderOccurrenceTable } from '../store/schema.ts'
import { CURSOR_KEY, type OccurrenceRow, ReminderRecords, type ScheduleRow, newId, nextDueOf, timesOf, toOccurrence, zoneOf } from './records.ts'
import { type DueInstant, dueInstants, isTimeZone, localDateTime } from './schedule.ts'
import { type ConfirmationSource, GATEWAY_DOWN, type ReminderOccurrence } from './types.ts'

/**
 * Posts a system message in the patient's thread inside the caller's transaction; the same key
 * posts once. `announce` is called after the caller's commit. (app.ts wires it to Threads.)
 */
export type PostToThread = (patientId: string, text: string, data: Record<string, unknown>, key: string) => { messageId: string; created: boolean; announce: () => void }

export interface ReminderDeps {
  config: GatewayConfig['reminders']
  store: Store
  bus: EventBus
  clock: Clock
  log: Logger
  postToThread: PostToThread
}

export interface Confirmation {
  source: ConfirmationSource
  /** A user id, or device:{deviceId}. */
  by: string
  /** When the dose was taken (or the reading measured). */
  takenMs: number
}

export interface ConfirmResult {
  occurrence: ReminderOccurrence
  /** False when it was already confirmed: nothing was posted or announced again. */
  changed: boolean
}

/** A reminder posted this long after it came due says so ("sent late"). */
const LATE_AFTER_MS = 5 * 60_000
/** How far ahead of the gateway's clock a reported takenAt may be (device clock skew). */
const MAX_FUTURE_SKEW_MS = 5 * 60_000
/** A reminder that fails to post on this many ticks in a row is skipped (and logged), not retried forever. */
const MAX_ATTEMPTS = 3
/** A schedule whose zone this system does not know is looked at again this much later. */
const UNKNOWN_ZONE_RECHECK_MS = 3_600_000
const ISO_INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/
const ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/

/** "I took it", "taken", "done", "yes" (and a trailing "!" or "."), nothing more: "not taken" is not a yes. */
const AFFIRMATIVE = /^(yes|yep|yes i did|done|taken|took it|i took it|i have taken it|i've taken it|i’ve taken it)[\s.!👍]*$/iu

const READING_NAMES: Record<string, string> = {
  blood_pressure: 'blood pressure',
  glucose: 'blood glucose',
  spo2: 'oxygen level',
  heart_rate: 'heart rate',
  weight: 'weight',
  temperature: 'temperature',
}

const iso = (ms: number) => new Date(ms).toISOString()

function doseName(s: { medication: string | null; dose: string | null }): string {
  return [s.medication, s.dose].filter(Boolean).join(' ')
}

function reminderText(s: ScheduleRow, slot: DueInstant, late: boolean): string {
  const when = late ? `${slot.localTime}, sent late` : slot.localTime
  const base = s.kind === 'medication'
    ? `Time to take ${doseName(s)} (${when})`
    : `Time to check your ${READING_NAMES[s.reading_type ?? ''] ?? s.reading_type} (${when})`
  return s.instructions ? `${base}. ${s.instructions}` : base
}

/** Refuses a reminders section the clock cannot run (the cron expression), naming the key. */
export function checkReminderConfig(config: GatewayConfig['reminders']): void {
  const check = cron.validateDetailed(config.cron)
  if (!check.valid) {
    const first = check.errors[0]
    throw new RpmError('RPM_ERR_CONFIG_INVALID', `invalid configuration: reminders.cron ${JSON.stringify(config.cron)}: ${first ? `${first.field}: ${first.message}` : 'not a cron expression'}`)
  }
}

/**
 * Medication and measurement reminders. node-cron only triggers a tick; each tick works out
 * from the clock and the database what came due since the last one (each schedule's
 * next_due_at, moved past a slot in the transaction that records it), so a late or skipped
 * firing, or a restart, is caught up: every reminder is recorded once (the occurrence's unique
 * key) and never posted twice. A tick reads only the schedules whose next_due_at has come (an
 * index), so its cost follows the reminders due, not the schedules there are.
 *
 * Confirmations: the API, a device event `medication_taken`, a patient's reply to the reminder
 * in the thread; measurement reminders are completed by a reading of their type. Logs carry ids
 * only: never medication names, texts or values.
 */
export class Reminders {
  readonly records: ReminderRecords
  readonly #config: GatewayConfig['reminders']
  readonly #sqlite: Sqlite
  readonly #bus: EventBus
  readonly #clock: Clock
  readonly #log: Logger
  readonly #post: PostToThread
  readonly #q: Record<string, Statement>
  readonly #failures = new Map<string, number>()
  #task: ScheduledTask | null = null
  readonly #listeners: Array<() => void> = []
  /**
   * Patient -> reading types with an active measurement schedule: a reading of any other type
   * costs no query and no time-zone work. Kept up to date by the records' change callback, and
   * reloaded when another connection (the CLI) has written to the database (PRAGMA data_version).
   */
  readonly #measuring = new Map<string, Set<string>>()
  #dataVersion: number | null = null

  constructor(deps: ReminderDeps) {
    checkReminderConfig(deps.config)
    this.#config = deps.config
    this.#sqlite = deps.store.sqlite
    this.#bus = deps.bus
    this.#clock = deps.clock
    this.#log = deps.log
    this.#post = deps.postToThread
    this.records = new ReminderRecords(deps.store.sqlite, deps.clock, (row) => this.#scheduleChanged(row))
    const p = (sql: string) => deps.store.sqlite.prepare(sql)
    const occurrences = 'SELECT o.*, s.kind, s.medication, s.dose, s.reading_type FROM reminder_occurrences o JOIN reminder_schedules s ON s.id = o.schedule_id'
    this.#q = {
      setCursor: p('INSERT INTO gateway_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value'),
      insert: p(`INSERT INTO reminder_occurrences (id, schedule_id, patient_id, due_at, local_date, local_time, status, scheduled, posted_at,
        message_id, confirmed_at, taken_at, confirmed_by, source, missed_at)
        VALUES (@id, @schedule_id, @patient_id, @due_at, @local_date, @local_time, @status, @scheduled, @posted_at,
        @message_id, @confirmed_at, @taken_at, @confirmed_by, @source, @missed_at)
        ON CONFLICT (schedule_id, due_at) DO NOTHING`),
      setMessage: p('UPDATE reminder_occurrences SET message_id = ? WHERE id = ?'),
      overdue: p(`${occurrences} WHERE o.status = 'pending' AND o.due_at <= ? ORDER BY o.due_at`),
      markMissed: p("UPDATE reminder_occurrences SET status = 'missed', missed_at = ? WHERE id = ? AND status = 'pending'"),
      // A missed dose reported later with a time inside its window (an offline pillbox) is taken after all.
      complete: p(`UPDATE reminder_occurrences SET status = ?, confirmed_at = ?, taken_at = ?, confirmed_by = ?, source = ?
        WHERE id = ? AND status IN ('pending', 'missed')`),
      inWindow: p(`${occurrences} WHERE o.schedule_id = ? AND o.scheduled = 1 AND o.due_at >= ? AND o.due_at <= ?`),
      occurrence: p(`${occurrences} WHERE o.id = ?`),
      byDue: p(`${occurrences} WHERE o.schedule_id = ? AND o.due_at = ?`),
      measurementSchedules: p(`SELECT s.*, p.timezone AS patient_timezone FROM reminder_schedules s JOIN patients p ON p.id = s.patient_id
        WHERE s.patient_id = ? AND s.kind = 'measurement' AND s.reading_type = ? AND s.active = 1`),
      devices: p("SELECT id FROM devices WHERE patient_id = ? AND status = 'active' ORDER BY id"),
      stillDue: p(`${occurrences.replace('SELECT o.*', 'SELECT o.*, m.text')} LEFT JOIN messages m ON m.id = o.message_id
        WHERE o.patient_id = (SELECT patient_id FROM devices WHERE id = ? AND status = 'active') AND o.status = 'pending'
          AND o.posted_at IS NOT NULL AND o.due_at >= ? ORDER BY o.due_at`),
      measuring: p("SELECT DISTINCT patient_id, reading_type FROM reminder_schedules WHERE kind = 'measurement' AND active = 1"),
      measuringOf: p("SELECT DISTINCT reading_type FROM reminder_schedules WHERE patient_id = ? AND kind = 'measurement' AND active = 1"),
      // Changes when another connection commits (https://sqlite.org/pragma.html#pragma_data_version).
      dataVersion: p('PRAGMA data_version').pluck(),
    }
  }

  get #graceMs(): number {
    return this.#config.graceMinutes * 60_000
  }

  get #earlyMs(): number {
    return this.#config.earlyMinutes * 60_000
  }

  /** How far the reminder clock has processed (epoch ms), or null before the first start. */
  cursor(): number | null {
    return this.records.cursor()
  }

  /**
   * Commands are QoS 1 but not kept for a device that is offline when a reminder comes due: when
   * it connects, the reminders still due for its patient (posted, not confirmed, within the grace
   * window) are sent to it again, marked `redelivered`.
   */
  #redeliver(deviceId: string): void {
    const since = iso(this.#clock.now() - this.#graceMs)
    for (const o of this.#q.stillDue!.all(deviceId, since) as Array<OccurrenceRow & { text: string | null }>) {
      this.#bus.emit('device.command', { deviceId, payload: reminderCommand(o, o.text ?? '', true) })
    }
  }

  #setCursor(ms: number): void {
    this.#q.setCursor!.run(CURSOR_KEY, iso(ms))
  }

  start(): void {
    if (this.#task) return
    this.#listen('device.event', (e) => this.#onDeviceEvent(e))
    this.#listen('message.posted', (e) => this.#onMessage(e))
    this.#listen('reading.accepted', (readings) => this.#onReadings(readings))
    // A device with a kept session (clean: false) has its subscription back at connect; a new
    // session gets one when it subscribes.
    this.#listen('device.connected', (e) => this.#redeliver(e.deviceId))
    this.#listen('device.subscribed', (e) => {
      if (e.topics.some((t) => mqttMatch(t, `devices/${e.deviceId}/commands`))) this.#redeliver(e.deviceId)
    })
    this.#syncMeasuring()
    // The first start ever begins now: nothing came due before the gateway ran (a schedule the
    // CLI added before it starts from its first slot after now).
    if (this.cursor() === null) {
      const now = this.#clock.now()
      this.#sqlite.transaction(() => {
        for (const s of this.records.dueRows(now)) this.records.setNextDue(s.id, nextDueOf(s, now))
        this.#setCursor(now)
      }).immediate()
    }
    // Catch up what came due while the gateway was down.
    this.tick()
    const log = this.#log
    this.#task = cron.schedule(this.#config.cron, () => void this.tick(), {
      noOverlap: true,
      // A skipped firing needs no warning: the next tick catches it up from the cursor.
      suppressMissedWarning: true,
      logger: {
        info: (m) => log.debug(m),
        warn: (m) => log.warn(m),
        error: (m, err) => {
          const e = err ?? m
          log.error({ err: e instanceof Error ? e.message : e }, 'reminder clock error')
        },
        debug: (m) => log.debug(typeof m === 'string' ? m : m.message),
      },
    })
  }

  async stop(): Promise<void> {
    const task = this.#task
    this.#task = null
    if (task) await task.destroy()
    for (const off of this.#listeners.splice(0)) off()
  }

  #listen<K extends keyof GatewayEvents>(name: K, handler: (...args: GatewayEvents[K]) => void): void {
    // A failure here must not reach the emitter (an HTTP route, the broker, the journal).
    const safe = ((...args: GatewayEvents[K]) => {
      try {
        handler(...args)
      } catch (err) {
        this.#log.error({ event: name, err: (err as Error).message }, 'reminder event handling failed')
      }
    }) as never
    this.#bus.on(name, safe)
    this.#listeners.push(() => this.#bus.off(name, safe))
  }

  // --- the reminder clock ----------------------------------------------------------------------

  /**
   * Posts what came due up to now and marks what is overdue as missed. Synchronous, so two ticks
   * never overlap. Returns how many reminders came due and how many went missed.
   */
  tick(): { due: number; missed: number } {
    const now = this.#clock.now()
    let due = 0
    try {
      // A schedule whose reminder failed to post waits for the next tick; the others go on.
      const held = new Set<string>()
      for (const { schedule, slot, next } of this.#dueSlots(now)) {
        if (held.has(schedule.id)) continue
        const key = `${schedule.id}@${slot.dueAt}`
        try {
          if (this.#fire(schedule, slot, next, now)) due++
          this.#failures.delete(key)
        } catch (err) {
          const attempts = (this.#failures.get(key) ?? 0) + 1
          const ids = { scheduleId: schedule.id, patientId: schedule.patient_id, dueAt: slot.dueAt, attempts, err: (err as Error).message }
          if (attempts < MAX_ATTEMPTS) {
            this.#failures.set(key, attempts)
            // Its next_due_at stays on this reminder: the next tick tries again.
            this.#log.error(ids, 'recording a reminder failed; retrying on the next tick')
            held.add(schedule.id)
            continue
          }
          this.#failures.delete(key)
          this.#log.error(ids, 'recording a reminder failed repeatedly; skipped')
          this.records.setNextDue(schedule.id, next ?? nextDueOf(schedule, slot.dueMs))
        }
      }
      this.#setCursor(now)
    } catch (err) {
      this.#log.error({ err: (err as Error).message }, 'reminder tick failed')
    }
    return { due, missed: this.#sweepMissed(now) }
  }

  /**
   * The slots of the schedules whose next_due_at has come, from it up to `nowMs`, in time order;
   * `next` is the schedule's following slot when it is among them.
   */
  #dueSlots(nowMs: number): Array<{ schedule: ScheduleRow; slot: DueInstant; next: string | undefined }> {
    const out: Array<{ schedule: ScheduleRow; slot: DueInstant; next: string | undefined }> = []
    for (const schedule of this.records.dueRows(nowMs)) {
      if (!isTimeZone(zoneOf(schedule))) {
        this.#log.warn({ scheduleId: schedule.id, patientId: schedule.patient_id }, 'reminder schedule has an unknown time zone; skipped')
        this.records.setNextDue(schedule.id, iso(nowMs + UNKNOWN_ZONE_RECHECK_MS))
        continue
      }
      const slots = dueInstants(timesOf(schedule), Date.parse(schedule.next_due_at!) - 1, nowMs)
      if (slots.length === 0) {
        // Its stored instant names no slot any more (the patient's zone changed): look again from now.
        this.records.setNextDue(schedule.id, nextDueOf(schedule, nowMs))
        continue
      }
      slots.forEach((slot, i) => out.push({ schedule, slot, next: slots[i + 1]?.dueAt }))
    }
    return out.sort((a, b) => a.slot.dueMs - b.slot.dueMs || a.schedule.id.localeCompare(b.schedule.id))
  }

  /**
   * One due slot in one transaction: the occurrence, its thread message and the schedule's
   * next_due_at moved past it (to `next`, or the following slot worked out here). Returns
   * whether a reminder went out. A slot already recorded (a restart, or a confirmation that came
   * before it was due) is left alone. A slot first seen after its grace window (the gateway was
   * down) is recorded as missed with source gateway_down, without a reminder: telling someone
   * hours later to take a dose now could double it.
   */
  #fire(schedule: ScheduleRow, slot: DueInstant, next: string | undefined, now: number): boolean {
    const following = next ?? nextDueOf(schedule, slot.dueMs)
    const lag = now - slot.dueMs
    const unsent = lag >= this.#graceMs
    const late = lag > LATE_AFTER_MS
    const nowIso = iso(now)
    const write = this.#sqlite.transaction(() => {
      const row: ReminderOccurrenceTable = {
        id: newId('occ'),
        schedule_id: schedule.id,
        patient_id: schedule.patient_id,
        due_at: slot.dueAt,
        local_date: slot.localDate,
        local_time: slot.localTime,
        status: unsent ? 'missed' : 'pending',
        scheduled: 1,
        posted_at: unsent ? null : nowIso,
        message_id: null,
        confirmed_at: null,
        taken_at: null,
        confirmed_by: null,
        source: unsent ? GATEWAY_DOWN : null,
        missed_at: unsent ? nowIso : null,
      }
      const inserted = this.#q.insert!.run(row).changes === 1
      // This slot is done for this schedule, whether a crash comes before the next or not.
      this.records.setNextDue(schedule.id, following)
      if (!inserted || unsent) return { row, inserted, posted: null }
      const text = reminderText(schedule, slot, late)
      const posted = this.#post(schedule.patient_id, text, {
        event: 'due',
        reminder: {
          occurrenceId: row.id,
          scheduleId: schedule.id,
          kind: schedule.kind,
          medication: schedule.medication,
          dose: schedule.dose,
          readingType: schedule.reading_type,
          instructions: schedule.instructions,
          dueAt: slot.dueAt,
          localTime: slot.localTime,
          late,
          actions: schedule.kind === 'medication' ? ['taken'] : [],
        },
      }, `reminder:${schedule.id}:${slot.dueAt}`)
      this.#q.setMessage!.run(posted.messageId, row.id)
      const devices = (this.#q.devices!.all(schedule.patient_id) as Array<{ id: string }>).map((d) => d.id)
      return { row, inserted, posted: { ...posted, text, devices } }
    })
    const { row, inserted, posted } = write.immediate()
    if (!inserted) return false
    if (!posted) {
      this.#log.warn({ scheduleId: schedule.id, patientId: schedule.patient_id, occurrenceId: row.id, dueAt: slot.dueAt }, 'reminder came due while the gateway was down: recorded as missed, not sent')
      return false
    }
    posted.announce()
    this.#bus.emit('reminder.due', { patientId: schedule.patient_id, occurrenceId: row.id, scheduleId: schedule.id, kind: schedule.kind, dueAt: slot.dueAt })
    const payload = reminderCommand({ ...row, kind: schedule.kind, medication: schedule.medication, dose: schedule.dose, reading_type: schedule.reading_type }, posted.text)
    for (const deviceId of posted.devices) this.#bus.emit('device.command', { deviceId, payload })
    this.#log.debug({ scheduleId: schedule.id, patientId: schedule.patient_id, occurrenceId: row.id, dueAt: slot.dueAt, devices: posted.devices.length }, 'reminder sent')
    return true
  }

  /**
   * Pending occurrences past their grace window become missed, once each. A missed medication
   * dose is announced as `dose.missed` inside the transaction that records it, so the rules
   * engine's missed-dose alert commits with it: a crash leaves both or neither, and a listener
   * that fails rolls the miss back, to be tried again on the next tick. One transaction per dose,
   * so one that cannot be recorded holds back no other.
   */
  #sweepMissed(now: number): number {
    let overdue: OccurrenceRow[]
    try {
      overdue = this.#q.overdue!.all(iso(now - this.#graceMs)) as OccurrenceRow[]
    } catch (err) {
      this.#log.error({ err: (err as Error).message }, 'marking missed reminders failed')
      return 0
    }
    const nowIso = iso(now)
    const missed: string[] = []
    for (const r of overdue) {
      const after: Array<() => void> = []
      try {
        const changed = this.#sqlite.transaction(() => {
          // Conditional: a dose confirmed in the meantime stays taken, and each turns missed once.
          if (this.#q.markMissed!.run(nowIso, r.id).changes !== 1) return false
          // Only a medication dose is a missed dose; a measurement not made is an adherence figure.
          if (r.kind === 'medication') {
            this.#bus.emit('dose.missed', {
              patientId: r.patient_id, occurrenceId: r.id, scheduleId: r.schedule_id, dueAt: r.due_at, afterCommit: (work) => after.push(work),
            })
          }
          return true
        }).immediate()
        if (!changed) continue
        missed.push(r.id)
      } catch (err) {
        this.#log.error({ occurrenceId: r.id, scheduleId: r.schedule_id, patientId: r.patient_id, err: (err as Error).message }, 'recording a missed dose failed; it stays pending and is tried again on the next tick')
        continue
      }
      for (const work of after) {
        try {
          work()
        } catch (err) {
          this.#log.error({ occurrenceId: r.id, err: (err as Error).message }, 'announcing a missed dose failed')
        }
      }
    }
    if (missed.length > 0) this.#log.info({ count: missed.length, occurrenceIds: missed }, 'reminders missed')
    return missed.length
  }

  // --- confirmations ---------------------------------------------------------------------------

  #window(dueAt: string): { from: number; to: number } {
    const due = Date.parse(dueAt)
    return { from: due - this.#earlyMs, to: due + this.#graceMs }
  }

  /**
   * Confirms one occurrence (the API: a patient for themselves, a provider on their behalf).
   * `takenAt` must lie in the dose's window: earlyMinutes before it was due to graceMinutes after.
   * Confirming a confirmed dose again answers its state and changes nothing.
   */
  confirm(occurrenceId: string, c: Omit<Confirmation, 'takenMs'> & { takenAt?: string }): ConfirmResult {
    const row = this.#q.occurrence!.get(occurrenceId) as OccurrenceRow | undefined
    if (!row) throw new RpmError('RPM_ERR_NOT_FOUND', `no reminder occurrence ${occurrenceId}`, { details: { field: 'occurrenceId' } })
    if (row.kind !== 'medication' || row.scheduled !== 1) {
      throw new RpmError('RPM_ERR_BAD_REQUEST', row.kind !== 'medication'
        ? `occurrence ${occurrenceId} is a measurement reminder: a ${row.reading_type ?? ''} reading completes it`
        : `occurrence ${occurrenceId} is a dose taken when none was due; it is already recorded`, { details: { field: 'occurrenceId' } })
    }
    if (row.status === 'taken') return { occurrence: toOccurrence(row), changed: false }
    const now = this.#clock.now()
    let takenMs = now
    if (c.takenAt !== undefined) {
      takenMs = ISO_INSTANT.test(c.takenAt) ? Date.parse(c.takenAt) : Number.NaN
      if (Number.isNaN(takenMs)) throw new RpmError('RPM_ERR_BAD_REQUEST', 'takenAt must be an ISO-8601 date-time with a zone, e.g. 2026-03-08T08:05:00Z', { details: { field: 'takenAt' } })
      if (takenMs > now + MAX_FUTURE_SKEW_MS) throw new RpmError('RPM_ERR_BAD_REQUEST', 'takenAt must not be in the future', { details: { field: 'takenAt' } })
    }
    const w = this.#window(row.due_at)
    if (takenMs < w.from || takenMs > w.to) {
      const span = `from ${iso(w.from)} to ${iso(w.to)}`
      if (c.takenAt !== undefined) {
        throw new RpmError('RPM_ERR_BAD_REQUEST', `takenAt must be within this dose's window, ${span}`, { details: { field: 'takenAt' } })
      }
      throw new RpmError('RPM_ERR_CONFLICT', `the dose due at ${row.due_at} is past its window (${span})${row.status === 'missed' ? ' and recorded as missed' : ''}: give takenAt if it was taken in time`, { details: { field: 'takenAt' } })
    }
    const changed = this.#complete(row, { source: c.source, by: c.by, takenMs })
    return { occurrence: toOccurrence(this.#q.occurrence!.get(occurrenceId) as OccurrenceRow), changed }
  }

  /**
   * Marks a pending (or missed, reported late) occurrence taken or done, posts the
   * acknowledgement for a dose, and announces it after the commit. False when it was already
   * confirmed: nothing is posted twice.
   */
  #complete(row: OccurrenceRow, c: Confirmation): boolean {
    const status = row.kind === 'medication' ? 'taken' : 'done'
    const now = this.#clock.now()
    const after = this.#sqlite.transaction(() => {
      if (this.#q.complete!.run(status, iso(now), iso(c.takenMs), c.by, c.source, row.id).changes === 0) return null
      return this.#acknowledge(row, c)
    }).immediate()
    if (!after) return false
    after()
    return true
  }

  /** Inside the confirming transaction: the thread acknowledgement. Returns what to announce after it. */
  #acknowledge(row: Pick<OccurrenceRow, 'id' | 'schedule_id' | 'patient_id' | 'kind' | 'medication' | 'dose' | 'due_at' | 'local_time' | 'scheduled'>, c: Confirmation): () => void {
    const base = { patientId: row.patient_id, scheduleId: row.schedule_id }
    if (row.kind !== 'medication') {
      this.#log.debug({ ...base, occurrenceId: row.id, source: c.source }, 'measurement reminder done')
      return () => {}
    }
    const scheduled = row.scheduled === 1
    const text = scheduled
      ? `Marked as taken: ${doseName(row)} (${row.local_time})`
      : `Recorded ${doseName(row)} taken at ${row.local_time} (no dose was due then)`
    const posted = this.#post(row.patient_id, text, {
      event: 'taken',
      reminder: { occurrenceId: row.id, scheduleId: row.schedule_id, kind: row.kind, medication: row.medication, dose: row.dose, dueAt: row.due_at, scheduled, takenAt: iso(c.takenMs), source: c.source },
    }, `reminder-taken:${row.id}`)
    const devices = (this.#q.devices!.all(row.patient_id) as Array<{ id: string }>).map((d) => d.id)
    return () => {
      posted.announce()
      this.#bus.emit('dose.taken', {
        patientId: row.patient_id,
        // A dose taken when none was due belongs to no occurrence.
        occurrenceId: scheduled ? row.id : null,
        scheduleId: row.schedule_id,
        medicationId: row.schedule_id,
        at: iso(c.takenMs),
        source: c.source,
      })
      // Devices showing the reminder can clear it.
      if (scheduled) {
        const payload = JSON.stringify({ type: 'reminder_confirmed', occurrenceId: row.id, scheduleId: row.schedule_id, status: 'taken' })
        for (const deviceId of devices) this.#bus.emit('device.command', { deviceId, payload })
      }
      this.#log.info({ ...base, occurrenceId: row.id, source: c.source, scheduled }, 'dose taken')
    }
  }

  /**
   * A dose (or reading) at `takenMs` for a schedule, without naming the occurrence. Candidates
   * are the pending or missed occurrences whose window holds it, and a slot the reminder clock
   * has not reached yet (up to earlyMinutes ahead: recorded as confirmed, so its reminder is not
   * sent). The nearest candidate is confirmed, unless an occurrence already confirmed is nearer
   * still: then it is a second press, and nothing changes. With no candidate and nothing
   * confirmed nearby, a medication dose is recorded as taken when none was due (scheduled =
   * false); a reading outside every window is just a reading.
   */
  #confirmForSchedule(s: ScheduleRow, c: Confirmation): ConfirmResult | null {
    const t = c.takenMs
    const distance = (dueAt: string) => Math.abs(Date.parse(dueAt) - t)
    const nearestFirst = (a: { dueAt: string }, b: { dueAt: string }) => distance(a.dueAt) - distance(b.dueAt)
    const rows = (this.#q.inWindow!.all(s.id, iso(t - this.#graceMs), iso(t + this.#earlyMs)) as OccurrenceRow[]).map((row) => ({ dueAt: row.due_at, row }))
    const confirmed = rows.filter((r) => r.row.status === 'taken' || r.row.status === 'done').sort(nearestFirst)[0]
    const candidates: Array<{ dueAt: string; confirm: () => ConfirmResult }> = []
    const open = rows.filter((r) => r.row.status === 'pending' || r.row.status === 'missed').sort(nearestFirst)[0]
    if (open) {
      candidates.push({
        dueAt: open.dueAt,
        confirm: () => {
          const changed = this.#complete(open.row, c)
          return { occurrence: toOccurrence(this.#q.occurrence!.get(open.row.id) as OccurrenceRow), changed }
        },
      })
    }
    const zone = zoneOf(s)
    // Only a slot the reminder clock has not reached (next_due_at or later): one it passed
    // without an occurrence did not exist then (the schedule is newer, or was inactive). Mostly
    // there is none within earlyMinutes, and no time-zone work is done.
    const nextMs = s.next_due_at === null ? null : Date.parse(s.next_due_at)
    if (s.active === 1 && nextMs !== null && nextMs <= t + this.#earlyMs && isTimeZone(zone)) {
      const from = Math.max(t - this.#graceMs - 1, nextMs - 1, Date.parse(s.created_at))
      const slot = dueInstants(timesOf(s), from, t + this.#earlyMs).sort(nearestFirst)[0]
      if (slot) candidates.push({ dueAt: slot.dueAt, confirm: () => this.#record(s, c, { ...slot, scheduled: true }) })
    }
    // Stable sort: on a tie the occurrence already reminded about wins over a slot not yet due.
    const best = candidates.sort(nearestFirst)[0]
    if (best && (!confirmed || distance(best.dueAt) < distance(confirmed.dueAt))) return best.confirm()
    if (confirmed) return { occurrence: toOccurrence(confirmed.row), changed: false }
    if (s.kind !== 'medication') return null
    return this.#record(s, c, { dueAt: iso(t), ...localDateTime(t, isTimeZone(zone) ? zone : 'UTC'), scheduled: false })
  }

  /** A confirmed occurrence without a reminder: an early confirmation, or an unscheduled dose. */
  #record(s: ScheduleRow, c: Confirmation, slot: { dueAt: string; localDate: string; localTime: string; scheduled: boolean }): ConfirmResult {
    const now = iso(this.#clock.now())
    const row: ReminderOccurrenceTable = {
      id: newId('occ'),
      schedule_id: s.id,
      patient_id: s.patient_id,
      due_at: slot.dueAt,
      local_date: slot.localDate,
      local_time: slot.localTime,
      status: s.kind === 'medication' ? 'taken' : 'done',
      scheduled: slot.scheduled ? 1 : 0,
      posted_at: null,
      message_id: null,
      confirmed_at: now,
      taken_at: iso(c.takenMs),
      confirmed_by: c.by,
      source: c.source,
      missed_at: null,
    }
    const after = this.#sqlite.transaction(() => {
      if (this.#q.insert!.run(row).changes === 0) return null
      return this.#acknowledge({ ...row, kind: s.kind, medication: s.medication, dose: s.dose }, c)
    }).immediate()
    if (after) after()
    // Unique (schedule, due): a redelivered event with the same takenAt finds the first record.
    const stored = this.#q.byDue!.get(s.id, slot.dueAt) as OccurrenceRow
    return { occurrence: toOccurrence(stored), changed: after !== null }
  }

  /**
   * `{"type":"medication_taken","medicationId":"<schedule id>","occurrenceId"?,"takenAt"?}` from a
   * patient's device. Handled before the PUBACK; a payload the gateway cannot use is answered on
   * the device's errors topic (other event types belong to the thread bridge).
   */
  #onDeviceEvent(e: GatewayEvents['device.event'][0]): void {
    let body: unknown
    try {
      body = JSON.parse(e.payload.toString('utf8'))
    } catch {
      return // the bridge answers unparseable events
    }
    if (typeof body !== 'object' || body === null || (body as { type?: unknown }).type !== 'medication_taken') return
    const refuse = (path: string, message: string): void => {
      this.#bus.emit('device.error', { deviceId: e.deviceId, code: 'RPM_ERR_EVENT_INVALID', message, path })
    }
    const { medicationId, occurrenceId, takenAt } = body as { medicationId?: unknown; occurrenceId?: unknown; takenAt?: unknown }
    if (typeof medicationId !== 'string' || !ID.test(medicationId)) return refuse('/medicationId', 'medicationId must be the id of a medication reminder')
    if (occurrenceId !== undefined && (typeof occurrenceId !== 'string' || !ID.test(occurrenceId))) return refuse('/occurrenceId', 'occurrenceId must be a reminder occurrence id')
    if (takenAt !== undefined && (typeof takenAt !== 'string' || !ISO_INSTANT.test(takenAt))) return refuse('/takenAt', 'takenAt must be an ISO-8601 date-time with a zone')
    const s = this.records.scheduleRow(medicationId)
    if (!s || s.patient_id !== e.patientId || s.kind !== 'medication') return refuse('/medicationId', `no medication reminder ${medicationId} for this device's patient`)
    const now = this.#clock.now()
    const takenMs = takenAt === undefined ? now : Date.parse(takenAt)
    if (takenMs > now + MAX_FUTURE_SKEW_MS) return refuse('/takenAt', 'takenAt must not be in the future')
    const by = `device:${e.deviceId}`
    if (occurrenceId !== undefined) {
      const row = this.#q.occurrence!.get(occurrenceId) as OccurrenceRow | undefined
      if (!row || row.schedule_id !== s.id) return refuse('/occurrenceId', `no occurrence ${occurrenceId} of medication reminder ${s.id}`)
      try {
        this.confirm(occurrenceId, { source: 'device', by, ...(takenAt !== undefined ? { takenAt } : {}) })
      } catch (err) {
        return refuse('/takenAt', (err as Error).message)
      }
      return
    }
    this.#confirmForSchedule(s, { source: 'device', by, takenMs })
  }

  /** A patient's reply to a reminder message that says they took it. */
  #onMessage({ patientId, message }: GatewayEvents['message.posted'][0]): void {
    if (message.kind !== 'text' || message.from.role !== 'patient' || message.replyTo === null || message.text === null) return
    const row = this.records.occurrenceByMessage(message.replyTo)
    if (!row || row.patient_id !== patientId || row.kind !== 'medication') return
    if (!AFFIRMATIVE.test(message.text.trim())) return
    if (row.status === 'taken') return // already confirmed: no second acknowledgement
    const by = message.from.userId ?? `device:${message.from.deviceId ?? 'unknown'}`
    const now = this.#clock.now()
    const w = this.#window(row.due_at)
    if (now >= w.from && now <= w.to) {
      this.#complete(row, { source: 'thread', by, takenMs: now })
      return
    }
    // Too late to count as taken on time from a reply; say so rather than stay silent.
    const posted = this.#sqlite.transaction(() => this.#post(patientId, `This dose (${row.local_time}) can no longer be marked as taken here. Please tell your care team when you took it.`, {
      event: 'not_recorded',
      reminder: { occurrenceId: row.id, scheduleId: row.schedule_id, dueAt: row.due_at, reason: 'outside_window' },
    }, `reminder-late-reply:${message.id}`)).immediate()
    posted.announce()
  }

  /**
   * Readings complete the measurement reminders of their type whose window holds measuredAt. A
   * reading of a patient and type without such a schedule costs a map lookup.
   */
  #onReadings(readings: GatewayEvents['reading.accepted'][0]): void {
    this.#syncMeasuring()
    if (this.#measuring.size === 0) return
    const schedulesFor = new Map<string, ScheduleRow[]>()
    for (const r of readings) {
      if (!this.#measuring.get(r.patientId)?.has(r.type)) continue
      const key = `${r.patientId}\u0000${r.type}`
      let schedules = schedulesFor.get(key)
      if (!schedules) {
        schedules = this.#q.measurementSchedules!.all(r.patientId, r.type) as ScheduleRow[]
        schedulesFor.set(key, schedules)
      }
      for (const s of schedules) this.#confirmForSchedule(s, { source: 'reading', by: `device:${r.deviceId}`, takenMs: Date.parse(r.measuredAt) })
    }
  }

  // --- which patients have measurement schedules ---------------------------------------------

  /** Reloads the measurement index when another connection (the CLI) has written to the database. */
  #syncMeasuring(): void {
    const version = this.#q.dataVersion!.get() as number
    if (version === this.#dataVersion) return
    this.#dataVersion = version
    this.#measuring.clear()
    for (const { patient_id, reading_type } of this.#q.measuring!.all() as Array<{ patient_id: string; reading_type: string }>) {
      const types = this.#measuring.get(patient_id) ?? new Set<string>()
      types.add(reading_type)
      this.#measuring.set(patient_id, types)
    }
  }

  /** A schedule was created or changed through this gateway's records. */
  #scheduleChanged(row: ScheduleRow): void {
    if (row.kind !== 'measurement') return
    const types = new Set((this.#q.measuringOf!.all(row.patient_id) as Array<{ reading_type: string }>).map((r) => r.reading_type))
    if (types.size > 0) this.#measuring.set(row.patient_id, types)
    else this.#measuring.delete(row.patient_id)
  }
}

/**
 * The devices/{id}/commands payload of a reminder. Devices show it once per occurrenceId: it is
 * sent again to a device that connects while the dose is still due (see #redeliver).
 */
function reminderCommand(o: Pick<OccurrenceRow, 'id' | 'schedule_id' | 'kind' | 'medication' | 'dose' | 'reading_type' | 'due_at' | 'local_time'>, text: string, redelivered = false): string {
  const command: Record<string, unknown> = {
    type: 'reminder',
    occurrenceId: o.id,
    scheduleId: o.schedule_id,
    kind: o.kind,
    text,
    dueAt: o.due_at,
    localTime: o.local_time,
  }
  if (o.kind === 'medication') {
    command.medicationId = o.schedule_id
    command.medication = o.medication
    if (o.dose) command.dose = o.dose
  } else {
    command.readingType = o.reading_type
  }
  if (redelivered) command.redelivered = true
  return JSON.stringify(command)
}

/** Whether an MQTT topic filter (with + and #) matches a topic. */
function mqttMatch(filter: string, topic: string): boolean {
  const f = filter.split('/')
  const t = topic.split('/')
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true
    if (i >= t.length || (f[i] !== '+' && f[i] !== t[i])) return false
  }
  return f.length === t.length
}
