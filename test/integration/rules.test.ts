import { cpSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { build, type ReadingPayload } from '../../device-simulator/readings.ts'
import type { Alert } from '../../src/rules/types.ts'
import { api, connectDevice, login, provision, startGateway, tempDir, TestClock, waitFor, type TestDevice, type TestGateway } from '../helpers.ts'

const SHIPPED = fileURLToPath(new URL('../../rules', import.meta.url))
const PASSWORD = 'correct horse battery'
const HOUR = 3600

let t: TestGateway | undefined
let clients: MqttClient[] = []
const dirs: string[] = []

afterEach(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)))
  clients = []
  await t?.stop()
  t = undefined
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
})

/** A copy of the shipped rules in a temp directory the test may edit. */
function rulesCopy(): string {
  const dir = tempDir('rpm-rules-')
  dirs.push(dir)
  cpSync(SHIPPED, dir, { recursive: true })
  return dir
}

/** Replaces `from` with `to` in a rule file; fails the test if `from` is not there. */
function edit(dir: string, file: string, from: string, to: string): string {
  const text = readFileSync(path.join(dir, file), 'utf8')
  if (!text.includes(from)) throw new Error(`${file} has no ${from}`)
  const changed = text.replace(from, to)
  writeFileSync(path.join(dir, file), changed)
  return changed
}

/** A gateway with a provider (nurse) and a way to add patients in her care. */
async function clinic(settings: Record<string, unknown> = {}, clock?: TestClock, dataDir?: string) {
  t = await startGateway({ 'alerts.tickMs': 20, ...settings }, dataDir, clock ? { clock } : {})
  const g = t.gateway
  if (!dataDir) await g.users.add({ username: 'nurse', password: PASSWORD, role: 'provider', name: 'Nurse Joy' })
  const gw = t
  return {
    t: gw,
    /** Signs in again each time: a TestClock moved by hours outlives any access token. */
    nurse: async () => (await login(gw, 'nurse', PASSWORD)).accessToken,
    patient: async (kind: Parameters<typeof provision>[1]) => {
      const dev = await provision(g, kind)
      await g.users.addToCareTeam(dev.patientId, 'nurse')
      return dev
    },
  }
}

async function publish(gw: TestGateway, dev: TestDevice, reading: ReadingPayload | ReadingPayload[]): Promise<void> {
  const client = await connectDevice(gw, dev)
  clients.push(client)
  await client.publishAsync(`devices/${dev.deviceId}/readings`, JSON.stringify(reading), { qos: 1 })
}

const alertsOf = async (gw: TestGateway, token: string, patientId: string, status = 'all'): Promise<Alert[]> => {
  const res = await api(gw, 'GET', `/api/v1/alerts?status=${status}&patientId=${patientId}`, { token })
  expect(res.status).toBe(200)
  return res.body.items
}

const detailOf = async (gw: TestGateway, token: string, alertId: string) => {
  const res = await api(gw, 'GET', `/api/v1/alerts/${alertId}`, { token })
  expect(res.status).toBe(200)
  return res.body as Alert & { events: Array<{ type: string; actor: string | null; details: Record<string, any> | null }> }
}

const readingCount = (gw: TestGateway, patientId: string): number =>
  (gw.gateway.store.sqlite.prepare('SELECT COUNT(*) AS n FROM readings WHERE patient_id = ?').get(patientId) as { n: number }).n

const alertTexts = async (gw: TestGateway, token: string, patientId: string): Promise<string[]> => {
  const threadId = gw.gateway.threads.ensure(patientId).id
  const res = await api(gw, 'GET', `/api/v1/threads/${threadId}/messages?limit=100`, { token })
  expect(res.status).toBe(200)
  return (res.body.items as Array<{ kind: string; text: string }>).filter((m) => m.kind === 'alert').map((m) => m.text)
}

