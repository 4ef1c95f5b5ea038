import { randomBytes } from 'node:crypto'
import type { Statement } from 'better-sqlite3'
import type { Clock } from '../clock.ts'
import type { Store } from '../store/db.ts'
import type { NotificationStatus, NotificationTable, NotifyChannel } from '../store/schema.ts'

export type NewNotification = Pick<NotificationTable, 'user_id' | 'channel' | 'target_id' | 'kind' | 'ref_id' | 'ref_seq' | 'severity' | 'collapse_key' | 'dedupe_key' | 'not_before' | 'expires_at'> & {
  urgent: boolean
}

/** A notification with its recipient's role, as the dispatcher reads it. */
export type DueNotification = NotificationTable & { role: string | null }

export interface NotificationView {
  id: string
  userId: string
  channel: NotifyChannel
  kind: NotificationTable['kind']
  refId: string | null
  urgent: boolean
  status: NotificationStatus
  attempts: number
  reason: string | null
  createdAt: string
  sentAt: string | null
  deliveryStatus: string | null
}

export const toView = (r: NotificationTable): NotificationView => ({
  id: r.id,
  userId: r.user_id,
  channel: r.channel,
  kind: r.kind,
  refId: r.ref_id,
  urgent: r.urgent === 1,
  status: r.status,
  attempts: r.attempts,
  reason: r.reason,
  createdAt: r.created_at,
  sentAt: r.sent_at,
  deliveryStatus: r.delivery_status,
})

/**
 * The notification outbox. A notification is a row before anything is sent; a send is claimed
 * (`sending`, committed) before the request leaves and settled after the answer, so a crash
 * leaves at most the sends that were in flight without an outcome (`in_doubt`).
 */
