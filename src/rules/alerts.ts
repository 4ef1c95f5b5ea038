import { randomBytes } from 'node:crypto'
import type { Statement } from 'better-sqlite3'
import type { Clock } from '../clock.ts'
import type { GatewayConfig } from '../config/load.ts'
import { RpmError } from '../errors.ts'
import type { EventBus } from '../events.ts'
import type { Store } from '../store/db.ts'
import type { AlertEventTable, AlertTable, Severity } from '../store/schema.ts'
import { describeValues } from './format.ts'
import { SEVERITIES, severityRank, worse, type Alert, type AlertChange } from './types.ts'

/** Posts a system message in the patient's thread inside the current transaction; returns what announces it. */
export type PostAlertMessage = (patientId: string, text: string, data: Record<string, unknown>) => () => void

export const TIER_NAMES = ['care_team', 'on_call', 'admin'] as const
export type TierName = (typeof TIER_NAMES)[number]

/** What to tell the rest of the gateway once the transaction that made a change has committed. */
export interface AlertEffect {
  alert: Alert
  change: AlertChange
  /** The care team is to be told now (a new alert, or a worse one). */
  notify: boolean
  announce?: () => void
  escalation?: { tier: number; tierName: TierName; reminder: number; recipients: string[]; added: string[] }
}

/** An alert people are to be told of now; see the bus event `alert.sounded`. */
export interface AlertSounding {
  alert: Alert
  change: 'raised' | 'severity_raised' | 'escalated'
  /** Unique per sounding of this alert. */
  step: string
  recipients: string[]
  escalation?: AlertEffect['escalation']
}

/** What a rule concluded about one patient, for `raise`. */
export interface RaiseInput {
  patientId: string
  rule: { id: string; title: string; kind: string; cooldownMs?: number }
  readingType: string | null
  severity: Severity
  values: Record<string, unknown>
  readingId?: number
  measuredAt?: string
}

export interface AlertDetail extends Alert {
  events: Array<{ id: number; at: string; type: string; actor: string | null; details: Record<string, unknown> | null }>
  recipients: Array<{ userId: string; tier: number; addedAt: string }>
}

export function toAlert(r: AlertTable): Alert {
  return {
    id: r.id,
    patientId: r.patient_id,
    ruleId: r.rule_id,
    ruleKind: r.rule_kind,
    title: r.title,
    readingType: r.reading_type,
    severity: r.severity,
    status: r.status,
    openedAt: r.opened_at,
    updatedAt: r.updated_at,
    count: r.count,
    lastReadingId: r.last_reading_id,
    lastMeasuredAt: r.last_measured_at,
    lastValues: r.last_values_json ? (JSON.parse(r.last_values_json) as Record<string, unknown>) : null,
    acknowledgedAt: r.acknowledged_at,
    acknowledgedBy: r.acknowledged_by,
    resolvedAt: r.resolved_at,
    resolvedBy: r.resolved_by,
    resolution: r.resolution,
    note: r.note,
    snoozedUntil: r.snoozed_until,
    snoozedBy: r.snoozed_by,
    snoozeSeverity: r.snooze_severity,
    tier: r.tier,
    nextEscalationAt: r.next_escalation_at,
    reminders: r.reminders,
  }
}

const key = (patientId: string, ruleId: string) => `${patientId}\u0000${ruleId}`
const iso = (ms: number) => new Date(ms).toISOString()
const ms = (t: string) => Date.parse(t)
const label = (s: Severity) => s[0]!.toUpperCase() + s.slice(1)

/**
 * The alert lifecycle, persisted: open -> acknowledged -> resolved, one unresolved alert per
 * patient and rule, every change and every suppression recorded in alert_events with its
 * reason, escalation state in the alert row so a restart rebuilds it from the database.
 *
 * The reading path calls `raise` / `clear` inside the journal's transaction; open alerts are
 * kept in memory so a normal reading costs no query. Changes made in a transaction are staged
 * (`begin`, `end`, then `commit` once it committed) so a rolled-back commit leaves the cache as it was.
 */
