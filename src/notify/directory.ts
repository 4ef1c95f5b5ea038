import { createHash, randomBytes, randomInt, timingSafeEqual } from 'node:crypto'
import type { Statement } from 'better-sqlite3'
import type { Clock } from '../clock.ts'
import { RpmError } from '../errors.ts'
import type { Store } from '../store/db.ts'
import type { NotificationPrefsTable, PushTargetTable, SmsContactTable } from '../store/schema.ts'
import type { QuietHours } from './quiet-hours.ts'

export interface PushTargetView {
  id: string
  type: 'webpush' | 'fcm'
  platform: 'web' | 'android' | 'ios'
  label: string | null
  createdAt: string
  lastSuccessAt: string | null
}

export interface Preferences {
  channels: { webpush: boolean; fcm: boolean; sms: boolean }
  /** Push for new messages (alerts and reminders follow `channels` only). */
  messages: boolean
  /** Non-urgent notifications wait for the end of these; urgent and critical alerts do not. */
  quietHours: QuietHours | null
}

export interface SmsContactView {
  phone: string
  consentedAt: string | null
  consentSource: string | null
  optedOutAt: string | null
  optOutSource: string | null
  /** When the user entered the code texted to the number (null: not yet). */
  verifiedAt: string | null
  /** Consent given, the number verified, and consent not withdrawn: SMS may be sent. */
  active: boolean
}

export type NewTarget =
  | { type: 'webpush'; endpoint: string; p256dh: string; auth: string; label?: string }
  | { type: 'fcm'; token: string; platform: 'android' | 'ios' | 'web'; label?: string }

/** A texted code works for 10 minutes and 5 tries. */
const CODE_TTL_MS = 10 * 60_000
const CODE_MAX_ATTEMPTS = 5
const codeHash = (userId: string, code: string) => createHash('sha256').update(`${userId}:${code}`).digest('hex')

const DEFAULT_PREFS: Preferences = { channels: { webpush: true, fcm: true, sms: true }, messages: true, quietHours: null }

const hostAllowed = (host: string, allowed: readonly string[]): boolean =>
  allowed.some((a) => (a.startsWith('.') ? host.endsWith(a) || host === a.slice(1) : host === a))

const invalid = (field: string, message: string) => new RpmError('RPM_ERR_BAD_REQUEST', message, { details: { field } })

function toView(r: PushTargetTable): PushTargetView {
  return { id: r.id, type: r.channel, platform: r.platform, label: r.label, createdAt: r.created_at, lastSuccessAt: r.last_success_at }
}

export function toSmsView(r: SmsContactTable): SmsContactView {
  return {
    phone: r.phone,
    consentedAt: r.consented_at,
    consentSource: r.consent_source,
    optedOutAt: r.opted_out_at,
    optOutSource: r.opt_out_source,
    verifiedAt: r.verified_at,
    active: r.consented_at !== null && r.verified_at !== null && r.opted_out_at === null,
  }
}

