// Threads and messages, live (docs/api.md "Threads and messages", docs/websocket.md "Resume").
//
// Messages are kept by seq, so a message seen twice (a replay, a resend, a REST page that
// overlaps the socket) is stored once. The largest seq held per thread is the `after` of the
// next subscribe: on every reconnect each thread resumes exactly where it stopped. Sends carry a
// clientMessageId made once per message and reused on every retry, so nothing is posted twice;
// they wait in the thread's outbox while the socket is down and go out once it is subscribed.
import { useEffect, useState } from 'preact/hooks'
import type { Api } from '../api/http.ts'
import type { Message, MessagePage, Thread, User } from '../api/types.ts'
import { Emitter } from '../lib/emitter.ts'
import { Store } from '../lib/store.ts'
import type { EventOf, ReadyThread } from '../live/events.ts'
import type { LiveSocket } from '../live/socket.ts'

export interface Outgoing {
  clientMessageId: string
  text: string
  replyTo?: string
  state: 'queued' | 'sending' | 'failed'
  error?: string
  sentAt?: number
}

export interface Presence {
  status: 'online' | 'away' | 'offline'
  lastActiveAt: string | null
}

export interface ThreadView {
  id: string
  patientId: string
  messages: Map<number, Message>
  lastSeq: number
  maxRevision: number
  readSeq: number
  deliveredSeq: number
  unread: number
  receipts: Map<string, { readSeq: number; deliveredSeq: number }>
  typing: Map<string, { role: string; until: number }>
  outbox: Outgoing[]
  /** Subscribed on the current socket, replay done: new messages arrive live. */
  live: boolean
  /** The newest page of history has been fetched (or nothing was there). */
  loaded: boolean
  hasOlder: boolean
  loadingOlder: boolean
  error: string | null
}

const PAGE = 50
const SUBSCRIBE_CHUNK = 100 // docs/websocket.md: subscribe takes up to 100 threads
const TYPING_EVERY_MS = 2000 // the gateway relays at most one typing per user and thread every 2 s
const TYPING_SHOWN_MS = 5000
const RESEND_AFTER_MS = 10_000

export function sortedMessages(view: ThreadView): Message[] {
  return [...view.messages.values()].sort((a, b) => a.seq - b.seq)
}

