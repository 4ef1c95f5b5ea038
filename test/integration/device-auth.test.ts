import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import type { MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { build } from '../../device-simulator/readings.ts'
import { ensureDevelopmentPki, issueCertificate } from '../../src/broker/pki.ts'
import {
  auditOf,
  closed,
  connackCode,
  connectDevice,
  deviceCertificate,
  mosquittoArgs,
  provision,
  readingsOf,
  runProcess,
  startGateway,
  tempDir,
  type TestDevice,
  type TestGateway,
} from '../helpers.ts'

let t: TestGateway | undefined
let clients: MqttClient[] = []
let dirs: string[] = []

afterEach(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)))
  clients = []
  await t?.stop()
  t = undefined
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  dirs = []
})

// Refusal tests make many bad logins from 127.0.0.1; only the slow-down test wants them slowed.
const NO_SLOWDOWN = { 'mqtt.authFailuresBeforeDelay': 1000 }

async function gateway(settings: Record<string, unknown> = NO_SLOWDOWN): Promise<TestGateway> {
  t = await startGateway(settings)
  return t
}

function keep(client: MqttClient): MqttClient {
  clients.push(client)
  return client
}

const readingsTopic = (dev: TestDevice) => `devices/${dev.deviceId}/readings`

/** PEM files for mosquitto's --cert/--key, in a directory removed after the test. */
function writePem(files: Record<string, string>): Record<string, string> {
  const dir = tempDir('rpm-pem-')
  dirs.push(dir)
  return Object.fromEntries(
    Object.entries(files).map(([name, pem]) => {
      const file = path.join(dir, `${name}.pem`)
      writeFileSync(file, pem, { mode: 0o600 })
      return [name, file]
    }),
  )
}

/** A CA the gateway has never seen, and a client certificate from it naming `deviceId`. */
async function foreignCertificate(deviceId: string): Promise<{ cert: string; key: string }> {
  const dir = tempDir('rpm-foreign-ca-')
  dirs.push(dir)
  const pki = await ensureDevelopmentPki(dir, ['localhost'])
  return issueCertificate({
    caCertPem: readFileSync(pki.caCertPath, 'utf8'),
    caKeyPem: readFileSync(pki.caKeyPath, 'utf8'),
    commonName: deviceId,
    validDays: 30,
  })
}

describe('device login with a secret', () => {
  it('accepts the device id and secret over TLS (mqtt.js) and stores the reading it publishes', async () => {
    const t = await gateway()
    const dev = await provision(t.gateway)
    const client = keep(await connectDevice(t, dev))
    await client.publishAsync(readingsTopic(dev), JSON.stringify(build.bloodPressure(128, 82, 70, { seq: 1 })), { qos: 1 })
    const rows = readingsOf(t, dev.deviceId)
    expect(rows.map((r) => [r.type, r.seq])).toEqual([['blood_pressure', 1]])
  })

  it('accepts the device id and secret from mosquitto_pub and stores the reading before it exits', async () => {
    const t = await gateway()
    const dev = await provision(t.gateway, 'oximeter')
    const result = await runProcess('mosquitto_pub', [
      ...mosquittoArgs(t, { clientId: dev.deviceId, username: dev.deviceId, password: dev.secret }),
      '-q', '1', '-t', readingsTopic(dev), '-m', JSON.stringify(build.spo2(96, 71, { seq: 5 })),
    ])
    expect(result).toMatchObject({ code: 0, stderr: '' })
    // mosquitto_pub exits after the PUBACK, and the PUBACK means stored.
    expect(readingsOf(t, dev.deviceId).map((r) => [r.type, r.seq])).toEqual([['spo2', 5]])
  })
})

describe('device login with a client certificate', () => {
  it('accepts a certificate from the gateway CA whose CN is the device id (mqtt.js, no username or password)', async () => {
    const t = await gateway()
    const dev = await provision(t.gateway, 'scale')
    const { cert, key } = await deviceCertificate(t, dev.deviceId)
    const client = keep(await connectDevice(t, dev, { username: undefined, password: undefined, cert, key }))
    await client.publishAsync(readingsTopic(dev), JSON.stringify(build.weight(81.2, 'kg', { seq: 2 })), { qos: 1 })
    expect(readingsOf(t, dev.deviceId).map((r) => [r.type, r.seq])).toEqual([['weight', 2]])
  })

  it('accepts the certificate from mosquitto_pub --cert/--key', async () => {
    const t = await gateway()
    const dev = await provision(t.gateway, 'thermometer')
    const pem = writePem(await deviceCertificate(t, dev.deviceId))
    const result = await runProcess('mosquitto_pub', [
      ...mosquittoArgs(t, { clientId: dev.deviceId, cert: pem.cert!, key: pem.key! }),
      '-q', '1', '-t', readingsTopic(dev), '-m', JSON.stringify(build.temperature(37.1, 'C', { seq: 9 })),
    ])
    expect(result).toMatchObject({ code: 0, stderr: '' })
    expect(readingsOf(t, dev.deviceId).map((r) => [r.type, r.seq])).toEqual([['temperature', 9]])
  })

  it('does not take a certificate from another CA as identity', async () => {
    const t = await gateway()
    const dev = await provision(t.gateway)
    const foreign = await foreignCertificate(dev.deviceId)
    expect(await connackCode(connectDevice(t, dev, { username: undefined, password: undefined, ...foreign }))).toBe(4)

    const pem = writePem(foreign)
    const result = await runProcess('mosquitto_pub', [
      ...mosquittoArgs(t, { clientId: dev.deviceId, cert: pem.cert!, key: pem.key! }),
      '-q', '1', '-t', readingsTopic(dev), '-m', JSON.stringify(build.bloodPressure(120, 80, 60, { seq: 1 })),
    ])
    expect(result.code).toBe(4)
    expect(result.stderr).toMatch(/bad user name or password/i)
    expect(readingsOf(t, dev.deviceId)).toEqual([])
  })

  it('does not let a username log in as another device over a valid certificate', async () => {
    const t = await gateway()
    const a = await provision(t.gateway)
    const b = await provision(t.gateway)
    const certA = await deviceCertificate(t, a.deviceId)
    expect(await connackCode(connectDevice(t, b, { password: undefined, ...certA }))).toBe(4)
    expect(await connackCode(connectDevice(t, a, { username: b.deviceId, password: b.secret, ...certA }))).toBe(4)
  })
})

