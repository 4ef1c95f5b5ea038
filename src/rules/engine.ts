import { type FSWatcher, watch } from 'node:fs'
import type { Statement } from 'better-sqlite3'
import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { GatewayConfig } from '../config/load.ts'
import { RpmError } from '../errors.ts'
import type { AfterCommit, EventBus, GatewayEvents } from '../events.ts'
import type { AcceptedReading, ReadingType } from '../ingest/types.ts'
import type { Metrics } from '../metrics.ts'
import type { Store } from '../store/db.ts'
import type { RuleOverrideTable } from '../store/schema.ts'
import { type AlertEffect, AlertStore, type PostAlertMessage, announceEffects } from './alerts.ts'
import { RuleError } from './compile.ts'
import { evaluateDelta, evaluateThreshold, type Sample } from './evaluate.ts'
import { type HistoryNeed, MAX_SAMPLES, addNeed, placeSample } from './history.ts'
import { type LoadedRule, type RuleProblem, type RuleSet, RuleLoadError, checkOverride, dotted, loadRuleDir } from './load.ts'
import { KINDS_MEASURING, type DeltaRule, type Rule, type RuleOverride, type ThresholdRule } from './spec.ts'

export interface RuleEngineDeps {
  rules: GatewayConfig['rules'] & { dir: string }
  /** The rule files as loaded at start (loadRules), checked before anything else opened. */
  initial: RuleSet
  alerts: GatewayConfig['alerts']
  store: Store
  bus: EventBus
  clock: Clock
  log: Logger
  metrics: Metrics
  /** Posts an alert message in the patient's thread, in the caller's transaction. */
  post: PostAlertMessage
  /** Registers work that runs inside each journal commit (see Ingest.addCommitHook). */
  onJournalCommit: (hook: (accepted: AcceptedReading[]) => (() => void) | void) => void
}

/** A patient's override of one rule, as in force. */
export interface PatientOverride {
  version: number
  override: RuleOverride
  reason: string
  changedBy: string
  changedAt: string
  /** Null when the override applies; otherwise why not (the rule changed since). */
  problem: string | null
}

export interface RulesStatus {
  dir: string
  files: string[]
  count: number
  loadedAt: string
  /** The last refused change, with every problem found; null when the files on disk are in force. */
  refused: { at: string; problems: RuleProblem[] } | null
}

/** Loads the rules directory for a start: problems stop the start with each file, line and field. */
export function loadRules(dir: string): RuleSet {
  try {
    return loadRuleDir(dir)
  } catch (err) {
    if (!(err instanceof RuleLoadError)) throw err
    throw new RpmError('RPM_ERR_CONFIG_INVALID', `invalid rules in ${dir}:\n${err.message}`, { details: { field: 'rules.dir' } })
  }
}

type ReadingRule = ThresholdRule | DeltaRule
/** Missing-data and offline rules wait this long after start: devices reconnect and upload first. */
const SETTLE_MS = 10 * 60_000

const hk = (patientId: string, type: string) => `${patientId}\u0000${type}`

/**
 * Runs the clinical rules: reading rules inside the journal commit (an alert is stored with the
 * reading that raised it, or not at all), silence rules (missing data, device offline) on a
 * timer, event rules from the bus, and the escalation clock. Rule files are reloaded when they
 * change; a bad change is refused and the rules in force stay.
 */
export class RuleEngine {
  readonly alerts: AlertStore
  #set: RuleSet
  #loadedAt: string
  #refused: RulesStatus['refused'] = null
  /** Per patient: rule id -> override (compiled against the current rules). */
  #overrides = new Map<string, Map<string, { entry: PatientOverride; rule: Rule | null }>>()
  /** Enabled reading rules by type, for patients without overrides. */
  #byType = new Map<ReadingType, ReadingRule[]>()
  #history = new Map<string, Sample[]>()
  /** Per reading type: how many readings and how much time the rules look back over. */
  #needs = new Map<ReadingType, HistoryNeed>()
  /** Newest measuredAt per patient and type ('any' too), for missing-data rules. */
  #newest = new Map<string, number>()
  readonly #q: Record<string, Statement>
  readonly #startedAt: number
  #timers: NodeJS.Timeout[] = []
  #watcher: FSWatcher | undefined
  #reloadTimer: NodeJS.Timeout | undefined
  readonly #listeners: Array<[keyof GatewayEvents, (...args: never[]) => void]> = []

