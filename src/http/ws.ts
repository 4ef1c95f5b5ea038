import { performance } from 'node:perf_hooks'
import { Ajv, type ValidateFunction } from 'ajv'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import type { RawData, WebSocket } from 'ws'
import type { AuditLog } from '../audit/audit.ts'
import type { Clock } from '../clock.ts'
import type { GatewayConfig } from '../config/load.ts'
import { RpmError, isRpmError, type ErrorCode } from '../errors.ts'
import type { EventBus, GatewayEvents } from '../events.ts'
import type { AccessBasis, AccessPolicy } from '../identity/access.ts'
import type { Auth, Principal } from '../identity/auth.ts'
import type { AcceptedReading } from '../ingest/types.ts'
import type { Metrics } from '../metrics.ts'
import type { Store } from '../store/db.ts'
import { LiveState, type Presence } from '../threads/live.ts'
import type { Threads } from '../threads/threads.ts'
import { MAX_TEXT_LENGTH, type Message, type Thread, type Viewer } from '../threads/types.ts'
import { errorResponses, idPattern } from './schemas.ts'
import { visiblePatientIds } from './threads-routes.ts'

export const WS_PATH = '/api/v1/ws'
/** The subprotocol a client offers; a token may ride along as `bearer.<token>`. */
export const WS_PROTOCOL = 'rpm.v1'

/** Close codes: 4000-4999 are for applications (RFC 6455 section 7.4.2). */
export /** How long a socket trusts an answer of the access policy (a care-team change reaches open sockets within this). */
const ACCESS_CACHE_MS = 5_000
/** How often client activity is recorded toward the session's idle timeout (the session itself is checked on every event). */
const LIVE_CHECK_MS = 5_000

const CLOSE = {
  goingAway: 1001,
  /** RFC 6455 7.4.1: a message too big to process. */
  tooLarge: 1009,
  /** Try again later: the socket fell too far behind; reconnect and resume with `after`. */
  slowConsumer: 1013,
  unauthenticated: 4001,
  tokenExpired: 4002,
  sessionEnded: 4003,
  rateLimited: 4008,
} as const

const TYPING_THROTTLE_MS = 2000
const TYPING_TTL_MS = 5000

/** The presence and typing state of the live socket, made by the gateway so others can read presence. */
export function createLiveState(clock: Clock, config: GatewayConfig['websocket']): LiveState {
  return new LiveState(clock, { awayAfterMs: config.awaySeconds * 1000, typingThrottleMs: TYPING_THROTTLE_MS, typingTtlMs: TYPING_TTL_MS })
}
/** Work waiting on one socket (client events and pushes) before it counts as a slow consumer. */
const MAX_PENDING_TASKS = 10_000
/** A closing socket that does not finish the close handshake (a stalled reader) is cut off. */
const CLOSE_GRACE_MS = 1000

export interface WebSocketDeps {
  config: GatewayConfig['websocket']
  threads: Threads
  store: Store
  auth: Auth
  access: AccessPolicy
  audit: AuditLog
  clock: Clock
  bus: EventBus
  metrics: Metrics
  log: Logger
  /** Presence and typing; shared with whoever asks whether a user is connected (notifications). */
  live: LiveState
}

interface Subscription {
  patientId: string
  /** The largest seq sent on this socket: live messages continue from here. */
  sentSeq: number
}

interface Conn {
  readonly id: number
  readonly socket: WebSocket
  readonly address: string
  principal: (Principal & { expiresAt: number }) | null
  token: string | null
  readonly threads: Map<string, Subscription>
  /** The unread count last sent per thread, so unchanged counts are not repeated. */
  readonly unread: Map<string, number>
  /** Recent answers of the access policy per patient, so a push does not query it each time. */
  readonly access: Map<string, { ok: boolean; until: number }>
  /** When the session was last confirmed live on client activity. */
  liveCheckedAt: number
  /** Patients whose live readings this socket has received (audited once per socket and patient). */
  readonly liveReadings: Set<string>
  /** Patients whose alerts this socket has been sent (audited once each). */
  readonly liveAlerts: Set<string>
  queue: Promise<void>
  pending: number
  alive: boolean
  tokens: number
  refilledAt: number
  refusedInARow: number
  authTimer: NodeJS.Timeout | null
  checkTimer: NodeJS.Timeout | null
  closing: boolean
}

// --- client events --------------------------------------------------------------------------

const ref = { type: 'string', maxLength: 64 } as const
const threadId = { type: 'string', pattern: idPattern } as const
const seq = { type: 'integer', minimum: 0 } as const
const event = (type: string, properties: Record<string, unknown>, required: string[] = []) => ({
  type: 'object',
  additionalProperties: false,
  required: ['type', ...required],
  properties: { type: { const: type }, ref, ...properties },
})