/** Every alert.raised on the bus (a notification to the care team). Listening only. */
function notifications(gw: TestGateway): Alert[] {
  const raised: Alert[] = []
  gw.gateway.bus.on('alert.raised', (e) => raised.push(e.alert))
  return raised
}

const rulesView = async (gw: TestGateway, token: string) => {
  const res = await api(gw, 'GET', '/api/v1/rules', { token })
  expect(res.status).toBe(200)
  return res.body as { items: Array<{ id: string; spec: any }>; status: { refused: null | { at: string; problems: Array<{ file: string; line: number; field: string; message: string }> } } }
}
const spo2Warning = async (gw: TestGateway, token: string) => (await rulesView(gw, token)).items.find((r) => r.id === 'spo2-low')!.spec.levels[0].any.spo2Percent

describe('rule files change while the gateway runs', () => {
  it('a valid change applies without a restart; a bad one is refused with file, line and field while the rules in force stay', async () => {
    const dir = rulesCopy()
    const { t, nurse, patient } = await clinic({ 'rules.dir': dir })
    const token = await nurse()
    const first = await patient('oximeter')
    const second = await patient('oximeter')
    expect(await spo2Warning(t, token)).toBe('< 92')

    // 94% is in the BTS target range: nothing under the shipped rule.
    await publish(t, first, build.spo2(94, 80, { seq: 1 }))
    await waitFor(() => readingCount(t, first.patientId) === 1)
    expect(await alertsOf(t, token, first.patientId)).toEqual([])

    edit(dir, 'oxygen-and-heart-rate.yaml', 'spo2Percent: "< 92"', 'spo2Percent: "< 95"')
    await waitFor(async () => (await spo2Warning(t, token)) === '< 95', 5000, 'the edited rule in GET /api/v1/rules')
    await publish(t, first, build.spo2(94, 80, { seq: 2 }))
    const raised = await waitFor(async () => (await alertsOf(t, token, first.patientId))[0])
    expect(raised).toMatchObject({ ruleId: 'spo2-low', severity: 'warning', lastValues: { spo2Percent: 94 } })

    // A bad file, and in the same change a valid edit of another file: all or nothing.
    const bad = edit(dir, 'glucose.yaml', 'glucoseMgDl: "< 70"', 'glucoseMgDl: "below 70"')
    edit(dir, 'oxygen-and-heart-rate.yaml', 'spo2Percent: "< 95"', 'spo2Percent: "< 90"')
    const refused = await waitFor(async () => (await rulesView(t, token)).status.refused, 5000, 'the refusal in GET /api/v1/rules')
    expect(refused.problems).toEqual([{
      file: 'glucose.yaml',
      line: bad.split('\n').findIndex((l) => l.includes('below 70')) + 1,
      field: 'rules[0].levels[0].any.glucoseMgDl',
      message: 'must be a comparison such as "> 180" or ">= 0.9"',
    }])
    expect(await spo2Warning(t, token)).toBe('< 95')
    // The rules in force still decide: 93% raises under "< 95" (it would not under "< 90").
    await publish(t, second, build.spo2(93, 80, { seq: 1 }))
    expect(await waitFor(async () => (await alertsOf(t, token, second.patientId))[0])).toMatchObject({ ruleId: 'spo2-low', severity: 'warning' })

    // Fixing the file applies the whole change and clears the refusal.
    edit(dir, 'glucose.yaml', 'glucoseMgDl: "below 70"', 'glucoseMgDl: "< 70"')
    await waitFor(async () => (await rulesView(t, token)).status.refused === null, 5000, 'the refusal to clear')
    expect(await spo2Warning(t, token)).toBe('< 90')
  })

  it('a gateway does not start with invalid rules: RPM_ERR_CONFIG_INVALID names the file and line', async () => {
    const dir = rulesCopy()
    const bad = edit(dir, 'blood-pressure.yaml', 'consecutive: 3', 'consecutive: three')
    const line = bad.split('\n').findIndex((l) => l.includes('consecutive: three')) + 1
    const dataDir = tempDir()
    dirs.push(dataDir)
    const failure = await startGateway({ 'rules.dir': dir }, dataDir).then(
      async (started) => {
        t = started
        throw new Error('the gateway started with an invalid rule file')
      },
      (err: unknown) => err as { code: string; message: string; details: unknown },
    )
    expect(failure.code).toBe('RPM_ERR_CONFIG_INVALID')
    expect(failure.message).toContain(`blood-pressure.yaml:${line}: rules[1].consecutive: must be integer`)
    expect(failure.details).toEqual({ field: 'rules.dir' })
  })
})

