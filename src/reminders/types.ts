import type { ReminderOccurrenceTable, ReminderScheduleTable } from '../store/schema.ts'

export type ReminderKind = ReminderScheduleTable['kind']
export type OccurrenceStatus = ReminderOccurrenceTable['status']

/** How a dose or measurement was confirmed, or why it was recorded without a reminder. */
export type ConfirmationSource = 'api' | 'device' | 'thread' | 'reading'
/** Source of an occurrence recorded as missed because it came due while the gateway was down. */
export const GATEWAY_DOWN = 'gateway_down'

/** A reminder schedule as clients see it. */
export interface ReminderSchedule {
  id: string
  patientId: string
  kind: ReminderKind
  medication: string | null
  dose: string | null
  readingType: string | null
  instructions: string | null
  /** The schedule's own IANA zone; null follows the patient's time zone. */
  timezone: string | null
  /** Local times "HH:MM", ascending. */
  times: string[]
  /** ISO weekdays, Monday = 1. */
  days: number[]
  startsOn: string
  endsOn: string | null
  active: boolean
  createdBy: string
  createdAt: string
  updatedAt: string
  /** The next reminder within 8 days, or null (inactive, ended, or no matching day). */
  nextDueAt: string | null
  /** The creating client's id for its request, or null; a retry with it answers this schedule. */
  clientRequestId: string | null
}

/** One dose slot (or, with scheduled=false, a dose taken when none was due). */
export interface ReminderOccurrence {
  id: string
  scheduleId: string
  patientId: string
  kind: ReminderKind
  medication: string | null
  dose: string | null
  readingType: string | null
  scheduled: boolean
  dueAt: string
  localDate: string
  localTime: string
  status: OccurrenceStatus
  /** When the reminder was posted; null when none was (confirmed early, or the gateway was down). */
  postedAt: string | null
  messageId: string | null
  /** When the dose was taken (or the reading measured), as reported. */
  takenAt: string | null
  /** When the confirmation was recorded. */
  confirmedAt: string | null
  /** A user id, or device:{deviceId}. */
  confirmedBy: string | null
  /** api, device, thread, reading; gateway_down for a reminder that could not be sent. */
  source: string | null
  missedAt: string | null
}

export interface ScheduleInput {
  kind: ReminderKind
  medication?: string
  dose?: string
  readingType?: string
  instructions?: string
  times: string[]
  days?: number[]
  startsOn?: string
  endsOn?: string | null
  timezone?: string | null
  /** The client's id for this request, unique per patient and creator: a retry creates nothing. */
  clientRequestId?: string
}

export interface SchedulePatch {
  times?: string[]
  days?: number[]
  dose?: string | null
  instructions?: string | null
  endsOn?: string | null
  timezone?: string | null
  active?: boolean
}

export interface OccurrenceQuery {
  since?: string
  until?: string
  status?: OccurrenceStatus
  limit?: number
}

/** Counts for one schedule over a period. */
export interface ScheduleAdherence {
  scheduleId: string
  kind: ReminderKind
  medication: string | null
  dose: string | null
  readingType: string | null
  active: boolean
  /** Medication doses confirmed. */
  taken: number
  /** Measurement reminders completed by a reading. */
  done: number
  missed: number
  pending: number
  /** Came due while the gateway was down: no reminder was sent; not counted in the rate. */
  unsent: number
  /** Doses taken when none was due; not counted in the rate. */
  unscheduled: number
  /** (taken + done) / (taken + done + missed); null with nothing to count. */
  rate: number | null
}

export interface AdherencePeriod {
  from: string
  to: string
  /** Medication doses over all schedules. */
  taken: number
  missed: number
  pending: number
  unsent: number
  unscheduled: number
  rate: number | null
  measurements: { done: number; missed: number; pending: number; unsent: number; rate: number | null }
  schedules: ScheduleAdherence[]
}

export interface Adherence {
  patientId: string
  asOf: string
  last7Days: AdherencePeriod
  last30Days: AdherencePeriod
}
