import { DateTime } from 'luxon'

export interface QuietHours {
  /** HH:MM, local time in `timezone`. */
  start: string
  end: string
  timezone: string
}

const minutesOf = (hhmm: string): number => {
  const [h, m] = hhmm.split(':').map(Number) as [number, number]
  return h * 60 + m
}

/**
 * When quiet hours that hold at `now` end (ms since the epoch), or null when `now` is outside
 * them. A window may span midnight (22:00-07:00). Times are wall-clock in the user's zone, so a
 * DST change moves the end with the clock on the wall.
 */
export function quietUntil(q: QuietHours, now: number): number | null {
  const start = minutesOf(q.start)
  const end = minutesOf(q.end)
  if (start === end) return null
  const local = DateTime.fromMillis(now, { zone: q.timezone })
  const minute = local.hour * 60 + local.minute
  const inside = start < end ? minute >= start && minute < end : minute >= start || minute < end
  if (!inside) return null
  const endHour = Math.floor(end / 60)
  const endMinute = end % 60
  let until = local.set({ hour: endHour, minute: endMinute, second: 0, millisecond: 0 })
  if (until.toMillis() <= now) until = until.plus({ days: 1 }).set({ hour: endHour, minute: endMinute })
  return until.toMillis()
}

export const HHMM = '^([01][0-9]|2[0-3]):[0-5][0-9]$'
