import WebSocket from 'ws'
import { waitFor, type TestGateway } from './helpers.ts'

const sockets: WebSocket[] = []

/** Terminates every socket opened through this module (call it in afterEach). */
export function closeSockets(): void {
  for (const ws of sockets.splice(0)) ws.terminate()
}

/** A live socket that keeps every server event it received, in order. */
export class Live {
  readonly events: any[] = []
  readonly closed: Promise<{ code: number; reason: string }>

  constructor(readonly ws: WebSocket) {
    sockets.push(ws)
    ws.on('message', (data) => this.events.push(JSON.parse(data.toString())))
    ws.on('error', () => {})
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })))
  }

  send(event: Record<string, unknown>): void {
    this.ws.send(JSON.stringify(event))
  }

  of(type: string, match: Record<string, unknown> = {}): any[] {
    return this.events.filter((e) => e.type === type && Object.entries(match).every(([k, v]) => e[k] === v))
  }

  /** The first event of this type (and fields) received from index `from` on. */
  async next(type: string, match: Record<string, unknown> = {}, from = 0, ms = 5000): Promise<any> {
    return waitFor(() => this.events.slice(from).find((e) => e.type === type && Object.entries(match).every(([k, v]) => e[k] === v)), ms, `${type} event`)
  }

  /** A ping/pong round trip: everything the server queued before it has arrived. */
  async settle(): Promise<void> {
    const ref = `p${Math.random()}`
    this.send({ type: 'ping', ref })
    await this.next('pong', { ref })
  }

  /** Subscribes from `after`, subscribing again while the replay is cut short, until live. */
  async subscribe(threadId: string, after = 0): Promise<void> {
    for (let i = 0; i < 100; i++) {
      const ref = `s${i}-${Math.random()}`
      this.send({ type: 'subscribe', threads: [{ threadId, after }], ref })
      const done = await this.next('subscribed', { ref }, 0, 10_000)
      if (done.live) return
      after = done.replayedTo
    }
    throw new Error('subscription never went live')
  }

  seqs(threadId: string): number[] {
    return this.of('message', { threadId }).map((e) => e.message.seq)
  }
}

export const wsUrl = (t: TestGateway) => `${t.urls.http.replace(/^http/, 'ws')}/api/v1/ws`

export function open(t: TestGateway, protocols?: string[], options: WebSocket.ClientOptions = {}): Promise<Live> {
  const ws = new WebSocket(wsUrl(t), protocols, options)
  const live = new Live(ws)
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(live))
    ws.once('error', reject)
  })
}

/** Opens a socket and signs in with the first message; resolves once `ready` arrived. */
export async function connect(t: TestGateway, who: { token: string }): Promise<Live> {
  const live = await open(t)
  live.send({ type: 'auth', token: who.token })
  await live.next('ready')
  return live
}

