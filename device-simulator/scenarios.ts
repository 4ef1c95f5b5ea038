/**
 * Scenarios: which devices a run uses by default and what each of their PUBLISH payloads holds.
 * Pure: a device model (seeded random source, counters) and a clock value in, a payload and what
 * the gateway should make of it out.
 */
import type { ErrorCode } from '../src/errors.ts'
import type { ReadingType } from '../src/ingest/types.ts'
import type { DeviceKind } from '../src/store/schema.ts'
import { INVALID_CASES, invalidCase, invalidItem, invalidPayload, type InvalidCaseName } from './invalid.ts'
import { Random, round } from './random.ts'
import { build, type ReadingPayload } from './readings.ts'
import {
  bloodPressure,
  type BpCondition,
  GLUCOSE_CONTEXTS,
  type GlucoseCondition,
  glucoseMgDl,
  heartRateBpm,
  hfSchedule,
  type PatientProfile,
  spo2,
  type Spo2Condition,
  temperatureC,
  weightKg,
} from './vitals.ts'

export const SCENARIO_NAMES = [
  'normal',
  'hypertensive-crisis',
  'hypoglycaemia',
  'low-spo2',
  'hf-weight-gain',
  'offline',
  'invalid',
  'mixed',
] as const
export type ScenarioName = (typeof SCENARIO_NAMES)[number]

/** A fleet of single-purpose home devices, one of each kind in turn. */
export const FLEET: readonly DeviceKind[] = ['bp_cuff', 'glucometer', 'oximeter', 'scale', 'thermometer']

/** The reading types each device kind sends (a hub relays all of them in turn). */
export const KIND_TYPES: Record<DeviceKind, readonly ReadingType[]> = {
  bp_cuff: ['blood_pressure'],
  glucometer: ['glucose'],
  oximeter: ['spo2'],
  scale: ['weight'],
  thermometer: ['temperature'],
  hub: ['blood_pressure', 'glucose', 'spo2', 'weight', 'temperature', 'heart_rate'],
}

export interface ScenarioDefinition {
  readonly summary: string
  /** Device kinds used when --kind is not given. */
  readonly kinds: readonly DeviceKind[]
  /** The reading type the scenario is about; at least one device must measure it. */
  readonly needs?: ReadingType
  /** Devices drop off the network now and then and come back. */
  readonly offline: 'none' | 'all' | 'some'
}

export const SCENARIOS: Record<ScenarioName, ScenarioDefinition> = {
  normal: { summary: 'healthy readings from a mixed fleet', kinds: FLEET, offline: 'none' },
  'hypertensive-crisis': {
    summary: 'stage 2 hypertension, every 4th reading a crisis (> 180 systolic or > 120 diastolic)',
    kinds: ['bp_cuff'],
    needs: 'blood_pressure',
    offline: 'none',
  },
  hypoglycaemia: {
    summary: 'glucose < 70 mg/dL (ADA level 1), every 4th < 54 mg/dL (level 2), then a recovery',
    kinds: ['glucometer'],
    needs: 'glucose',
    offline: 'none',
  },
  'low-spo2': { summary: 'SpO2 88-91 %, every 3rd below 88 %', kinds: ['oximeter'], needs: 'spo2', offline: 'none' },
  'hf-weight-gain': {
    summary: 'weight steady for 3 days, then +1 kg a day for 7 days; measuredAt a simulated day apart',
    kinds: ['scale'],
    needs: 'weight',
    offline: 'none',
  },
  offline: {
    summary: 'healthy readings; devices drop off the network, queue readings and resend them on reconnect',
    kinds: FLEET,
    offline: 'all',
  },
  invalid: { summary: 'every payload invalid, cycling through the common firmware mistakes', kinds: FLEET, offline: 'none' },
  mixed: {
    summary: 'mostly healthy, 15 % abnormal, 5 % invalid; one device in 7 drops off now and then',
    kinds: FLEET,
    offline: 'some',
  },
}

/** One simulated device's state as far as its payloads are concerned. */
export interface DeviceModel {
  readonly deviceId: string
  readonly kind: DeviceKind
  /** Position in the run's device list: sets the patient's units and who goes offline in `mixed`. */
  readonly index: number
  readonly profile: PatientProfile
  readonly rng: Random
  /** The seq the next reading carries; the gateway dedupes on device + type + measuredAt + seq. */
  nextSeq: number
  /** Readings built so far per type (drives the scenario's patterns). */
  readonly built: Partial<Record<ReadingType, number>>
  typeCursor: number
  /** How many weight readings this device will send, when the run knows (places hf-weight-gain readings in time). */
  plannedWeightReadings?: number
  /** A payload-level invalid case drawn while filling a batch: it goes out alone, next. */
  deferred?: InvalidCaseName
}

