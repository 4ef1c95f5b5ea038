import { type ChildProcess, spawn } from 'node:child_process'
import { rmSync } from 'node:fs'
import path from 'node:path'
import { createInterface } from 'node:readline'
import type { MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { build } from '../../device-simulator/readings.ts'
import { systemClock } from '../../src/clock.ts'
import { Users } from '../../src/identity/users.ts'
import { Registry } from '../../src/registry/registry.ts'
import { openStore } from '../../src/store/db.ts'
import { FakePushService } from '../fakes/push-service.ts'
import { fakeTls } from '../fakes/tls.ts'
import { FakeTwilio } from '../fakes/twilio.ts'
import { call, connectDevice, signInAs, startGateway, tempDir, TestClock, waitFor, type TestGateway } from '../helpers.ts'

const BIN = path.resolve('bin/rpm-gateway.js')
const PASSWORD = 'correct horse battery'
const NURSE_PHONE = '+15550100001'

let t: TestGateway | undefined
let devices: MqttClient[] = []
let children: ChildProcess[] = []
const fakes: Array<{ close(): Promise<void> }> = []
const dirs: string[] = []

afterEach(async () => {
  await Promise.all(devices.map((c) => c.endAsync(true)))
  devices = []
  await t?.stop()
  t = undefined
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL')
  children = []
  await Promise.all(fakes.splice(0).map((f) => f.close()))
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
})

describe('an urgent reading reaches a provider who is not looking', () => {
  it('pushes at once, texts when still unacknowledged after the escalation delay, and stops once acknowledged', async () => {
    const tls = await fakeTls()
    const push = await FakePushService.start()
    const twilio = await FakeTwilio.start()
    fakes.push(push, twilio)
    const clock = new TestClock()
    t = await startGateway({
      'alerts.tickMs': 20,
      'notify.tickMs': 20,
      'notify.caFile': tls.caFile,
      'notify.webpush.allowedHosts': ['127.0.0.1'],
      'notify.sms.accountSid': twilio.accountSid,
      'notify.sms.authToken': twilio.authToken,
      'notify.sms.from': '+15550009999',
      'notify.sms.apiBaseUrl': twilio.origin,
      'notify.consoleUrl': 'https://console.example.org',
    }, undefined, { clock })
    const g = t.gateway
    const patient = await g.registry.addPatient({ name: 'Ottoline Brackenbury', timezone: 'UTC' })
    const device = await g.registry.addDevice({ patientId: patient.id, kind: 'bp_cuff' })
    await g.users.add({ username: 'nurse', password: PASSWORD, role: 'provider', name: 'Nurse Joy' })
    await g.users.addToCareTeam(patient.id, 'nurse')
    const nurse = await signInAs(t, 'nurse', PASSWORD)

    const key = (await call(t, nurse, 'GET', '/api/v1/notifications/channels')).body.webpush.publicKey
    const subscription = push.subscription({ applicationServerKey: key })
    expect((await call(t, nurse, 'POST', '/api/v1/notifications/subscriptions', { type: 'webpush', subscription })).status).toBe(201)
    expect((await call(t, nurse, 'PUT', '/api/v1/notifications/sms', { phone: NURSE_PHONE, consent: true })).status).toBe(200)
    const [codeSms] = await twilio.waitFor(1)
    const code = /code is (\d{6})/.exec(codeSms!.body)![1]
    expect((await call(t, nurse, 'POST', '/api/v1/notifications/sms/verify', { code })).body.active).toBe(true)

    // The cuff publishes a hypertensive crisis over MQTT/TLS.
    const client = await connectDevice(t, { patientId: patient.id, deviceId: device.id, secret: device.secret })
    devices.push(client)
    const published = Date.now()
    await client.publishAsync(`devices/${device.id}/readings`, JSON.stringify(build.bloodPressure(186, 112, 80, { seq: 1 })), { qos: 1 })
    const [first] = await push.waitFor(1)
    const alertId = (first!.payload as any).data.alertId as string
    expect(first!.payload).toMatchObject({ title: 'Urgent alert for a patient on your team', body: 'Sign in to see it and respond.', data: { type: 'alert', alertId } })
    expect(first!.headers.urgency).toBe('high')
    expect(first!.at - published).toBeLessThan(10_000)
    // What the lock screen and the push service see; the random ids are taken out before looking for "186".
    const seen = JSON.stringify({ text: first!.text, ttl: first!.headers.ttl, urgency: first!.headers.urgency })
    for (const secret of ['Ottoline', patient.id, device.id]) expect(seen).not.toContain(secret)
    expect(seen.replace(/\b(ntf|alt)-[0-9a-z]+/g, '<id>')).not.toMatch(/186|112/)
    expect(twilio.sent).toHaveLength(1) // the verification code only: no alert SMS before the escalation delay

    // Urgent: unacknowledged after 10 minutes (alerts.escalation.urgent.repeatMinutes), it is sounded again: push and SMS.
    clock.advanceSeconds(9 * 60)
    await new Promise((r) => setTimeout(r, 300))
    expect(twilio.sent).toHaveLength(1)
    clock.advanceSeconds(61)
    const [, sms] = await twilio.waitFor(2)
    expect(sms).toMatchObject({ to: NURSE_PHONE, from: '+15550009999', authorization: twilio.accountSid })
    expect(sms!.body).toBe('Urgent alert for a patient on your team. Still not acknowledged. Sign in to respond. https://console.example.org')
    const [, again] = await push.waitFor(2)
    expect(again!.payload).toMatchObject({ body: 'Still not acknowledged. Sign in to respond.', data: { alertId } })
    expect(again!.headers.topic).toBe(first!.headers.topic) // replaces the first on the device

    // Acknowledged: escalation stops, nothing more is sent however long it stays open.
    expect((await call(t, nurse, 'POST', `/api/v1/alerts/${alertId}/acknowledge`)).status).toBe(200)
    for (let i = 0; i < 6; i++) {
      clock.advanceSeconds(10 * 60)
      await new Promise((r) => setTimeout(r, 100))
    }
    expect(twilio.sent).toHaveLength(2)
    expect(push.received).toHaveLength(2)
    const rows = g.store.sqlite.prepare('SELECT channel, status FROM notifications ORDER BY id').all()
    expect(rows).toEqual([{ channel: 'webpush', status: 'sent' }, { channel: 'webpush', status: 'sent' }, { channel: 'sms', status: 'sent' }])
  })
})

describe('a crash during dispatch', () => {
  /** The real gateway command in a child process; resolves with its HTTP URL once it listens. */
  function startChild(dataDir: string, caFile: string): Promise<{ child: ChildProcess; http: string }> {
    const child = spawn(process.execPath, [BIN, 'start', '--json', '--data-dir', dataDir], {
      env: {
        ...process.env,
        RPM_MQTT_PORT: '0',
        RPM_HTTP_PORT: '0',
        RPM_MQTT_HOST: '127.0.0.1',
        RPM_LOG_LEVEL: 'warn',
        RPM_NOTIFY_CA_FILE: caFile,
        RPM_NOTIFY_WEBPUSH_ALLOWED_HOSTS: '127.0.0.1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    children.push(child)
    let stderr = ''
    child.stderr!.on('data', (d) => (stderr += d))
    return new Promise((resolve, reject) => {
      createInterface({ input: child.stdout! }).once('line', (line) => resolve({ child, http: JSON.parse(line).http }))
      child.once('exit', (code) => reject(new Error(`gateway exited with ${code}: ${stderr}`)))
    })
  }
  const killed = (child: ChildProcess) => new Promise((resolve) => child.once('exit', resolve))

  it('neither loses nor repeats a send when the gateway is killed with a push in flight, nor after a second kill', async () => {
    const tls = await fakeTls()
    const push = await FakePushService.start()
    fakes.push(push)
    const dataDir = tempDir()
    dirs.push(dataDir)
    const store = await openStore(dataDir)
    const patient = await new Registry(store.db, systemClock).addPatient({ name: 'Crash Test', timezone: 'UTC' })
    const users = new Users(store.db, systemClock)
    await users.add({ username: 'pat', password: PASSWORD, role: 'patient', patientId: patient.id })
    await users.add({ username: 'nurse', password: PASSWORD, role: 'provider' })
    await users.addToCareTeam(patient.id, 'nurse')
    await store.close()

    let run = await startChild(dataDir, tls.caFile)
    const gw = () => ({ urls: { http: run.http } }) as unknown as TestGateway
    const nurse = await signInAs(gw(), 'nurse', PASSWORD)
    const pat = await signInAs(gw(), 'pat', PASSWORD)
    // Five browsers: one message becomes five sends, made one after another.
    const subs = Array.from({ length: 5 }, () => push.subscription())
    for (const s of subs) expect((await call(gw(), nurse, 'POST', '/api/v1/notifications/subscriptions', { type: 'webpush', subscription: s })).status).toBe(201)

    const hold = push.holdNext()
    const threadId = (await call(gw(), pat, 'GET', '/api/v1/threads')).body.items[0].id
    expect((await call(gw(), pat, 'POST', `/api/v1/threads/${threadId}/messages`, { clientMessageId: 'm1', text: 'hello' })).status).toBe(201)
    await hold.requested
    expect(push.held).toHaveLength(1)
    const heldTopic = push.held[0]!.headers.topic
    run.child.kill('SIGKILL')
    await killed(run.child)

    run = await startChild(dataDir, tls.caFile)
    const received = await push.waitFor(5, 15_000)
    await new Promise((r) => setTimeout(r, 500))
    expect(push.received).toHaveLength(5)
    expect(new Set(received.map((r) => r.endpoint))).toEqual(new Set(subs.map((s) => s.endpoint)))
    // The send whose answer the crash lost went again, with the same topic: the device shows it once.
    expect(push.received.map((r) => r.headers.topic)).toContain(heldTopic)
    expect(new Set(push.received.map((r) => r.headers.topic)).size).toBe(1)

    // Killed again with everything sent: nothing is sent twice after the restart.
    run.child.kill('SIGKILL')
    await killed(run.child)
    run = await startChild(dataDir, tls.caFile)
    const admin = await signInAs(gw(), 'nurse', PASSWORD)
    await new Promise((r) => setTimeout(r, 1500))
    expect(push.received).toHaveLength(5)
    const mine = await call(gw(), admin, 'GET', '/api/v1/notifications')
    expect(mine.body.items.map((n: any) => n.status)).toEqual(['sent', 'sent', 'sent', 'sent', 'sent'])
  })
})
