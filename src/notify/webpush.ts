import { createHash } from 'node:crypto'
import https from 'node:https'
import webpush, { WebPushError } from 'web-push'
import type { Channel, Delivery, PushTarget, SendOutcome } from './types.ts'
import type { VapidKeys } from './vapid.ts'

export interface WebPushOptions {
  vapid: VapidKeys
  subject: string
  timeoutMs: number
  /** Extra CA certificates (PEM) to trust, or undefined for the system's. */
  ca?: string
}

/** RFC 8030 §5.4: a topic is at most 32 characters of the URL-safe base64 alphabet. */
export const pushTopic = (collapseKey: string): string => createHash('sha256').update(collapseKey).digest('base64url').slice(0, 32)

/** Web Push (RFC 8030, payload encrypted per RFC 8291, VAPID per RFC 8292) through web-push. */
export class WebPushChannel implements Channel<PushTarget> {
  readonly name = 'webpush' as const
  readonly #options: WebPushOptions
  readonly #agent: https.Agent

  constructor(options: WebPushOptions) {
    this.#options = options
    this.#agent = new https.Agent({ keepAlive: true, maxSockets: 16, ...(options.ca ? { ca: options.ca } : {}) })
  }

  async send(d: Delivery, to: PushTarget): Promise<SendOutcome> {
    // What the service worker shows: the tag replaces an earlier notification with the same key,
    // so a resend after a crash shows once.
    const payload = JSON.stringify({ title: d.content.title, body: d.content.body, tag: d.collapseKey, data: d.content.data })
    try {
      const res = await webpush.sendNotification(
        { endpoint: to.address, keys: { p256dh: to.p256dh ?? '', auth: to.auth ?? '' } },
        payload,
        {
          vapidDetails: { subject: this.#options.subject, publicKey: this.#options.vapid.publicKey, privateKey: this.#options.vapid.privateKey },
          TTL: d.ttlSeconds,
          urgency: d.urgent ? 'high' : 'normal',
          topic: pushTopic(d.collapseKey),
          timeout: this.#options.timeoutMs,
          agent: this.#agent,
        },
      )
      return { ok: true, ...(res.headers.location ? { providerRef: String(res.headers.location).slice(0, 300) } : {}) }
    } catch (err) {
      return classify(err)
    }
  }

  async close(): Promise<void> {
    this.#agent.destroy()
  }
}

function classify(err: unknown): SendOutcome {
  if (err instanceof WebPushError) {
    const status = err.statusCode
    // RFC 8030 §7.3: 404 and 410 mean the subscription is gone for good.
    if (status === 404 || status === 410) return { ok: false, kind: 'gone', code: `http_${status}` }
    if (status === 429 || status >= 500) {
      const retryAfter = Number(err.headers?.['retry-after'])
      return { ok: false, kind: 'temporary', code: `http_${status}`, ...(Number.isFinite(retryAfter) && retryAfter > 0 ? { retryAfterMs: retryAfter * 1000 } : {}) }
    }
    return { ok: false, kind: 'permanent', code: `http_${status}` }
  }
  const code = (err as NodeJS.ErrnoException)?.code
  // No answer (refused, reset, timed out, DNS): the service may be back shortly.
  return { ok: false, kind: 'temporary', code: typeof code === 'string' ? code.toLowerCase() : 'network' }
}
