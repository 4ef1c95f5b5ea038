import mqtt, { type MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { build } from '../../device-simulator/readings.ts'
import {
  auditOf,
  connackCode,
  connectDevice,
  provision,
  readingsOf,
  startGateway,
  type TestDevice,
  type TestGateway,
} from '../helpers.ts'

let t: TestGateway | undefined
let clients: MqttClient[] = []

afterEach(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)))
  clients = []
  await t?.stop()
  t = undefined
})

async function gateway(): Promise<TestGateway> {
  t = await startGateway()
  return t
}

const get = (t: TestGateway, path: string) => fetch(`${t.urls.http}${path}`)

/** MQTT over WebSocket at /mqtt on the HTTP port, logged in with the device's secret. */
function connectWs(t: TestGateway, dev: TestDevice, password = dev.secret): Promise<MqttClient> {
  return mqtt.connectAsync(t.urls.ws!, {
    clientId: dev.deviceId,
    username: dev.deviceId,
    password,
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 5000,
  })
}

/** The value of one sample line in Prometheus text format, e.g. `rpm_mqtt_connections`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

describe('health and readiness', () => {
  it('/healthz answers ok and /readyz reports the database and MQTT up', async () => {
    const t = await gateway()
    const health = await get(t, '/healthz')
    expect(health.status).toBe(200)
    expect(await health.json()).toEqual({ status: 'ok' })

    const ready = await get(t, '/readyz')
    expect(ready.status).toBe(200)
    expect(await ready.json()).toEqual({ status: 'ready', checks: { database: 'up', journal: 'up', mqtt: 'up', notifications: 'up' } })
  })
})

describe('/metrics', () => {
  it('serves Prometheus text with connection, reading, PUBACK latency and commit figures', async () => {
    const t = await gateway()
    const dev = await provision(t.gateway)
    const client = await connectDevice(t, dev)
    clients.push(client)
    await client.publishAsync(`devices/${dev.deviceId}/readings`, JSON.stringify(build.bloodPressure(152, 95, 78, { seq: 1 })), { qos: 1 })

    const res = await get(t, '/metrics')
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/)
    const text = await res.text()

    expect(text).toContain('# TYPE rpm_mqtt_connections gauge')
    expect(sample(text, 'rpm_mqtt_connections')).toBe(1)
    expect(sample(text, 'rpm_readings_accepted_total{type="blood_pressure"}')).toBe(1)
    expect(text).toContain('# TYPE rpm_puback_latency_seconds histogram')
    expect(sample(text, 'rpm_puback_latency_seconds_count')).toBe(1)
    expect(sample(text, 'rpm_puback_latency_seconds_bucket{le="+Inf"}')).toBe(1)
    expect(text).toContain('# TYPE rpm_journal_commit_readings histogram')
    expect(sample(text, 'rpm_journal_commit_readings_sum')).toBeGreaterThanOrEqual(1)
    // Ids and payloads stay out of the figures.
    expect(text).not.toContain(dev.deviceId)
    expect(text).not.toContain(dev.patientId)
  })
})

describe('MQTT over WebSocket at /mqtt', () => {
  it('logs a device in with its secret and stores the reading it publishes', async () => {
    const t = await gateway()
    const dev = await provision(t.gateway, 'glucometer')
    expect(t.urls.ws).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/mqtt$/)
    const client = await connectWs(t, dev)
    clients.push(client)
    await client.publishAsync(`devices/${dev.deviceId}/readings`, JSON.stringify(build.glucose(5.4, 'mmol/L', { seq: 11 })), { qos: 1 })
    expect(readingsOf(t, dev.deviceId).map((r) => [r.type, r.seq])).toEqual([['glucose', 11]])
  })

  it('refuses a wrong secret with CONNACK 4 and audits it with the peer address', async () => {
    const t = await gateway()
    const dev = await provision(t.gateway)
    expect(await connackCode(connectWs(t, dev, 'not-the-secret'))).toBe(4)
    expect(auditOf(t, 'mqtt.connect')).toEqual([
      expect.objectContaining({ actor_id: dev.deviceId, outcome: 'denied', address: '127.0.0.1' }),
    ])
  })
})

describe('errors and what is not served', () => {
  it('answers an unknown route with a JSON error {code, message}', async () => {
    const t = await gateway()
    const res = await get(t, '/no/such/route')
    expect(res.status).toBe(404)
    expect(res.headers.get('content-type')).toMatch(/^application\/json/)
    expect(await res.json()).toEqual({ code: 'RPM_ERR_NOT_FOUND', message: expect.any(String) })
  })

  it('serves no patient data without a valid access token', async () => {
    const t = await gateway()
    const dev = await provision(t.gateway)
    for (const path of ['/api/v1/patients', `/api/v1/patients/${dev.patientId}`, `/api/v1/patients/${dev.patientId}/readings`]) {
      const res = await get(t, path)
      expect(res.status).toBe(401)
      const body = await res.text()
      expect(JSON.parse(body)).toMatchObject({ code: 'RPM_ERR_UNAUTHENTICATED' })
      expect(body).not.toContain('Test Patient')
    }
  })
})
