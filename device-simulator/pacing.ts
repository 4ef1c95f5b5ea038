/**
 * Pacing for the whole fleet: one schedule, not a timer per device. Send k is due at
 * start + k / rate, computed from the start each time, so timer jitter never accumulates into
 * drift. A late tick sends everything that has come due (the fleet catches up) and the lag is
 * recorded, so a simulator that cannot keep up says so instead of quietly sending less. Pure:
 * the caller passes the clock.
 */
export class Pacer {
  readonly #intervalMs: number
  readonly #startMs: number
  #issued = 0
  #maxLagMs = 0

  /** `perSecond`: sends per second (> 0); `startMs`: when send 0 is due. */
  constructor(perSecond: number, startMs: number) {
    if (!(perSecond > 0) || !Number.isFinite(perSecond)) throw new RangeError('rate must be a positive number')
    this.#intervalMs = 1000 / perSecond
    this.#startMs = startMs
  }

  /** When the next send is due. */
  nextAt(): number {
    return this.#startMs + this.#issued * this.#intervalMs
  }

  /** How many sends are due at `nowMs` (at most `limit`); they count as issued. */
  take(nowMs: number, limit = Number.POSITIVE_INFINITY): number {
    const dueTotal = Math.floor((nowMs - this.#startMs) / this.#intervalMs) + 1
    const n = Math.max(0, Math.min(dueTotal - this.#issued, limit))
    if (n > 0) {
      this.#maxLagMs = Math.max(this.#maxLagMs, nowMs - this.nextAt())
      this.#issued += n
    }
    return n
  }

  get issued(): number {
    return this.#issued
  }

  /** The longest a send waited past its due time (timer lateness or a busy event loop). */
  get maxLagMs(): number {
    return this.#maxLagMs
  }
}

/**
 * Which device sends next: round-robin over the fleet, so with N devices each sends every N-th
 * slot, evenly staggered, at rate / N.
 */
export class RoundRobin<T> {
  #next = 0

  constructor(private readonly items: readonly T[]) {
    if (items.length === 0) throw new RangeError('no items to rotate through')
  }

  next(): T {
    const item = this.items[this.#next]!
    this.#next = (this.#next + 1) % this.items.length
    return item
  }
}

/** Readings a run will send in total, when it knows: --count, or rate x duration. */
export function plannedTotal(opts: { count?: number; durationSeconds?: number; ratePerSecond: number }): number | undefined {
  if (opts.count !== undefined) return opts.count
  if (opts.durationSeconds !== undefined) return Math.floor(opts.ratePerSecond * opts.durationSeconds)
  return undefined
}
