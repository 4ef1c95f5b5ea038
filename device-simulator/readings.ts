/**
 * Reading builders shared by the simulator, the tests and the benchmarks: payloads exactly as
 * docs/devices.md describes them.
 */
export type ReadingPayload = Record<string, unknown> & { type: string; measuredAt: string; seq?: number }

const iso = (at: Date | number = Date.now()) => new Date(at).toISOString()

export const build = {
  bloodPressure: (systolic: number, diastolic: number, pulse?: number, extra: Partial<ReadingPayload> = {}): ReadingPayload => ({
    type: 'blood_pressure',
    systolic,
    diastolic,
    ...(pulse === undefined ? {} : { pulse }),
    unit: 'mmHg',
    measuredAt: iso(),
    ...extra,
  }),
  glucose: (value: number, unit: 'mg/dL' | 'mmol/L' = 'mg/dL', extra: Partial<ReadingPayload> = {}): ReadingPayload => ({
    type: 'glucose',
    value,
    unit,
    context: 'fasting',
    measuredAt: iso(),
    ...extra,
  }),
  spo2: (value: number, pulse?: number, extra: Partial<ReadingPayload> = {}): ReadingPayload => ({
    type: 'spo2',
    value,
    unit: '%',
    ...(pulse === undefined ? {} : { pulse }),
    measuredAt: iso(),
    ...extra,
  }),
  heartRate: (value: number, extra: Partial<ReadingPayload> = {}): ReadingPayload => ({
    type: 'heart_rate',
    value,
    unit: 'bpm',
    measuredAt: iso(),
    ...extra,
  }),
  weight: (value: number, unit: 'kg' | 'lb' = 'kg', extra: Partial<ReadingPayload> = {}): ReadingPayload => ({
    type: 'weight',
    value,
    unit,
    measuredAt: iso(),
    ...extra,
  }),
  temperature: (value: number, unit: 'C' | 'F' = 'C', extra: Partial<ReadingPayload> = {}): ReadingPayload => ({
    type: 'temperature',
    value,
    unit,
    measuredAt: iso(),
    ...extra,
  }),
}

/** The reading type each device kind measures. */
export const KIND_READINGS: Record<string, Array<keyof typeof build>> = {
  bp_cuff: ['bloodPressure'],
  glucometer: ['glucose'],
  oximeter: ['spo2'],
  scale: ['weight'],
  thermometer: ['temperature'],
  hub: ['bloodPressure', 'glucose', 'spo2', 'weight', 'temperature', 'heartRate'],
}
