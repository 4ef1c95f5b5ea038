import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv'
import addFormats from 'ajv-formats'
import type { ErrorCode } from '../errors.ts'
import { type CanonicalValues, type NormalisedReading, READING_TYPES, type ReadingType } from './types.ts'

/** Fields every reading may carry. */
const common = {
  type: { type: 'string' },
  measuredAt: { type: 'string', format: 'date-time' },
  seq: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
  /** Device extras (battery, firmware): kept with the original, never interpreted. */
  meta: { type: 'object' },
} as const

const num = { type: 'number' } as const
const pulse = { type: 'number' } as const

/** The payload contract of docs/devices.md: explicit units, no unknown fields. */
const schemas: Record<ReadingType, object> = {
  blood_pressure: {
    type: 'object',
    additionalProperties: false,
    required: ['type', 'systolic', 'diastolic', 'unit', 'measuredAt'],
    properties: { ...common, systolic: num, diastolic: num, pulse, unit: { enum: ['mmHg', 'kPa'] } },
  },
  glucose: {
    type: 'object',
    additionalProperties: false,
    required: ['type', 'value', 'unit', 'measuredAt'],
    properties: {
      ...common,
      value: num,
      unit: { enum: ['mg/dL', 'mmol/L'] },
      context: { enum: ['fasting', 'before_meal', 'after_meal', 'bedtime', 'random', 'unknown'] },
    },
  },
  spo2: {
    type: 'object',
    additionalProperties: false,
    required: ['type', 'value', 'unit', 'measuredAt'],
    properties: { ...common, value: num, unit: { enum: ['%'] }, pulse },
  },
  heart_rate: {
    type: 'object',
    additionalProperties: false,
    required: ['type', 'value', 'unit', 'measuredAt'],
    properties: { ...common, value: num, unit: { enum: ['bpm'] } },
  },
  weight: {
    type: 'object',
    additionalProperties: false,
    required: ['type', 'value', 'unit', 'measuredAt'],
    properties: { ...common, value: num, unit: { enum: ['kg', 'lb', 'g'] } },
  },
  temperature: {
    type: 'object',
    additionalProperties: false,
    required: ['type', 'value', 'unit', 'measuredAt'],
    properties: { ...common, value: num, unit: { enum: ['C', 'F'] } },
  },
}

// Conversion factors to canonical units.
const MMHG_PER_KPA = 7.50062
// Glucose molar mass 180.156 g/mol: 1 mmol/L = 18.0156 mg/dL.
const MGDL_PER_MMOLL = 18.0156
const KG_PER_LB = 0.45359237

/** Physiological plausibility in canonical units: beyond these a value is a device or entry fault. */
export const PLAUSIBLE = {
  systolicMmHg: [50, 300],
  diastolicMmHg: [20, 200],
  pulseBpm: [20, 300],
  glucoseMgDl: [10, 1000],
  spo2Percent: [50, 100],
  heartRateBpm: [20, 300],
  weightKg: [0.5, 500],
  temperatureC: [25, 45],
} as const satisfies Record<string, readonly [number, number]>

const CANONICAL_UNIT: Record<keyof typeof PLAUSIBLE, string> = {
  systolicMmHg: 'mmHg',
  diastolicMmHg: 'mmHg',
  pulseBpm: 'bpm',
  glucoseMgDl: 'mg/dL',
  spo2Percent: '%',
  heartRateBpm: 'bpm',
  weightKg: 'kg',
  temperatureC: '°C',
}

export interface ReadingLimits {
  maxFutureSkewMs: number
  maxAgeMs: number
}

export type CheckResult =
  | { ok: true; reading: NormalisedReading }
  | { ok: false; code: ErrorCode; message: string; path?: string }

const round = (n: number, digits: number) => Math.round(n * 10 ** digits) / 10 ** digits

export class ReadingValidator {
  readonly #validators: Map<string, ValidateFunction>

  constructor(private readonly limits: ReadingLimits) {
    const ajv = new Ajv({ allErrors: false, strict: true })
    addFormats.default(ajv, ['date-time'])
    this.#validators = new Map(READING_TYPES.map((t) => [t, ajv.compile(schemas[t])]))
  }

