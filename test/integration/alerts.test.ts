import type { MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { build, type ReadingPayload } from '../../device-simulator/readings.ts'
import { api, auditOf, connectDevice, login, provision, startGateway, TestClock, waitFor, type TestDevice, type TestGateway } from '../helpers.ts'
import { closeSockets, connect } from '../live.ts'

let t: TestGateway | undefined
let devices: MqttClient[] = []

afterEach(async () => {
  closeSockets()
  await Promise.all(devices.map((c) => c.endAsync(true)))
  devices = []
  await t?.stop()
  t = undefined
})

const PASSWORD = 'correct horse battery'
const setGateway = (g: TestGateway) => {
  t = g
}

async function clinic(settings: Record<string, unknown> = {}, clock?: TestClock, dataDir?: string) {
  t = await startGateway({ 'alerts.tickMs': 20, ...settings }, dataDir, clock ? { clock } : {})
  const g = t.gateway
  const dev = await provision(g, 'bp_cuff')
  await g.users.add({ username: 'pat', password: PASSWORD, role: 'patient', patientId: dev.patientId })
  await g.users.add({ username: 'nurse', password: PASSWORD, role: 'provider', name: 'Nurse Joy' })
  await g.users.add({ username: 'other-nurse', password: PASSWORD, role: 'provider', name: 'Other' })
  await g.users.addToCareTeam(dev.patientId, 'nurse')
  const [patient, nurse, other] = await Promise.all([login(t, 'pat', PASSWORD), login(t, 'nurse', PASSWORD), login(t, 'other-nurse', PASSWORD)])
  const threadId = g.threads.ensure(dev.patientId).id
  return { t, dev, patient: patient.accessToken, nurse: nurse.accessToken, other: other.accessToken, threadId }
}

async function publish(t: TestGateway, dev: TestDevice, reading: ReadingPayload | ReadingPayload[]): Promise<void> {
  const client = await connectDevice(t, dev)
  devices.push(client)
  await client.publishAsync(`devices/${dev.deviceId}/readings`, JSON.stringify(reading), { qos: 1 })
}

const alertMessages = async (t: TestGateway, token: string, threadId: string) => {
  const res = await api(t, 'GET', `/api/v1/threads/${threadId}/messages?limit=100`, { token })
  expect(res.status).toBe(200)
  return (res.body.items as any[]).filter((m) => m.kind === 'alert')
}

describe('a crisis reading end to end', () => {
  it('reaches the provider\'s socket and the thread as an alert, and a normal reading after it says all clear', async () => {
    const { t, dev, nurse, patient, threadId } = await clinic()
    const live = await connect(t, { token: nurse })
    await live.subscribe(threadId)

    await publish(t, dev, build.bloodPressure(186, 112, 80, { seq: 1 }))
    const pushed = await live.next('alert', { change: 'raised' })
    expect(pushed.alert).toMatchObject({ patientId: dev.patientId, ruleId: 'bp-crisis', severity: 'urgent', status: 'open', count: 1 })
    expect(pushed.alert.lastValues).toMatchObject({ systolicMmHg: 186, diastolicMmHg: 112 })
    const inThread = await live.next('message', { threadId })
    const alertMsg = live.of('message', { threadId }).find((e) => e.message.kind === 'alert')
    expect(inThread).toBeTruthy()
    expect(alertMsg.message).toMatchObject({ kind: 'alert', from: { role: 'system' }, data: { event: 'raised', alert: { ruleId: 'bp-crisis', severity: 'urgent' } } })
    expect(alertMsg.message.text).toContain('186/112')
    expect(alertMsg.message.data.actions).toEqual(['acknowledge', 'resolve', 'snooze'])

    // The patient sees it in their thread too.
    expect((await alertMessages(t, patient, threadId)).map((m) => m.data.event)).toEqual(['raised'])

    // 165/105 is between the raise (> 180 / > 120) and the clear (< 160 and < 100) lines: nothing changes.
    await publish(t, dev, build.bloodPressure(165, 105, 80, { seq: 2 }))
    await waitFor(async () => (await api(t, 'GET', `/api/v1/patients/${dev.patientId}/readings`, { token: nurse })).body.items.length === 2)
    let open = await api(t, 'GET', '/api/v1/alerts', { token: nurse })
    expect(open.body.items).toHaveLength(1)

    await publish(t, dev, build.bloodPressure(128, 82, 70, { seq: 3 }))
    const cleared = await live.next('alert', { change: 'resolved' })
    expect(cleared.alert).toMatchObject({ status: 'resolved', resolution: 'auto', resolvedBy: null })
    const msgs = await alertMessages(t, nurse, threadId)
    expect(msgs.map((m) => m.data.event)).toEqual(['raised', 'resolved'])
    expect(msgs[1].text).toMatch(/^All clear: Hypertensive crisis/)
    open = await api(t, 'GET', '/api/v1/alerts', { token: nurse })
    expect(open.body.items).toHaveLength(0)
    const all = await api(t, 'GET', '/api/v1/alerts?status=resolved', { token: nurse })
    expect(all.body.items.map((a: any) => a.ruleId)).toEqual(['bp-crisis'])
  })

  it('keeps one open alert per patient and rule: a repeat counts, a worse reading raises the severity', async () => {
    const { t, nurse } = await clinic()
    const dev = await provision(t.gateway, 'glucometer')
    await t.gateway.users.addToCareTeam(dev.patientId, 'nurse')
    await publish(t, dev, [build.glucose(65, 'mg/dL', { seq: 1 })])
    await waitFor(async () => (await api(t, 'GET', '/api/v1/alerts', { token: nurse })).body.items.length === 1)
    await publish(t, dev, [build.glucose(66, 'mg/dL', { seq: 2 }), build.glucose(50, 'mg/dL', { seq: 3 })])
    const alert = await waitFor(async () => {
      const a = (await api(t, 'GET', '/api/v1/alerts', { token: nurse })).body.items[0]
      return a?.count === 3 ? a : undefined
    })
    expect(alert).toMatchObject({ ruleId: 'glucose-low', severity: 'urgent', count: 3 })
    const detail = await api(t, 'GET', `/api/v1/alerts/${alert.id}`, { token: nurse })
    expect(detail.body.events.map((e: any) => [e.type, e.details?.reason ?? null])).toEqual([
      ['raised', null],
      ['suppressed', 'duplicate'],
      ['severity_raised', null],
    ])
  })
})

describe('a batch of readings', () => {
  it('is evaluated reading by reading in measurement order, even as the patient\'s first', async () => {
    const { t, dev, nurse } = await clinic()
    const at = (minutesAgo: number) => new Date(Date.now() - minutesAgo * 60_000).toISOString()
    await publish(t, dev, [
      build.bloodPressure(190, 125, 80, { seq: 1, measuredAt: at(3) }),
      build.bloodPressure(118, 76, 70, { seq: 2, measuredAt: at(2) }),
      build.bloodPressure(191, 126, 80, { seq: 3, measuredAt: at(1) }),
    ])
    const items = await waitFor(async () => {
      const res = (await api(t, 'GET', '/api/v1/alerts?status=all', { token: nurse })).body.items as any[]
      return res.length === 2 ? res : undefined
    })
    expect(items.map((a) => [a.ruleId, a.status, a.lastValues.systolicMmHg]).sort()).toEqual([
      ['bp-crisis', 'open', 191],
      ['bp-crisis', 'resolved', 118],
    ])
  })
})

describe('acting on alerts', () => {
  it('acknowledges, snoozes within the limit and resolves with a note; others get 404 and patients 403', async () => {
    const { t, dev, nurse, other, patient, threadId } = await clinic()
    await publish(t, dev, build.bloodPressure(190, 100, 80, { seq: 1 }))
    const alert = await waitFor(async () => (await api(t, 'GET', '/api/v1/alerts', { token: nurse })).body.items[0])

    expect((await api(t, 'GET', `/api/v1/alerts/${alert.id}`, { token: other })).status).toBe(404)
    expect((await api(t, 'GET', '/api/v1/alerts', { token: other })).body.items).toEqual([])
    expect((await api(t, 'POST', `/api/v1/alerts/${alert.id}/acknowledge`, { token: patient, body: {} })).status).toBe(403)

    const tooLong = await api(t, 'POST', `/api/v1/alerts/${alert.id}/snooze`, { token: nurse, body: { minutes: 121 } })
    expect(tooLong.status).toBe(400)
    expect(tooLong.body).toMatchObject({ code: 'RPM_ERR_BAD_REQUEST', details: { field: 'minutes', max: 120 } })
    const snoozed = await api(t, 'POST', `/api/v1/alerts/${alert.id}/snooze`, { token: nurse, body: { minutes: 60, reason: 'rechecking after rest' } })
    expect(snoozed.status).toBe(200)
    expect(snoozed.body.snoozedUntil).toBeTruthy()

    // No body at all, as a button sends it.
    const ack = await api(t, 'POST', `/api/v1/alerts/${alert.id}/acknowledge`, { token: nurse })
    expect(ack.status).toBe(200)
    expect(ack.body).toMatchObject({ status: 'acknowledged', nextEscalationAt: null })
    expect((await api(t, 'POST', `/api/v1/alerts/${alert.id}/resolve`, { token: nurse, body: {} })).body).toMatchObject({ code: 'RPM_ERR_BAD_REQUEST' })
    const done = await api(t, 'POST', `/api/v1/alerts/${alert.id}/resolve`, { token: nurse, body: { note: 'Called the patient; repeat reading normal.' } })
    expect(done.body).toMatchObject({ status: 'resolved', resolution: 'manual', note: 'Called the patient; repeat reading normal.' })
    expect((await api(t, 'POST', `/api/v1/alerts/${alert.id}/resolve`, { token: nurse, body: { note: 'again' } })).status).toBe(409)

    const msgs = await alertMessages(t, patient, threadId)
    expect(msgs.map((m) => m.data.event)).toEqual(['raised', 'acknowledged', 'resolved'])
    expect(msgs[1].text).toBe('Nurse Joy acknowledged the alert: Hypertensive crisis')
    expect(auditOf(t, 'POST /api/v1/alerts/:alertId/acknowledge').map((r) => r.outcome)).toEqual(['denied'])
    expect(auditOf(t, 'alert.acknowledge').map((r) => r.outcome)).toEqual(['allowed'])
    expect(auditOf(t, 'alert.snooze').map((r) => r.outcome)).toEqual(['denied', 'allowed'])
  })
})

describe('escalation', () => {
  it('goes care team -> on call -> admins with reminders, stops on acknowledge, and survives a restart without firing twice', async () => {
    const clock = new TestClock(Date.parse('2026-11-25T09:00:00Z'))
    const c = await clinic({}, clock)
    const { dev, nurse } = c
    let t = c.t
    const g = t.gateway
    const oncallUser = (await g.users.add({ username: 'oncall', password: PASSWORD, role: 'provider', name: 'On Call' })).id
    const admin = await g.users.add({ username: 'boss', password: PASSWORD, role: 'admin', name: 'Admin' })
    const nurseId = (await login(t, 'nurse', PASSWORD)).user.id
    const shift = await api(t, 'POST', '/api/v1/on-call', { token: (await login(t, 'boss', PASSWORD)).accessToken, body: { username: 'oncall', endsAt: '2026-11-26T09:00:00Z' } })
    expect(shift.status).toBe(201)
    const escalations: any[] = []
    g.bus.on('alert.escalated', (e) => escalations.push(e))

    await publish(t, dev, build.bloodPressure(200, 125, 80, { seq: 1, measuredAt: new Date(clock.now()).toISOString() }))
    const alert = await waitFor(async () => (await api(t, 'GET', '/api/v1/alerts', { token: nurse })).body.items[0])
    expect(alert.nextEscalationAt).toBe('2026-11-25T09:10:00.000Z') // urgent: first reminder after 10 minutes

    clock.advanceSeconds(10 * 60)
    await waitFor(() => escalations.length === 1)
    expect(escalations[0]).toMatchObject({ tier: 0, reminder: 1 })
    clock.advanceSeconds(5 * 60) // 15 min: on call
    await waitFor(() => escalations.length === 2)
    expect(escalations[1]).toMatchObject({ tier: 1, tierName: 'on_call', reminder: 0, added: [oncallUser] })
    expect(escalations[1].recipients.sort()).toEqual([oncallUser, nurseId].sort())

    // The on-call provider now sees the patient while the alert is open.
    const oncall = await login(t, 'oncall', PASSWORD)
    expect((await api(t, 'GET', `/api/v1/alerts/${alert.id}`, { token: oncall.accessToken })).status).toBe(200)
    // ... but may not change the patient's care plan.
    const tune = await api(t, 'PUT', `/api/v1/patients/${dev.patientId}/thresholds/bp-crisis`, { token: oncall.accessToken, body: { override: { enabled: false }, reason: 'not on the care team' } })
    expect(tune.status).toBe(403)

    // Restart half way: the next step (admins at 30 min) fires once, late, from the database.
    const dataDir = t.dataDir
    await t.gateway.stop()
    clock.advanceSeconds(20 * 60) // 35 min
    t = await startGateway({ 'alerts.tickMs': 20 }, dataDir, { clock })
    setGateway(t)
    const after: any[] = []
    t.gateway.bus.on('alert.escalated', (e) => after.push(e))
    const detailNow = async () => (await api(t, 'GET', `/api/v1/alerts/${alert.id}`, { token: (await login(t, 'oncall', PASSWORD)).accessToken })).body
    let detail = await waitFor(async () => {
      const d = await detailNow()
      return d.tier === 2 ? d : undefined
    })
    await new Promise((r) => setTimeout(r, 200))
    detail = await detailNow()
    const steps = detail.events.filter((e: any) => e.type === 'escalated' || e.type === 'reminded')
    expect(steps.map((e: any) => [e.type, e.details.toTier ?? e.details.tier])).toEqual([['reminded', 0], ['escalated', 1], ['escalated', 2]])
    expect(steps[2].details.added).toContain(admin.id)
    // The step due at 25 min (a reminder) fired at 35 min as the tier-2 step due since 30 min: once, late.
    expect(steps[2].details.lateMs).toBe(10 * 60_000)

    const ack = await api(t, 'POST', `/api/v1/alerts/${alert.id}/acknowledge`, { token: (await login(t, 'oncall', PASSWORD)).accessToken, body: {} })
    expect(ack.status).toBe(200)
    const fired = after.length
    clock.advanceSeconds(60 * 60)
    await new Promise((r) => setTimeout(r, 200))
    expect(after).toHaveLength(fired)
    expect((await detailNow()).events.filter((e: any) => e.type === 'escalated' || e.type === 'reminded')).toHaveLength(3)
  })
})

describe('per-patient thresholds', () => {
  it('a provider overrides SpO2 for a COPD patient with a reason; versions are kept and audited', async () => {
    const { t, nurse, other } = await clinic()
    const dev = await provision(t.gateway, 'oximeter')
    await t.gateway.users.addToCareTeam(dev.patientId, 'nurse')
    const path = `/api/v1/patients/${dev.patientId}/thresholds/spo2-low`
    const override = { levels: [{ severity: 'warning', any: { spo2Percent: '< 88' } }, { severity: 'urgent', any: { spo2Percent: '< 85' } }], clear: { all: { spo2Percent: '>= 90' } } }

    const noReason = await api(t, 'PUT', path, { token: nurse, body: { override } })
    expect(noReason.status).toBe(400)
    const badField = await api(t, 'PUT', path, { token: nurse, body: { override: { levels: [{ severity: 'warning', any: { glucoseMgDl: '< 88' } }] }, reason: 'COPD baseline' } })
    expect(badField.status).toBe(400)
    expect(badField.body.details.field).toBe('override.levels[0].any.glucoseMgDl')
    expect((await api(t, 'PUT', path, { token: other, body: { override, reason: 'COPD baseline' } })).status).toBe(404)

    const set = await api(t, 'PUT', path, { token: nurse, body: { override, reason: 'COPD: baseline saturation 89-91%' } })
    expect(set.status).toBe(200)
    expect(set.body.version).toBe(1)

    // 89% would be a warning by default; for this patient it is not.
    await publish(t, dev, build.spo2(89, 80, { seq: 1 }))
    await publish(t, dev, build.spo2(86, 80, { seq: 2 }))
    const alert = await waitFor(async () => (await api(t, 'GET', `/api/v1/alerts?patientId=${dev.patientId}`, { token: nurse })).body.items[0])
    expect(alert).toMatchObject({ ruleId: 'spo2-low', severity: 'warning', count: 1, lastValues: { spo2Percent: 86 } })

    const reset = await api(t, 'DELETE', path, { token: nurse, body: { reason: 'Back to defaults after review' } })
    expect(reset.body.version).toBe(2)
    const history = await api(t, 'GET', `${path}/history`, { token: nurse })
    expect(history.body.items.map((v: any) => [v.version, v.override === null, v.reason])).toEqual([
      [2, true, 'Back to defaults after review'],
      [1, false, 'COPD: baseline saturation 89-91%'],
    ])
    expect(auditOf(t, 'thresholds.change').map((r) => r.outcome)).toEqual(['denied', 'denied', 'allowed', 'allowed'])
  })

  it('turning a rule off for a patient resolves its open alert, saying why, instead of escalating on', async () => {
    const { t, dev, nurse, threadId } = await clinic()
    await publish(t, dev, build.bloodPressure(85, 60, 70, { seq: 1 }))
    const alert = await waitFor(async () => (await api(t, 'GET', '/api/v1/alerts', { token: nurse })).body.items[0])
    expect(alert.ruleId).toBe('bp-low')
    const off = await api(t, 'PUT', `/api/v1/patients/${dev.patientId}/thresholds/bp-low`, { token: nurse, body: { override: { enabled: false }, reason: 'Runs low; asymptomatic, reviewed' } })
    expect(off.status).toBe(200)
    const done = (await api(t, 'GET', `/api/v1/alerts/${alert.id}`, { token: nurse })).body
    expect(done).toMatchObject({ status: 'resolved', resolution: 'auto', note: 'the rule is turned off for this patient', nextEscalationAt: null })
    const msgs = await alertMessages(t, nurse, threadId)
    expect(msgs.at(-1).text).toBe('No longer monitored: Low blood pressure — the rule is turned off for this patient')
    // And it stays quiet for this patient.
    await publish(t, dev, build.bloodPressure(84, 58, 70, { seq: 2 }))
    await waitFor(async () => (await api(t, 'GET', `/api/v1/patients/${dev.patientId}/readings`, { token: nurse })).body.items.length === 2)
    expect((await api(t, 'GET', '/api/v1/alerts', { token: nurse })).body.items).toEqual([])
  })
})
