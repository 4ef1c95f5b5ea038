/**
 * A fake Web Push service (the server behind a browser subscription's endpoint), checking a
 * push request the way Mozilla autopush / FCM web push / Apple do:
 *
 * - RFC 8030 (Web Push protocol): POST to the push resource, `TTL` required (§5.2), `Urgency`
 *   (§5.3) and `Topic` (§5.4) validated, 201 Created with a Location (§5), 404/410 for unknown
 *   and expired subscriptions (§7.3), 413 above 4096 octets of payload (§7.2).
 * - RFC 8292 (VAPID): `Authorization: vapid t=<JWT>, k=<public key>` (§3), ES256 JWT whose
 *   `aud` is the push resource's origin, `exp` no more than 24 h ahead (§2), `sub` a mailto: or
 *   https: contact (§2.1); restricted subscriptions only accept their applicationServerKey (§4).
 *   401 when the authentication is absent, 403 when it is invalid (the codes §4.2 suggests).
 * - RFC 8291 (message encryption): `Content-Encoding: aes128gcm`; the body is decrypted with
 *   the subscription's private ECDH key and auth secret, which a real push service cannot do
 *   but the browser does. A body that does not decrypt is refused here (400) so a test fails
 *   loudly instead of a notification silently vanishing in a browser.
 */
import { createECDH, createPublicKey, randomBytes, randomUUID, type ECDH } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { decrypt } from 'http_ece'
import { errors as joseErrors, jwtVerify } from 'jose'
import { FailQueue, header, readBody, sendJson, startHttps, Waiters, type FakeHttpsServer, type Refusal } from './common.ts'

/** What a browser hands the application server after `pushManager.subscribe()`. */
export interface PushSubscriptionJson {
  endpoint: string
  keys: { p256dh: string; auth: string }
}

export interface PushReceived {
  endpoint: string
  subscriptionId: string
  headers: {
    /** Seconds, from the `TTL` header. */
    ttl: number
    /** As sent; RFC 8030 §5.3 says absent means `normal`. */
    urgency: string | undefined
    topic: string | undefined
    /** `aes128gcm`, or undefined for a push without payload. */
    contentEncoding: string | undefined
  }
  vapid: { aud: string; sub: string; exp: number; publicKey: string }
  /** The decrypted payload ('' for a push without payload). */
  text: string
  /** JSON.parse(text), or null when it is not JSON. */
  payload: unknown
  at: number
}

export interface PushHold {
  /** Resolves when the held request has arrived (it is then in `held`). */
  requested: Promise<void>
  /** Answers the held request: 2xx (default 201) moves it to `received`, else it is dropped. */
  release(status?: number): void
}

interface Subscription {
  id: string
  endpoint: string
  ecdh: ECDH
  authSecret: Buffer
  /** RFC 8292 §4: a subscription made with an applicationServerKey only accepts that key. */
  applicationServerKey: string | undefined
}

interface PendingHold {
  arrived: () => void
  record?: PushReceived
  res?: ServerResponse
  /** release() called before the request arrived: answer it right away with this status. */
  earlyStatus?: number
}

/** RFC 8030 §7.2: a push service must accept at least 4096 octets; real services stop there. */
const MAX_BODY = 4096
const DAY_SECONDS = 24 * 60 * 60
const URGENCIES = new Set(['very-low', 'low', 'normal', 'high'])
/** RFC 8030 §5.4: a topic is at most 32 characters from the URL-safe base64 alphabet. */
const TOPIC = /^[A-Za-z0-9_-]{1,32}$/

class PushRefusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

export class FakePushService {
  /** Accepted pushes, in arrival order. */
  readonly received: PushReceived[] = []
  /** Pushes held by holdNext() and not released yet. */
  readonly held: PushReceived[] = []
  /** Requests answered with an error (programmed or not), with the reason. */
  readonly refused: Refusal[] = []
  /** Every POST, whatever its answer. */
  requests = 0

