import { EventEmitter } from 'node:events'
import type { AcceptedReading } from './ingest/types.ts'

/** Every event on the bus, by name. Names are `noun.pastTense`. */
export interface GatewayEvents {
  /** A batch of readings committed to the journal (first time only; redeliveries are not repeated). */
  'reading.accepted': [readings: readonly AcceptedReading[]]
  /** A reading set aside with its reason. */
  'reading.quarantined': [event: { deviceId: string; code: string; message: string; path?: string; seq?: number; index?: number }]
  'device.connected': [event: { deviceId: string; at: Date }]
  'device.disconnected': [event: { deviceId: string; at: Date }]
}

/** The typed event bus the domain modules talk through. One per gateway; no globals. */
export class EventBus extends EventEmitter<GatewayEvents> {
  constructor() {
    super({ captureRejections: true })
    this.setMaxListeners(100)
  }
}
