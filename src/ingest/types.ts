import type { ErrorCode } from '../errors.ts'

export const READING_TYPES = ['blood_pressure', 'glucose', 'spo2', 'heart_rate', 'weight', 'temperature'] as const
export type ReadingType = (typeof READING_TYPES)[number]

/** Canonical values: mmHg, mg/dL, %, bpm, kg, °C. */
export type CanonicalValues =
  | { systolicMmHg: number; diastolicMmHg: number; pulseBpm?: number }
  | { glucoseMgDl: number; context?: string }
  | { spo2Percent: number; pulseBpm?: number }
  | { heartRateBpm: number }
  | { weightKg: number }
  | { temperatureC: number }

/** A reading that passed validation, in canonical units, ready for the journal. */
export interface NormalisedReading {
  type: ReadingType
  seq: number | null
  /** ISO-8601 UTC, milliseconds. */
  measuredAt: string
  values: CanonicalValues
  /** The reading as the device sent it. */
  original: Record<string, unknown>
}

/** A reading committed to the journal, as the rest of the gateway sees it. */
export interface AcceptedReading extends NormalisedReading {
  id: number
  deviceId: string
  deviceKind: string
  patientId: string
  receivedAt: string
}

/** Why a reading (or a whole payload) was set aside. Never carries the measured values. */
export interface ReadingProblem {
  code: ErrorCode
  message: string
  /** JSON pointer into the reading, e.g. "/systolic". */
  path?: string
  seq?: number
  /** Position within a batch array. */
  index?: number
  raw: string
}