  readonly #subscriptions = new Map<string, Subscription>()
  readonly #gone = new Set<string>()
  readonly #fail = new FailQueue()
  readonly #holds: PendingHold[] = []
  readonly #waiters = new Waiters<PushReceived>(
    () => this.received,
    () => this.#describeRefusals(),
  )
  #http!: FakeHttpsServer

  private constructor() {}

  static async start(): Promise<FakePushService> {
    const fake = new FakePushService()
    fake.#http = await startHttps((req, res) => fake.#handle(req, res))
    return fake
  }

  /** `https://127.0.0.1:PORT`, the `aud` VAPID tokens must carry. */
  get origin(): string {
    return this.#http.origin
  }

  close(): Promise<void> {
    return this.#http.close()
  }

  /**
   * A new browser-like subscription: endpoint `${origin}/push/<id>`, a P-256 key pair whose
   * public point is `p256dh` and a 16-byte `auth` secret (RFC 8291 §2, both base64url).
   * With `applicationServerKey` (base64url VAPID public key) the subscription is restricted.
   */
  subscription(opts: { applicationServerKey?: string } = {}): PushSubscriptionJson {
    const id = randomUUID()
    const ecdh = createECDH('prime256v1')
    ecdh.generateKeys()
    const authSecret = randomBytes(16)
    const endpoint = `${this.origin}/push/${id}`
    this.#subscriptions.set(`/push/${id}`, { id, endpoint, ecdh, authSecret, applicationServerKey: opts.applicationServerKey })
    return {
      endpoint,
      keys: {
        p256dh: ecdh.getPublicKey().toString('base64url'), // uncompressed point, 65 bytes
        auth: authSecret.toString('base64url'),
      },
    }
  }

  /** The subscription expired or was unsubscribed: its endpoint answers 410 from now on. */
  gone(endpoint: string): void {
    this.#gone.add(new URL(endpoint).pathname)
  }

  /** The next `n` requests answer `status` (default 503) and are not recorded as received. */
  failNext(n: number, status = 503): void {
    this.#fail.push(n, status)
  }

  /**
   * The next valid push is kept unanswered (in `held`) until released, to test timeouts and
   * in-flight behaviour. close() destroys a held connection.
   */
  holdNext(): PushHold {
    let arrived!: () => void
    const requested = new Promise<void>((resolve) => (arrived = resolve))
    const hold: PendingHold = { arrived }
    this.#holds.push(hold)
    return {
      requested,
      release: (status = 201) => {
        if (!hold.res || !hold.record) {
          hold.earlyStatus = status
          return
        }
        const record = hold.record
        const index = this.held.indexOf(record)
        if (index >= 0) this.held.splice(index, 1)
        if (hold.res.destroyed) return // the client gave up or the server closed
        if (status >= 200 && status < 300) this.#accept(hold.res, record, status)
        else this.#refuse(hold.res, new PushRefusal(status, 'released with an error status'), new URL(record.endpoint).pathname)
      },
    }
  }

  /** Resolves with `received` once it holds at least `n` pushes. */
  waitFor(n: number, timeoutMs = 10_000): Promise<PushReceived[]> {
    return this.#waiters.waitFor(n, timeoutMs, 'pushes')
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', this.origin).pathname
    if (req.method !== 'POST') {
      this.#refuse(res, new PushRefusal(405, `method ${req.method} not allowed`), path)
      return
    }
    this.requests++
    const body = await readBody(req)
    const failStatus = this.#fail.take()
    if (failStatus !== undefined) {
      this.#refuse(res, new PushRefusal(failStatus, 'failNext'), path)
      return
    }
    let record: PushReceived
    try {
      record = await this.#check(req, path, body)
    } catch (err) {
      if (err instanceof PushRefusal) {
        this.#refuse(res, err, path)
        return
      }
      throw err
    }
    const hold = this.#holds.shift()
    if (hold) {
      if (hold.earlyStatus !== undefined) {
        if (hold.earlyStatus >= 200 && hold.earlyStatus < 300) this.#accept(res, record, hold.earlyStatus)
        else this.#refuse(res, new PushRefusal(hold.earlyStatus, 'released with an error status'), path)
        hold.arrived()
        return
      }
      hold.record = record
      hold.res = res
      this.held.push(record)
      hold.arrived()
      return
    }
    this.#accept(res, record, 201)
  }

  /** Validates a push request like a push service, then decrypts it like the browser. */
  async #check(req: IncomingMessage, path: string, body: Buffer): Promise<PushReceived> {
    const sub = this.#subscriptions.get(path)
    if (!sub) throw new PushRefusal(404, 'no such subscription')
    if (this.#gone.has(path)) throw new PushRefusal(410, 'subscription expired or unsubscribed')

    const vapid = await this.#checkVapid(req, sub)

    // RFC 8030 §5.2: TTL is mandatory, a non-negative number of seconds.
    const ttlHeader = header(req, 'ttl')
    if (ttlHeader === undefined) throw new PushRefusal(400, 'missing TTL header')
    if (!/^\d+$/.test(ttlHeader.trim())) throw new PushRefusal(400, `invalid TTL header: ${ttlHeader}`)
    const urgency = header(req, 'urgency')
    if (urgency !== undefined && !URGENCIES.has(urgency)) throw new PushRefusal(400, `invalid Urgency: ${urgency}`)
    const topic = header(req, 'topic')
    if (topic !== undefined && !TOPIC.test(topic)) throw new PushRefusal(400, `invalid Topic (max 32 base64url characters): ${topic}`)

    if (body.length > MAX_BODY) throw new PushRefusal(413, `payload of ${body.length} bytes exceeds ${MAX_BODY}`)
    const contentEncoding = header(req, 'content-encoding')
    let text = ''
    if (body.length > 0) {
      // RFC 8291 §4: payloads are encrypted with the aes128gcm content coding (RFC 8188).
      if (contentEncoding !== 'aes128gcm') {
        throw new PushRefusal(400, `payload needs Content-Encoding: aes128gcm, got ${contentEncoding ?? 'none'}`)
      }
      text = this.#decrypt(sub, body)
    }
    let payload: unknown = null
    try {
      payload = text === '' ? null : JSON.parse(text)
    } catch {
      payload = null
    }
    return {
      endpoint: sub.endpoint,
      subscriptionId: sub.id,
      headers: { ttl: Number(ttlHeader), urgency, topic, contentEncoding },
      vapid,
      text,
      payload,
      at: Date.now(),
    }
  }

  /** RFC 8292 §3: `Authorization: vapid t=<JWT>, k=<base64url P-256 public key>`. */
  async #checkVapid(req: IncomingMessage, sub: Subscription): Promise<PushReceived['vapid']> {
    const authorization = header(req, 'authorization')
    if (!authorization) throw new PushRefusal(401, 'missing VAPID Authorization header')
    const match = /^vapid\s+(.+)$/i.exec(authorization.trim())
    if (!match) throw new PushRefusal(401, `Authorization scheme is not vapid: ${authorization.split(' ')[0]}`)
    const params = new Map<string, string>()
    for (const part of match[1]!.split(',')) {
      const eq = part.indexOf('=')
      if (eq < 0) continue
      params.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1'))
    }
    const token = params.get('t')
    const k = params.get('k')
    if (!token || !k) throw new PushRefusal(401, 'VAPID Authorization needs both t= and k=')

    // k is the uncompressed P-256 point (0x04 || x || y), base64url (RFC 8292 §3.2).
    const point = Buffer.from(k, 'base64url')
    if (point.length !== 65 || point[0] !== 0x04) throw new PushRefusal(403, 'VAPID k is not an uncompressed P-256 public key')
    let key
    try {
      key = createPublicKey({
        format: 'jwk',
        key: { kty: 'EC', crv: 'P-256', x: point.subarray(1, 33).toString('base64url'), y: point.subarray(33).toString('base64url') },
      })
    } catch {
      throw new PushRefusal(403, 'VAPID k is not a point on P-256')
    }
    if (sub.applicationServerKey !== undefined && sub.applicationServerKey !== k) {
      throw new PushRefusal(403, 'VAPID key differs from the applicationServerKey of the subscription')
    }

    let claims
    try {
      // RFC 8292 §2: the token is signed with ES256 by the key in k. jose also rejects an exp
      // in the past.
      ;({ payload: claims } = await jwtVerify(token, key, { algorithms: ['ES256'] }))
    } catch (err) {
      const why = err instanceof joseErrors.JOSEError ? `${err.code}: ${err.message}` : String(err)
      throw new PushRefusal(403, `VAPID token rejected (${why})`)
    }
    const origin = new URL(sub.endpoint).origin
    if (claims.aud !== origin) throw new PushRefusal(403, `VAPID aud ${JSON.stringify(claims.aud)} is not the push service origin ${origin}`)
    const now = Math.floor(Date.now() / 1000)
    if (typeof claims.exp !== 'number') throw new PushRefusal(403, 'VAPID token has no exp')
    if (claims.exp - now > DAY_SECONDS) throw new PushRefusal(403, `VAPID exp is ${claims.exp - now} s ahead, more than 24 h`)
    if (typeof claims.sub !== 'string' || !isContact(claims.sub)) {
      throw new PushRefusal(403, `VAPID sub must be a mailto: or https: URL, got ${JSON.stringify(claims.sub)}`)
    }
    return { aud: claims.aud, sub: claims.sub, exp: claims.exp, publicKey: k }
  }

  /** What the browser does on receipt (RFC 8291 §3.4): ECDH with the sender key in the header. */
  #decrypt(sub: Subscription, body: Buffer): string {
    // RFC 8188 §2.1 header: salt(16) rs(4) idlen(1) keyid; RFC 8291 §4 puts the sender's
    // 65-byte public key in keyid.
    if (body.length < 21 || body[20] !== 65) throw new PushRefusal(400, 'aes128gcm header does not carry a 65-byte sender key')
    try {
      return decrypt(body, { version: 'aes128gcm', privateKey: sub.ecdh, authSecret: sub.authSecret }).toString('utf8')
    } catch (err) {
      throw new PushRefusal(400, `payload does not decrypt with the subscription keys: ${(err as Error).message}`)
    }
  }

  #accept(res: ServerResponse, record: PushReceived, status: number): void {
    this.received.push(record)
    // RFC 8030 §5: the push service answers 201 with the push message resource's URL.
    res.writeHead(status, { location: `${this.origin}/message/${randomUUID()}`, 'content-length': 0 })
    res.end()
    this.#waiters.notify()
  }

  #refuse(res: ServerResponse, err: PushRefusal, path: string): void {
    this.refused.push({ status: err.status, reason: err.message, path, at: Date.now() })
    // Shaped like autopush's error body; web-push puts it in WebPushError.body.
    sendJson(res, err.status, { code: err.status, error: statusText(err.status), message: err.message })
  }

  #describeRefusals(): string {
    return this.refused.length === 0 ? 'none refused' : `refused: ${this.refused.map((r) => `${r.status} ${r.reason}`).join('; ')}`
  }
}

function isContact(sub: string): boolean {
  try {
    const url = new URL(sub)
    return url.protocol === 'mailto:' || url.protocol === 'https:'
  } catch {
    return false
  }
}

function statusText(status: number): string {
  const texts: Record<number, string> = {
    400: 'Bad Request',
    401: 'Unauthorized',
    403: 'Forbidden',
    404: 'Not Found',
    405: 'Method Not Allowed',
    410: 'Gone',
    413: 'Payload Too Large',
    429: 'Too Many Requests',
    500: 'Internal Server Error',
    502: 'Bad Gateway',
    503: 'Service Unavailable',
  }
  return texts[status] ?? 'Error'
}
