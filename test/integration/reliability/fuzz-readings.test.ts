/**
 * Fuzzed readings (fast-check). The property a device relies on: every payload it publishes is
 * acknowledged and ends either stored or quarantined with a code and a message (answered on
 * devices/{id}/errors), and nothing throws. Stored readings hold only plausible, finite values.
 *
 * 1. The property, 300 runs, against the real Ingest (validation, group commit, SQLite journal)
 *    in this process: fast, and an exception is a counterexample instead of a dead worker.
 * 2. A sample of the same payloads over a real MQTT/TLS connection to the `rpm-gateway start`
 *    command: acknowledged, stored or quarantined, answered on the errors topic, device connected.
 * 3. The payloads the fuzzer found that crash or jam the gateway, over MQTT (findings).
 *
 * Seed: FUZZ_SEED (fixed by default, printed with any counterexample).
 */
import { rmSync } from 'node:fs'
import SQLite from 'better-sqlite3'
import fc from 'fast-check'
import mqtt, { type MqttClient } from 'mqtt'
import pino from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { build } from '../../../device-simulator/readings.ts'
import { systemClock } from '../../../src/clock.ts'
import { loadConfig } from '../../../src/config/load.ts'
import { EventBus } from '../../../src/events.ts'
import { Ingest } from '../../../src/ingest/ingest.ts'
import { createMetrics } from '../../../src/metrics.ts'
import { Registry } from '../../../src/registry/registry.ts'
import { databaseFile, openStore, type Store } from '../../../src/store/db.ts'
import { tempDir, waitFor } from '../../helpers.ts'
import { caOf, cleanEnv, GatewayProcess, provisionOffline, type ProvisionedDevice } from './harness.ts'
import { nested, payload, payloadBytes } from './payloads.ts'

const SEED = Number(process.env.FUZZ_SEED ?? 20261125)

let store: Store | undefined
let gateway: GatewayProcess | undefined
let clients: MqttClient[] = []
let dirs: string[] = []

afterEach(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)))
  clients = []
  await gateway?.kill('SIGKILL')
  gateway = undefined
  await store?.close()
  store = undefined
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
  dirs = []
})

/** The codes docs/devices.md lists for a quarantined payload or reading. */
const QUARANTINE_CODES = new Set([
  'RPM_ERR_PAYLOAD_JSON', 'RPM_ERR_PAYLOAD_SHAPE', 'RPM_ERR_BATCH_TOO_LARGE', 'RPM_ERR_READING_TYPE',
  'RPM_ERR_READING_INVALID', 'RPM_ERR_READING_UNIT', 'RPM_ERR_READING_IMPLAUSIBLE', 'RPM_ERR_READING_TIME',
])

/** docs/devices.md, Plausibility: accepted ranges in canonical units. */
const PLAUSIBLE: Record<string, [number, number]> = {
  systolicMmHg: [50, 300], diastolicMmHg: [20, 200], pulseBpm: [20, 300], glucoseMgDl: [10, 1000],
  spo2Percent: [50, 100], heartRateBpm: [20, 300], weightKg: [0.5, 500], temperatureC: [25, 45],
}

/** Codes that set a whole payload aside with one record (docs/devices.md, Errors). */
const PAYLOAD_CODES = new Set(['RPM_ERR_PAYLOAD_JSON', 'RPM_ERR_PAYLOAD_SHAPE', 'RPM_ERR_BATCH_TOO_LARGE'])

/** How many outcomes (stored, duplicate or quarantined) a payload has: one per reading, or one for the whole payload. */
function expectedOutcomes(bytes: Buffer, maxBatch: number): { items: number; wholePayload: boolean } {
  let body: unknown
  try {
    body = JSON.parse(bytes.toString('utf8'))
  } catch {
    return { items: 1, wholePayload: true }
  }
  if (Array.isArray(body)) return body.length === 0 || body.length > maxBatch ? { items: 1, wholePayload: true } : { items: body.length, wholePayload: false }
  return body !== null && typeof body === 'object' ? { items: 1, wholePayload: false } : { items: 1, wholePayload: true }
}

