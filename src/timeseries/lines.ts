import { escape } from '@influxdata/influxdb-client'

/**
 * The time-series schema: one measurement per reading type, fields from the canonical values,
 * tags patient_id, device_id, device_kind, timestamp = measuredAt in milliseconds. Every field
 * is a float (InfluxDB refuses a field whose type changes, and a converted value may have
 * decimals). docs/timeseries.md describes it with example queries.
 */
export const MEASUREMENTS: Record<string, { measurement: string; fields: Record<string, string> }> = {
  blood_pressure: { measurement: 'blood_pressure', fields: { systolicMmHg: 'systolic', diastolicMmHg: 'diastolic', pulseBpm: 'pulse' } },
  glucose: { measurement: 'glucose', fields: { glucoseMgDl: 'mg_dl' } },
  spo2: { measurement: 'spo2', fields: { spo2Percent: 'spo2', pulseBpm: 'pulse' } },
  heart_rate: { measurement: 'heart_rate', fields: { heartRateBpm: 'heart_rate' } },
  weight: { measurement: 'weight', fields: { weightKg: 'weight_kg' } },
  temperature: { measurement: 'temperature', fields: { temperatureC: 'temperature_c' } },
}

/** A journal row as the writer reads it. */
export interface JournalRow {
  id: number
  patient_id: string
  device_id: string
  device_kind: string
  type: string
  measured_at: string
  values_json: string
}

/** Escaped "measurement,tags" per series: a patient's device sends the same series again and again. */
const prefixes = new Map<string, string>()
const MAX_PREFIXES = 100_000

function prefixOf(measurement: string, row: JournalRow): string {
  const key = `${measurement}\u0000${row.patient_id}\u0000${row.device_id}\u0000${row.device_kind}`
  let prefix = prefixes.get(key)
  if (prefix === undefined) {
    // Tags in key order, as InfluxDB recommends; the client's own escaping.
    prefix = `${escape.measurement(measurement)},device_id=${escape.tag(row.device_id)},device_kind=${escape.tag(row.device_kind)},patient_id=${escape.tag(row.patient_id)}`
    if (prefixes.size >= MAX_PREFIXES) prefixes.clear()
    prefixes.set(key, prefix)
  }
  return prefix
}

/** The line-protocol line of one reading, or null for a type without a measurement. */
export function toLine(row: JournalRow): string | null {
  const m = MEASUREMENTS[row.type]
  if (!m) return null
  const values = JSON.parse(row.values_json) as Record<string, unknown>
  const fields: string[] = []
  for (const [key, field] of Object.entries(m.fields)) {
    const v = values[key]
    // A number without an "i" suffix is a float field.
    if (typeof v === 'number' && Number.isFinite(v)) fields.push(`${field}=${v}`)
  }
  if (fields.length === 0) return null
  // Fields in key order too, so a reading always makes the same line.
  fields.sort()
  return `${prefixOf(m.measurement, row)} ${fields.join(',')} ${Date.parse(row.measured_at)}`
}