export function newClientMessageId(): string {
  const id = typeof crypto.randomUUID === 'function' ? crypto.randomUUID() : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`
  return `web-${id}`
}

export class ThreadsStore {
  readonly changed = new Emitter<{ thread: [string]; list: [] }>()
  readonly presence = new Store<ReadonlyMap<string, Presence>>(new Map())
  /** Sum of unread counts, for the navigation. */
  readonly totalUnread = new Store(0)
  /** A live message from someone else (announced by the console). */
  readonly incoming = new Emitter<{ message: [ThreadView, Message] }>()

  readonly #views = new Map<string, ThreadView>()
  readonly #byPatient = new Map<string, string>()
  readonly #open = new Map<string, number>()
  readonly #typingSent = new Map<string, number>()
  readonly #deliveredTimers = new Map<string, ReturnType<typeof setTimeout>>()
  readonly #off: Array<() => void> = []
  readonly #resendTimer: ReturnType<typeof setInterval>

  constructor(
    private readonly api: Api,
    private readonly socket: LiveSocket,
    private readonly me: User,
  ) {
    const on = this.socket.events.on.bind(this.socket.events)
    this.#off.push(
      on('ready', (e) => this.#onReady(e.threads)),
      on('closed', () => this.#onClosed()),
      on('subscribed', (e) => this.#onSubscribed(e)),
      on('message', (e) => this.#onMessage(e.threadId, e.message, true)),
      on('message.updated', (e) => this.#onMessage(e.threadId, e.message, false)),
      on('sent', (e) => this.#onSent(e)),
      on('receipt', (e) => this.#onReceipt(e)),
      on('unread', (e) => this.#setUnread(e.threadId, e.count)),
      on('typing', (e) => this.#onTyping(e)),
      on('presence', (e) => this.#onPresence(e)),
      on('error', (e) => this.#onError(e)),
    )
    this.#resendTimer = setInterval(() => {
      for (const id of this.#views.keys()) this.#flush(id)
    }, 5000)
  }

  dispose(): void {
    for (const off of this.#off) off()
    clearInterval(this.#resendTimer)
    for (const t of this.#deliveredTimers.values()) clearTimeout(t)
  }

  view(id: string): ThreadView | undefined {
    return this.#views.get(id)
  }

  threadIdOf(patientId: string): string | undefined {
    return this.#byPatient.get(patientId)
  }

  unreadFor(patientId: string): number {
    const id = this.#byPatient.get(patientId)
    return id ? (this.#views.get(id)?.unread ?? 0) : 0
  }

  isOwn(m: Message): boolean {
    if (m.from.userId && m.from.userId === this.me.id) return true
    // A patient's hub speaks for the patient: those count as their own (docs/api.md).
    return this.me.role === 'patient' && m.from.role === 'patient'
  }

  /** GET /api/v1/threads: every thread with its unread count. */
  async loadList(): Promise<void> {
    const { items } = await this.api.get<{ items: Thread[] }>('/threads')
    for (const t of items) this.#upsertSummary(t.id, t.patientId, t)
    this.#listChanged()
  }

  /** The patient's thread (created on first use), as a view. */
  async forPatient(patientId: string): Promise<ThreadView> {
    const known = this.#byPatient.get(patientId)
    if (known) return this.#views.get(known)!
    const t = await this.api.get<Thread>(`/patients/${encodeURIComponent(patientId)}/thread`)
    const view = this.#upsertSummary(t.id, t.patientId, t)
    this.#listChanged()
    // A thread created just now was not in `ready`: subscribe to it.
    if (!view.live) this.#subscribe([view.id])
    return view
  }

  async byId(threadId: string): Promise<ThreadView> {
    const known = this.#views.get(threadId)
    if (known) return known
    await this.loadList()
    const view = this.#views.get(threadId)
    if (!view) throw new Error('This conversation was not found, or you may not see it.')
    return view
  }

  /** A screen shows the thread: fetch its newest page if needed. Returns the matching close. */
  open(id: string): () => void {
    this.#open.set(id, (this.#open.get(id) ?? 0) + 1)
    const view = this.#views.get(id)
    if (view && !view.loaded) void this.loadOlder(id)
    return () => {
      const n = (this.#open.get(id) ?? 1) - 1
      if (n <= 0) this.#open.delete(id)
      else this.#open.set(id, n)
    }
  }

  /** Older history, oldest first: GET ...messages?before=<smallest seq held>&limit=. */
  async loadOlder(id: string): Promise<void> {
    const view = this.#views.get(id)
    if (!view || view.loadingOlder) return
    const seqs = [...view.messages.keys()]
    const before = seqs.length ? Math.min(...seqs) : view.lastSeq + 1
    if (before <= 1) {
      view.loaded = true
      view.hasOlder = false
      this.#changed(id)
      return
    }
    view.loadingOlder = true
    view.error = null
    this.#changed(id)
    try {
      const page = await this.api.get<MessagePage>(`/threads/${encodeURIComponent(id)}/messages`, { before, limit: PAGE })
      for (const m of page.items) this.#store(view, m)
      view.lastSeq = Math.max(view.lastSeq, page.lastSeq)
      const first = page.items[0]?.seq ?? before
      view.hasOlder = page.hasMore && first > 1
      view.loaded = true
    } catch (err) {
      view.error = err instanceof Error ? err.message : String(err)
    } finally {
      view.loadingOlder = false
      this.#changed(id)
    }
  }

  send(id: string, text: string, replyTo?: string): void {
    const view = this.#views.get(id)
    if (!view) return
    view.outbox.push({ clientMessageId: newClientMessageId(), text, state: 'queued', ...(replyTo ? { replyTo } : {}) })
    this.#typingSent.delete(id)
    this.#changed(id)
    this.#flush(id)
  }

  /** Try a failed send again, with the same clientMessageId. */
  retry(id: string, clientMessageId: string): void {
    const o = this.#views.get(id)?.outbox.find((x) => x.clientMessageId === clientMessageId)
    if (!o) return
    o.state = 'queued'
    delete o.error
    this.#changed(id)
    this.#flush(id)
  }

  discard(id: string, clientMessageId: string): void {
    const view = this.#views.get(id)
    if (!view) return
    view.outbox = view.outbox.filter((x) => x.clientMessageId !== clientMessageId)
    this.#changed(id)
  }

  /** The user is typing: tell the others, at most every 2 s. */
  typing(id: string): void {
    const now = Date.now()
    if (now - (this.#typingSent.get(id) ?? 0) < TYPING_EVERY_MS) return
    if (this.socket.send({ type: 'typing', threadId: id })) this.#typingSent.set(id, now)
  }

  /** The user has seen everything up to seq: move the read horizon (only forward). */
  markRead(id: string, seq: number): void {
    const view = this.#views.get(id)
    if (!view || seq <= view.readSeq) return
    view.readSeq = seq
    this.#changed(id)
    if (this.socket.send({ type: 'read', threadId: id, seq })) return
    this.api
      .post<{ unread: number }>(`/threads/${encodeURIComponent(id)}/read`, { seq })
      .then((r) => this.#setUnread(id, r.unread))
      .catch(() => {})
  }

  // --- live events ----------------------------------------------------------------------------

  #onReady(threads: ReadyThread[]): void {
    for (const t of threads) this.#upsertSummary(t.threadId, t.patientId, t)
    this.#listChanged()
    this.#subscribe(threads.map((t) => t.threadId))
    // Edits and deletes made while this console was away, for the threads on screen.
    for (const id of this.#open.keys()) void this.#catchUpChanges(id)
  }

  #subscribe(ids: string[]): void {
    const entries = ids.map((threadId) => ({ threadId, after: this.#resumeFrom(threadId) }))
    for (let i = 0; i < entries.length; i += SUBSCRIBE_CHUNK) this.socket.send({ type: 'subscribe', threads: entries.slice(i, i + SUBSCRIBE_CHUNK) })
  }

  /** The largest seq held: resume after it. A thread with nothing held starts from what the server said was last. */
  #resumeFrom(id: string): number {
    const view = this.#views.get(id)
    if (!view) return 0
    let max = 0
    for (const seq of view.messages.keys()) if (seq > max) max = seq
    return max || view.lastSeq
  }

  async #catchUpChanges(id: string): Promise<void> {
    const view = this.#views.get(id)
    if (!view || view.messages.size === 0) return
    try {
      const page = await this.api.get<MessagePage>(`/threads/${encodeURIComponent(id)}/messages`, { changedAfter: view.maxRevision, limit: 500 })
      for (const m of page.items) if (view.messages.has(m.seq)) this.#store(view, m)
      this.#changed(id)
    } catch {
      // The next reconnect tries again.
    }
  }

  #onClosed(): void {
    for (const view of this.#views.values()) {
      view.live = false
      for (const o of view.outbox) if (o.state === 'sending') o.state = 'queued'
      view.typing.clear()
      this.#changed(view.id)
    }
  }

  #onSubscribed(e: EventOf<'subscribed'>): void {
    const view = this.#views.get(e.threadId)
    if (!view) return
    if (!e.live) {
      // A large backlog comes in parts: ask for the next (docs/websocket.md "Resume").
      this.socket.send({ type: 'subscribe', threads: [{ threadId: e.threadId, after: e.replayedTo }] })
      return
    }
    view.live = true
    view.error = null
    view.lastSeq = Math.max(view.lastSeq, e.lastSeq)
    this.#changed(e.threadId)
    this.#flush(e.threadId)
    // A thread on screen whose first page failed (the gateway was away): fetch it now.
    if (this.#open.has(e.threadId) && !view.loaded) void this.loadOlder(e.threadId)
  }

  #onMessage(threadId: string, message: Message, posted: boolean): void {
    const view = this.#views.get(threadId)
    if (!view) return
    if (!posted && !view.messages.has(message.seq)) return
    const fresh = !view.messages.has(message.seq)
    this.#store(view, message)
    view.lastSeq = Math.max(view.lastSeq, message.seq)
    const own = this.isOwn(message)
    if (own && message.clientMessageId) view.outbox = view.outbox.filter((o) => o.clientMessageId !== message.clientMessageId)
    if (message.from.userId) view.typing.delete(message.from.userId)
    // Replayed messages (before `subscribed`) are delivered by the replay itself; live ones we confirm.
    if (posted && fresh && view.live && !own) {
      this.#scheduleDelivered(view)
      this.incoming.emit('message', view, message)
    }
    this.#changed(threadId)
  }

  #onSent(e: EventOf<'sent'>): void {
    const view = this.#views.get(e.message.threadId)
    if (!view) return
    view.outbox = view.outbox.filter((o) => o.clientMessageId !== e.clientMessageId)
    this.#store(view, e.message)
    view.lastSeq = Math.max(view.lastSeq, e.message.seq)
    this.#changed(view.id)
  }

  #onReceipt(e: EventOf<'receipt'>): void {
    const view = this.#views.get(e.threadId)
    if (!view) return
    if (e.userId === this.me.id) {
      view.readSeq = Math.max(view.readSeq, e.readSeq)
      view.deliveredSeq = Math.max(view.deliveredSeq, e.deliveredSeq)
    } else {
      view.receipts.set(e.userId, { readSeq: e.readSeq, deliveredSeq: e.deliveredSeq })
    }
    this.#changed(e.threadId)
  }

  #onTyping(e: EventOf<'typing'>): void {
    const view = this.#views.get(e.threadId)
    if (!view || e.userId === this.me.id) return
    // Shown for 5 s from now: the gateway's `until` is by its clock, which may differ from ours.
    const until = Date.now() + TYPING_SHOWN_MS
    view.typing.set(e.userId, { role: e.role, until })
    this.#changed(e.threadId)
    setTimeout(() => {
      const t = view.typing.get(e.userId)
      if (t && t.until <= Date.now()) {
        view.typing.delete(e.userId)
        this.#changed(e.threadId)
      }
    }, TYPING_SHOWN_MS + 50)
  }

  #onPresence(e: EventOf<'presence'>): void {
    const next = new Map(this.presence.value)
    next.set(e.userId, { status: e.status, lastActiveAt: e.lastActiveAt })
    this.presence.set(next)
  }

  #onError(e: EventOf<'error'>): void {
    if (!e.ref) return
    for (const view of this.#views.values()) {
      const o = view.outbox.find((x) => x.clientMessageId === e.ref)
      if (o) {
        if (e.code === 'RPM_ERR_RATE_LIMITED') {
          o.state = 'queued' // the resend timer tries again
        } else {
          o.state = 'failed'
          o.error = e.message
        }
        this.#changed(view.id)
        return
      }
    }
    const view = this.#views.get(e.ref)
    if (view && e.code === 'RPM_ERR_NOT_FOUND') {
      // Access ended while subscribed (care team changed, break-glass expired).
      view.live = false
      view.error = 'You no longer have access to this conversation.'
      this.#changed(view.id)
    }
  }

  // --- internals ------------------------------------------------------------------------------

  #flush(id: string): void {
    const view = this.#views.get(id)
    if (!view || !view.live) return
    const now = Date.now()
    let changed = false
    for (const o of view.outbox) {
      const due = o.state === 'queued' || (o.state === 'sending' && now - (o.sentAt ?? 0) > RESEND_AFTER_MS)
      if (!due) continue
      const ok = this.socket.send({ type: 'send', threadId: id, clientMessageId: o.clientMessageId, text: o.text, ...(o.replyTo ? { replyTo: o.replyTo } : {}) })
      if (!ok) break
      o.state = 'sending'
      o.sentAt = now
      changed = true
    }
    if (changed) this.#changed(id)
  }

  #scheduleDelivered(view: ThreadView): void {
    if (this.#deliveredTimers.has(view.id)) return
    this.#deliveredTimers.set(
      view.id,
      setTimeout(() => {
        this.#deliveredTimers.delete(view.id)
        const seq = this.#resumeFrom(view.id)
        if (seq > view.deliveredSeq && this.socket.send({ type: 'delivered', threadId: view.id, seq })) view.deliveredSeq = seq
      }, 300),
    )
  }

  #store(view: ThreadView, m: Message): void {
    const held = view.messages.get(m.seq)
    if (held && held.revision > m.revision) return
    view.messages.set(m.seq, m)
    view.maxRevision = Math.max(view.maxRevision, m.revision)
  }

  #upsertSummary(id: string, patientId: string, t: { lastSeq: number; readSeq: number; deliveredSeq: number; unread: number; lastRevision?: number }): ThreadView {
    let view = this.#views.get(id)
    if (!view) {
      view = {
        id,
        patientId,
        messages: new Map(),
        lastSeq: 0,
        maxRevision: 0,
        readSeq: 0,
        deliveredSeq: 0,
        unread: 0,
        receipts: new Map(),
        typing: new Map(),
        outbox: [],
        live: false,
        loaded: false,
        hasOlder: true,
        loadingOlder: false,
        error: null,
      }
      this.#views.set(id, view)
      this.#byPatient.set(patientId, id)
    }
    view.lastSeq = Math.max(view.lastSeq, t.lastSeq)
    view.readSeq = Math.max(view.readSeq, t.readSeq)
    view.deliveredSeq = Math.max(view.deliveredSeq, t.deliveredSeq)
    view.unread = t.unread
    this.#changed(id)
    return view
  }

  #setUnread(id: string, count: number): void {
    const view = this.#views.get(id)
    if (!view || view.unread === count) return
    view.unread = count
    this.#changed(id)
    this.#listChanged()
  }

  #listChanged(): void {
    let total = 0
    for (const v of this.#views.values()) total += v.unread
    this.totalUnread.set(total)
    this.changed.emit('list')
  }

  #changed(id: string): void {
    this.changed.emit('thread', id)
  }
}

/** Re-renders on any change to one thread. */
export function useThreadView(store: ThreadsStore, id: string | undefined): ThreadView | undefined {
  const [, tick] = useState(0)
  useEffect(() => {
    if (!id) return
    const off = store.changed.on('thread', (changed) => changed === id && tick((n) => n + 1))
    // Changes between the first render and this subscription (effects run after paint): render once more.
    tick((n) => n + 1)
    return off
  }, [store, id])
  return id ? store.view(id) : undefined
}

/** Re-renders when unread counts change. */
export function useThreadList(store: ThreadsStore): void {
  const [, tick] = useState(0)
  useEffect(() => {
    const off = store.changed.on('list', () => tick((n) => n + 1))
    tick((n) => n + 1)
    return off
  }, [store])
}