describe('refused logins', () => {
  // [MQTT-3.2.2-3] CONNACK return codes: 2 identifier rejected, 4 bad user name or password, 5 not authorised.
  const cases: Array<{ name: string; code: number; login: (dev: TestDevice, other: TestDevice) => { clientId: string; username: string; password: string } }> = [
    { name: 'a wrong secret', code: 4, login: (dev) => ({ clientId: dev.deviceId, username: dev.deviceId, password: 'not-the-secret' }) },
    // Unknown ids answer exactly like a wrong secret, so device ids cannot be probed.
    { name: 'an unknown device id', code: 4, login: () => ({ clientId: 'dev-nobody', username: 'dev-nobody', password: 'whatever' }) },
    { name: 'a disabled device', code: 5, login: (_dev, disabled) => ({ clientId: disabled.deviceId, username: disabled.deviceId, password: disabled.secret }) },
    // Without its secret, a disabled device's id answers like any other bad login.
    { name: 'a disabled device with a wrong secret', code: 4, login: (_dev, disabled) => ({ clientId: disabled.deviceId, username: disabled.deviceId, password: 'not-the-secret' }) },
    { name: 'a client id other than the device id', code: 2, login: (dev) => ({ clientId: `${dev.deviceId}-x`, username: dev.deviceId, password: dev.secret }) },
  ]

  it.each(cases)('refuses $name with CONNACK $code (mqtt.js and mosquitto_pub)', async ({ code, login }) => {
    const t = await gateway()
    const dev = await provision(t.gateway)
    const disabled = await provision(t.gateway)
    await t.gateway.registry.disableDevice(disabled.deviceId)
    const l = login(dev, disabled)

    expect(await connackCode(connectDevice(t, { ...dev, deviceId: l.clientId }, { username: l.username, password: l.password }))).toBe(code)

    const result = await runProcess('mosquitto_pub', [
      ...mosquittoArgs(t, l),
      '-q', '1', '-t', `devices/${l.username}/readings`, '-m', JSON.stringify(build.bloodPressure(120, 80, 60, { seq: 1 })),
    ])
    expect(result.code).toBe(code) // mosquitto_pub exits with the CONNACK code
    expect(result.stderr).toMatch(/Connection Refused/)
    expect(t.gateway.store.sqlite.prepare('SELECT COUNT(*) AS n FROM readings').get()).toEqual({ n: 0 })
  })

  it('records a refused login in the audit trail with who, what, outcome and address', async () => {
    const t = await gateway()
    const dev = await provision(t.gateway)
    expect(await connackCode(connectDevice(t, dev, { password: 'wrong' }))).toBe(4)
    expect(auditOf(t, 'mqtt.connect')).toEqual([
      expect.objectContaining({
        actor_type: 'device',
        actor_id: dev.deviceId,
        action: 'mqtt.connect',
        outcome: 'denied',
        address: '127.0.0.1',
      }),
    ])
    expect(JSON.parse(auditOf(t, 'mqtt.connect')[0]!.details_json!)).toEqual({ code: 'RPM_ERR_DEVICE_AUTH' })
    // The trail holds no secret, right or wrong.
    expect(JSON.stringify(auditOf(t))).not.toContain('wrong')
    expect(t.gateway.audit.verify()).toEqual({ ok: true, rows: 1 })
  })

  it('slows down repeated failures from one address, and still lets the right secret in', async () => {
    const delayMs = 300
    const t = await gateway({ 'mqtt.authFailuresBeforeDelay': 2, 'mqtt.authFailureDelayMs': delayMs })
    const dev = await provision(t.gateway)
    for (let i = 0; i < 2; i++) expect(await connackCode(connectDevice(t, dev, { password: 'wrong' }))).toBe(4)

    let started = performance.now()
    expect(await connackCode(connectDevice(t, dev, { password: 'wrong' }))).toBe(4)
    expect(performance.now() - started).toBeGreaterThanOrEqual(delayMs)

    // Held like any attempt from this address, then admitted: slowed, not locked out.
    started = performance.now()
    keep(await connectDevice(t, dev))
    expect(performance.now() - started).toBeGreaterThanOrEqual(delayMs)
  })
})

describe('disabling a device', () => {
  it('closes its open connection within a sweep and refuses it afterwards', async () => {
    const t = await gateway()
    const dev = await provision(t.gateway)
    const client = keep(await connectDevice(t, dev))
    await t.gateway.registry.disableDevice(dev.deviceId)
    // The broker sweeps for disabled devices every 5 s (the CLI disables from another process).
    await closed(client, 6500)
    expect(await connackCode(connectDevice(t, dev))).toBe(5)
  }, 10_000)
})
