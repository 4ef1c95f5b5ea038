import { describe, expect, it } from 'vitest'
import { dueInstants, nextDue, nextDueAfter, parseDays, resolveLocal, type ScheduleTimes } from '../../src/reminders/schedule.ts'

const daily = (times: string[], timezone: string, extra: Partial<ScheduleTimes> = {}): ScheduleTimes => ({
  times,
  days: [1, 2, 3, 4, 5, 6, 7],
  startsOn: '2026-01-01',
  endsOn: null,
  timezone,
  ...extra,
})

const at = (iso: string) => Date.parse(iso)
const dues = (s: ScheduleTimes, from: string, to: string) => dueInstants(s, at(from), at(to)).map((d) => d.dueAt)

describe('due instants across daylight-saving changes', () => {
  it('a daily 08:00 in New York is 13:00Z before the spring change and 12:00Z after it', () => {
    const list = dueInstants(daily(['08:00'], 'America/New_York'), at('2026-03-06T00:00:00Z'), at('2026-03-10T00:00:00Z'))
    expect(list.map((d) => [d.dueAt, d.localDate, d.localTime])).toEqual([
      ['2026-03-06T13:00:00.000Z', '2026-03-06', '08:00'],
      ['2026-03-07T13:00:00.000Z', '2026-03-07', '08:00'],
      ['2026-03-08T12:00:00.000Z', '2026-03-08', '08:00'],
      ['2026-03-09T12:00:00.000Z', '2026-03-09', '08:00'],
    ])
  })

  it('a time in the spring-forward gap (02:30 on 2026-03-08) fires once, at the shifted time 03:30 EDT', () => {
    const list = dueInstants(daily(['02:30'], 'America/New_York'), at('2026-03-07T00:00:00Z'), at('2026-03-10T00:00:00Z'))
    expect(list.map((d) => [d.dueAt, d.localDate, d.localTime])).toEqual([
      ['2026-03-07T07:30:00.000Z', '2026-03-07', '02:30'], // 02:30 EST
      ['2026-03-08T07:30:00.000Z', '2026-03-08', '02:30'], // 03:30 EDT: the wall clock skipped 02:00-03:00
      ['2026-03-09T06:30:00.000Z', '2026-03-09', '02:30'], // 02:30 EDT
    ])
  })

  it('a gap time that lands on another slot fires once for both', () => {
    const list = dueInstants(daily(['02:30', '03:30'], 'America/New_York'), at('2026-03-08T05:00:00Z'), at('2026-03-08T12:00:00Z'))
    expect(list.map((d) => d.dueAt)).toEqual(['2026-03-08T07:30:00.000Z'])
  })

  it('a time that happens twice (01:30 on 2026-11-01) fires once, at its first occurrence (EDT)', () => {
    expect(dues(daily(['01:30'], 'America/New_York'), '2026-10-31T00:00:00Z', '2026-11-02T12:00:00Z')).toEqual([
      '2026-10-31T05:30:00.000Z', // EDT
      '2026-11-01T05:30:00.000Z', // 01:30 EDT, not 01:30 EST (06:30Z)
      '2026-11-02T06:30:00.000Z', // EST
    ])
    expect(resolveLocal('2026-11-01', '01:30', 'America/New_York')).toBe(at('2026-11-01T05:30:00Z'))
  })

  it('Europe/London: 08:00 is 08:00Z in winter and 07:00Z in summer; 01:30 on the autumn change is the BST one', () => {
    expect(dues(daily(['08:00'], 'Europe/London'), '2026-03-28T00:00:00Z', '2026-03-30T00:00:00Z')).toEqual([
      '2026-03-28T08:00:00.000Z',
      '2026-03-29T07:00:00.000Z',
    ])
    expect(dues(daily(['01:30'], 'Europe/London'), '2026-10-25T00:00:00Z', '2026-10-25T23:00:00Z')).toEqual(['2026-10-25T00:30:00.000Z'])
    // 01:30 on 2026-03-29 does not exist in London: it fires at 02:30 BST.
    expect(dues(daily(['01:30'], 'Europe/London'), '2026-03-29T00:00:00Z', '2026-03-29T23:00:00Z')).toEqual(['2026-03-29T01:30:00.000Z'])
  })
})

