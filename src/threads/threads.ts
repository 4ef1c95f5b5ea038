import type { AcceptedReading } from '../ingest/types.ts'
import { randomBytes } from 'node:crypto'
import type { Statement } from 'better-sqlite3'
import type { Clock } from '../clock.ts'
import { RpmError } from '../errors.ts'
import type { EventBus } from '../events.ts'
import type { Store } from '../store/db.ts'
import type { MessageKind, MessageTable, MessageVersionTable, ThreadReceiptTable, ThreadTable } from '../store/schema.ts'
import type { Message, MessageVersion, Receipt, Sender, Thread, ThreadSummary, Viewer } from './types.ts'

export function toThread(row: ThreadTable): Thread {
  return { id: row.id, patientId: row.patient_id, createdAt: row.created_at, lastSeq: row.last_seq, lastRevision: row.last_revision }
}

export function toMessage(row: MessageTable): Message {
  return {
    id: row.id,
    threadId: row.thread_id,
    seq: row.seq,
    revision: row.revision,
    kind: row.kind,
    from: { role: row.sender_role, userId: row.sender_user_id, deviceId: row.sender_device_id },
    text: row.text,
    data: row.data_json ? (JSON.parse(row.data_json) as Record<string, unknown>) : null,
    replyTo: row.reply_to,
    clientMessageId: row.client_message_id,
    createdAt: row.created_at,
    editedAt: row.edited_at,
    deletedAt: row.deleted_at,
  }
}

export interface PostInput {
  threadId: string
  sender: Sender
  kind: MessageKind
  text?: string
  data?: Record<string, unknown>
  replyTo?: string
  /** The sender's id for this send: a retry with the same id returns the first message. */
  clientMessageId?: string
}

export interface HistoryQuery {
  /** Messages with a larger seq, oldest first. */
  after?: number
  /** Messages with a smaller seq; without `after`, the newest `limit` of them. */
  before?: number
  /** Messages changed (posted, edited, deleted) after this thread revision, in revision order. */
  changedAfter?: number
  limit: number
}

const senderKey = (s: Sender) => (s.type === 'user' ? s.userId : s.type === 'device' ? `device:${s.deviceId}` : 'system')
const notFound = (threadId: string) => new RpmError('RPM_ERR_NOT_FOUND', `no thread ${threadId}`, { details: { field: 'threadId' } })

/**
 * Patient–care-team threads: one per patient, created on first use. Every message gets the
 * thread's next seq inside one write transaction, so seqs have no gaps and a client resumes
 * with "everything after seq N". Messages are never removed: an edit keeps the earlier text in
 * message_versions, a delete leaves a tombstone that keeps its seq.
 */
export class Threads {
  /** Thread id per patient: a thread never changes patient. */
  readonly #threadIds = new Map<string, string>()
  /** Message ids grow with time (new keys land at the end of the id index); the suffix keeps two processes apart. */
  readonly #idSuffix = randomBytes(4).toString('hex')
  #idCounter = 0

