// Automatic logoff (HIPAA 164.312(a)(2)(iii)): after IDLE_TIMEOUT_MINUTES without anyone using
// the console, sign out; IDLE_WARNING_SECONDS before, offer "Stay signed in". Activity in any
// tab of this browser counts (shared through the session's BroadcastChannel). The gateway
// enforces its own idle timeout too (auth.idleTimeoutSeconds); Session.activity() keeps the two
// in step while someone is here.
import { Store } from './store.ts'
import type { Session } from '../state/session.ts'

export const IDLE_TIMEOUT_MINUTES = 15
export const IDLE_WARNING_SECONDS = 60

const ACTIVITY_EVENTS = ['pointerdown', 'keydown', 'wheel', 'touchstart', 'mousemove', 'scroll'] as const
/** Activity is passed on (to other tabs and the gateway keep-alive) at most this often. */
const SHARE_EVERY_MS = 15_000

export class IdleMonitor {
  /** Seconds left while the warning shows; null otherwise. */
  readonly warning = new Store<number | null>(null)
  #last = Date.now()
  #shared = 0
  #timer: ReturnType<typeof setInterval> | undefined
  readonly #off: Array<() => void> = []

  constructor(
    private readonly session: Session,
    private readonly timeoutMs = IDLE_TIMEOUT_MINUTES * 60_000,
    private readonly warningMs = IDLE_WARNING_SECONDS * 1000,
  ) {}

  start(): void {
    const onActivity = () => {
      // While the warning shows, only "Stay signed in" keeps the session: a stray mouse move
      // over an unattended screen does not.
      if (this.warning.value !== null) return
      this.#touch(Date.now())
    }
    for (const name of ACTIVITY_EVENTS) {
      addEventListener(name, onActivity, { passive: true, capture: true })
      this.#off.push(() => removeEventListener(name, onActivity, { capture: true }))
    }
    this.#off.push(
      this.session.events.on('activity', (at) => {
        if (at > this.#last) this.#last = at
        if (this.warning.value !== null) this.#check()
      }),
    )
    this.#timer = setInterval(() => this.#check(), 1000)
  }

  stop(): void {
    clearInterval(this.#timer)
    for (const off of this.#off.splice(0)) off()
  }

  staySignedIn(): void {
    this.warning.set(null)
    this.#touch(Date.now(), true)
  }

  /** Whether someone used the console in the last `ms` (read receipts are only sent then). */
  activeWithin(ms: number): boolean {
    return Date.now() - this.#last <= ms
  }

  #touch(at: number, force = false): void {
    this.#last = at
    if (force || at - this.#shared >= SHARE_EVERY_MS) {
      this.#shared = at
      this.session.activity(at)
    }
  }

  #check(): void {
    const left = this.timeoutMs - (Date.now() - this.#last)
    if (left <= 0) {
      this.stop()
      this.warning.set(null)
      void this.session.signOut(`You were signed out after ${Math.round(this.timeoutMs / 60_000)} minutes without activity. Please sign in again.`)
    } else if (left <= this.warningMs) {
      this.warning.set(Math.ceil(left / 1000))
    } else if (this.warning.value !== null) {
      this.warning.set(null)
    }
  }
}
