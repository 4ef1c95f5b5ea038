import type { Clock } from '../clock.ts'

export type PresenceStatus = 'online' | 'away' | 'offline'

export interface Presence {
  userId: string
  status: PresenceStatus
  /** The last client activity (ISO-8601), or null when never seen since start. */
  lastActiveAt: string | null
}

export interface LiveOptions {
  /** Online turns to away after this long without client activity. */
  awayAfterMs: number
  /** At most one typing broadcast per user per thread within this long. */
  typingThrottleMs: number
  /** A typing indicator lapses this long after its last renewal. */
  typingTtlMs: number
}

interface UserState {
  sockets: number
  lastActiveAt: number
  status: PresenceStatus
}

/**
 * Presence and typing: who is connected and active, who is typing where. State lives in memory
 * (it describes open connections, which end with the process); time comes from the clock.
 * Methods answer what changed, and the transport decides who hears about it.
 */
export class LiveState {
  readonly #clock: Clock
  readonly #options: LiveOptions
  readonly #users = new Map<string, UserState>()
  /** `${userId} ${threadId}` -> when the last typing broadcast went out. */
  readonly #typing = new Map<string, number>()

  constructor(clock: Clock, options: LiveOptions) {
    this.#clock = clock
    this.#options = options
  }

  #presence(userId: string, s: UserState | undefined): Presence {
    return { userId, status: s?.status ?? 'offline', lastActiveAt: s ? new Date(s.lastActiveAt).toISOString() : null }
  }

  presence(userId: string): Presence {
    return this.#presence(userId, this.#users.get(userId))
  }

  /** A socket of this user opened; answers the presence when it changed. */
  connected(userId: string): Presence | null {
    const now = this.#clock.now()
    const s = this.#users.get(userId)
    if (!s) {
      const fresh: UserState = { sockets: 1, lastActiveAt: now, status: 'online' }
      this.#users.set(userId, fresh)
      return this.#presence(userId, fresh)
    }
    s.sockets += 1
    s.lastActiveAt = now
    if (s.status === 'online') return null
    s.status = 'online'
    return this.#presence(userId, s)
  }

  /** A socket of this user closed; offline (with lastActiveAt) when it was the last one. */
  disconnected(userId: string): Presence | null {
    const s = this.#users.get(userId)
    if (!s) return null
    s.sockets = Math.max(0, s.sockets - 1)
    if (s.sockets > 0 || s.status === 'offline') return null
    s.status = 'offline'
    for (const key of this.#typing.keys()) if (key.startsWith(`${userId} `)) this.#typing.delete(key)
    return this.#presence(userId, s)
  }

  /** Client activity (a send, a read, typing, a subscribe): back to online from away. */
  active(userId: string): Presence | null {
    const s = this.#users.get(userId)
    if (!s || s.sockets === 0) return null
    s.lastActiveAt = this.#clock.now()
    if (s.status === 'online') return null
    s.status = 'online'
    return this.#presence(userId, s)
  }

  /** Users that turned away since the last sweep; offline users are forgotten after a day. */
  sweep(): Presence[] {
    const now = this.#clock.now()
    const changed: Presence[] = []
    for (const [userId, s] of this.#users) {
      if (s.status === 'online' && now - s.lastActiveAt >= this.#options.awayAfterMs) {
        s.status = 'away'
        changed.push(this.#presence(userId, s))
      } else if (s.status === 'offline' && now - s.lastActiveAt > 86_400_000) {
        this.#users.delete(userId)
      }
    }
    for (const [key, at] of this.#typing) if (now - at > this.#options.typingTtlMs) this.#typing.delete(key)
    return changed
  }

  /**
   * The user is typing in the thread. Answers until when the indicator holds, or null when a
   * broadcast went out for this user and thread within the throttle window (nothing to send).
   */
  typing(userId: string, threadId: string): { until: string } | null {
    const now = this.#clock.now()
    const key = `${userId} ${threadId}`
    const last = this.#typing.get(key)
    if (last !== undefined && now - last < this.#options.typingThrottleMs) return null
    this.#typing.set(key, now)
    return { until: new Date(now + this.#options.typingTtlMs).toISOString() }
  }

  /** The user sent a message: the next keystroke announces typing again at once. */
  stoppedTyping(userId: string, threadId: string): void {
    this.#typing.delete(`${userId} ${threadId}`)
  }
}
