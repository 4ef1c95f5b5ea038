/**
 * Generated reading payloads for fuzzing (fast-check): arbitrary JSON and bytes, and near-valid
 * readings of every type with one or more things wrong: wrong types, units and ranges, huge and
 * tiny numbers, number tokens JSON.parse turns into Infinity, NaN-ish strings, unicode,
 * date-times in every spelling the date-time format lets through, deep nesting, batches around
 * the batch limit. Payloads are text (or bytes) as a device would put them on the wire.
 */
import fc from 'fast-check'

/** The six types and their fields (docs/devices.md), with the plausible range of each value in the unit given first. */
const TYPES: Record<string, { fields: Array<[name: string, min: number, max: number, required: boolean]>; units: string[]; context?: string[] }> = {
  blood_pressure: { fields: [['systolic', 90, 180, true], ['diastolic', 50, 89, true], ['pulse', 40, 140, false]], units: ['mmHg', 'kPa'] },
  glucose: { fields: [['value', 60, 300, true]], units: ['mg/dL', 'mmol/L'], context: ['fasting', 'before_meal', 'after_meal', 'bedtime', 'random', 'unknown'] },
  spo2: { fields: [['value', 85, 100, true], ['pulse', 40, 140, false]], units: ['%'] },
  heart_rate: { fields: [['value', 40, 180, true]], units: ['bpm'] },
  weight: { fields: [['value', 40, 150, true]], units: ['kg', 'lb', 'g'] },
  temperature: { fields: [['value', 35, 40, true]], units: ['C', 'F'] },
}

/** A number token written into the JSON text as is (`1e999` parses to Infinity). */
const raw = (token: string) => `\u0000RAW:${token}\u0000`
/** JSON text with raw tokens put in place. */
export function toText(value: unknown): string {
  return JSON.stringify(value).replace(/"\\u0000RAW:(.*?)\\u0000"/g, (_, inner: string) => JSON.parse(`"${inner}"`) as string)
}

/** Nested arrays or objects, `depth` levels deep, as JSON text (a raw token). */
export function nested(depth: number, kind: 'array' | 'object'): string {
  return kind === 'array' ? '['.repeat(depth) + ']'.repeat(depth) : '{"a":'.repeat(depth) + '1' + '}'.repeat(depth)
}

const hugeOrTiny = fc.constantFrom(0, -0, 1e308, -1e308, 5e-324, -5e-324, Number.MAX_SAFE_INTEGER, 2 ** 53 + 2, -1, 49.99999, 300.0000001, 1000, 1e21)
const numberTokens = fc.constantFrom('1e999', '-1e999', '1E400', '-0.0', '0.000000000000000000000000000001', '123456789012345678901234567890')
const nanIsh = fc.constantFrom('NaN', 'Infinity', '-Infinity', '1e999', '120', ' 120', '120mmHg', '１２０', '', '0x78', 'null')
const oddJson = fc.constantFrom<unknown>(null, true, false, [], {}, [120], { value: 120 })
const unicode = fc.string({ unit: 'grapheme', maxLength: 40 })
const loneSurrogates = fc.string({ unit: 'binary', maxLength: 20 })

/** A value for a numeric field: mostly plausible, often not. */
function valueFor(min: number, max: number): fc.Arbitrary<unknown> {
  return fc.oneof(
    { weight: 24, arbitrary: fc.double({ min, max, noNaN: true }) },
    { weight: 6, arbitrary: fc.integer({ min: Math.ceil(min), max: Math.floor(max) }) },
    { weight: 2, arbitrary: fc.double({ noNaN: true, noDefaultInfinity: true }) },
    { weight: 2, arbitrary: hugeOrTiny },
    { weight: 1, arbitrary: numberTokens.map(raw) },
    { weight: 1, arbitrary: nanIsh },
    { weight: 1, arbitrary: oddJson },
    { weight: 1, arbitrary: unicode },
  )
}

/**
 * measuredAt in the spellings devices get wrong: separators, fractions, leap and out-of-range
 * seconds, every zone form (Z, z, +hh:mm, +hhmm, +hh, none), impossible dates, and junk.
 */
export const measuredAt: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 20, arbitrary: fc.integer({ min: -3 * 86_400_000, max: 60_000 }).map((ms) => new Date(Date.now() + ms).toISOString()) },
  {
    weight: 6,
    arbitrary: fc
      .record({
        daysAgo: fc.integer({ min: -2, max: 400 }),
        sep: fc.constantFrom('T', 't', ' ', '_', ''),
        time: fc.constantFrom('now', '23:59', '00:00', '24:00', '12:60', '07:30'),
        seconds: fc.constantFrom('ss', '60', '60.5', '59.999999999', '61', '', '00,5'),
        zone: fc.constantFrom('Z', 'z', '+00:00', '-05:30', '+05:45', '+0200', '+02', '-00:00', '', '+24:00', '+23:59', ' UTC', 'GMT'),
      })
      .map(({ daysAgo, sep, time, seconds, zone }) => {
        const iso = new Date(Date.now() - daysAgo * 86_400_000).toISOString()
        const hhmm = time === 'now' ? iso.slice(11, 16) : time
        const ss = seconds === 'ss' ? iso.slice(17, 23) : seconds
        return `${iso.slice(0, 10)}${sep}${hhmm}${ss ? `:${ss}` : ''}${zone}`
      }),
  },
  { weight: 1, arbitrary: fc.constantFrom('2026-02-30T10:00:00Z', '0000-01-01T00:00:00Z', '9999-12-31T23:59:59Z', '+275760-09-13T00:00:00Z', 'yesterday', '1795600800000', '') },
  { weight: 1, arbitrary: fc.oneof(fc.integer(), oddJson, unicode, loneSurrogates) },
)

