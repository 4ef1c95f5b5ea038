/**
 * A fake Firebase Cloud Messaging HTTP v1 API (`POST /v1/projects/{projectId}/messages:send`)
 * for the real firebase-admin SDK. There is no FCM emulator, so this checks what FCM checks:
 * the OAuth bearer token, the project, the JSON shape of the request (unknown fields, exactly
 * one target, string-only data) and answers in Google's error JSON so firebase-admin raises
 * the same FirebaseMessagingError codes it raises in production.
 *
 * Reaching it: firebase-admin has no endpoint override. `transport()` gives a credential with
 * a fixed access token and an https.Agent whose connections go here whatever host is asked:
 *
 *   const app = initializeApp({ ...fcm.transport() }, uniqueName) // credential, httpAgent, projectId
 *   await getMessaging(app).send({ token, data })
 *
 * firebase-admin 13.10: `send()` goes through its HTTP/1.1 client, which uses `httpAgent`.
 * `sendEach()` / `sendEachForMulticast()` default to an HTTP/2 session to
 * fcm.googleapis.com that ignores `httpAgent`; call `getMessaging(app).enableLegacyHttpTransport()`
 * first to route them through the agent (and so here).
 *
 * Also: firebase-admin retries 503 answers up to 4 times (back-off 0 s, 1 s, 2 s, 4 s), so
 * `failNext(1)` is invisible to the caller and `failNext(5)` takes about 7 s to surface.
 */
import { randomBytes } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import https from 'node:https'
import type { Duplex } from 'node:stream'
import tls from 'node:tls'
import type { Credential } from 'firebase-admin/app'
import { FailQueue, header, readBody, sendJson, startHttps, Waiters, type FakeHttpsServer, type Refusal } from './common.ts'
import { fakeTls } from './tls.ts'

/**
 * An FCM v1 Message as it arrives (snake_case, as firebase-admin serialises it), after the
 * fake's validation: exactly one target, string-only data and notification fields.
 */
export interface FcmMessage {
  token?: string
  topic?: string
  condition?: string
  data?: Record<string, string>
  notification?: Record<string, string>
  android?: {
    /** 'high' | 'normal' as firebase-admin sends it (FCM accepts either case). */
    priority?: string
    /** Duration string, e.g. "60s". */
    ttl?: string
    collapse_key?: string
    data?: Record<string, string>
    notification?: Record<string, unknown>
    [key: string]: unknown
  }
  apns?: { headers?: Record<string, string>; payload?: Record<string, unknown>; [key: string]: unknown }
  webpush?: Record<string, unknown>
  fcm_options?: Record<string, unknown>
  [key: string]: unknown
}

export interface FcmReceived {
  projectId: string
  /** The Authorization header as sent (`Bearer <token>`). */
  authorization: string
  /** The `message` object as firebase-admin serialised it (snake_case keys, ttl as "60s"). */
  message: FcmMessage
  /** `validate_only` (dry run): real FCM validates but does not deliver. */
  validateOnly: boolean
  /** The message name answered, `projects/{projectId}/messages/<id>`. */
  name: string
  at: number
}

export interface FcmTransport {
  credential: Credential
  httpAgent: https.Agent
  /** This fake's project, so `initializeApp({ ...fcm.transport() })` needs nothing else. */
  projectId: string
}

const FCM_ERROR = 'type.googleapis.com/google.firebase.fcm.v1.FcmError'
const BAD_REQUEST = 'type.googleapis.com/google.rpc.BadRequest'

/** Google API error statuses (google.rpc.Code) and the FCM error code FCM pairs them with. */
const STATUS_FOR: Record<number, { status: string; fcm?: string; message: string }> = {
  400: { status: 'INVALID_ARGUMENT', fcm: 'INVALID_ARGUMENT', message: 'Request contains an invalid argument.' },
  401: {
    status: 'UNAUTHENTICATED',
    message:
      'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.',
  },
  403: { status: 'PERMISSION_DENIED', fcm: 'SENDER_ID_MISMATCH', message: 'SenderId mismatch' },
  404: { status: 'NOT_FOUND', fcm: 'UNREGISTERED', message: 'Requested entity was not found.' },
  429: { status: 'RESOURCE_EXHAUSTED', fcm: 'QUOTA_EXCEEDED', message: 'Quota exceeded for quota metric.' },
  500: { status: 'INTERNAL', fcm: 'INTERNAL', message: 'Internal error encountered.' },
  503: { status: 'UNAVAILABLE', fcm: 'UNAVAILABLE', message: 'The service is currently unavailable.' },
}

