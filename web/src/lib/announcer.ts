// ARIA live announcements: one polite region (new messages) and one assertive region (urgent
// alerts), always in the page so screen readers register them before anything is said.
import { Store } from './store.ts'

export type Politeness = 'polite' | 'assertive'

export class Announcer {
  readonly polite = new Store('')
  readonly assertive = new Store('')
  #timers: Record<Politeness, ReturnType<typeof setTimeout> | undefined> = { polite: undefined, assertive: undefined }

  say(text: string, politeness: Politeness = 'polite'): void {
    const region = this[politeness]
    // Clear, then set: the same sentence twice in a row is still announced.
    region.set('')
    clearTimeout(this.#timers[politeness])
    this.#timers[politeness] = setTimeout(() => {
      region.set(text)
      // Said; clear it after a while so stale words do not linger in the page.
      this.#timers[politeness] = setTimeout(() => region.set(''), 10_000)
    }, 60)
  }
}
