import { readFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import type { Statement } from 'better-sqlite3'
import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { GatewayConfig } from '../config/load.ts'
import { RpmError } from '../errors.ts'
import type { EventBus, GatewayEvents } from '../events.ts'
import type { Metrics } from '../metrics.ts'
import type { Store } from '../store/db.ts'
import { contentFor, smsText } from './content.ts'
import { NotifyDirectory, toSmsView } from './directory.ts'
import { FcmChannel, type FcmTransport, fcmTransportFromFile } from './fcm.ts'
import { type DueNotification, type NewNotification, Outbox } from './outbox.ts'
import { quietUntil } from './quiet-hours.ts'
import { SmsChannel } from './sms.ts'
import { type Channel, CHANNELS, type Delivery, type NotifyChannel, type PushTarget, type SendOutcome } from './types.ts'
import { ensureVapidKeys, type VapidKeys } from './vapid.ts'
import { WebPushChannel } from './webpush.ts'

export interface NotifierDeps {
  config: GatewayConfig['notify']
  dataDir: string
  store: Store
  bus: EventBus
  clock: Clock
  log: Logger
  metrics: Metrics
  /** FCM through a credential and agent given in code, instead of notify.fcm.serviceAccountFile. */
  fcm?: FcmTransport
  /** Whether a user has a live connection: 'online' and 'away' users get a moment to read first. */
  presence(userId: string): 'online' | 'away' | 'offline'
  /** When the user's oldest unread text message in the thread, up to `seq`, was posted (ms); null when they have read up to `seq`. */
  firstUnreadAt(userId: string, threadId: string, seq: number): number | null
  /** The alert is open: neither acknowledged nor resolved. */
  alertOpen(alertId: string): boolean
}

export type ChannelState = 'up' | 'failing' | 'off'

const ALERT_TTL_MS = 60 * 60_000 // an alert still open is sounded again by escalation
const MESSAGE_TTL_MS = 24 * 60 * 60_000
const REMINDER_TTL_MS = 60 * 60_000
const TEST_TTL_MS = 10 * 60_000
/** Temporary failures in a row after which a channel reports itself failing (still not a readiness failure). */
const FAILING_AFTER = 3
/** How long stop() waits for a send in flight; one still unanswered then is settled as in doubt at the next start. */
const STOP_GRACE_MS = 2000

const HOUSEKEEPING_MS = 5000
const PURGE_EVERY_MS = 60 * 60_000
/** A test notification per user at most this often: it texts a number nobody verified. */
const TEST_EVERY_MS = 60_000

const STOP_WORDS = new Set(['STOP', 'STOPALL', 'UNSUBSCRIBE', 'CANCEL', 'END', 'QUIT', 'REVOKE', 'OPTOUT'])
const START_WORDS = new Set(['START', 'YES', 'UNSTOP'])

/**
 * Push and SMS. Events become rows in the outbox (alerts inside the transaction that raised or
 * escalated them); one lane per channel sends them, one at a time, with retries. The words come
 * from `contentFor` and carry no patient data.
 */
export class Notifier {
  readonly directory: NotifyDirectory
  readonly outbox: Outbox
  readonly vapid: VapidKeys
  readonly #deps: NotifierDeps
  readonly #channels: Partial<Record<NotifyChannel, Channel<unknown>>> = {}
  readonly #sms?: SmsChannel
  readonly #q: Record<string, Statement>
  readonly #failures: Record<NotifyChannel, number> = { webpush: 0, fcm: 0, sms: 0 }
  readonly #sleepers = new Set<() => void>()
  readonly #lanes: Promise<void>[] = []
  readonly #unsubscribe: Array<() => void> = []
  #running = false
  #wakeQueued = false
  #housekeeping: NodeJS.Timeout | undefined
  #purgedAt = 0
  /** When each user last asked for a test notification. */
  readonly #lastTest = new Map<string, number>()
  /** When each user was last texted a verification code. */
  readonly #lastCode = new Map<string, number>()

  constructor(deps: NotifierDeps) {
    this.#deps = deps
    const { config } = deps
    this.directory = new NotifyDirectory(deps.store, deps.clock, config.webpush.allowedHosts)
    this.outbox = new Outbox(deps.store, deps.clock)
    this.vapid = ensureVapidKeys(deps.dataDir)
    let ca: string | undefined
    if (config.caFile) {
      try {
        ca = readFileSync(config.caFile, 'utf8')
      } catch (err) {
        throw new RpmError('RPM_ERR_CONFIG_INVALID', `invalid configuration: notify.caFile: cannot read ${config.caFile}`, { cause: err })
      }
    }
    this.#channels.webpush = new WebPushChannel({ vapid: this.vapid, subject: config.webpush.subject, timeoutMs: config.timeoutMs, ...(ca ? { ca } : {}) }) as Channel<unknown>
    const fcm = deps.fcm ?? (config.fcm.serviceAccountFile ? this.#fcmFromFile(config.fcm.serviceAccountFile) : undefined)
    if (fcm) this.#channels.fcm = new FcmChannel(fcm, config.timeoutMs) as Channel<unknown>
    const { accountSid, authToken, from } = config.sms
    if (accountSid && authToken && from) {
      this.#sms = new SmsChannel({
        accountSid,
        authToken,
        from,
        statusCallbackUrl: config.sms.publicUrl ? `${config.sms.publicUrl.replace(/\/$/, '')}/api/v1/notifications/sms/status` : '',
        apiBaseUrl: config.sms.apiBaseUrl,
        timeoutMs: config.timeoutMs,
        ...(ca ? { ca } : {}),
      })
      this.#channels.sms = this.#sms as Channel<unknown>
    } else if (accountSid || authToken || from) {
      throw new RpmError('RPM_ERR_CONFIG_INVALID', 'invalid configuration: notify.sms needs accountSid, authToken and from together (or none, for no SMS)')
    }
    const p = (sql: string) => deps.store.sqlite.prepare(sql)
    this.#q = {
      careTeam: p("SELECT c.user_id FROM care_team c JOIN users u ON u.id = c.user_id WHERE c.patient_id = ? AND u.status = 'active'"),
      patientUsers: p("SELECT id FROM users WHERE patient_id = ? AND role = 'patient' AND status = 'active'"),
      userStatus: p('SELECT status FROM users WHERE id = ?'),
    }
    // Listening from the start: an alert raised before the lanes run is recorded all the same.
    this.#listen('alert.sounded', this.#onAlertSounded)
    this.#listen('message.posted', this.#onMessagePosted)
    this.#listen('reminder.due', this.#onReminderDue)
  }

  #fcmFromFile(file: string): FcmTransport {
    try {
      return fcmTransportFromFile(file)
    } catch (err) {
      throw new RpmError('RPM_ERR_CONFIG_INVALID', `invalid configuration: notify.fcm.serviceAccountFile: ${(err as Error).message}`, { cause: err })
    }
  }

  /** Which channels are configured, and whether each is currently failing. */
  channels(): Record<NotifyChannel, ChannelState> {
    const out = {} as Record<NotifyChannel, ChannelState>
    for (const c of CHANNELS) out[c] = !this.#channels[c] ? 'off' : this.#failures[c] >= FAILING_AFTER ? 'failing' : 'up'
    return out
  }

  enabled(channel: NotifyChannel): boolean {
    return this.#channels[channel] !== undefined
  }

  // --- routing: events become outbox rows ---------------------------------------------------------

  #listen<K extends keyof GatewayEvents>(name: K, listener: (...args: GatewayEvents[K]) => void): void {
    const l = listener as never
    this.#deps.bus.on(name, l)
    this.#unsubscribe.push(() => this.#deps.bus.off(name, l))
  }

  /**
   * Writes rows in a savepoint of the caller's transaction (or a transaction of its own): a
   * failure here loses these notifications (logged, counted) but never the alert or message
   * that caused them.
   */
  #enqueue(rows: NewNotification[], what: string): void {
    if (rows.length === 0) return
    try {
      this.#deps.store.sqlite.transaction(() => this.outbox.enqueue(rows))()
    } catch (err) {
      this.#deps.log.error({ err: (err as Error).message, what, count: rows.length }, 'notifications could not be recorded')
      for (const r of rows) this.#deps.metrics.notificationsFailed.inc({ channel: r.channel, reason: 'not_recorded' })
      return
    }
    this.#wakeSoon()
  }

  /** Push rows for each of the user's targets on a configured channel. */
  #pushRows(userId: string, base: Omit<NewNotification, 'user_id' | 'channel' | 'target_id' | 'dedupe_key'>, dedupe: string): NewNotification[] {
    const rows: NewNotification[] = []
    for (const t of this.directory.targetRows(userId)) {
      if (!this.#channels[t.channel]) continue
      rows.push({ ...base, user_id: userId, channel: t.channel, target_id: t.id, dedupe_key: `${dedupe}:${t.id}` })
    }
    return rows
  }

  /**
   * A listener that never throws: `alert.sounded` runs inside the alert's transaction and
   * `message.posted` before the WebSocket hears of the message. A failure loses these
   * notifications (logged, counted), never the alert or the message.
   */
  #guard<E>(what: string, route: (e: E) => NewNotification[]): (e: E) => void {
    return (e) => {
      let rows: NewNotification[]
      try {
        rows = route(e)
      } catch (err) {
        this.#deps.log.error({ err: (err as Error).message, what }, 'notifications could not be routed')
        this.#deps.metrics.notificationsFailed.inc({ channel: 'all', reason: 'not_routed' })
        return
      }
      this.#enqueue(rows, what)
    }
  }

  #onAlertSounded = this.#guard('alert', (e: GatewayEvents['alert.sounded'][0]): NewNotification[] => {
    // Urgent and critical alerts reach people wherever they are; the others wait in the console.
    if (e.alert.severity !== 'urgent' && e.alert.severity !== 'critical') return []
    const now = this.#deps.clock.now()
    const escalated = e.change === 'escalated'
    const base = {
      kind: 'alert' as const,
      ref_id: e.alert.id,
      ref_seq: escalated ? 1 : 0,
      severity: e.alert.severity,
      urgent: true,
      collapse_key: `alert-${e.alert.id}`,
      not_before: now,
      expires_at: now + ALERT_TTL_MS,
    }
    const rows: NewNotification[] = []
    for (const userId of e.recipients) {
      rows.push(...this.#pushRows(userId, base, `${e.alert.id}:${e.step}:${userId}`))
      // SMS once the alert has gone unacknowledged to an escalation step (the escalation policy's delay).
      if (escalated && this.#sms && this.#smsActive(userId)) {
        rows.push({ ...base, user_id: userId, channel: 'sms', target_id: null, dedupe_key: `${e.alert.id}:${e.step}:${userId}:sms` })
      }
    }
    return rows
  })

  #onMessagePosted = this.#guard('message', (e: GatewayEvents['message.posted'][0]): NewNotification[] => {
    const m = e.message
    if (m.kind !== 'text' || m.deletedAt !== null) return []
    // A patient (or their hub) writes to the care team; the care team writes to the patient.
    const toStaff = m.from.role === 'patient'
    if (!toStaff && m.from.role !== 'provider' && m.from.role !== 'admin') return []
    const users = toStaff
      ? (this.#q.careTeam!.all(e.patientId) as Array<{ user_id: string }>).map((r) => r.user_id)
      : (this.#q.patientUsers!.all(e.patientId) as Array<{ id: string }>).map((r) => r.id)
    const now = this.#deps.clock.now()
    const delayMs = this.#deps.config.messageDelaySeconds * 1000
    const rows: NewNotification[] = []
    for (const userId of users) {
      if (userId === m.from.userId) continue
      if (!this.directory.preferences(userId).messages) continue
      // Offline: at once. Connected: after a moment, and only if still unread then.
      const notBefore = this.#deps.presence(userId) === 'offline' ? now : now + delayMs
      rows.push(...this.#pushRows(userId, {
        kind: 'message',
        ref_id: m.threadId,
        ref_seq: m.seq,
        severity: null,
        urgent: false,
        collapse_key: `thread-${m.threadId}`,
        not_before: notBefore,
        expires_at: now + MESSAGE_TTL_MS,
      }, `msg:${m.id}:${userId}`))
    }
    return rows
  })

  #onReminderDue = this.#guard('reminder', (e: GatewayEvents['reminder.due'][0]): NewNotification[] => {
    const now = this.#deps.clock.now()
    const rows: NewNotification[] = []
    for (const { id: userId } of this.#q.patientUsers!.all(e.patientId) as Array<{ id: string }>) {
      rows.push(...this.#pushRows(userId, {
        kind: 'reminder',
        ref_id: e.occurrenceId,
        ref_seq: null,
        severity: null,
        urgent: false,
        collapse_key: `reminder-${e.scheduleId}`,
        not_before: now,
        expires_at: now + REMINDER_TTL_MS,
      }, `reminder:${e.occurrenceId}:${userId}`))
    }
    return rows
  })

  /** A test notification to every place `userId` can be reached; returns how many were queued. */
  sendTest(userId: string): number {
    const now = this.#deps.clock.now()
    const last = this.#lastTest.get(userId)
    if (last !== undefined && now - last < TEST_EVERY_MS) {
      throw new RpmError('RPM_ERR_TOO_FREQUENT', `one test notification a minute: try again in ${Math.ceil((last + TEST_EVERY_MS - now) / 1000)} s`)
    }
    this.#lastTest.set(userId, now)
    const id = randomBytes(6).toString('hex')
    const base = { kind: 'test' as const, ref_id: null, ref_seq: null, severity: null, urgent: false, collapse_key: `test-${id}`, not_before: now, expires_at: now + TEST_TTL_MS }
    const rows = this.#pushRows(userId, base, `test:${id}:${userId}`)
    if (this.#sms && this.#smsActive(userId)) rows.push({ ...base, user_id: userId, channel: 'sms', target_id: null, dedupe_key: `test:${id}:${userId}:sms` })
    this.#enqueue(rows, 'test')
    return rows.length
  }

  /**
   * Texts a verification code straight away (not through the outbox: a code is short-lived and
   * kept only as a hash, so a retry later could not send it). Throws when it could not be sent.
   */
  async sendVerificationCode(userId: string, phone: string, code: string): Promise<void> {
    if (!this.#sms) throw new RpmError('RPM_ERR_CHANNEL_OFF', 'SMS is not configured on this gateway (notify.sms)')
    const now = this.#deps.clock.now()
    const last = this.#lastCode.get(userId)
    if (last !== undefined && now - last < TEST_EVERY_MS) {
      throw new RpmError('RPM_ERR_TOO_FREQUENT', `one code a minute: try again in ${Math.ceil((last + TEST_EVERY_MS - now) / 1000)} s`)
    }
    this.#lastCode.set(userId, now)
    const text = `Your rpm-gateway verification code is ${code}. It expires in 10 minutes.`
    const id = `verify-${randomBytes(6).toString('hex')}`
    const outcome = await this.#sms.send({ id, kind: 'test', urgent: false, collapseKey: id, ttlSeconds: 600, content: { title: '', body: '', data: {} } }, { phone, text })
    if (outcome.ok) {
      this.#deps.metrics.notificationsSent.inc({ channel: 'sms' })
      return
    }
    this.#deps.metrics.notificationsFailed.inc({ channel: 'sms', reason: outcome.code })
    if (outcome.kind === 'opted_out') {
      this.directory.optOutPhone(phone, 'twilio error 21610 (recipient replied STOP)')
      throw new RpmError('RPM_ERR_CONFLICT', 'this number has replied STOP to our texts: reply START from it, then try again', { details: { field: 'phone' } })
    }
    if (outcome.kind === 'permanent') throw new RpmError('RPM_ERR_BAD_REQUEST', 'this number cannot receive texts', { details: { field: 'phone' } })
    this.#deps.log.warn({ userId, reason: outcome.code }, 'verification code could not be texted')
    throw new RpmError('RPM_ERR_UNAVAILABLE', 'the code could not be texted just now: try again in a minute')
  }

  #smsActive(userId: string): boolean {
    const c = this.directory.sms(userId)
    return c !== undefined && toSmsView(c).active && this.directory.preferences(userId).channels.sms
  }

  // --- dispatch ----------------------------------------------------------------------------------

  /** How long an in-doubt send waits before it goes again: for SMS, time for Twilio's status callback (when one was asked for). */
  #inDoubtWaitMs(channel: NotifyChannel): number {
    return channel === 'sms' && this.#deps.config.sms.publicUrl ? this.#deps.config.sms.inDoubtWaitSeconds * 1000 : 0
  }

  start(): void {
    if (this.#running) return
    if (this.#sms && !this.#deps.config.sms.publicUrl) {
      this.#deps.log.warn('notify.sms.publicUrl is not set: no delivery-status or STOP callbacks from Twilio')
    }
    const recovered = this.outbox.recoverInDoubt(this.#inDoubtWaitMs('sms'))
    if (recovered > 0) this.#deps.log.warn({ count: recovered }, 'sends left without an outcome by a stop or crash are sent again')
    this.#running = true
    this.#housekeeping = setInterval(() => this.#housekeep(), HOUSEKEEPING_MS)
    this.#housekeeping.unref()
    this.#housekeep()
    for (const name of CHANNELS) {
      const channel = this.#channels[name]
      if (channel) this.#lanes.push(this.#lane(name, channel))
    }
  }

  async stop(): Promise<void> {
    for (const off of this.#unsubscribe.splice(0)) off()
    clearInterval(this.#housekeeping)
    if (this.#running) {
      this.#running = false
      this.#wake()
      const lanes = Promise.all(this.#lanes.splice(0))
      let timer: NodeJS.Timeout | undefined
      await Promise.race([lanes, new Promise((r) => (timer = setTimeout(r, STOP_GRACE_MS)))])
      clearTimeout(timer)
    }
    await Promise.all(Object.values(this.#channels).map((c) => c.close().catch(() => {})))
  }

  #wake(): void {
    for (const resolve of this.#sleepers) resolve()
    this.#sleepers.clear()
  }

  /** Wakes the lanes once the current transaction (if any) has committed. */
  #wakeSoon(): void {
    if (this.#wakeQueued) return
    this.#wakeQueued = true
    setImmediate(() => {
      this.#wakeQueued = false
      this.#wake()
    })
  }

  #idle(): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, this.#deps.config.tickMs)
      function done() {
        clearTimeout(timer)
        resolve()
      }
      this.#sleepers.add(done)
    })
  }

  async #lane(name: NotifyChannel, channel: Channel<unknown>): Promise<void> {
    while (this.#running) {
      let row: DueNotification | undefined
      try {
        row = this.outbox.nextDue(name, this.#deps.clock.now())
      } catch (err) {
        if (!this.#running) return
        this.#deps.log.error({ err: (err as Error).message, channel: name }, 'notification outbox unreadable')
      }
      if (!row) {
        await this.#idle()
        continue
      }
      try {
        await this.#dispatch(name, channel, row)
      } catch (err) {
        // The database closed under a send at stop: the row stays claimed, in doubt at the next start.
        if (!this.#running) return
        this.#deps.log.error({ err: (err as Error).message, notificationId: row.id, channel: name }, 'notification dispatch failed')
        await this.#idle()
      }
    }
  }

  /** The pending gauge, and settled notifications past notify.retentionDays deleted. */
  #housekeep(): void {
    try {
      const g = this.#deps.metrics.notificationsPending
      for (const c of CHANNELS) g.set({ channel: c }, 0)
      for (const p of this.outbox.pending()) g.set({ channel: p.channel }, p.n)
      const now = this.#deps.clock.now()
      if (now - this.#purgedAt >= PURGE_EVERY_MS) {
        this.#purgedAt = now
        const purged = this.outbox.purge(new Date(now - this.#deps.config.retentionDays * 86_400_000).toISOString())
        if (purged > 0) this.#deps.log.info({ count: purged }, 'settled notifications past notify.retentionDays deleted')
      }
    } catch (err) {
      if (this.#running) this.#deps.log.error({ err: (err as Error).message }, 'notification housekeeping failed')
    }
  }

  #drop(row: DueNotification, reason: string): void {
    this.outbox.drop(row.id, reason)
    this.#deps.metrics.notificationsDropped.inc({ channel: row.channel, reason })
  }

  /** Checks what may have changed since the row was written, then sends it and records the outcome. */
  async #dispatch(name: NotifyChannel, channel: Channel<unknown>, row: DueNotification): Promise<void> {
    const { deps } = { deps: this.#deps }
    const now = deps.clock.now()
    if (now >= row.expires_at) return this.#drop(row, 'expired')
    if ((this.#q.userStatus!.get(row.user_id) as { status: string } | undefined)?.status !== 'active') return this.#drop(row, 'user_disabled')
    if (row.kind === 'message' && row.ref_id && row.ref_seq !== null) {
      const unreadSince = deps.firstUnreadAt(row.user_id, row.ref_id, row.ref_seq)
      if (unreadSince === null) return this.#drop(row, 'read')
      // Still connected: the oldest unread message gets its full delay (a newer one may have joined this notification).
      const readBy = unreadSince + deps.config.messageDelaySeconds * 1000
      if (deps.presence(row.user_id) !== 'offline' && readBy > now) {
        this.outbox.defer(row.id, readBy)
        return
      }
    }
    if (row.kind === 'alert' && row.ref_id && !deps.alertOpen(row.ref_id)) return this.#drop(row, 'alert_closed')
    const prefs = this.directory.preferences(row.user_id)
    if (!prefs.channels[name] || (row.kind === 'message' && !prefs.messages)) return this.#drop(row, 'preference')
    // Quiet hours hold routine notifications until they end. Urgent alerts, reminders at the
    // times the patient chose, and a test the user asked for go at once.
    if (!row.urgent && row.kind === 'message' && prefs.quietHours) {
      const until = quietUntil(prefs.quietHours, now)
      if (until !== null) {
        this.outbox.defer(row.id, until)
        return
      }
    }
    let to: unknown
    if (name === 'sms') {
      const contact = this.directory.sms(row.user_id)
      if (!contact || !toSmsView(contact).active) return this.#drop(row, contact?.opted_out_at ? 'opted_out' : 'no_consent')
      to = { phone: contact.phone, text: '' }
    } else {
      const target = row.target_id ? this.directory.target(row.target_id) : undefined
      if (!target || target.user_id !== row.user_id) return this.#drop(row, 'no_target')
      to = target satisfies PushTarget
    }
    if (!this.outbox.claim(row.id)) return
    const content = contentFor({
      id: row.id,
      kind: row.kind,
      audience: row.role === 'patient' ? 'patient' : 'staff',
      severity: row.severity,
      refId: row.ref_id,
      step: row.ref_seq ?? 0,
    })
    if (name === 'sms') (to as { text: string }).text = smsText(content, deps.config.consoleUrl)
    const delivery: Delivery = {
      id: row.id,
      kind: row.kind,
      urgent: row.urgent === 1,
      collapseKey: row.collapse_key,
      ttlSeconds: Math.max(1, Math.floor((row.expires_at - now) / 1000)),
      content,
    }
    const end = deps.metrics.notificationSendSeconds.startTimer({ channel: name })
    const outcome = await channel.send(delivery, to)
    end()
    this.#settle(name, row, outcome, to)
  }

  #settle(name: NotifyChannel, row: DueNotification, outcome: SendOutcome, to: unknown): void {
    const { metrics, log, config, clock } = this.#deps
    if (outcome.ok) {
      this.outbox.sent(row.id, outcome.providerRef ?? null)
      if (row.target_id) this.directory.targetSucceeded(row.target_id)
      this.#failures[name] = 0
      metrics.notificationsSent.inc({ channel: name })
      return
    }
    const attempts = row.attempts + 1
    switch (outcome.kind) {
      case 'unknown':
      case 'temporary': {
        this.#failures[name]++
        if (attempts >= config.maxAttempts) {
          this.outbox.failed(row.id, outcome.code)
          metrics.notificationsFailed.inc({ channel: name, reason: outcome.code })
          log.warn({ notificationId: row.id, channel: name, kind: row.kind, attempts, reason: outcome.code }, 'notification given up after repeated failures')
          return
        }
        const backoff = Math.min(config.retryDelayMs * 2 ** (attempts - 1), config.maxRetryDelayMs)
        if (outcome.kind === 'unknown') {
          // It may have gone: wait for Twilio's status callback (which settles it) before sending again.
          this.outbox.retryInDoubt(row.id, outcome.code, clock.now() + Math.max(backoff, this.#inDoubtWaitMs(name)))
        } else {
          this.outbox.retry(row.id, outcome.code, clock.now() + Math.max(backoff, outcome.retryAfterMs ?? 0))
        }
        metrics.notificationsRetried.inc({ channel: name, reason: outcome.code })
        return
      }
      case 'gone': {
        // RFC 8030 §7.3 / FCM UNREGISTERED: the browser or app dropped it; never send there again.
        if (row.target_id) {
          this.directory.forgetTarget(row.target_id)
          const others = this.outbox.dropForTarget(row.target_id, 'endpoint_gone')
          if (others > 0) metrics.notificationsDropped.inc({ channel: name, reason: 'endpoint_gone' }, others)
        }
        this.outbox.drop(row.id, 'endpoint_gone')
        metrics.notificationsDropped.inc({ channel: name, reason: 'endpoint_gone' })
        log.info({ notificationId: row.id, channel: name, targetId: row.target_id, reason: outcome.code }, 'push target gone: removed')
        return
      }
      case 'opted_out': {
        const users = this.directory.optOutPhone((to as { phone: string }).phone, 'twilio error 21610 (recipient replied STOP)')
        this.outbox.drop(row.id, 'opted_out')
        metrics.notificationsDropped.inc({ channel: name, reason: 'opted_out' })
        log.info({ notificationId: row.id, users }, 'SMS recipient has opted out: recorded')
        return
      }
      case 'permanent':
        this.outbox.failed(row.id, outcome.code)
        metrics.notificationsFailed.inc({ channel: name, reason: outcome.code })
        log.warn({ notificationId: row.id, channel: name, kind: row.kind, reason: outcome.code }, 'notification refused')
    }
  }

  // --- Twilio callbacks --------------------------------------------------------------------------

  #verify(signature: string | undefined, url: string, params: Record<string, string>): void {
    if (!this.#sms) throw new RpmError('RPM_ERR_CHANNEL_OFF', 'SMS is not configured (notify.sms)')
    // The signature covers the URL Twilio called; without the configured one it cannot be checked.
    if (!this.#deps.config.sms.publicUrl) throw new RpmError('RPM_ERR_CHANNEL_OFF', 'Twilio callbacks are off: notify.sms.publicUrl is not set')
    if (!signature || !this.#sms.verify(signature, url, params)) throw new RpmError('RPM_ERR_WEBHOOK_SIGNATURE', 'the X-Twilio-Signature header does not match this request')
  }

  /** Twilio's delivery status callback (signed); `url` is the full URL Twilio called. */
  smsStatus(signature: string | undefined, url: string, params: Record<string, string>): void {
    this.#verify(signature, url, params)
    const id = new URL(url).searchParams.get('notification')
    const sid = params.MessageSid ?? params.SmsSid ?? ''
    const row = (id ? this.outbox.get(id) : undefined) ?? (sid ? this.outbox.byProviderRef(sid) : undefined)
    if (!row) return
    const status = (params.MessageStatus ?? params.SmsStatus ?? 'unknown').slice(0, 20)
    // A crash lost this send's outcome, but Twilio has the message: it went, do not text again.
    if (row.status === 'pending' && row.in_doubt === 1 && sid) this.outbox.confirmInDoubt(row.id, sid)
    this.outbox.setDelivery(row.id, params.ErrorCode ? `${status} (error ${params.ErrorCode.slice(0, 10)})` : status)
    this.#deps.metrics.smsDeliveryStatus.inc({ status: ['queued', 'sending', 'sent', 'delivered', 'undelivered', 'failed', 'read', 'accepted', 'scheduled', 'canceled'].includes(status) ? status : 'other' })
    if (params.ErrorCode === '21610') {
      const contact = this.directory.sms(row.user_id)
      if (contact) this.directory.optOutPhone(contact.phone, 'twilio error 21610 (recipient replied STOP)')
    }
  }

  /**
   * An SMS sent to the gateway's number (signed): STOP and its synonyms withdraw consent, START
   * gives it again. Twilio's Advanced Opt-Out sends `OptOutType`; plain keywords are read too.
   */
  smsInbound(signature: string | undefined, url: string, params: Record<string, string>): { change: 'opted_out' | 'opted_in' | null; users: string[] } {
    this.#verify(signature, url, params)
    const phone = params.From ?? ''
    const word = (params.OptOutType ?? params.Body ?? '').trim().toUpperCase()
    if (STOP_WORDS.has(word)) return { change: 'opted_out', users: this.directory.optOutPhone(phone, 'sms reply STOP') }
    if (START_WORDS.has(word)) return { change: 'opted_in', users: this.directory.optInPhone(phone, 'sms reply START') }
    return { change: null, users: [] }
  }
}
