/**
 * PUBACK latency: a log-bucketed histogram (1 % relative precision, constant memory however
 * long the run) and nearest-rank percentiles. Pure.
 */

/** Nearest-rank percentile of an ascending array: the smallest value with at least p % of values at or below it. */
export function percentileOfSorted(sorted: readonly number[], p: number): number | undefined {
  if (sorted.length === 0) return undefined
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)))
  return sorted[rank - 1]
}

export interface LatencySummary {
  count: number
  p50: number | null
  p90: number | null
  p99: number | null
  max: number | null
  mean: number | null
}

export class LatencyHistogram {
  /** Bucket i holds values in (LOWEST * G^(i-1), LOWEST * G^i]; bucket 0 everything up to LOWEST. */
  static readonly LOWEST_MS = 0.001
  static readonly GROWTH = 1.01
  readonly #buckets: number[] = []
  #count = 0
  #sum = 0
  #min = Number.POSITIVE_INFINITY
  #max = Number.NEGATIVE_INFINITY

  record(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) return
    const i = ms <= LatencyHistogram.LOWEST_MS ? 0 : Math.ceil(Math.log(ms / LatencyHistogram.LOWEST_MS) / Math.log(LatencyHistogram.GROWTH))
    while (this.#buckets.length <= i) this.#buckets.push(0)
    this.#buckets[i]!++
    this.#count++
    this.#sum += ms
    if (ms < this.#min) this.#min = ms
    if (ms > this.#max) this.#max = ms
  }

  get count(): number {
    return this.#count
  }

  /** Nearest-rank percentile, within 1 % of the exact value; undefined when empty. */
  percentile(p: number): number | undefined {
    if (this.#count === 0) return undefined
    const rank = Math.min(this.#count, Math.max(1, Math.ceil((p / 100) * this.#count)))
    let seen = 0
    for (let i = 0; i < this.#buckets.length; i++) {
      seen += this.#buckets[i]!
      if (seen >= rank) {
        const upper = LatencyHistogram.LOWEST_MS * LatencyHistogram.GROWTH ** i
        return Math.min(this.#max, Math.max(this.#min, upper))
      }
    }
    return this.#max
  }

  summary(): LatencySummary {
    const r = (n: number | undefined) => (n === undefined ? null : Math.round(n * 100) / 100)
    return {
      count: this.#count,
      p50: r(this.percentile(50)),
      p90: r(this.percentile(90)),
      p99: r(this.percentile(99)),
      max: r(this.#count ? this.#max : undefined),
      mean: r(this.#count ? this.#sum / this.#count : undefined),
    }
  }
}

/** Events per second over a sliding window, for the progress line. Sample it at a steady pace. */
export class RateMeter {
  readonly #samples: Array<{ at: number; total: number }> = []

  constructor(private readonly windowMs = 3000) {}

  /** Records the running total at `at` (ms). */
  sample(at: number, total: number): void {
    this.#samples.push({ at, total })
    // Keep one sample at or beyond the window's start, so the rate spans the whole window.
    while (this.#samples.length > 2 && at - this.#samples[1]!.at >= this.windowMs) this.#samples.shift()
  }

  /** The rate between the oldest and newest samples kept. */
  get perSecond(): number {
    const first = this.#samples[0]
    const last = this.#samples[this.#samples.length - 1]
    if (!first || !last || last.at <= first.at) return 0
    return ((last.total - first.total) * 1000) / (last.at - first.at)
  }
}