describe('silence: missing data', () => {
  it('a patient with a cuff and no reading for 48 hours gets a no-readings warning; a reading says all clear', async () => {
    const clock = new TestClock(Date.parse('2026-11-25T09:00:00Z'))
    const { t, nurse, patient } = await clinic({ 'rules.checkIntervalSeconds': 1 }, clock)
    const early = await patient('bp_cuff')
    clock.advanceSeconds(HOUR)
    const later = await patient('bp_cuff')
    const raised = notifications(t)

    clock.advanceSeconds(47 * HOUR) // early: 48 hours without a reading; later: 47
    const noReadings = async (patientId: string) => (await alertsOf(t, await nurse(), patientId)).filter((a) => a.ruleId === 'no-readings')
    const [alert] = await waitFor(async () => {
      const found = await noReadings(early.patientId)
      return found.length > 0 ? found : undefined
    }, 5000, 'the no-readings alert')
    expect(alert).toMatchObject({ severity: 'warning', status: 'open', ruleKind: 'missing', lastValues: { hoursWithoutData: 48, lastReadingAt: null } })
    expect(raised.filter((a) => a.ruleId === 'no-readings').map((a) => a.patientId)).toEqual([early.patientId])
    // The same check looked at the later patient: 47 hours is not 48.
    expect(await noReadings(later.patientId)).toEqual([])
    clock.advanceSeconds(HOUR)
    await waitFor(async () => (await noReadings(later.patientId)).length === 1, 5000, 'the second no-readings alert')

    await publish(t, early, build.bloodPressure(122, 78, 70, { seq: 1, measuredAt: new Date(clock.now()).toISOString() }))
    const cleared = await waitFor(async () => (await noReadings(early.patientId)).find((a) => a.status === 'resolved'))
    expect(cleared).toMatchObject({ id: alert!.id, resolution: 'auto', resolvedBy: null })
    const texts = await alertTexts(t, await nurse(), early.patientId)
    expect(texts.filter((x) => x.includes('No readings'))).toEqual([
      'Warning: No readings for 2 days — no reading for 48 hours',
      'All clear: No readings for 2 days — blood pressure 122/78 mmHg',
    ])
  })

  it('after a start it waits 10 minutes for devices to upload, then tells how long the patient has really been silent', async () => {
    const clock = new TestClock(Date.parse('2026-11-25T09:00:00Z'))
    const settings = { 'rules.checkIntervalSeconds': 1 }
    const first = await clinic(settings, clock)
    const dev = await first.patient('bp_cuff')
    const measuredAt = new Date(clock.now()).toISOString()
    await publish(first.t, dev, build.bloodPressure(128, 80, 70, { seq: 1, measuredAt }))
    await waitFor(() => readingCount(first.t, dev.patientId) === 1)
    await Promise.all(clients.splice(0).map((c) => c.endAsync(true)))

    // Down for three days.
    await first.t.gateway.stop()
    clock.advanceSeconds(72 * HOUR)
    const { t, nurse } = await clinic(settings, clock, first.t.dataDir)
    const noReadings = async () => (await alertsOf(t, await nurse(), dev.patientId)).filter((a) => a.ruleId === 'no-readings')

    clock.advanceSeconds(9 * 60 + 59)
    t.gateway.rules.checkSilence() // a check at 9:59 after the start, as the timer would run it
    expect(await noReadings()).toEqual([])

    clock.advanceSeconds(1)
    const [alert] = await waitFor(async () => {
      const found = await noReadings()
      return found.length > 0 ? found : undefined
    }, 5000, 'the no-readings alert after the settle')
    // 72 hours and 10 minutes since the last reading.
    expect(alert!.lastValues).toMatchObject({ hoursWithoutData: 72, lastReadingAt: measuredAt })
  })

  it('a reading measured long ago, uploaded late, does not say all clear while the patient is still silent', async () => {
    const clock = new TestClock(Date.parse('2026-11-25T09:00:00Z'))
    const { t, nurse, patient } = await clinic({ 'rules.checkIntervalSeconds': 1 }, clock)
    const dev = await patient('bp_cuff')
    clock.advanceSeconds(72 * HOUR)
    const noReadings = async () => (await alertsOf(t, await nurse(), dev.patientId)).filter((a) => a.ruleId === 'no-readings')
    const [alert] = await waitFor(async () => {
      const found = await noReadings()
      return found.length > 0 ? found : undefined
    }, 5000, 'the no-readings alert')
    const raised = notifications(t)

    // Stored on the cuff 60 hours ago, uploaded now: the last reading is still more than 48 hours old.
    const old = new Date(clock.now() - 60 * HOUR * 1000).toISOString()
    await publish(t, dev, build.bloodPressure(126, 80, 70, { seq: 1, measuredAt: old }))
    await waitFor(() => readingCount(t, dev.patientId) === 1)
    t.gateway.rules.checkSilence()

    const after = await noReadings()
    expect(after.map((a) => [a.id, a.status])).toEqual([[alert!.id, 'open']])
    expect(raised).toEqual([])
    expect((await detailOf(t, await nurse(), alert!.id)).events.map((e) => e.type)).toEqual(['raised'])
  })
})

