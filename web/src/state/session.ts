// The signed-in session: the access token lives in memory only; the refresh token is the
// HttpOnly rpm_refresh cookie (Path=/api/v1/auth, SameSite=Strict), which script never sees.
// docs/api.md "Signing in": each refresh token works once, so refreshes are serialised across
// this browser's tabs with a Web Lock, and a reload restores the session with one refresh.
import { Api, ApiError, postPublic } from '../api/http.ts'
import type { TokenAnswer, User } from '../api/types.ts'
import { Emitter } from '../lib/emitter.ts'
import { Store } from '../lib/store.ts'

export type SessionState =
  | { status: 'restoring' }
  | { status: 'signed-out'; message: string | null }
  | { status: 'signed-in'; user: User }

/** Refresh this long before the access token runs out (or a fifth of its life, if shorter). */
const REFRESH_MARGIN_SECONDS = 60
/** While someone is using the console, make sure the gateway hears from it this often, so its idle timeout matches ours. */
const KEEPALIVE_AFTER_MS = 4 * 60_000

export const SIGNED_OUT = {
  byUser: 'You have signed out.',
  idle: (minutes: number) => `You were signed out after ${minutes} minutes without activity. Please sign in again.`,
  expired: 'You were signed out because your session expired. Please sign in again.',
  ended: (why: string) => `You were signed out: ${why}. Please sign in again.`,
  refused: 'You were signed out because the gateway no longer accepts this sign-in. Please sign in again.',
  otherTab: 'You were signed out in another tab or window.',
} as const

/** A person's reading of the gateway's 4003 close reason, "session ended (idle too long): sign in again". */
export function whySessionEnded(closeReason: string): string {
  const why = /\(([^)]*)\)/.exec(closeReason)?.[1] ?? ''
  if (/idle/i.test(why)) return 'the session was idle for too long'
  if (/expired/i.test(why)) return 'the session reached its time limit'
  if (/reused/i.test(why)) return 'the session was ended for safety (a sign-in token was used twice)'
  if (/disabled/i.test(why)) return 'this account was disabled'
  if (/signed out|revoked/i.test(why)) return 'this session was signed out'
  return 'your session ended'
}

type Broadcast = { type: 'signed-out' } | { type: 'signed-in' } | { type: 'activity'; at: number }

export class Session {
  readonly state = new Store<SessionState>({ status: 'restoring' })
  readonly events = new Emitter<{ token: [string]; 'signing-out': []; activity: [number] }>()
  readonly api: Api

  #token: string | null = null
  /** Only when the gateway predates the cookie contract and answers with the token in the body. */
  #refreshToken: string | null = null
  #expiresAt = 0
  #timer: ReturnType<typeof setTimeout> | undefined
  #refreshing: Promise<boolean> | null = null
  #lastRequestAt = 0
  readonly #beforeSignOut = new Set<() => Promise<unknown>>()
  readonly #channel: BroadcastChannel | null

  constructor() {
    this.api = new Api({
      token: () => this.#token,
      recover: () => this.refresh(),
      requested: () => {
        this.#lastRequestAt = Date.now()
      },
    })
    this.#channel = typeof BroadcastChannel === 'function' ? new BroadcastChannel('rpm-session') : null
    this.#channel?.addEventListener('message', (e: MessageEvent<Broadcast>) => this.#onBroadcast(e.data))
  }

  get user(): User | null {
    const s = this.state.value
    return s.status === 'signed-in' ? s.user : null
  }

  get token(): string | null {
    return this.#token
  }