/** Fields of the v1 Message and SendMessageRequest; the JSON parser accepts both spellings. */
const MESSAGE_FIELDS = new Set(['name', 'data', 'notification', 'android', 'webpush', 'apns', 'fcm_options', 'fcmOptions', 'token', 'topic', 'condition'])
const REQUEST_FIELDS = new Set(['message', 'validate_only', 'validateOnly'])
/** Data keys FCM reserves ("from", "message_type", anything starting with google or gcm). */
const RESERVED_DATA_KEY = /^(from|message_type|google.*|gcm.*)$/i
/** google.protobuf.Duration in JSON: seconds with up to 9 fractional digits and an "s". */
const DURATION = /^\d+(\.\d{1,9})?s$/

class FcmRefusal extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly details: unknown[] = [],
    readonly googleStatus?: string,
  ) {
    super(message)
  }
}

function invalid(message: string, field?: string): FcmRefusal {
  const details: unknown[] = [{ '@type': FCM_ERROR, errorCode: 'INVALID_ARGUMENT' }]
  if (field) details.push({ '@type': BAD_REQUEST, fieldViolations: [{ field, description: message }] })
  return new FcmRefusal(400, message, details)
}

export class FakeFcm {
  readonly received: FcmReceived[] = []
  readonly refused: Refusal[] = []
  /** Every request, whatever its answer (firebase-admin's retries count one each). */
  requests = 0
  /** The access token the credential from transport() hands out; anything else gets 401. */
  readonly accessToken = `ya29.fake-${randomBytes(24).toString('base64url')}`

