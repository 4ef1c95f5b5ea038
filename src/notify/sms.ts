import twilio from 'twilio'
import type { Channel, Delivery, SendOutcome } from './types.ts'

type RequestOptions<TData> = Parameters<twilio.RequestClient['request']>[0] & { data?: TData }

export interface SmsOptions {
  accountSid: string
  authToken: string
  /** A number in E.164 or a Messaging Service SID (MG...). */
  from: string
  /** Full URL Twilio posts delivery status to (the notification id is added), or '' for none. */
  statusCallbackUrl: string
  /** Another API origin (regional edge, egress proxy, test double), or '' for Twilio's. */
  apiBaseUrl: string
  timeoutMs: number
  ca?: string
}

export interface SmsRecipient {
  phone: string
  text: string
}

/**
 * Sends every request to another origin, path and query kept. The SDK rewrites hosts for edges
 * and regions, so its own base URL setting does not hold; the request client is where it does.
 */
class OriginRequestClient extends twilio.RequestClient {
  readonly #origin: string

  constructor(origin: string, opts: ConstructorParameters<typeof twilio.RequestClient>[0]) {
    super(opts)
    this.#origin = origin
  }

  override request<TData>(opts: RequestOptions<TData>) {
    if (this.#origin) {
      const u = new URL(opts.uri)
      opts = { ...opts, uri: this.#origin + u.pathname + u.search }
    }
    return super.request<TData>(opts)
  }
}

// Twilio error codes (https://www.twilio.com/docs/api/errors).
const OPTED_OUT = 21610 // the recipient replied STOP
/** Connection errors that mean the request never reached Twilio. */
const NOT_SENT = new Set(['econnrefused', 'enotfound', 'eai_again', 'ehostunreach', 'enetunreach', 'cert_has_expired', 'unable_to_verify_leaf_signature', 'depth_zero_self_signed_cert', 'self_signed_cert_in_chain'])
const BAD_NUMBER = new Set([21211, 21214, 21217, 21408, 21612, 21614]) // not a valid / reachable mobile number

/** SMS through Twilio's Messages API. */
export class SmsChannel implements Channel<SmsRecipient> {
  readonly name = 'sms' as const
  readonly #client: twilio.Twilio
  readonly #options: SmsOptions

  constructor(options: SmsOptions) {
    this.#options = options
    const httpClient = new OriginRequestClient(options.apiBaseUrl, { timeout: options.timeoutMs, ...(options.ca ? { ca: options.ca } : {}) })
    this.#client = twilio(options.accountSid, options.authToken, { httpClient })
  }

  async send(d: Delivery, to: SmsRecipient): Promise<SendOutcome> {
    const from = this.#options.from
    try {
      const msg = await this.#client.messages.create({
        to: to.phone,
        ...(from.startsWith('MG') ? { messagingServiceSid: from } : { from }),
        body: to.text,
        ...(this.#options.statusCallbackUrl ? { statusCallback: `${this.#options.statusCallbackUrl}?notification=${encodeURIComponent(d.id)}` } : {}),
      })
      return { ok: true, providerRef: msg.sid }
    } catch (err) {
      // Never keep err.message: Twilio's messages can quote the phone number.
      const e = err as { status?: number; code?: number | string }
      if (typeof e.status === 'number') {
        if (e.code === OPTED_OUT) return { ok: false, kind: 'opted_out', code: 'twilio_21610' }
        if (e.status === 429 || e.status >= 500) return { ok: false, kind: 'temporary', code: `http_${e.status}` }
        if (typeof e.code === 'number' && BAD_NUMBER.has(e.code)) return { ok: false, kind: 'permanent', code: `twilio_${e.code}` }
        return { ok: false, kind: 'permanent', code: typeof e.code === 'number' ? `twilio_${e.code}` : `http_${e.status}` }
      }
      const code = typeof e.code === 'string' ? e.code.toLowerCase() : 'network'
      // Refused before anything was sent: safe to try again. A timeout or a reset after the
      // request left may have created the message at Twilio: in doubt, never simply resent.
      return { ok: false, kind: NOT_SENT.has(code) ? 'temporary' : 'unknown', code }
    }
  }

  /** Checks `X-Twilio-Signature` over the URL Twilio called and the posted form fields. */
  verify(signature: string, url: string, params: Record<string, string>): boolean {
    return twilio.validateRequest(this.#options.authToken, signature, url, params)
  }

  async close(): Promise<void> {}
}