  /** Validates one reading object and converts it to canonical units. `now` is epoch ms. */
  check(input: unknown, now: number): CheckResult {
    if (input === null || typeof input !== 'object' || Array.isArray(input)) {
      return { ok: false, code: 'RPM_ERR_READING_INVALID', message: 'a reading must be a JSON object', path: '' }
    }
    const obj = input as Record<string, unknown>
    const validate = typeof obj.type === 'string' ? this.#validators.get(obj.type) : undefined
    if (!validate) {
      return {
        ok: false,
        code: 'RPM_ERR_READING_TYPE',
        message: `type must be one of ${READING_TYPES.join(', ')}`,
        path: '/type',
      }
    }
    if (!validate(obj)) return fromAjv(validate.errors?.[0])

    const measured = Date.parse(obj.measuredAt as string)
    if (measured > now + this.limits.maxFutureSkewMs) {
      return { ok: false, code: 'RPM_ERR_READING_TIME', message: 'measuredAt is in the future beyond the allowed clock skew', path: '/measuredAt' }
    }
    if (measured < now - this.limits.maxAgeMs) {
      return { ok: false, code: 'RPM_ERR_READING_TIME', message: 'measuredAt is older than the gateway accepts', path: '/measuredAt' }
    }

    const values = canonical(obj as Record<string, any>)
    for (const [key, value] of Object.entries(values)) {
      const range = PLAUSIBLE[key as keyof typeof PLAUSIBLE]
      if (range && typeof value === 'number' && (value < range[0] || value > range[1])) {
        const field = sourceField(key)
        const unit = CANONICAL_UNIT[key as keyof typeof PLAUSIBLE]
        const converted = field !== 'pulse' && obj.unit !== unit && !(unit === '°C' && obj.unit === 'C')
        return {
          ok: false,
          code: 'RPM_ERR_READING_IMPLAUSIBLE',
          message: `${field} must be between ${range[0]} and ${range[1]} ${unit}${converted ? ` (after conversion from ${obj.unit})` : ''}`,
          path: `/${field}`,
        }
      }
    }
    if ('systolicMmHg' in values && values.systolicMmHg <= values.diastolicMmHg) {
      return { ok: false, code: 'RPM_ERR_READING_IMPLAUSIBLE', message: 'systolic must be greater than diastolic', path: '/systolic' }
    }

    return {
      ok: true,
      reading: {
        type: obj.type as ReadingType,
        seq: typeof obj.seq === 'number' ? obj.seq : null,
        measuredAt: new Date(measured).toISOString(),
        values,
        original: obj,
      },
    }
  }
}

function sourceField(canonicalKey: string): string {
  switch (canonicalKey) {
    case 'systolicMmHg': return 'systolic'
    case 'diastolicMmHg': return 'diastolic'
    case 'pulseBpm': return 'pulse'
    default: return 'value'
  }
}

function canonical(r: Record<string, any>): CanonicalValues {
  switch (r.type as ReadingType) {
    case 'blood_pressure': {
      const f = r.unit === 'kPa' ? MMHG_PER_KPA : 1
      const v: CanonicalValues = { systolicMmHg: round(r.systolic * f, 1), diastolicMmHg: round(r.diastolic * f, 1) }
      if (r.pulse !== undefined) v.pulseBpm = r.pulse
      return v
    }
    case 'glucose': {
      const v: CanonicalValues = { glucoseMgDl: r.unit === 'mmol/L' ? round(r.value * MGDL_PER_MMOLL, 1) : r.value }
      if (r.context !== undefined) v.context = r.context
      return v
    }
    case 'spo2': {
      const v: CanonicalValues = { spo2Percent: r.value }
      if (r.pulse !== undefined) v.pulseBpm = r.pulse
      return v
    }
    case 'heart_rate':
      return { heartRateBpm: r.value }
    case 'weight':
      return { weightKg: r.unit === 'lb' ? round(r.value * KG_PER_LB, 3) : r.unit === 'g' ? r.value / 1000 : r.value }
    case 'temperature':
      return { temperatureC: r.unit === 'F' ? round(((r.value - 32) * 5) / 9, 2) : r.value }
  }
}

function fromAjv(error: ErrorObject | undefined): CheckResult {
  if (!error) return { ok: false, code: 'RPM_ERR_READING_INVALID', message: 'the reading is invalid' }
  const path = error.instancePath
  switch (error.keyword) {
    case 'required':
      return {
        ok: false,
        code: 'RPM_ERR_READING_INVALID',
        message: `missing field ${error.params.missingProperty}`,
        path: `/${error.params.missingProperty}`,
      }
    case 'additionalProperties':
      return {
        ok: false,
        code: 'RPM_ERR_READING_INVALID',
        message: `unknown field ${error.params.additionalProperty} (device extras belong under meta)`,
        path: `/${error.params.additionalProperty}`,
      }
    case 'enum': {
      const field = path.slice(1)
      const allowed = (error.params.allowedValues as string[]).join(', ')
      return {
        ok: false,
        code: field === 'unit' ? 'RPM_ERR_READING_UNIT' : 'RPM_ERR_READING_INVALID',
        message: `${field} must be one of ${allowed}`,
        path,
      }
    }
    case 'format':
      return { ok: false, code: 'RPM_ERR_READING_INVALID', message: `${path.slice(1)} must be an ISO-8601 date-time with a time zone`, path }
    default:
      return { ok: false, code: 'RPM_ERR_READING_INVALID', message: `${path.slice(1) || 'reading'} ${error.message ?? 'is invalid'}`, path }
  }
}
