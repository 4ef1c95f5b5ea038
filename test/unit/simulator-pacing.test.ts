import { describe, expect, it } from 'vitest'
import { Pacer, plannedTotal, RoundRobin } from '../../device-simulator/pacing.ts'
import { Random } from '../../device-simulator/random.ts'

describe('Pacer', () => {
  it('issues send k at start + k / rate, the first at once', () => {
    const p = new Pacer(10, 1000)
    expect(p.take(1000)).toBe(1)
    expect(p.nextAt()).toBe(1100)
    expect(p.take(1099)).toBe(0)
    expect(p.take(1100)).toBe(1)
    expect(p.take(1450)).toBe(3) // 1200, 1300, 1400
    expect(p.nextAt()).toBe(1500)
  })

  it('does not drift: late, jittery ticks over a long run still add up to rate x time', () => {
    const rate = 37
    const p = new Pacer(rate, 0)
    const jitter = new Random(7)
    let now = 0
    let sent = 0
    while (now < 600_000) {
      sent += p.take(now)
      // A timer that fires up to 15 ms late, every time.
      now = Math.max(now, p.nextAt()) + jitter.uniform(0, 15)
    }
    sent += p.take(now)
    const expected = Math.floor((now * rate) / 1000) + 1
    expect(sent).toBe(expected)
  })

  it('catches up after a stall and records how late it was', () => {
    const p = new Pacer(100, 0)
    expect(p.take(0)).toBe(1)
    expect(p.take(2000)).toBe(200) // 10 ms .. 2000 ms
    expect(p.maxLagMs).toBe(1990)
    expect(p.issued).toBe(201)
  })

  it('honours a limit per call and keeps the rest due', () => {
    const p = new Pacer(1000, 0)
    expect(p.take(99, 40)).toBe(40)
    expect(p.take(99)).toBe(60)
    expect(p.take(99)).toBe(0)
  })

  it('handles fractional rates (one send every 4 s)', () => {
    const p = new Pacer(0.25, 0)
    expect(p.take(0)).toBe(1)
    expect(p.take(3999)).toBe(0)
    expect(p.take(4000)).toBe(1)
  })

  it('refuses a rate that is not positive', () => {
    expect(() => new Pacer(0, 0)).toThrow(RangeError)
    expect(() => new Pacer(Number.NaN, 0)).toThrow(RangeError)
  })
})

describe('RoundRobin', () => {
  it('gives each device every N-th slot', () => {
    const rr = new RoundRobin(['a', 'b', 'c'])
    expect(Array.from({ length: 7 }, () => rr.next())).toEqual(['a', 'b', 'c', 'a', 'b', 'c', 'a'])
  })
})

describe('plannedTotal', () => {
  it('knows the total from --count or rate x duration, and not otherwise', () => {
    expect(plannedTotal({ count: 50, ratePerSecond: 10 })).toBe(50)
    expect(plannedTotal({ durationSeconds: 2.5, ratePerSecond: 10 })).toBe(25)
    expect(plannedTotal({ ratePerSecond: 10 })).toBeUndefined()
  })
})
