import type { Generated } from 'kysely'

/** Table shapes for the typed query builder. Times are ISO-8601 UTC text; JSON is text. */
export interface PatientTable {
  id: string
  name: string
  timezone: string
  created_at: string
}

export type DeviceKind = 'bp_cuff' | 'glucometer' | 'oximeter' | 'scale' | 'thermometer' | 'hub'

export interface DeviceTable {
  id: string
  patient_id: string
  kind: DeviceKind
  secret_hash: string | null
  status: 'active' | 'disabled'
  created_at: string
  disabled_at: string | null
  online: number
  last_seen_at: string | null
  last_connected_at: string | null
}

export interface ReadingTable {
  id: Generated<number>
  device_id: string
  patient_id: string
  type: string
  seq: number | null
  measured_at: string
  received_at: string
  /** Canonical values, e.g. {"systolicMmHg":152,"diastolicMmHg":95,"pulseBpm":78}. */
  values_json: string
  /** The reading as the device sent it (original value and unit). */
  original_json: string
  dedupe_key: string
}

export interface QuarantineTable {
  id: Generated<number>
  device_id: string
  received_at: string
  code: string
  message: string
  path: string | null
  seq: number | null
  /** Position in a batch, null for a single reading or an unparseable payload. */
  batch_index: number | null
  raw: string
}

export interface AuditTable {
  id: Generated<number>
  at: string
  actor_type: string
  actor_id: string
  action: string
  target: string | null
  outcome: string
  address: string | null
  details_json: string | null
  prev_hash: string
  hash: string
}

export type Role = 'patient' | 'provider' | 'admin'

export interface UserTable {
  id: string
  username: string
  role: Role
  name: string
  patient_id: string | null
  password_hash: string
  status: 'active' | 'disabled'
  failed_logins: number
  locked_until: string | null
  created_at: string
}

export interface CareTeamTable {
  patient_id: string
  user_id: string
  added_at: string
}

export interface SessionTable {
  id: string
  user_id: string
  created_at: string
  last_active_at: string
  expires_at: string
  revoked_at: string | null
  revoked_reason: string | null
  address: string | null
}

export interface RefreshTokenTable {
  token_hash: string
  session_id: string
  issued_at: string
  used_at: string | null
}

export interface BreakGlassTable {
  id: string
  user_id: string
  patient_id: string
  reason: string
  granted_at: string
  expires_at: string
}

export interface ThreadTable {
  id: string
  patient_id: string
  created_at: string
  /** The seq of the newest message; the next one gets last_seq + 1. */
  last_seq: number
  /** Counts every change in the thread (post, edit, tombstone). */
  last_revision: number
}

export type MessageKind = 'text' | 'reading' | 'device_event' | 'alert' | 'reminder'
/** 'system': the gateway itself (alerts, reminders). */
export type SenderRole = 'patient' | 'provider' | 'admin' | 'device' | 'system'

export interface MessageTable {
  id: string
  thread_id: string
  seq: number
  /** The thread's revision at this message's last change. */
  revision: number
  kind: MessageKind
  sender_role: SenderRole
  sender_user_id: string | null
  sender_device_id: string | null
  sender_key: string
  client_message_id: string | null
  /** Null for structured messages and tombstones. */
  text: string | null
  /** Structured content (readings, device events) as JSON. */
  data_json: string | null
  reply_to: string | null
  created_at: string
  edited_at: string | null
  deleted_at: string | null
}

export interface MessageVersionTable {
  id: Generated<number>
  message_id: string
  /** 1 for the text as first sent. */
  version: number
  text: string
  written_at: string
  replaced_at: string
  /** 'edit' or 'delete'. */
  replaced_by: string
}

export interface ThreadReceiptTable {
  thread_id: string
  user_id: string
  read_seq: number
  delivered_seq: number
  updated_at: string
}

export type Severity = 'info' | 'warning' | 'urgent' | 'critical'
export type AlertStatus = 'open' | 'acknowledged' | 'resolved'

export interface RuleOverrideTable {
  id: Generated<number>
  patient_id: string
  rule_id: string
  version: number
  /** The override (levels, clear, enabled); null returns the patient to the rule's default. */
  spec_json: string | null
  reason: string
  changed_by: string
  changed_at: string
}

export interface AlertTable {
  id: string
  patient_id: string
  rule_id: string
  rule_kind: string
  title: string
  reading_type: string | null
  severity: Severity
  status: AlertStatus
  opened_at: string
  updated_at: string
  /** Readings (or events) that matched while the alert was open, the first included. */
  count: number
  first_reading_id: number | null
  last_reading_id: number | null
  last_measured_at: string | null
  last_values_json: string | null
  acknowledged_at: string | null
  acknowledged_by: string | null
  resolved_at: string | null
  /** A user id, or null when the clear condition resolved it. */
  resolved_by: string | null
  resolution: 'auto' | 'manual' | null
  note: string | null
  snoozed_until: string | null
  snoozed_by: string | null
  /** The severity the snooze covers: a worse one breaks through. */
  snooze_severity: Severity | null
  tier: number
  /** Tier times count from here: when it opened, or last became worse. */
  escalation_started_at: string
  last_notified_at: string
  next_escalation_at: string | null
  reminders: number
}

