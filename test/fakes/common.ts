/**
 * Plumbing shared by the fake remote services: an HTTPS server on 127.0.0.1 with a free port
 * that really closes (keep-alive and held sockets included), body reading, waiting for
 * recorded requests, and a queue of programmed failures.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import https from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import { fakeTls } from './tls.ts'

export type Handler = (req: IncomingMessage, res: ServerResponse) => Promise<void> | void

export interface FakeHttpsServer {
  server: https.Server
  port: number
  /** `https://127.0.0.1:PORT` */
  origin: string
  close(): Promise<void>
}

/**
 * Starts an HTTPS server with the fake TLS certificate on 127.0.0.1, port 0. A handler that
 * throws answers 500 with the error text, so a bug in a fake shows up in the test's error.
 */
export async function startHttps(handler: Handler): Promise<FakeHttpsServer> {
  const tls = await fakeTls()
  const server = https.createServer({ cert: tls.cert, key: tls.key })
  // SDKs keep connections alive (Node 20's global agent, Twilio's agent) and a held request
  // never finishes: track every socket so close() can destroy them and not hang.
  const sockets = new Set<Socket>()
  server.on('secureConnection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    Promise.resolve()
      .then(() => handler(req, res))
      .catch((err: unknown) => {
        if (!res.headersSent) {
          res.writeHead(500, { 'content-type': 'text/plain' })
        }
        res.end(`fake server error: ${err instanceof Error ? err.stack ?? err.message : String(err)}`)
      })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  const { port } = server.address() as AddressInfo
  let closing: Promise<void> | undefined
  return {
    server,
    port,
    origin: `https://127.0.0.1:${port}`,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve())
        for (const socket of sockets) socket.destroy()
      })
      return closing
    },
  }
}

/** Reads the whole request body (the fakes only see small API requests). */
export async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), ...headers })
  res.end(text)
}

/** A single header value (the fakes treat repeated headers as the first one). */
export function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name.toLowerCase()]
  return Array.isArray(value) ? value[0] : value
}

/** Statuses programmed with failNext(n, status), consumed one per request. */
export class FailQueue {
  #statuses: number[] = []

  push(n: number, status: number): void {
    if (!Number.isInteger(n) || n < 0) throw new Error(`failNext: n must be a non-negative integer, got ${n}`)
    for (let i = 0; i < n; i++) this.#statuses.push(status)
  }

  /** The status to fail this request with, if one is programmed. */
  take(): number | undefined {
    return this.#statuses.shift()
  }
}

/** Promises that resolve once a list reaches a length; `notify()` after each push. */
export class Waiters<T> {
  #pending = new Set<{ n: number; resolve: (items: T[]) => void }>()

  constructor(
    private readonly items: () => T[],
    /** Extra context for the timeout error, e.g. the requests the fake refused and why. */
    private readonly describe: () => string = () => '',
  ) {}

  notify(): void {
    const items = this.items()
    for (const waiter of this.#pending) {
      if (items.length >= waiter.n) {
        this.#pending.delete(waiter)
        waiter.resolve([...items])
      }
    }
  }

  waitFor(n: number, timeoutMs: number, what: string): Promise<T[]> {
    const items = this.items()
    if (items.length >= n) return Promise.resolve([...items])
    return new Promise<T[]>((resolve, reject) => {
      const waiter = {
        n,
        resolve: (found: T[]) => {
          clearTimeout(timer)
          resolve(found)
        },
      }
      const timer = setTimeout(() => {
        this.#pending.delete(waiter)
        const extra = this.describe()
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${n} ${what}, have ${this.items().length}${extra ? `; ${extra}` : ''}`))
      }, timeoutMs)
      this.#pending.add(waiter)
    })
  }
}

/** A request a fake refused, kept so a failing test can say why. */
export interface Refusal {
  status: number
  reason: string
  path: string
  at: number
}