const clientSchemas = {
  auth: event('auth', { token: { type: 'string', minLength: 1, maxLength: 4096 } }, ['token']),
  subscribe: event('subscribe', {
    threads: {
      type: 'array',
      minItems: 1,
      maxItems: 100,
      items: { type: 'object', additionalProperties: false, required: ['threadId'], properties: { threadId, after: seq } },
    },
  }, ['threads']),
  unsubscribe: event('unsubscribe', { threads: { type: 'array', minItems: 1, maxItems: 100, items: threadId } }, ['threads']),
  send: event('send', {
    threadId,
    clientMessageId: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$' },
    text: { type: 'string', minLength: 1, maxLength: MAX_TEXT_LENGTH, pattern: '\\S' },
    replyTo: { type: 'string', pattern: idPattern },
  }, ['threadId', 'clientMessageId', 'text']),
  typing: event('typing', { threadId }, ['threadId']),
  read: event('read', { threadId, seq }, ['threadId', 'seq']),
  delivered: event('delivered', { threadId, seq }, ['threadId', 'seq']),
  ping: event('ping', {}),
} as const

type ClientEvent =
  | { type: 'auth'; token: string; ref?: string }
  | { type: 'subscribe'; threads: Array<{ threadId: string; after?: number }>; ref?: string }
  | { type: 'unsubscribe'; threads: string[]; ref?: string }
  | { type: 'send'; threadId: string; clientMessageId: string; text: string; replyTo?: string; ref?: string }
  | { type: 'typing'; threadId: string; ref?: string }
  | { type: 'read' | 'delivered'; threadId: string; seq: number; ref?: string }
  | { type: 'ping'; ref?: string }

type ClientType = keyof typeof clientSchemas

/** The token offered as `bearer.<token>` in Sec-WebSocket-Protocol, if any. */
function tokenFromProtocols(header: string | string[] | undefined): string | undefined {
  const offered = (Array.isArray(header) ? header.join(',') : header ?? '').split(',').map((s) => s.trim())
  const bearer = offered.find((p) => p.startsWith('bearer.'))
  return bearer ? bearer.slice('bearer.'.length) : undefined
}

/** The subprotocol to accept for a WebSocket upgrade on the live path. */
export function selectLiveProtocol(protocols: Set<string>): string | false {
  return protocols.has(WS_PROTOCOL) ? WS_PROTOCOL : false
}

/**
 * The live WebSocket at /api/v1/ws: authentication (first message or subprotocol), thread
 * subscriptions with resume by seq, sends with client message ids, typing, receipts, presence,
 * unread counts and live readings. Each socket processes its client events and its pushes in
 * one queue, in order; every one of them checks the token's expiry and the caller's access to
 * the patient again. Logs carry ids only.
 */
