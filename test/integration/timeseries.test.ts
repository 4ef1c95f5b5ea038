import { type ChildProcess, spawn } from 'node:child_process'
import { readFileSync, rmSync } from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { gunzipSync } from 'node:zlib'
import SQLite from 'better-sqlite3'
import mqtt, { type MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { build, type ReadingPayload } from '../../device-simulator/readings.ts'
import { systemClock } from '../../src/clock.ts'
import { Registry } from '../../src/registry/registry.ts'
import { databaseFile, openStore } from '../../src/store/db.ts'
import type { DeviceKind } from '../../src/store/schema.ts'
import { connectDevice, provision, runProcess, startGateway, tempDir, waitFor, type TestDevice, type TestGateway } from '../helpers.ts'
import { type Series, Victoria, seriesKey } from '../victoria.ts'

const BIN = fileURLToPath(new URL('../../bin/rpm-gateway.js', import.meta.url))

let gateways: TestGateway[] = []
let clients: MqttClient[] = []
let servers: Victoria[] = []
let proxies: http.Server[] = []
let children: ChildProcess[] = []
let dirs: string[] = []

afterEach(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)))
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : undefined)))
  await Promise.all(gateways.map((g) => g.stop()))
  for (const p of proxies) p.closeAllConnections()
  await Promise.all(proxies.map((p) => new Promise((r) => p.close(r))))
  await Promise.all(servers.map((s) => s.close()))
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  clients = []
  children = []
  gateways = []
  proxies = []
  servers = []
  dirs = []
})

// ---------------------------------------------------------------- the documented schema

/**
 * docs/timeseries.md: one measurement per reading type, a float field per canonical value;
 * VictoriaMetrics names a series measurement_field. Written out here rather than taken from
 * src/timeseries/lines.ts, so the test states the contract instead of repeating the code.
 */
const SCHEMA: Record<string, Record<string, string>> = {
  blood_pressure: { systolicMmHg: 'blood_pressure_systolic', diastolicMmHg: 'blood_pressure_diastolic', pulseBpm: 'blood_pressure_pulse' },
  glucose: { glucoseMgDl: 'glucose_mg_dl' },
  spo2: { spo2Percent: 'spo2_spo2', pulseBpm: 'spo2_pulse' },
  heart_rate: { heartRateBpm: 'heart_rate_heart_rate' },
  weight: { weightKg: 'weight_weight_kg' },
  temperature: { temperatureC: 'temperature_temperature_c' },
}

interface JournalReading {
  id: number
  patient_id: string
  device_id: string
  kind: string
  type: string
  measured_at: string
  received_at: string
  values_json: string
}

function journal(sqlite: SQLite.Database, where = '1 = 1'): JournalReading[] {
  return sqlite
    .prepare(`SELECT r.id, r.patient_id, r.device_id, d.kind, r.type, r.measured_at, r.received_at, r.values_json FROM readings r JOIN devices d ON d.id = r.device_id WHERE ${where} ORDER BY r.id`)
    .all() as JournalReading[]
}

/** The journal in a data directory, read through its own read-only connection. */
function journalIn(dataDir: string): JournalReading[] {
  const sqlite = new SQLite(databaseFile(dataDir), { readonly: true })
  try {
    return journal(sqlite)
  } finally {
    sqlite.close()
  }
}

/** What InfluxDB should hold for these journal readings: every value as stored, at measuredAt to the millisecond. */
function expectedSeries(readings: readonly JournalReading[]): Series[] {
  const byKey = new Map<string, Series>()
  for (const r of readings) {
    const values = JSON.parse(r.values_json) as Record<string, unknown>
    for (const [key, name] of Object.entries(SCHEMA[r.type]!)) {
      if (typeof values[key] !== 'number') continue
      const labels = { device_id: r.device_id, device_kind: r.kind, patient_id: r.patient_id }
      const k = seriesKey(name, labels)
      const series: Series = byKey.get(k) ?? { name, labels, samples: [] }
      byKey.set(k, series)
      series.samples.push({ t: Date.parse(r.measured_at), v: values[key] as number })
    }
  }
  const all = [...byKey.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([, s]) => s)
  for (const s of all) s.samples.sort((a, b) => a.t - b.t)
  return all
}