/**
 * The property for one acknowledged payload: each reading stored (or a duplicate) or quarantined
 * with a documented code and a message, or the whole payload quarantined with one record.
 */
function outcomeProblem(bytes: Buffer, stored: number, duplicates: number, quarantined: Array<{ code: string; message: string }>): string | undefined {
  for (const q of quarantined) {
    if (!QUARANTINE_CODES.has(q.code) || typeof q.message !== 'string' || q.message.length === 0) return `quarantined without a documented code and a message: ${JSON.stringify(q)}`
  }
  const whole = quarantined.length === 1 && stored === 0 && duplicates === 0 && PAYLOAD_CODES.has(quarantined[0]!.code)
  const expected = expectedOutcomes(bytes, 200)
  if (expected.wholePayload) return whole ? undefined : `a payload refused as a whole needs one quarantine record, got ${stored} stored, ${quarantined.length} quarantined`
  if (whole || stored + duplicates + quarantined.length === expected.items) return undefined
  return `${expected.items} outcomes expected, got ${stored} stored, ${duplicates} duplicates, ${quarantined.length} quarantined`
}

interface StoredRow {
  id: number
  values_json: string
  measured_at: string
}

function storedPlausibly(rows: StoredRow[]): string | undefined {
  for (const r of rows) {
    if (!Number.isFinite(Date.parse(r.measured_at))) return `stored measured_at ${r.measured_at}`
    const values = JSON.parse(r.values_json) as Record<string, unknown>
    for (const [key, v] of Object.entries(values)) {
      const range = PLAUSIBLE[key]
      if (!range) continue
      if (typeof v !== 'number' || !Number.isFinite(v) || v < range[0] || v > range[1]) return `stored ${key}=${String(v)}`
    }
  }
  return undefined
}

