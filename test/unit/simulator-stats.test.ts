import { describe, expect, it } from 'vitest'
import { Random } from '../../device-simulator/random.ts'
import { LatencyHistogram, percentileOfSorted, RateMeter } from '../../device-simulator/stats.ts'
import { exitCodeFor, formatSummary, type Summary } from '../../device-simulator/summary.ts'

describe('percentiles', () => {
  it('nearest rank on a sorted array', () => {
    const v = Array.from({ length: 100 }, (_, i) => i + 1)
    expect(percentileOfSorted(v, 50)).toBe(50)
    expect(percentileOfSorted(v, 99)).toBe(99)
    expect(percentileOfSorted(v, 100)).toBe(100)
    expect(percentileOfSorted([7], 99)).toBe(7)
    expect(percentileOfSorted([], 50)).toBeUndefined()
  })

  it('the histogram stays within 1 % of the exact percentile', () => {
    const rng = new Random(3)
    const h = new LatencyHistogram()
    // Long-tailed like real PUBACK times: mostly a few ms, a few hundred-ms stragglers.
    const values = Array.from({ length: 20_000 }, () => (rng.chance(0.02) ? rng.uniform(50, 800) : Math.exp(rng.normal(1.2, 0.4))))
    for (const v of values) h.record(v)
    const sorted = [...values].sort((a, b) => a - b)
    for (const p of [50, 90, 99, 99.9]) {
      const exact = percentileOfSorted(sorted, p)!
      expect(Math.abs(h.percentile(p)! - exact) / exact).toBeLessThan(0.01)
    }
    expect(h.summary().max).toBeCloseTo(sorted.at(-1)!, 2)
    expect(h.count).toBe(20_000)
  })

  it('reports nothing for an empty histogram and ignores nonsense values', () => {
    const h = new LatencyHistogram()
    h.record(Number.NaN)
    h.record(-1)
    expect(h.summary()).toEqual({ count: 0, p50: null, p90: null, p99: null, max: null, mean: null })
    h.record(0)
    expect(h.percentile(50)).toBe(0)
  })
})

describe('RateMeter', () => {
  it('measures over its window', () => {
    const m = new RateMeter(1000)
    expect(m.perSecond).toBe(0)
    for (let t = 0; t <= 5000; t += 250) m.sample(t, t / 10) // 100 per second
    expect(m.perSecond).toBeCloseTo(100)
    m.sample(5250, 500) // stalled
    m.sample(5500, 500)
    expect(m.perSecond).toBeLessThan(100)
  })
})

describe('summary', () => {
  const base: Omit<Summary, 'exitCode'> = {
    scenario: 'invalid',
    url: 'mqtts://localhost:8883',
    seed: 1,
    devices: 2,
    connected: 2,
    connectFailures: [],
    connectSeconds: 0.2,
    elapsedSeconds: 2,
    targetRate: 10,
    batch: 1,
    sent: 20,
    publishes: 20,
    acknowledged: 20,
    quarantined: 20,
    unacknowledged: 0,
    publishErrors: 0,
    readingsPerSecond: 10,
    pubackMs: { count: 20, p50: 3.2, p90: 5.1, p99: 9.9, max: 12.5, mean: 3.9 },
    quarantinedByCode: { RPM_ERR_READING_UNIT: 12, RPM_ERR_PAYLOAD_JSON: 8 },
    expectedQuarantine: 20,
    unexpectedQuarantine: 0,
    unexpectedByCode: {},
    missingErrors: 0,
    missingByCode: {},
    staleErrorsIgnored: 0,
    offline: { drops: 0, reconnects: 0, queuedWhileOffline: 0, connectionsLost: 0 },
    maxScheduleLagMs: 2,
    stoppedBy: 'count',
  }

  it('exit codes: 0 clean, 2 nothing acknowledged or connected, 3 problems, 130 abandoned', () => {
    expect(exitCodeFor(base)).toBe(0)
    expect(exitCodeFor({ ...base, acknowledged: 0 })).toBe(2)
    expect(exitCodeFor({ ...base, connected: 0 })).toBe(2)
    expect(exitCodeFor({ ...base, unacknowledged: 1 })).toBe(3)
    expect(exitCodeFor({ ...base, missingErrors: 1 })).toBe(3)
    expect(exitCodeFor({ ...base, unexpectedQuarantine: 1 })).toBe(3)
    expect(exitCodeFor({ ...base, connectFailures: [{ reason: 'x', devices: 1 }] })).toBe(3)
    expect(exitCodeFor(base, true)).toBe(130)
  })

  it('prints the figures a tester looks for, and the problems', () => {
    const text = formatSummary({ ...base, exitCode: 0 })
    expect(text).toMatch(/acknowledged\s+20/)
    expect(text).toMatch(/quarantined\s+20 \(expected 20\)/)
    expect(text).toMatch(/p50 3\.20 ms\s+p90 5\.10 ms\s+p99 9\.90 ms\s+max 12\.5 ms/)
    expect(text).toContain('RPM_ERR_READING_UNIT 12, RPM_ERR_PAYLOAD_JSON 8')
    expect(text).not.toContain('!')
    const bad = formatSummary({ ...base, unacknowledged: 3, missingErrors: 1, missingByCode: { RPM_ERR_READING_TIME: 1 }, exitCode: 3 })
    expect(bad).toContain('! 3 readings were not acknowledged')
    expect(bad).toContain('! 1 refused readings got no error message: RPM_ERR_READING_TIME 1')
  })
})