const sampleCount = (series: readonly Series[]) => series.reduce((n, s) => n + s.samples.length, 0)

/** True when `actual` holds exactly the `expected` series and samples (both from export()'s or expectedSeries' canonical order). */
const holds = (expected: Series[]) => (actual: Series[]) => JSON.stringify(actual) === JSON.stringify(expected)

// ---------------------------------------------------------------- the gateway and its devices

const influxSettings = (url: string) => ({
  'influx.url': url,
  'influx.token': 't',
  'influx.org': 'o',
  'influx.bucket': 'b',
  'influx.maxRetryDelayMs': 500,
  'influx.flushIntervalMs': 50,
})

async function victoria(start = true): Promise<Victoria> {
  const vm = await Victoria.create()
  servers.push(vm)
  if (start) await vm.start()
  return vm
}

async function gateway(settings: Record<string, unknown> = {}): Promise<TestGateway> {
  const t = await startGateway(settings)
  gateways.push(t)
  return t
}

async function device(t: TestGateway, kind: DeviceKind, id?: string): Promise<{ dev: TestDevice; client: MqttClient }> {
  const dev = await provision(t.gateway, kind, id)
  const client = await connectDevice(t, dev)
  clients.push(client)
  return { dev, client }
}

/** Publishes at QoS 1 and resolves on the PUBACK: the gateway has the readings on disk. */
const publish = (client: MqttClient, deviceId: string, readings: ReadingPayload | ReadingPayload[]) =>
  client.publishAsync(`devices/${deviceId}/readings`, JSON.stringify(readings), { qos: 1 })

/** A distinct measuredAt per reading, with milliseconds, within the last hour. */
function clockFrom(base = Date.now() - 3_600_000) {
  let i = 0
  return () => new Date(base + ++i * 1000 + (i % 997)).toISOString()
}

async function readyz(httpUrl: string): Promise<{ status: number; body: { status: string; checks: Record<string, string> } }> {
  const res = await fetch(`${httpUrl}/readyz`)
  return { status: res.status, body: (await res.json()) as never }
}

