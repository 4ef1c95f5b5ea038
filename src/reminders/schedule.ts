import { DateTime, IANAZone } from 'luxon'

/**
 * When reminders come due: pure functions of a schedule and an interval, no clock and no
 * database. Times are wall-clock times in the patient's zone, so a daily 08:00 stays 08:00
 * across daylight-saving changes (13:00Z before 2026-03-08 in New York, 12:00Z after).
 */

/** What the calculation needs of a schedule. */
export interface ScheduleTimes {
  /** Local times "HH:MM" (24-hour). */
  times: readonly string[]
  /** ISO weekdays, Monday = 1 ... Sunday = 7. */
  days: readonly number[]
  /** First local date (YYYY-MM-DD) with reminders. */
  startsOn: string
  /** Last local date with reminders (inclusive), or null for no end. */
  endsOn: string | null
  /** IANA time zone of the times. */
  timezone: string
}

export interface DueInstant {
  /** Epoch milliseconds (UTC). */
  dueMs: number
  /** The same instant as ISO-8601 UTC. */
  dueAt: string
  /** The local date of the dose slot (YYYY-MM-DD). */
  localDate: string
  /** The scheduled local time of the slot ("HH:MM"), also when a DST gap moved the instant. */
  localTime: string
}

export const ALL_DAYS: readonly number[] = [1, 2, 3, 4, 5, 6, 7]
export const DAY_NAMES: readonly string[] = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun']

const DAY_MS = 86_400_000
const TIME = /^([01]\d|2[0-3]):([0-5]\d)$/
const DATE = /^\d{4}-\d{2}-\d{2}$/

export const isLocalTime = (s: string): boolean => TIME.test(s)

export function isLocalDate(s: string): boolean {
  return DATE.test(s) && DateTime.fromISO(s, { zone: 'UTC' }).isValid
}

export const isTimeZone = (zone: string): boolean => IANAZone.isValidZone(zone)

/** Today's local date in `zone`. */
export function localDate(ms: number, zone: string): string {
  return DateTime.fromMillis(ms, { zone }).toISODate()!
}

/** The local date and time ("HH:MM") of an instant in `zone`. */
export function localDateTime(ms: number, zone: string): { localDate: string; localTime: string } {
  const dt = DateTime.fromMillis(ms, { zone })
  return { localDate: dt.toISODate()!, localTime: dt.toFormat('HH:mm') }
}

/**
 * The instant a local date and time names in `zone`:
 * - a time that does not exist (the spring-forward gap, 02:30 in New York on 2026-03-08) is
 *   moved forward by the gap, to 03:30 EDT, the way a wall clock that was not changed reads;
 * - a time that happens twice (fall back, 01:30 on 2026-11-01) is its first occurrence (EDT),
 *   so the reminder is not an hour late. Luxon alone picks the later offset for these.
 */
export function resolveLocal(date: string, time: string, zone: string): number {
  const [year, month, day] = date.split('-').map(Number) as [number, number, number]
  const [hour, minute] = time.split(':').map(Number) as [number, number]
  const dt = DateTime.fromObject({ year, month, day, hour, minute }, { zone })
  if (!dt.isValid) throw new Error(`cannot resolve ${date} ${time} in ${zone}: ${dt.invalidExplanation ?? dt.invalidReason}`)
  return Math.min(...dt.getPossibleOffsets().map((d) => d.toMillis()))
}

/**
 * Every due instant of the schedule in (fromMs, toMs], oldest first. Two slots that land on one
 * instant (02:30 moved onto 03:30 by a DST gap) come out once: a reminder is one per instant.
 */
export function dueInstants(s: ScheduleTimes, fromMs: number, toMs: number): DueInstant[] {
  if (!(toMs > fromMs)) return []
  const days = new Set(s.days)
  const out = new Map<number, DueInstant>()
  // Local dates around the interval: a slot's instant may fall on the neighbouring UTC date.
  let date = DateTime.fromMillis(fromMs, { zone: s.timezone }).startOf('day').minus({ days: 1 })
  const lastDate = DateTime.fromMillis(toMs, { zone: s.timezone }).startOf('day').plus({ days: 1 })
  for (; date <= lastDate; date = date.plus({ days: 1 })) {
    const iso = date.toISODate()!
    if (iso < s.startsOn || (s.endsOn !== null && iso > s.endsOn)) continue
    if (!days.has(date.weekday)) continue
    for (const time of s.times) {
      const dueMs = resolveLocal(iso, time, s.timezone)
      if (dueMs <= fromMs || dueMs > toMs || out.has(dueMs)) continue
      out.set(dueMs, { dueMs, dueAt: new Date(dueMs).toISOString(), localDate: iso, localTime: time })
    }
  }
  return [...out.values()].sort((a, b) => a.dueMs - b.dueMs)
}

/** The first due instant after `afterMs`, looking ahead at most `horizonDays`; null when none. */
export function nextDue(s: ScheduleTimes, afterMs: number, horizonDays = 8): DueInstant | null {
  return dueInstants(s, afterMs, afterMs + horizonDays * 86_400_000)[0] ?? null
}

/**
 * The first due instant after `afterMs`, however far ahead (a schedule that starts next month);
 * null only when there is none ever again (it ended, or it names no day or time). Every weekday
 * comes round within 7 local dates, so 8 days from the later of `afterMs` and the day before
 * `startsOn` hold the next slot if there is one. The reminder clock keeps this per schedule.
 */
export function nextDueAfter(s: ScheduleTimes, afterMs: number): DueInstant | null {
  if (s.times.length === 0 || s.days.length === 0) return null
  const [year, month, day] = s.startsOn.split('-').map(Number) as [number, number, number]
  const startsMs = DateTime.fromObject({ year, month, day }, { zone: s.timezone }).toMillis()
  const from = Math.max(afterMs, startsMs - DAY_MS)
  // Most schedules are daily: the next two days usually hold the answer, for half the work.
  return dueInstants(s, from, from + 2 * DAY_MS)[0] ?? dueInstants(s, from, from + 8 * DAY_MS)[0] ?? null
}

const FULL_DAY_NAMES = ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday']

/** Day names or numbers ("mon,tue", "monday" or "1,2") to ISO weekdays; throws naming the bad item. */
export function parseDays(list: string): number[] {
  return list.split(',').map((raw, i) => {
    const v = raw.trim().toLowerCase()
    const byName = Math.max(DAY_NAMES.indexOf(v), FULL_DAY_NAMES.indexOf(v))
    if (byName >= 0) return byName + 1
    const n = Number(v)
    if (v !== '' && Number.isInteger(n) && n >= 1 && n <= 7) return n
    throw new Error(`days[${i}] must be mon..sun or 1..7 (Monday = 1)`)
  })
}
