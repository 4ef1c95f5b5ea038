/**
 * A latency histogram with log buckets 1% wide from 1 µs to about 100 s: small enough to send
 * over IPC from each load process and merge exactly, precise enough for p50/p99 figures
 * (a reported percentile is the upper edge of its bucket, at most 1% above the true value).
 */
const MIN_MS = 0.001
const GROWTH = 1.01
const LN_GROWTH = Math.log(GROWTH)
const BUCKETS = 1900

export interface HistogramSnapshot {
  /** Sparse [bucket index, count] pairs. */
  buckets: Array<[number, number]>
  count: number
  sumMs: number
  maxMs: number
}

export class LatencyHistogram {
  #counts = new Uint32Array(BUCKETS)
  #count = 0
  #sumMs = 0
  #maxMs = 0

  record(ms: number): void {
    const i = ms <= MIN_MS ? 0 : Math.min(BUCKETS - 1, Math.ceil(Math.log(ms / MIN_MS) / LN_GROWTH))
    this.#counts[i]!++
    this.#count++
    this.#sumMs += ms
    if (ms > this.#maxMs) this.#maxMs = ms
  }

  get count(): number {
    return this.#count
  }

  snapshot(): HistogramSnapshot {
    const buckets: Array<[number, number]> = []
    this.#counts.forEach((n, i) => {
      if (n > 0) buckets.push([i, n])
    })
    return { buckets, count: this.#count, sumMs: this.#sumMs, maxMs: this.#maxMs }
  }

  merge(s: HistogramSnapshot): void {
    for (const [i, n] of s.buckets) this.#counts[i]! += n
    this.#count += s.count
    this.#sumMs += s.sumMs
    if (s.maxMs > this.#maxMs) this.#maxMs = s.maxMs
  }

  reset(): void {
    this.#counts.fill(0)
    this.#count = 0
    this.#sumMs = 0
    this.#maxMs = 0
  }

  /** The value at quantile q (0..1) in ms; NaN when empty. */
  quantile(q: number): number {
    if (this.#count === 0) return Number.NaN
    const rank = Math.max(1, Math.ceil(q * this.#count))
    let seen = 0
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.#counts[i]!
      if (seen >= rank) return Math.min(MIN_MS * GROWTH ** i, this.#maxMs)
    }
    return this.#maxMs
  }

  summary(): LatencySummary {
    return {
      count: this.#count,
      meanMs: this.#count ? this.#sumMs / this.#count : Number.NaN,
      p50Ms: this.quantile(0.5),
      p90Ms: this.quantile(0.9),
      p99Ms: this.quantile(0.99),
      p999Ms: this.quantile(0.999),
      maxMs: this.#count ? this.#maxMs : Number.NaN,
    }
  }

  static from(snapshots: HistogramSnapshot[]): LatencyHistogram {
    const h = new LatencyHistogram()
    for (const s of snapshots) h.merge(s)
    return h
  }
}

export interface LatencySummary {
  count: number
  meanMs: number
  p50Ms: number
  p90Ms: number
  p99Ms: number
  p999Ms: number
  maxMs: number
}
