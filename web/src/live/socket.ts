// The one live WebSocket of a signed-in console (docs/websocket.md): authenticates with the
// subprotocol pair ['rpm.v1', 'bearer.<token>'], reconnects with exponential backoff, refreshes
// the token on 4002 and hands 4001/4003 to the session. What to resubscribe is up to the
// listeners of 'ready' (state/threads.ts keeps the largest seq per thread).
import { Emitter } from '../lib/emitter.ts'
import { Store } from '../lib/store.ts'
import type { ClientEvent, LiveEvents, ServerEvent } from './events.ts'

export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'offline' | 'stopped'

export interface SocketOptions {
  url: string
  token(): string | null
  /** Seconds the current token has left. */
  secondsLeft(): number
  refresh(): Promise<boolean>
  /** 4001 or 4003: the sign-in is over. */
  signedOut(code: number, reason: string): void
}

const BACKOFF_MIN_MS = 1000
const BACKOFF_MAX_MS = 30_000
/** Our own liveness check: a ping every so often, and a socket silent for too long is replaced. */
const PING_EVERY_MS = 30_000
const PONG_WITHIN_MS = 10_000
const READY_WITHIN_MS = 15_000

export class LiveSocket {
  readonly state = new Store<ConnectionState>('connecting')
  readonly events = new Emitter<LiveEvents & { closed: [number] }>()

  #ws: WebSocket | null = null
  #attempt = 0
  #stopped = false
  #retryTimer: ReturnType<typeof setTimeout> | undefined
  #pingTimer: ReturnType<typeof setInterval> | undefined
  #deadline: ReturnType<typeof setTimeout> | undefined
  #ready = false
  readonly #onOnline = () => this.#reconnectSoon(0)

  constructor(private readonly opts: SocketOptions) {
    addEventListener('online', this.#onOnline)
  }

  get isReady(): boolean {
    return this.#ready && this.#ws?.readyState === WebSocket.OPEN
  }

  start(): void {
    this.#stopped = false
    void this.#connect()
  }

  stop(): void {
    this.#stopped = true
    removeEventListener('online', this.#onOnline)
    clearTimeout(this.#retryTimer)
    this.#teardown()
    this.state.set('stopped')
  }

  /** Sends when authenticated; false otherwise (the caller queues). */
  send(event: ClientEvent): boolean {
    if (!this.isReady) return false
    this.#ws!.send(JSON.stringify(event))
    return true
  }

  /** A refreshed token goes to the open socket, which then outlives the old token's expiry. */
  reauthenticate(token: string): void {
    if (this.isReady) this.#ws!.send(JSON.stringify({ type: 'auth', token }))
  }

  async #connect(): Promise<void> {
    if (this.#stopped) return
    this.state.set(this.#attempt === 0 ? 'connecting' : 'reconnecting')
    // A token about to expire would only earn a 4001/4002: refresh first.
    if (this.opts.secondsLeft() < 30 && !(await this.opts.refresh())) {
      if (!this.#stopped) this.#reconnectSoon()
      return
    }
    const token = this.opts.token()
    if (!token || this.#stopped) return
    let ws: WebSocket
    try {
      ws = new WebSocket(this.opts.url, ['rpm.v1', `bearer.${token}`])
    } catch {
      this.#reconnectSoon()
      return
    }
    this.#ws = ws
    this.#ready = false
    this.#deadline = setTimeout(() => this.#drop(), READY_WITHIN_MS)
    ws.onmessage = (e) => this.#onFrame(e)
    ws.onclose = (e) => this.#onClose(ws, e.code, e.reason)
    ws.onerror = () => {
      // onclose follows and decides.
    }
  }

  #onFrame(e: MessageEvent): void {
    let event: ServerEvent
    try {
      event = JSON.parse(String(e.data)) as ServerEvent
    } catch {
      return
    }
    this.#alive()
    if (event.type === 'ready') {
      this.#ready = true
      this.#attempt = 0
      clearTimeout(this.#deadline)
      this.state.set('open')
      this.#startPings()
    }
    ;(this.events.emit as (name: string, e: ServerEvent) => void)(event.type, event)
  }

  #onClose(ws: WebSocket, code: number, reason: string): void {
    if (ws !== this.#ws) return
    this.#teardown()
    this.events.emit('closed', code)
    if (this.#stopped) return
    if (code === 4001 || code === 4003) {
      this.state.set('stopped')
      this.opts.signedOut(code, reason)
      return
    }
    if (code === 4002) {
      // The access token expired: refresh, then reconnect at once and resume.
      this.state.set('reconnecting')
      // If the gateway cannot be reached for the refresh, keep trying with backoff (#connect refreshes first).
      void this.opts.refresh().then((ok) => this.#reconnectSoon(ok ? 0 : undefined))
      return
    }
    this.#reconnectSoon(code === 4008 ? BACKOFF_MAX_MS : undefined)
  }

  #reconnectSoon(delayMs?: number): void {
    if (this.#stopped) return
    clearTimeout(this.#retryTimer)
    if (this.#ws && delayMs === 0) {
      // Already connected or connecting: "online" after a blip needs nothing.
      if (this.#ws.readyState === WebSocket.OPEN || this.#ws.readyState === WebSocket.CONNECTING) return
    }
    this.state.set(navigator.onLine === false ? 'offline' : 'reconnecting')
    const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.#attempt)
    // Full jitter in the upper half, so a gateway restart is not met by every console at once.
    const wait = delayMs ?? backoff / 2 + Math.random() * (backoff / 2)
    this.#attempt += 1
    this.#retryTimer = setTimeout(() => void this.#connect(), wait)
  }

  /** A connection that stopped answering: give it up without waiting for TCP to notice, and reconnect. */
  #drop(): void {
    this.#teardown()
    this.events.emit('closed', 1006)
    this.#reconnectSoon()
  }

  #startPings(): void {
    clearInterval(this.#pingTimer)
    this.#pingTimer = setInterval(() => {
      if (!this.isReady) return
      this.#ws!.send(JSON.stringify({ type: 'ping' }))
      clearTimeout(this.#deadline)
      // No frame at all by then: the connection is dead without having closed.
      this.#deadline = setTimeout(() => this.#drop(), PONG_WITHIN_MS)
    }, PING_EVERY_MS)
  }

  #alive(): void {
    if (this.#ready) clearTimeout(this.#deadline)
  }

  #teardown(): void {
    clearInterval(this.#pingTimer)
    clearTimeout(this.#deadline)
    this.#ready = false
    const ws = this.#ws
    this.#ws = null
    if (ws) {
      ws.onmessage = null
      ws.onclose = null
      ws.onerror = null
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1000)
    }
  }
}