describe('silence: device offline', () => {
  it('a device offline for 24 hours raises device-offline (info); reconnecting clears it', async () => {
    const clock = new TestClock(Date.parse('2026-11-25T09:00:00Z'))
    const { t, nurse, patient } = await clinic({ 'rules.checkIntervalSeconds': 1 }, clock)
    const dev = await patient('scale')
    const isOnline = () => (t.gateway.store.sqlite.prepare('SELECT online FROM devices WHERE id = ?').get(dev.deviceId) as { online: number }).online === 1
    const client = await connectDevice(t, dev)
    await waitFor(isOnline)
    await client.endAsync()
    await waitFor(() => !isOnline())
    const offlineAlerts = async () => (await alertsOf(t, await nurse(), dev.patientId)).filter((a) => a.ruleId === 'device-offline')

    clock.advanceSeconds(24 * HOUR - 60)
    t.gateway.rules.checkSilence() // a check a minute before the day is up, as the timer would run it
    expect(await offlineAlerts()).toEqual([])

    clock.advanceSeconds(60)
    const [alert] = await waitFor(async () => {
      const found = await offlineAlerts()
      return found.length > 0 ? found : undefined
    }, 5000, 'the device-offline alert')
    expect(alert).toMatchObject({ severity: 'info', status: 'open', ruleKind: 'offline', lastValues: { devices: [dev.deviceId], hoursOffline: 24 } })

    clients.push(await connectDevice(t, dev))
    const cleared = await waitFor(async () => (await offlineAlerts()).find((a) => a.status === 'resolved'), 5000, 'the all clear')
    expect(cleared).toMatchObject({ id: alert!.id, resolution: 'auto' })
    expect((await alertTexts(t, await nurse(), dev.patientId)).filter((x) => x.includes('Device offline'))).toEqual([
      'Info: Device offline for a day — 1 device(s) offline for 24+ hours',
      expect.stringMatching(/^All clear: Device offline for a day/),
    ])
  })

  it('waits 10 minutes after a start even when a rule says a device is offline sooner', async () => {
    const dir = rulesCopy()
    edit(dir, 'data-and-devices.yaml', 'after: 24h', 'after: 2m')
    const clock = new TestClock(Date.parse('2026-11-25T09:00:00Z'))
    const { t, nurse, patient } = await clinic({ 'rules.dir': dir, 'rules.checkIntervalSeconds': 1 }, clock)
    const dev = await patient('scale')
    const offlineAlerts = async () => (await alertsOf(t, await nurse(), dev.patientId)).filter((a) => a.ruleId === 'device-offline')

    clock.advanceSeconds(9 * 60 + 59)
    t.gateway.rules.checkSilence() // devices are still reconnecting after the start
    expect(await offlineAlerts()).toEqual([])

    clock.advanceSeconds(1)
    await waitFor(async () => (await offlineAlerts()).length === 1, 5000, 'the device-offline alert after the settle')
  })
})

