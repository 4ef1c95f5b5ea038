/**
 * A fake Twilio REST API for Programmable Messaging (`POST /2010-04-01/Accounts/{Sid}/Messages.json`)
 * for the real twilio SDK, checking what Twilio checks: HTTP basic auth with the account SID and
 * auth token, the form fields (To in E.164, a sender, a body) and opted-out recipients, and
 * answering with Twilio's JSON (message resource on success, `{code, message, more_info, status}`
 * on error, which the SDK turns into a RestException).
 *
 * The SDK has no endpoint override that survives region/edge settings, so requests are
 * redirected by an httpClient that rewrites the URI (see `twilioHttpClient`).
 *
 * Status callbacks go the other way (Twilio -> gateway): `signedCallback` builds one signed
 * with the account's auth token exactly as Twilio does, for the gateway to verify.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import twilio from 'twilio'
import type RequestClient from 'twilio/lib/base/RequestClient.js'
import type * as TwilioHttpResponse from 'twilio/lib/http/response.js'
import { FailQueue, header, readBody, sendJson, startHttps, Waiters, type FakeHttpsServer, type Refusal } from './common.ts'

export interface TwilioSent {
  to: string
  from: string | undefined
  messagingServiceSid: string | undefined
  body: string
  statusCallback: string | undefined
  /** The basic-auth user the request authenticated as (the account SID). */
  authorization: string
  /** The message SID answered, `SM` + 32 hex. */
  sid: string
  at: number
}

export type TwilioMessageStatus = 'queued' | 'sending' | 'sent' | 'delivered' | 'undelivered' | 'failed'

const API = '2010-04-01'
/** E.164: a + and up to 15 digits, no leading zero in the country code. */
const E164 = /^\+[1-9]\d{1,14}$/
const MAX_BODY = 1600

class TwilioRefusal extends Error {
  constructor(
    readonly status: number,
    readonly code: number,
    message: string,
  ) {
    super(message)
  }
}

/** Twilio API time stamps are RFC 2822 in UTC: "Thu, 30 Jul 2015 20:12:31 +0000". */
function rfc2822(ms: number): string {
  return new Date(ms).toUTCString().replace('GMT', '+0000')
}

const hex = (bytes: number) => randomBytes(bytes).toString('hex')

export class FakeTwilio {
  readonly sent: TwilioSent[] = []
  readonly refused: Refusal[] = []
  /** Every request, whatever its answer. */
  requests = 0