  constructor(private readonly deps: RuleEngineDeps) {
    this.#set = deps.initial
    this.#loadedAt = new Date(deps.clock.now()).toISOString()
    this.#startedAt = deps.clock.now()
    this.alerts = new AlertStore(deps.store, deps.clock, deps.alerts, deps.post, (e) => deps.bus.emit('alert.sounded', e))
    const p = (sql: string) => deps.store.sqlite.prepare(sql)
    this.#q = {
      recent: p('SELECT id, measured_at, values_json FROM readings WHERE patient_id = ? AND type = ? ORDER BY measured_at DESC LIMIT ?'),
      since: p('SELECT id, measured_at, values_json FROM readings WHERE patient_id = ? AND type = ? AND measured_at >= ? ORDER BY measured_at DESC LIMIT ?'),
      newest: p('SELECT MAX(measured_at) AS t FROM readings WHERE patient_id = ? AND type = ?'),
      overrides: p(`SELECT o.* FROM rule_overrides o WHERE o.version = (SELECT MAX(version) FROM rule_overrides
        WHERE patient_id = o.patient_id AND rule_id = o.rule_id)`),
      overrideHistory: p('SELECT * FROM rule_overrides WHERE patient_id = ? AND rule_id = ? ORDER BY version DESC'),
      maxVersion: p('SELECT COALESCE(MAX(version), 0) AS v FROM rule_overrides WHERE patient_id = ? AND rule_id = ?'),
      insertOverride: p('INSERT INTO rule_overrides (patient_id, rule_id, version, spec_json, reason, changed_by, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?)'),
      devices: p("SELECT id, patient_id, kind, online, last_seen_at, created_at FROM devices WHERE status = 'active'"),
      devicesOfPatient: p("SELECT id, patient_id, kind, online, last_seen_at, created_at FROM devices WHERE status = 'active' AND patient_id = ?"),
      patientOfDevice: p('SELECT patient_id FROM devices WHERE id = ?'),
      patientExists: p('SELECT id FROM patients WHERE id = ?'),
    }
    for (const row of this.#q.overrides!.all() as RuleOverrideTable[]) {
      if (row.spec_json === null) continue
      this.#setOverrideEntry(row)
    }
    this.#index()

