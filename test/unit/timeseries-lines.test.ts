import { Point } from '@influxdata/influxdb-client'
import { describe, expect, it } from 'vitest'
import { MEASUREMENTS, toLine, type JournalRow } from '../../src/timeseries/lines.ts'

const row = (type: string, values: Record<string, number>, ids: Partial<JournalRow> = {}): JournalRow => ({
  id: 1, patient_id: 'pat-1', device_id: 'dev-1', device_kind: 'bp_cuff', type, measured_at: '2026-11-25T07:30:00.123Z', values_json: JSON.stringify(values), ...ids,
})

/** The same point built with the client library's Point: the reference for escaping and order. */
function reference(r: JournalRow): string {
  const m = MEASUREMENTS[r.type]!
  const p = new Point(m.measurement).tag('patient_id', r.patient_id).tag('device_id', r.device_id).tag('device_kind', r.device_kind)
  const v = JSON.parse(r.values_json) as Record<string, number>
  for (const [k, f] of Object.entries(m.fields)) if (v[k] !== undefined) p.floatField(f, v[k]!)
  return p.timestamp(Date.parse(r.measured_at)).toLineProtocol()!
}

describe('line protocol', () => {
  it('one measurement per type, float fields, tags, measuredAt in milliseconds', () => {
    expect(toLine(row('blood_pressure', { systolicMmHg: 152, diastolicMmHg: 95, pulseBpm: 78 }))).toBe(
      'blood_pressure,device_id=dev-1,device_kind=bp_cuff,patient_id=pat-1 diastolic=95,pulse=78,systolic=152 1795591800123',
    )
    expect(toLine(row('glucose', { glucoseMgDl: 97.3 }, { device_kind: 'glucometer' }))).toBe('glucose,device_id=dev-1,device_kind=glucometer,patient_id=pat-1 mg_dl=97.3 1795591800123')
    expect(toLine(row('weight', { weightKg: 74.979 }))).toMatch(/^weight,.* weight_kg=74.979 1795591800123$/)
    expect(toLine(row('temperature', { temperatureC: 37.28 }))).toMatch(/ temperature_c=37.28 /)
    expect(toLine(row('spo2', { spo2Percent: 96, pulseBpm: 70 }))).toMatch(/^spo2,.* pulse=70,spo2=96 /)
    expect(toLine(row('heart_rate', { heartRateBpm: 61 }))).toMatch(/^heart_rate,.* heart_rate=61 /)
  })

  it('escapes like the client library, for every type and awkward ids', () => {
    const ids = { patient_id: 'pat 1,a=b', device_id: 'dev\\1', device_kind: 'hub' }
    const rows = [
      row('blood_pressure', { systolicMmHg: 120.5, diastolicMmHg: 80 }, ids),
      row('glucose', { glucoseMgDl: 109.9 }, ids),
      row('spo2', { spo2Percent: 97 }, ids),
      row('heart_rate', { heartRateBpm: 72 }, ids),
      row('weight', { weightKg: 80.1 }, ids),
      row('temperature', { temperatureC: 36.9 }, ids),
    ]
    for (const r of rows) expect(toLine(r)).toBe(reference(r))
  })

  it('leaves out what a reading did not carry, and a reading with nothing to write', () => {
    expect(toLine(row('blood_pressure', { systolicMmHg: 120, diastolicMmHg: 80 }))).not.toContain('pulse')
    expect(toLine(row('glucose', {}))).toBeNull()
    expect(toLine(row('unknown_type', { x: 1 }))).toBeNull()
  })
})
