import { copyFileSync } from 'node:fs'
import path from 'node:path'
import SQLite from 'better-sqlite3'
import type { MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { build } from '../../device-simulator/readings.ts'
import { databaseFile } from '../../src/store/db.ts'
import type { AcceptedReading } from '../../src/ingest/types.ts'
import { connectDevice, nextMessage, provision, quarantineOf, readingsOf, startGateway, tempDir, type TestDevice, type TestGateway } from '../helpers.ts'

let t: TestGateway
let clients: MqttClient[] = []

afterEach(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)))
  clients = []
  await t?.stop()
})

async function device(kind: Parameters<typeof provision>[1] = 'bp_cuff'): Promise<{ dev: TestDevice; client: MqttClient }> {
  const dev = await provision(t.gateway, kind)
  const client = await connectDevice(t, dev)
  clients.push(client)
  await client.subscribeAsync(`devices/${dev.deviceId}/errors`, { qos: 1 })
  return { dev, client }
}

const send = (client: MqttClient, dev: TestDevice, body: unknown) =>
  client.publishAsync(`devices/${dev.deviceId}/readings`, typeof body === 'string' ? body : JSON.stringify(body), { qos: 1 })

describe('ingest', () => {
  it('commits a reading to disk before the PUBACK arrives', async () => {
    t = await startGateway()
    const { dev, client } = await device()
    await send(client, dev, build.bloodPressure(152, 95, 78, { seq: 1 }))
    // Read through a separate connection: what the PUBACK promised is on disk, not in a cache.
    const other = new SQLite(databaseFile(t.dataDir), { readonly: true })
    const rows = other.prepare('SELECT type, seq, values_json FROM readings WHERE device_id = ?').all(dev.deviceId)
    other.close()
    expect(rows).toEqual([{ type: 'blood_pressure', seq: 1, values_json: JSON.stringify({ systolicMmHg: 152, diastolicMmHg: 95, pulseBpm: 78 }) }])
  })

  it('stores canonical units with the original value and unit, and emits reading.accepted once', async () => {
    t = await startGateway()
    const accepted: AcceptedReading[] = []
    t.gateway.bus.on('reading.accepted', (batch) => accepted.push(...batch))
    const { dev, client } = await device('glucometer')
    const reading = build.glucose(5.4, 'mmol/L', { seq: 7 })
    await send(client, dev, reading)
    await send(client, dev, reading) // a resend
    const rows = readingsOf(t, dev.deviceId)
    expect(rows).toHaveLength(1)
    expect(JSON.parse(rows[0]!.values_json)).toEqual({ glucoseMgDl: 97.3, context: 'fasting' })
    expect(JSON.parse(rows[0]!.original_json)).toEqual(reading)
    expect(accepted).toHaveLength(1)
    expect(accepted[0]).toMatchObject({ deviceId: dev.deviceId, patientId: dev.patientId, deviceKind: 'glucometer', type: 'glucose', seq: 7, values: { glucoseMgDl: 97.3 } })
  })

  it('stores a batch; a bad item is quarantined with its index while the rest is stored', async () => {
    t = await startGateway()
    const { dev, client } = await device()
    const errors = nextMessage(client, `devices/${dev.deviceId}/errors`)
    await send(client, dev, [
      build.bloodPressure(120, 80, 70, { seq: 1 }),
      build.bloodPressure(60, 80, 70, { seq: 2 }),
      build.heartRate(64, { seq: 3 }),
    ])
    expect(readingsOf(t, dev.deviceId).map((r) => r.seq)).toEqual([1, 3])
    expect(quarantineOf(t, dev.deviceId)).toMatchObject([{ code: 'RPM_ERR_READING_IMPLAUSIBLE', seq: 2, batch_index: 1, path: '/systolic' }])
    expect(JSON.parse((await errors).toString())).toEqual({
      seq: 2,
      index: 1,
      code: 'RPM_ERR_READING_IMPLAUSIBLE',
      message: 'systolic must be greater than diastolic',
      path: '/systolic',
    })
  })

  it('stores a resent batch once, and a QoS1 redelivery (DUP) once', async () => {
    t = await startGateway()
    const { dev, client } = await device()
    const batch = [1, 2, 3].map((seq) => build.bloodPressure(120 + seq, 80, 70, { seq }))
    await send(client, dev, batch)
    await send(client, dev, batch)
    await client.publishAsync(`devices/${dev.deviceId}/readings`, JSON.stringify(batch[0]), { qos: 1, dup: true })
    expect(readingsOf(t, dev.deviceId).map((r) => r.seq)).toEqual([1, 2, 3])
    expect(await t.gateway.metrics.readingsDuplicate.get()).toMatchObject({ values: [{ value: 4 }] })
  })

  it('keeps readings without seq apart by type and measuredAt', async () => {
    t = await startGateway()
    const { dev, client } = await device()
    const minutesAgo = (m: number) => new Date(Date.now() - m * 60_000).toISOString()
    const a = build.bloodPressure(120, 80, 70, { measuredAt: minutesAgo(10) })
    const b = build.bloodPressure(121, 80, 70, { measuredAt: minutesAgo(9) })
    const c = build.heartRate(70, { measuredAt: minutesAgo(10) })
    for (const r of [a, b, c, a]) await send(client, dev, r)
    expect(readingsOf(t, dev.deviceId).map((r) => r.type)).toEqual(['blood_pressure', 'blood_pressure', 'heart_rate'])
  })

  describe('invalid payloads are acknowledged, quarantined with the reason, answered on the errors topic, and the device stays connected', () => {
    const now = () => new Date().toISOString()
    const cases: Array<[string, () => unknown, string, string | undefined]> = [
      ['bad JSON', () => '{"type": "blood_pressure", ', 'RPM_ERR_PAYLOAD_JSON', undefined],
      ['a bare number', () => '42', 'RPM_ERR_PAYLOAD_SHAPE', undefined],
      ['an empty batch', () => [], 'RPM_ERR_PAYLOAD_SHAPE', undefined],
      ['unknown type', () => ({ type: 'cholesterol', value: 1, unit: 'mg/dL', measuredAt: now(), seq: 5 }), 'RPM_ERR_READING_TYPE', '/type'],
      ['missing field', () => ({ type: 'spo2', unit: '%', measuredAt: now(), seq: 5 }), 'RPM_ERR_READING_INVALID', '/value'],
      ['out of range', () => ({ type: 'spo2', value: 130, unit: '%', measuredAt: now(), seq: 5 }), 'RPM_ERR_READING_IMPLAUSIBLE', '/value'],
      ['wrong unit', () => ({ type: 'weight', value: 80, unit: 'stone', measuredAt: now(), seq: 5 }), 'RPM_ERR_READING_UNIT', '/unit'],
      ['in the future', () => ({ type: 'heart_rate', value: 80, unit: 'bpm', measuredAt: new Date(Date.now() + 3_600_000).toISOString(), seq: 5 }), 'RPM_ERR_READING_TIME', '/measuredAt'],
      ['batch too large', () => Array.from({ length: 11 }, (_, i) => build.heartRate(70, { seq: i })), 'RPM_ERR_BATCH_TOO_LARGE', undefined],
    ]
    it.each(cases)('%s', async (_name, payload, code, path) => {
      t = await startGateway({ 'ingest.maxBatchSize': 10 })
      const { dev, client } = await device()
      const errors = nextMessage(client, `devices/${dev.deviceId}/errors`)
      const body = payload()
      await send(client, dev, body)
      const error = JSON.parse((await errors).toString())
      expect(error.code).toBe(code)
      expect(error.path).toBe(path)
      expect(typeof error.message).toBe('string')
      const [q] = quarantineOf(t, dev.deviceId)
      expect(q).toMatchObject({ code, message: error.message })
      expect(q!.raw).toBe(typeof body === 'string' ? body : JSON.stringify(body))
      // Still connected: the next good reading is stored.
      expect(client.connected).toBe(true)
      await send(client, dev, build.heartRate(66, { seq: 99 }))
      expect(readingsOf(t, dev.deviceId).map((r) => r.seq)).toEqual([99])
    })
  })

  it('groups readings from many devices into shared commits', async () => {
    t = await startGateway({ 'ingest.commitIntervalMs': 5 })
    const devices = await Promise.all(Array.from({ length: 20 }, () => device()))
    await Promise.all(devices.map(({ dev, client }) => Promise.all([1, 2, 3].map((seq) => send(client, dev, build.bloodPressure(120, 80, 60, { seq }))))))
    const total = t.gateway.store.sqlite.prepare('SELECT COUNT(*) AS n FROM readings').get() as { n: number }
    expect(total.n).toBe(60)
    const commits = (await t.gateway.metrics.commitSize.get()).values.find((v) => v.metricName === 'rpm_journal_commit_readings_count')
    expect(commits!.value).toBeLessThan(60)
  })

  it('acknowledges nothing while the journal cannot commit, reports it on /readyz, and stores the resend once it recovers', async () => {
    t = await startGateway()
    const dev = await provision(t.gateway)
    const client = await connectDevice(t, dev, { reconnectPeriod: 300 })
    clients.push(client)
    const readyz = async () => (await fetch(`${t.urls.http}/readyz`)).json() as Promise<{ checks: Record<string, string> }>

    // Writes fail on the journal's own connection, as they would on a full or failing disk.
    t.gateway.store.sqlite.pragma('query_only = ON')
    let acked = false
    const publishing = send(client, dev, build.bloodPressure(130, 85, 70, { seq: 1 })).then(() => (acked = true))
    await new Promise<void>((resolve) => client.once('close', () => resolve()))
    expect(acked).toBe(false)
    expect(readingsOf(t, dev.deviceId)).toHaveLength(0)
    expect((await readyz()).checks.journal).toBe('down')
    expect((await t.gateway.metrics.commitFailures.get()).values[0]!.value).toBeGreaterThanOrEqual(1)

    t.gateway.store.sqlite.pragma('query_only = OFF')
    await publishing // mqtt.js resends the unacknowledged PUBLISH after it reconnects
    expect(readingsOf(t, dev.deviceId).map((r) => r.seq)).toEqual([1])
    expect((await readyz()).checks.journal).toBe('up')
  })

  it('checkpoints the journal into the database file in the background', async () => {
    t = await startGateway()
    const { dev, client } = await device()
    await send(client, dev, Array.from({ length: 50 }, (_, i) => build.heartRate(60 + (i % 30), { seq: i })))
    // The main database file alone (without its WAL) holds the readings once a checkpoint ran;
    // commits themselves never checkpoint.
    const copy = path.join(tempDir(), 'copy.db')
    let n = 0
    for (let i = 0; i < 40 && n < 50; i++) {
      await new Promise((r) => setTimeout(r, 100))
      copyFileSync(databaseFile(t.dataDir), copy)
      const db = new SQLite(copy, { readonly: true })
      try {
        n = (db.prepare('SELECT COUNT(*) AS n FROM readings').get() as { n: number }).n
      } catch {
        n = 0 // not even the schema has been checkpointed yet
      } finally {
        db.close()
      }
    }
    expect(n).toBe(50)
    expect(t.gateway.store.sqlite.pragma('wal_autocheckpoint', { simple: true })).toBe(0)
  })

  it('keeps device presence: online with last seen, offline after disconnect, online through a takeover', async () => {
    t = await startGateway()
    const { dev, client } = await device()
    await send(client, dev, build.bloodPressure(120, 80, 60, { seq: 1 }))
    let d = await t.gateway.registry.getDevice(dev.deviceId)
    expect(d.online).toBe(true)
    expect(Date.parse(d.lastSeenAt!)).toBeGreaterThan(Date.now() - 10_000)

    // The same device connects again (e.g. after a network change): the old session is replaced
    // and the device never shows as offline in between.
    const transitions: string[] = []
    t.gateway.bus.on('device.disconnected', () => transitions.push('offline'))
    t.gateway.bus.on('device.connected', () => transitions.push('online'))
    const second = await connectDevice(t, dev)
    clients.push(second)
    await new Promise((r) => setTimeout(r, 200))
    expect((await t.gateway.registry.getDevice(dev.deviceId)).online).toBe(true)
    expect(transitions).toEqual(['online'])

    await second.endAsync()
    await new Promise((r) => setTimeout(r, 200))
    d = await t.gateway.registry.getDevice(dev.deviceId)
    expect(d.online).toBe(false)
    expect(d.lastSeenAt).not.toBeNull()
  })
})