export class AlertStore {
  readonly #open = new Map<string, AlertTable>()
  /** Changes staged by the current transaction: a row, or null for "no longer open". */
  #staged = new Map<string, AlertTable | null>()
  readonly #q: Record<string, Statement>
  readonly #idSuffix = randomBytes(3).toString('hex')
  /** Escalation steps that failed (logged by the engine, tried again next tick). */
  failures: Array<{ alertId: string; err: string }> = []
  #counter = 0

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly config: GatewayConfig['alerts'],
    private readonly post: PostAlertMessage,
    /** Told inside the transaction of every raise, worse severity and escalation step (the notification outbox). */
    private readonly sound: (e: AlertSounding) => void = () => {},
  ) {
    const p = (sql: string) => store.sqlite.prepare(sql)
    this.#q = {
      unresolved: p("SELECT * FROM alerts WHERE status <> 'resolved'"),
      byId: p('SELECT * FROM alerts WHERE id = ?'),
      lastResolved: p("SELECT * FROM alerts WHERE patient_id = ? AND rule_id = ? AND status = 'resolved' ORDER BY resolved_at DESC LIMIT 1"),
      insert: p(`INSERT INTO alerts (id, patient_id, rule_id, rule_kind, title, reading_type, severity, status, opened_at, updated_at, count,
        first_reading_id, last_reading_id, last_measured_at, last_values_json, acknowledged_at, acknowledged_by, resolved_at, resolved_by,
        resolution, note, snoozed_until, snoozed_by, snooze_severity, tier, escalation_started_at, last_notified_at, next_escalation_at, reminders)
        VALUES (@id, @patient_id, @rule_id, @rule_kind, @title, @reading_type, @severity, @status, @opened_at, @updated_at, @count,
        @first_reading_id, @last_reading_id, @last_measured_at, @last_values_json, @acknowledged_at, @acknowledged_by, @resolved_at, @resolved_by,
        @resolution, @note, @snoozed_until, @snoozed_by, @snooze_severity, @tier, @escalation_started_at, @last_notified_at, @next_escalation_at, @reminders)`),
      update: p(`UPDATE alerts SET severity = @severity, status = @status, updated_at = @updated_at, count = @count, last_reading_id = @last_reading_id,
        last_measured_at = @last_measured_at, last_values_json = @last_values_json, acknowledged_at = @acknowledged_at, acknowledged_by = @acknowledged_by,
        resolved_at = @resolved_at, resolved_by = @resolved_by, resolution = @resolution, note = @note, snoozed_until = @snoozed_until,
        snoozed_by = @snoozed_by, snooze_severity = @snooze_severity, tier = @tier, escalation_started_at = @escalation_started_at,
        last_notified_at = @last_notified_at, next_escalation_at = @next_escalation_at, reminders = @reminders
        WHERE id = @id AND updated_at = @expected_updated_at`),
      event: p('INSERT INTO alert_events (alert_id, at, type, actor, details_json) VALUES (?, ?, ?, ?, ?)'),
      events: p('SELECT * FROM alert_events WHERE alert_id = ? ORDER BY id'),
      due: p("SELECT * FROM alerts WHERE next_escalation_at IS NOT NULL AND next_escalation_at <= ? AND status = 'open' ORDER BY next_escalation_at LIMIT 200"),
      careTeam: p("SELECT c.user_id FROM care_team c JOIN users u ON u.id = c.user_id WHERE c.patient_id = ? AND u.status = 'active' ORDER BY c.user_id"),
      onCall: p("SELECT DISTINCT o.user_id FROM on_call o JOIN users u ON u.id = o.user_id WHERE o.starts_at <= ? AND o.ends_at > ? AND u.status = 'active' ORDER BY o.user_id"),
      admins: p("SELECT id FROM users WHERE role = 'admin' AND status = 'active' ORDER BY id"),
      recipients: p('SELECT user_id, tier, added_at FROM alert_recipients WHERE alert_id = ? ORDER BY tier, user_id'),
      addRecipient: p('INSERT INTO alert_recipients (alert_id, user_id, patient_id, tier, added_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING'),
      userName: p('SELECT name FROM users WHERE id = ?'),
    }
    for (const row of this.#q.unresolved!.all() as AlertTable[]) this.#open.set(key(row.patient_id, row.rule_id), row)
  }

  // --- staging ---------------------------------------------------------------------------------

  /** Starts staging a transaction's changes; returns the stage to commit once the transaction has. */
  begin(): Map<string, AlertTable | null> {
    this.#staged = new Map()
    return this.#staged
  }

  /** Stops staging (the caller holds the stage until its transaction commits). */
  end(): void {
    this.#staged = new Map()
  }

  /** The staged changes of one patient, to put back if that patient's part of the transaction rolls back. */
  stagedOf(patientId: string): Map<string, AlertTable | null> {
    const prefix = key(patientId, '')
    return new Map([...this.#staged].filter(([k]) => k.startsWith(prefix)))
  }

  /** One patient's savepoint rolled back: their staged changes are what they were at `snapshot`. */
  restoreStaged(patientId: string, snapshot: Map<string, AlertTable | null>): void {
    const prefix = key(patientId, '')
    for (const k of [...this.#staged.keys()]) if (k.startsWith(prefix)) this.#staged.delete(k)
    for (const [k, v] of snapshot) this.#staged.set(k, v)
  }

  /** A transaction committed: its staged changes become the cache. */
  commit(stage: Map<string, AlertTable | null>): void {
    for (const [k, row] of stage) {
      if (row) this.#open.set(k, row)
      else this.#open.delete(k)
    }
  }

  /** The unresolved alert of a patient and rule, as the current transaction sees it. */
  openFor(patientId: string, ruleId: string): AlertTable | undefined {
    const k = key(patientId, ruleId)
    const staged = this.#staged.get(k)
    if (staged !== undefined) return staged ?? undefined
    return this.#open.get(k)
  }

  /** Every unresolved alert (committed), for sweeps. */
  unresolved(): AlertTable[] {
    return [...this.#open.values()]
  }

  /** Alerts open or acknowledged (committed). */
  unresolvedCount(): number {
    return this.#open.size
  }

  #stage(row: AlertTable): void {
    this.#staged.set(key(row.patient_id, row.rule_id), row.status === 'resolved' ? null : row)
  }

  /** Runs `work` in an IMMEDIATE transaction of its own, staging its changes until it commits. */
  run<T>(work: () => T): T {
    const stage = this.begin()
    try {
      const out = this.store.sqlite.transaction(work).immediate()
      this.end()
      this.commit(stage)
      return out
    } catch (err) {
      this.end()
      throw err
    }
  }

  // --- writing -----------------------------------------------------------------------------------

  #id(): string {
    this.#counter = (this.#counter + 1) % 1_679_616
    return `alt-${this.clock.now().toString(36).padStart(9, '0')}${this.#counter.toString(36).padStart(4, '0')}${this.#idSuffix}`
  }

  #event(alertId: string, type: string, actor: string | null, details?: Record<string, unknown>): void {
    this.#q.event!.run(alertId, iso(this.clock.now()), type, actor, details ? JSON.stringify(details) : null)
  }

  #write(row: AlertTable, expectedUpdatedAt: string): void {
    const info = this.#q.update!.run({ ...row, expected_updated_at: expectedUpdatedAt })
    if (info.changes !== 1) throw new RpmError('RPM_ERR_CONFLICT', 'the alert changed meanwhile: read it again', { details: { field: 'alertId' } })
    this.#stage(row)
  }

  /** When the next escalation step (a further tier or a repeat) is due, or null. */
  nextEscalation(row: Pick<AlertTable, 'severity' | 'tier' | 'escalation_started_at' | 'last_notified_at'>): string | null {
    const policy = this.config.escalation[row.severity]
    const tiers = [...policy.tierMinutes].sort((a, b) => a - b)
    const candidates: number[] = []
    if (row.tier < tiers.length) candidates.push(ms(row.escalation_started_at) + tiers[row.tier]! * 60_000)
    if (policy.repeatMinutes > 0) candidates.push(ms(row.last_notified_at) + policy.repeatMinutes * 60_000)
    return candidates.length > 0 ? iso(Math.min(...candidates)) : null
  }

  #message(row: AlertTable, event: string, text: string, extra: Record<string, unknown> = {}): () => void {
    const alert = toAlert(row)
    return this.post(row.patient_id, text, {
      event,
      alert: {
        id: alert.id, ruleId: alert.ruleId, title: alert.title, severity: alert.severity, status: alert.status,
        readingType: alert.readingType, values: alert.lastValues, measuredAt: alert.lastMeasuredAt, openedAt: alert.openedAt, count: alert.count,
      },
      actions: row.status === 'resolved' ? [] : row.status === 'open' ? ['acknowledge', 'resolve', 'snooze'] : ['resolve'],
      ...extra,
    })
  }

  #name(userId: string): string {
    return (this.#q.userName!.get(userId) as { name: string } | undefined)?.name ?? 'a team member'
  }

  /**
   * A rule raised `severity` for a patient (inside the caller's transaction). A repeat updates
   * the open alert; a worse severity raises it; a snooze or a cooldown holds back the
   * notification, never the record.
   */
  raise(input: RaiseInput): AlertEffect[] {
    const now = this.clock.now()
    const at = iso(now)
    const valuesJson = JSON.stringify(input.values)
    const what = describeValues(input.readingType, input.values)
    const existing = this.openFor(input.patientId, input.rule.id)
    if (existing) {
      const row: AlertTable = {
        ...existing,
        updated_at: at,
        count: existing.count + 1,
        last_reading_id: input.readingId ?? existing.last_reading_id,
        last_measured_at: input.measuredAt ?? existing.last_measured_at,
        last_values_json: valuesJson,
      }
      if (!worse(input.severity, existing.severity)) {
        this.#write(row, existing.updated_at)
        this.#event(row.id, 'suppressed', 'system', { reason: 'duplicate', severity: input.severity, readingId: input.readingId ?? null })
        return [{ alert: toAlert(row), change: 'repeated', notify: false }]
      }
      const snoozeHolds = existing.snoozed_until !== null && ms(existing.snoozed_until) > now && !worse(input.severity, existing.snooze_severity ?? 'info')
      Object.assign(row, {
        severity: input.severity,
        status: 'open',
        tier: existing.tier,
        reminders: 0,
        escalation_started_at: at,
        last_notified_at: at,
      })
      if (existing.snoozed_until !== null && !snoozeHolds) {
        Object.assign(row, { snoozed_until: null, snoozed_by: null, snooze_severity: null })
        this.#event(row.id, 'snooze_ended', 'system', { reason: 'a worse reading', severity: input.severity })
      }
      row.next_escalation_at = snoozeHolds ? existing.snoozed_until : this.nextEscalation(row)
      this.#write(row, existing.updated_at)
      this.#event(row.id, 'severity_raised', 'system', { from: existing.severity, to: input.severity, readingId: input.readingId ?? null, reopened: existing.status === 'acknowledged' })
      if (snoozeHolds) this.#event(row.id, 'suppressed', 'system', { reason: 'snoozed', what: 'notification', until: existing.snoozed_until })
      const announce = this.#message(row, 'severity_raised', `${label(input.severity)}: ${input.rule.title} — ${what}`, { previousSeverity: existing.severity })
      return [this.#sounded(row, { alert: toAlert(row), change: 'severity_raised', notify: !snoozeHolds, announce })]
    }

    const last = this.#q.lastResolved!.get(input.patientId, input.rule.id) as AlertTable | undefined
    // Never for urgent or critical: a cooldown holds back only routine repeats of what a provider just handled.
    if (
      last && input.rule.cooldownMs !== undefined && severityRank(input.severity) <= severityRank('warning') &&
      last.resolution === 'manual' && last.resolved_at !== null &&
      now - ms(last.resolved_at) < input.rule.cooldownMs && !worse(input.severity, last.severity)
    ) {
      // The provider resolved this rule's alert a moment ago: recorded against it, not raised again.
      this.#event(last.id, 'suppressed', 'system', {
        reason: 'cooldown', severity: input.severity, readingId: input.readingId ?? null, values: input.values,
        until: iso(ms(last.resolved_at) + input.rule.cooldownMs),
      })
      return []
    }
    const carried = last && last.snoozed_until !== null && ms(last.snoozed_until) > now && !worse(input.severity, last.snooze_severity ?? 'info') ? last : undefined
    const row: AlertTable = {
      id: this.#id(),
      patient_id: input.patientId,
      rule_id: input.rule.id,
      rule_kind: input.rule.kind,
      title: input.rule.title,
      reading_type: input.readingType,
      severity: input.severity,
      status: 'open',
      opened_at: at,
      updated_at: at,
      count: 1,
      first_reading_id: input.readingId ?? null,
      last_reading_id: input.readingId ?? null,
      last_measured_at: input.measuredAt ?? null,
      last_values_json: valuesJson,
      acknowledged_at: null,
      acknowledged_by: null,
      resolved_at: null,
      resolved_by: null,
      resolution: null,
      note: null,
      snoozed_until: carried?.snoozed_until ?? null,
      snoozed_by: carried?.snoozed_by ?? null,
      snooze_severity: carried?.snooze_severity ?? null,
      tier: 0,
      escalation_started_at: at,
      last_notified_at: at,
      next_escalation_at: null,
      reminders: 0,
    }
    row.next_escalation_at = carried ? carried.snoozed_until : this.nextEscalation(row)
    this.#q.insert!.run(row)
    this.#stage(row)
    this.#event(row.id, 'raised', 'system', { severity: input.severity, readingId: input.readingId ?? null })
    if (carried) this.#event(row.id, 'suppressed', 'system', { reason: 'snoozed', what: 'notification', until: carried.snoozed_until, snoozedOn: carried.id })
    const announce = this.#message(row, 'raised', `${label(input.severity)}: ${input.rule.title} — ${what}`)
    return [this.#sounded(row, { alert: toAlert(row), change: 'raised', notify: !carried, announce })]
  }

  /** Replaces what an unresolved alert shows as matched (inside the caller's transaction), without a message. */
  updateValues(existing: AlertTable, values: Record<string, unknown>): void {
    const row: AlertTable = { ...existing, updated_at: iso(this.clock.now()), last_values_json: JSON.stringify(values) }
    this.#write(row, existing.updated_at)
  }

  /** The rule's clear condition holds: the unresolved alert resolves itself with an "all clear". */
  clear(patientId: string, ruleId: string, readingType: string | null, values: Record<string, unknown>, reading?: { id: number; measuredAt: string }): AlertEffect[] {
    const existing = this.openFor(patientId, ruleId)
    if (!existing) return []
    const at = iso(this.clock.now())
    const row: AlertTable = {
      ...existing,
      status: 'resolved',
      updated_at: at,
      resolved_at: at,
      resolved_by: null,
      resolution: 'auto',
      next_escalation_at: null,
      last_values_json: JSON.stringify(values),
      ...(reading ? { last_reading_id: reading.id, last_measured_at: reading.measuredAt } : {}),
    }
    this.#write(row, existing.updated_at)
    this.#event(row.id, 'resolved', 'system', { resolution: 'auto', readingId: reading?.id ?? null })
    const announce = this.#message(row, 'resolved', `All clear: ${existing.title} — ${describeValues(readingType, values)}`)
    return [{ alert: toAlert(row), change: 'resolved', notify: false, announce }]
  }

  /**
   * The rule no longer applies to this patient (disabled for them, or removed from the rule
   * files): its unresolved alert resolves, saying why, rather than escalating forever.
   */
  retire(patientId: string, ruleId: string, reason: string): AlertEffect[] {
    const existing = this.openFor(patientId, ruleId)
    if (!existing) return []
    const at = iso(this.clock.now())
    const row: AlertTable = { ...existing, status: 'resolved', updated_at: at, resolved_at: at, resolved_by: null, resolution: 'auto', note: reason, next_escalation_at: null }
    this.#write(row, existing.updated_at)
    this.#event(row.id, 'resolved', 'system', { resolution: 'auto', reason })
    const announce = this.#message(row, 'resolved', `No longer monitored: ${existing.title} — ${reason}`, { reason })
    return [{ alert: toAlert(row), change: 'resolved', notify: false, announce }]
  }

  // --- provider actions (each in its own transaction) ------------------------------------------

  #get(alertId: string): AlertTable {
    const row = this.#q.byId!.get(alertId) as AlertTable | undefined
    if (!row) throw new RpmError('RPM_ERR_NOT_FOUND', `no alert ${alertId}`, { details: { field: 'alertId' } })
    return row
  }

  get(alertId: string): Alert | undefined {
    const row = this.#q.byId!.get(alertId) as AlertTable | undefined
    return row ? toAlert(row) : undefined
  }

  detail(alertId: string): AlertDetail {
    const row = this.#get(alertId)
    const events = (this.#q.events!.all(alertId) as AlertEventTable[]).map((e) => ({
      id: e.id as unknown as number, at: e.at, type: e.type, actor: e.actor, details: e.details_json ? (JSON.parse(e.details_json) as Record<string, unknown>) : null,
    }))
    const recipients = (this.#q.recipients!.all(alertId) as Array<{ user_id: string; tier: number; added_at: string }>).map((r) => ({ userId: r.user_id, tier: r.tier, addedAt: r.added_at }))
    return { ...toAlert(row), events, recipients }
  }

  /**
   * A provider acts on the alert as they saw it: when a worse reading raised its severity in the
   * meantime, the action is refused, so nobody acknowledges a critical alert they saw as urgent.
   */
  #sameAsSeen(existing: AlertTable, seen: Severity | undefined): void {
    if (seen === undefined || !worse(existing.severity, seen)) return
    throw new RpmError('RPM_ERR_CONFLICT', `the alert is ${existing.severity} now, worse than the ${seen} you saw: look at it again`, {
      details: { field: 'severity', current: existing.severity },
    })
  }

  acknowledge(alertId: string, userId: string, note?: string, seen?: Severity): { alert: Alert; effects: AlertEffect[] } {
    return this.run(() => {
      const existing = this.#get(alertId)
      if (existing.status === 'resolved') throw new RpmError('RPM_ERR_CONFLICT', 'the alert is already resolved', { details: { field: 'alertId' } })
      this.#sameAsSeen(existing, seen)
      if (existing.status === 'acknowledged') return { alert: toAlert(existing), effects: [] }
      const at = iso(this.clock.now())
      const row: AlertTable = { ...existing, status: 'acknowledged', updated_at: at, acknowledged_at: at, acknowledged_by: userId, next_escalation_at: null, ...(note ? { note } : {}) }
      this.#write(row, existing.updated_at)
      this.#event(row.id, 'acknowledged', userId, note ? { note } : undefined)
      const announce = this.#message(row, 'acknowledged', `${this.#name(userId)} acknowledged the alert: ${row.title}`, { by: userId })
      return { alert: toAlert(row), effects: [{ alert: toAlert(row), change: 'acknowledged', notify: false, announce }] }
    })
  }

  resolve(alertId: string, userId: string, note: string, seen?: Severity): { alert: Alert; effects: AlertEffect[] } {
    return this.run(() => {
      const existing = this.#get(alertId)
      if (existing.status === 'resolved') throw new RpmError('RPM_ERR_CONFLICT', 'the alert is already resolved', { details: { field: 'alertId' } })
      this.#sameAsSeen(existing, seen)
      const at = iso(this.clock.now())
      const row: AlertTable = {
        ...existing, status: 'resolved', updated_at: at, resolved_at: at, resolved_by: userId, resolution: 'manual', note, next_escalation_at: null,
        acknowledged_at: existing.acknowledged_at ?? at, acknowledged_by: existing.acknowledged_by ?? userId,
      }
      this.#write(row, existing.updated_at)
      this.#event(row.id, 'resolved', userId, { resolution: 'manual', note })
      const announce = this.#message(row, 'resolved', `${this.#name(userId)} resolved the alert: ${row.title}`, { by: userId, note })
      return { alert: toAlert(row), effects: [{ alert: toAlert(row), change: 'resolved', notify: false, announce }] }
    })
  }

  /** Holds back notifications and escalation of this alert (this patient and rule only) for `minutes`. */
  snooze(alertId: string, userId: string, minutes: number, reason?: string, seen?: Severity): { alert: Alert; effects: AlertEffect[] } {
    return this.run(() => {
      const existing = this.#get(alertId)
      if (existing.status === 'resolved') throw new RpmError('RPM_ERR_CONFLICT', 'the alert is already resolved', { details: { field: 'alertId' } })
      this.#sameAsSeen(existing, seen)
      const max = this.config.maxSnoozeMinutes[existing.severity]
      if (!Number.isInteger(minutes) || minutes < 1 || minutes > max) {
        throw new RpmError('RPM_ERR_BAD_REQUEST', `minutes must be from 1 to ${max}: the longest snooze for a ${existing.severity} alert`, { details: { field: 'minutes', max } })
      }
      const now = this.clock.now()
      const at = iso(now)
      const until = iso(now + minutes * 60_000)
      const row: AlertTable = {
        ...existing, updated_at: at, snoozed_until: until, snoozed_by: userId, snooze_severity: existing.severity,
        next_escalation_at: existing.status === 'open' ? until : null,
      }
      this.#write(row, existing.updated_at)
      this.#event(row.id, 'snoozed', userId, { minutes, until, severity: existing.severity, ...(reason ? { reason } : {}) })
      return { alert: toAlert(row), effects: [{ alert: toAlert(row), change: 'snoozed', notify: false }] }
    })
  }

  // --- escalation --------------------------------------------------------------------------------

  /** Tells `sound` (inside this transaction) of a raise, a worse severity or an escalation step. */
  #sounded(row: AlertTable, e: AlertEffect): AlertEffect {
    if (e.notify || e.escalation) {
      const step = e.escalation ? `escalated:${row.tier}.${row.reminders}:${row.updated_at}` : `${e.change}:${row.severity}:${row.updated_at}`
      this.sound({
        alert: e.alert,
        change: e.change as AlertSounding['change'],
        step,
        recipients: e.escalation?.recipients ?? this.#recipientsOf(row),
        ...(e.escalation ? { escalation: e.escalation } : {}),
      })
    }
    return e
  }

  #recipientsOf(row: AlertTable): string[] {
    const care = (this.#q.careTeam!.all(row.patient_id) as Array<{ user_id: string }>).map((r) => r.user_id)
    const added = (this.#q.recipients!.all(row.id) as Array<{ user_id: string }>).map((r) => r.user_id)
    return [...new Set([...care, ...added])]
  }

  /**
   * Moves every alert whose escalation step is due: to the next tier, or one more reminder to
   * the tiers reached. Each step is a compare-and-set on next_escalation_at in its own
   * transaction, so a step fires once even across a restart; steps missed while the gateway was
   * down fire once, late (recorded), at the tier now due.
   */
  escalateDue(): AlertEffect[] {
    const now = this.clock.now()
    const effects: AlertEffect[] = []
    for (const due of this.#q.due!.all(iso(now)) as AlertTable[]) {
      try {
        const effect = this.run(() => this.#escalate(due, now))
        if (effect) effects.push(effect)
      } catch (err) {
        // One alert that cannot move must not hold up the others: it is tried again next tick.
        if (!(err instanceof RpmError && err.code === 'RPM_ERR_CONFLICT')) this.failures.push({ alertId: due.id, err: (err as Error).message })
      }
    }
    return effects
  }

  #escalate(seen: AlertTable, now: number): AlertEffect | undefined {
    const existing = this.#get(seen.id)
    if (existing.next_escalation_at !== seen.next_escalation_at || existing.status !== 'open') return undefined
    const at = iso(now)
    const row: AlertTable = { ...existing, updated_at: at }
    if (existing.snoozed_until !== null) {
      if (ms(existing.snoozed_until) > now) {
        row.next_escalation_at = existing.snoozed_until
        this.#write(row, existing.updated_at)
        return undefined
      }
      Object.assign(row, { snoozed_until: null, snoozed_by: null, snooze_severity: null })
      this.#event(row.id, 'snooze_ended', 'system', { reason: 'expired', until: existing.snoozed_until })
      // Escalation resumes where it was: the next tier counts from the snooze's end, not from the opening.
      row.escalation_started_at = at
      row.last_notified_at = at
      row.next_escalation_at = this.nextEscalation(row)
      this.#write(row, existing.updated_at)
      this.#event(row.id, 'reminded', 'system', { tier: row.tier, reminder: row.reminders, after: 'snooze' })
      return this.#sounded(row, {
        alert: toAlert(row),
        change: 'escalated',
        notify: false,
        escalation: { tier: row.tier, tierName: TIER_NAMES[row.tier]!, reminder: row.reminders, recipients: this.#recipientsOf(row), added: [] },
      })
    }
    const lateMs = Math.max(0, now - ms(existing.next_escalation_at!))
    const tiers = [...this.config.escalation[existing.severity].tierMinutes].sort((a, b) => a - b)
    let tier = existing.tier
    while (tier < tiers.length && ms(existing.escalation_started_at) + tiers[tier]! * 60_000 <= now) tier++
    const added: string[] = []
    const addTier = (t: number): string[] => {
      const users = t === 1
        ? (this.#q.onCall!.all(at, at) as Array<{ user_id: string }>).map((r) => r.user_id)
        : (this.#q.admins!.all() as Array<{ id: string }>).map((r) => r.id)
      for (const u of users) {
        this.#q.addRecipient!.run(row.id, u, row.patient_id, t, at)
        added.push(u)
      }
      return users
    }
    if (tier > existing.tier) {
      for (let t = existing.tier + 1; t <= tier; t++) {
        const users = addTier(t)
        // Nobody on call: the admins are told at once rather than nobody.
        if (t === 1 && users.length === 0) {
          this.#event(row.id, 'escalation_gap', 'system', { tier: t, tierName: TIER_NAMES[t], reason: 'no on-call provider' })
          if (tier === 1) {
            tier = 2
            addTier(2)
            break
          }
        }
      }
      row.tier = tier
      row.reminders = 0
    } else {
      row.reminders = existing.reminders + 1
    }
    row.last_notified_at = at
    row.next_escalation_at = this.nextEscalation(row)
    this.#write(row, existing.updated_at)
    const late = lateMs > Math.max(5 * this.config.tickMs, 5000) ? { lateMs } : {}
    if (tier > existing.tier) this.#event(row.id, 'escalated', 'system', { fromTier: existing.tier, toTier: tier, tierName: TIER_NAMES[tier], added, ...late })
    else this.#event(row.id, 'reminded', 'system', { tier, reminder: row.reminders, ...late })
    return this.#sounded(row, {
      alert: toAlert(row),
      change: 'escalated',
      notify: false,
      escalation: { tier, tierName: TIER_NAMES[tier]!, reminder: row.reminders, recipients: this.#recipientsOf(row), added },
    })
  }
}

/** Announces committed alert changes on the bus: thread messages, then alert events. */
export function announceEffects(bus: EventBus, effects: readonly AlertEffect[]): void {
  for (const e of effects) {
    e.announce?.()
    // Escalation first: it gives new recipients access before the change reaches their sockets.
    if (e.escalation) bus.emit('alert.escalated', { alert: e.alert, ...e.escalation })
    bus.emit('alert.updated', { alert: e.alert, change: e.change })
    if (e.notify) bus.emit('alert.raised', { alert: e.alert })
  }
}

export { SEVERITIES }