/** The gateway's /metrics samples, keyed `name` or `name{label="value"}`. */
async function metrics(httpUrl: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${httpUrl}/metrics`)).text()
  const samples = new Map<string, number>()
  for (const line of text.split('\n')) {
    const m = /^([^\s#{]+)(\{[^}]*\})?\s+(\S+)/.exec(line)
    if (m) samples.set(m[1]! + (m[2] ?? ''), Number(m[3]))
  }
  return samples
}

// ---------------------------------------------------------------- the gateway command

/** The environment without any RPM_* settings of the machine running the tests. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RPM_')))
  return { ...env, RPM_MQTT_PORT: '0', RPM_HTTP_PORT: '0', RPM_MQTT_HOST: '127.0.0.1', ...extra }
}

const influxEnv = (url: string) => ({ RPM_INFLUX_URL: url, RPM_INFLUX_TOKEN: 't', RPM_INFLUX_ORG: 'o', RPM_INFLUX_BUCKET: 'b' })

interface Child {
  child: ChildProcess
  stdout: () => string
  stderr: () => string
  exited: Promise<number | null>
}

/** `rpm-gateway start` as an operator runs it; resolves once `ready` finds what it waits for on stdout. */
function startCommand(args: string[], env: NodeJS.ProcessEnv, ready: (stdout: string) => boolean): Promise<Child> {
  const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  children.push(child)
  let stdout = ''
  let stderr = ''
  child.stderr!.on('data', (d) => (stderr += d))
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const c: Child = { child, stdout: () => stdout, stderr: () => stderr, exited }
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! })
    lines.on('line', (line) => {
      stdout += line + '\n'
      if (ready(stdout)) resolve(c)
    })
    void exited.then((code) => reject(new Error(`rpm-gateway start exited with ${code}: ${stderr}${stdout}`)))
  })
}

/** `rpm-gateway start --json`: resolves with its URLs once it listens. */
async function startJson(dataDir: string, env: NodeJS.ProcessEnv): Promise<Child & { urls: { mqtts: string; http: string } }> {
  const c = await startCommand(['start', '--json', '--data-dir', dataDir], env, (out) => out.includes('\n'))
  return { ...c, urls: JSON.parse(c.stdout().split('\n')[0]!) }
}

/** Runs a CLI command with --json against `dataDir`; a non-zero exit fails the test. */
async function cli(dataDir: string, args: string[], env: NodeJS.ProcessEnv): Promise<any> {
  const result = await runProcess(process.execPath, [BIN, '--data-dir', dataDir, '--json', ...args], { env, timeoutMs: 30_000 })
  if (result.code !== 0) throw new Error(`rpm-gateway ${args.join(' ')} exited ${result.code}: ${result.stderr}${result.stdout}`)
  return JSON.parse(result.stdout)
}

// ---------------------------------------------------------------- an InfluxDB that refuses

/**
 * VictoriaMetrics 1.79 answers 204 even to lines it cannot use (it logs and drops them), where
 * InfluxDB 2 answers 400 {"code":"invalid","message":...} and writes nothing of the batch. So
 * that a refusal can be seen at all, this pass-through proxy answers as InfluxDB 2 does to any
 * write whose body carries a point of the device `marker`, and forwards everything else to the
 * real VictoriaMetrics untouched. The client gzips bodies over 1000 bytes, so the body is read
 * gunzipped when content-encoding says so. While VictoriaMetrics is stopped the proxy drops the
 * connection, marked or not, as a server that is not there.
 */
async function refusingProxy(upstream: Victoria, marker: string): Promise<string> {
  const marked = new RegExp(`(^|\\n)[^ ]*,device_id=${marker}[, ]`)
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const raw = Buffer.concat(chunks)
      const text = req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw).toString('utf8') : raw.toString('utf8')
      const line = text.split('\n').find((l) => marked.test(`\n${l}`))
      if (upstream.running && req.url?.startsWith('/api/v2/write') && line !== undefined) {
        res.writeHead(400, { 'content-type': 'application/json; charset=utf-8' })
        res.end(JSON.stringify({ code: 'invalid', message: `unable to parse '${line}': invalid field format` }))
        return
      }
      const forward = http.request(
        { host: '127.0.0.1', port: upstream.port, method: req.method, path: req.url, headers: req.headers },
        (up) => {
          res.writeHead(up.statusCode ?? 502, up.headers)
          up.pipe(res)
        },
      )
      forward.on('error', () => req.socket.destroy())
      forward.end(raw)
    })
  })
  proxies.push(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

// ---------------------------------------------------------------- tests

describe('time series: readings reach InfluxDB', () => {
  it('writes every reading type with its canonical values, tags and measuredAt to the millisecond', async () => {
    const vm = await victoria()
    const t = await gateway(influxSettings(vm.url))
    const hub = await device(t, 'hub')
    const cuff = await device(t, 'bp_cuff')
    const at = clockFrom()
    const times = Array.from({ length: 8 }, at)
    await publish(hub.client, hub.dev.deviceId, [
      build.bloodPressure(17.1, 10.9, 71, { unit: 'kPa', seq: 1, measuredAt: times[0]! }),
      build.glucose(6.1, 'mmol/L', { seq: 2, measuredAt: times[1]! }),
      build.spo2(97, 64, { seq: 3, measuredAt: times[2]! }),
      build.heartRate(61, { seq: 4, measuredAt: times[3]! }),
      build.weight(165.3, 'lb', { seq: 5, measuredAt: times[4]! }),
      build.temperature(99.1, 'F', { seq: 6, measuredAt: times[5]! }),
    ])
    await publish(cuff.client, cuff.dev.deviceId, build.bloodPressure(128, 82, undefined, { seq: 1, measuredAt: times[6]! }))
    await publish(cuff.client, cuff.dev.deviceId, build.bloodPressure(131.5, 84, 66, { seq: 2, measuredAt: times[7]! }))

    const expected = expectedSeries(journal(t.gateway.store.sqlite))
    const got = await vm.waitFor(holds(expected))
    expect(got).toEqual(expected)

    // The values are the journal's canonical ones, converted once at ingest: spelled out here.
    const value = (name: string, deviceId: string) => got.filter((s) => s.name === name && s.labels.device_id === deviceId).map((s) => s.samples.map((x) => x.v))
    const hubId = hub.dev.deviceId
    expect(value('blood_pressure_systolic', hubId)).toEqual([[128.3]]) // 17.1 kPa
    expect(value('blood_pressure_diastolic', hubId)).toEqual([[81.8]]) // 10.9 kPa
    expect(value('blood_pressure_pulse', hubId)).toEqual([[71]])
    expect(value('glucose_mg_dl', hubId)).toEqual([[109.9]]) // 6.1 mmol/L
    expect(value('spo2_spo2', hubId)).toEqual([[97]])
    expect(value('spo2_pulse', hubId)).toEqual([[64]])
    expect(value('heart_rate_heart_rate', hubId)).toEqual([[61]])
    expect(value('weight_weight_kg', hubId)).toEqual([[74.979]]) // 165.3 lb
    expect(value('temperature_temperature_c', hubId)).toEqual([[37.28]]) // 99.1 °F
    // A reading sent without a pulse has no pulse value; each of the cuff's fields is one series.
    expect(value('blood_pressure_pulse', cuff.dev.deviceId)).toEqual([[66]])
    expect(value('blood_pressure_systolic', cuff.dev.deviceId)).toEqual([[128, 131.5]])
    expect(got.find((s) => s.labels.device_id === cuff.dev.deviceId)!.labels).toEqual({ device_id: cuff.dev.deviceId, device_kind: 'bp_cuff', patient_id: cuff.dev.patientId })
    expect(got.find((s) => s.name === 'weight_weight_kg')!.samples[0]!.t).toBe(Date.parse(times[4]!))

    const m = await metrics(t.urls.http)
    expect(m.get('rpm_timeseries_points_written_total')).toBe(8)
    expect((await readyz(t.urls.http)).body.checks.influxdb).toBe('up')
  })

  it('keeps readings through an InfluxDB outage, says so on /readyz and /metrics, and writes each once when it is back', async () => {
    const vm = await victoria()
    const t = await gateway(influxSettings(vm.url))
    const { dev, client } = await device(t, 'hub')
    const at = clockFrom()
    let seq = 0
    await publish(client, dev.deviceId, build.heartRate(60, { seq: ++seq, measuredAt: at() }))
    await vm.waitFor((s) => sampleCount(s) === 1)

    await vm.stop()
    // Thirty readings over six publishes, each acknowledged: in the journal, not yet in InfluxDB.
    for (let p = 0; p < 6; p++) {
      await publish(client, dev.deviceId, [
        build.bloodPressure(120 + p, 80, 60 + p, { seq: ++seq, measuredAt: at() }),
        build.glucose(5.5 + p / 10, 'mmol/L', { seq: ++seq, measuredAt: at() }),
        build.spo2(95 + (p % 4), 70, { seq: ++seq, measuredAt: at() }),
        build.weight(150 + p, 'lb', { seq: ++seq, measuredAt: at() }),
        build.temperature(98.6 + p / 10, 'F', { seq: ++seq, measuredAt: at() }),
      ])
    }
    const degraded = await waitFor(async () => {
      const r = await readyz(t.urls.http)
      return r.body.checks.influxdb === 'degraded' ? r : undefined
    }, 10_000, 'influxdb degraded on /readyz')
    // Degraded, not down: the gateway still takes readings, so it stays ready.
    expect(degraded.status).toBe(200)
    expect(degraded.body.status).toBe('ready')
    const { influxdb: _, ...others } = degraded.body.checks
    expect(others).toMatchObject({ database: 'up', journal: 'up', mqtt: 'up' })
    expect(Object.values(others).every((v) => v === 'up'), JSON.stringify(others)).toBe(true)
    await waitFor(async () => (await metrics(t.urls.http)).get('rpm_timeseries_backlog_readings') === 30, 10_000, 'backlog of 30 on /metrics')
    const during = await metrics(t.urls.http)
    expect(during.get('rpm_timeseries_batches_failed_total{reason="unavailable"}')).toBeGreaterThan(0)
    expect(during.get('rpm_timeseries_points_written_total')).toBe(1)

    await vm.start()
    const expected = expectedSeries(journal(t.gateway.store.sqlite))
    expect(sampleCount(expected)).toBe(1 + 6 * 8)
    expect(await vm.waitFor(holds(expected), 20_000)).toEqual(expected)
    await waitFor(async () => (await metrics(t.urls.http)).get('rpm_timeseries_backlog_readings') === 0, 10_000, 'backlog back to 0')
    // Each reading was sent once it was confirmed: 31, not more.
    expect((await metrics(t.urls.http)).get('rpm_timeseries_points_written_total')).toBe(31)
    expect((await readyz(t.urls.http)).body.checks.influxdb).toBe('up')
  })

  it('sets aside the readings InfluxDB refuses as invalid, with the reason, and keeps writing the others', async () => {
    const vm = await victoria()
    const marker = 'scale-refused'
    const proxy = await refusingProxy(vm, marker)
    const t = await gateway(influxSettings(proxy))
    const one = await device(t, 'bp_cuff')
    const two = await device(t, 'hub')
    const bad = await device(t, 'scale', marker)
    const at = clockFrom()
    const seqs = new Map<string, number>()
    const next = (id: string) => {
      seqs.set(id, (seqs.get(id) ?? 0) + 1)
      return { seq: seqs.get(id)!, measuredAt: at() }
    }
    const good = (ids: string[]) => journal(t.gateway.store.sqlite, `r.device_id IN (${ids.map((i) => `'${i}'`).join(', ')})`)

    // Before: written as usual.
    await publish(one.client, one.dev.deviceId, build.bloodPressure(121, 79, 62, next(one.dev.deviceId)))
    await vm.waitFor((s) => sampleCount(s) === 3)

    // While InfluxDB is away, refused and good readings pile up together, so that one batch
    // holds both when it is back: the refused ones are split off, the rest is written.
    await vm.stop()
    await publish(one.client, one.dev.deviceId, build.bloodPressure(122, 80, 63, next(one.dev.deviceId)))
    await publish(bad.client, marker, build.weight(80.5, 'kg', next(marker)))
    await publish(two.client, two.dev.deviceId, build.heartRate(64, next(two.dev.deviceId)))
    await publish(bad.client, marker, build.weight(80.7, 'kg', next(marker)))
    await publish(one.client, one.dev.deviceId, build.bloodPressure(124, 81, 64, next(one.dev.deviceId)))
    await waitFor(async () => (await readyz(t.urls.http)).body.checks.influxdb === 'degraded', 10_000, 'influxdb degraded')
    await vm.start()
    const ids = [one.dev.deviceId, two.dev.deviceId]
    await vm.waitFor(holds(expectedSeries(good(ids))), 20_000)

    // After: a refused reading alone, then good ones behind it.
    await publish(bad.client, marker, build.weight(81, 'kg', next(marker)))
    await publish(two.client, two.dev.deviceId, build.spo2(96, 66, next(two.dev.deviceId)))
    await publish(one.client, one.dev.deviceId, build.bloodPressure(119, 77, 61, next(one.dev.deviceId)))
    const expected = expectedSeries(good(ids))
    expect(await vm.waitFor(holds(expected))).toEqual(expected)
    expect(sampleCount(expected)).toBe(4 * 3 + 1 + 2)

    const refusedIds = journal(t.gateway.store.sqlite, `r.device_id = '${marker}'`).map((r) => r.id)
    expect(refusedIds).toHaveLength(3)
    const rejected = await waitFor(() => {
      const rows = t.gateway.store.sqlite.prepare('SELECT reading_id, target, status, reason FROM timeseries_rejected ORDER BY reading_id').all() as Array<{
        reading_id: number
        target: string
        status: number
        reason: string
      }>
      return rows.length === 3 ? rows : undefined
    }, 10_000, 'three readings set aside')
    expect(rejected.map((r) => r.reading_id)).toEqual(refusedIds)
    for (const r of rejected) {
      expect(r).toMatchObject({ target: `${proxy}|o|b`, status: 400 })
      expect(r.reason).toMatch(/^400 .*"code":"invalid".*invalid field format/)
      expect(r.reason).toContain(`device_id=${marker}`)
    }

    const m = await waitFor(async () => {
      const s = await metrics(t.urls.http)
      return s.get('rpm_timeseries_backlog_readings') === 0 ? s : undefined
    }, 10_000, 'backlog 0: the writer did not stall')
    expect(m.get('rpm_timeseries_points_rejected_total')).toBe(3)
    expect(m.get('rpm_timeseries_points_written_total')).toBe(6) // points are readings: 4 + 2
    expect(m.get('rpm_timeseries_batches_failed_total{reason="rejected"}')).toBeGreaterThanOrEqual(3)
    expect((await readyz(t.urls.http)).body.checks.influxdb).toBe('up')
  })

  it('without InfluxDB configured: no influxdb check on /readyz, and the start banner and log say time series is off', async () => {
    const dataDir = tempDir()
    dirs.push(dataDir)
    const c = await startCommand(['start', '--data-dir', dataDir], cleanEnv({ RPM_LOG_LEVEL: 'info' }), (out) => /^ {2}Time series .*$/m.test(out))
    expect(c.stdout()).toMatch(/^ {2}Time series +off: no InfluxDB configured \(RPM_INFLUX_URL\); readings stay in the journal/m)
    // The log line may come after the banner (pino writes asynchronously).
    await waitFor(() => c.stdout().includes('time series: no InfluxDB configured (influx.url is empty); readings are kept in the journal only'), 5000, 'the start log line')
    const httpUrl = /^ {2}HTTP +(http:\/\/\S+)/m.exec(c.stdout())![1]!
    const ready = await readyz(httpUrl)
    expect(ready.status).toBe(200)
    expect(ready.body.status).toBe('ready')
    expect(ready.body.checks).toMatchObject({ database: 'up', journal: 'up', mqtt: 'up' })
    expect(ready.body.checks).not.toHaveProperty('influxdb')
    c.child.kill('SIGTERM')
    expect(await c.exited).toBe(0)
  })
})

describe('time series: crash and backfill', () => {
  it('a gateway killed while InfluxDB was away writes every acknowledged reading once after the restart', async () => {
    const dataDir = tempDir()
    dirs.push(dataDir)
    const store = await openStore(dataDir)
    const registry = new Registry(store.db, systemClock)
    const patient = await registry.addPatient({ name: 'Test Patient', timezone: 'UTC' })
    const devices = await Promise.all([
      registry.addDevice({ patientId: patient.id, id: 'crash-cuff', kind: 'bp_cuff' }),
      registry.addDevice({ patientId: patient.id, id: 'crash-hub', kind: 'hub' }),
    ])
    await store.close()

    const vm = await victoria(false) // its address is configured; nothing answers there yet
    const token = 'crash-test-influx-token-5f2a'
    const env = cleanEnv({
      ...influxEnv(vm.url),
      RPM_INFLUX_TOKEN: token,
      RPM_INFLUX_MAX_RETRY_DELAY_MS: '500',
      RPM_INFLUX_FLUSH_INTERVAL_MS: '50',
      RPM_LOG_LEVEL: 'info',
    })
    const first = await startJson(dataDir, env)
    const ca = readFileSync(path.join(dataDir, 'tls', 'ca.pem'))
    const at = clockFrom()
    await Promise.all(
      devices.map(async (d) => {
        const client = await mqtt.connectAsync(first.urls.mqtts.replace('localhost', '127.0.0.1'), {
          clientId: d.id, username: d.id, password: d.secret, ca, servername: 'localhost', protocolVersion: 4, reconnectPeriod: 0,
        })
        clients.push(client)
        for (let p = 0; p < 10; p++) {
          const batch = Array.from({ length: 5 }, (_, i) => {
            const extra = { seq: p * 5 + i + 1, measuredAt: at() }
            return d.kind === 'hub' ? build.heartRate(60 + i, extra) : build.bloodPressure(118 + i, 76, 58 + p, extra)
          })
          await publish(client, d.id, batch)
        }
      }),
    )
    await waitFor(async () => (await readyz(first.urls.http)).body.checks.influxdb === 'degraded', 10_000, 'influxdb degraded')
    first.child.kill('SIGKILL')
    await first.exited
    await Promise.all(clients.map((c) => c.endAsync(true)))
    clients = []

    // With the gateway down, the CLI reads the backlog from the database.
    const before = await cli(dataDir, ['timeseries', 'status'], env)
    expect(before).toMatchObject({ configured: true, target: `${vm.url}|o|b`, writtenUpTo: 0, backlog: 100, refused: 0 })
    expect(Date.parse(before.oldestPendingAt)).toBeLessThanOrEqual(Date.now())

    await vm.start()
    const second = await startJson(dataDir, env)
    const readings = journalIn(dataDir)
    expect(readings).toHaveLength(100)
    const expected = expectedSeries(readings)
    expect(sampleCount(expected)).toBe(50 * 3 + 50)
    expect(await vm.waitFor(holds(expected), 20_000)).toEqual(expected)
    const m = await waitFor(async () => {
      const s = await metrics(second.urls.http)
      return s.get('rpm_timeseries_backlog_readings') === 0 ? s : undefined
    }, 10_000, 'backlog 0 after the restart')
    expect(m.get('rpm_timeseries_points_written_total')).toBe(100)
    expect((await readyz(second.urls.http)).body.checks.influxdb).toBe('up')
    const after = await cli(dataDir, ['timeseries', 'status'], env)
    expect(after).toMatchObject({ backlog: 0, writtenUpTo: readings.at(-1)!.id, oldestPendingAt: null })

    // The start log names the InfluxDB it writes to, never its token.
    expect(first.stderr()).toContain('time series: writing readings to InfluxDB')
    expect(first.stderr() + first.stdout() + second.stderr() + second.stdout()).not.toContain(token)
    second.child.kill('SIGTERM')
    expect(await second.exited).toBe(0)
  })

  it('backfill replays the journal into a new bucket, the same data when run twice; --since limits it; status reports the backlog', async () => {
    // A journal written by a gateway without InfluxDB.
    const t = await gateway()
    const { dev, client } = await device(t, 'hub')
    const base = Date.now() - 6 * 3_600_000
    const times = Array.from({ length: 12 }, (_, i) => new Date(base + i * 1_800_000 + 10 + i).toISOString())
    await publish(
      client,
      dev.deviceId,
      times.map((measuredAt, i) =>
        i % 3 === 0 ? build.bloodPressure(125 + i, 80, 70, { seq: i + 1, measuredAt })
        : i % 3 === 1 ? build.weight(170 + i / 10, 'lb', { seq: i + 1, measuredAt })
        : build.glucose(5 + i / 10, 'mmol/L', { seq: i + 1, measuredAt }),
      ),
    )
    const readings = journal(t.gateway.store.sqlite)
    expect(readings).toHaveLength(12)
    await client.endAsync()
    clients = []
    await t.gateway.stop() // keeps the data directory, which stop() of the test gateway would remove
    gateways = []
    dirs.push(t.dataDir)

    const vm = await victoria()
    const env = cleanEnv(influxEnv(vm.url))
    const status = await cli(t.dataDir, ['timeseries', 'status'], env)
    expect(status).toMatchObject({ configured: true, target: `${vm.url}|o|b`, writtenUpTo: 0, backlog: 12, oldestPendingAt: readings[0]!.received_at, refused: 0 })

    // --since: only what was measured at or after it.
    const since = times[8]!
    const partial = await cli(t.dataDir, ['timeseries', 'backfill', '--since', since, '--batch-size', '3'], env)
    expect(partial).toMatchObject({ sent: 4, total: 4, refused: [] })
    const later = expectedSeries(readings.filter((r) => r.measured_at >= since))
    expect(await vm.waitFor(holds(later))).toEqual(later)

    const all = expectedSeries(readings)
    expect(await cli(t.dataDir, ['timeseries', 'backfill'], env)).toMatchObject({ sent: 12, total: 12, refused: [] })
    const once = await vm.waitFor(holds(all))
    expect(once).toEqual(all)
    expect(sampleCount(once)).toBe(4 * 3 + 4 + 4)

    expect(await cli(t.dataDir, ['timeseries', 'backfill'], env)).toMatchObject({ sent: 12, total: 12, refused: [] })
    expect(await vm.export()).toEqual(once)

    // Backfill does not move the gateway's own position: a gateway writing to this bucket would
    // resend these points, which overwrite themselves.
    expect(await cli(t.dataDir, ['timeseries', 'status'], env)).toMatchObject({ writtenUpTo: 0, backlog: 12 })
  })
})
