/**
 * Physiologically sensible values for simulated patients. Pure: a seeded `Random` in, numbers
 * out, in canonical units (mmHg, mg/dL, %, bpm, kg, °C). Conversion to what a device sends
 * (mmol/L, lb, °F) happens in scenarios.ts.
 */
import { Random, round } from './random.ts'

/** What stays the same for one simulated patient over a run. */
export interface PatientProfile {
  systolicOffsetMmHg: number
  diastolicOffsetMmHg: number
  restingPulseBpm: number
  baselineWeightKg: number
  /** Units this patient's devices report in: both kinds appear in a fleet of two or more. */
  glucoseUnit: 'mg/dL' | 'mmol/L'
  weightUnit: 'kg' | 'lb'
  temperatureUnit: 'C' | 'F'
}

export function makeProfile(rng: Random, index: number): PatientProfile {
  return {
    systolicOffsetMmHg: rng.around(0, 4, -8, 8),
    diastolicOffsetMmHg: rng.around(0, 3, -6, 6),
    restingPulseBpm: rng.around(70, 6, 58, 84),
    baselineWeightKg: round(rng.around(82, 14, 50, 130), 1),
    glucoseUnit: index % 2 === 0 ? 'mg/dL' : 'mmol/L',
    weightUnit: index % 2 === 0 ? 'kg' : 'lb',
    temperatureUnit: index % 3 === 2 ? 'F' : 'C',
  }
}

export interface BloodPressure {
  systolicMmHg: number
  diastolicMmHg: number
  pulseBpm: number
}

/**
 * normal: ~118/76 with noise, below the 2017 ACC/AHA "elevated" cut-off (120-129/<80 is allowed).
 * stage2: ACC/AHA stage 2 hypertension, >= 140 systolic or >= 90 diastolic, below crisis.
 * crisis: ACC/AHA hypertensive crisis, systolic > 180 and/or diastolic > 120.
 */
export type BpCondition = 'normal' | 'stage2' | 'crisis'

export function bloodPressure(rng: Random, p: PatientProfile, condition: BpCondition): BloodPressure {
  let systolic: number
  let diastolic: number
  let pulse: number
  switch (condition) {
    case 'normal':
      systolic = rng.around(118 + p.systolicOffsetMmHg, 6, 100, 129)
      diastolic = rng.around(76 + p.diastolicOffsetMmHg, 4, 62, 79)
      pulse = rng.around(p.restingPulseBpm, 5, 52, 96)
      break
    case 'stage2':
      systolic = rng.around(158, 9, 141, 178)
      diastolic = rng.around(98, 6, 90, 118)
      pulse = rng.around(p.restingPulseBpm + 8, 7, 60, 110)
      break
    case 'crisis':
      if (rng.chance(0.75)) {
        systolic = rng.uniform(182, 228)
        diastolic = rng.uniform(104, 128)
      } else {
        // Diastolic crisis with a systolic just under the line: the diastolic rule alone must fire.
        diastolic = rng.uniform(122, 134)
        systolic = rng.uniform(168, 179)
      }
      pulse = rng.around(p.restingPulseBpm + 15, 8, 70, 125)
      break
  }
  systolic = Math.round(systolic)
  diastolic = Math.round(diastolic)
  // A pulse pressure below ~25 mmHg is rare in a reading a cuff accepts.
  if (systolic - diastolic < 25) diastolic = systolic - 25
  return { systolicMmHg: systolic, diastolicMmHg: diastolic, pulseBpm: Math.round(pulse) }
}

/**
 * normal: 90-130 mg/dL (ADA pre-meal target 80-130).
 * level1: ADA level 1 hypoglycaemia, 54-69 mg/dL.
 * level2: ADA level 2 hypoglycaemia, < 54 mg/dL.
 */
export type GlucoseCondition = 'normal' | 'level1' | 'level2'

export function glucoseMgDl(rng: Random, condition: GlucoseCondition): number {
  switch (condition) {
    case 'normal':
      return Math.round(rng.around(110, 10, 90, 130))
    case 'level1':
      return Math.round(rng.uniform(56, 69))
    case 'level2':
      return Math.round(rng.uniform(38, 52))
  }
}

