/**
 * The time-series server and the notification endpoints down together while readings, alerts
 * and messages flow: a real VictoriaMetrics (the InfluxDB write path) stopped, and the FCM and
 * Twilio test doubles behind a TCP gate that refuses connections. The gateway's clock is a
 * TestClock, so minutes of notification retries take a second; VictoriaMetrics is down for
 * real time (the writer retries every 500 ms here).
 *
 * test/integration/timeseries.test.ts covers an InfluxDB outage and a kill with a backlog;
 * notify.test.ts a push service answering 503 twice and SMS in doubt after a crash. This file
 * puts both outages together, with connection refused rather than an HTTP error, and looks at
 * what happens when an outage outlasts the retry budget.
 */
import https from 'node:https'
import net from 'node:net'
import type { Duplex } from 'node:stream'
import tls from 'node:tls'
import type { MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { build, type ReadingPayload } from '../../../device-simulator/readings.ts'
import type { FcmTransport } from '../../../src/notify/fcm.ts'
import { FakeFcm } from '../../fakes/fcm.ts'
import { fakeTls } from '../../fakes/tls.ts'
import { FakeTwilio } from '../../fakes/twilio.ts'
import { api, call, connectDevice, provision, signInAs, startGateway, TestClock, waitFor, type Caller, type TestDevice, type TestGateway } from '../../helpers.ts'
import { type Series, Victoria, seriesKey } from '../../victoria.ts'
import { scrapeMetrics, sleep } from './harness.ts'

let t: TestGateway | undefined
let clients: MqttClient[] = []
const closers: Array<{ close(): Promise<void> }> = []

afterEach(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)))
  clients = []
  await t?.stop()
  t = undefined
  await Promise.all(closers.splice(0).map((c) => c.close()))
})

/** A TCP pass-through to a local service that can be taken down (connections refused) and brought back on the same port. */
class TcpGate {
  port = 0
  readonly #sockets = new Set<net.Socket>()
  #server: net.Server | undefined

  private constructor(private readonly target: number) {}

  static async open(target: number): Promise<TcpGate> {
    const gate = new TcpGate(target)
    await gate.up()
    closers.push({ close: () => gate.down() })
    return gate
  }

  async up(): Promise<void> {
    if (this.#server) return
    const server = net.createServer((inbound) => {
      const outbound = net.connect(this.target, '127.0.0.1')
      for (const s of [inbound, outbound]) {
        this.#sockets.add(s)
        s.once('close', () => this.#sockets.delete(s))
        s.on('error', () => undefined)
      }
      inbound.pipe(outbound).pipe(inbound)
      inbound.once('close', () => outbound.destroy())
      outbound.once('close', () => inbound.destroy())
    })
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve))
    this.port = (server.address() as net.AddressInfo).port
    this.#server = server
  }