const seq = fc.oneof(
  { weight: 10, arbitrary: fc.nat() },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(-1, 1.5, 2 ** 53, 2 ** 53 - 1, '7', null, true, [], raw('1e999')) },
)

const meta = fc.oneof(
  { weight: 6, arbitrary: fc.dictionary(fc.string({ maxLength: 12 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 5 }) },
  { weight: 1, arbitrary: fc.oneof(fc.jsonValue({ maxDepth: 2 }), unicode) },
  // Nesting deep enough to exhaust a recursive JSON.stringify (about 5,000 levels on Node 20).
  { weight: 1, arbitrary: fc.record({ depth: fc.integer({ min: 2, max: 7000 }), kind: fc.constantFrom<'array' | 'object'>('array', 'object') }).map(({ depth, kind }) => raw(nested(depth, kind))) },
)

/** `arb` one time in `n`, else null. */
const rarely = <T>(arb: fc.Arbitrary<T>, n: number): fc.Arbitrary<T | null> => fc.oneof({ weight: n - 1, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: arb })

const badType = fc.oneof(fc.constantFrom<unknown>('bloodPressure', 'GLUCOSE', 'heart_rate ', '', 'constructor', '__proto__', 'toString', null, 7, ['spo2']), unicode)

/** One reading object (as a JS value with raw tokens), of a random type with random faults. */
export const reading: fc.Arbitrary<Record<string, unknown>> = fc.constantFrom(...Object.keys(TYPES)).chain((type) => {
  const spec = TYPES[type]!
  return fc
    .record({
      values: fc.tuple(...spec.fields.map(([, min, max]) => valueFor(min, max))),
      dropped: fc.subarray(spec.fields.map(([name]) => name).concat(['unit', 'measuredAt', 'type'])),
      unit: fc.oneof({ weight: 8, arbitrary: fc.constantFrom(...spec.units) }, { weight: 1, arbitrary: fc.constantFrom<unknown>('mmhg', '°C', 'mg/dl', 'KG', ' bpm', 'percent', null, 5) }, { weight: 1, arbitrary: unicode }),
      measuredAt,
      seq: fc.option(seq, { freq: 8 }),
      context: rarely(fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...(spec.context ?? ['fasting'])) }, { weight: 1, arbitrary: unicode }), 3),
      meta: rarely(meta, 3),
      extra: rarely(fc.dictionary(fc.oneof(fc.string({ maxLength: 10 }), fc.constantFrom('__proto__', 'constructor', 'prototype')), fc.jsonValue({ maxDepth: 2 }), { minKeys: 1, maxKeys: 3 }), 8),
      wrongType: rarely(badType, 12),
      dropSome: fc.integer({ min: 1, max: 6 }).map((n) => n === 1),
    })
    .map(({ values, dropped, unit, measuredAt, seq, context, meta, extra, wrongType, dropSome }) => {
      const r: Record<string, unknown> = { type: wrongType ?? type }
      spec.fields.forEach(([name, , , required], i) => {
        if (required || i % 2 === 0 || values[i] !== undefined) r[name] = values[i]
      })
      r.unit = unit
      r.measuredAt = measuredAt
      if (seq !== null) r.seq = seq
      if (context !== null && spec.context) r.context = context
      if (meta !== null) r.meta = meta
      if (extra !== null) Object.assign(r, extra)
      // Most readings keep every required field; some lose one or more.
      if (dropSome && dropped.length > 0) for (const name of dropped.slice(0, 1 + (dropped.length % 2))) delete r[name]
      return r
    })
})

/** What a device may put in a readings PUBLISH: text mostly, bytes sometimes. */
export const payload: fc.Arbitrary<string | Uint8Array> = fc.oneof(
  { weight: 8, arbitrary: reading.map(toText) },
  { weight: 5, arbitrary: fc.array(reading, { minLength: 1, maxLength: 12 }).map(toText) },
  { weight: 1, arbitrary: fc.array(reading, { minLength: 198, maxLength: 203 }).map(toText) },
  { weight: 1, arbitrary: fc.constant('[]') },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v) ?? 'null') },
  { weight: 1, arbitrary: fc.string({ maxLength: 200 }) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 512 }) },
  {
    weight: 1,
    arbitrary: fc
      .record({ depth: fc.integer({ min: 1, max: 7000 }), kind: fc.constantFrom<'array' | 'object'>('array', 'object'), where: fc.constantFrom('payload', 'item', 'field') })
      .map(({ depth, kind, where }) => {
        const deep = nested(depth, kind)
        if (where === 'payload') return deep
        if (where === 'item') return `[${deep}]`
        return `{"type":"heart_rate","value":70,"unit":"bpm","measuredAt":"${new Date().toISOString()}","reading":${deep}}`
      }),
  },
)

export const payloadBytes = (p: string | Uint8Array): Buffer => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p))