export const GLUCOSE_CONTEXTS = ['fasting', 'before_meal', 'after_meal', 'bedtime'] as const

/** normal 95-99 %; low 88-91 % (below the usual 92 % alert line); veryLow < 88 %. */
export type Spo2Condition = 'normal' | 'low' | 'veryLow'

export function spo2(rng: Random, p: PatientProfile, condition: Spo2Condition): { spo2Percent: number; pulseBpm: number } {
  switch (condition) {
    case 'normal':
      return { spo2Percent: rng.int(95, 99), pulseBpm: Math.round(rng.around(p.restingPulseBpm, 5, 52, 96)) }
    case 'low':
      return { spo2Percent: rng.int(88, 91), pulseBpm: Math.round(rng.around(p.restingPulseBpm + 18, 6, 75, 120)) }
    case 'veryLow':
      return { spo2Percent: rng.int(82, 87), pulseBpm: Math.round(rng.around(p.restingPulseBpm + 25, 7, 80, 130)) }
  }
}

/** normal 36.3-37.2 °C; fever >= 38.0 °C. */
export function temperatureC(rng: Random, condition: 'normal' | 'fever'): number {
  return condition === 'normal' ? round(rng.around(36.8, 0.25, 36.3, 37.2), 1) : round(rng.uniform(38.1, 39.6), 1)
}

export function heartRateBpm(rng: Random, p: PatientProfile, condition: 'normal' | 'tachycardia'): number {
  return Math.round(condition === 'normal' ? rng.around(p.restingPulseBpm, 5, 52, 96) : rng.uniform(112, 140))
}

/**
 * Weight gain in a heart-failure decompensation: stable for a few days, then fluid retention of
 * about 1 kg a day (clinics act on > 2 lb / 1 kg in a day or > 5 lb / 2 kg in a week).
 * `day` is the simulated day since the start of the episode.
 */
export const HF_STABLE_DAYS = 3
export const HF_GAIN_KG_PER_DAY = 1
export const HF_GAIN_DAYS = 7

export function hfExtraWeightKg(day: number): number {
  const gainingDays = Math.min(Math.max(day - HF_STABLE_DAYS, 0), HF_GAIN_DAYS)
  return gainingDays * HF_GAIN_KG_PER_DAY
}

/** A morning weight: baseline plus the episode's gain plus scale and hydration noise (±0.2 kg). */
export function weightKg(rng: Random, p: PatientProfile, condition: 'steady' | 'jump' | { hfDay: number }): number {
  const noise = rng.around(0, 0.15, -0.4, 0.4)
  if (condition === 'steady') return round(p.baselineWeightKg + noise, 1)
  if (condition === 'jump') return round(p.baselineWeightKg + rng.uniform(1.2, 2.0), 1)
  return round(p.baselineWeightKg + hfExtraWeightKg(condition.hfDay) + noise, 1)
}

const DAY_MS = 86_400_000
/** The gateway quarantines readings older than its ingest.maxAgeDays (365 by default): stay well inside. */
export const HF_MAX_SPAN_DAYS = 300
/** When the run does not say how many readings a scale will send, the episode spans this many days. */
export const HF_DEFAULT_PLANNED = 14

/**
 * Where the n-th weight reading (0-based) of a heart-failure scale sits in time. The episode is
 * compressed into the run: readings are spaced a simulated day apart (closer when a device sends
 * more than HF_MAX_SPAN_DAYS of them) and measuredAt is set back so the last planned reading is
 * today and the rise shows on a chart. Readings beyond the plan are measured now.
 */
export function hfSchedule(n: number, planned: number | undefined): { day: number; ageMs: number } {
  const plan = Math.max(1, Math.floor(planned ?? HF_DEFAULT_PLANNED))
  const spacingDays = Math.min(1, HF_MAX_SPAN_DAYS / plan)
  if (n >= plan) return { day: (plan - 1) * spacingDays + (n - plan + 1), ageMs: 0 }
  return { day: n * spacingDays, ageMs: Math.round((plan - 1 - n) * spacingDays * DAY_MS) }
}
