import { describe, expect, it } from 'vitest'
import { ReadingValidator } from '../../src/ingest/readings.ts'

const NOW = Date.parse('2026-11-25T08:00:00Z')
const at = '2026-11-25T07:30:00Z'
const validator = new ReadingValidator({ maxFutureSkewMs: 5 * 60_000, maxAgeMs: 365 * 86_400_000 })
const check = (r: unknown) => validator.check(r, NOW)

describe('valid readings are accepted in canonical units, keeping the original', () => {
  const cases: Array<[string, Record<string, unknown>, Record<string, unknown>]> = [
    ['blood pressure mmHg', { type: 'blood_pressure', systolic: 152, diastolic: 95, pulse: 78, unit: 'mmHg', measuredAt: at, seq: 42 }, { systolicMmHg: 152, diastolicMmHg: 95, pulseBpm: 78 }],
    ['blood pressure kPa', { type: 'blood_pressure', systolic: 16, diastolic: 10.7, unit: 'kPa', measuredAt: at }, { systolicMmHg: 120, diastolicMmHg: 80.3 }],
    ['glucose mmol/L', { type: 'glucose', value: 5.4, unit: 'mmol/L', context: 'fasting', measuredAt: at, seq: 43 }, { glucoseMgDl: 97.3, context: 'fasting' }],
    ['glucose mg/dL', { type: 'glucose', value: 54, unit: 'mg/dL', measuredAt: at }, { glucoseMgDl: 54 }],
    ['spo2', { type: 'spo2', value: 93, unit: '%', pulse: 88, measuredAt: at, seq: 44 }, { spo2Percent: 93, pulseBpm: 88 }],
    ['heart rate', { type: 'heart_rate', value: 72, unit: 'bpm', measuredAt: at, seq: 45 }, { heartRateBpm: 72 }],
    ['weight lb', { type: 'weight', value: 182.4, unit: 'lb', measuredAt: at, seq: 46 }, { weightKg: 82.735 }],
    ['weight kg', { type: 'weight', value: 82.7, unit: 'kg', measuredAt: at }, { weightKg: 82.7 }],
    ['weight g', { type: 'weight', value: 3500, unit: 'g', measuredAt: at }, { weightKg: 3.5 }],
    ['temperature C', { type: 'temperature', value: 38.2, unit: 'C', measuredAt: at, seq: 47 }, { temperatureC: 38.2 }],
    ['temperature F', { type: 'temperature', value: 100.4, unit: 'F', measuredAt: at }, { temperatureC: 38 }],
    ['device extras under meta', { type: 'heart_rate', value: 60, unit: 'bpm', measuredAt: at, meta: { battery: 80 } }, { heartRateBpm: 60 }],
    ['time zone offset normalised to UTC', { type: 'heart_rate', value: 60, unit: 'bpm', measuredAt: '2026-11-25T02:30:00-05:00' }, { heartRateBpm: 60 }],
  ]
  it.each(cases)('%s', (_name, input, values) => {
    const result = check(input)
    expect(result.ok).toBe(true)
    if (!result.ok) return
    expect(result.reading.values).toEqual(values)
    expect(result.reading.original).toEqual(input)
    expect(result.reading.type).toBe(input.type)
    expect(result.reading.measuredAt).toBe('2026-11-25T07:30:00.000Z')
    expect(result.reading.seq).toBe(input.seq ?? null)
  })
})