  readonly #optedOut = new Set<string>()
  readonly #fail = new FailQueue()
  #loseAnswers = 0
  readonly #waiters = new Waiters<TwilioSent>(
    () => this.sent,
    () => (this.refused.length ? `refused: ${this.refused.map((r) => `${r.status} ${r.reason}`).join('; ')}` : 'none refused'),
  )
  #http!: FakeHttpsServer

  private constructor(
    readonly accountSid: string,
    readonly authToken: string,
  ) {}

  static async start(accountSid = `AC${hex(16)}`, authToken = hex(16)): Promise<FakeTwilio> {
    const fake = new FakeTwilio(accountSid, authToken)
    fake.#http = await startHttps((req, res) => fake.#handle(req, res))
    return fake
  }

  get origin(): string {
    return this.#http.origin
  }

  close(): Promise<void> {
    return this.#http.close()
  }

  /** The recipient texted STOP: sends to it answer 400 / 21610 from now on. */
  optOut(number: string): void {
    this.#optedOut.add(number)
  }

  /** The next `n` requests answer `status` (default 503) with Twilio's error JSON. */
  failNext(n: number, status = 503): void {
    this.#fail.push(n, status)
  }

  waitFor(n: number, timeoutMs = 10_000): Promise<TwilioSent[]> {
    return this.#waiters.waitFor(n, timeoutMs, 'SMS')
  }

  /**
   * The next valid message is taken (it is in `sent`: Twilio has it and will text it) but its
   * answer never comes, as when the sender crashes or the connection drops after the request.
   */
  loseNextAnswer(): void {
    this.#loseAnswers++
  }

  /**
   * A status callback as Twilio posts it to a message's StatusCallback URL: form-encoded body and
   * `X-Twilio-Signature` = base64(HMAC-SHA1(authToken, url + sorted key/value pairs)), computed
   * by the SDK's own `getExpectedTwilioSignature`. `url` must be the exact URL the receiver
   * reconstructs (scheme, host, port, path and query).
   */
  signedCallback(url: string, params: Record<string, string>, opts: { badSignature?: boolean } = {}): { headers: Record<string, string>; body: string } {
    let signature = twilio.getExpectedTwilioSignature(this.authToken, url, params)
    if (opts.badSignature) signature = (signature[0] === 'A' ? 'B' : 'A') + signature.slice(1)
    return {
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        'x-twilio-signature': signature,
        'user-agent': 'TwilioProxy/1.1',
        'i-twilio-idempotency-token': randomUUID(),
      },
      body: new URLSearchParams(params).toString(),
    }
  }

  /** The parameters Twilio posts in a message status callback for `sent`. */
  callbackParams(sent: TwilioSent, status: TwilioMessageStatus, extra: Record<string, string> = {}): Record<string, string> {
    return {
      AccountSid: this.accountSid,
      ApiVersion: API,
      From: sent.from ?? '+15005550006',
      To: sent.to,
      MessageSid: sent.sid,
      SmsSid: sent.sid,
      MessageStatus: status,
      SmsStatus: status,
      ...(sent.messagingServiceSid ? { MessagingServiceSid: sent.messagingServiceSid } : {}),
      ...extra,
    }
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requests++
    const path = new URL(req.url ?? '/', this.origin).pathname
    const body = await readBody(req)
    try {
      const failStatus = this.#fail.take()
      if (failStatus !== undefined) {
        const code = failStatus === 429 ? 20429 : 20500
        throw new TwilioRefusal(failStatus, code, failStatus === 429 ? 'Too Many Requests' : 'Internal Server Error')
      }
      const { sent, resource } = this.#create(req, path, body)
      this.sent.push(sent)
      if (this.#loseAnswers > 0) {
        this.#loseAnswers--
        this.#waiters.notify()
        return // no answer; close() destroys the socket
      }
      sendJson(res, 201, resource)
      this.#waiters.notify()
    } catch (err) {
      if (!(err instanceof TwilioRefusal)) throw err
      this.refused.push({ status: err.status, reason: `${err.code} ${err.message}`, path, at: Date.now() })
      sendJson(
        res,
        err.status,
        { code: err.code, message: err.message, more_info: `https://www.twilio.com/docs/errors/${err.code}`, status: err.status },
        err.status === 401 ? { 'www-authenticate': 'Basic realm="Twilio API"' } : {},
      )
    }
  }

  #create(req: IncomingMessage, path: string, raw: Buffer): { sent: TwilioSent; resource: Record<string, unknown> } {
    const route = /^\/2010-04-01\/Accounts\/([^/]+)\/Messages\.json$/.exec(path)
    if (req.method !== 'POST' || !route) {
      throw new TwilioRefusal(404, 20404, `The requested resource ${path} was not found`)
    }
    const user = this.#authenticate(req)
    if (route[1] !== this.accountSid) throw new TwilioRefusal(404, 20404, `The requested resource ${path} was not found`)

    if (!/^application\/x-www-form-urlencoded\b/i.test(header(req, 'content-type') ?? '')) {
      throw new TwilioRefusal(400, 20001, 'Request body must be application/x-www-form-urlencoded')
    }
    const form = new URLSearchParams(raw.toString('utf8'))
    const to = form.get('To')
    const from = form.get('From') ?? undefined
    const messagingServiceSid = form.get('MessagingServiceSid') ?? undefined
    const body = form.get('Body') ?? ''
    const statusCallback = form.get('StatusCallback') ?? undefined

    if (!to) throw new TwilioRefusal(400, 21604, "A 'To' phone number is required.")
    if (!E164.test(to.replace(/^(whatsapp|sms):/, ''))) throw new TwilioRefusal(400, 21211, `The 'To' number ${to} is not a valid phone number.`)
    if (!from && !messagingServiceSid) throw new TwilioRefusal(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a message.")
    if (from && !isSender(from)) {
      throw new TwilioRefusal(400, 21212, `The 'From' number ${from} is not a valid phone number, shortcode, or alphanumeric sender ID.`)
    }
    if (messagingServiceSid && !/^MG[0-9a-f]{32}$/.test(messagingServiceSid)) {
      throw new TwilioRefusal(400, 21701, `The Messaging Service Sid ${messagingServiceSid} is invalid.`)
    }
    if (body === '' && !form.has('MediaUrl') && !form.has('ContentSid')) throw new TwilioRefusal(400, 21602, 'Message body is required.')
    if (body.length > MAX_BODY) throw new TwilioRefusal(400, 21617, `The concatenated message body exceeds the ${MAX_BODY} character limit.`)
    if (statusCallback !== undefined && !isHttpUrl(statusCallback)) {
      throw new TwilioRefusal(400, 21609, `The StatusCallback URL ${statusCallback} is not a valid URL.`)
    }
    if (this.#optedOut.has(to)) throw new TwilioRefusal(400, 21610, 'Attempt to send to unsubscribed recipient')

    const sid = `SM${hex(16)}`
    const now = Date.now()
    const uri = `/${API}/Accounts/${this.accountSid}/Messages/${sid}.json`
    const sent: TwilioSent = { to, from, messagingServiceSid, body, statusCallback, authorization: user, sid, at: now }
    // The message resource as the API returns it on create; with only a messaging service the
    // sender is picked later and the status starts as "accepted".
    const resource = {
      account_sid: this.accountSid,
      api_version: API,
      body,
      date_created: rfc2822(now),
      date_sent: null,
      date_updated: rfc2822(now),
      direction: 'outbound-api',
      error_code: null,
      error_message: null,
      from: from ?? null,
      messaging_service_sid: messagingServiceSid ?? null,
      num_media: '0',
      num_segments: String(Math.max(1, Math.ceil(body.length / 153))),
      price: null,
      price_unit: 'USD',
      sid,
      status: from ? 'queued' : 'accepted',
      subresource_uris: { media: uri.replace(/\.json$/, '/Media.json') },
      to,
      uri,
    }
    return { sent, resource }
  }

  /** HTTP basic auth `AccountSid:AuthToken` (Twilio also takes API keys; the gateway does not use them). */
  #authenticate(req: IncomingMessage): string {
    const match = /^Basic\s+(.+)$/i.exec(header(req, 'authorization') ?? '')
    const decoded = match ? Buffer.from(match[1]!, 'base64').toString('utf8') : ''
    const colon = decoded.indexOf(':')
    const user = colon >= 0 ? decoded.slice(0, colon) : ''
    const password = colon >= 0 ? decoded.slice(colon + 1) : ''
    if (user !== this.accountSid || password !== this.authToken) throw new TwilioRefusal(401, 20003, 'Authenticate')
    return user
  }
}

