import type { NotificationTable, NotifyChannel, PushTargetTable } from '../store/schema.ts'

export type { NotifyChannel } from '../store/schema.ts'
export const CHANNELS: readonly NotifyChannel[] = ['webpush', 'fcm', 'sms']

/** What a notification says: fixed words chosen by kind, and ids only in `data`. */
export interface NotificationContent {
  title: string
  body: string
  /** Ids and the kind; the app fetches what they point at after sign-in. All values strings (FCM requires it). */
  data: Record<string, string>
}

/** One send, as a channel sees it. */
export interface Delivery {
  id: string
  kind: NotificationTable['kind']
  urgent: boolean
  /** Replaces an earlier notification with the same key on the device (Web Push topic, FCM/APNs collapse, notification tag). */
  collapseKey: string
  /** How long the push service may hold it for an offline device. */
  ttlSeconds: number
  content: NotificationContent
}

export type PushTarget = Pick<PushTargetTable, 'id' | 'channel' | 'address' | 'p256dh' | 'auth' | 'platform'>

/**
 * What a send came to. `temporary`: try again later; `unknown`: the request left but no answer
 * came (it may have gone: treated like a crash's in-doubt send); `gone`: the subscription or
 * token no longer exists (remove it); `opted_out`: the number replied STOP; `permanent`: it will
 * never work as is.
 * `code` is a short, data-free reason for the record and the metrics.
 */
export type SendOutcome =
  | { ok: true; providerRef?: string }
  | { ok: false; kind: 'temporary' | 'unknown' | 'permanent' | 'gone' | 'opted_out'; code: string; retryAfterMs?: number }

/** A way of reaching people: Web Push, FCM, SMS. Each wraps its vendor's SDK. */
export interface Channel<To> {
  readonly name: NotifyChannel
  send(delivery: Delivery, to: To): Promise<SendOutcome>
  close(): Promise<void>
}