  /** Stops listening (new connections are refused) and cuts the open ones. */
  async down(): Promise<void> {
    const server = this.#server
    if (!server) return
    this.#server = undefined
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    for (const s of this.#sockets) s.destroy()
    await closed
  }
}

/** firebase-admin's transport as FakeFcm.transport() makes it, but connecting through `gate`. */
async function fcmThrough(fcm: FakeFcm, gate: TcpGate): Promise<FcmTransport> {
  const { ca } = await fakeTls()
  class ThroughGate extends https.Agent {
    override createConnection(): Duplex {
      return tls.connect({ host: '127.0.0.1', port: gate.port, servername: 'localhost', ca })
    }
  }
  return {
    credential: { getAccessToken: async () => ({ access_token: fcm.accessToken, expires_in: 3600 }) },
    httpAgent: new ThroughGate(),
    projectId: fcm.projectId,
  }
}

/** docs/timeseries.md: one measurement per type, a field per canonical value; VictoriaMetrics names series measurement_field. */
const SCHEMA: Record<string, Record<string, string>> = {
  blood_pressure: { systolicMmHg: 'blood_pressure_systolic', diastolicMmHg: 'blood_pressure_diastolic', pulseBpm: 'blood_pressure_pulse' },
  heart_rate: { heartRateBpm: 'heart_rate_heart_rate' },
  spo2: { spo2Percent: 'spo2_spo2', pulseBpm: 'spo2_pulse' },
}

/** What InfluxDB should hold for the journal: every canonical value at measuredAt. */
function expectedSeries(t: TestGateway): Series[] {
  const rows = t.gateway.store.sqlite
    .prepare('SELECT r.patient_id, r.device_id, d.kind, r.type, r.measured_at, r.values_json FROM readings r JOIN devices d ON d.id = r.device_id ORDER BY r.id')
    .all() as Array<{ patient_id: string; device_id: string; kind: string; type: string; measured_at: string; values_json: string }>
  const byKey = new Map<string, Series>()
  for (const r of rows) {
    const values = JSON.parse(r.values_json) as Record<string, number>
    for (const [key, name] of Object.entries(SCHEMA[r.type]!)) {
      if (typeof values[key] !== 'number') continue
      const labels = { device_id: r.device_id, device_kind: r.kind, patient_id: r.patient_id }
      const k = seriesKey(name, labels)
      const series: Series = byKey.get(k) ?? { name, labels, samples: [] }
      byKey.set(k, series)
      series.samples.push({ t: Date.parse(r.measured_at), v: values[key]! })
    }
  }
  const all = [...byKey.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([, s]) => s)
  for (const s of all) s.samples.sort((a, b) => a.t - b.t)
  return all
}

interface Clinic {
  t: TestGateway
  clock: TestClock
  vm: Victoria
  fcm: FakeFcm
  twilio: FakeTwilio
  fcmGate: TcpGate
  twilioGate: TcpGate
  nurse: Caller
  patient: Caller
  devices: Array<{ dev: TestDevice; client: MqttClient }>
  threadId: string
}

const PASSWORD = 'outage test password'
const NURSE_PHONE = '+15550100077'

async function clinic(): Promise<Clinic> {
  const vm = await Victoria.start()
  closers.push(vm)
  const [fcm, twilio, tlsFiles] = await Promise.all([FakeFcm.start(), FakeTwilio.start(), fakeTls()])
  closers.push(fcm, twilio)
  const fcmGate = await TcpGate.open(fcm.port)
  const twilioGate = await TcpGate.open(Number(new URL(twilio.origin).port))
  const clock = new TestClock()
  t = await startGateway(
    {
      'influx.url': vm.url, 'influx.token': 't', 'influx.org': 'o', 'influx.bucket': 'b',
      'influx.maxRetryDelayMs': 500, 'influx.flushIntervalMs': 50,
      'alerts.tickMs': 20,
      'notify.tickMs': 20,
      'notify.caFile': tlsFiles.caFile,
      'notify.sms.accountSid': twilio.accountSid,
      'notify.sms.authToken': twilio.authToken,
      'notify.sms.from': '+15550009999',
      'notify.sms.apiBaseUrl': `https://127.0.0.1:${twilioGate.port}`,
    },
    undefined,
    { clock, fcm: await fcmThrough(fcm, fcmGate) },
  )
  const g = t.gateway
  await g.users.add({ username: 'nurse', password: PASSWORD, role: 'provider' })
  const devices: Clinic['devices'] = []
  for (const kind of ['bp_cuff', 'oximeter', 'bp_cuff'] as const) {
    const dev = await provision(g, kind)
    await g.users.addToCareTeam(dev.patientId, 'nurse')
    const client = await connectDevice(t, dev)
    clients.push(client)
    devices.push({ dev, client })
  }
  await g.users.add({ username: 'pat', password: PASSWORD, role: 'patient', patientId: devices[0]!.dev.patientId })
  const nurse = await signInAs(t, 'nurse', PASSWORD)
  const patient = await signInAs(t, 'pat', PASSWORD)
  expect((await call(t, nurse, 'POST', '/api/v1/notifications/subscriptions', { type: 'fcm', token: `fcm-${'n'.repeat(40)}`, platform: 'android' })).status).toBe(201)
  expect((await call(t, nurse, 'PUT', '/api/v1/notifications/sms', { phone: NURSE_PHONE, consent: true })).status).toBe(200)
  const [codeSms] = await twilio.waitFor(1)
  const code = /code is (\d{6})/.exec(codeSms!.body)![1]
  expect((await call(t, nurse, 'POST', '/api/v1/notifications/sms/verify', { code })).body.active).toBe(true)
  return { t, clock, vm, fcm, twilio, fcmGate, twilioGate, nurse, patient, devices, threadId: g.threads.ensure(devices[0]!.dev.patientId).id }
}

const publish = (c: { dev: TestDevice; client: MqttClient }, readings: ReadingPayload[]) =>
  c.client.publishAsync(`devices/${c.dev.deviceId}/readings`, JSON.stringify(readings), { qos: 1 })

/** Normal readings for each device, `n` per device, distinct measuredAt within the last hour. */
async function steadyReadings(c: Clinic, n: number, from: number): Promise<void> {
  await Promise.all(
    c.devices.map((d, i) => {
      const readings = Array.from({ length: n }, (_, k) => {
        const seq = from + k
        const measuredAt = new Date(Date.now() - 3_600_000 + seq * 1000 + i * 7).toISOString()
        return d.dev.deviceId.startsWith('dev-') && i === 1 ? build.spo2(96, 70, { seq, measuredAt }) : build.bloodPressure(122, 78, 66, { seq, measuredAt })
      })
      return publish(d, readings)
    }),
  )
}

/** Moves the gateway's clock in steps, giving its timers real time to run after each. */
async function advance(clock: TestClock, seconds: number, stepSeconds = 5, until?: () => boolean): Promise<number> {
  let moved = 0
  while (moved < seconds) {
    clock.advanceSeconds(stepSeconds)
    moved += stepSeconds
    await sleep(30)
    if (until?.()) break
  }
  return moved
}

const outbox = (t: TestGateway) =>
  t.gateway.store.sqlite.prepare("SELECT id, channel, kind, status, attempts, reason FROM notifications WHERE kind <> 'verification' ORDER BY created_at, id").all() as Array<{ id: string; channel: string; kind: string; status: string; attempts: number; reason: string | null }>

describe('outage: time series and notifications down together', () => {
  it('for two minutes, while readings, alerts and messages flow: nothing is lost, and each reading and notification goes out once', async () => {
    const c = await clinic()
    const { t, clock, vm, fcm } = c
    await steadyReadings(c, 5, 1)
    await vm.waitFor((s) => s.length > 0)

    await Promise.all([vm.stop(), c.fcmGate.down(), c.twilioGate.down()])
    const downAt = Date.now()
    // Readings, three crises (three urgent alerts), and the patient writing to the nurse.
    await steadyReadings(c, 40, 100)
    for (const [i, d] of c.devices.entries()) {
      await publish(d, [i === 1 ? build.spo2(84, 118, { seq: 900 }) : build.bloodPressure(194, 118, 104, { seq: 900 })])
    }
    for (const text of ['I feel dizzy', 'Should I take another pill?']) {
      expect((await call(t, c.patient, 'POST', `/api/v1/threads/${c.threadId}/messages`, { clientMessageId: `m-${text.length}`, text })).status).toBe(201)
    }
    await steadyReadings(c, 40, 200)
    // Two minutes: six failed sends (at 0, 2, 6, 14, 30 and 62 s); the seventh, at 126 s, finds
    // the service back. The retry budget (notify.maxAttempts 8) ends at 254 s: see the next test.
    const moved = await advance(clock, 120)
    const during = await api(t, 'GET', '/readyz')
    const pendingDuring = outbox(t)
    const m = await scrapeMetrics(`${t.urls.http}/metrics`)
    const backlogDuring = m.get('rpm_timeseries_backlog_readings')

    await Promise.all([vm.start(), c.fcmGate.up(), c.twilioGate.up()])
    const upAt = Date.now()
    const settled = () => outbox(t).every((n) => n.status === 'sent' || n.status === 'failed' || n.status === 'dropped')
    const afterMoved = await advance(clock, 300, 5, settled)
    await waitFor(settled, 10_000, 'every notification settled')
    const expected = expectedSeries(t)
    await vm.waitFor((s) => JSON.stringify(s) === JSON.stringify(expected), 20_000, 'every journal reading in VictoriaMetrics')
    const drainedMs = Date.now() - upAt
    const after = await scrapeMetrics(`${t.urls.http}/metrics`)
    const rows = outbox(t)
    const received = fcm.received.map((r) => r.message.data?.notificationId)

    console.log('[outage] two minutes: %j', {
      vmDownRealMs: upAt - downAt,
      clockSecondsDown: moved,
      clockSecondsToSettle: afterMoved,
      readyzDuring: during.body.checks,
      timeseriesBacklogDuring: backlogDuring,
      pointsWritten: after.get('rpm_timeseries_points_written_total'),
      journalReadings: expected.reduce((n, s) => n + s.samples.length, 0),
      notifications: rows.map((n) => `${n.channel}/${n.kind}: ${n.status} after ${n.attempts} attempts`),
      pendingDuring: pendingDuring.map((n) => `${n.kind} ${n.status} ${n.attempts} ${n.reason ?? ''}`),
      drainedMs,
    })
    expect(during.status).toBe(200)
    expect(during.body.checks).toMatchObject({ journal: 'up', influxdb: 'degraded', notifications: 'degraded' })
    expect(backlogDuring).toBeGreaterThanOrEqual(240)
    // Three alerts and the patient's messages reached the nurse by FCM: each once, none lost.
    expect(rows.filter((n) => n.kind === 'alert')).toHaveLength(3)
    expect(rows.filter((n) => n.kind === 'message').length).toBeGreaterThanOrEqual(1)
    expect(rows.every((n) => n.status === 'sent')).toBe(true)
    expect(rows.every((n) => n.attempts > 1)).toBe(true)
    expect(received.sort()).toEqual(rows.filter((n) => n.channel === 'fcm').map((n) => n.id).sort())
    expect(after.get('rpm_timeseries_backlog_readings')).toBe(0)
    const ready = await api(t, 'GET', '/readyz')
    expect(ready.body.checks).toMatchObject({ influxdb: 'up', notifications: 'up' })
  }, 90_000)

  it('for twelve minutes, past the retry budget: what is given up is recorded as failed and counted, never left pending; the escalation still reaches the nurse by push and SMS once', async () => {
    const c = await clinic()
    const { t, clock, vm, fcm, twilio } = c
    await Promise.all([vm.stop(), c.fcmGate.down(), c.twilioGate.down()])
    await publish(c.devices[0]!, [build.bloodPressure(196, 121, 101, { seq: 1 })])
    await steadyReadings(c, 20, 10)
    // Urgent alerts repeat after 10 minutes unacknowledged (push and SMS); the first push
    // has 8 attempts (notify.maxAttempts) 2 s, 4 s, ... apart: about 4 minutes.
    const moved = await advance(clock, 12 * 60, 10)
    const before = outbox(t)
    await Promise.all([vm.start(), c.fcmGate.up(), c.twilioGate.up()])
    const settled = () => outbox(t).every((n) => ['sent', 'failed', 'dropped'].includes(n.status))
    const afterMoved = await advance(clock, 300, 5, settled)
    await waitFor(settled, 10_000, 'every notification settled')
    const rows = outbox(t)
    const m = await scrapeMetrics(`${t.urls.http}/metrics`)
    const expected = expectedSeries(t)
    await vm.waitFor((s) => JSON.stringify(s) === JSON.stringify(expected), 20_000, 'every journal reading in VictoriaMetrics')
    const failedListed = await call(t, c.nurse, 'GET', '/api/v1/notifications?status=failed')

    console.log('[outage] twelve minutes: %j', {
      clockSecondsDown: moved,
      clockSecondsToSettle: afterMoved,
      atRecovery: before.map((n) => `${n.channel}/${n.kind}: ${n.status} after ${n.attempts} attempts (${n.reason ?? ''})`),
      settled: rows.map((n) => `${n.channel}/${n.kind}: ${n.status} after ${n.attempts} attempts (${n.reason ?? ''})`),
      fcmReceived: fcm.received.length,
      smsSent: twilio.sent.length - 1,
      failedTotal: [...m].filter(([k]) => k.startsWith('rpm_notifications_failed_total')),
    })
    // Nothing is left in limbo, and what was given up says so where an operator looks.
    const failed = rows.filter((n) => n.status === 'failed')
    expect(rows.every((n) => n.status === 'sent' || n.status === 'failed')).toBe(true)
    for (const n of failed) expect(n).toMatchObject({ attempts: 8, reason: expect.any(String) })
    expect(failedListed.body.items.map((n: { id: string }) => n.id).sort()).toEqual(failed.map((n) => n.id).sort())
    expect([...m].filter(([k]) => k.startsWith('rpm_notifications_failed_total')).reduce((n, [, v]) => n + v, 0)).toBe(failed.length)
    // The repeat at 10 minutes went out once by push and once by SMS after the outage.
    const repeats = rows.filter((n) => n.kind === 'alert' && n.status === 'sent')
    expect(repeats.map((n) => n.channel).sort()).toEqual(['fcm', 'sms'])
    expect(fcm.received.map((r) => r.message.data?.notificationId)).toEqual(repeats.filter((n) => n.channel === 'fcm').map((n) => n.id))
    expect(twilio.sent.slice(1)).toHaveLength(1)
  }, 90_000)
})