    deps.onJournalCommit((accepted) => this.#onReadings(accepted))
    this.#on('dose.missed', (e) => this.#onEvent('dose.missed', e.patientId, { event: 'dose.missed', occurrenceId: e.occurrenceId, scheduleId: e.scheduleId, dueAt: e.dueAt }, e.afterCommit))
    this.#on('dose.taken', (e) => this.#onEvent('dose.taken', e.patientId, { event: 'dose.taken', occurrenceId: e.occurrenceId, scheduleId: e.scheduleId, at: e.at }))
    this.#on('alert.updated', ({ alert, change }) => {
      deps.metrics.alertChanges.inc({ change, severity: alert.severity })
      deps.metrics.alertsUnresolved.set(this.alerts.unresolvedCount())
    })
    deps.metrics.alertsUnresolved.set(this.alerts.unresolvedCount())
    this.#on('device.connected', (e) => this.#safely('offline check', () => this.checkOffline(e.deviceId)))
  }

  #on<K extends keyof GatewayEvents>(name: K, fn: (...args: GatewayEvents[K]) => void): void {
    this.deps.bus.on(name, fn as never)
    this.#listeners.push([name, fn as never])
  }

  #safely(what: string, fn: () => void): void {
    try {
      fn()
    } catch (err) {
      this.deps.log.error({ err: (err as Error).message }, `${what} failed`)
    }
  }

  start(): void {
    const { alerts, rules } = this.deps
    const tick = setInterval(() => this.#safely('escalation', () => this.tick()), alerts.tickMs)
    const check = setInterval(() => this.#safely('missing-data and offline check', () => this.checkSilence()), rules.checkIntervalSeconds * 1000)
    tick.unref()
    check.unref()
    this.#timers.push(tick, check)
    if (rules.watch) {
      try {
        this.#watcher = watch(rules.dir, () => {
          clearTimeout(this.#reloadTimer)
          this.#reloadTimer = setTimeout(() => this.#safely('reloading the rules', () => this.reload()), 200)
        })
        this.#watcher.on('error', (err) => this.deps.log.warn({ err: err.message }, 'watching the rules directory stopped'))
      } catch (err) {
        this.deps.log.warn({ err: (err as Error).message }, 'cannot watch the rules directory: changes apply at restart')
      }
    }
  }

  stop(): void {
    for (const t of this.#timers) clearInterval(t)
    this.#timers = []
    clearTimeout(this.#reloadTimer)
    this.#watcher?.close()
    for (const [name, fn] of this.#listeners) this.deps.bus.off(name, fn as never)
  }

  // --- the rule set ------------------------------------------------------------------------------

  /** Loads the rules directory again; a change with any problem is refused and the rules in force stay. */
  reload(): { ok: boolean; problems: RuleProblem[] } {
    try {
      const set = loadRuleDir(this.deps.rules.dir)
      this.#set = set
      this.#loadedAt = new Date(this.deps.clock.now()).toISOString()
      this.#refused = null
      // Overrides are compiled again against the new rules.
      const entries = [...this.#overrides.values()].flatMap((m) => [...m.values()].map((v) => v.entry))
      const patients = [...this.#overrides.entries()].flatMap(([patientId, m]) => [...m.keys()].map((ruleId) => ({ patientId, ruleId })))
      this.#overrides = new Map()
      patients.forEach(({ patientId, ruleId }, i) => {
        const e = entries[i]!
        this.#setOverrideEntry({ patient_id: patientId, rule_id: ruleId, version: e.version, spec_json: JSON.stringify(e.override), reason: e.reason, changed_by: e.changedBy, changed_at: e.changedAt } as RuleOverrideTable)
      })
      this.#index()
      this.#retireStale()
      // Histories were trimmed for the old rules: load them again for the new windows and runs.
      this.#history.clear()
      this.deps.metrics.rulesReloads.inc({ outcome: 'applied' })
      this.deps.metrics.rulesRefused.set(0)
      this.deps.log.info({ rules: set.rules.size, files: set.files.length }, 'rules loaded')
      return { ok: true, problems: [] }
    } catch (err) {
      if (!(err instanceof RuleLoadError)) throw err
      this.#refused = { at: new Date(this.deps.clock.now()).toISOString(), problems: err.problems }
      this.deps.metrics.rulesReloads.inc({ outcome: 'refused' })
      this.deps.metrics.rulesRefused.set(1)
      for (const p of err.problems) this.deps.log.error({ file: p.file, line: p.line, field: p.field, problem: p.message }, 'rule change refused; the rules in force stay')
      return { ok: false, problems: err.problems }
    }
  }

  status(): RulesStatus {
    return { dir: this.#set.dir, files: this.#set.files, count: this.#set.rules.size, loadedAt: this.#loadedAt, refused: this.#refused }
  }

  /** The rules in force, as loaded. */
  rules(): LoadedRule[] {
    return [...this.#set.rules.values()]
  }

  #index(): void {
    this.#byType = new Map()
    this.#needs = new Map()
    for (const { rule } of this.#set.rules.values()) {
      addNeed(this.#needs, rule)
      if (!rule.enabled || (rule.kind !== 'threshold' && rule.kind !== 'delta')) continue
      const list = this.#byType.get(rule.reading) ?? []
      list.push(rule)
      this.#byType.set(rule.reading, list)
    }
    for (const m of this.#overrides.values()) for (const { rule } of m.values()) if (rule) addNeed(this.#needs, rule)
  }

  #setOverrideEntry(row: RuleOverrideTable): void {
    const override = JSON.parse(row.spec_json!) as RuleOverride
    const entry: PatientOverride = { version: row.version, override, reason: row.reason, changedBy: row.changed_by, changedAt: row.changed_at, problem: null }
    const loaded = this.#set.rules.get(row.rule_id)
    let rule: Rule | null = null
    if (!loaded) entry.problem = `the rule ${row.rule_id} is no longer in the rule files`
    else {
      try {
        rule = checkOverride(loaded, override).rule
      } catch (err) {
        entry.problem = `no longer fits the rule: ${err instanceof RuleError ? `${dotted(err.path)} ${err.message}` : (err as Error).message}`
      }
    }
    if (entry.problem) this.deps.log.warn({ patientId: row.patient_id, ruleId: row.rule_id, version: row.version }, 'a patient override does not apply to the current rules')
    const m = this.#overrides.get(row.patient_id) ?? new Map()
    m.set(row.rule_id, { entry, rule })
    this.#overrides.set(row.patient_id, m)
  }

  /** Every rule as it applies to this patient: the override's version where there is one. */
  effectiveRules(patientId: string): Array<{ rule: Rule; raw: LoadedRule['raw']; override: PatientOverride | null }> {
    const own = this.#overrides.get(patientId)
    return [...this.#set.rules.values()].map(({ rule, raw }) => {
      const o = own?.get(rule.id)
      if (o?.rule) return { rule: o.rule, raw: { ...raw, ...o.entry.override }, override: o.entry }
      return { rule, raw, override: o?.entry ?? null }
    })
  }

  #rulesFor(patientId: string, type: ReadingType): ReadingRule[] {
    const own = this.#overrides.get(patientId)
    if (!own) return this.#byType.get(type) ?? []
    return this.effectiveRules(patientId)
      .map((e) => e.rule)
      .filter((r): r is ReadingRule => r.enabled && (r.kind === 'threshold' || r.kind === 'delta') && r.reading === type)
  }

  #ruleFor(patientId: string, ruleId: string): Rule | undefined {
    const o = this.#overrides.get(patientId)?.get(ruleId)
    return o?.rule ?? this.#set.rules.get(ruleId)?.rule
  }

  /**
   * Sets (or with `override` null, removes) one patient's override of a rule. Every change is a
   * new version with who and why; the caller audits it.
   */
  setOverride(patientId: string, ruleId: string, override: unknown, reason: string, userId: string): { version: number; rule: Rule } {
    if (!this.#q.patientExists!.get(patientId)) throw new RpmError('RPM_ERR_NOT_FOUND', `no patient ${patientId}`, { details: { field: 'patientId' } })
    const loaded = this.#set.rules.get(ruleId)
    if (!loaded) throw new RpmError('RPM_ERR_NOT_FOUND', `no rule ${ruleId}`, { details: { field: 'ruleId' } })
    let rule = loaded.rule
    if (override !== null) {
      try {
        rule = checkOverride(loaded, override).rule
      } catch (err) {
        if (!(err instanceof RuleError)) throw err
        const field = dotted(err.path)
        throw new RpmError('RPM_ERR_BAD_REQUEST', `${field || 'override'} ${err.message}`, { details: { field: field ? `override.${field}` : 'override' } })
      }
    }
    const at = new Date(this.deps.clock.now()).toISOString()
    const write = this.deps.store.sqlite.transaction(() => {
      const version = (this.#q.maxVersion!.get(patientId, ruleId) as { v: number }).v + 1
      this.#q.insertOverride!.run(patientId, ruleId, version, override === null ? null : JSON.stringify(override), reason, userId, at)
      return version
    })
    const version = write.immediate()
    if (override === null) this.#overrides.get(patientId)?.delete(ruleId)
    else this.#setOverrideEntry({ patient_id: patientId, rule_id: ruleId, version, spec_json: JSON.stringify(override), reason, changed_by: userId, changed_at: at } as RuleOverrideTable)
    this.#index()
    this.#retireStale([patientId])
    // Its history was trimmed for the rule as it was: load it again for the new window or run.
    for (const k of [...this.#history.keys()]) if (k.startsWith(`${patientId}\u0000`)) this.#history.delete(k)
    return { version, rule }
  }

  overrideHistory(patientId: string, ruleId: string): Array<{ version: number; override: RuleOverride | null; reason: string; changedBy: string; changedAt: string }> {
    return (this.#q.overrideHistory!.all(patientId, ruleId) as RuleOverrideTable[]).map((r) => ({
      version: r.version,
      override: r.spec_json ? (JSON.parse(r.spec_json) as RuleOverride) : null,
      reason: r.reason,
      changedBy: r.changed_by,
      changedAt: r.changed_at,
    }))
  }

  /** Unresolved alerts of rules that no longer apply (removed, or disabled for the patient) resolve, saying why. */
  #retireStale(patientIds?: readonly string[]): void {
    this.#safely('resolving alerts of rules no longer in force', () => {
      const effects: AlertEffect[] = []
      this.alerts.run(() => {
        for (const row of this.alerts.unresolved()) {
          if (patientIds && !patientIds.includes(row.patient_id)) continue
          const rule = this.#ruleFor(row.patient_id, row.rule_id)
          if (!rule) effects.push(...this.alerts.retire(row.patient_id, row.rule_id, 'the rule was removed from the rule files'))
          else if (!rule.enabled) effects.push(...this.alerts.retire(row.patient_id, row.rule_id, 'the rule is turned off for this patient'))
        }
      })
      announceEffects(this.deps.bus, effects)
    })
  }

  // --- readings ------------------------------------------------------------------------------------

  /**
   * The patient's readings of a type, loaded on first use. `pending` are the ids of the commit
   * being evaluated: they are in the table already but join the history one by one, in order.
   */
  #historyOf(patientId: string, type: ReadingType, pending: ReadonlySet<number>): Sample[] {
    const k = hk(patientId, type)
    let samples = this.#history.get(k)
    if (samples) return samples
    const need = this.#needs.get(type) ?? { count: 1, spanMs: 0 }
    const rows = new Map<number, { id: number; measured_at: string; values_json: string }>()
    for (const r of this.#q.recent!.all(patientId, type, need.count + 1) as Array<{ id: number; measured_at: string; values_json: string }>) rows.set(r.id, r)
    if (need.spanMs > 0) {
      const since = new Date(this.deps.clock.now() - need.spanMs - 86_400_000).toISOString()
      for (const r of this.#q.since!.all(patientId, type, since, MAX_SAMPLES) as Array<{ id: number; measured_at: string; values_json: string }>) rows.set(r.id, r)
    }
    samples = [...rows.values()]
      .filter((r) => !pending.has(r.id))
      .map((r) => ({ readingId: r.id, t: Date.parse(r.measured_at), values: JSON.parse(r.values_json) as Record<string, number> }))
      .sort((a, b) => a.t - b.t || a.readingId - b.readingId)
    this.#history.set(k, samples)
    return samples
  }

  #onReadings(accepted: AcceptedReading[]): (() => void) | void {
    const stage = this.alerts.begin()
    const effects: AlertEffect[] = []
    const pending = new Set(accepted.map((r) => r.id))
    const byPatient = new Map<string, AcceptedReading[]>()
    for (const r of accepted) {
      const list = byPatient.get(r.patientId)
      if (list) list.push(r)
      else byPatient.set(r.patientId, [r])
    }
    try {
      // One savepoint per patient: a failure evaluating one patient's readings (a bad override, a
      // bug) loses that patient's alerts for this commit (logged, counted), not everyone's.
      for (const [patientId, readings] of byPatient) {
        const mark = effects.length
        const staged = this.alerts.stagedOf(patientId)
        try {
          this.#savepoint(() => this.#evaluatePatient(readings, pending, effects))
        } catch (err) {
          effects.length = mark
          this.alerts.restoreStaged(patientId, staged)
          this.deps.metrics.rulesEvaluationFailures.inc()
          this.deps.log.error({ err: (err as Error).message, patientId, readings: readings.length }, 'rules could not be evaluated for a patient; the readings are stored')
        }
      }
    } finally {
      this.alerts.end()
    }
    if (effects.length === 0 && stage.size === 0) return
    return () => {
      this.alerts.commit(stage)
      announceEffects(this.deps.bus, effects)
    }
  }

  readonly #savepoint = (work: () => void): void => this.deps.store.sqlite.transaction(work)()

  #evaluatePatient(accepted: AcceptedReading[], pending: Set<number>, effects: AlertEffect[]): void {
    for (const r of accepted) {
      const t = Date.parse(r.measuredAt)
      for (const k of [hk(r.patientId, r.type), hk(r.patientId, 'any')]) {
        if ((this.#newest.get(k) ?? 0) < t) this.#newest.set(k, t)
      }
      const samples = this.#historyOf(r.patientId, r.type, pending)
      const index = placeSample(samples, { readingId: r.id, t, values: r.values as unknown as Record<string, number> }, this.#needs.get(r.type) ?? { count: 1, spanMs: 0 })
      const newest = index === samples.length - 1
      for (const rule of this.#rulesFor(r.patientId, r.type)) {
        const verdict = rule.kind === 'threshold' ? evaluateThreshold(rule, samples, index) : evaluateDelta(rule, samples, index)
        if (verdict.severity !== null) {
          effects.push(...this.alerts.raise({
            patientId: r.patientId, rule, readingType: r.type, severity: verdict.severity, values: verdict.values, readingId: r.id, measuredAt: r.measuredAt,
          }))
        } else if (verdict.clear && newest) {
          // Only the newest reading can say "all clear": a late, older one cannot.
          effects.push(...this.alerts.clear(r.patientId, rule.id, r.type, verdict.values, { id: r.id, measuredAt: r.measuredAt }))
        }
      }
      // A reading ends a missing-data alert of its type (or of any type); one measured before
      // the silence began (uploaded late) does not: the rule would raise again at its next check.
      for (const open of this.#openSilence(r.patientId, 'missing')) {
        const rule = this.#ruleFor(r.patientId, open.rule_id)
        if (rule?.kind === 'missing' && (rule.reading === 'any' || rule.reading === r.type) && this.deps.clock.now() - t < rule.afterMs) {
          effects.push(...this.alerts.clear(r.patientId, rule.id, r.type, { ...r.values }, { id: r.id, measuredAt: r.measuredAt }))
        }
      }
    }
  }

  #openSilence(patientId: string, kind: 'missing' | 'offline') {
    const out = []
    for (const { rule } of this.#set.rules.values()) {
      if (rule.kind !== kind) continue
      const open = this.alerts.openFor(patientId, rule.id)
      if (open) out.push(open)
    }
    return out
  }

  // --- events, silence, escalation -----------------------------------------------------------------

  /**
   * Event rules. With `afterCommit` the event was emitted inside the emitter's transaction (a dose
   * recorded missed): the alert is written in it (a savepoint), so the two commit together or
   * not at all; the alert cache and the announcements wait for that commit, and a failure is
   * thrown to the emitter, whose transaction then rolls back. Without it, in a transaction of its own.
   */
  #onEvent(name: 'dose.missed' | 'dose.taken', patientId: string, values: Record<string, unknown>, afterCommit?: AfterCommit): void {
    const effects: AlertEffect[] = []
    const evaluate = () => {
      for (const { rule } of this.effectiveRules(patientId)) {
        if (rule.kind !== 'event' || !rule.enabled) continue
        // The schedules with a missed dose: a dose taken of one of them answers it; a dose of
        // another medication (or an unscheduled one) does not.
        const open = this.alerts.openFor(patientId, rule.id)
        const pending = new Set<string>(open?.last_values_json ? ((JSON.parse(open.last_values_json) as { scheduleIds?: string[] }).scheduleIds ?? []) : [])
        const scheduleId = typeof values.scheduleId === 'string' ? values.scheduleId : null
        if (name === rule.event) {
          if (scheduleId) pending.add(scheduleId)
          effects.push(...this.alerts.raise({ patientId, rule, readingType: null, severity: rule.severity, values: { ...values, scheduleIds: [...pending] } }))
        } else if (name === rule.clearOn && open && scheduleId !== null && pending.delete(scheduleId)) {
          if (pending.size === 0) effects.push(...this.alerts.clear(patientId, rule.id, null, values))
          else this.alerts.updateValues(open, { ...JSON.parse(open.last_values_json!), scheduleIds: [...pending] })
        }
      }
    }
    if (afterCommit) {
      const stage = this.alerts.begin()
      try {
        this.deps.store.sqlite.transaction(evaluate)()
      } finally {
        this.alerts.end()
      }
      afterCommit(() => {
        this.alerts.commit(stage)
        announceEffects(this.deps.bus, effects)
      })
      return
    }
    this.#safely(`rules for ${name}`, () => {
      this.alerts.run(evaluate)
      announceEffects(this.deps.bus, effects)
    })
  }

  /** Escalation steps that are due (see AlertStore.escalateDue). */
  tick(): void {
    announceEffects(this.deps.bus, this.alerts.escalateDue())
    for (const f of this.alerts.failures.splice(0)) this.deps.log.error({ alertId: f.alertId, err: f.err }, 'an escalation step failed; it is tried again')
  }

  /** Missing-data and device-offline rules, for every patient. */
  checkSilence(): void {
    this.checkMissing()
    this.checkOffline()
  }

  /** Patients with an unresolved alert of this kind of rule (so a check can also end it). */
  #patientsWithOpen(kind: 'missing' | 'offline'): string[] {
    return this.alerts.unresolved().filter((a) => a.rule_kind === kind).map((a) => a.patient_id)
  }

  #settled(): boolean {
    return this.deps.clock.now() - this.#startedAt >= SETTLE_MS
  }

  #newestOf(patientId: string, type: ReadingType | 'any'): number | undefined {
    const k = hk(patientId, type)
    if (this.#newest.has(k)) return this.#newest.get(k)
    let t: number | undefined
    const types = type === 'any' ? (Object.keys(KINDS_MEASURING) as ReadingType[]) : [type]
    for (const ty of types) {
      const row = this.#q.newest!.get(patientId, ty) as { t: string | null }
      if (row.t !== null) t = Math.max(t ?? 0, Date.parse(row.t))
    }
    if (t !== undefined) this.#newest.set(k, t)
    return t
  }

  checkMissing(): void {
    if (!this.#settled()) return
    const now = this.deps.clock.now()
    const devices = this.#q.devices!.all() as Array<{ id: string; patient_id: string; kind: string; created_at: string }>
    const patients = new Map<string, Array<{ kind: string; created: number }>>()
    for (const d of devices) {
      if (d.kind === 'hub') continue
      const list = patients.get(d.patient_id) ?? []
      list.push({ kind: d.kind, created: Date.parse(d.created_at) })
      patients.set(d.patient_id, list)
    }
    const effects: AlertEffect[] = []
    const consider = (patientId: string) => {
      for (const { rule } of this.effectiveRules(patientId)) {
        if (rule.kind !== 'missing') continue
        const open = this.alerts.openFor(patientId, rule.id)
        const measuring = (patients.get(patientId) ?? []).filter((d) => rule.reading === 'any' || KINDS_MEASURING[rule.reading].includes(d.kind))
        if (!rule.enabled || measuring.length === 0) {
          if (open) effects.push(...this.alerts.clear(patientId, rule.id, null, { reason: measuring.length === 0 ? 'no active measuring device' : 'rule disabled' }))
          continue
        }
        if (open) continue
        const newest = this.#newestOf(patientId, rule.reading)
        const lastData = newest ?? Math.min(...measuring.map((d) => d.created))
        // Not raised before SETTLE_MS after the start; the hours reported are the real silence.
        const since = Math.max(lastData, this.#startedAt - rule.afterMs + SETTLE_MS)
        if (now - since >= rule.afterMs) {
          effects.push(...this.alerts.raise({
            patientId, rule, readingType: rule.reading === 'any' ? null : rule.reading, severity: rule.severity,
            values: { hoursWithoutData: Math.floor((now - lastData) / 3_600_000), lastReadingAt: newest !== undefined ? new Date(newest).toISOString() : null, reading: rule.reading },
          }))
        }
      }
    }
    this.alerts.run(() => {
      for (const patientId of new Set([...patients.keys(), ...this.#patientsWithOpen('missing')])) consider(patientId)
    })
    announceEffects(this.deps.bus, effects)
  }

  /** Device-offline rules, for every patient or for the patient of one device that just connected. */
  checkOffline(deviceId?: string): void {
    const now = this.deps.clock.now()
    let onePatient: string | undefined
    if (deviceId !== undefined) {
      // A connection can only end an offline alert: nothing to do unless one is open.
      onePatient = (this.#q.patientOfDevice!.get(deviceId) as { patient_id: string } | undefined)?.patient_id
      if (onePatient === undefined || this.#openSilence(onePatient, 'offline').length === 0) return
    }
    const devices = (onePatient !== undefined ? this.#q.devicesOfPatient!.all(onePatient) : this.#q.devices!.all()) as Array<{ id: string; patient_id: string; online: number; last_seen_at: string | null; created_at: string }>
    const byPatient = new Map<string, typeof devices>()
    for (const d of devices) {
      const list = byPatient.get(d.patient_id) ?? []
      list.push(d)
      byPatient.set(d.patient_id, list)
    }
    let patientIds: Set<string>
    if (onePatient !== undefined) {
      patientIds = new Set([onePatient])
    } else {
      patientIds = new Set([...byPatient.keys(), ...this.#patientsWithOpen('offline')])
    }
    const effects: AlertEffect[] = []
    this.alerts.run(() => {
      for (const patientId of patientIds) {
        for (const { rule } of this.effectiveRules(patientId)) {
          if (rule.kind !== 'offline') continue
          const open = this.alerts.openFor(patientId, rule.id)
          // Offline time counts from the gateway's start at the earliest: it cannot know before.
          const offline = (byPatient.get(patientId) ?? [])
            .filter((d) => d.online === 0)
            .map((d) => ({ id: d.id, since: Math.max(Date.parse(d.last_seen_at ?? d.created_at), this.#startedAt) }))
            .filter((d) => now - d.since >= rule.afterMs)
          if (offline.length === 0 || !rule.enabled) {
            if (open) effects.push(...this.alerts.clear(patientId, rule.id, null, { devices: [], hoursOffline: 0 }))
            continue
          }
          // Raised only after the settle, like missing data: devices reconnect after a start first.
          if (open || deviceId !== undefined || !this.#settled()) continue
          effects.push(...this.alerts.raise({
            patientId, rule, readingType: null, severity: rule.severity,
            values: { devices: offline.map((d) => d.id).sort(), hoursOffline: Math.floor((now - Math.min(...offline.map((d) => d.since))) / 3_600_000) },
          }))
        }
      }
    })
    announceEffects(this.deps.bus, effects)
  }
}