describe('cooldown after a provider resolves an alert', () => {
  it('bp-stage-2 resolved by the provider: for 12 hours stage-2 readings are recorded on it, not raised again; a crisis still alerts', async () => {
    const clock = new TestClock(Date.parse('2026-11-25T09:00:00Z'))
    const { t, nurse, patient } = await clinic({}, clock)
    const dev = await patient('bp_cuff')
    const raised = notifications(t)
    let seq = 0
    /** A reading one minute after the previous one. */
    const reading = (systolic: number, diastolic: number) => {
      clock.advanceSeconds(60)
      return build.bloodPressure(systolic, diastolic, 72, { seq: ++seq, measuredAt: new Date(clock.now()).toISOString() })
    }
    const stage2 = async () => (await alertsOf(t, await nurse(), dev.patientId)).filter((a) => a.ruleId === 'bp-stage-2')

    await publish(t, dev, [reading(150, 95), reading(152, 94), reading(148, 96)])
    const [alert] = await waitFor(async () => {
      const found = await stage2()
      return found.length > 0 ? found : undefined
    })
    const resolved = await api(t, 'POST', `/api/v1/alerts/${alert!.id}/resolve`, { token: await nurse(), body: { note: 'Amlodipine increased; recheck next week.' } })
    expect(resolved.body).toMatchObject({ status: 'resolved', resolution: 'manual' })
    const resolvedAt = Date.parse(resolved.body.resolvedAt)
    const until = new Date(resolvedAt + 12 * HOUR * 1000).toISOString()

    await publish(t, dev, [reading(150, 95), reading(151, 95)])
    const cooldown = async () => (await detailOf(t, await nurse(), alert!.id)).events.filter((e) => e.type === 'suppressed' && e.details?.reason === 'cooldown')
    await waitFor(async () => (await cooldown()).length === 2, 5000, 'two cooldown events on the resolved alert')
    expect((await cooldown())[0]!.details).toMatchObject({ reason: 'cooldown', severity: 'warning', readingId: expect.any(Number), until, values: { systolicMmHg: 150, diastolicMmHg: 95 } })
    expect((await stage2()).map((a) => [a.id, a.status])).toEqual([[alert!.id, 'resolved']])

    // Another rule is not held back: a crisis reading alerts (and is one more stage-2 reading, recorded).
    await publish(t, dev, reading(186, 112))
    await waitFor(() => raised.some((a) => a.ruleId === 'bp-crisis'), 5000, 'the bp-crisis notification')
    await waitFor(async () => (await cooldown()).length === 3)
    expect(raised.map((a) => a.ruleId)).toEqual(['bp-stage-2', 'bp-crisis'])
    expect((await alertsOf(t, await nurse(), dev.patientId, 'active')).map((a) => a.ruleId)).toEqual(['bp-crisis'])

    // A minute before the 12 hours are up: still recorded only. At 12 hours: a new alert.
    clock.advanceSeconds((resolvedAt + 12 * HOUR * 1000 - clock.now()) / 1000 - 120)
    await publish(t, dev, reading(150, 95))
    await waitFor(async () => (await cooldown()).length === 4)
    await publish(t, dev, reading(150, 95))
    const reopened = await waitFor(async () => (await stage2()).find((a) => a.id !== alert!.id), 5000, 'a new bp-stage-2 alert')
    expect(reopened).toMatchObject({ status: 'open', severity: 'warning' })
    expect(Date.parse(reopened.openedAt) - resolvedAt).toBe(12 * HOUR * 1000)
    expect(raised.map((a) => a.ruleId)).toEqual(['bp-stage-2', 'bp-crisis', 'bp-stage-2'])
    expect(await cooldown()).toHaveLength(4)
  })
})