/** Where and how each user wants to be reached: push targets, SMS number and consent, preferences. */
export class NotifyDirectory {
  readonly #q: Record<string, Statement>

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly allowedPushHosts: readonly string[],
  ) {
    const p = (sql: string) => store.sqlite.prepare(sql)
    this.#q = {
      targetByAddress: p('SELECT * FROM push_targets WHERE channel = ? AND address = ?'),
      targetById: p('SELECT * FROM push_targets WHERE id = ?'),
      targetsOf: p('SELECT * FROM push_targets WHERE user_id = ? ORDER BY created_at, id'),
      insertTarget: p(`INSERT INTO push_targets (id, user_id, channel, address, p256dh, auth, platform, label, created_at)
        VALUES (@id, @user_id, @channel, @address, @p256dh, @auth, @platform, @label, @created_at)`),
      // The same browser or app signed in by someone else: it is theirs now, keys refreshed.
      moveTarget: p('UPDATE push_targets SET user_id = @user_id, p256dh = @p256dh, auth = @auth, platform = @platform, label = @label WHERE id = @id'),
      deleteTarget: p('DELETE FROM push_targets WHERE id = ?'),
      targetSucceeded: p('UPDATE push_targets SET last_success_at = ? WHERE id = ?'),
      prefs: p('SELECT * FROM notification_prefs WHERE user_id = ?'),
      upsertPrefs: p(`INSERT INTO notification_prefs (user_id, webpush, fcm, sms, messages, quiet_start, quiet_end, timezone, updated_at)
        VALUES (@user_id, @webpush, @fcm, @sms, @messages, @quiet_start, @quiet_end, @timezone, @updated_at)
        ON CONFLICT (user_id) DO UPDATE SET webpush = excluded.webpush, fcm = excluded.fcm, sms = excluded.sms, messages = excluded.messages,
          quiet_start = excluded.quiet_start, quiet_end = excluded.quiet_end, timezone = excluded.timezone, updated_at = excluded.updated_at`),
      sms: p('SELECT * FROM sms_contacts WHERE user_id = ?'),
      smsByPhone: p('SELECT * FROM sms_contacts WHERE phone = ?'),
      // A new number (or consent given again) needs a new code; the same verified number keeps its verification.
      upsertSms: p(`INSERT INTO sms_contacts (user_id, phone, consented_at, consent_source, opted_out_at, opt_out_source, verified_at, code_hash, code_expires_at, code_attempts, updated_at)
        VALUES (@user_id, @phone, @consented_at, @consent_source, NULL, NULL, NULL, @code_hash, @code_expires_at, 0, @updated_at)
        ON CONFLICT (user_id) DO UPDATE SET consented_at = excluded.consented_at, consent_source = excluded.consent_source,
          opted_out_at = NULL, opt_out_source = NULL,
          verified_at = CASE WHEN sms_contacts.phone = excluded.phone THEN sms_contacts.verified_at ELSE NULL END,
          phone = excluded.phone, code_hash = excluded.code_hash, code_expires_at = excluded.code_expires_at, code_attempts = 0, updated_at = excluded.updated_at`),
      codeTried: p('UPDATE sms_contacts SET code_attempts = code_attempts + 1, updated_at = ? WHERE user_id = ?'),
      verified: p('UPDATE sms_contacts SET verified_at = ?, code_hash = NULL, code_expires_at = NULL, code_attempts = 0, updated_at = ? WHERE user_id = ?'),
      optOutUser: p('UPDATE sms_contacts SET opted_out_at = ?, opt_out_source = ?, updated_at = ? WHERE user_id = ? AND opted_out_at IS NULL'),
      optOutPhone: p('UPDATE sms_contacts SET opted_out_at = ?, opt_out_source = ?, updated_at = ? WHERE phone = ? AND opted_out_at IS NULL'),
      // Only what a STOP (or Twilio's 21610) withdrew: consent the user withdrew in the app stays withdrawn.
      optInPhone: p(`UPDATE sms_contacts SET consented_at = ?, consent_source = ?, opted_out_at = NULL, opt_out_source = NULL, updated_at = ?
        WHERE phone = ? AND opted_out_at IS NOT NULL AND (opt_out_source LIKE 'sms reply%' OR opt_out_source LIKE 'twilio error 21610%')`),
    }
  }

  #now(): string {
    return new Date(this.clock.now()).toISOString()
  }

  // --- push targets ------------------------------------------------------------------------------

  /** Registers a browser subscription or an app token for `userId`; the same one again is not a second. */
  addTarget(userId: string, t: NewTarget): { target: PushTargetView; created: boolean } {
    let row: Omit<PushTargetTable, 'last_success_at'>
    if (t.type === 'webpush') {
      let url: URL
      try {
        url = new URL(t.endpoint)
      } catch {
        throw invalid('subscription.endpoint', 'subscription.endpoint must be an https URL')
      }
      if (url.protocol !== 'https:') throw invalid('subscription.endpoint', 'subscription.endpoint must be an https URL')
      // Only the known push services: an endpoint is a URL the gateway will POST to.
      if (!hostAllowed(url.hostname, this.allowedPushHosts)) {
        throw invalid('subscription.endpoint', `subscription.endpoint: ${url.hostname} is not a known push service (notify.webpush.allowedHosts)`)
      }
      const point = Buffer.from(t.p256dh, 'base64url')
      if (point.length !== 65 || point[0] !== 4) throw invalid('subscription.keys.p256dh', 'subscription.keys.p256dh must be an uncompressed P-256 public key (65 bytes, base64url)')
      if (Buffer.from(t.auth, 'base64url').length !== 16) throw invalid('subscription.keys.auth', 'subscription.keys.auth must be 16 bytes, base64url')
      row = { id: '', user_id: userId, channel: 'webpush', address: t.endpoint, p256dh: t.p256dh, auth: t.auth, platform: 'web', label: t.label ?? null, created_at: this.#now() }
    } else {
      row = { id: '', user_id: userId, channel: 'fcm', address: t.token, p256dh: null, auth: null, platform: t.platform, label: t.label ?? null, created_at: this.#now() }
    }
    return this.store.sqlite.transaction(() => {
      const existing = this.#q.targetByAddress!.get(row.channel, row.address) as PushTargetTable | undefined
      if (existing) {
        this.#q.moveTarget!.run({ ...row, id: existing.id })
        return { target: toView(this.#q.targetById!.get(existing.id) as PushTargetTable), created: false }
      }
      row.id = `pt-${randomBytes(8).toString('hex')}`
      this.#q.insertTarget!.run(row)
      return { target: toView(this.#q.targetById!.get(row.id) as PushTargetTable), created: true }
    }).immediate()
  }

  targets(userId: string): PushTargetView[] {
    return (this.#q.targetsOf!.all(userId) as PushTargetTable[]).map(toView)
  }

  /** The rows themselves, for sending. */
  targetRows(userId: string): PushTargetTable[] {
    return this.#q.targetsOf!.all(userId) as PushTargetTable[]
  }

  target(id: string): PushTargetTable | undefined {
    return this.#q.targetById!.get(id) as PushTargetTable | undefined
  }

  /** Removes one of `userId`'s targets; false when it is not theirs or not there. */
  removeTarget(userId: string, id: string): boolean {
    const row = this.target(id)
    if (!row || row.user_id !== userId) return false
    this.#q.deleteTarget!.run(id)
    return true
  }

  /** A push service said the subscription or token is gone for good. */
  forgetTarget(id: string): void {
    this.#q.deleteTarget!.run(id)
  }

  targetSucceeded(id: string): void {
    this.#q.targetSucceeded!.run(this.#now(), id)
  }

  // --- preferences -------------------------------------------------------------------------------

  preferences(userId: string): Preferences {
    const r = this.#q.prefs!.get(userId) as NotificationPrefsTable | undefined
    if (!r) return structuredClone(DEFAULT_PREFS)
    return {
      channels: { webpush: r.webpush === 1, fcm: r.fcm === 1, sms: r.sms === 1 },
      messages: r.messages === 1,
      quietHours: r.quiet_start && r.quiet_end && r.timezone ? { start: r.quiet_start, end: r.quiet_end, timezone: r.timezone } : null,
    }
  }

  setPreferences(userId: string, p: Preferences): Preferences {
    this.#q.upsertPrefs!.run({
      user_id: userId,
      webpush: p.channels.webpush ? 1 : 0,
      fcm: p.channels.fcm ? 1 : 0,
      sms: p.channels.sms ? 1 : 0,
      messages: p.messages ? 1 : 0,
      quiet_start: p.quietHours?.start ?? null,
      quiet_end: p.quietHours?.end ?? null,
      timezone: p.quietHours?.timezone ?? null,
      updated_at: this.#now(),
    })
    return this.preferences(userId)
  }

  // --- SMS ---------------------------------------------------------------------------------------

  sms(userId: string): SmsContactTable | undefined {
    return this.#q.sms!.get(userId) as SmsContactTable | undefined
  }

  /**
   * The user agrees to be texted at `phone`: recorded with the time and how it was given. Returns
   * the code to text to the number (kept only as a hash) unless that number is verified already.
   */
  consentToSms(userId: string, phone: string, source: string): { contact: SmsContactTable; code: string | null } {
    const at = this.#now()
    const before = this.sms(userId)
    const known = before !== undefined && before.phone === phone && before.verified_at !== null
    const code = known ? null : randomInt(0, 1_000_000).toString().padStart(6, '0')
    this.#q.upsertSms!.run({
      user_id: userId, phone, consented_at: at, consent_source: source, updated_at: at,
      code_hash: code ? codeHash(userId, code) : null,
      code_expires_at: code ? new Date(this.clock.now() + CODE_TTL_MS).toISOString() : null,
    })
    return { contact: this.sms(userId)!, code }
  }

  /** The code the user typed: verifies the number when it matches, within its time and tries. */
  verifySms(userId: string, code: string): SmsContactTable {
    const c = this.sms(userId)
    if (!c) throw new RpmError('RPM_ERR_NOT_FOUND', 'no SMS number on record', { details: { field: 'phone' } })
    if (c.verified_at !== null) return c
    if (!c.code_hash || !c.code_expires_at || Date.parse(c.code_expires_at) <= this.clock.now() || c.code_attempts >= CODE_MAX_ATTEMPTS) {
      throw new RpmError('RPM_ERR_CONFLICT', 'the code has expired or was tried too often: ask for a new one (PUT /api/v1/notifications/sms)', { details: { field: 'code' } })
    }
    this.#q.codeTried!.run(this.#now(), userId)
    const given = Buffer.from(codeHash(userId, code), 'hex')
    if (!timingSafeEqual(given, Buffer.from(c.code_hash, 'hex'))) {
      throw new RpmError('RPM_ERR_BAD_REQUEST', 'that code is not the one texted to the number', { details: { field: 'code' } })
    }
    const at = this.#now()
    this.#q.verified!.run(at, at, userId)
    return this.sms(userId)!
  }

  /** The user withdraws consent; the number is kept so the record shows what was withdrawn. */
  optOutUser(userId: string, source: string): SmsContactTable | undefined {
    const at = this.#now()
    this.#q.optOutUser!.run(at, source, at, userId)
    return this.sms(userId)
  }

  /** Every user at this number stops getting SMS (STOP reply, Twilio 21610). Returns the user ids. */
  optOutPhone(phone: string, source: string): string[] {
    const at = this.#now()
    const users = (this.#q.smsByPhone!.all(phone) as SmsContactTable[]).filter((r) => r.opted_out_at === null).map((r) => r.user_id)
    this.#q.optOutPhone!.run(at, source, at, phone)
    return users
  }

  /** START after STOP: the number's holder asked to be texted again. Returns the user ids. */
  optInPhone(phone: string, source: string): string[] {
    const at = this.#now()
    const users = (this.#q.smsByPhone!.all(phone) as SmsContactTable[])
      .filter((r) => r.opted_out_at !== null && (r.opt_out_source?.startsWith('sms reply') || r.opt_out_source?.startsWith('twilio error 21610')))
      .map((r) => r.user_id)
    this.#q.optInPhone!.run(at, source, at, phone)
    return users
  }
}
