/**
 * Payloads the gateway must refuse, each the way a real device firmware gets it wrong, with the
 * error code the gateway answers on devices/{id}/errors (docs/devices.md). Pure.
 */
import type { ErrorCode } from '../src/errors.ts'
import type { ReadingType } from '../src/ingest/types.ts'
import type { ReadingPayload } from './readings.ts'

export interface InvalidCase {
  readonly name: string
  readonly code: ErrorCode
  /** 'item': one reading object, may sit in a batch and keeps its seq; 'payload': the whole PUBLISH is refused. */
  readonly level: 'item' | 'payload'
  readonly description: string
}

/** In the order a run cycles through them: the common firmware mistakes first. */
export const INVALID_CASES = [
  { name: 'bad-json', code: 'RPM_ERR_PAYLOAD_JSON', level: 'payload', description: 'the payload is cut off mid-object' },
  { name: 'unknown-type', code: 'RPM_ERR_READING_TYPE', level: 'item', description: 'a type name the contract does not have (e.g. "bloodPressure")' },
  { name: 'missing-field', code: 'RPM_ERR_READING_INVALID', level: 'item', description: 'a required field is left out (diastolic, value)' },
  { name: 'out-of-range', code: 'RPM_ERR_READING_IMPLAUSIBLE', level: 'item', description: 'a value outside physiological plausibility (systolic 350 mmHg, SpO2 104 %)' },
  { name: 'wrong-unit', code: 'RPM_ERR_READING_UNIT', level: 'item', description: 'a unit spelled the way the contract does not accept ("mg/dl", "mmhg")' },
  { name: 'batch-too-large', code: 'RPM_ERR_BATCH_TOO_LARGE', level: 'payload', description: 'one more reading in a batch than the gateway accepts' },
  { name: 'future-time', code: 'RPM_ERR_READING_TIME', level: 'item', description: 'measuredAt a day ahead (a device clock never set)' },
  { name: 'unknown-field', code: 'RPM_ERR_READING_INVALID', level: 'item', description: 'a device extra at the top level instead of under meta' },
  { name: 'local-time', code: 'RPM_ERR_READING_INVALID', level: 'item', description: 'measuredAt without a time zone' },
  { name: 'empty-batch', code: 'RPM_ERR_PAYLOAD_SHAPE', level: 'payload', description: 'an empty array' },
] as const satisfies readonly InvalidCase[]

export type InvalidCaseName = (typeof INVALID_CASES)[number]['name']

export function invalidCase(name: InvalidCaseName): InvalidCase {
  return INVALID_CASES.find((c) => c.name === name)!
}

const WRONG_TYPE: Record<ReadingType, string> = {
  blood_pressure: 'bloodPressure',
  glucose: 'blood_glucose',
  spo2: 'SpO2',
  heart_rate: 'pulse',
  weight: 'body_weight',
  temperature: 'body_temperature',
}

const WRONG_UNIT: Record<ReadingType, string> = {
  blood_pressure: 'mmhg',
  glucose: 'mg/dl',
  spo2: 'percent',
  heart_rate: 'BPM',
  weight: 'kgs',
  temperature: 'celsius',
}

/** Far beyond what the gateway accepts as plausible, in the reading's own unit. */
function outOfRange(r: ReadingPayload): ReadingPayload {
  switch (r.type as ReadingType) {
    case 'blood_pressure':
      return { ...r, systolic: r.unit === 'kPa' ? 46.7 : 350 }
    case 'glucose':
      return { ...r, value: r.unit === 'mmol/L' ? 66.6 : 1200 }
    case 'spo2':
      return { ...r, value: 104 }
    case 'heart_rate':
      return { ...r, value: 350 }
    case 'weight':
      return { ...r, value: r.unit === 'lb' ? 1433 : r.unit === 'g' ? 650_000 : 650 }
    case 'temperature':
      return { ...r, value: r.unit === 'F' ? 116.6 : 47 }
  }
}

/**
 * Turns a valid reading into the invalid item `name` describes; keeps its seq so the error on
 * devices/{id}/errors can be matched to it. `nowMs` places future-time readings.
 */
export function invalidItem(name: InvalidCaseName, valid: ReadingPayload, nowMs: number): Record<string, unknown> {
  const type = valid.type as ReadingType
  switch (name) {
    case 'unknown-type':
      return { ...valid, type: WRONG_TYPE[type] }
    case 'missing-field': {
      const { [type === 'blood_pressure' ? 'diastolic' : 'value']: _dropped, ...rest } = valid
      return rest
    }
    case 'out-of-range':
      return outOfRange(valid)
    case 'wrong-unit':
      return { ...valid, unit: WRONG_UNIT[type] }
    case 'future-time':
      return { ...valid, measuredAt: new Date(nowMs + 86_400_000).toISOString() }
    case 'unknown-field':
      return { ...valid, battery: 87 }
    case 'local-time':
      return { ...valid, measuredAt: new Date(nowMs).toISOString().slice(0, 19) }
    default:
      throw new Error(`${name} is a payload-level case`)
  }
}

/**
 * The MQTT payload for a payload-level case. `batch` supplies the items of an oversized batch
 * (one more than the gateway's maxBatchSize); the others only need one valid reading to spoil.
 */
export function invalidPayload(name: InvalidCaseName, valid: ReadingPayload, batch: () => unknown[]): string {
  switch (name) {
    case 'bad-json': {
      const text = JSON.stringify(valid)
      return text.slice(0, Math.ceil(text.length / 2))
    }
    case 'batch-too-large':
      return JSON.stringify(batch())
    case 'empty-batch':
      return '[]'
    default:
      throw new Error(`${name} is an item-level case`)
  }
}