  #messageId(): string {
    this.#idCounter = (this.#idCounter + 1) % 1_679_616 // 36^4
    return `msg-${this.#clock.now().toString(36).padStart(9, '0')}${this.#idCounter.toString(36).padStart(4, '0')}${this.#idSuffix}`
  }
  readonly #store: Store
  readonly #bus: EventBus
  readonly #clock: Clock
  readonly #q: Record<string, Statement>

  constructor(store: Store, bus: EventBus, clock: Clock) {
    this.#store = store
    this.#bus = bus
    this.#clock = clock
    const p = (sql: string) => store.sqlite.prepare(sql)
    this.#q = {
      threadById: p('SELECT * FROM threads WHERE id = ?'),
      threadByPatient: p('SELECT * FROM threads WHERE patient_id = ?'),
      insertThread: p('INSERT INTO threads (id, patient_id, created_at, last_seq, last_revision) VALUES (?, ?, ?, 0, 0) ON CONFLICT (patient_id) DO NOTHING'),
      patientExists: p('SELECT id FROM patients WHERE id = ?'),
      bumpSeq: p('UPDATE threads SET last_seq = last_seq + 1, last_revision = last_revision + 1 WHERE id = ? RETURNING last_seq, last_revision'),
      bumpSeqBy: p('UPDATE threads SET last_seq = last_seq + ?, last_revision = last_revision + ? WHERE id = ? RETURNING last_seq, last_revision'),
      bumpRevision: p('UPDATE threads SET last_revision = last_revision + 1 WHERE id = ? RETURNING last_revision'),
      byClientId: p('SELECT * FROM messages WHERE thread_id = ? AND sender_key = ? AND client_message_id = ?'),
      byId: p('SELECT * FROM messages WHERE thread_id = ? AND id = ?'),
      insertMessage: p(`INSERT INTO messages (id, thread_id, seq, revision, kind, sender_role, sender_user_id, sender_device_id, sender_key,
        client_message_id, text, data_json, reply_to, created_at, edited_at, deleted_at)
        VALUES (@id, @thread_id, @seq, @revision, @kind, @sender_role, @sender_user_id, @sender_device_id, @sender_key,
        @client_message_id, @text, @data_json, @reply_to, @created_at, NULL, NULL)`),
      after: p('SELECT * FROM messages WHERE thread_id = ? AND seq > ? AND seq < ? ORDER BY seq LIMIT ?'),
      beforeDesc: p('SELECT * FROM messages WHERE thread_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?'),
      changedAfter: p('SELECT * FROM messages WHERE thread_id = ? AND revision > ? ORDER BY revision LIMIT ?'),
      last: p('SELECT * FROM messages WHERE thread_id = ? ORDER BY seq DESC LIMIT 1'),
      versionCount: p('SELECT COUNT(*) AS n FROM message_versions WHERE message_id = ?'),
      insertVersion: p('INSERT INTO message_versions (message_id, version, text, written_at, replaced_at, replaced_by) VALUES (?, ?, ?, ?, ?, ?)'),
      versions: p('SELECT * FROM message_versions WHERE message_id = ? ORDER BY version'),
      edit: p('UPDATE messages SET text = ?, edited_at = ?, revision = ? WHERE id = ?'),
      tombstone: p('UPDATE messages SET text = NULL, data_json = NULL, deleted_at = ?, revision = ? WHERE id = ?'),
      receipt: p('SELECT * FROM thread_receipts WHERE thread_id = ? AND user_id = ?'),
      receipts: p('SELECT * FROM thread_receipts WHERE thread_id = ? ORDER BY user_id'),
      upsertReceipt: p(`INSERT INTO thread_receipts (thread_id, user_id, read_seq, delivered_seq, updated_at) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (thread_id, user_id) DO UPDATE SET read_seq = excluded.read_seq, delivered_seq = excluded.delivered_seq, updated_at = excluded.updated_at`),
      // A patient owns every patient-role message in their thread (sent from the app or a hub).
      // Reading cards and device events are not counted: they arrive all day and are seen as vitals.
      unread: p(`SELECT COUNT(*) AS n FROM messages WHERE thread_id = ? AND seq > ? AND deleted_at IS NULL AND kind NOT IN ('reading', 'device_event')
        AND NOT (sender_user_id IS NOT NULL AND sender_user_id = ?) AND NOT (? = 'patient' AND sender_role = 'patient')`),
      hubsOf: p("SELECT id FROM devices WHERE patient_id = ? AND kind = 'hub' AND status = 'active' ORDER BY id"),
    }
  }

  #now(): string {
    return new Date(this.#clock.now()).toISOString()
  }

  byId(threadId: string): Thread | undefined {
    const row = this.#q.threadById!.get(threadId) as ThreadTable | undefined
    return row ? toThread(row) : undefined
  }

  forPatient(patientId: string): Thread | undefined {
    const row = this.#q.threadByPatient!.get(patientId) as ThreadTable | undefined
    return row ? toThread(row) : undefined
  }

  /** The patient's thread, created on first use. */
  ensure(patientId: string): Thread {
    const existing = this.forPatient(patientId)
    if (existing) return existing
    if (!this.#q.patientExists!.get(patientId)) throw new RpmError('RPM_ERR_NOT_FOUND', `no patient ${patientId}`, { details: { field: 'patientId' } })
    this.#q.insertThread!.run(`thr-${randomBytes(8).toString('hex')}`, patientId, this.#now())
    return this.forPatient(patientId)!
  }

  /** Active hub devices of a patient: they show the thread and speak for the patient. */
  hubsOf(patientId: string): string[] {
    return (this.#q.hubsOf!.all(patientId) as Array<{ id: string }>).map((r) => r.id)
  }

  /**
   * Posts a message. Returns the first message and created=false when the same sender already
   * sent this clientMessageId in this thread (a retry), so a retry never duplicates.
   */
  post(input: PostInput): { message: Message; created: boolean } {
    const { message, created, announce } = this.postQuietly(input)
    announce()
    return { message, created }
  }

  /**
   * Posts without announcing: for a caller that commits more in the same transaction (an audit
   * entry) and calls `announce` once its own commit is done, so nobody hears of a message that
   * was rolled back.
   */
  postQuietly(input: PostInput): { message: Message; created: boolean; announce: () => void } {
    const thread = this.byId(input.threadId)
    if (!thread) throw notFound(input.threadId)
    // IMMEDIATE: take the write lock before reading, so another process cannot slip in between.
    const { row, created } = this.#store.sqlite.transaction(() => this.#insert(thread, input)).immediate()
    const message = toMessage(row)
    const announce = () => {
      if (created) this.#bus.emit('message.posted', { patientId: thread.patientId, message })
    }
    return { message, created, announce }
  }

  /**
   * A message from the gateway itself (an alert, a reminder) in the patient's thread, written in
   * the caller's transaction when there is one. `key` makes it idempotent: the same key posts
   * once. Call `announce` after the caller's commit.
   */
  postSystem(patientId: string, kind: 'alert' | 'reminder', text: string, data: Record<string, unknown>, key?: string): { message: Message; created: boolean; announce: () => void } {
    const thread = this.ensure(patientId)
    return this.postQuietly({
      threadId: thread.id,
      sender: { type: 'system', role: 'system' },
      kind,
      text,
      data,
      ...(key !== undefined ? { clientMessageId: key } : {}),
    })
  }

  /**
   * Inside the journal's own commit (the caller's transaction): one structured message per
   * accepted reading, so a reading and its thread message are stored together or not at all.
   * Returns what to announce once the commit is done.
   */
  appendReadings(readings: readonly AcceptedReading[]): Array<{ patientId: string; message: Message }> {
    // One sequence bump per thread for the whole batch.
    const byPatient = new Map<string, AcceptedReading[]>()
    for (const r of readings) {
      const list = byPatient.get(r.patientId)
      if (list) list.push(r)
      else byPatient.set(r.patientId, [r])
    }
    const now = this.#now()
    const posted: Array<{ patientId: string; message: Message }> = []
    for (const [patientId, list] of byPatient) {
      let threadId = this.#threadIds.get(patientId)
      if (threadId === undefined) {
        threadId = this.ensure(patientId).id
        this.#threadIds.set(patientId, threadId)
      }
      const last = this.#q.bumpSeqBy!.get(list.length, list.length, threadId) as { last_seq: number; last_revision: number }
      list.forEach((r, i) => {
        const offset = list.length - 1 - i
        const row: MessageTable = {
          id: this.#messageId(),
          thread_id: threadId,
          seq: last.last_seq - offset,
          revision: last.last_revision - offset,
          kind: 'reading',
          sender_role: 'device',
          sender_user_id: null,
          sender_device_id: r.deviceId,
          sender_key: `device:${r.deviceId}`,
          client_message_id: null, // the journal already made the reading unique
          text: null,
          data_json: JSON.stringify({ readingId: r.id, type: r.type, values: r.values, measuredAt: r.measuredAt, deviceId: r.deviceId }),
          reply_to: null,
          created_at: now,
          edited_at: null,
          deleted_at: null,
        }
        this.#q.insertMessage!.run(row)
        posted.push({ patientId, message: toMessage(row) })
      })
    }
    return posted
  }

  /** Inside a write transaction: the retry check, the next seq, the insert. */
  #insert(thread: Thread, input: PostInput): { row: MessageTable; created: boolean } {
    const key = senderKey(input.sender)
    const now = this.#now()
    const write = (): { row: MessageTable; created: boolean } => {
      if (input.clientMessageId !== undefined) {
        const first = this.#q.byClientId!.get(thread.id, key, input.clientMessageId) as MessageTable | undefined
        if (first) return { row: first, created: false }
      }
      if (input.replyTo !== undefined && !this.#q.byId!.get(thread.id, input.replyTo)) {
        throw new RpmError('RPM_ERR_BAD_REQUEST', 'replyTo must be a message in this thread', { details: { field: 'replyTo' } })
      }
      const next = this.#q.bumpSeq!.get(thread.id) as { last_seq: number; last_revision: number }
      const row: MessageTable = {
        id: this.#messageId(),
        thread_id: thread.id,
        seq: next.last_seq,
        revision: next.last_revision,
        kind: input.kind,
        sender_role: input.sender.role,
        sender_user_id: input.sender.type === 'user' ? input.sender.userId : null,
        sender_device_id: input.sender.type === 'device' ? input.sender.deviceId : null,
        sender_key: key,
        client_message_id: input.clientMessageId ?? null,
        text: input.text ?? null,
        data_json: input.data ? JSON.stringify(input.data) : null,
        reply_to: input.replyTo ?? null,
        created_at: now,
        edited_at: null,
        deleted_at: null,
      }
      this.#q.insertMessage!.run(row)
      return { row, created: true }
    }
    return write()
  }

  message(threadId: string, messageId: string): Message | undefined {
    const row = this.#q.byId!.get(threadId, messageId) as MessageTable | undefined
    return row ? toMessage(row) : undefined
  }

  /** A page of history: see HistoryQuery. `hasMore` says whether the page stopped at the limit. */
  history(threadId: string, query: HistoryQuery): { items: Message[]; hasMore: boolean } {
    const limit = query.limit
    let rows: MessageTable[]
    if (query.changedAfter !== undefined) {
      rows = this.#q.changedAfter!.all(threadId, query.changedAfter, limit + 1) as MessageTable[]
    } else if (query.after !== undefined || query.before === undefined) {
      rows = this.#q.after!.all(threadId, query.after ?? 0, query.before ?? Number.MAX_SAFE_INTEGER, limit + 1) as MessageTable[]
    } else {
      rows = (this.#q.beforeDesc!.all(threadId, query.before, limit + 1) as MessageTable[])
      const hasMore = rows.length > limit
      return { items: rows.slice(0, limit).reverse().map(toMessage), hasMore }
    }
    return { items: rows.slice(0, limit).map(toMessage), hasMore: rows.length > limit }
  }

  #ownEditable(threadId: string, messageId: string, editor: Viewer): MessageTable {
    const row = this.#q.byId!.get(threadId, messageId) as MessageTable | undefined
    if (!row) throw new RpmError('RPM_ERR_NOT_FOUND', `no message ${messageId} in this thread`, { details: { field: 'messageId' } })
    if (row.kind !== 'text' || row.sender_user_id !== editor.userId) {
      throw new RpmError('RPM_ERR_FORBIDDEN', 'only the sender may change a message, and only a text message')
    }
    return row
  }

  /** Replaces a message's text, keeping the earlier text as a version. */
  edit(threadId: string, messageId: string, editor: Viewer, text: string): Message {
    const thread = this.byId(threadId)
    if (!thread) throw notFound(threadId)
    const now = this.#now()
    const write = this.#store.sqlite.transaction((): MessageTable => {
      const row = this.#ownEditable(threadId, messageId, editor)
      if (row.deleted_at) throw new RpmError('RPM_ERR_CONFLICT', 'the message was deleted', { details: { field: 'messageId' } })
      const earlier = (this.#q.versionCount!.get(row.id) as { n: number }).n
      this.#q.insertVersion!.run(row.id, earlier + 1, row.text ?? '', row.edited_at ?? row.created_at, now, 'edit')
      const { last_revision } = this.#q.bumpRevision!.get(threadId) as { last_revision: number }
      this.#q.edit!.run(text, now, last_revision, row.id)
      return this.#q.byId!.get(threadId, messageId) as MessageTable
    })
    const message = toMessage(write.immediate())
    this.#bus.emit('message.updated', { patientId: thread.patientId, change: 'edited', message })
    return message
  }

  /**
   * Leaves a tombstone: the text goes from the thread (participants no longer see it), the seq
   * stays. The last text is kept in message_versions, as every earlier one is: the record of a
   * clinical conversation is not destroyed. Deleting a tombstone again changes nothing.
   */
  remove(threadId: string, messageId: string, editor: Viewer): Message {
    const thread = this.byId(threadId)
    if (!thread) throw notFound(threadId)
    const now = this.#now()
    const write = this.#store.sqlite.transaction((): { row: MessageTable; changed: boolean } => {
      const row = this.#ownEditable(threadId, messageId, editor)
      if (row.deleted_at) return { row, changed: false }
      const earlier = (this.#q.versionCount!.get(row.id) as { n: number }).n
      this.#q.insertVersion!.run(row.id, earlier + 1, row.text ?? '', row.edited_at ?? row.created_at, now, 'delete')
      const { last_revision } = this.#q.bumpRevision!.get(threadId) as { last_revision: number }
      this.#q.tombstone!.run(now, last_revision, row.id)
      return { row: this.#q.byId!.get(threadId, messageId) as MessageTable, changed: true }
    })
    const { row, changed } = write.immediate()
    const message = toMessage(row)
    if (changed) this.#bus.emit('message.updated', { patientId: thread.patientId, change: 'deleted', message })
    return message
  }

  /** Earlier texts of a message, oldest first; none for a tombstone (its text is gone from view). */
  versions(threadId: string, messageId: string): MessageVersion[] {
    const row = this.#q.byId!.get(threadId, messageId) as MessageTable | undefined
    if (!row) throw new RpmError('RPM_ERR_NOT_FOUND', `no message ${messageId} in this thread`, { details: { field: 'messageId' } })
    if (row.deleted_at) return []
    return (this.#q.versions!.all(row.id) as MessageVersionTable[]).map((v) => ({
      version: v.version,
      text: v.text,
      writtenAt: v.written_at,
      replacedAt: v.replaced_at,
    }))
  }

  receipt(thread: Thread, viewer: Viewer): Receipt {
    const row = this.#q.receipt!.get(thread.id, viewer.userId) as ThreadReceiptTable | undefined
    const readSeq = row?.read_seq ?? 0
    const unread = (this.#q.unread!.get(thread.id, readSeq, viewer.userId, viewer.role) as { n: number }).n
    return { threadId: thread.id, readSeq, deliveredSeq: row?.delivered_seq ?? 0, unread }
  }

  /** Every participant's horizons in a thread (those who have read or received anything). */
  receipts(threadId: string): Array<{ userId: string; readSeq: number; deliveredSeq: number }> {
    return (this.#q.receipts!.all(threadId) as ThreadReceiptTable[]).map((r) => ({ userId: r.user_id, readSeq: r.read_seq, deliveredSeq: r.delivered_seq }))
  }

  /**
   * Moves the viewer's read horizon (and the delivered one with it) forward to `seq`; a smaller
   * seq changes nothing. Delivered alone moves when history is fetched (`delivered`).
   */
  markRead(threadId: string, viewer: Viewer, seq: number): Receipt {
    return this.#advance(threadId, viewer, seq, seq)
  }

  delivered(threadId: string, viewer: Viewer, seq: number): Receipt {
    return this.#advance(threadId, viewer, 0, seq)
  }

  #advance(threadId: string, viewer: Viewer, readTo: number, deliveredTo: number): Receipt {
    const thread = this.byId(threadId)
    if (!thread) throw notFound(threadId)
    if (readTo > thread.lastSeq || deliveredTo > thread.lastSeq) {
      throw new RpmError('RPM_ERR_BAD_REQUEST', `seq is beyond the thread's last message (${thread.lastSeq})`, { details: { field: 'seq' } })
    }
    const write = this.#store.sqlite.transaction((): { readSeq: number; deliveredSeq: number; changed: boolean } => {
      const row = this.#q.receipt!.get(threadId, viewer.userId) as ThreadReceiptTable | undefined
      const readSeq = Math.max(row?.read_seq ?? 0, readTo)
      const deliveredSeq = Math.max(row?.delivered_seq ?? 0, deliveredTo, readSeq)
      const changed = !row || readSeq !== row.read_seq || deliveredSeq !== row.delivered_seq
      if (changed) this.#q.upsertReceipt!.run(threadId, viewer.userId, readSeq, deliveredSeq, this.#now())
      return { readSeq, deliveredSeq, changed }
    })
    const { readSeq, deliveredSeq, changed } = write.immediate()
    if (changed) this.#bus.emit('receipt.updated', { patientId: thread.patientId, threadId, userId: viewer.userId, readSeq, deliveredSeq })
    return this.receipt(thread, viewer)
  }

  /** The threads of these patients (existing ones only), newest activity first. */
  summaries(patientIds: readonly string[], viewer: Viewer): ThreadSummary[] {
    const out: ThreadSummary[] = []
    for (const patientId of patientIds) {
      const thread = this.forPatient(patientId)
      if (!thread) continue
      const last = this.#q.last!.get(thread.id) as MessageTable | undefined
      const { readSeq, deliveredSeq, unread } = this.receipt(thread, viewer)
      out.push({ ...thread, readSeq, deliveredSeq, unread, lastMessage: last ? toMessage(last) : null })
    }
    const activity = (s: ThreadSummary) => s.lastMessage?.createdAt ?? s.createdAt
    return out.sort((a, b) => (activity(a) < activity(b) ? 1 : activity(a) > activity(b) ? -1 : a.id.localeCompare(b.id)))
  }
}
