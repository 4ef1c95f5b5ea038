// Readings in plain words for patients: "Blood pressure 152/95, higher than your target",
// "Oxygen 97%, in your normal range". The comparison uses the patient's own limits (their
// threshold rules, with any override the care team set).
import type { PatientRule, ReadingValues } from '../api/types.ts'
import { num } from './format.ts'
import { assess } from './thresholds.ts'

const WORDS: Record<string, (v: ReadingValues) => string> = {
  blood_pressure: (v) => `Blood pressure ${num(v['systolicMmHg'])}/${num(v['diastolicMmHg'])}`,
  glucose: (v) => `Blood sugar ${num(v['glucoseMgDl'])} mg/dL`,
  spo2: (v) => `Oxygen ${num(v['spo2Percent'])}%`,
  heart_rate: (v) => `Heart rate ${num(v['heartRateBpm'])} beats a minute`,
  weight: (v) => `Weight ${num(v['weightKg'], 1)} kg`,
  temperature: (v) => `Temperature ${num(v['temperatureC'], 1)} °C`,
}

export function plainValue(type: string, values: ReadingValues): string {
  return (WORDS[type] ?? (() => 'A reading'))(values)
}

/** What the reading means against the patient's limits; empty when there is nothing to compare with. */
export function plainAssessment(type: string, values: ReadingValues, rules: PatientRule[] | undefined): string {
  if (!rules) return ''
  const a = assess(rules, type, values)
  if (!a) return ''
  if (a.level === 'normal') return 'in your normal range'
  return a.level === 'high' ? 'higher than your target' : 'lower than your target'
}

export function plainReading(type: string, values: ReadingValues, rules: PatientRule[] | undefined): string {
  const how = plainAssessment(type, values, rules)
  return how ? `${plainValue(type, values)}, ${how}` : plainValue(type, values)
}
