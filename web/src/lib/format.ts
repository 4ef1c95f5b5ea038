// Words and numbers for people: reading types, canonical values with their units, times.
import type { Reading, ReadingValues, Severity } from '../api/types.ts'

export const READING_LABEL: Record<string, string> = {
  blood_pressure: 'Blood pressure',
  glucose: 'Glucose',
  spo2: 'SpO2',
  heart_rate: 'Heart rate',
  weight: 'Weight',
  temperature: 'Temperature',
}

export const FIELD: Record<string, { label: string; unit: string; digits: number }> = {
  systolicMmHg: { label: 'Systolic', unit: 'mmHg', digits: 0 },
  diastolicMmHg: { label: 'Diastolic', unit: 'mmHg', digits: 0 },
  pulseBpm: { label: 'Pulse', unit: 'bpm', digits: 0 },
  glucoseMgDl: { label: 'Glucose', unit: 'mg/dL', digits: 0 },
  spo2Percent: { label: 'SpO2', unit: '%', digits: 0 },
  heartRateBpm: { label: 'Heart rate', unit: 'bpm', digits: 0 },
  weightKg: { label: 'Weight', unit: 'kg', digits: 1 },
  temperatureC: { label: 'Temperature', unit: '°C', digits: 1 },
}

export const DEVICE_LABEL: Record<string, string> = {
  bp_cuff: 'Blood pressure cuff',
  glucometer: 'Glucose meter',
  oximeter: 'Pulse oximeter',
  scale: 'Scale',
  thermometer: 'Thermometer',
  hub: 'Home hub',
}

export const SEVERITY_LABEL: Record<Severity, string> = { critical: 'Critical', urgent: 'Urgent', warning: 'Warning', info: 'Info' }

export function readingLabel(type: string): string {
  return READING_LABEL[type] ?? type.replace(/_/g, ' ')
}

export function num(value: number | undefined, digits = 0): string {
  if (value === undefined || !Number.isFinite(value)) return '–'
  return value.toFixed(digits)
}

export function fieldValue(field: string, value: number | undefined): string {
  const f = FIELD[field]
  return f ? `${num(value, f.digits)} ${f.unit}` : num(value, 1)
}

/** "152/95 mmHg, pulse 78 bpm", "97 %, pulse 80 bpm", "80.4 kg". */
export function formatValues(type: string, v: ReadingValues): string {
  switch (type) {
    case 'blood_pressure':
      return `${num(v['systolicMmHg'])}/${num(v['diastolicMmHg'])} mmHg${v['pulseBpm'] !== undefined ? `, pulse ${num(v['pulseBpm'])} bpm` : ''}`
    case 'spo2':
      return `${num(v['spo2Percent'])} %${v['pulseBpm'] !== undefined ? `, pulse ${num(v['pulseBpm'])} bpm` : ''}`
    case 'glucose':
      return fieldValue('glucoseMgDl', v['glucoseMgDl'])
    case 'heart_rate':
      return fieldValue('heartRateBpm', v['heartRateBpm'])
    case 'weight':
      return fieldValue('weightKg', v['weightKg'])
    case 'temperature':
      return fieldValue('temperatureC', v['temperatureC'])
    default:
      return Object.entries(v)
        .map(([k, x]) => `${FIELD[k]?.label ?? k} ${fieldValue(k, x)}`)
        .join(', ')
  }
}

export function formatReading(r: Pick<Reading, 'type' | 'values'>): string {
  return `${readingLabel(r.type)} ${formatValues(r.type, r.values)}`
}

const dateTime = new Intl.DateTimeFormat('en', { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' })
const dateTimeYear = new Intl.DateTimeFormat('en', { day: 'numeric', month: 'short', year: 'numeric', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' })
const timeOnly = new Intl.DateTimeFormat('en', { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' })
const dayOnly = new Intl.DateTimeFormat('en', { day: 'numeric', month: 'short' })
const weekday = new Intl.DateTimeFormat('en', { weekday: 'long' })

export function formatDateTime(iso: string | null | undefined): string {
  if (!iso) return '–'
  const d = new Date(iso)
  return d.getFullYear() === new Date().getFullYear() ? dateTime.format(d) : dateTimeYear.format(d)
}

export function formatTime(iso: string): string {
  return timeOnly.format(new Date(iso))
}

export function formatDay(ms: number): string {
  return dayOnly.format(new Date(ms))
}

/** "Today at 08:12", "Yesterday at 20:30", "Monday at 07:45", "3 Nov at 07:45". */
export function friendlyTime(iso: string): string {
  const d = new Date(iso)
  const today = new Date()
  const days = Math.round((startOfDay(today) - startOfDay(d)) / 86_400_000)
  const at = timeOnly.format(d)
  if (days === 0) return `today at ${at}`
  if (days === 1) return `yesterday at ${at}`
  if (days > 1 && days < 7) return `${weekday.format(d)} at ${at}`
  return `${dayOnly.format(d)} at ${at}`
}

function startOfDay(d: Date): number {
  return new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime()
}

/** "just now", "12 min ago", "3 h ago", "2 days ago". */
export function ago(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return 'never'
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000))
  if (s < 60) return 'just now'
  const m = Math.round(s / 60)
  if (m < 60) return `${m} min ago`
  const h = Math.round(m / 60)
  if (h < 48) return `${h} h ago`
  return `${Math.round(h / 24)} days ago`
}

export function percent(rate: number | null | undefined): string {
  return rate === null || rate === undefined ? '–' : `${Math.round(rate * 100)}%`
}

export function roleLabel(role: string): string {
  return role === 'provider' ? 'Care team' : role === 'admin' ? 'Administrator' : role === 'patient' ? 'Patient' : role === 'device' ? 'Device' : 'Care system'
}