export interface ExpectedError {
  code: ErrorCode
  case: InvalidCaseName
  /** Set when the refused reading carried a seq the gateway echoes back. */
  seq?: number
}

export interface PlannedPublish {
  /** The MQTT payload. */
  payload: string
  /** Readings (or whole refused payloads) it holds: each gets stored or answered with one error. */
  units: number
  /** Of those, how many the gateway should store. */
  valid: number
  errors: ExpectedError[]
}

export interface PlanContext {
  scenario: ScenarioName
  nowMs: number
  /** Readings per PUBLISH (an array when above 1). */
  batch: number
  /** The gateway's ingest.maxBatchSize: the batch-too-large case sends one more. */
  maxBatchSize: number
  /** The next invalid case; shared across devices so a short run still covers every case. */
  nextInvalidCase(): InvalidCaseName
}

/** The size of a QoS 1 PUBLISH to devices/{id}/readings [MQTT-3.3]: fixed header, topic, packet id, payload. */
export function publishBytes(deviceId: string, payload: string): number {
  const body = 2 + Buffer.byteLength(`devices/${deviceId}/readings`) + 2 + Buffer.byteLength(payload)
  const lengthBytes = body < 128 ? 1 : body < 16_384 ? 2 : body < 2_097_152 ? 3 : 4
  return 1 + lengthBytes + body
}

/** Builds a device's next PUBLISH. */
export function planPublish(d: DeviceModel, ctx: PlanContext): PlannedPublish {
  const items: Record<string, unknown>[] = []
  const errors: ExpectedError[] = []
  let valid = 0
  const size = Math.max(1, ctx.batch)
  // Several readings in one PUBLISH were measured apart: a minute between them, the last now.
  const at = (i: number) => ctx.nowMs - (size - 1 - i) * 60_000

  if (d.deferred) {
    const name = d.deferred
    delete d.deferred
    return payloadLevel(d, ctx, name)
  }
  for (let i = 0; i < size; i++) {
    const mode = modeFor(d, ctx)
    if (mode.kind === 'invalid') {
      const c = invalidCase(mode.name)
      if (c.level === 'payload') {
        if (items.length === 0) return payloadLevel(d, ctx, mode.name)
        d.deferred = mode.name
        break
      }
      const reading = nextReading(d, ctx.scenario, 'normal', at(i))
      items.push(invalidItem(mode.name, reading, ctx.nowMs))
      errors.push({ code: c.code, case: mode.name, seq: reading.seq! })
    } else {
      items.push(nextReading(d, ctx.scenario, mode.kind, at(i)))
      valid++
    }
  }
  const payload = ctx.batch > 1 ? JSON.stringify(items) : JSON.stringify(items[0])
  return { payload, units: items.length, valid, errors }
}

function payloadLevel(d: DeviceModel, ctx: PlanContext, name: InvalidCaseName): PlannedPublish {
  const c = invalidCase(name)
  const base = nextReading(d, ctx.scenario, 'normal', ctx.nowMs)
  // The gateway counts a batch before it looks inside, so the oversized one holds empty objects:
  // full readings would soon exceed the gateway's packet limit (mqtt.maxPacketBytes), which
  // closes the connection instead of answering.
  const payload = invalidPayload(name, base, () => Array.from({ length: ctx.maxBatchSize + 1 }, () => ({})))
  return { payload, units: 1, valid: 0, errors: [{ code: c.code, case: name }] }
}

type Mode = { kind: 'normal' | 'abnormal' | 'scenario' } | { kind: 'invalid'; name: InvalidCaseName }

function modeFor(d: DeviceModel, ctx: PlanContext): Mode {
  switch (ctx.scenario) {
    case 'normal':
    case 'offline':
      return { kind: 'normal' }
    case 'invalid':
      return { kind: 'invalid', name: ctx.nextInvalidCase() }
    case 'mixed': {
      const r = d.rng.next()
      if (r < 0.05) return { kind: 'invalid', name: ctx.nextInvalidCase() }
      return { kind: r < 0.2 ? 'abnormal' : 'normal' }
    }
    default:
      return { kind: 'scenario' }
  }
}

/**
 * The device's next valid reading. `mode` 'scenario' follows the scenario's pattern for the
 * type it is about; other types stay healthy.
 */
