import type { AlertStatus, Severity } from '../store/schema.ts'

export type { AlertStatus, Severity } from '../store/schema.ts'

export const SEVERITIES: readonly Severity[] = ['info', 'warning', 'urgent', 'critical']
/** info 0 < warning 1 < urgent 2 < critical 3. */
export const severityRank = (s: Severity): number => SEVERITIES.indexOf(s)
export const worse = (a: Severity, b: Severity): boolean => severityRank(a) > severityRank(b)

/** An alert as clients and the bus see it. */
export interface Alert {
  id: string
  patientId: string
  ruleId: string
  ruleKind: string
  title: string
  readingType: string | null
  severity: Severity
  status: AlertStatus
  openedAt: string
  updatedAt: string
  /** Readings (or events) that matched while it was open, the first included. */
  count: number
  lastReadingId: number | null
  lastMeasuredAt: string | null
  /** What matched last: canonical reading values, a change over a window, hours without data, ... */
  lastValues: Record<string, unknown> | null
  acknowledgedAt: string | null
  acknowledgedBy: string | null
  resolvedAt: string | null
  /** A user id, or null when the clear condition resolved it. */
  resolvedBy: string | null
  resolution: 'auto' | 'manual' | null
  note: string | null
  snoozedUntil: string | null
  snoozedBy: string | null
  snoozeSeverity: Severity | null
  /** Escalation tier reached: 0 care team, 1 on-call provider, 2 admin. */
  tier: number
  nextEscalationAt: string | null
  /** Reminders sent at the current tier. */
  reminders: number
}

/** What happened to an alert: the payload of `alert.updated`. */
export type AlertChange =
  | 'raised'
  | 'repeated'
  | 'severity_raised'
  | 'reopened'
  | 'acknowledged'
  | 'snoozed'
  | 'escalated'
  | 'resolved'
