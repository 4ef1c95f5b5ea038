// Web Push in this browser (docs/notifications.md "Web Push"): register /sw.js, subscribe with
// the gateway's VAPID key, hand the subscription to the gateway; at sign-out, delete it again.
import type { Api } from '../api/http.ts'
import { ApiError, describeError } from '../api/http.ts'
import type { PushChannels } from '../api/types.ts'
import { Store } from './store.ts'

export type PushState = 'checking' | 'unsupported' | 'blocked' | 'off' | 'on' | 'working' | 'failed'

export interface PushStatus {
  state: PushState
  message: string
}

const MESSAGES: Record<Exclude<PushState, 'failed'>, string> = {
  checking: 'Checking whether this browser can show notifications…',
  unsupported: 'This browser cannot show notifications from the console. You will still see everything here when you open it.',
  blocked: 'Notifications are blocked for this site in the browser settings. To turn them on, allow notifications for this site in the browser, then try again.',
  off: 'Notifications are off in this browser.',
  on: 'Notifications are on in this browser.',
  working: 'Turning on notifications…',
}

export function pushSupported(): boolean {
  return 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window && window.isSecureContext
}

export class PushControl {
  readonly status = new Store<PushStatus>({ state: 'checking', message: MESSAGES.checking })
  #subscriptionId: string | null = null

  constructor(private readonly api: Api) {}

  #set(state: PushState, message = state === 'failed' ? '' : MESSAGES[state]): void {
    this.status.set({ state, message })
  }

  /** On sign-in: what is the state here? A subscription this browser already holds is (re)registered to the signed-in user. */
  async check(): Promise<void> {
    if (!pushSupported()) return this.#set('unsupported')
    if (Notification.permission === 'denied') return this.#set('blocked')
    try {
      const reg = await navigator.serviceWorker.getRegistration('/')
      const sub = await reg?.pushManager.getSubscription()
      if (sub && Notification.permission === 'granted') {
        await this.#register(sub)
        return this.#set('on')
      }
    } catch {
      // Fall through: offer to turn them on.
    }
    this.#set('off')
  }

  async enable(): Promise<void> {
    if (!pushSupported()) return this.#set('unsupported')
    this.#set('working')
    try {
      const permission = await Notification.requestPermission()
      if (permission !== 'granted') return this.#set(permission === 'denied' ? 'blocked' : 'off', permission === 'denied' ? MESSAGES.blocked : 'Notifications were not allowed. You can try again at any time.')
      const { webpush } = await this.api.get<PushChannels>('/notifications/channels')
      if (!webpush?.publicKey || webpush.state === 'off') return this.#set('failed', 'The care team’s system cannot send notifications right now. Please try again later.')
      const reg = await navigator.serviceWorker.register('/sw.js', { scope: '/' })
      await navigator.serviceWorker.ready
      const key = base64UrlToBytes(webpush.publicKey)
      let sub = await reg.pushManager.getSubscription()
      if (sub && !sameKey(sub.options.applicationServerKey, key)) {
        await sub.unsubscribe()
        sub = null
      }
      sub ??= await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key })
      await this.#register(sub)
      this.#set('on')
    } catch (err) {
      this.#set('failed', `This browser could not turn on notifications (${err instanceof ApiError ? describeError(err) : err instanceof Error ? err.message : String(err)}). You will still see everything here when you open it.`)
    }
  }

  async disable(): Promise<void> {
    this.#set('working', 'Turning off notifications…')
    await this.forget()
    this.#set('off')
  }

  /** Sign-out (and "turn off"): the gateway forgets this browser, and the browser drops the subscription. */
  async forget(): Promise<void> {
    if (!pushSupported()) return
    const reg = await navigator.serviceWorker.getRegistration('/').catch(() => undefined)
    const sub = await reg?.pushManager.getSubscription().catch(() => null)
    if (!sub) return
    if (this.#subscriptionId) {
      await this.api.delete(`/notifications/subscriptions/${encodeURIComponent(this.#subscriptionId)}`).catch(() => {})
      this.#subscriptionId = null
    }
    await sub.unsubscribe().catch(() => false)
  }

  async #register(sub: PushSubscription): Promise<void> {
    const json = sub.toJSON()
    const answer = await this.api.post<{ id: string }>('/notifications/subscriptions', {
      type: 'webpush',
      subscription: { endpoint: json.endpoint, expirationTime: json.expirationTime ?? null, keys: json.keys },
      label: 'Web console',
    })
    this.#subscriptionId = answer.id
  }
}

function base64UrlToBytes(s: string): Uint8Array<ArrayBuffer> {
  const b64 = (s + '='.repeat((4 - (s.length % 4)) % 4)).replace(/-/g, '+').replace(/_/g, '/')
  const raw = atob(b64)
  const out = new Uint8Array(new ArrayBuffer(raw.length))
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i)
  return out
}

function sameKey(a: ArrayBuffer | null, b: Uint8Array): boolean {
  if (!a) return false
  const x = new Uint8Array(a)
  return x.length === b.length && x.every((v, i) => v === b[i])
}