export function nextReading(d: DeviceModel, scenario: ScenarioName, mode: 'normal' | 'abnormal' | 'scenario', measuredAtMs: number): ReadingPayload {
  const types = KIND_TYPES[d.kind]
  const type = types[d.typeCursor++ % types.length]!
  const n = d.built[type] ?? 0
  d.built[type] = n + 1
  const seq = d.nextSeq++
  const about = SCENARIOS[scenario].needs === type && mode === 'scenario'
  const abnormal = mode === 'abnormal'
  const { rng, profile: p } = d
  const extra = (at: number) => ({ seq, measuredAt: new Date(at).toISOString() })

  switch (type) {
    case 'blood_pressure': {
      const condition: BpCondition = about ? (n % 4 === 3 ? 'crisis' : 'stage2') : abnormal ? rng.pick(['stage2', 'crisis'] as const) : 'normal'
      const bp = bloodPressure(rng, p, condition)
      return build.bloodPressure(bp.systolicMmHg, bp.diastolicMmHg, bp.pulseBpm, extra(measuredAtMs))
    }
    case 'glucose': {
      const pattern: GlucoseCondition[] = ['level1', 'level1', 'level2', 'normal']
      const condition: GlucoseCondition = about ? pattern[n % 4]! : abnormal ? rng.pick(['level1', 'level2'] as const) : 'normal'
      const mgDl = glucoseMgDl(rng, condition)
      // 1 mmol/L = 18.0156 mg/dL (glucose, 180.156 g/mol); meters show one decimal.
      const value = p.glucoseUnit === 'mmol/L' ? round(mgDl / 18.0156, 1) : mgDl
      return build.glucose(value, p.glucoseUnit, { context: rng.pick(GLUCOSE_CONTEXTS), ...extra(measuredAtMs) })
    }
    case 'spo2': {
      const pattern: Spo2Condition[] = ['low', 'low', 'veryLow']
      const condition: Spo2Condition = about ? pattern[n % 3]! : abnormal ? rng.pick(['low', 'veryLow'] as const) : 'normal'
      const s = spo2(rng, p, condition)
      return build.spo2(s.spo2Percent, s.pulseBpm, extra(measuredAtMs))
    }
    case 'weight': {
      let kg: number
      let at = measuredAtMs
      if (about) {
        const slot = hfSchedule(n, d.plannedWeightReadings)
        kg = weightKg(rng, p, { hfDay: slot.day })
        at = measuredAtMs - slot.ageMs
      } else {
        kg = weightKg(rng, p, abnormal ? 'jump' : 'steady')
      }
      const value = p.weightUnit === 'lb' ? round(kg / 0.45359237, 1) : kg
      return build.weight(value, p.weightUnit, extra(at))
    }
    case 'temperature': {
      const c = temperatureC(rng, abnormal ? 'fever' : 'normal')
      const value = p.temperatureUnit === 'F' ? round((c * 9) / 5 + 32, 1) : c
      return build.temperature(value, p.temperatureUnit, extra(measuredAtMs))
    }
    case 'heart_rate':
      return build.heartRate(heartRateBpm(rng, p, abnormal ? 'tachycardia' : 'normal'), extra(measuredAtMs))
  }
}

/** A shared round-robin over the invalid cases. */
export function invalidCycle(start = 0): () => InvalidCaseName {
  let i = start
  return () => INVALID_CASES[i++ % INVALID_CASES.length]!.name
}

/** Kinds that cannot play the scenario, or a message naming the kinds that can. */
export function checkKinds(scenario: ScenarioName, kinds: readonly DeviceKind[]): string | null {
  const needs = SCENARIOS[scenario].needs
  if (!needs || kinds.some((k) => KIND_TYPES[k].includes(needs))) return null
  const able = (Object.keys(KIND_TYPES) as DeviceKind[]).filter((k) => KIND_TYPES[k].includes(needs))
  return `scenario ${scenario} needs a device that measures ${needs}: --kind ${able.join(' or ')}`
}

/**
 * Whether the device at `index` drops off the network in this scenario. In `mixed`, one in 7:
 * 7 is coprime with the fleet's 5 kinds, so the flaky ones are of every kind.
 */
export function goesOffline(scenario: ScenarioName, index: number): boolean {
  const o = SCENARIOS[scenario].offline
  return o === 'all' || (o === 'some' && index % 7 === 3)
}

/**
 * The next stretch of a flaky device's life: online for a while, then offline for a while.
 * The first online stretch is short so even a few-second run sees a drop.
 */
export function connectivityWindow(rng: Random, first: boolean): { onlineMs: number; offlineMs: number } {
  return {
    onlineMs: Math.round(first ? rng.uniform(800, 2500) : rng.uniform(4000, 10_000)),
    offlineMs: Math.round(rng.uniform(1500, 4500)),
  }
}
