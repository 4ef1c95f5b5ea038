// Shapes of the gateway's REST and WebSocket API (docs/api.md, docs/websocket.md, docs/rules.md,
// docs/reminders.md, docs/notifications.md; exact schemas at /docs/json).

export type Role = 'patient' | 'provider' | 'admin'

export interface User {
  id: string
  username: string
  role: Role
  name: string
  patientId: string | null
  status: 'active' | 'disabled'
  createdAt: string
}

export interface TokenAnswer {
  accessToken: string
  /** Only without the cookie contract (an older gateway); kept in memory, never stored. */
  refreshToken?: string
  expiresIn: number
  tokenType: 'Bearer'
  user?: User
}

export interface Patient {
  id: string
  name: string
  timezone: string
  createdAt: string
}

export type ReadingType = 'blood_pressure' | 'glucose' | 'spo2' | 'heart_rate' | 'weight' | 'temperature'

/** Canonical values: systolicMmHg, diastolicMmHg, pulseBpm, glucoseMgDl, spo2Percent, heartRateBpm, weightKg, temperatureC. */
export type ReadingValues = Record<string, number>

export interface Reading {
  id: number | string
  deviceId: string
  patientId?: string
  type: ReadingType | string
  seq?: number | null
  measuredAt: string
  receivedAt: string
  values: ReadingValues
}

export interface Page<T> {
  items: T[]
  nextCursor: string | null
}

export interface Device {
  id: string
  patientId: string
  kind: string
  status: 'active' | 'disabled'
  online: boolean
  lastSeenAt?: string | null
  lastConnectedAt?: string | null
  createdAt?: string
  disabledAt?: string | null
}

export type Severity = 'info' | 'warning' | 'urgent' | 'critical'
export type AlertStatus = 'open' | 'acknowledged' | 'resolved'

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
  count: number
  lastMeasuredAt?: string | null
  lastValues?: ReadingValues
  acknowledgedAt?: string | null
  acknowledgedBy?: string | null
  resolvedAt?: string | null
  resolvedBy?: string | null
  resolution?: 'auto' | 'manual' | null
  note?: string | null
  snoozedUntil?: string | null
  snoozedBy?: string | null
  snoozeSeverity?: Severity | null
  tier: number
  nextEscalationAt?: string | null
}

export type AlertChange = 'raised' | 'repeated' | 'severity_raised' | 'acknowledged' | 'snoozed' | 'escalated' | 'resolved'

export type MessageKind = 'text' | 'reading' | 'device_event' | 'alert' | 'reminder'

export interface Message {
  id: string
  threadId: string
  seq: number
  revision: number
  kind: MessageKind
  from: { role: Role | 'device' | 'system'; userId: string | null; deviceId: string | null }
  text: string | null
  data: any
  replyTo: string | null
  clientMessageId: string | null
  createdAt: string
  editedAt: string | null
  deletedAt: string | null
}

export interface Thread {
  id: string
  patientId: string
  createdAt: string
  lastSeq: number
  lastRevision: number
  readSeq: number
  deliveredSeq: number
  unread: number
  lastMessage: Message | null
}

export interface MessagePage {
  items: Message[]
  hasMore: boolean
  lastSeq: number
  lastRevision: number
}

export interface ReminderSchedule {
  id: string
  patientId: string
  kind: 'medication' | 'measurement'
  medication: string | null
  dose: string | null
  readingType: ReadingType | null
  instructions: string | null
  timezone: string | null
  times: string[]
  days: number[]
  startsOn: string
  endsOn: string | null
  active: boolean
  nextDueAt: string | null
}

export type OccurrenceStatus = 'pending' | 'taken' | 'missed' | 'done'

export interface Occurrence {
  id: string
  scheduleId: string
  patientId: string
  kind: 'medication' | 'measurement'
  medication: string | null
  dose: string | null
  readingType: string | null
  scheduled: boolean
  dueAt: string
  localDate: string
  localTime: string
  status: OccurrenceStatus
  takenAt: string | null
  source: string | null
}

export interface AdherenceWindow {
  from: string
  to: string
  taken: number
  missed: number
  pending: number
  unsent: number
  unscheduled: number
  rate: number | null
  measurements: { done: number; missed: number; pending: number; unsent: number; rate: number | null }
  schedules: Array<{
    scheduleId: string
    kind: 'medication' | 'measurement'
    medication: string | null
    dose: string | null
    readingType: string | null
    active: boolean
    taken: number
    done: number
    missed: number
    pending: number
    rate: number | null
  }>
}

export interface Adherence {
  patientId: string
  asOf: string
  last7Days: AdherenceWindow
  last30Days: AdherenceWindow
}

/** A comparison as rule files write it: "> 180", ">= 140", "< 90", "<= 200". */
export type Comparison = string
export type Condition = { any?: Record<string, Comparison>; all?: Record<string, Comparison>; change?: Comparison; consecutive?: number }
export interface RuleLevel extends Condition {
  severity: Severity
}

export interface RuleSpec {
  id: string
  title: string
  kind: string
  reading?: string
  levels?: RuleLevel[]
  clear?: Condition
  [key: string]: unknown
}

export interface PatientRule {
  id: string
  title: string
  kind: string
  source?: string
  reading?: string
  enabled: boolean
  spec: RuleSpec
  override: { version: number; override: Partial<RuleSpec>; reason: string; changedBy: string; changedAt: string; problem: string | null } | null
}

export interface PushChannels {
  webpush: { state: string; publicKey: string }
}

export interface ApiErrorBody {
  code: string
  message: string
  details?: Record<string, unknown>
}