export interface AlertEventTable {
  id: Generated<number>
  alert_id: string
  at: string
  type: string
  /** A user id, 'system', or 'device:<id>'. */
  actor: string | null
  details_json: string | null
}

export interface AlertRecipientTable {
  alert_id: string
  user_id: string
  patient_id: string
  tier: number
  added_at: string
}

export interface OnCallTable {
  id: Generated<number>
  user_id: string
  starts_at: string
  ends_at: string
  created_by: string
  created_at: string
}

export interface ReminderScheduleTable {
  id: string
  patient_id: string
  kind: 'medication' | 'measurement'
  medication: string | null
  dose: string | null
  reading_type: string | null
  instructions: string | null
  /** IANA zone of the times; null follows the patient's time zone. */
  timezone: string | null
  /** JSON array of local times "HH:MM". */
  times_json: string
  /** JSON array of ISO weekdays, Monday = 1. */
  days_json: string
  starts_on: string
  ends_on: string | null
  active: number
  created_by: string
  created_at: string
  updated_at: string
  /** The next instant the reminder clock looks at (ISO UTC): the next slot not yet processed; null when inactive or ended. */
  next_due_at: string | null
  /** The creating client's id for the request: a retried POST finds the schedule it created. */
  client_request_id: string | null
}

export interface ReminderOccurrenceTable {
  id: string
  schedule_id: string
  patient_id: string
  due_at: string
  local_date: string
  local_time: string
  status: 'pending' | 'taken' | 'missed' | 'done'
  /** 0 for a dose taken when none was due. */
  scheduled: number
  /** Null when no reminder was sent (confirmed early, or the gateway was down). */
  posted_at: string | null
  message_id: string | null
  confirmed_at: string | null
  taken_at: string | null
  confirmed_by: string | null
  source: string | null
  missed_at: string | null
}

export interface GatewayStateTable {
  key: string
  value: string
}

export interface TimeseriesRejectedTable {
  id: Generated<number>
  reading_id: number
  /** The InfluxDB it was refused by: url|org|bucket. */
  target: string
  status: number
  reason: string
  rejected_at: string
}

export type NotifyChannel = 'webpush' | 'fcm' | 'sms'
export type NotificationStatus = 'pending' | 'sending' | 'sent' | 'failed' | 'dropped'

export interface PushTargetTable {
  id: string
  user_id: string
  channel: 'webpush' | 'fcm'
  /** The Web Push endpoint URL or the FCM registration token. */
  address: string
  p256dh: string | null
  auth: string | null
  platform: 'web' | 'android' | 'ios'
  label: string | null
  created_at: string
  last_success_at: string | null
}

export interface SmsContactTable {
  user_id: string
  /** E.164. */
  phone: string
  consented_at: string | null
  consent_source: string | null
  opted_out_at: string | null
  opt_out_source: string | null
  verified_at: string | null
  code_hash: string | null
  code_expires_at: string | null
  code_attempts: number
  updated_at: string
}

export interface NotificationPrefsTable {
  user_id: string
  webpush: number
  fcm: number
  sms: number
  messages: number
  /** HH:MM in `timezone`; both null when there are no quiet hours. */
  quiet_start: string | null
  quiet_end: string | null
  timezone: string | null
  updated_at: string
}

export interface NotificationTable {
  id: string
  user_id: string
  channel: NotifyChannel
  target_id: string | null
  kind: 'message' | 'alert' | 'reminder' | 'test'
  ref_id: string | null
  ref_seq: number | null
  severity: string | null
  urgent: number
  collapse_key: string
  dedupe_key: string
  status: NotificationStatus
  attempts: number
  in_doubt: number
  /** ms since the epoch. */
  not_before: number
  expires_at: number
  created_at: string
  updated_at: string
  sent_at: string | null
  reason: string | null
  provider_ref: string | null
  delivery_status: string | null
}

export interface Database {
  patients: PatientTable
  devices: DeviceTable
  readings: ReadingTable
  quarantine: QuarantineTable
  audit: AuditTable
  users: UserTable
  care_team: CareTeamTable
  sessions: SessionTable
  refresh_tokens: RefreshTokenTable
  break_glass: BreakGlassTable
  threads: ThreadTable
  messages: MessageTable
  message_versions: MessageVersionTable
  thread_receipts: ThreadReceiptTable
  rule_overrides: RuleOverrideTable
  alerts: AlertTable
  alert_events: AlertEventTable
  alert_recipients: AlertRecipientTable
  on_call: OnCallTable
  reminder_schedules: ReminderScheduleTable
  reminder_occurrences: ReminderOccurrenceTable
  gateway_state: GatewayStateTable
  timeseries_rejected: TimeseriesRejectedTable
  push_targets: PushTargetTable
  sms_contacts: SmsContactTable
  notification_prefs: NotificationPrefsTable
  notifications: NotificationTable
}
