import type { Clock } from '../clock.ts'

/**
 * Per-address protection: a token bucket for new connections and a failure counter that slows
 * down repeated bad logins. Entries expire, so the maps stay bounded by active addresses.
 */
export class AddressGuard {
  readonly #buckets = new Map<string, { tokens: number; at: number }>()
  readonly #failures = new Map<string, { count: number; until: number }>()
  readonly #loggedAt = new Map<string, number>()
  readonly #sweep: NodeJS.Timeout

  constructor(
    private readonly opts: { connectsPerMinute: number; failuresBeforeDelay: number; failureDelayMs: number },
    private readonly clock: Clock,
  ) {
    this.#sweep = setInterval(() => this.#expire(), 60_000)
    this.#sweep.unref()
  }

  /** Takes one connection token for the address; false when it has none left. */
  allowConnect(address: string): boolean {
    const now = this.clock.now()
    const rate = this.opts.connectsPerMinute / 60_000
    const b = this.#buckets.get(address) ?? { tokens: this.opts.connectsPerMinute, at: now }
    b.tokens = Math.min(this.opts.connectsPerMinute, b.tokens + (now - b.at) * rate)
    b.at = now
    this.#buckets.set(address, b)
    if (b.tokens < 1) return false
    b.tokens -= 1
    return true
  }

  /** How long to hold the next login attempt from this address. Grows with each failure, capped at 10x. */
  loginDelayMs(address: string): number {
    const f = this.#failures.get(address)
    if (!f || f.until < this.clock.now()) return 0
    const excess = f.count - this.opts.failuresBeforeDelay
    return excess < 0 ? 0 : Math.min(10, excess + 1) * this.opts.failureDelayMs
  }

  loginFailed(address: string): void {
    const now = this.clock.now()
    const f = this.#failures.get(address)
    const count = f && f.until >= now ? f.count + 1 : 1
    this.#failures.set(address, { count, until: now + 15 * 60_000 })
  }

  loginSucceeded(address: string): void {
    this.#failures.delete(address)
  }

  /** True at most once a minute per key: refusals under a flood make one log line, not thousands. */
  shouldLog(key: string): boolean {
    const now = this.clock.now()
    const last = this.#loggedAt.get(key)
    if (last !== undefined && now - last < 60_000) return false
    this.#loggedAt.set(key, now)
    return true
  }

  #expire(): void {
    const now = this.clock.now()
    for (const [k, b] of this.#buckets) if (now - b.at > 60_000) this.#buckets.delete(k)
    for (const [k, f] of this.#failures) if (f.until < now) this.#failures.delete(k)
    for (const [k, at] of this.#loggedAt) if (now - at > 60_000) this.#loggedAt.delete(k)
  }

  close(): void {
    clearInterval(this.#sweep)
  }
}
