/**
 * Plausible readings for each demo patient (a baseline per patient, with the noise of home
 * devices), and the crises the demo plays now and then. Values are in what the device sends.
 */
import { Random, round } from '../../device-simulator/random.ts'
import { build, type ReadingPayload } from '../../device-simulator/readings.ts'
import type { DeviceKind } from '../../src/store/schema.ts'

interface Baseline {
  systolic: number
  diastolic: number
  pulse: number
  glucoseMgDl?: number
  /** Usual SpO2 range, both included. */
  spo2: [number, number]
  weightKg?: number
  weightUnit?: 'kg' | 'lb'
}

/** Per patient: treated hypertension runs a little higher, COPD saturates lower, and so on. */
const BASELINES: Record<string, Baseline> = {
  'demo-ada': { systolic: 128, diastolic: 80, pulse: 72, spo2: [95, 98], weightKg: 74.2 },
  'demo-ben': { systolic: 124, diastolic: 78, pulse: 76, glucoseMgDl: 135, spo2: [95, 98], weightKg: 96.5 },
  'demo-chloe': { systolic: 118, diastolic: 74, pulse: 86, spo2: [89, 93], weightKg: 61.0 },
  'demo-omar': { systolic: 112, diastolic: 70, pulse: 68, spo2: [94, 98], weightKg: 88.4, weightUnit: 'lb' },
}

const baseline = (patientId: string): Baseline => BASELINES[patientId] ?? { systolic: 120, diastolic: 78, pulse: 72, spo2: [95, 98], weightKg: 80 }

const lb = (kg: number) => round(kg / 0.45359237, 1)

/** A normal reading for this device (measured now), without seq. */
export function normalReading(patientId: string, kind: DeviceKind, rng: Random): ReadingPayload {
  const b = baseline(patientId)
  switch (kind) {
    case 'bp_cuff': {
      // Below the stage 2 lines (140/90) and the low line (90 systolic).
      const systolic = Math.round(rng.around(b.systolic, 5, b.systolic - 12, Math.min(b.systolic + 8, 136)))
      const diastolic = Math.round(rng.around(b.diastolic, 4, b.diastolic - 8, Math.min(b.diastolic + 6, 86)))
      return build.bloodPressure(systolic, Math.min(diastolic, systolic - 30), Math.round(rng.around(b.pulse, 4, b.pulse - 10, b.pulse + 12)))
    }
    case 'glucometer': {
      const mean = b.glucoseMgDl ?? 105
      return build.glucose(Math.round(rng.around(mean, 14, Math.max(85, mean - 30), Math.min(190, mean + 35))), 'mg/dL', {
        context: rng.pick(['fasting', 'before_meal', 'after_meal', 'bedtime'] as const),
      })
    }
    case 'oximeter':
      return build.spo2(rng.int(b.spo2[0], b.spo2[1]), Math.round(rng.around(b.pulse, 4, b.pulse - 10, b.pulse + 12)))
    case 'scale': {
      // Within ±0.2 kg of the baseline: the weight-gain rules (0.9 kg a day) stay quiet.
      const kg = round((b.weightKg ?? 80) + rng.around(0, 0.1, -0.2, 0.2), 1)
      return b.weightUnit === 'lb' ? build.weight(lb(kg), 'lb') : build.weight(kg, 'kg')
    }
    case 'thermometer':
      return build.temperature(round(rng.around(36.8, 0.2, 36.4, 37.2), 1), 'C')
    case 'hub':
      return build.heartRate(Math.round(rng.around(b.pulse, 4, b.pulse - 10, b.pulse + 12)))
  }
}

export interface Crisis {
  patientId: string
  kind: DeviceKind
  /** What the rule engine should make of it. */
  expect: string
  reading(rng: Random, first: boolean): { payload: ReadingPayload; shown: string }
}

/** The crises, in the order they come round. The first one is the hypertensive crisis of the first minute. */
export const CRISES: readonly Crisis[] = [
  {
    patientId: 'demo-ada',
    kind: 'bp_cuff',
    expect: 'urgent alert: hypertensive crisis',
    reading: (rng, first) => {
      const [s, d] = first ? [186, 112] : [rng.int(182, 198), rng.int(106, 118)]
      return { payload: build.bloodPressure(s, d, rng.int(88, 104)), shown: `blood pressure ${s}/${d} mmHg` }
    },
  },
  {
    patientId: 'demo-ben',
    kind: 'glucometer',
    expect: 'urgent alert: low blood glucose (ADA level 2)',
    reading: (rng) => {
      const v = rng.int(44, 51)
      return { payload: build.glucose(v, 'mg/dL', { context: 'before_meal' }), shown: `glucose ${v} mg/dL` }
    },
  },
  {
    patientId: 'demo-chloe',
    kind: 'oximeter',
    expect: 'urgent alert: low oxygen saturation (her own threshold, below 85%)',
    reading: (rng) => {
      const v = rng.int(82, 84)
      return { payload: build.spo2(v, rng.int(104, 116)), shown: `SpO2 ${v}%` }
    },
  },
  {
    patientId: 'demo-omar',
    kind: 'scale',
    expect: 'warning: weight gain of 2 lb or more in a day (heart failure)',
    reading: (rng) => {
      const kg = round((baseline('demo-omar').weightKg ?? 88) + rng.uniform(1.3, 1.7), 1)
      return { payload: build.weight(lb(kg), 'lb'), shown: `weight ${lb(kg)} lb (${kg} kg)` }
    },
  },
]