  /** Seconds until the access token expires (by this browser's clock). */
  get secondsLeft(): number {
    return Math.max(0, Math.round((this.#expiresAt - Date.now()) / 1000))
  }

  /** On page load: one refresh with the cookie brings the session back without a password. */
  async restore(): Promise<void> {
    try {
      await this.#refreshNow()
      const user = await this.api.get<User>('/me')
      this.state.set({ status: 'signed-in', user })
    } catch {
      this.#clear()
      this.state.set({ status: 'signed-out', message: null })
    }
  }

  async login(username: string, password: string): Promise<User> {
    const answer = await postPublic<TokenAnswer>('/auth/login', { username, password, session: 'cookie' })
    this.#accept(answer)
    this.#lastRequestAt = Date.now()
    const user = answer.user ?? (await this.api.get<User>('/me'))
    this.state.set({ status: 'signed-in', user })
    this.#post({ type: 'signed-in' })
    return user
  }

  /** A new access token (and a rotated cookie). Concurrent callers share one request. */
  refresh(): Promise<boolean> {
    if (this.state.value.status === 'signed-out') return Promise.resolve(false)
    this.#refreshing ??= this.#refreshNow()
      .then(() => true)
      .catch((err: unknown) => {
        if (err instanceof ApiError && err.status >= 400 && err.status < 500) {
          void this.signOut(err.code === 'RPM_ERR_SESSION_ENDED' ? SIGNED_OUT.ended('your session ended') : SIGNED_OUT.expired, { callServer: false })
        } else {
          // The gateway is unreachable: try again shortly; the token may still be good.
          this.#schedule(10)
        }
        return false
      })
      .finally(() => {
        this.#refreshing = null
      })
    return this.#refreshing
  }

  /** Work to do while the token still works, just before signing out (removing this browser's push subscription). */
  beforeSignOut(fn: () => Promise<unknown>): () => void {
    this.#beforeSignOut.add(fn)
    return () => this.#beforeSignOut.delete(fn)
  }

  async signOut(message: string | null, { callServer = true, broadcast = true } = {}): Promise<void> {
    if (this.state.value.status !== 'signed-in') {
      if (this.state.value.status === 'restoring') this.state.set({ status: 'signed-out', message })
      return
    }
    this.events.emit('signing-out')
    const token = this.#token
    if (callServer && token) {
      // Each step is bounded: signing out must not hang on a slow network.
      await Promise.allSettled([...this.#beforeSignOut].map((fn) => withTimeout(fn(), 4000)))
      await withTimeout(postPublic('/auth/logout', {}, token), 4000).catch(() => {})
    }
    this.#clear()
    this.state.set({ status: 'signed-out', message })
    if (broadcast) this.#post({ type: 'signed-out' })
  }

  /** Someone is using the console (from the idle monitor). Keeps the gateway's idle clock in step with ours. */
  activity(at: number, { share = true } = {}): void {
    this.events.emit('activity', at)
    if (share) this.#post({ type: 'activity', at })
    if (this.state.value.status === 'signed-in' && share && Date.now() - this.#lastRequestAt > KEEPALIVE_AFTER_MS) {
      this.#lastRequestAt = Date.now()
      this.api.get<User>('/me').catch(() => {})
    }
  }

  async #refreshNow(): Promise<void> {
    const call = async () => {
      const body = this.#refreshToken ? { refreshToken: this.#refreshToken } : {}
      const answer = await postPublic<TokenAnswer>('/auth/refresh', body)
      this.#accept(answer)
    }
    // One refresh at a time in this browser: a cookie presented twice would end the session.
    const locks = (navigator as Navigator & { locks?: LockManager }).locks
    if (locks) await locks.request('rpm-session-refresh', call)
    else await call()
  }

  #accept(answer: TokenAnswer): void {
    this.#token = answer.accessToken
    this.#refreshToken = answer.refreshToken ?? null
    this.#expiresAt = Date.now() + answer.expiresIn * 1000
    this.#schedule(Math.max(5, answer.expiresIn - Math.min(REFRESH_MARGIN_SECONDS, answer.expiresIn / 5)))
    this.events.emit('token', answer.accessToken)
  }

  #schedule(seconds: number): void {
    clearTimeout(this.#timer)
    this.#timer = setTimeout(() => void this.refresh(), seconds * 1000)
  }

  #clear(): void {
    clearTimeout(this.#timer)
    this.#token = null
    this.#refreshToken = null
    this.#expiresAt = 0
  }

  #post(message: Broadcast): void {
    try {
      this.#channel?.postMessage(message)
    } catch {
      // A closed channel: nothing to tell.
    }
  }

  #onBroadcast(m: Broadcast): void {
    if (m.type === 'signed-out') void this.signOut(SIGNED_OUT.otherTab, { callServer: false, broadcast: false })
    else if (m.type === 'signed-in') {
      // Another tab signed in: the cookie now belongs to that sign-in, so this tab follows it
      // (without calling logout, which would clear the new cookie).
      if (this.state.value.status === 'signed-in') void this.signOut(null, { callServer: false, broadcast: false }).then(() => this.restore())
      else void this.restore()
    }
    else if (m.type === 'activity') this.activity(m.at, { share: false })
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('timed out')), ms)
    p.then(
      (v) => (clearTimeout(t), resolve(v)),
      (e: unknown) => (clearTimeout(t), reject(e)),
    )
  })
}