describe('snooze is per alert', () => {
  it('a snoozed glucose-high does not hold back glucose-low', async () => {
    const { t, nurse, patient } = await clinic()
    const token = await nurse()
    const dev = await patient('glucometer')
    const raised = notifications(t)

    await publish(t, dev, build.glucose(300, 'mg/dL', { seq: 1 }))
    const high = await waitFor(() => raised.find((a) => a.ruleId === 'glucose-high'))
    const snoozed = await api(t, 'POST', `/api/v1/alerts/${high.id}/snooze`, { token, body: { minutes: 60, reason: 'insulin given, rechecking' } })
    expect(snoozed.status).toBe(200)

    // Another high at the same severity: counted on the snoozed alert (a repeat is never a new notification).
    await publish(t, dev, build.glucose(320, 'mg/dL', { seq: 2 }))
    await waitFor(async () => (await detailOf(t, token, high.id)).count === 2)
    expect(raised.map((a) => a.ruleId)).toEqual(['glucose-high'])

    // The snooze is this alert's only: a low reading is another rule, and the care team is told.
    await publish(t, dev, build.glucose(62, 'mg/dL', { seq: 3 }))
    const low = await waitFor(() => raised.find((a) => a.ruleId === 'glucose-low'), 5000, 'the glucose-low notification')
    expect(low).toMatchObject({ patientId: dev.patientId, severity: 'warning', status: 'open', snoozedUntil: null })
    expect(raised.map((a) => a.ruleId)).toEqual(['glucose-high', 'glucose-low'])
  })

  it('a new alert opened during the snooze is held; a worse reading breaks through', async () => {
    const { t, nurse, patient } = await clinic()
    const token = await nurse()
    const dev = await patient('glucometer')
    const raised = notifications(t)

    await publish(t, dev, build.glucose(300, 'mg/dL', { seq: 1 }))
    const first = await waitFor(() => raised.find((a) => a.ruleId === 'glucose-high'))
    const snoozed = await api(t, 'POST', `/api/v1/alerts/${first.id}/snooze`, { token, body: { minutes: 60 } })
    expect(snoozed.body.snoozedUntil).toEqual(expect.any(String))

    // Back in range (clears it), then high again while the snooze runs: a new alert, notification held.
    await publish(t, dev, build.glucose(150, 'mg/dL', { seq: 2 }))
    await waitFor(async () => (await detailOf(t, token, first.id)).status === 'resolved')
    await publish(t, dev, build.glucose(290, 'mg/dL', { seq: 3 }))
    const second = await waitFor(async () => (await alertsOf(t, token, dev.patientId, 'active')).find((a) => a.ruleId === 'glucose-high'))
    expect(second.id).not.toBe(first.id)
    expect(second.snoozedUntil).toBe(snoozed.body.snoozedUntil)
    expect((await detailOf(t, token, second.id)).events.map((e) => [e.type, e.details?.reason ?? null])).toEqual([['raised', null], ['suppressed', 'snoozed']])
    expect(raised.map((a) => a.id)).toEqual([first.id])

    // Urgent (> 400) is worse than what was snoozed: it breaks through.
    await publish(t, dev, build.glucose(450, 'mg/dL', { seq: 4 }))
    const urgent = await waitFor(() => raised.find((a) => a.id === second.id), 5000, 'the break-through notification')
    expect(urgent).toMatchObject({ severity: 'urgent', status: 'open', snoozedUntil: null })
    const events = (await detailOf(t, token, second.id)).events
    expect(events.map((e) => e.type)).toEqual(['raised', 'suppressed', 'snooze_ended', 'severity_raised'])
    expect(events[2]!.details).toMatchObject({ reason: 'a worse reading', severity: 'urgent' })
    expect(raised.map((a) => [a.id, a.severity])).toEqual([[first.id, 'warning'], [second.id, 'urgent']])
  })
})