export class Outbox {
  readonly #q: Record<string, Statement>
  #counter = 0
  readonly #suffix = randomBytes(3).toString('hex')

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
  ) {
    const p = (sql: string) => store.sqlite.prepare(sql)
    this.#q = {
      insert: p(`INSERT INTO notifications (id, user_id, channel, target_id, kind, ref_id, ref_seq, severity, urgent, collapse_key, dedupe_key,
          status, attempts, in_doubt, not_before, expires_at, created_at, updated_at)
        VALUES (@id, @user_id, @channel, @target_id, @kind, @ref_id, @ref_seq, @severity, @urgent, @collapse_key, @dedupe_key,
          'pending', 0, 0, @not_before, @expires_at, @created_at, @created_at)
        ON CONFLICT (dedupe_key) DO NOTHING`),
      // A newer message in a thread that already has a notification waiting: that one covers it.
      // Its time moves earlier when the new one is due sooner (the recipient went offline).
      coalesce: p(`UPDATE notifications SET ref_seq = max(ref_seq, @ref_seq), not_before = min(not_before, @not_before), updated_at = @at
        WHERE user_id = @user_id AND collapse_key = @collapse_key AND status = 'pending' AND kind = 'message' AND channel = @channel AND target_id IS @target_id`),
      due: p(`SELECT n.*, u.role FROM notifications n LEFT JOIN users u ON u.id = n.user_id
        WHERE n.channel = ? AND n.status = 'pending' AND n.not_before <= ? ORDER BY n.urgent DESC, n.not_before LIMIT 1`),
      claim: p("UPDATE notifications SET status = 'sending', attempts = attempts + 1, updated_at = ? WHERE id = ? AND status = 'pending'"),
      settle: p('UPDATE notifications SET status = @status, reason = @reason, provider_ref = coalesce(@provider_ref, provider_ref), sent_at = @sent_at, in_doubt = 0, updated_at = @at WHERE id = @id'),
      retry: p("UPDATE notifications SET status = 'pending', reason = @reason, not_before = @not_before, in_doubt = @in_doubt, updated_at = @at WHERE id = @id"),
      defer: p("UPDATE notifications SET not_before = ?, updated_at = ? WHERE id = ? AND status = 'pending'"),
      drop: p("UPDATE notifications SET status = 'dropped', reason = ?, updated_at = ? WHERE id = ? AND status IN ('pending', 'sending')"),
      dropForTarget: p("UPDATE notifications SET status = 'dropped', reason = ?, updated_at = ? WHERE target_id = ? AND status = 'pending'"),
      inDoubt: p("SELECT id, channel FROM notifications WHERE status = 'sending'"),
      markInDoubt: p("UPDATE notifications SET status = 'pending', in_doubt = 1, not_before = ?, updated_at = ? WHERE id = ? AND status = 'sending'"),
      byId: p('SELECT * FROM notifications WHERE id = ?'),
      byProviderRef: p('SELECT * FROM notifications WHERE provider_ref = ?'),
      delivery: p('UPDATE notifications SET delivery_status = ?, updated_at = ? WHERE id = ?'),
      // A status callback for a send whose outcome a crash lost: Twilio has it, so it was sent.
      confirmInDoubt: p("UPDATE notifications SET status = 'sent', provider_ref = ?, sent_at = ?, in_doubt = 0, reason = 'confirmed by status callback', updated_at = ? WHERE id = ? AND status = 'pending' AND in_doubt = 1"),
      counts: p('SELECT channel, status, count(*) AS n FROM notifications GROUP BY channel, status'),
      pendingCounts: p("SELECT channel, count(*) AS n FROM notifications WHERE status = 'pending' GROUP BY channel"),
      purge: p("DELETE FROM notifications WHERE updated_at < ? AND status IN ('sent', 'failed', 'dropped')"),
      list: p(`SELECT * FROM notifications WHERE (@status IS NULL OR status = @status) AND (@user_id IS NULL OR user_id = @user_id)
        AND (@before IS NULL OR id < @before) ORDER BY id DESC LIMIT @limit`),
    }
  }

  #id(): string {
    this.#counter = (this.#counter + 1) % 1_679_616
    // Time first, so ids sort by creation.
    return `ntf-${this.clock.now().toString(36).padStart(9, '0')}${this.#counter.toString(36).padStart(4, '0')}${this.#suffix}`
  }

  #at(): string {
    return new Date(this.clock.now()).toISOString()
  }

  /** Records notifications (in the caller's transaction when there is one). Returns how many are new. */
  enqueue(rows: readonly NewNotification[]): number {
    let added = 0
    const at = this.#at()
    for (const r of rows) {
      if (r.kind === 'message' && this.#q.coalesce!.run({ ...r, at }).changes > 0) continue
      added += this.#q.insert!.run({ ...r, urgent: r.urgent ? 1 : 0, id: this.#id(), created_at: at }).changes
    }
    return added
  }

  /** The next notification of `channel` due now: urgent first, then oldest. */
  nextDue(channel: NotifyChannel, now: number): DueNotification | undefined {
    return this.#q.due!.get(channel, now) as DueNotification | undefined
  }

  /** Marks a send as under way (committed before the request leaves). False when someone else took it. */
  claim(id: string): boolean {
    return this.#q.claim!.run(this.#at(), id).changes === 1
  }

  sent(id: string, providerRef: string | null): void {
    const at = this.#at()
    this.#q.settle!.run({ id, status: 'sent', reason: null, provider_ref: providerRef, sent_at: at, at })
  }

  failed(id: string, reason: string): void {
    this.#q.settle!.run({ id, status: 'failed', reason, provider_ref: null, sent_at: null, at: this.#at() })
  }

  retry(id: string, reason: string, notBefore: number): void {
    this.#q.retry!.run({ id, reason, not_before: notBefore, in_doubt: 0, at: this.#at() })
  }

  /** The send may or may not have gone (the answer was lost): tried again later, as after a crash. */
  retryInDoubt(id: string, reason: string, notBefore: number): void {
    this.#q.retry!.run({ id, reason, not_before: notBefore, in_doubt: 1, at: this.#at() })
  }

  defer(id: string, notBefore: number): void {
    this.#q.defer!.run(notBefore, this.#at(), id)
  }

  drop(id: string, reason: string): void {
    this.#q.drop!.run(reason, this.#at(), id)
  }

  /** A target is gone: what else waits for it goes too. */
  dropForTarget(targetId: string, reason: string): number {
    return this.#q.dropForTarget!.run(reason, this.#at(), targetId).changes
  }

  /**
   * After a crash: sends claimed but never settled go back to pending, marked in doubt. Push
   * resends collapse on the device (same topic, tag and collapse key); an SMS waits `smsWaitMs`
   * for Twilio's status callback, which settles it without a second text.
   */
  recoverInDoubt(smsWaitMs: number): number {
    const now = this.clock.now()
    const at = this.#at()
    const rows = this.#q.inDoubt!.all() as Array<{ id: string; channel: NotifyChannel }>
    this.store.sqlite.transaction(() => {
      for (const r of rows) this.#q.markInDoubt!.run(r.channel === 'sms' ? now + smsWaitMs : now, at, r.id)
    })()
    return rows.length
  }

  get(id: string): NotificationTable | undefined {
    return this.#q.byId!.get(id) as NotificationTable | undefined
  }

  byProviderRef(ref: string): NotificationTable | undefined {
    return this.#q.byProviderRef!.get(ref) as NotificationTable | undefined
  }

  setDelivery(id: string, status: string): void {
    this.#q.delivery!.run(status, this.#at(), id)
  }

  confirmInDoubt(id: string, providerRef: string): boolean {
    const at = this.#at()
    return this.#q.confirmInDoubt!.run(providerRef, at, at, id).changes === 1
  }

  counts(): Array<{ channel: NotifyChannel; status: NotificationStatus; n: number }> {
    return this.#q.counts!.all() as Array<{ channel: NotifyChannel; status: NotificationStatus; n: number }>
  }

  pending(): Array<{ channel: NotifyChannel; n: number }> {
    return this.#q.pendingCounts!.all() as Array<{ channel: NotifyChannel; n: number }>
  }

  /** Deletes settled notifications last changed before `before` (ISO). Returns how many. */
  purge(before: string): number {
    return this.#q.purge!.run(before).changes
  }

  list(q: { status?: NotificationStatus; userId?: string; before?: string; limit: number }): NotificationTable[] {
    return this.#q.list!.all({ status: q.status ?? null, user_id: q.userId ?? null, before: q.before ?? null, limit: q.limit }) as NotificationTable[]
  }
}