/** A phone number, short code, alphanumeric sender ID or channel address (whatsapp:+...). */
function isSender(from: string): boolean {
  const bare = from.replace(/^(whatsapp|messenger|sms):/, '')
  return E164.test(bare) || /^\d{5,6}$/.test(bare) || /^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$/.test(bare)
}

function isHttpUrl(value: string): boolean {
  try {
    const url = new URL(value)
    return url.protocol === 'http:' || url.protocol === 'https:'
  } catch {
    return false
  }
}

/**
 * A twilio RequestClient that sends every API request to `origin` (the fake), keeping the path
 * and query, and trusts `ca`. Rewriting the URI here, not `client.api.baseUrl`, survives the
 * SDK's region/edge host rewriting. Use: `twilio(sid, token, { httpClient: twilioHttpClient(origin, ca) })`.
 */
export function twilioHttpClient(origin: string, ca: string | Buffer): twilio.RequestClient {
  class ToFakeTwilio extends twilio.RequestClient {
    override request<TData>(opts: RequestClient.RequestOptions<TData>): Promise<TwilioHttpResponse.default<TData>> {
      const asked = new URL(opts.uri)
      return super.request({ ...opts, uri: new URL(asked.pathname + asked.search, origin).toString() })
    }
  }
  return new ToFakeTwilio({ ca })
}