describe('zones, days and dates', () => {
  it('Asia/Kolkata (UTC+05:30, no DST): 08:00 is 02:30Z, and a 01:00 slot falls on the previous UTC date', () => {
    expect(dues(daily(['01:00', '08:00'], 'Asia/Kolkata'), '2026-06-01T00:00:00Z', '2026-06-02T00:00:00Z')).toEqual([
      '2026-06-01T02:30:00.000Z',
      '2026-06-01T19:30:00.000Z', // 01:00 on 2026-06-02 local
    ])
    const [late] = dueInstants(daily(['01:00'], 'Asia/Kolkata'), at('2026-06-01T19:00:00Z'), at('2026-06-01T20:00:00Z'))
    expect(late).toMatchObject({ localDate: '2026-06-02', localTime: '01:00' })
  })

  it('only on the listed ISO weekdays (Monday = 1), counted in the patient\'s zone', () => {
    // 2026-06-01 is a Monday. 23:00 in New York is 03:00Z the next UTC day; Sunday 2026-05-31
    // 23:00 local (2026-06-01T03:00Z, a Monday in UTC) is not a Monday slot.
    const s = daily(['23:00'], 'America/New_York', { days: [1, 3] })
    const list = dueInstants(s, at('2026-06-01T00:00:00Z'), at('2026-06-08T06:00:00Z'))
    expect(list.map((d) => [d.localDate, d.dueAt])).toEqual([
      ['2026-06-01', '2026-06-02T03:00:00.000Z'],
      ['2026-06-03', '2026-06-04T03:00:00.000Z'],
    ])
  })

  it('from startsOn to endsOn inclusive, in local dates', () => {
    const s = daily(['09:00'], 'UTC', { startsOn: '2026-06-02', endsOn: '2026-06-04' })
    expect(dues(s, '2026-06-01T00:00:00Z', '2026-06-10T00:00:00Z')).toEqual([
      '2026-06-02T09:00:00.000Z',
      '2026-06-03T09:00:00.000Z',
      '2026-06-04T09:00:00.000Z',
    ])
  })

  it('the interval is (from, to]: an instant at `from` was already handled, one at `to` is due', () => {
    const s = daily(['09:00'], 'UTC')
    expect(dues(s, '2026-06-02T09:00:00Z', '2026-06-03T09:00:00Z')).toEqual(['2026-06-03T09:00:00.000Z'])
    expect(dues(s, '2026-06-02T09:00:00Z', '2026-06-02T09:00:00Z')).toEqual([])
  })

  it('nextDue looks ahead for the next matching day', () => {
    const s = daily(['08:00', '20:00'], 'Europe/London', { days: [5] }) // Fridays
    expect(nextDue(s, at('2026-06-01T12:00:00Z'))?.dueAt).toBe('2026-06-05T07:00:00.000Z')
    expect(nextDue(daily(['08:00'], 'UTC', { endsOn: '2026-05-31' }), at('2026-06-01T00:00:00Z'))).toBeNull()
  })

  it('nextDueAfter (what the reminder clock keeps per schedule) finds the next slot however far ahead, and null only when there is none ever', () => {
    const next = (s: ScheduleTimes, after: string) => nextDueAfter(s, at(after))?.dueAt ?? null
    // Strictly after: a slot at `after` was handled.
    expect(next(daily(['08:00', '20:00'], 'UTC'), '2026-06-01T08:00:00Z')).toBe('2026-06-01T20:00:00.000Z')
    // Weekly, in the patient's zone: Friday 08:00 in London (BST).
    expect(next(daily(['08:00'], 'Europe/London', { days: [5] }), '2026-06-05T07:00:00Z')).toBe('2026-06-12T07:00:00.000Z')
    // Starting in two months: beyond nextDue's 8 days, still found.
    const later = daily(['09:00'], 'America/New_York', { startsOn: '2026-08-01', days: [1] }) // 2026-08-03 is the first Monday
    expect(nextDue(later, at('2026-06-01T00:00:00Z'))).toBeNull()
    expect(next(later, '2026-06-01T00:00:00Z')).toBe('2026-08-03T13:00:00.000Z')
    // Ended, or ending before its next weekday: none, ever.
    expect(next(daily(['08:00'], 'UTC', { endsOn: '2026-05-31' }), '2026-06-01T00:00:00Z')).toBeNull()
    expect(next(daily(['08:00'], 'UTC', { endsOn: '2026-06-06', days: [7] }), '2026-06-01T00:00:00Z')).toBeNull()
    // Across the changes, as dueInstants: the gap time moved to 03:30 EDT, the repeated time at its first occurrence.
    expect(next(daily(['02:30'], 'America/New_York'), '2026-03-07T08:00:00Z')).toBe('2026-03-08T07:30:00.000Z')
    expect(next(daily(['01:30'], 'America/New_York'), '2026-10-31T06:00:00Z')).toBe('2026-11-01T05:30:00.000Z')
    expect(next(daily(['08:00'], 'America/New_York'), '2026-03-07T13:00:00Z')).toBe('2026-03-08T12:00:00.000Z')
  })

  it('parseDays reads names and numbers, and names the bad item', () => {
    expect(parseDays('mon,Wed,friday,7')).toEqual([1, 3, 5, 7])
    expect(() => parseDays('mon,funday')).toThrow('days[1] must be mon..sun or 1..7')
    expect(() => parseDays('8')).toThrow('days[0]')
  })
})
