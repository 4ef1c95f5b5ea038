import type { MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { build } from '../../device-simulator/readings.ts'
import { FakeFcm } from '../fakes/fcm.ts'
import { FakePushService, type PushReceived } from '../fakes/push-service.ts'
import { fakeTls } from '../fakes/tls.ts'
import { FakeTwilio } from '../fakes/twilio.ts'
import { api, call, connectDevice, signInAs, startGateway, tempDir, TestClock, waitFor, type Caller, type TestDevice, type TestGateway } from '../helpers.ts'
import { closeSockets, connect } from '../live.ts'

let t: TestGateway | undefined
let devices: MqttClient[] = []
const fakes: Array<{ close(): Promise<void> }> = []

afterEach(async () => {
  closeSockets()
  await Promise.all(devices.map((c) => c.endAsync(true)))
  devices = []
  await t?.stop()
  t = undefined
  await Promise.all(fakes.splice(0).map((f) => f.close()))
})

const PASSWORD = 'correct horse battery'
const settingsOf = new WeakMap<TestGateway, Record<string, unknown>>()
const PATIENT_NAME = 'Zebediah Quillfeather'
const NURSE_PHONE = '+15550100001'

interface Clinic {
  t: TestGateway
  dev: TestDevice
  patient: Caller
  nurse: Caller
  threadId: string
  clock: TestClock
}

/** A gateway whose push, FCM and SMS go to local fakes; one patient with a cuff and a nurse on the care team. */
async function clinic(opts: { twilio?: FakeTwilio; fcm?: FakeFcm; settings?: Record<string, unknown>; dataDir?: string } = {}): Promise<Clinic> {
  const tls = await fakeTls()
  const clock = new TestClock()
  const settings: Record<string, unknown> = {
    'alerts.tickMs': 20,
    'notify.tickMs': 20,
    'notify.caFile': tls.caFile,
    'notify.webpush.allowedHosts': ['127.0.0.1'],
    'notify.retryDelayMs': 1000,
    ...opts.settings,
  }
  if (opts.twilio) {
    Object.assign(settings, {
      'notify.sms.accountSid': opts.twilio.accountSid,
      'notify.sms.authToken': opts.twilio.authToken,
      'notify.sms.from': '+15550009999',
      'notify.sms.apiBaseUrl': opts.twilio.origin,
      'notify.sms.publicUrl': 'https://gateway.example.org',
      ...opts.settings,
    })
  }
  t = await startGateway(settings, opts.dataDir, { clock, ...(opts.fcm ? { fcm: opts.fcm.transport() } : {}) })
  settingsOf.set(t, settings)
  const g = t.gateway
  const patientRecord = await g.registry.addPatient({ name: PATIENT_NAME, id: 'mrn-48213', timezone: 'UTC' })
  const device = await g.registry.addDevice({ patientId: patientRecord.id, kind: 'bp_cuff' })
  const dev: TestDevice = { patientId: patientRecord.id, deviceId: device.id, secret: device.secret }
  await g.users.add({ username: 'pat', password: PASSWORD, role: 'patient', patientId: dev.patientId, name: PATIENT_NAME })
  await g.users.add({ username: 'nurse', password: PASSWORD, role: 'provider', name: 'Nurse Joy' })
  await g.users.addToCareTeam(dev.patientId, 'nurse')
  const [patient, nurse] = await Promise.all([signInAs(t, 'pat', PASSWORD), signInAs(t, 'nurse', PASSWORD)])
  return { t, dev, patient, nurse, threadId: g.threads.ensure(dev.patientId).id, clock }
}

async function pushService(): Promise<FakePushService> {
  const f = await FakePushService.start()
  fakes.push(f)
  return f
}

async function subscribe(c: Clinic, who: Caller, push: FakePushService) {
  const key = (await call(c.t, who, 'GET', '/api/v1/notifications/channels')).body.webpush.publicKey as string
  const subscription = push.subscription({ applicationServerKey: key })
  const res = await call(c.t, who, 'POST', '/api/v1/notifications/subscriptions', { type: 'webpush', subscription, label: 'Laptop' })
  expect(res.status).toBe(201)
  return { subscription, id: res.body.id as string }
}

async function publish(c: Clinic, reading: object): Promise<void> {
  const client = await connectDevice(c.t, c.dev)
  devices.push(client)
  await client.publishAsync(`devices/${c.dev.deviceId}/readings`, JSON.stringify(reading), { qos: 1 })
}

/** Consent to SMS and verify the number with the code Twilio was asked to text to it. */
async function verifiedSms(c: Clinic, who: Caller, twilio: FakeTwilio, phone = NURSE_PHONE): Promise<void> {
  const before = twilio.sent.length
  expect((await call(c.t, who, 'PUT', '/api/v1/notifications/sms', { phone, consent: true })).status).toBe(200)
  const sent = await twilio.waitFor(before + 1)
  const code = /code is (\d{6})/.exec(sent[before]!.body)![1]
  expect((await call(c.t, who, 'POST', '/api/v1/notifications/sms/verify', { code })).body.active).toBe(true)
}

const send = (c: Clinic, who: Caller, text: string, id = `c-${Math.random()}`) =>
  call(c.t, who, 'POST', `/api/v1/threads/${c.threadId}/messages`, { clientMessageId: id, text })

const outbox = (c: Clinic) => c.t.gateway.store.sqlite.prepare('SELECT * FROM notifications ORDER BY id').all() as any[]
const metric = async (c: Clinic, name: string) => (await api(c.t, 'GET', '/metrics')).text.split('\n').filter((l) => l.startsWith(name))

/**
 * Nothing a lock screen shows or a push service stores names the patient, their values or their
 * words. The gateway's own random ids are taken out first: their characters can spell "186".
 */
function expectNoPatientData(c: Clinic, everything: string, words: string[] = []) {
  const scrubbed = everything.replace(/\b(ntf|alt|thr|pt|usr|occ|rem|sch)-[0-9a-z]+/g, '<id>')
  for (const secret of [PATIENT_NAME, 'Zebediah', c.dev.patientId, c.dev.deviceId, ...words]) expect(everything).not.toContain(secret)
  for (const value of ['186', '112']) expect(scrubbed).not.toContain(value)
}

/** What the push service and the lock screen see (the endpoint and topic are the service's and the gateway's own). */
const all = (p: PushReceived) => JSON.stringify({ text: p.text, ttl: p.headers.ttl, urgency: p.headers.urgency })

describe('Web Push', () => {
  it('tells an offline provider of a patient\'s new message at once, with no patient data, and the patient of the reply', async () => {
    const push = await pushService()
    const c = await clinic()
    await subscribe(c, c.nurse, push)
    await subscribe(c, c.patient, push)

    expect((await send(c, c.patient, 'My chest hurts since Tuesday')).status).toBe(201)
    const [toNurse] = await push.waitFor(1)
    expect(toNurse!.payload).toEqual({
      title: 'New message from a patient on your team',
      body: 'Sign in to read it.',
      tag: `thread-${c.threadId}`,
      data: { type: 'message', notificationId: expect.stringMatching(/^ntf-/), threadId: c.threadId },
    })
    expect(toNurse!.headers).toMatchObject({ urgency: 'normal', contentEncoding: 'aes128gcm' })
    expect(toNurse!.headers.ttl).toBeGreaterThan(3600)
    expect(toNurse!.vapid.sub).toMatch(/^mailto:/)
    expectNoPatientData(c, all(toNurse!), ['chest', 'Tuesday'])

    expect((await send(c, c.nurse, 'Please call 911 now')).status).toBe(201)
    const [, toPatient] = await push.waitFor(2)
    expect(toPatient!.payload).toMatchObject({ title: 'New message from your care team', data: { type: 'message', threadId: c.threadId } })
    expectNoPatientData(c, all(toPatient!), ['911'])
    await waitFor(async () => (await metric(c, 'rpm_notifications_sent_total{channel="webpush"} 2')).length === 1, 5000, 'sent metric')
  })

  it('waits for a connected provider to read; pushes only what is still unread after the delay', async () => {
    const push = await pushService()
    const c = await clinic({ settings: { 'notify.messageDelaySeconds': 30 } })
    await subscribe(c, c.nurse, push)
    const live = await connect(c.t, { token: c.nurse.token })
    await live.subscribe(c.threadId)

    const first = await send(c, c.patient, 'first')
    await new Promise((r) => setTimeout(r, 300))
    expect(push.received).toHaveLength(0) // connected: not yet
    // Read within the delay: no push at all.
    expect((await call(c.t, c.nurse, 'POST', `/api/v1/threads/${c.threadId}/read`, { seq: first.body.seq })).status).toBeLessThan(300)
    c.clock.advanceSeconds(31)
    await waitFor(() => outbox(c).find((n) => n.status === 'dropped' && n.reason === 'read'), 5000, 'dropped as read')
    expect(push.received).toHaveLength(0)

    // Two more, unread: one notification after the delay, not two.
    await send(c, c.patient, 'second')
    await send(c, c.patient, 'third')
    await new Promise((r) => setTimeout(r, 200))
    expect(push.received).toHaveLength(0)
    c.clock.advanceSeconds(31)
    await push.waitFor(1)
    await new Promise((r) => setTimeout(r, 300))
    expect(push.received).toHaveLength(1)
  })

  it('removes a subscription the push service says is gone (410), and sends nothing more there', async () => {
    const push = await pushService()
    const c = await clinic()
    const { subscription, id } = await subscribe(c, c.nurse, push)
    push.gone(subscription.endpoint)
    await send(c, c.patient, 'hello')
    await waitFor(() => outbox(c).find((n) => n.status === 'dropped' && n.reason === 'endpoint_gone'), 5000, 'dropped as gone')
    const listed = await call(c.t, c.nurse, 'GET', '/api/v1/notifications/subscriptions')
    expect(listed.body.items.map((s: any) => s.id)).not.toContain(id)
    expect(await metric(c, 'rpm_notifications_dropped_total{channel="webpush",reason="endpoint_gone"} 1')).toHaveLength(1)
    expect(push.received).toHaveLength(0)
  })

  it('retries a push service that is briefly down with growing waits, then delivers once; gives up after notify.maxAttempts and reports it', async () => {
    const push = await pushService()
    const c = await clinic({ settings: { 'notify.maxAttempts': 3 } })
    await subscribe(c, c.nurse, push)
    push.failNext(2, 503)
    await send(c, c.patient, 'one')
    await waitFor(() => outbox(c)[0]?.attempts === 1 && outbox(c)[0].status === 'pending', 5000, 'first failure')
    expect(outbox(c)[0].reason).toBe('http_503')
    c.clock.advanceSeconds(1.1) // first retry after retryDelayMs (1 s)
    await waitFor(() => outbox(c)[0]?.attempts === 2 && outbox(c)[0].status === 'pending', 5000, 'second failure')
    c.clock.advanceSeconds(1.1) // the second waits 2 s: not yet
    await new Promise((r) => setTimeout(r, 200))
    expect(outbox(c)[0].attempts).toBe(2)
    c.clock.advanceSeconds(1)
    await push.waitFor(1)
    await waitFor(() => outbox(c)[0]?.status === 'sent', 5000, 'recorded as sent')
    expect(outbox(c)[0]).toMatchObject({ status: 'sent', attempts: 3 })
    expect(await metric(c, 'rpm_notifications_retried_total{channel="webpush",reason="http_503"} 2')).toHaveLength(1)

    push.failNext(3, 500)
    c.clock.advanceSeconds(600)
    await send(c, c.patient, 'two')
    for (let i = 0; i < 3; i++) {
      await waitFor(() => outbox(c)[1]?.attempts === i + 1 && outbox(c)[1].status !== 'sending', 5000, `attempt ${i + 1}`)
      c.clock.advanceSeconds(10)
    }
    await waitFor(() => outbox(c)[1]?.status === 'failed', 5000, 'given up')
    expect(push.received).toHaveLength(1)
    expect(await metric(c, 'rpm_notifications_failed_total{channel="webpush",reason="http_500"} 1')).toHaveLength(1)
    await c.t.gateway.users.add({ username: 'admin', password: PASSWORD, role: 'admin' })
    const admin = await signInAs(c.t, 'admin', PASSWORD)
    const failed = await call(c.t, admin, 'GET', '/api/v1/notifications?status=failed')
    expect(failed.body.items).toEqual([expect.objectContaining({ userId: c.nurse.userId, channel: 'webpush', kind: 'message', status: 'failed', attempts: 3, reason: 'http_500' })])
    // The nurse sees their own; the patient may not list the nurse's.
    expect((await call(c.t, c.patient, 'GET', `/api/v1/notifications?userId=${c.nurse.userId}`)).status).toBe(403)
    const ready = await api(c.t, 'GET', '/readyz')
    expect(ready.status).toBe(200)
    expect(ready.body.checks.notifications).toBe('degraded')
  })

  it('holds messages during quiet hours until they end; an urgent alert goes through at once', async () => {
    const push = await pushService()
    const c = await clinic()
    await subscribe(c, c.nurse, push)
    // Quiet from now (UTC) for two hours.
    const now = new Date(c.clock.now())
    const hhmm = (d: Date) => d.toISOString().slice(11, 16)
    const start = new Date(now.getTime() - 60_000)
    const end = new Date(now.getTime() + 2 * 3600_000)
    const prefs = await call(c.t, c.nurse, 'PUT', '/api/v1/notifications/preferences', {
      channels: { webpush: true, fcm: true, sms: true }, messages: true, quietHours: { start: hhmm(start), end: hhmm(end), timezone: 'UTC' },
    })
    expect(prefs.status).toBe(200)
    await send(c, c.patient, 'not urgent')
    await waitFor(() => outbox(c)[0]?.not_before > c.clock.now() + 3600_000, 5000, 'deferred')
    await publish(c, build.bloodPressure(186, 112, 80, { seq: 1 }))
    const [alert] = await push.waitFor(1)
    expect(alert!.payload).toMatchObject({ title: 'Urgent alert for a patient on your team', data: { type: 'alert' } })
    expect(alert!.headers.urgency).toBe('high')
    expect(push.received).toHaveLength(1)
    // Past the end, the message goes (the alert, still open, is sounded again by escalation too).
    c.clock.advanceSeconds(2 * 3600 + 60)
    await waitFor(() => push.received.find((p) => (p.payload as any).data.type === 'message'), 5000, 'the held message')
  })

  it('gives each unread message its full delay while the reader is connected, and pushes at once when they go offline', async () => {
    const push = await pushService()
    const c = await clinic({ settings: { 'notify.messageDelaySeconds': 30 } })
    await subscribe(c, c.nurse, push)
    const live = await connect(c.t, { token: c.nurse.token })
    await live.subscribe(c.threadId)
    const first = await send(c, c.patient, 'first')
    await call(c.t, c.nurse, 'POST', `/api/v1/threads/${c.threadId}/read`, { seq: first.body.seq })
    // A second message 25 s later joins the waiting notification: it gets its own 30 s.
    c.clock.advanceSeconds(25)
    await send(c, c.patient, 'second')
    c.clock.advanceSeconds(6)
    await new Promise((r) => setTimeout(r, 300))
    expect(push.received).toHaveLength(0)
    c.clock.advanceSeconds(25)
    await push.waitFor(1)

    // Offline now: a new message is pushed at once, whatever was waiting.
    await send(c, c.patient, 'third')
    await new Promise((r) => setTimeout(r, 300))
    expect(push.received).toHaveLength(1)
    live.ws.close()
    await waitFor(() => live.ws.readyState === live.ws.CLOSED, 5000, 'socket closed')
    await new Promise((r) => setTimeout(r, 200)) // the gateway hears the close
    await send(c, c.patient, 'fourth')
    await push.waitFor(2)
  })

  it('drops an alert\'s waiting push once it is acknowledged, and honours a channel turned off', async () => {
    const push = await pushService()
    const c = await clinic()
    await subscribe(c, c.nurse, push)
    push.failNext(1, 503)
    await publish(c, build.bloodPressure(186, 112, 80, { seq: 1 }))
    await waitFor(() => outbox(c).find((n) => n.kind === 'alert' && n.attempts === 1 && n.status === 'pending'), 5000, 'a failed first try')
    const alertId = outbox(c).find((n) => n.kind === 'alert').ref_id
    expect((await call(c.t, c.nurse, 'POST', `/api/v1/alerts/${alertId}/acknowledge`)).status).toBe(200)
    c.clock.advanceSeconds(5)
    await waitFor(() => outbox(c).find((n) => n.kind === 'alert' && n.status === 'dropped' && n.reason === 'alert_closed'), 5000, 'dropped as acknowledged')
    expect(push.received).toHaveLength(0)

    const prefs = await call(c.t, c.nurse, 'PUT', '/api/v1/notifications/preferences', { channels: { webpush: false, fcm: true, sms: true }, messages: true, quietHours: null })
    expect(prefs.body.channels.webpush).toBe(false)
    await send(c, c.patient, 'hello')
    await waitFor(() => outbox(c).find((n) => n.kind === 'message' && n.reason === 'preference'), 5000, 'dropped by preference')
    expect(push.received).toHaveLength(0)
  })

  it('lets each user remove only their own subscriptions, and takes current time zone names for quiet hours', async () => {
    const push = await pushService()
    const c = await clinic()
    const { id } = await subscribe(c, c.nurse, push)
    expect((await call(c.t, c.patient, 'DELETE', `/api/v1/notifications/subscriptions/${id}`)).status).toBe(404)
    expect((await call(c.t, c.nurse, 'DELETE', `/api/v1/notifications/subscriptions/${id}`)).status).toBe(204)
    expect((await call(c.t, c.nurse, 'GET', '/api/v1/notifications/subscriptions')).body.items).toEqual([])
    for (const timezone of ['Asia/Kolkata', 'Europe/Kyiv', 'Etc/UTC', 'America/New_York']) {
      const res = await call(c.t, c.nurse, 'PUT', '/api/v1/notifications/preferences', { channels: { webpush: true, fcm: true, sms: true }, messages: true, quietHours: { start: '22:00', end: '07:00', timezone } })
      expect(res.status, timezone).toBe(200)
    }
    const bad = await call(c.t, c.nurse, 'PUT', '/api/v1/notifications/preferences', { channels: { webpush: true, fcm: true, sms: true }, messages: true, quietHours: { start: '22:00', end: '07:00', timezone: 'Mars/Olympus' } })
    expect(bad.status).toBe(400)
    expect(bad.body.details.field).toBe('quietHours.timezone')
  })

  it('refuses subscriptions it must not send to, naming the field', async () => {
    const push = await pushService()
    const c = await clinic()
    const good = push.subscription()
    const cases: Array<[unknown, string]> = [
      [{ type: 'webpush', subscription: { ...good, endpoint: 'https://169.254.169.254/latest/meta-data' } }, 'subscription.endpoint'],
      [{ type: 'webpush', subscription: { ...good, endpoint: good.endpoint.replace('https:', 'http:') } }, 'subscription.endpoint'],
      [{ type: 'webpush', subscription: { ...good, keys: { ...good.keys, p256dh: good.keys.p256dh.replace(/^B/, 'A') } } }, 'subscription.keys.p256dh'],
      [{ type: 'fcm', token: 'x'.repeat(40), platform: 'android' }, undefined as unknown as string],
    ]
    for (const [body, field] of cases) {
      const res = await call(c.t, c.nurse, 'POST', '/api/v1/notifications/subscriptions', body)
      if (field) {
        expect(res.status, JSON.stringify(body)).toBe(400)
        expect(res.body.details.field).toBe(field)
      } else {
        expect(res.status).toBe(409) // FCM not configured
        expect(res.body.code).toBe('RPM_ERR_CHANNEL_OFF')
      }
    }
    expect((await call(c.t, undefined, 'POST', '/api/v1/notifications/subscriptions', { type: 'webpush', subscription: good })).status).toBe(401)
    // The same browser registered twice is one subscription.
    expect((await call(c.t, c.nurse, 'POST', '/api/v1/notifications/subscriptions', { type: 'webpush', subscription: good })).status).toBe(201)
    expect((await call(c.t, c.nurse, 'POST', '/api/v1/notifications/subscriptions', { type: 'webpush', subscription: good })).status).toBe(200)
    expect((await call(c.t, c.nurse, 'GET', '/api/v1/notifications/subscriptions')).body.items).toHaveLength(1)
  })
})

describe('reminders', () => {
  it('push the patient a reminder that names no medication', async () => {
    const push = await pushService()
    const c = await clinic({ settings: { 'reminders.cron': '* * * * * *' } })
    await subscribe(c, c.patient, push)
    const due = new Date(c.clock.now() + 2 * 60_000)
    const hhmm = due.toISOString().slice(11, 16)
    const added = await call(c.t, c.nurse, 'POST', `/api/v1/patients/${c.dev.patientId}/reminders`, { kind: 'medication', medication: 'Warfarin', dose: '5 mg', times: [hhmm] })
    expect(added.status).toBe(201)
    c.clock.advanceSeconds(3 * 60)
    const [reminder] = await push.waitFor(1)
    expect(reminder!.payload).toMatchObject({ title: 'Reminder from your care team', body: 'Open the app to see it.', data: { type: 'reminder', occurrenceId: expect.any(String) } })
    expectNoPatientData(c, all(reminder!), ['Warfarin', '5 mg'])
  })
})

describe('FCM', () => {
  it('sends urgent alerts at high priority and messages at normal, with ids only; removes an UNREGISTERED token', async () => {
    const fcm = await FakeFcm.start('rpm-test')
    fakes.push(fcm)
    const c = await clinic({ fcm })
    const token = `fcm-${'a'.repeat(40)}`
    const reg = await call(c.t, c.nurse, 'POST', '/api/v1/notifications/subscriptions', { type: 'fcm', token, platform: 'android' })
    expect(reg.status).toBe(201)

    await publish(c, build.bloodPressure(186, 112, 80, { seq: 1 }))
    const [alert] = await fcm.waitFor(1)
    expect(alert!.authorization).toBe(`Bearer ${fcm.accessToken}`)
    expect(alert!.message).toMatchObject({
      token,
      notification: { title: 'Urgent alert for a patient on your team', body: 'Sign in to see it and respond.' },
      data: { type: 'alert', alertId: expect.stringMatching(/^alt-/), notificationId: expect.stringMatching(/^ntf-/) },
      android: { priority: 'high', collapse_key: expect.stringMatching(/^alert-/) },
      apns: { headers: { 'apns-priority': '10' } },
    })
    expect(Object.keys(alert!.message.data as object).sort()).toEqual(['alertId', 'notificationId', 'type'])
    expectNoPatientData(c, JSON.stringify(alert!.message))

    await send(c, c.patient, 'question about my pills')
    const [, message] = await fcm.waitFor(2)
    expect(message!.message).toMatchObject({ android: { priority: 'normal' }, apns: { headers: { 'apns-priority': '5' } }, data: { type: 'message', threadId: c.threadId } })
    expectNoPatientData(c, JSON.stringify(message!.message), ['pills'])

    fcm.unregister(token)
    await send(c, c.patient, 'another')
    await waitFor(() => outbox(c).find((n) => n.reason === 'endpoint_gone'), 5000, 'token dropped')
    expect((await call(c.t, c.nurse, 'GET', '/api/v1/notifications/subscriptions')).body.items).toEqual([])
    expect(await metric(c, 'rpm_notifications_dropped_total{channel="fcm",reason="endpoint_gone"} 1')).toHaveLength(1)
  })
})

describe('SMS', () => {
  it('texts only after consent; the form Twilio receives carries no patient data; STOP (21610) is recorded and honoured', async () => {
    const twilio = await FakeTwilio.start()
    fakes.push(twilio)
    const c = await clinic({ twilio })
    // No consent yet: a test notification has nowhere to go.
    expect((await call(c.t, c.nurse, 'POST', '/api/v1/notifications/test')).body).toEqual({ queued: 0 })
    c.clock.advanceSeconds(61)
    expect((await call(c.t, c.nurse, 'PUT', '/api/v1/notifications/sms', { phone: '555-0100', consent: true })).body.details.field).toBe('phone')
    const consent = await call(c.t, c.nurse, 'PUT', '/api/v1/notifications/sms', { phone: NURSE_PHONE, consent: true, source: 'console settings' })
    expect(consent.status).toBe(200)
    expect(consent.body).toMatchObject({ phone: NURSE_PHONE, active: false, verifiedAt: null, consentSource: expect.stringContaining('console settings'), optedOutAt: null })
    expect(Date.parse(consent.body.consentedAt)).toBe(c.clock.now())
    // Nothing but the code goes to a number until the code comes back.
    const [codeSms] = await twilio.waitFor(1)
    expect(codeSms).toMatchObject({ to: NURSE_PHONE, from: '+15550009999' })
    expect(codeSms!.body).toMatch(/^Your rpm-gateway verification code is \d{6}\. It expires in 10 minutes\.$/)
    c.clock.advanceSeconds(61)
    expect((await call(c.t, c.nurse, 'POST', '/api/v1/notifications/test')).body).toEqual({ queued: 0 })
    const code = /code is (\d{6})/.exec(codeSms!.body)![1]!
    const wrong = await call(c.t, c.nurse, 'POST', '/api/v1/notifications/sms/verify', { code: String((Number(code) + 1) % 1_000_000).padStart(6, '0') })
    expect(wrong.status).toBe(400)
    expect(wrong.body.details.field).toBe('code')
    const verified = await call(c.t, c.nurse, 'POST', '/api/v1/notifications/sms/verify', { code })
    expect(verified.body).toMatchObject({ active: true, verifiedAt: expect.any(String) })
    c.clock.advanceSeconds(61)

    expect((await call(c.t, c.nurse, 'POST', '/api/v1/notifications/test')).body).toEqual({ queued: 1 })
    const [, sms] = await twilio.waitFor(2)
    expect(sms).toMatchObject({ to: NURSE_PHONE, from: '+15550009999', authorization: twilio.accountSid })
    expect(sms!.body).toBe('Test notification. Notifications reach this device.')
    expect(sms!.statusCallback).toMatch(/^https:\/\/gateway\.example\.org\/api\/v1\/notifications\/sms\/status\?notification=ntf-/)

    // Delivery status: a signed callback is recorded; a forged one is refused.
    const url = sms!.statusCallback!
    const params = { MessageSid: sms!.sid, MessageStatus: 'delivered', AccountSid: twilio.accountSid, To: NURSE_PHONE }
    const good = twilio.signedCallback(url, params)
    const path = url.replace('https://gateway.example.org', '')
    const ok = await fetch(`${c.t.urls.http}${path}`, { method: 'POST', headers: good.headers, body: good.body })
    expect(ok.status).toBe(204)
    expect(outbox(c)[0]).toMatchObject({ status: 'sent', delivery_status: 'delivered', provider_ref: sms!.sid })
    const forged = twilio.signedCallback(url, { ...params, MessageStatus: 'failed' }, { badSignature: true })
    const no = await fetch(`${c.t.urls.http}${path}`, { method: 'POST', headers: forged.headers, body: forged.body })
    expect(no.status).toBe(403)
    expect(((await no.json()) as { code: string }).code).toBe('RPM_ERR_WEBHOOK_SIGNATURE')
    expect(outbox(c)[0].delivery_status).toBe('delivered')

    // A test texts a number nobody verified: at most one a minute.
    const soon = await call(c.t, c.nurse, 'POST', '/api/v1/notifications/test')
    expect(soon.status).toBe(429)
    expect(soon.body.code).toBe('RPM_ERR_TOO_FREQUENT')
    c.clock.advanceSeconds(61)

    // The nurse replied STOP to an earlier text: Twilio refuses with 21610; it is recorded and no more texts are tried.
    twilio.optOut(NURSE_PHONE)
    expect((await call(c.t, c.nurse, 'POST', '/api/v1/notifications/test')).body).toEqual({ queued: 1 })
    await waitFor(() => outbox(c).find((n) => n.reason === 'opted_out'), 5000, 'opted out')
    const after = await call(c.t, c.nurse, 'GET', '/api/v1/notifications/sms')
    expect(after.body).toMatchObject({ active: false, optOutSource: expect.stringContaining('21610') })
    c.clock.advanceSeconds(61)
    expect((await call(c.t, c.nurse, 'POST', '/api/v1/notifications/test')).body).toEqual({ queued: 0 })
    expect(twilio.sent).toHaveLength(2) // the code and the first test
    expect(twilio.refused).toHaveLength(1)
  })

  it('does not text twice when the answer to a send was lost at a stop and Twilio\'s status callback says it went', async () => {
    const twilio = await FakeTwilio.start()
    fakes.push(twilio)
    const dataDir = tempDir()
    const c = await clinic({ twilio, dataDir })
    await verifiedSms(c, c.nurse, twilio)
    twilio.loseNextAnswer()
    expect((await call(c.t, c.nurse, 'POST', '/api/v1/notifications/test')).body).toEqual({ queued: 1 })
    const [, first] = await twilio.waitFor(2)
    // Stopped while Twilio's answer is outstanding: the send's outcome is unknown.
    const settings = settingsOf.get(c.t)!
    await c.t.gateway.stop()
    t = await startGateway(settings, dataDir, { clock: c.clock })
    const row = () => t!.gateway.store.sqlite.prepare("SELECT * FROM notifications WHERE channel = 'sms'").get() as any
    expect(row()).toMatchObject({ status: 'pending', in_doubt: 1, attempts: 1 })
    expect(row().not_before).toBe(c.clock.now() + 120_000) // notify.sms.inDoubtWaitSeconds

    // Twilio reports the message it has: it went, so it is recorded as sent and not texted again.
    const url = first!.statusCallback!
    const cb = twilio.signedCallback(url, twilio.callbackParams(first!, 'delivered'))
    const res = await fetch(`${t.urls.http}${url.replace('https://gateway.example.org', '')}`, { method: 'POST', headers: cb.headers, body: cb.body })
    expect(res.status).toBe(204)
    expect(row()).toMatchObject({ status: 'sent', in_doubt: 0, provider_ref: first!.sid, delivery_status: 'delivered' })
    c.clock.advanceSeconds(300)
    await new Promise((r) => setTimeout(r, 300))
    expect(twilio.sent).toHaveLength(2) // the code, and the test once

    // Without a callback (none configured, or it never came), it is sent again after the wait: the documented window.
    twilio.loseNextAnswer()
    const nurse = c.nurse
    expect((await call(t, nurse, 'POST', '/api/v1/notifications/test')).body).toEqual({ queued: 1 })
    await twilio.waitFor(3)
    await t.gateway.stop()
    t = await startGateway(settings, dataDir, { clock: c.clock })
    c.clock.advanceSeconds(121)
    await twilio.waitFor(4)
    await waitFor(() => (t!.gateway.store.sqlite.prepare("SELECT status FROM notifications WHERE channel = 'sms' ORDER BY id DESC").get() as any).status === 'sent', 5000, 'resent')
    expect(twilio.sent[3]!.body).toBe(twilio.sent[2]!.body)
  })

  it('does not send again after a timeout that may have texted, until Twilio\'s callback says whether it went', async () => {
    const twilio = await FakeTwilio.start()
    fakes.push(twilio)
    const c = await clinic({ twilio, settings: { 'notify.timeoutMs': 300 } })
    await verifiedSms(c, c.nurse, twilio)
    twilio.loseNextAnswer()
    await call(c.t, c.nurse, 'POST', '/api/v1/notifications/test')
    const [, first] = await twilio.waitFor(2)
    await waitFor(() => outbox(c)[0]?.in_doubt === 1, 5000, 'in doubt after the timeout')
    expect(outbox(c)[0]).toMatchObject({ status: 'pending', attempts: 1 })
    c.clock.advanceSeconds(60)
    await new Promise((r) => setTimeout(r, 300))
    expect(twilio.sent).toHaveLength(2) // the code, and the test once
    const url = first!.statusCallback!
    const cb = twilio.signedCallback(url, twilio.callbackParams(first!, 'sent'))
    expect((await fetch(`${c.t.urls.http}${url.replace('https://gateway.example.org', '')}`, { method: 'POST', headers: cb.headers, body: cb.body })).status).toBe(204)
    expect(outbox(c)[0]).toMatchObject({ status: 'sent', provider_ref: first!.sid })
    c.clock.advanceSeconds(600)
    await new Promise((r) => setTimeout(r, 300))
    expect(twilio.sent).toHaveLength(2)

    // A callback with a forged signature changes nothing and is refused.
    const forged = twilio.signedCallback('https://gateway.example.org/api/v1/notifications/sms/inbound', { From: NURSE_PHONE, Body: 'STOP' }, { badSignature: true })
    const res = await fetch(`${c.t.urls.http}/api/v1/notifications/sms/inbound`, { method: 'POST', headers: forged.headers, body: forged.body })
    expect(res.status).toBe(403)
    expect((await call(c.t, c.nurse, 'GET', '/api/v1/notifications/sms')).body.active).toBe(true)
  })

  it('refuses Twilio callbacks when notify.sms.publicUrl is not set: their signature cannot be checked', async () => {
    const twilio = await FakeTwilio.start()
    fakes.push(twilio)
    const c = await clinic({ twilio, settings: { 'notify.sms.publicUrl': '' } })
    const url = `${c.t.urls.http}/api/v1/notifications/sms/inbound`
    const signed = twilio.signedCallback(url, { From: NURSE_PHONE, Body: 'STOP' })
    const res = await fetch(url, { method: 'POST', headers: signed.headers, body: signed.body })
    expect(res.status).toBe(409)
    expect(((await res.json()) as { code: string }).code).toBe('RPM_ERR_CHANNEL_OFF')
  })

  it('a STOP reply through the inbound webhook withdraws consent; START restores it', async () => {
    const twilio = await FakeTwilio.start()
    fakes.push(twilio)
    const c = await clinic({ twilio })
    await verifiedSms(c, c.nurse, twilio)
    const url = 'https://gateway.example.org/api/v1/notifications/sms/inbound'
    const reply = async (body: string) => {
      const r = twilio.signedCallback(url, { From: NURSE_PHONE, To: '+15550009999', Body: body, AccountSid: twilio.accountSid, MessageSid: 'SM' + '0'.repeat(32) })
      return fetch(`${c.t.urls.http}/api/v1/notifications/sms/inbound`, { method: 'POST', headers: r.headers, body: r.body })
    }
    expect((await reply(' stop ')).status).toBe(200)
    expect((await call(c.t, c.nurse, 'GET', '/api/v1/notifications/sms')).body).toMatchObject({ active: false, optOutSource: 'sms reply STOP' })
    expect((await reply('START')).status).toBe(200)
    expect((await call(c.t, c.nurse, 'GET', '/api/v1/notifications/sms')).body).toMatchObject({ active: true, consentSource: 'sms reply START' })
    // Consent withdrawn in the app is not given back by a START reply.
    expect((await call(c.t, c.nurse, 'DELETE', '/api/v1/notifications/sms')).body.active).toBe(false)
    expect((await reply('START')).status).toBe(200)
    expect((await call(c.t, c.nurse, 'GET', '/api/v1/notifications/sms')).body).toMatchObject({ active: false, optOutSource: expect.stringContaining('via api') })
  })
})
