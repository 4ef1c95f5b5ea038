import { randomBytes } from 'node:crypto'
import type { Agent } from 'node:http'
import { type App, type Credential, cert, deleteApp, initializeApp } from 'firebase-admin/app'
import { type Message, type Messaging, getMessaging } from 'firebase-admin/messaging'
import type { Channel, Delivery, PushTarget, SendOutcome } from './types.ts'

/** How the FCM channel reaches Google: a service account, or a credential and agent given in code. */
export interface FcmTransport {
  credential: Credential
  projectId?: string
  /** Carries both the OAuth token requests and the FCM API calls (an egress path, a test double). */
  httpAgent?: Agent
}

export function fcmTransportFromFile(serviceAccountFile: string): FcmTransport {
  return { credential: cert(serviceAccountFile) }
}

// Codes firebase-admin gives to FCM v1 answers and transport failures.
const GONE = new Set(['messaging/registration-token-not-registered', 'messaging/invalid-registration-token'])
const TEMPORARY = new Set([
  'messaging/server-unavailable', 'messaging/internal-error', 'messaging/message-rate-exceeded',
  'messaging/device-message-rate-exceeded', 'messaging/quota-exceeded', 'messaging/unknown-error',
  'app/network-error', 'app/network-timeout', 'app/invalid-credential',
])

/**
 * Firebase Cloud Messaging (HTTP v1) through firebase-admin, for the Android and iOS apps. Urgent
 * notifications go at high priority (Android `priority: high`, APNs priority 10 and
 * time-sensitive) so a phone in Doze or Focus still shows them.
 */
export class FcmChannel implements Channel<PushTarget> {
  readonly name = 'fcm' as const
  readonly #app: App
  readonly #messaging: Messaging

  readonly #timeoutMs: number

  constructor(transport: FcmTransport, timeoutMs: number) {
    this.#timeoutMs = timeoutMs
    // A named app per gateway: no shared default app, so two gateways can run in one process.
    this.#app = initializeApp(
      {
        credential: transport.credential,
        ...(transport.projectId ? { projectId: transport.projectId } : {}),
        ...(transport.httpAgent ? { httpAgent: transport.httpAgent } : {}),
      },
      `rpm-gateway-${randomBytes(6).toString('hex')}`,
    )
    this.#messaging = getMessaging(this.#app)
    // One request per token through the configured agent (the HTTP/2 path ignores httpAgent).
    this.#messaging.enableLegacyHttpTransport()
  }

  message(d: Delivery, token: string): Message {
    const ttlMs = d.ttlSeconds * 1000
    return {
      token,
      notification: { title: d.content.title, body: d.content.body },
      data: d.content.data,
      android: {
        priority: d.urgent ? 'high' : 'normal',
        ttl: ttlMs,
        collapseKey: d.collapseKey,
        notification: { tag: d.collapseKey },
      },
      apns: {
        headers: {
          'apns-priority': d.urgent ? '10' : '5',
          'apns-collapse-id': d.collapseKey.slice(0, 64),
          'apns-expiration': String(Math.floor((Date.now() + ttlMs) / 1000)),
        },
        payload: { aps: { sound: 'default', ...(d.urgent ? { 'interruption-level': 'time-sensitive' } : {}) } },
      },
    }
  }

  async send(d: Delivery, to: PushTarget): Promise<SendOutcome> {
    let timer: NodeJS.Timeout | undefined
    try {
      // firebase-admin has its own 15 s timeout and retries (up to four, backing off to a minute):
      // the lane waits no longer than notify.timeoutMs. A late success shows once on the device
      // when it is sent again (same collapse key and tag).
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(Object.assign(new Error('timed out'), { code: 'app/network-timeout' })), this.#timeoutMs)
      })
      const name = await Promise.race([this.#messaging.send(this.message(d, to.address)), timeout])
      return { ok: true, providerRef: name }
    } catch (err) {
      const code = String((err as { code?: string }).code ?? 'unknown')
      if (GONE.has(code)) return { ok: false, kind: 'gone', code: code.replace('messaging/', '') }
      if (TEMPORARY.has(code)) return { ok: false, kind: 'temporary', code: code.replace(/^(messaging|app)\//, '') }
      return { ok: false, kind: 'permanent', code: code.replace(/^(messaging|app)\//, '') }
    } finally {
      clearTimeout(timer)
    }
  }

  async close(): Promise<void> {
    await deleteApp(this.#app)
  }
}