  readonly #unregistered = new Set<string>()
  readonly #fail = new FailQueue()
  readonly #waiters = new Waiters<FcmReceived>(
    () => this.received,
    () => (this.refused.length ? `refused: ${this.refused.map((r) => `${r.status} ${r.reason}`).join('; ')}` : 'none refused'),
  )
  #http!: FakeHttpsServer
  #ca!: string
  #counter = 0

  private constructor(readonly projectId: string) {}

  static async start(projectId = 'rpm-test'): Promise<FakeFcm> {
    const fake = new FakeFcm(projectId)
    fake.#ca = (await fakeTls()).ca
    fake.#http = await startHttps((req, res) => fake.#handle(req, res))
    return fake
  }

  get origin(): string {
    return this.#http.origin
  }

  get port(): number {
    return this.#http.port
  }

  close(): Promise<void> {
    return this.#http.close()
  }

  /**
   * Options for `initializeApp`: a credential that hands out this fake's access token (no
   * Google OAuth round trip), an agent that connects every request to this server over TLS,
   * verifying the fake's certificate for `localhost` with the fake CA, and the project id
   * (without one firebase-admin tries to discover it from the environment and fails).
   */
  transport(): FcmTransport {
    const accessToken = this.accessToken
    const port = this.port
    const ca = this.#ca
    const credential: Credential = {
      getAccessToken: async () => ({ access_token: accessToken, expires_in: 3600 }),
    }
    class ToFakeFcm extends https.Agent {
      // The request asked for fcm.googleapis.com:443; the socket goes to the fake instead.
      override createConnection(): Duplex {
        return tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca })
      }
    }
    return { credential, httpAgent: new ToFakeFcm(), projectId: this.projectId }
  }

  /** This registration token is no longer valid (app uninstalled): sends get 404 UNREGISTERED. */
  unregister(token: string): void {
    this.#unregistered.add(token)
  }

  /** The next `n` requests answer `status` (default 503 UNAVAILABLE) in Google's error shape. */
  failNext(n: number, status = 503): void {
    this.#fail.push(n, status)
  }

  waitFor(n: number, timeoutMs = 10_000): Promise<FcmReceived[]> {
    return this.#waiters.waitFor(n, timeoutMs, 'FCM messages')
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requests++
    const path = new URL(req.url ?? '/', 'https://fcm.googleapis.com').pathname
    const body = await readBody(req)
    try {
      const failStatus = this.#fail.take()
      if (failStatus !== undefined) {
        const shape = STATUS_FOR[failStatus]
        throw new FcmRefusal(failStatus, shape?.message ?? 'failNext', shape?.fcm ? [{ '@type': FCM_ERROR, errorCode: shape.fcm }] : [])
      }
      const record = this.#check(req, path, body)
      this.received.push(record)
      sendJson(res, 200, { name: record.name })
      this.#waiters.notify()
    } catch (err) {
      if (!(err instanceof FcmRefusal)) throw err
      this.refused.push({ status: err.status, reason: err.message, path, at: Date.now() })
      const googleStatus = err.googleStatus ?? STATUS_FOR[err.status]?.status ?? 'UNKNOWN'
      // google.rpc.Status as Google APIs send it; firebase-admin reads details[].errorCode
      // first, then status.
      sendJson(res, err.status, {
        error: { code: err.status, message: err.message, status: googleStatus, ...(err.details.length ? { details: err.details } : {}) },
      })
    }
  }

  #check(req: IncomingMessage, path: string, body: Buffer): FcmReceived {
    const route = /^\/v1\/projects\/([^/]+)\/messages:send$/.exec(path)
    if (req.method !== 'POST' || !route) {
      throw new FcmRefusal(404, `The requested URL ${path} was not found on this server.`, [], 'NOT_FOUND')
    }
    const authorization = header(req, 'authorization') ?? ''
    if (authorization === '') {
      throw new FcmRefusal(
        401,
        'Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.',
      )
    }
    if (authorization !== `Bearer ${this.accessToken}`) throw new FcmRefusal(401, STATUS_FOR[401]!.message)
    const projectId = decodeURIComponent(route[1]!)
    if (projectId !== this.projectId) {
      throw new FcmRefusal(
        403,
        `Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/${projectId}' (or it may not exist).`,
        [],
        'PERMISSION_DENIED',
      )
    }

    let request: unknown
    try {
      request = JSON.parse(body.toString('utf8'))
    } catch {
      throw invalid('Invalid JSON payload received. Unexpected token.')
    }
    if (!isObject(request)) throw invalid('Invalid JSON payload received. Expected an object.')
    for (const key of Object.keys(request)) {
      if (!REQUEST_FIELDS.has(key)) throw invalid(`Invalid JSON payload received. Unknown name "${key}": Cannot find field.`, key)
    }
    if (!isObject(request.message)) throw invalid('Request contains an invalid argument.', 'message')
    const message = this.#checkMessage(request.message)

    const token = typeof message.token === 'string' ? message.token : undefined
    if (token !== undefined && this.#unregistered.has(token)) {
      throw new FcmRefusal(404, STATUS_FOR[404]!.message, [{ '@type': FCM_ERROR, errorCode: 'UNREGISTERED' }])
    }
    const validateOnly = request.validate_only === true || request.validateOnly === true
    // A dry run answers a fixed fake id, as FCM does.
    const name = `projects/${projectId}/messages/${validateOnly ? 'fake_message_id' : `0:${Date.now()}%${++this.#counter}`}`
    return { projectId, authorization, message, validateOnly, name, at: Date.now() }
  }

  /** The parts of message validation that FCM enforces server-side. */
  #checkMessage(message: Record<string, unknown>): FcmMessage {
    for (const key of Object.keys(message)) {
      if (!MESSAGE_FIELDS.has(key)) {
        throw invalid(`Invalid JSON payload received. Unknown name "${key}" at 'message': Cannot find field.`, `message.${key}`)
      }
    }
    // `target` is a oneof in the Message proto.
    const targets = (['token', 'topic', 'condition'] as const).filter((k) => message[k] !== undefined)
    if (targets.length === 0) throw invalid('Recipient of the message is not set.', 'message')
    if (targets.length > 1) {
      throw invalid(`Invalid JSON payload received. Oneof field 'target' is already set. Cannot set '${targets[1]}'`, `message.${targets[1]}`)
    }
    const target = targets[0]!
    if (typeof message[target] !== 'string' || message[target] === '') {
      throw invalid(`Invalid value at 'message.${target}' (TYPE_STRING)`, `message.${target}`)
    }
    checkStringMap(message.data, 'message.data', true)

    const notification = message.notification
    if (notification !== undefined) {
      if (!isObject(notification)) throw invalid("Invalid value at 'message.notification'", 'message.notification')
      for (const [k, v] of Object.entries(notification)) {
        if (typeof v !== 'string') throw invalid(`Invalid value at 'message.notification.${k}' (TYPE_STRING)`, `message.notification.${k}`)
      }
    }

    const android = message.android
    if (android !== undefined) {
      if (!isObject(android)) throw invalid("Invalid value at 'message.android'", 'message.android')
      // AndroidMessagePriority enum; FCM's own examples send it lower case.
      if (android.priority !== undefined && !(typeof android.priority === 'string' && /^(normal|high)$/i.test(android.priority))) {
        throw invalid(`Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), ${JSON.stringify(android.priority)}`, 'message.android.priority')
      }
      if (android.ttl !== undefined && !(typeof android.ttl === 'string' && DURATION.test(android.ttl))) {
        throw invalid(`Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), ${JSON.stringify(android.ttl)}`, 'message.android.ttl')
      }
      checkStringMap(android.data, 'message.android.data', false)
    }
    return message as FcmMessage
  }
}

/** A proto map<string, string>: every value must be a JSON string. */
function checkStringMap(value: unknown, field: string, reservedKeys: boolean): void {
  if (value === undefined) return
  if (!isObject(value)) throw invalid(`Invalid value at '${field}'`, field)
  Object.entries(value).forEach(([k, v], i) => {
    if (typeof v !== 'string') {
      throw invalid(`Invalid value at '${field}[${i}].value' (TYPE_STRING), ${JSON.stringify(v)}`, `${field}[${i}].value`)
    }
    if (reservedKeys && RESERVED_DATA_KEY.test(k)) throw invalid(`Invalid data payload key: ${k}`, `${field}[${i}].key`)
  })
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