describe('invalid readings are refused with a code, the field, and what was expected', () => {
  const bp = { type: 'blood_pressure', systolic: 152, diastolic: 95, unit: 'mmHg', measuredAt: at }
  const cases: Array<[string, unknown, string, string | undefined, RegExp]> = [
    ['not an object', 42, 'RPM_ERR_READING_INVALID', '', /JSON object/],
    ['unknown type', { ...bp, type: 'cholesterol' }, 'RPM_ERR_READING_TYPE', '/type', /blood_pressure/],
    ['missing type', { value: 1 }, 'RPM_ERR_READING_TYPE', '/type', /type must be one of/],
    ['missing diastolic', { ...bp, diastolic: undefined }, 'RPM_ERR_READING_INVALID', '/diastolic', /missing field diastolic/],
    ['missing unit', { type: 'glucose', value: 100, measuredAt: at }, 'RPM_ERR_READING_INVALID', '/unit', /missing field unit/],
    ['missing measuredAt', { type: 'spo2', value: 97, unit: '%' }, 'RPM_ERR_READING_INVALID', '/measuredAt', /missing field measuredAt/],
    ['value as a string', { type: 'spo2', value: '97', unit: '%', measuredAt: at }, 'RPM_ERR_READING_INVALID', '/value', /value must be number/],
    ['wrong unit for glucose', { type: 'glucose', value: 100, unit: 'mg', measuredAt: at }, 'RPM_ERR_READING_UNIT', '/unit', /mg\/dL, mmol\/L/],
    ['wrong unit for temperature', { type: 'temperature', value: 37, unit: 'K', measuredAt: at }, 'RPM_ERR_READING_UNIT', '/unit', /C, F/],
    ['unknown field', { ...bp, colour: 'red' }, 'RPM_ERR_READING_INVALID', '/colour', /unknown field colour/],
    ['negative seq', { ...bp, seq: -1 }, 'RPM_ERR_READING_INVALID', '/seq', /seq/],
    ['bad date', { ...bp, measuredAt: 'yesterday' }, 'RPM_ERR_READING_INVALID', '/measuredAt', /ISO-8601/],
    ['systolic below diastolic', { ...bp, systolic: 80, diastolic: 95 }, 'RPM_ERR_READING_IMPLAUSIBLE', '/systolic', /greater than diastolic/],
    ['systolic out of range', { ...bp, systolic: 400 }, 'RPM_ERR_READING_IMPLAUSIBLE', '/systolic', /^systolic must be between 50 and 300 mmHg$/],
    ['pulse out of range', { ...bp, pulse: 5 }, 'RPM_ERR_READING_IMPLAUSIBLE', '/pulse', /^pulse must be between 20 and 300 bpm$/],
    ['SpO2 over 100', { type: 'spo2', value: 101, unit: '%', measuredAt: at }, 'RPM_ERR_READING_IMPLAUSIBLE', '/value', /between 50 and 100 %/],
    ['glucose implausible (mmol/L converted)', { type: 'glucose', value: 80, unit: 'mmol/L', measuredAt: at }, 'RPM_ERR_READING_IMPLAUSIBLE', '/value', /value must be between 10 and 1000 mg\/dL \(after conversion from mmol\/L\)/],
    ['glucose too low', { type: 'glucose', value: 2, unit: 'mg/dL', measuredAt: at }, 'RPM_ERR_READING_IMPLAUSIBLE', '/value', /between 10 and 1000/],
    ['temperature implausible', { type: 'temperature', value: 50, unit: 'C', measuredAt: at }, 'RPM_ERR_READING_IMPLAUSIBLE', '/value', /between 25 and 45/],
    ['temperature F implausible', { type: 'temperature', value: 120, unit: 'F', measuredAt: at }, 'RPM_ERR_READING_IMPLAUSIBLE', '/value', /value must be between 25 and 45 °C \(after conversion from F\)/],
    ['weight zero', { type: 'weight', value: 0, unit: 'kg', measuredAt: at }, 'RPM_ERR_READING_IMPLAUSIBLE', '/value', /value must be between 0.5 and 500 kg$/],
    ['heart rate implausible', { type: 'heart_rate', value: 500, unit: 'bpm', measuredAt: at }, 'RPM_ERR_READING_IMPLAUSIBLE', '/value', /value must be between 20 and 300 bpm$/],
    ['in the future', { ...bp, measuredAt: '2026-11-25T09:00:00Z' }, 'RPM_ERR_READING_TIME', '/measuredAt', /future/],
    ['too old', { ...bp, measuredAt: '2020-01-01T00:00:00Z' }, 'RPM_ERR_READING_TIME', '/measuredAt', /older/],
  ]
  it.each(cases)('%s', (_name, input, code, path, message) => {
    const result = check(input)
    expect(result.ok).toBe(false)
    if (result.ok) return
    expect(result.code).toBe(code)
    expect(result.path).toBe(path)
    expect(result.message).toMatch(message)
  })

  it('never echoes the measured value in the message', () => {
    const result = check({ type: 'blood_pressure', systolic: 287, diastolic: 291, unit: 'mmHg', measuredAt: at })
    expect(result.ok).toBe(false)
    if (!result.ok) expect(result.message).not.toMatch(/287|291/)
  })

  it('accepts a clock skew within the allowance', () => {
    expect(check({ ...bp, measuredAt: '2026-11-25T08:04:00Z' }).ok).toBe(true)
  })
})