describe('acting on an alert as it was seen', () => {
  it('refuses to acknowledge, resolve or snooze an alert that got worse since the provider saw it', async () => {
    const { t, nurse, patient } = await clinic()
    const token = await nurse()
    const dev = await patient('glucometer')
    const raised = notifications(t)

    await publish(t, dev, build.glucose(62, 'mg/dL', { seq: 1 }))
    const low = await waitFor(() => raised.find((a) => a.ruleId === 'glucose-low'))
    expect(low.severity).toBe('warning')
    // ADA level 2 arrives while the provider still looks at level 1.
    await publish(t, dev, build.glucose(45, 'mg/dL', { seq: 2 }))
    await waitFor(async () => (await detailOf(t, token, low.id)).severity === 'urgent')

    for (const [action, body] of [['acknowledge', {}], ['resolve', { note: 'ate a snack' }], ['snooze', { minutes: 10 }]] as const) {
      const res = await api(t, 'POST', `/api/v1/alerts/${low.id}/${action}`, { token, body: { ...body, severity: 'warning' } })
      expect(res.status, action).toBe(409)
      expect(res.body).toMatchObject({ code: 'RPM_ERR_CONFLICT', details: { field: 'severity', current: 'urgent' } })
    }
    expect((await detailOf(t, token, low.id)).status).toBe('open')
    const ack = await api(t, 'POST', `/api/v1/alerts/${low.id}/acknowledge`, { token, body: { severity: 'urgent' } })
    expect(ack.status).toBe(200)
    expect(ack.body.status).toBe('acknowledged')
  })
})

describe('a failure evaluating one patient', () => {
  it('loses only that patient\'s alerts for the commit; the others in the same commit are raised, and every reading is stored', async () => {
    // One journal commit for both devices' readings.
    const { t, nurse, patient } = await clinic({ 'ingest.commitIntervalMs': 300 })
    const token = await nurse()
    const broken = await patient('bp_cuff')
    const fine = await patient('bp_cuff')
    // A stored reading of the first patient that cannot be read back (storage damage): loading
    // their history for the rules fails.
    t.gateway.store.sqlite.prepare(`INSERT INTO readings (device_id, patient_id, type, seq, measured_at, received_at, values_json, original_json, dedupe_key)
      VALUES (?, ?, 'blood_pressure', 999, ?, ?, '{not json', '{}', 'damaged-1')`).run(broken.deviceId, broken.patientId, new Date(Date.now() - 60_000).toISOString(), new Date().toISOString())
    const [a, b] = await Promise.all([connectDevice(t, broken), connectDevice(t, fine)])
    clients.push(a, b)
    await Promise.all([
      a.publishAsync(`devices/${broken.deviceId}/readings`, JSON.stringify(build.bloodPressure(186, 112, 80, { seq: 1 })), { qos: 1 }),
      b.publishAsync(`devices/${fine.deviceId}/readings`, JSON.stringify(build.bloodPressure(186, 112, 80, { seq: 1 })), { qos: 1 }),
    ])
    await waitFor(async () => (await alertsOf(t, token, fine.patientId)).length === 1, 5000, 'the other patient\'s alert')
    expect(await alertsOf(t, token, broken.patientId)).toEqual([])
    expect(readingCount(t, broken.patientId)).toBe(2)
    expect(readingCount(t, fine.patientId)).toBe(1)
    const metrics = await (await fetch(`${t.urls.http}/metrics`)).text()
    expect(metrics).toMatch(/^rpm_rules_evaluation_failures_total 1$/m)
  })
})