describe('fuzzed readings', () => {
  // FINDING (fails until fixed): the property finds payloads that make Ingest.submit throw
  // (a measuredAt the date-time format accepts but Date.parse does not, e.g. "...T23:59:60Z" or
  // "...T10:00:00+02"; an invalid reading nested deeper than JSON.stringify's stack allows), and
  // a valid batch reading with deeply nested meta whose commit fails. See the third test.
  it('every payload is stored or quarantined with a code and message; nothing throws (Ingest, 300 runs)', async () => {
    const dir = tempDir('rpm-fuzz-')
    dirs.push(dir)
    const config = loadConfig({ env: {}, overrides: { dataDir: dir } as never })
    store = await openStore(dir)
    const registry = new Registry(store.db, systemClock)
    const patient = await registry.addPatient({ name: 'Fuzz Patient', timezone: 'UTC' })
    const device = await registry.addDevice({ patientId: patient.id, id: 'fuzz-cuff' })
    const bus = new EventBus()
    const metrics = createMetrics()
    const ingest = new Ingest(config.ingest, store, bus, systemClock, metrics, pino({ level: 'silent' }))
    const identity = { deviceId: device.id, patientId: patient.id, kind: 'bp_cuff' }
    const answered: Array<{ code: string; message: string }> = []
    bus.on('reading.quarantined', (e) => answered.push({ code: e.code, message: e.message }))
    const sqlite = store.sqlite
    const lastId = (table: string) => (sqlite.prepare(`SELECT coalesce(max(id), 0) AS n FROM ${table}`).get() as { n: number }).n
    const duplicates = async () => (await metrics.readingsDuplicate.get()).values[0]?.value ?? 0
    const tally = { runs: 0, resent: 0, stored: 0, duplicates: 0, quarantined: 0, byCode: {} as Record<string, number> }

    /** Submits one payload as the broker does and returns what it left in the journal. */
    const submit = async (bytes: Buffer) => {
      const [readingsFrom, quarantineFrom, dupFrom, answersFrom] = [lastId('readings'), lastId('quarantine'), await duplicates(), answered.length]
      const err = await new Promise<Error | null>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no PUBACK decision within 5 s')), 5000)
        try {
          ingest.submit(identity, bytes, (e) => {
            clearTimeout(timer)
            resolve(e)
          })
        } catch (e) {
          clearTimeout(timer)
          reject(e)
        }
      })
      if (err) throw new Error(`not acknowledged: ${err.message}`)
      const stored = sqlite.prepare('SELECT id, values_json, measured_at FROM readings WHERE id > ?').all(readingsFrom) as StoredRow[]
      const quarantined = sqlite.prepare('SELECT code, message FROM quarantine WHERE id > ?').all(quarantineFrom) as Array<{ code: string; message: string }>
      const dup = (await duplicates()) - dupFrom
      // Each quarantine record is answered to the device with the same code and message.
      expect(answered.slice(answersFrom)).toEqual(quarantined.map((q) => ({ code: q.code, message: q.message })))
      return { stored, quarantined, dup }
    }

    await fc.assert(
      fc.asyncProperty(payload, fc.integer({ min: 1, max: 8 }), async (p, resendRoll) => {
        const bytes = payloadBytes(p)
        const first = await submit(bytes)
        const problem = outcomeProblem(bytes, first.stored.length, first.dup, first.quarantined) ?? storedPlausibly(first.stored)
        if (problem) throw new Error(problem)
        tally.runs++
        tally.stored += first.stored.length
        tally.duplicates += first.dup
        tally.quarantined += first.quarantined.length
        for (const q of first.quarantined) tally.byCode[q.code] = (tally.byCode[q.code] ?? 0) + 1
        // One time in eight the device resends the same payload (no PUBACK seen): nothing is
        // stored twice, and what was refused is refused again with the same reasons.
        if (resendRoll === 1) {
          const again = await submit(bytes)
          tally.resent++
          if (again.stored.length !== 0) throw new Error(`a resend stored ${again.stored.length} readings again`)
          if (again.dup !== first.stored.length + first.dup) throw new Error(`a resend counted ${again.dup} duplicates, expected ${first.stored.length + first.dup}`)
          expect(again.quarantined).toEqual(first.quarantined)
        }
      }),
      { seed: SEED, numRuns: 300 },
    ).finally(() => console.log('[fuzz-readings] ingest property, seed %d: %j', SEED, tally))
    ingest.close()
  }, 60_000)

  it('a sample of the same payloads over MQTT/TLS to the gateway command: acknowledged, stored or quarantined and answered, the device stays connected', async () => {
    const dir = tempDir('rpm-fuzz-mqtt-')
    dirs.push(dir)
    const [device] = await provisionOffline(dir, [{ id: 'fuzz-mqtt', patient: 'fuzz-pt' }])
    gateway = await GatewayProcess.start(dir, cleanEnv())
    const g = gateway
    const client = await connect(g, device!, dir)
    const errors: Array<{ code: string; message: string }> = []
    client.on('message', (_topic, m) => errors.push(JSON.parse(m.toString())))
    await client.subscribeAsync(`devices/${device!.id}/errors`, { qos: 1 })
    let closes = 0
    client.on('close', () => closes++)

    // Classes the third test covers (they take the gateway down today) are left out here.
    const sample = fc
      .sample(payload, { seed: SEED + 1, numRuns: 150 })
      .map(payloadBytes)
      .filter((b) => b.length < 60_000 && !KNOWN_CRASH.test(b.toString('latin1')))
      .slice(0, 80)
    const sqlite = new SQLite(databaseFile(dir), { readonly: true })
    const lastId = (table: string) => (sqlite.prepare(`SELECT coalesce(max(id), 0) AS n FROM ${table}`).get() as { n: number }).n
    const duplicates = async () => (await g.metrics()).get('rpm_readings_duplicate_total') ?? 0
    const problems: string[] = []
    const tally = { payloads: sample.length, stored: 0, duplicates: 0, quarantined: 0 }
    try {
      for (const bytes of sample) {
        const [readingsFrom, quarantineFrom, dupFrom] = [lastId('readings'), lastId('quarantine'), await duplicates()]
        await client.publishAsync(`devices/${device!.id}/readings`, bytes, { qos: 1 })
        const stored = sqlite.prepare('SELECT id, values_json, measured_at FROM readings WHERE id > ?').all(readingsFrom) as StoredRow[]
        const quarantined = sqlite.prepare('SELECT code, message FROM quarantine WHERE id > ?').all(quarantineFrom) as Array<{ code: string; message: string }>
        const dup = (await duplicates()) - dupFrom
        const problem = outcomeProblem(bytes, stored.length, dup, quarantined) ?? storedPlausibly(stored)
        if (problem) problems.push(`${problem}: ${bytes.toString('utf8').slice(0, 200)}`)
        tally.stored += stored.length
        tally.duplicates += dup
        tally.quarantined += quarantined.length
      }
    } finally {
      sqlite.close()
    }
    // Every quarantine record is answered on the errors topic with its code and message.
    await waitFor(() => errors.length >= tally.quarantined, 10_000, `${tally.quarantined} answers on the errors topic`)
    console.log('[fuzz-readings] over MQTT, seed %d: %j', SEED + 1, { ...tally, answered: errors.length })
    expect(problems).toEqual([])
    expect(g.running).toBe(true)
    expect(closes).toBe(0)
    expect(client.connected).toBe(true)
    expect(errors).toHaveLength(tally.quarantined)
    for (const e of errors) {
      expect(QUARANTINE_CODES.has(e.code), JSON.stringify(e)).toBe(true)
      expect(e.message).toEqual(expect.any(String))
    }
  }, 60_000)

  // FINDING (fails until fixed). Each of these takes the gateway down or jams ingest today:
  // - measuredAt "...T23:59:60Z" (a leap second) and "...T10:00:00+02" (an hour-only offset) pass
  //   the ajv date-time format, Date.parse gives NaN, and `new Date(NaN).toISOString()` throws
  //   RangeError in ReadingValidator.check (src/ingest/readings.ts), inside aedes'
  //   authorizePublish: an uncaught exception, the process exits. The device resends the same
  //   reading after it reconnects, so the gateway dies again after every restart.
  // - An invalid reading nested ~5,000 levels deep (under 64 KB): JSON.stringify(item) for the
  //   quarantine record (Ingest #check) overflows the stack: the same crash.
  // - A valid reading in a batch with meta nested that deep: JSON.stringify(r.original) runs
  //   inside the journal transaction, so the whole group commit fails, other devices' readings
  //   in it too, the device is disconnected and resends the same batch: ingest jams for
  //   everyone who shares its commits.
  // Fix: in ReadingValidator.check, refuse a measuredAt whose Date.parse is not finite
  // (RPM_ERR_READING_INVALID, path /measuredAt); in Ingest, refuse payloads nested deeper than a
  // small limit (e.g. 32) after JSON.parse (RPM_ERR_PAYLOAD_SHAPE, or RPM_ERR_READING_INVALID with
  // the path), serialise originals before the transaction; and wrap #parse in submit in a
  // try/catch that quarantines the payload instead of throwing into aedes.
  it('quarantines the payloads the fuzzer found crashing or jamming the gateway, and stays up', async () => {
    const dir = tempDir('rpm-fuzz-crash-')
    dirs.push(dir)
    const devices = await provisionOffline(
      dir,
      [
        { id: 'crash-cuff', patient: 'crash-pt' },
        { id: 'bystander', patient: 'bystander-pt' },
      ],
      [{ username: 'fuzz.nurse', password: 'fuzz nurse password', role: 'provider', careTeamOf: ['crash-pt'] }],
    )
    const [cuff, bystander] = devices
    const hourAgo = new Date(Date.now() - 3_600_000).toISOString()
    const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10)
    const cases: Array<{ name: string; payload: string }> = [
      { name: 'leap second', payload: JSON.stringify(build.heartRate(71, { seq: 1, measuredAt: `${yesterday}T23:59:60Z` })) },
      { name: 'hour-only offset', payload: JSON.stringify(build.heartRate(72, { seq: 2, measuredAt: `${hourAgo.slice(0, 19)}+00` })) },
      { name: 'invalid reading nested 6,000 deep', payload: `[${nested(6000, 'array')}]` },
      { name: 'valid batch reading with meta nested 6,000 deep', payload: `[${JSON.stringify(build.heartRate(73, { seq: 3 })).slice(0, -1)},"meta":${nested(6000, 'object')}}]` },
      { name: 'valid reading with meta nested 6,000 deep', payload: `${JSON.stringify(build.heartRate(74, { seq: 4 })).slice(0, -1)},"meta":${nested(6000, 'object')}}` },
    ]
    const outcomes: Array<{ name: string; acknowledged: boolean; gatewayUp: boolean; bystanderAcknowledged: boolean }> = []
    for (const c of cases) {
      if (!gateway?.running) gateway = await GatewayProcess.start(dir, cleanEnv())
      const g = gateway
      const client = await connect(g, cuff!, dir)
      const other = await connect(g, bystander!, dir)
      // A second device publishes in the same instant: it shares the group commit.
      const [mine, theirs] = await Promise.all([
        acknowledged(g, client, client.publishAsync(`devices/${cuff!.id}/readings`, c.payload, { qos: 1 })),
        acknowledged(g, other, other.publishAsync(`devices/${bystander!.id}/readings`, JSON.stringify(build.heartRate(60, { seq: outcomes.length + 1 })), { qos: 1 })),
      ])
      await new Promise((r) => setTimeout(r, 300))
      outcomes.push({ name: c.name, acknowledged: mine, gatewayUp: g.running, bystanderAcknowledged: theirs })
      await Promise.all([client.endAsync(true), other.endAsync(true)]).catch(() => undefined)
    }
    // The stored deep reading must not break the patient's readings for the care team.
    if (!gateway?.running) gateway = await GatewayProcess.start(dir, cleanEnv())
    const login = await fetch(`${gateway.urls.http}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'fuzz.nurse', password: 'fuzz nurse password' }) })
    const { accessToken } = (await login.json()) as { accessToken: string }
    const readings = await fetch(`${gateway.urls.http}/api/v1/patients/${cuff!.patientId}/readings`, { headers: { authorization: `Bearer ${accessToken}` } })
    console.log('[fuzz-readings] crash cases: %j', { outcomes, readingsApiStatus: readings.status, stderr: gateway.stderr.slice(-600) })
    expect(outcomes).toEqual(cases.map((c) => ({ name: c.name, acknowledged: true, gatewayUp: true, bystanderAcknowledged: true })))
    expect(readings.status).toBe(200)
  }, 90_000)
})

/** measuredAt forms and nesting depths the third test covers (see the finding there). */
const KNOWN_CRASH = /T?\d\d:\d\d:6\d|[+-]\d\d"|[[{"a:]{4000}/

async function connect(g: GatewayProcess, d: ProvisionedDevice, dir: string): Promise<MqttClient> {
  const c = await mqtt.connectAsync(g.mqttsUrl, { clientId: d.id, username: d.id, password: d.secret, ca: caOf(dir), servername: 'localhost', protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 10_000 })
  c.on('error', () => undefined)
  clients.push(c)
  return c
}

/** True when the PUBACK came; false when the connection or the gateway went first, or after 10 s. */
function acknowledged(g: GatewayProcess, client: MqttClient, p: Promise<unknown>): Promise<boolean> {
  return Promise.race([
    p.then(() => true, () => false),
    new Promise<boolean>((r) => client.once('close', () => setTimeout(() => r(false), 50))),
    g.exited.then(() => false),
    new Promise<boolean>((r) => setTimeout(() => r(false), 10_000)),
  ])
}