export function liveSocketRoutes(app: FastifyInstance, deps: WebSocketDeps): void {
  const { config, threads, store, auth, access, audit, clock, bus, metrics, log, live } = deps
  const ajv = new Ajv({ allErrors: false, strict: true })
  const validators = Object.fromEntries(Object.entries(clientSchemas).map(([type, schema]) => [type, ajv.compile(schema)])) as Record<ClientType, ValidateFunction>

  const conns = new Set<Conn>()
  const byThread = new Map<string, Set<Conn>>()
  const byUser = new Map<string, Set<Conn>>()
  let nextId = 1

  // --- output -------------------------------------------------------------------------------

  const close = (conn: Conn, code: number, reason: string) => {
    if (conn.closing) return
    conn.closing = true
    try {
      conn.socket.close(code, reason)
    } catch {
      conn.socket.terminate()
    }
    // A reader that stopped reading never answers the close frame queued behind its backlog.
    setTimeout(() => conn.socket.terminate(), CLOSE_GRACE_MS).unref()
  }

  /** Sends one event, unless the socket's unsent backlog would pass the limit: then it is closed. */
  const send = (conn: Conn, payload: Record<string, unknown>) => {
    if (conn.closing || conn.socket.readyState !== conn.socket.OPEN) return
    const json = JSON.stringify(payload)
    if (conn.socket.bufferedAmount + Buffer.byteLength(json) > config.maxBufferedBytes) {
      metrics.wsClosed.inc({ reason: 'slow_consumer' })
      log.warn({ conn: conn.id, userId: conn.principal?.userId, bufferedBytes: conn.socket.bufferedAmount }, 'closing a slow WebSocket consumer')
      close(conn, CLOSE.slowConsumer, 'slow consumer: too much unsent data; reconnect and resume with after')
      return
    }
    conn.socket.send(json)
  }

  const sendError = (conn: Conn, code: ErrorCode, message: string, refValue?: string) => {
    send(conn, { type: 'error', code, message, ...(refValue !== undefined ? { ref: refValue } : {}) })
  }

  /** Runs work for a socket after everything queued before it (events stay in order). */
  const enqueue = (conn: Conn, task: () => void | Promise<void>) => {
    if (conn.closing) return
    if (conn.pending >= MAX_PENDING_TASKS) {
      metrics.wsClosed.inc({ reason: 'slow_consumer' })
      close(conn, CLOSE.slowConsumer, 'slow consumer: too much pending work; reconnect and resume with after')
      return
    }
    conn.pending += 1
    conn.queue = conn.queue
      .then(() => (conn.closing ? undefined : task()))
      .catch((err: unknown) => log.error({ conn: conn.id, err: (err as Error).message }, 'WebSocket task failed'))
      .finally(() => {
        conn.pending -= 1
      })
  }

  const entryFor = (conn: Conn, action: string, outcome: 'allowed' | 'denied', target?: string, details?: Record<string, unknown>) => {
    const p = conn.principal
    return {
      actorType: p ? ('user' as const) : ('anonymous' as const),
      actorId: p?.userId ?? 'unknown',
      action,
      outcome,
      address: conn.address,
      ...(target ? { target } : {}),
      details: { via: 'ws', ...details },
    }
  }
  const recordFor = (conn: Conn, action: string, outcome: 'allowed' | 'denied', target?: string, details?: Record<string, unknown>) =>
    audit.record(entryFor(conn, action, outcome, target, details))
  /** For pushes that fan out to many sockets at once: batched, and awaited before the push is sent. */
  const recordSoonFor = (conn: Conn, action: string, target: string) => audit.recordSoon(entryFor(conn, action, 'allowed', target))

  // --- session ------------------------------------------------------------------------------

  const endSession = (conn: Conn, code: number, reason: string) => {
    metrics.wsClosed.inc({ reason: code === CLOSE.tokenExpired ? 'token_expired' : 'session_ended' })
    recordFor(conn, 'ws.close', 'allowed', undefined, { code, reason })
    sendError(conn, code === CLOSE.tokenExpired ? 'RPM_ERR_UNAUTHENTICATED' : 'RPM_ERR_SESSION_ENDED', reason)
    close(conn, code, reason)
  }

  /** Closes the socket when its token has expired or its session ended; answers whether it is live. */
  const checkLive = async (conn: Conn, activity: boolean): Promise<boolean> => {
    const p = conn.principal
    if (!p || conn.closing) return false
    if (clock.now() >= p.expiresAt) {
      endSession(conn, CLOSE.tokenExpired, 'token expired: refresh it and reconnect')
      return false
    }
    // Client events come in bursts: record their activity at most every few seconds. Whether the
    // session still holds (signed out, revoked) is checked on every event all the same.
    const recordActivity = activity && clock.now() - conn.liveCheckedAt >= LIVE_CHECK_MS
    let ended: string | null
    if (recordActivity) {
      // Client activity counts toward the session's idle timeout, as a REST request does.
      try {
        await auth.authenticate(conn.token!)
        ended = null
      } catch (err) {
        ended = (await auth.sessionEnded(p.sessionId)) ?? (err as Error).message
      }
    } else {
      ended = await auth.sessionEnded(p.sessionId)
    }
    if (ended) {
      endSession(conn, CLOSE.sessionEnded, `session ended (${ended}): sign in again`)
      return false
    }
    if (recordActivity) conn.liveCheckedAt = clock.now()
    return true
  }

  /** Wakes at the token's expiry (by the gateway clock) or every sessionCheckSeconds, whichever is first. */
  const scheduleCheck = (conn: Conn) => {
    if (conn.checkTimer) clearTimeout(conn.checkTimer)
    const p = conn.principal
    if (!p || conn.closing) return
    const delay = Math.max(0, Math.min(p.expiresAt - clock.now(), config.sessionCheckSeconds * 1000))
    conn.checkTimer = setTimeout(() => {
      enqueue(conn, async () => {
        if (await checkLive(conn, false)) scheduleCheck(conn)
      })
    }, delay)
    conn.checkTimer.unref()
  }

  // --- access -------------------------------------------------------------------------------

  const noThread = (id: string) => new RpmError('RPM_ERR_NOT_FOUND', `no thread ${id}`, { details: { field: 'threadId' } })

  /** The thread if the caller may see its patient (the REST rules); otherwise a 404 error, audited. */
  const visibleThread = async (conn: Conn, id: string, action: string): Promise<{ thread: Thread; basis: AccessBasis }> => {
    const thread = threads.byId(id)
    const basis = thread ? await access.clinical(conn.principal!, thread.patientId) : null
    if (!thread || !basis) {
      recordFor(conn, action, 'denied', id, { code: 'RPM_ERR_NOT_FOUND' })
      throw noThread(id)
    }
    return { thread, basis }
  }

  /** For a push: the token is still valid and the caller may still see this patient. */
  const mayReceive = async (conn: Conn, patientId: string): Promise<boolean> => {
    const p = conn.principal
    if (!p || conn.closing) return false
    if (clock.now() >= p.expiresAt) {
      endSession(conn, CLOSE.tokenExpired, 'token expired: refresh it and reconnect')
      return false
    }
    const cached = conn.access.get(patientId)
    const now = clock.now()
    if (cached && cached.until > now) return cached.ok
    const ok = (await access.clinical(p, patientId)) !== null
    conn.access.set(patientId, { ok, until: now + ACCESS_CACHE_MS })
    return ok
  }

  const viewerOf = (conn: Conn): Viewer => ({ userId: conn.principal!.userId, role: conn.principal!.role })

  const unsubscribe = (conn: Conn, id: string) => {
    conn.threads.delete(id)
    conn.unread.delete(id)
    const set = byThread.get(id)
    set?.delete(conn)
    if (set?.size === 0) byThread.delete(id)
  }

  /** The subscription ended because access did (care team changed, grant expired). */
  const lostAccess = (conn: Conn, id: string) => {
    unsubscribe(conn, id)
    sendError(conn, 'RPM_ERR_NOT_FOUND', `no thread ${id}: the subscription has ended`, id)
  }

  const sendUnread = (conn: Conn, thread: Thread) => {
    const { unread } = threads.receipt(thread, viewerOf(conn))
    if (conn.unread.get(thread.id) === unread) return
    conn.unread.set(thread.id, unread)
    send(conn, { type: 'unread', threadId: thread.id, count: unread })
  }

  // --- presence -----------------------------------------------------------------------------

  const threadsOfUser = (userId: string, extra?: Conn): Set<string> => {
    const out = new Set<string>(extra ? extra.threads.keys() : [])
    for (const c of byUser.get(userId) ?? []) for (const id of c.threads.keys()) out.add(id)
    return out
  }

  /** Tells the other participants of these threads. */
  const announcePresence = (presence: Presence, threadIds: Iterable<string>) => {
    const audience = new Map<Conn, Subscription>()
    for (const id of threadIds) {
      for (const c of byThread.get(id) ?? []) {
        const sub = c.threads.get(id)
        if (sub && c.principal && c.principal.userId !== presence.userId && !audience.has(c)) audience.set(c, sub)
      }
    }
    for (const [c, sub] of audience) {
      enqueue(c, async () => {
        if (await mayReceive(c, sub.patientId)) send(c, { type: 'presence', ...presence })
      })
    }
  }

  // --- client event handlers ----------------------------------------------------------------

  const ready = async (conn: Conn) => {
    const p = conn.principal!
    const patientIds = await visiblePatientIds({ store, access, clock }, p)
    // A patient's own thread exists from their first look, as over REST.
    if (p.role === 'patient') for (const id of patientIds) threads.ensure(id)
    const summaries = threads.summaries(patientIds, viewerOf(conn))
    recordFor(conn, 'threads.list', 'allowed', undefined, { count: summaries.length })
    for (const s of summaries) conn.unread.set(s.id, s.unread)
    send(conn, {
      type: 'ready',
      user: { id: p.userId, username: p.username, role: p.role, patientId: p.patientId },
      expiresAt: new Date(p.expiresAt).toISOString(),
      threads: summaries.map((s) => ({ threadId: s.id, patientId: s.patientId, lastSeq: s.lastSeq, readSeq: s.readSeq, deliveredSeq: s.deliveredSeq, unread: s.unread })),
      limits: {
        maxMessageBytes: config.maxMessageBytes,
        messagesPerSecond: config.messagesPerSecond,
        maxBufferedBytes: config.maxBufferedBytes,
        maxReplayMessages: config.maxReplayMessages,
        heartbeatSeconds: config.heartbeatSeconds,
      },
    })
  }

  const authenticate = async (conn: Conn, token: string, via: 'message' | 'subprotocol') => {
    let principal: Principal & { expiresAt: number }
    try {
      // A console reconnecting or re-presenting a refreshed token in the background must not keep
      // an unattended session from logging off: only client events count as activity.
      principal = await auth.authenticate(token, { activity: false })
    } catch (err) {
      recordFor(conn, 'ws.connect', 'denied', undefined, { code: isRpmError(err) ? err.code : 'RPM_ERR_UNAUTHENTICATED', auth: via })
      metrics.wsClosed.inc({ reason: 'unauthenticated' })
      const message = isRpmError(err) ? err.message : 'the access token is not valid'
      sendError(conn, 'RPM_ERR_UNAUTHENTICATED', message)
      close(conn, CLOSE.unauthenticated, 'unauthenticated: the access token is missing, expired or revoked')
      return
    }
    // The socket closed while the token was checked: its close handler has run already, and a
    // user registered now would stay online (and in byUser) for good.
    if (conn.closing) return
    if (conn.principal) {
      // A fresh token for the same user extends the socket's life; another user needs another socket.
      if (principal.userId !== conn.principal.userId) {
        recordFor(conn, 'ws.reauth', 'denied', undefined, { code: 'RPM_ERR_FORBIDDEN' })
        sendError(conn, 'RPM_ERR_FORBIDDEN', 'a socket stays with the user who opened it')
        close(conn, CLOSE.unauthenticated, 'unauthenticated: a different user')
        return
      }
      conn.principal = principal
      conn.token = token
      scheduleCheck(conn)
      recordFor(conn, 'ws.reauth', 'allowed', undefined, { sessionId: principal.sessionId })
      send(conn, { type: 'authenticated', expiresAt: new Date(principal.expiresAt).toISOString() })
      return
    }
    if (conn.authTimer) clearTimeout(conn.authTimer)
    conn.authTimer = null
    conn.principal = principal
    conn.token = token
    let mine = byUser.get(principal.userId)
    if (!mine) byUser.set(principal.userId, (mine = new Set()))
    mine.add(conn)
    live.connected(principal.userId)
    recordFor(conn, 'ws.connect', 'allowed', undefined, { sessionId: principal.sessionId, auth: via })
    scheduleCheck(conn)
    await ready(conn)
  }

  const subscribe = async (conn: Conn, e: Extract<ClientEvent, { type: 'subscribe' }>) => {
    for (const { threadId: id, after = 0 } of e.threads) {
      let found: { thread: Thread; basis: AccessBasis }
      try {
        found = await visibleThread(conn, id, 'messages.read')
      } catch (err) {
        sendError(conn, (err as RpmError).code, (err as RpmError).message, e.ref ?? id)
        continue
      }
      const { thread, basis } = found
      if (after > thread.lastSeq) {
        recordFor(conn, 'messages.read', 'denied', id, { code: 'RPM_ERR_BAD_REQUEST' })
        sendError(conn, 'RPM_ERR_BAD_REQUEST', `after is beyond the thread's last message (${thread.lastSeq})`, e.ref ?? id)
        continue
      }
      // From here to registering the subscription nothing awaits: a message posted before the
      // history query is in it, one posted after reaches the socket live. Nothing missed, nothing twice.
      const page = threads.history(id, { after, limit: config.maxReplayMessages })
      // A replay stops at half the send buffer and asks for the next subscribe: a large backlog
      // reaches the client at the pace it reads, instead of tripping the slow-consumer limit.
      let newest = after
      let replayed = 0
      for (const message of page.items) {
        if (replayed > 0 && conn.socket.bufferedAmount > config.maxBufferedBytes / 2) break
        send(conn, { type: 'message', threadId: id, message })
        newest = message.seq
        replayed += 1
      }
      const more = page.hasMore || replayed < page.items.length
      const fresh = !conn.threads.has(id)
      if (more) {
        unsubscribe(conn, id)
      } else {
        conn.threads.set(id, { patientId: thread.patientId, sentSeq: newest })
        let set = byThread.get(id)
        if (!set) byThread.set(id, (set = new Set()))
        set.add(conn)
      }
      recordFor(conn, 'messages.read', 'allowed', id, { patientId: thread.patientId, basis, after, count: replayed })
      send(conn, { type: 'subscribed', threadId: id, lastSeq: thread.lastSeq, replayedTo: newest, live: !more, ...(e.ref !== undefined ? { ref: e.ref } : {}) })
      // What reached the caller is delivered, as when history is fetched over REST.
      if (replayed > 0) threads.delivered(id, viewerOf(conn), newest)
      for (const r of threads.receipts(id)) {
        if (r.userId !== conn.principal!.userId) send(conn, { type: 'receipt', threadId: id, userId: r.userId, readSeq: r.readSeq, deliveredSeq: r.deliveredSeq })
      }
      conn.unread.delete(id)
      sendUnread(conn, thread)
      if (!more && fresh) {
        // Who else is here, and that this user is here too.
        for (const other of byThread.get(id) ?? []) {
          const u = other.principal?.userId
          if (u && u !== conn.principal!.userId) send(conn, { type: 'presence', ...live.presence(u) })
        }
        announcePresence(live.presence(conn.principal!.userId), [id])
      }
    }
  }

  const sendMessage = async (conn: Conn, e: Extract<ClientEvent, { type: 'send' }>) => {
    const p = conn.principal!
    const { thread, basis } = await visibleThread(conn, e.threadId, 'message.post')
    let result: { message: Message; created: boolean; announce: () => void }
    try {
      // The message and its audit entry in one commit: one disk sync per send, not two.
      result = store.sqlite.transaction(() => {
        const posted = threads.postQuietly({
          threadId: thread.id,
          sender: { type: 'user', userId: p.userId, role: p.role },
          kind: 'text',
          text: e.text,
          clientMessageId: e.clientMessageId,
          ...(e.replyTo !== undefined ? { replyTo: e.replyTo } : {}),
        })
        recordFor(conn, 'message.post', 'allowed', thread.id, { patientId: thread.patientId, basis, messageId: posted.message.id, seq: posted.message.seq, retry: !posted.created })
        return posted
      }).immediate()
    } catch (err) {
      if (isRpmError(err) && err.status < 500) recordFor(conn, 'message.post', 'denied', thread.id, { code: err.code })
      throw err
    }
    result.announce() // only once the message and its audit entry are committed
    const { message, created } = result
    live.stoppedTyping(p.userId, thread.id)
    send(conn, { type: 'sent', clientMessageId: e.clientMessageId, created, message })
  }

  const typing = async (conn: Conn, e: Extract<ClientEvent, { type: 'typing' }>) => {
    const p = conn.principal!
    const { thread } = await visibleThread(conn, e.threadId, 'thread.typing')
    const shown = live.typing(p.userId, thread.id)
    if (!shown) return
    for (const c of byThread.get(thread.id) ?? []) {
      if (c.principal?.userId === p.userId) continue
      enqueue(c, async () => {
        if (!c.threads.has(thread.id)) return
        if (await mayReceive(c, thread.patientId)) send(c, { type: 'typing', threadId: thread.id, userId: p.userId, role: p.role, until: shown.until })
      })
    }
  }

  const receipt = async (conn: Conn, e: Extract<ClientEvent, { type: 'read' | 'delivered' }>) => {
    const action = e.type === 'read' ? 'thread.mark_read' : 'thread.mark_delivered'
    const { thread, basis } = await visibleThread(conn, e.threadId, action)
    try {
      if (e.type === 'read') threads.markRead(thread.id, viewerOf(conn), e.seq)
      else threads.delivered(thread.id, viewerOf(conn), e.seq)
    } catch (err) {
      if (isRpmError(err) && err.status < 500) recordFor(conn, action, 'denied', thread.id, { code: err.code })
      throw err
    }
    if (e.type === 'read') recordFor(conn, action, 'allowed', thread.id, { patientId: thread.patientId, basis, seq: e.seq })
    sendUnread(conn, thread)
  }

  const ACTIVITY = new Set<ClientType>(['subscribe', 'send', 'typing', 'read'])

  const handle = async (conn: Conn, text: string) => {
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch {
      return sendError(conn, 'RPM_ERR_BAD_REQUEST', 'the message is not valid JSON')
    }
    const type = (body as { type?: unknown } | null)?.type
    const refValue = typeof (body as { ref?: unknown } | null)?.ref === 'string' ? ((body as { ref: string }).ref) : undefined
    // Own keys only: "constructor" or "hasOwnProperty" are no event types.
    if (typeof type !== 'string' || !Object.hasOwn(validators, type)) {
      if (!conn.principal) return close(conn, CLOSE.unauthenticated, 'unauthenticated: the first message must be auth')
      return sendError(conn, 'RPM_ERR_BAD_REQUEST', `unknown event type; expected one of ${Object.keys(validators).join(', ')}`, refValue)
    }
    const validate = validators[type as ClientType]
    if (!validate(body)) {
      const first = validate.errors?.[0]
      const field = (first?.params as { additionalProperty?: string; missingProperty?: string } | undefined)
      const what = field?.additionalProperty ? `unknown field ${field.additionalProperty}` : field?.missingProperty ? `missing field ${field.missingProperty}` : `${first?.instancePath.slice(1) || type} ${first?.message ?? 'is invalid'}`
      if (!conn.principal) {
        sendError(conn, 'RPM_ERR_UNAUTHENTICATED', `the first message must be {"type":"auth","token":...}: ${what}`)
        return close(conn, CLOSE.unauthenticated, 'unauthenticated: the first message must be auth')
      }
      return sendError(conn, 'RPM_ERR_BAD_REQUEST', `${type}: ${what}`, refValue)
    }
    const e = body as ClientEvent
    if (e.type === 'auth') return authenticate(conn, e.token, 'message')
    if (!conn.principal) return close(conn, CLOSE.unauthenticated, 'unauthenticated: the first message must be auth')
    // Every event: the token has not expired and the session is live (idle, revoked, signed out).
    if (!(await checkLive(conn, ACTIVITY.has(e.type)))) return
    if (ACTIVITY.has(e.type)) {
      const changed = live.active(conn.principal.userId)
      if (changed) announcePresence(changed, threadsOfUser(changed.userId))
    }
    try {
      switch (e.type) {
        case 'subscribe':
          return await subscribe(conn, e)
        case 'unsubscribe':
          for (const id of e.threads) unsubscribe(conn, id)
          return
        case 'send':
          return await sendMessage(conn, e)
        case 'typing':
          return await typing(conn, e)
        case 'read':
        case 'delivered':
          return await receipt(conn, e)
        case 'ping':
          return send(conn, { type: 'pong', ...(e.ref !== undefined ? { ref: e.ref } : {}) })
      }
    } catch (err) {
      const r = refValue ?? (e.type === 'send' ? e.clientMessageId : undefined)
      if (isRpmError(err) && err.status < 500) return sendError(conn, err.code, err.message, r)
      log.error({ conn: conn.id, event: e.type, err: (err as Error).message }, 'WebSocket event failed')
      sendError(conn, 'RPM_ERR_INTERNAL', 'internal error', r)
    }
  }

  /** Token bucket per socket, in real time: bursts up to twice the rate. */
  const admit = (conn: Conn): boolean => {
    const now = performance.now()
    const rate = config.messagesPerSecond
    conn.tokens = Math.min(rate * 2, conn.tokens + ((now - conn.refilledAt) / 1000) * rate)
    conn.refilledAt = now
    if (conn.tokens >= 1) {
      conn.tokens -= 1
      conn.refusedInARow = 0
      return true
    }
    conn.refusedInARow += 1
    return false
  }

  // --- the route ----------------------------------------------------------------------------

  const schema = {
    tags: ['live'],
    summary: 'The live WebSocket: messages, receipts, typing, presence, unread counts, live readings (docs/websocket.md)',
    description: 'Upgrade to WebSocket with subprotocol rpm.v1. Authenticate with {"type":"auth","token":...} as the first message, or offer bearer.<token> as a second subprotocol.',
  }
  // wsHandler rather than `websocket: true`: the route stays in the OpenAPI document, and a plain
  // GET (no upgrade) gets a clear answer.
  const onSocket = (socket: WebSocket, req: FastifyRequest) => {
    const conn: Conn = {
      id: nextId++,
      socket,
      address: req.ip,
      principal: null,
      token: null,
      threads: new Map(),
      unread: new Map(),
      access: new Map(),
      liveCheckedAt: 0,
      liveReadings: new Set(),
      liveAlerts: new Set(),
      queue: Promise.resolve(),
      pending: 0,
      alive: true,
      tokens: config.messagesPerSecond * 2,
      refilledAt: performance.now(),
      refusedInARow: 0,
      authTimer: null,
      checkTimer: null,
      closing: false,
    }
    conns.add(conn)
    metrics.wsConnections.inc()
    conn.authTimer = setTimeout(() => {
      metrics.wsClosed.inc({ reason: 'unauthenticated' })
      close(conn, CLOSE.unauthenticated, `unauthenticated: no auth within ${config.authTimeoutSeconds} s`)
    }, config.authTimeoutSeconds * 1000)
    conn.authTimer.unref()

    socket.on('pong', () => {
      conn.alive = true
    })
    socket.on('error', (err) => log.debug({ conn: conn.id, err: err.message }, 'WebSocket error'))
    socket.on('message', (data: RawData, isBinary: boolean) => {
      if (conn.closing) return
      conn.alive = true
      const size = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : (data as Buffer | ArrayBuffer).byteLength
      if (size > config.maxMessageBytes) {
        metrics.wsClosed.inc({ reason: 'too_large' })
        return close(conn, CLOSE.tooLarge, `message too large: at most ${config.maxMessageBytes} bytes`)
      }
      if (isBinary) return sendError(conn, 'RPM_ERR_BAD_REQUEST', 'send JSON in text frames')
      if (!admit(conn)) {
        if (conn.refusedInARow > config.messagesPerSecond * 2) {
          metrics.wsClosed.inc({ reason: 'rate_limited' })
          return close(conn, CLOSE.rateLimited, `rate limit: at most ${config.messagesPerSecond} events per second`)
        }
        return sendError(conn, 'RPM_ERR_RATE_LIMITED', `too many events: at most ${config.messagesPerSecond} per second; this one was dropped`)
      }
      const text = Array.isArray(data) ? Buffer.concat(data).toString('utf8') : Buffer.from(data as Buffer).toString('utf8')
      enqueue(conn, () => handle(conn, text))
    })
    socket.on('close', () => {
      conn.closing = true
      conns.delete(conn)
      metrics.wsConnections.dec()
      if (conn.authTimer) clearTimeout(conn.authTimer)
      if (conn.checkTimer) clearTimeout(conn.checkTimer)
      const userId = conn.principal?.userId
      const shared = userId ? threadsOfUser(userId, conn) : new Set<string>()
      for (const id of [...conn.threads.keys()]) unsubscribe(conn, id)
      if (!userId) return
      const mine = byUser.get(userId)
      mine?.delete(conn)
      if (mine?.size === 0) byUser.delete(userId)
      const changed = live.disconnected(userId)
      if (changed) announcePresence(changed, shared)
    })

    const offered = tokenFromProtocols(req.headers['sec-websocket-protocol'])
    if (offered !== undefined) enqueue(conn, () => authenticate(conn, offered, 'subprotocol'))
  }
  app.route({
    method: 'GET',
    url: WS_PATH,
    schema: { ...schema, response: { 426: errorResponses[400] } },
    wsHandler: onSocket,
    handler: async (_req, reply) =>
      reply.status(426).header('upgrade', 'websocket').send({ code: 'RPM_ERR_BAD_REQUEST', message: 'this is a WebSocket: connect with Upgrade: websocket and subprotocol rpm.v1' }),
  })

  // --- pushes from the bus --------------------------------------------------------------------

  const onPosted = ({ patientId, message }: GatewayEvents['message.posted'][0]) => {
    for (const conn of byThread.get(message.threadId) ?? []) {
      enqueue(conn, async () => {
        const sub = conn.threads.get(message.threadId)
        if (!sub || message.seq <= sub.sentSeq) return
        if (!(await mayReceive(conn, patientId))) return lostAccess(conn, message.threadId)
        sub.sentSeq = message.seq
        send(conn, { type: 'message', threadId: message.threadId, message })
        // A new message changes the unread count by one, or not at all for the viewer's own.
        const p = conn.principal!
        const own = message.from.userId === p.userId || (p.role === 'patient' && message.from.role === 'patient')
        const known = conn.unread.get(message.threadId)
        if (own) return
        if (known !== undefined) {
          conn.unread.set(message.threadId, known + 1)
          send(conn, { type: 'unread', threadId: message.threadId, count: known + 1 })
          return
        }
        const thread = threads.byId(message.threadId)
        if (thread) sendUnread(conn, thread)
      })
    }
  }

  const onUpdated = ({ patientId, change, message }: GatewayEvents['message.updated'][0]) => {
    for (const conn of byThread.get(message.threadId) ?? []) {
      enqueue(conn, async () => {
        const sub = conn.threads.get(message.threadId)
        if (!sub || message.seq > sub.sentSeq) return
        if (!(await mayReceive(conn, patientId))) return lostAccess(conn, message.threadId)
        send(conn, { type: 'message.updated', threadId: message.threadId, change, message })
        const thread = threads.byId(message.threadId)
        if (thread) sendUnread(conn, thread)
      })
    }
  }

  const onReceipt = ({ patientId, threadId: id, userId, readSeq, deliveredSeq }: GatewayEvents['receipt.updated'][0]) => {
    for (const conn of byThread.get(id) ?? []) {
      enqueue(conn, async () => {
        if (!conn.threads.has(id)) return
        if (!(await mayReceive(conn, patientId))) return lostAccess(conn, id)
        send(conn, { type: 'receipt', threadId: id, userId, readSeq, deliveredSeq })
        const thread = threads.byId(id)
        if (thread && conn.principal?.userId === userId) sendUnread(conn, thread)
      })
    }
  }

  // Live readings: to every signed-in socket whose user may see the patient's record.
  const onReadings = (readings: readonly AcceptedReading[]) => {
    const byPatient = new Map<string, AcceptedReading[]>()
    for (const r of readings) {
      const list = byPatient.get(r.patientId)
      if (list) list.push(r)
      else byPatient.set(r.patientId, [r])
    }
    for (const conn of conns) {
      const p = conn.principal
      if (!p) continue
      for (const [patientId, list] of byPatient) {
        if (p.role === 'patient' && p.patientId !== patientId) continue
        enqueue(conn, async () => {
          if (!(await mayReceive(conn, patientId))) return
          if (!conn.liveReadings.has(patientId)) {
            // Live readings are a read of the record: the first one per socket and patient is audited.
            conn.liveReadings.add(patientId)
            await recordSoonFor(conn, 'readings.live', patientId)
          }
          for (const r of list) {
            send(conn, {
              type: 'reading',
              patientId,
              reading: { id: r.id, deviceId: r.deviceId, type: r.type, seq: r.seq, measuredAt: r.measuredAt, receivedAt: r.receivedAt, values: r.values },
            })
          }
        })
      }
    }
  }

  // Alerts: every change, to every signed-in provider or admin socket whose user may see the
  // patient (care team, escalation, break-glass). Patients see alerts as thread messages.
  const onAlert = ({ alert, change }: GatewayEvents['alert.updated'][0]) => {
    for (const conn of conns) {
      const p = conn.principal
      if (!p || p.role === 'patient') continue
      enqueue(conn, async () => {
        if (!(await mayReceive(conn, alert.patientId))) return
        if (!conn.liveAlerts.has(alert.patientId)) {
          conn.liveAlerts.add(alert.patientId)
          await recordSoonFor(conn, 'alerts.live', alert.patientId)
        }
        send(conn, { type: 'alert', change, alert })
      })
    }
  }
  // An escalation gives its new recipients access now: forget the cached "no".
  const onEscalated = ({ alert, added }: GatewayEvents['alert.escalated'][0]) => {
    if (added.length === 0) return
    for (const conn of conns) if (conn.principal && added.includes(conn.principal.userId)) conn.access.delete(alert.patientId)
  }

  bus.on('message.posted', onPosted)
  bus.on('message.updated', onUpdated)
  bus.on('alert.updated', onAlert)
  bus.on('alert.escalated', onEscalated)
  bus.on('receipt.updated', onReceipt)
  bus.on('reading.accepted', onReadings)

  // Sign-out (or a reused refresh token) ends the session's sockets at once, not at the next check.
  const onSessionEnded = ({ sessionId, reason }: GatewayEvents['session.ended'][0]) => {
    for (const conn of conns) {
      if (conn.principal?.sessionId === sessionId && !conn.closing) endSession(conn, CLOSE.sessionEnded, `session ended (${reason}): sign in again`)
    }
  }
  bus.on('session.ended', onSessionEnded)

  // Protocol pings (RFC 6455 5.5.2): a socket that has not answered since the last one is dead.
  const heartbeat = setInterval(() => {
    for (const conn of conns) {
      if (!conn.alive) {
        metrics.wsClosed.inc({ reason: 'heartbeat' })
        conn.closing = true
        conn.socket.terminate()
        continue
      }
      conn.alive = false
      try {
        conn.socket.ping()
      } catch {
        // closing already
      }
    }
    for (const changed of live.sweep()) announcePresence(changed, threadsOfUser(changed.userId))
  }, config.heartbeatSeconds * 1000)
  heartbeat.unref()

  app.addHook('preClose', (done) => {
    clearInterval(heartbeat)
    bus.off('message.posted', onPosted)
    bus.off('message.updated', onUpdated)
    bus.off('alert.updated', onAlert)
    bus.off('alert.escalated', onEscalated)
    bus.off('receipt.updated', onReceipt)
    bus.off('reading.accepted', onReadings)
    bus.off('session.ended', onSessionEnded)
    for (const conn of conns) close(conn, CLOSE.goingAway, 'server shutting down')
    done()
  })
}
