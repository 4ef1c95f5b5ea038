import { Point } from '@influxdata/influxdb-client'

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

/** The line-protocol line of one reading, or null for a type without a measurement. */
export function toLine(row: JournalRow): string | null {
  const m = MEASUREMENTS[row.type]
  if (!m) return null
  const values = JSON.parse(row.values_json) as Record<string, unknown>
  const point = new Point(m.measurement).tag('patient_id', row.patient_id).tag('device_id', row.device_id).tag('device_kind', row.device_kind)
  let fields = 0
  for (const [key, field] of Object.entries(m.fields)) {
    const v = values[key]
    if (typeof v === 'number' && Number.isFinite(v)) {
      point.floatField(field, v)
      fields++
    }
  }
  if (fields === 0) return null
  point.timestamp(Date.parse(row.measured_at))
  return point.toLineProtocol() ?? null
}
