import { EventEmitter } from 'node:events'
import type { AcceptedReading } from './ingest/types.ts'
import type { Message } from './threads/types.ts'
import type { Alert, AlertChange } from './rules/types.ts'
import type { AlertSounding } from './rules/alerts.ts'

/**
 * Given with an event emitted inside the emitter's transaction: a listener queues here what is
 * to happen only once that transaction has committed (announcements, caches); it is dropped
 * when the transaction rolls back.
 */
export type AfterCommit = (work: () => void) => void

/** Every event on the bus, by name. Names are `noun.pastTense`. */
export interface GatewayEvents {
  /** A sign-in session was ended (sign-out, refresh-token reuse): its sockets close at once. */
  'session.ended': [event: { sessionId: string; reason: string }]
  /** A batch of readings committed to the journal (first time only; redeliveries are not repeated). */
  'reading.accepted': [readings: readonly AcceptedReading[]]
  /** A reading set aside with its reason. */
  'reading.quarantined': [event: { deviceId: string; code: string; message: string; path?: string; seq?: number; index?: number }]
  'device.connected': [event: { deviceId: string; at: Date }]
  'device.disconnected': [event: { deviceId: string; at: Date }]
  /** A device subscribed (its subscriptions are in place): `topics` as it asked for them. */
  'device.subscribed': [event: { deviceId: string; topics: string[] }]
  /** A device published on devices/{id}/events (before its PUBACK). The payload is unparsed. */
  'device.event': [event: { deviceId: string; patientId: string; kind: string; payload: Buffer }]
  /** Something a device sent could not be used: the broker answers on devices/{id}/errors. */
  'device.error': [event: { deviceId: string; code: string; message: string; path?: string }]
  /** A command for a device: the broker publishes it on devices/{id}/commands (QoS1). */
  'device.command': [event: { deviceId: string; payload: string }]
  /** A new message in a patient's thread (carries the text: never log the event as a whole). */
  'message.posted': [event: { patientId: string; message: Message }]
  /** A message was edited or left as a tombstone; `message` is its new state. */
  'message.updated': [event: { patientId: string; change: 'edited' | 'deleted'; message: Message }]
  /** A participant's read or delivered horizon in a thread moved forward. */
  'receipt.updated': [event: { patientId: string; threadId: string; userId: string; readSeq: number; deliveredSeq: number }]
  /** A new alert (or one reopened): the care team is to be told at once. Announced after its commit. */
  'alert.raised': [event: { alert: Alert }]
  /**
   * People are to be told of an alert now: it was raised, got worse, or reached an escalation
   * step (`recipients` are user ids, `step` is unique per sounding). Emitted inside the
   * transaction that recorded it, so what a listener writes (the notification outbox) commits
   * with the alert or not at all. A listener must not throw: that would roll the alert back.
   */
  'alert.sounded': [event: AlertSounding]
  /** Any change to an alert, the raise included; `alert` is its new state. */
  'alert.updated': [event: { alert: Alert; change: AlertChange }]
  /**
   * An unacknowledged alert reached a further tier (`reminder` 0) or is repeated to the tiers it
   * has reached (`reminder` 1, 2, ...). `recipients` are user ids; `added` the ones new at this step.
   */
  'alert.escalated': [event: { alert: Alert; tier: number; tierName: 'care_team' | 'on_call' | 'admin'; reminder: number; recipients: string[]; added: string[] }]
  /** A reminder came due and was posted in the patient's thread. */
  'reminder.due': [event: { patientId: string; occurrenceId: string; scheduleId: string; kind: 'medication' | 'measurement'; dueAt: string }]
  /** A medication dose was confirmed (thread, API or device). */
  'dose.taken': [event: { patientId: string; occurrenceId: string | null; scheduleId: string | null; medicationId: string | null; at: string; source: string }]
  /**
   * A medication dose was not confirmed within the grace window. Emitted inside the transaction
   * that records the miss, so what a listener writes (the missed-dose alert) commits with it or
   * not at all; a listener that throws rolls the miss back (it is tried again on the next tick).
   * Anything a listener tells others goes through `afterCommit`.
   */
  'dose.missed': [event: { patientId: string; occurrenceId: string; scheduleId: string; dueAt: string; afterCommit: AfterCommit }]
}

/** The typed event bus the domain modules talk through. One per gateway; no globals. */
export class EventBus extends EventEmitter<GatewayEvents> {
  constructor() {
    super({ captureRejections: true })
    this.setMaxListeners(100)
  }
}
