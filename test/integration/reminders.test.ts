import { fileURLToPath } from 'node:url'
import SQLite from 'better-sqlite3'
import type { MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { build } from '../../device-simulator/readings.ts'
import type { GatewayEvents } from '../../src/events.ts'
import { ReminderRecords } from '../../src/reminders/records.ts'
import { auditOf, call, connectDevice, nextMessage, runProcess, signInAs, startGateway, tempDir, TestClock, waitFor, type Caller, type TestDevice, type TestGateway } from '../helpers.ts'

let gateways: TestGateway[] = []
let clients: MqttClient[] = []

afterEach(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)))
  clients = []
  for (const g of gateways.reverse()) await g.stop()
  gateways = []
})

const PASSWORD = 'correct horse battery'
/** The reminder clock ticks every second in these tests; the TestClock says what time it is. */
const EVERY_SECOND = { 'reminders.cron': '* * * * * *' }

const signIn = (t: TestGateway, username: string): Promise<Caller> => signInAs(t, username, PASSWORD)

interface Clinic {
  t: TestGateway
  clock: TestClock
  dev: TestDevice
  patient: Caller
  provider: Caller
  stranger: Caller
  threadId: string
  /** Every event of these kinds the gateway emitted, in order (dose.missed once its transaction committed). */
  events: { due: Array<GatewayEvents['reminder.due'][0]>; taken: Array<GatewayEvents['dose.taken'][0]>; missed: Array<Omit<GatewayEvents['dose.missed'][0], 'afterCommit'>> }
}

/**
 * A gateway whose clock starts at `start`, with one patient in `timezone` (a bp_cuff and a
 * signed-in patient user), a provider on the care team and one who is not.
 */
async function clinic(start: string, options: { timezone?: string; settings?: Record<string, unknown> } = {}): Promise<Clinic> {
  const clock = new TestClock(Date.parse(start))
  const t = await startGateway({ ...EVERY_SECOND, ...options.settings }, tempDir(), { clock })
  gateways.push(t)
  const g = t.gateway
  const p = await g.registry.addPatient({ name: 'Test Patient', timezone: options.timezone ?? 'UTC' })
  const d = await g.registry.addDevice({ patientId: p.id, kind: 'bp_cuff' })
  const dev = { patientId: p.id, deviceId: d.id, secret: d.secret }
  await g.users.add({ username: 'pat', password: PASSWORD, role: 'patient', patientId: p.id })
  await g.users.add({ username: 'nurse', password: PASSWORD, role: 'provider', name: 'Nurse' })
  await g.users.add({ username: 'other-nurse', password: PASSWORD, role: 'provider', name: 'Other' })
  await g.users.addToCareTeam(p.id, 'nurse')
  const [patient, provider, stranger] = await Promise.all([signIn(t, 'pat'), signIn(t, 'nurse'), signIn(t, 'other-nurse')])
  const events: Clinic['events'] = { due: [], taken: [], missed: [] }
  g.bus.on('reminder.due', (e) => events.due.push(e))
  g.bus.on('dose.taken', (e) => events.taken.push(e))
  g.bus.on('dose.missed', ({ afterCommit, ...e }) => afterCommit(() => events.missed.push(e)))
  const thread = await call(t, patient, 'GET', `/api/v1/patients/${p.id}/thread`)
  return { t, clock, dev, patient, provider, stranger, threadId: thread.body.id, events }
}

async function connect(t: TestGateway, dev: TestDevice): Promise<MqttClient> {
  const client = await connectDevice(t, dev)
  clients.push(client)
  return client
}

/** Moves the clock and waits until a reminder tick has run at the new time. */
async function advance(c: { t: TestGateway; clock: TestClock }, seconds: number): Promise<void> {
  c.clock.advanceSeconds(seconds)
  await waitFor(() => (c.t.gateway.reminders.cursor() ?? 0) >= c.clock.now(), 5000, 'a reminder tick')
}

/** Moves the clock to `iso` (forward only) and waits for a tick. */
const advanceTo = (c: { t: TestGateway; clock: TestClock }, iso: string) => advance(c, (Date.parse(iso) - c.clock.now()) / 1000)

const addReminder = (c: Clinic, body: Record<string, unknown>) => call(c.t, c.provider, 'POST', `/api/v1/patients/${c.dev.patientId}/reminders`, body)

const metformin = { kind: 'medication', medication: 'Metformin', dose: '500 mg' }

/** The thread's reminder messages (the gateway's own), oldest first, read straight from the store. */
function reminderMessages(c: Clinic): Array<{ id: string; text: string; data: any; replyTo: string | null }> {
  return c.t.gateway.threads.history(c.threadId, { limit: 500 }).items.filter((m) => m.kind === 'reminder') as never
}

function occurrences(t: TestGateway, patientId: string): Array<Record<string, any>> {
  return t.gateway.store.sqlite.prepare('SELECT * FROM reminder_occurrences WHERE patient_id = ? ORDER BY due_at, id').all(patientId) as never
}

describe('a reminder comes due', () => {
  it('is posted in the patient\'s thread and published on the device\'s commands topic, once', async () => {
    const c = await clinic('2026-06-01T07:59:30Z')
    const created = await addReminder(c, { ...metformin, times: ['08:00', '20:00'], instructions: 'With food' })
    expect(created.status).toBe(201)
    expect(created.body).toMatchObject({
      patientId: c.dev.patientId, kind: 'medication', medication: 'Metformin', dose: '500 mg', times: ['08:00', '20:00'],
      days: [1, 2, 3, 4, 5, 6, 7], startsOn: '2026-06-01', endsOn: null, active: true, createdBy: c.provider.userId,
      nextDueAt: '2026-06-01T08:00:00.000Z',
    })
    const scheduleId = created.body.id

    const device = await connect(c.t, c.dev)
    await device.subscribeAsync(`devices/${c.dev.deviceId}/commands`, { qos: 1 })
    const command = nextMessage(device, `devices/${c.dev.deviceId}/commands`)
    await advance(c, 60)

    const payload = JSON.parse((await command).toString())
    expect(payload).toMatchObject({
      type: 'reminder', scheduleId, kind: 'medication', medicationId: scheduleId, medication: 'Metformin', dose: '500 mg',
      dueAt: '2026-06-01T08:00:00.000Z', localTime: '08:00', text: 'Time to take Metformin 500 mg (08:00). With food',
    })

    const [message, ...more] = reminderMessages(c)
    expect(more).toHaveLength(0)
    expect(message).toMatchObject({
      text: 'Time to take Metformin 500 mg (08:00). With food',
      from: { role: 'system' },
      data: { event: 'due', reminder: { occurrenceId: payload.occurrenceId, scheduleId, kind: 'medication', dueAt: '2026-06-01T08:00:00.000Z', localTime: '08:00', actions: ['taken'] } },
    })
    // The patient sees it in the thread through the API too.
    const history = await call(c.t, c.patient, 'GET', `/api/v1/threads/${c.threadId}/messages`)
    expect(history.body.items.filter((m: any) => m.kind === 'reminder').map((m: any) => m.id)).toEqual([message!.id])

    const listed = await call(c.t, c.patient, 'GET', `/api/v1/patients/${c.dev.patientId}/reminders/occurrences`)
    expect(listed.status).toBe(200)
    expect(listed.body.items).toEqual([
      expect.objectContaining({ id: payload.occurrenceId, scheduleId, status: 'pending', scheduled: true, dueAt: '2026-06-01T08:00:00.000Z', messageId: message!.id, postedAt: '2026-06-01T08:00:30.000Z' }),
    ])
    expect(c.events.due).toEqual([{ patientId: c.dev.patientId, occurrenceId: payload.occurrenceId, scheduleId, kind: 'medication', dueAt: '2026-06-01T08:00:00.000Z' }])

    // More ticks do not repeat it.
    await advance(c, 30)
    await advance(c, 30)
    expect(reminderMessages(c)).toHaveLength(1)
    expect(occurrences(c.t, c.dev.patientId)).toHaveLength(1)
    expect(c.events.due).toHaveLength(1)
  })
  it('reaches a device that was offline when it came due, once it subscribes, until the dose is confirmed', async () => {
    const c = await clinic('2026-06-01T07:59:30Z')
    expect((await addReminder(c, { ...metformin, times: ['08:00'] })).status).toBe(201)
    await advance(c, 60) // due at 08:00 with no device connected
    expect(reminderMessages(c)).toHaveLength(1)

    // The pillbox comes online 20 minutes later, within the grace window.
    c.clock.advanceSeconds(20 * 60)
    const device = await connect(c.t, c.dev)
    const command = nextMessage(device, `devices/${c.dev.deviceId}/commands`)
    await device.subscribeAsync(`devices/${c.dev.deviceId}/commands`, { qos: 1 })
    const payload = JSON.parse((await command).toString())
    expect(payload).toMatchObject({ type: 'reminder', kind: 'medication', medication: 'Metformin', dueAt: '2026-06-01T08:00:00.000Z', redelivered: true })
    await device.endAsync()

    // Confirmed: a device connecting afterwards is not reminded again.
    expect((await call(c.t, await signIn(c.t, 'pat'), 'POST', `/api/v1/reminder-occurrences/${payload.occurrenceId}/taken`, {})).status).toBe(200) // a new sign-in: the clock moved past the token
    const again = await connect(c.t, c.dev)
    const none = nextMessage(again, `devices/${c.dev.deviceId}/commands`, 1000).then(() => 'reminded', () => 'nothing')
    await again.subscribeAsync(`devices/${c.dev.deviceId}/commands`, { qos: 1 })
    expect(await none).toBe('nothing')
  })

})

describe('confirming a dose', () => {
  it('by the API: the patient for themselves, once; a provider on the care team with takenAt; others get 404', async () => {
    const c = await clinic('2026-06-01T07:59:30Z')
    const { body: schedule } = await addReminder(c, { ...metformin, times: ['08:00', '08:01'] })
    await advance(c, 95) // 08:01:05: both are due
    const [first, second] = occurrences(c.t, c.dev.patientId)
    expect([first?.due_at, second?.due_at]).toEqual(['2026-06-01T08:00:00.000Z', '2026-06-01T08:01:00.000Z'])

    const taken = await call(c.t, c.patient, 'POST', `/api/v1/reminder-occurrences/${first!.id}/taken`, {})
    expect(taken.status).toBe(200)
    expect(taken.body).toMatchObject({ id: first!.id, status: 'taken', source: 'api', confirmedBy: c.patient.userId, takenAt: '2026-06-01T08:01:05.000Z' })
    const acks = () => reminderMessages(c).filter((m) => m.data.event === 'taken')
    expect(acks().map((m) => m.text)).toEqual(['Marked as taken: Metformin 500 mg (08:00)'])
    expect(c.events.taken).toEqual([{ patientId: c.dev.patientId, occurrenceId: first!.id, scheduleId: schedule.id, medicationId: schedule.id, at: '2026-06-01T08:01:05.000Z', source: 'api' }])

    // Again: the same state, no second message, no second event.
    const again = await call(c.t, c.patient, 'POST', `/api/v1/reminder-occurrences/${first!.id}/taken`, {})
    expect(again.status).toBe(200)
    expect(again.body).toEqual(taken.body)
    expect(acks()).toHaveLength(1)
    expect(c.events.taken).toHaveLength(1)

    // takenAt outside the dose's window (earlyMinutes before to graceMinutes after) names the field.
    const early = await call(c.t, c.provider, 'POST', `/api/v1/reminder-occurrences/${second!.id}/taken`, { takenAt: '2026-06-01T06:00:00Z' })
    expect(early.status).toBe(400)
    expect(early.body).toMatchObject({ code: 'RPM_ERR_BAD_REQUEST', details: { field: 'takenAt' } })
    const garbled = await call(c.t, c.provider, 'POST', `/api/v1/reminder-occurrences/${second!.id}/taken`, { takenAt: 'this morning' })
    expect(garbled.body.details).toEqual({ field: 'takenAt' })

    const onBehalf = await call(c.t, c.provider, 'POST', `/api/v1/reminder-occurrences/${second!.id}/taken`, { takenAt: '2026-06-01T07:55:00Z' })
    expect(onBehalf.status).toBe(200)
    expect(onBehalf.body).toMatchObject({ status: 'taken', source: 'api', confirmedBy: c.provider.userId, takenAt: '2026-06-01T07:55:00.000Z' })

    const stranger = await call(c.t, c.stranger, 'POST', `/api/v1/reminder-occurrences/${second!.id}/taken`, {})
    expect(stranger.status).toBe(404)
    expect((await call(c.t, c.patient, 'POST', '/api/v1/reminder-occurrences/occ-nope/taken', {})).status).toBe(404)
    const audit = auditOf(c.t, 'dose.confirm')
    expect(audit.map((a) => [a.actor_id, a.outcome])).toEqual([
      [c.patient.userId, 'allowed'],
      [c.patient.userId, 'allowed'],
      [c.provider.userId, 'denied'],
      [c.provider.userId, 'denied'],
      [c.provider.userId, 'allowed'],
      [c.stranger.userId, 'denied'],
      [c.patient.userId, 'denied'],
    ])
  })

  it('by a device event over MQTT: the nearest pending dose; a second press changes nothing; a bad id is answered on the errors topic', async () => {
    const c = await clinic('2026-06-01T07:59:30Z')
    const { body: schedule } = await addReminder(c, { ...metformin, times: ['08:00'] })
    const device = await connect(c.t, c.dev)
    await device.subscribeAsync([`devices/${c.dev.deviceId}/commands`, `devices/${c.dev.deviceId}/errors`], { qos: 1 })
    const reminded = nextMessage(device, `devices/${c.dev.deviceId}/commands`)
    await advance(c, 60)
    expect(JSON.parse((await reminded).toString())).toMatchObject({ type: 'reminder', medicationId: schedule.id })
    const [occ] = occurrences(c.t, c.dev.patientId)
    expect(occ).toMatchObject({ status: 'pending' })

    const cleared = nextMessage(device, `devices/${c.dev.deviceId}/commands`)
    const event = JSON.stringify({ type: 'medication_taken', medicationId: schedule.id })
    await device.publishAsync(`devices/${c.dev.deviceId}/events`, event, { qos: 1 })
    // The PUBACK comes after the event was acted on.
    expect(occurrences(c.t, c.dev.patientId)).toEqual([expect.objectContaining({ id: occ!.id, status: 'taken', source: 'device', confirmed_by: `device:${c.dev.deviceId}`, taken_at: '2026-06-01T08:00:30.000Z' })])
    expect(JSON.parse((await cleared).toString())).toEqual({ type: 'reminder_confirmed', occurrenceId: occ!.id, scheduleId: schedule.id, status: 'taken' })
    expect(c.events.taken).toEqual([expect.objectContaining({ occurrenceId: occ!.id, source: 'device' })])

    await advance(c, 20)
    await device.publishAsync(`devices/${c.dev.deviceId}/events`, event, { qos: 1 })
    expect(occurrences(c.t, c.dev.patientId)).toHaveLength(1)
    expect(reminderMessages(c).filter((m) => m.data.event === 'taken')).toHaveLength(1)
    expect(c.events.taken).toHaveLength(1)

    const error = nextMessage(device, `devices/${c.dev.deviceId}/errors`)
    await device.publishAsync(`devices/${c.dev.deviceId}/events`, JSON.stringify({ type: 'medication_taken', medicationId: 'rem-nope' }), { qos: 1 })
    expect(JSON.parse((await error).toString())).toMatchObject({ code: 'RPM_ERR_EVENT_INVALID', path: '/medicationId' })
    expect(device.connected).toBe(true)
  })

  it('by a device before the dose is due: recorded as taken and no reminder is sent; outside every window: an unscheduled dose', async () => {
    const c = await clinic('2026-06-01T07:30:00Z')
    const { body: schedule } = await addReminder(c, { ...metformin, times: ['08:00'] })
    const device = await connect(c.t, c.dev)
    const publish = (body: Record<string, unknown>) => device.publishAsync(`devices/${c.dev.deviceId}/events`, JSON.stringify({ type: 'medication_taken', medicationId: schedule.id, ...body }), { qos: 1 })

    await publish({}) // 07:30, within earlyMinutes (60) of 08:00
    expect(occurrences(c.t, c.dev.patientId)).toEqual([
      expect.objectContaining({ due_at: '2026-06-01T08:00:00.000Z', status: 'taken', scheduled: 1, posted_at: null, source: 'device' }),
    ])
    await advanceTo(c, '2026-06-01T08:00:30Z')
    expect(reminderMessages(c).filter((m) => m.data.event === 'due')).toHaveLength(0)
    expect(c.events.due).toHaveLength(0)

    // 14:10 is not within any dose's window: kept as a dose taken when none was due.
    await advanceTo(c, '2026-06-01T14:15:00Z')
    await publish({ takenAt: '2026-06-01T14:10:00Z' })
    await publish({ takenAt: '2026-06-01T14:10:00Z' }) // a redelivery records it once
    const extra = occurrences(c.t, c.dev.patientId).filter((o) => o.scheduled === 0)
    expect(extra).toEqual([expect.objectContaining({ due_at: '2026-06-01T14:10:00.000Z', status: 'taken', local_time: '14:10', source: 'device' })])
    expect(reminderMessages(c).filter((m) => m.data.event === 'taken').map((m) => m.text)).toEqual([
      'Marked as taken: Metformin 500 mg (08:00)',
      'Recorded Metformin 500 mg taken at 14:10 (no dose was due then)',
    ])
    expect(c.events.taken.at(-1)).toMatchObject({ occurrenceId: null, scheduleId: schedule.id, at: '2026-06-01T14:10:00.000Z' })
    const nurse = await signIn(c.t, 'nurse') // the first session went idle while the clock moved
    const adherence = await call(c.t, nurse, 'GET', `/api/v1/patients/${c.dev.patientId}/adherence`)
    expect(adherence.body.last7Days).toMatchObject({ taken: 1, missed: 0, unscheduled: 1, rate: 1 })
  })

  it('by the patient replying "I took it" to the reminder in the thread; other replies do not count', async () => {
    const c = await clinic('2026-06-01T07:59:30Z')
    await addReminder(c, { ...metformin, times: ['08:00'] })
    await advance(c, 60)
    const [reminder] = reminderMessages(c)
    const [occ] = occurrences(c.t, c.dev.patientId)
    const reply = (who: Caller, id: string, text: string) => call(c.t, who, 'POST', `/api/v1/threads/${c.threadId}/messages`, { clientMessageId: id, text, replyTo: reminder!.id })

    expect((await reply(c.patient, 'r-1', 'not yet, after breakfast')).status).toBe(201)
    expect((await reply(c.provider, 'r-2', 'done')).status).toBe(201) // a provider's "done" is not the patient's
    expect(occurrences(c.t, c.dev.patientId)[0]).toMatchObject({ status: 'pending' })

    expect((await reply(c.patient, 'r-3', 'I took it!')).status).toBe(201)
    expect(occurrences(c.t, c.dev.patientId)[0]).toMatchObject({ id: occ!.id, status: 'taken', source: 'thread', confirmed_by: c.patient.userId })
    expect((await reply(c.patient, 'r-4', 'Taken')).status).toBe(201)
    const acks = reminderMessages(c).filter((m) => m.data.event === 'taken')
    expect(acks.map((m) => m.text)).toEqual(['Marked as taken: Metformin 500 mg (08:00)'])
    expect(c.events.taken).toEqual([expect.objectContaining({ occurrenceId: occ!.id, source: 'thread' })])
  })
})

describe('missed doses and measurements', () => {
  it('a dose not confirmed within graceMinutes is missed once and dose.missed is emitted; a missed measurement is not a missed dose', async () => {
    const c = await clinic('2026-06-01T07:59:30Z', { settings: { 'reminders.graceMinutes': 2 } })
    const { body: med } = await addReminder(c, { ...metformin, times: ['08:00'] })
    const { body: bp } = await addReminder(c, { kind: 'measurement', readingType: 'blood_pressure', times: ['08:00'] })
    await advance(c, 60)
    expect(reminderMessages(c).map((m) => m.text).sort()).toEqual(['Time to check your blood pressure (08:00)', 'Time to take Metformin 500 mg (08:00)'])
    await advance(c, 60)
    expect(occurrences(c.t, c.dev.patientId).map((o) => o.status)).toEqual(['pending', 'pending'])

    await advance(c, 60) // 08:02:30: past the grace window
    const [a, b] = occurrences(c.t, c.dev.patientId)
    expect([a, b].map((o) => [o!.schedule_id, o!.status, o!.missed_at]).sort()).toEqual([
      [med.id, 'missed', '2026-06-01T08:02:30.000Z'],
      [bp.id, 'missed', '2026-06-01T08:02:30.000Z'],
    ].sort())
    const medOcc = [a, b].find((o) => o!.schedule_id === med.id)!
    expect(c.events.missed).toEqual([{ patientId: c.dev.patientId, occurrenceId: medOcc.id, scheduleId: med.id, dueAt: '2026-06-01T08:00:00.000Z' }])
    await advance(c, 60)
    expect(c.events.missed).toHaveLength(1)

    // Confirming without takenAt after the window is a conflict that says what to do.
    const late = await call(c.t, c.patient, 'POST', `/api/v1/reminder-occurrences/${medOcc.id}/taken`, {})
    expect(late.status).toBe(409)
    expect(late.body.details).toEqual({ field: 'takenAt' })
  })

  it('a missed dose becomes a missed-dose alert for the care team; the next dose taken resolves it', async () => {
    const c = await clinic('2026-06-01T07:59:30Z', { settings: { 'reminders.graceMinutes': 2, 'alerts.tickMs': 20 } })
    const { body: med } = await addReminder(c, { ...metformin, times: ['08:00', '08:10'] })
    const alertsOf = async () => (await call(c.t, c.provider, 'GET', `/api/v1/alerts?status=all&patientId=${c.dev.patientId}`)).body.items as any[]
    await advance(c, 60)
    await advance(c, 120) // 08:02:30: the 08:00 dose is missed
    const [alert] = await waitFor(async () => {
      const items = await alertsOf()
      return items.length === 1 ? items : undefined
    }, 5000, 'a missed-dose alert')
    expect(alert).toMatchObject({ ruleId: 'missed-dose', ruleKind: 'event', severity: 'warning', status: 'open', count: 1 })
    expect(alert.lastValues).toMatchObject({ event: 'dose.missed', scheduleId: med.id, dueAt: '2026-06-01T08:00:00.000Z' })
    const inThread = c.t.gateway.threads.history(c.threadId, { limit: 500 }).items.filter((m) => m.kind === 'alert')
    expect(inThread.map((m) => m.text)).toEqual(['Warning: Missed medication dose — a dose was not confirmed in time'])

    // A dose of another medication does not answer the missed Metformin.
    const { body: other } = await addReminder(c, { kind: 'medication', medication: 'Lisinopril', dose: '10 mg', times: ['08:05'] })
    await advanceTo(c, '2026-06-01T08:05:30Z')
    const lisinopril = occurrences(c.t, c.dev.patientId).find((o) => o.schedule_id === other.id)!
    expect((await call(c.t, c.patient, 'POST', `/api/v1/reminder-occurrences/${lisinopril.id}/taken`, {})).status).toBe(200)
    await new Promise((r) => setTimeout(r, 200))
    expect((await alertsOf()).map((a) => a.status)).toEqual(['open'])

    // The 08:10 Metformin dose, confirmed by the patient: all clear.
    await advanceTo(c, '2026-06-01T08:10:30Z')
    const next = occurrences(c.t, c.dev.patientId).find((o) => o.due_at === '2026-06-01T08:10:00.000Z')!
    expect((await call(c.t, c.patient, 'POST', `/api/v1/reminder-occurrences/${next.id}/taken`, {})).status).toBe(200)
    const resolved = await waitFor(async () => (await alertsOf()).find((a) => a.status === 'resolved'), 5000, 'the alert resolved')
    expect(resolved).toMatchObject({ id: alert.id, resolution: 'auto' })
  })

  it('a missed dose and its alert are recorded together: while the alert cannot be written the dose stays pending, then both are recorded, once', async () => {
    const c = await clinic('2026-06-01T07:59:30Z', { settings: { 'reminders.graceMinutes': 2 } })
    await addReminder(c, { ...metformin, times: ['08:00'] })
    await advance(c, 60) // 08:00:30: sent
    const sqlite = c.t.gateway.store.sqlite
    const alerts = () => sqlite.prepare('SELECT id, rule_id, status, count FROM alerts WHERE patient_id = ?').all(c.dev.patientId)
    const alertMessages = () => c.t.gateway.threads.history(c.threadId, { limit: 500 }).items.filter((m) => m.kind === 'alert')
    // The database refuses new alerts (a full disk, a broken rule): a fault in the real database.
    sqlite.exec("CREATE TRIGGER refuse_alerts BEFORE INSERT ON alerts BEGIN SELECT RAISE(ABORT, 'alerts refused'); END")
    await advance(c, 120) // 08:02:30: past the grace window
    await advance(c, 60)
    // Neither: the miss is not recorded without its alert (and nothing was announced).
    expect(occurrences(c.t, c.dev.patientId).map((o) => [o.status, o.missed_at])).toEqual([['pending', null]])
    expect(alerts()).toEqual([])
    expect(alertMessages()).toEqual([])
    expect(c.events.missed).toEqual([])

    sqlite.exec('DROP TRIGGER refuse_alerts')
    await advance(c, 60) // 08:04:30: tried again
    const [occ] = occurrences(c.t, c.dev.patientId)
    expect(occ).toMatchObject({ status: 'missed', missed_at: '2026-06-01T08:04:30.000Z' })
    expect(alerts()).toEqual([expect.objectContaining({ rule_id: 'missed-dose', status: 'open', count: 1 })])
    expect(alertMessages().map((m) => m.text)).toEqual(['Warning: Missed medication dose — a dose was not confirmed in time'])
    expect(c.events.missed).toEqual([expect.objectContaining({ occurrenceId: occ!.id })])
    const listed = await call(c.t, c.provider, 'GET', `/api/v1/alerts?status=all&patientId=${c.dev.patientId}`)
    expect(listed.body.items.map((a: any) => [a.ruleId, a.status])).toEqual([['missed-dose', 'open']])

    await advance(c, 60)
    expect(alerts()).toHaveLength(1)
    expect(alertMessages()).toHaveLength(1)
    expect(c.events.missed).toHaveLength(1)
  })

  it('a measurement reminder is done when a reading of its type arrives in its window', async () => {
    const c = await clinic('2026-06-01T07:59:30Z')
    const { body: bp } = await addReminder(c, { kind: 'measurement', readingType: 'blood_pressure', times: ['08:00'] })
    await addReminder(c, { kind: 'measurement', readingType: 'weight', times: ['08:00'] })
    await advance(c, 60)
    const device = await connect(c.t, c.dev)
    const reading = build.bloodPressure(128, 82, 70, { measuredAt: '2026-06-01T08:00:45Z', seq: 1 })
    await device.publishAsync(`devices/${c.dev.deviceId}/readings`, JSON.stringify(reading), { qos: 1 })
    const rows = await waitFor(() => {
      const list = occurrences(c.t, c.dev.patientId)
      return list.some((o) => o.status === 'done') ? list : null
    })
    expect(rows.find((o) => o.schedule_id === bp.id)).toMatchObject({ status: 'done', source: 'reading', taken_at: '2026-06-01T08:00:45.000Z', confirmed_by: `device:${c.dev.deviceId}` })
    expect(rows.filter((o) => o.schedule_id !== bp.id).map((o) => o.status)).toEqual(['pending'])
    expect(c.events.taken).toHaveLength(0)
  })
})

describe('adherence', () => {
  it('counts taken, missed and pending doses over 7 and 30 days, overall and per schedule', async () => {
    const c = await clinic('2026-06-01T07:59:30Z', { settings: { 'reminders.graceMinutes': 1 } })
    const { body: med } = await addReminder(c, { ...metformin, times: ['08:00', '08:02', '08:04'] })
    await advance(c, 60) // 08:00:30
    const [first] = occurrences(c.t, c.dev.patientId)
    expect((await call(c.t, c.patient, 'POST', `/api/v1/reminder-occurrences/${first!.id}/taken`, {})).status).toBe(200)
    await advanceTo(c, '2026-06-01T08:02:30Z') // 08:02 sent
    await advanceTo(c, '2026-06-01T08:03:30Z') // 08:02 missed
    await advanceTo(c, '2026-06-01T08:04:30Z') // 08:04 sent, pending

    const res = await call(c.t, c.provider, 'GET', `/api/v1/patients/${c.dev.patientId}/adherence`)
    expect(res.status).toBe(200)
    for (const period of [res.body.last7Days, res.body.last30Days]) {
      expect(period).toMatchObject({ taken: 1, missed: 1, pending: 1, unsent: 0, unscheduled: 0, rate: 0.5, measurements: { done: 0, missed: 0, pending: 0, rate: null } })
      expect(period.schedules).toEqual([
        { scheduleId: med.id, kind: 'medication', medication: 'Metformin', dose: '500 mg', readingType: null, active: true, taken: 1, done: 0, missed: 1, pending: 1, unsent: 0, unscheduled: 0, rate: 0.5 },
      ])
    }
    expect(res.body.last7Days.from).toBe('2026-05-25T08:04:30.000Z')
    expect((await call(c.t, c.patient, 'GET', `/api/v1/patients/${c.dev.patientId}/adherence`)).status).toBe(200)
    expect((await call(c.t, c.stranger, 'GET', `/api/v1/patients/${c.dev.patientId}/adherence`)).status).toBe(404)
    expect(auditOf(c.t, 'adherence.read').map((a) => [a.actor_id, a.outcome])).toEqual([
      [c.provider.userId, 'allowed'],
      [c.patient.userId, 'allowed'],
      [c.stranger.userId, 'denied'],
    ])
  })
})

describe('restarts and daylight saving', () => {
  it('a restart neither drops nor repeats a reminder: one due while down is sent late, one older than the grace window is recorded as not sent', async () => {
    const c = await clinic('2026-06-01T07:59:30Z')
    const { body: med } = await addReminder(c, { ...metformin, times: ['08:00', '08:10', '08:30'] })
    await advance(c, 60) // 08:00 sent
    expect(reminderMessages(c)).toHaveLength(1)

    const first = c.t
    await first.gateway.stop() // the data directory stays
    c.clock.advanceSeconds(Date.parse('2026-06-01T09:15:00Z') / 1000 - c.clock.now() / 1000)
    const second = await startGateway(EVERY_SECOND, first.dataDir, { clock: c.clock })
    gateways = [second] // the first is stopped; the second removes the data directory
    c.t = second
    await advance(c, 1)
    await advance(c, 1)

    const rows = occurrences(second, c.dev.patientId)
    expect(rows.map((o) => [o.due_at, o.status, o.source, o.posted_at])).toEqual([
      ['2026-06-01T08:00:00.000Z', 'missed', null, '2026-06-01T08:00:30.000Z'], // sent, not confirmed in time
      ['2026-06-01T08:10:00.000Z', 'missed', 'gateway_down', null], // 65 min late: past graceMinutes (60)
      ['2026-06-01T08:30:00.000Z', 'pending', null, '2026-06-01T09:15:00.000Z'],
    ])
    expect(reminderMessages(c).map((m) => m.text)).toEqual([
      'Time to take Metformin 500 mg (08:00)',
      'Time to take Metformin 500 mg (08:30, sent late)',
    ])
    expect(reminderMessages(c)[1]!.data.reminder).toMatchObject({ late: true, dueAt: '2026-06-01T08:30:00.000Z' })

    const nurse = await signIn(second, 'nurse')
    const res = await call(second, nurse, 'GET', `/api/v1/patients/${c.dev.patientId}/adherence`)
    // A reminder that was never sent does not count against the patient.
    expect(res.body.last7Days).toMatchObject({ taken: 0, missed: 1, pending: 1, unsent: 1, rate: 0 })
    expect(res.body.last7Days.schedules[0]).toMatchObject({ scheduleId: med.id, unsent: 1 })
  })

  it('a schedule another process adds (the CLI) while the gateway runs comes due, and a reading completes it', async () => {
    const c = await clinic('2026-06-01T07:59:30Z')
    const cli = new SQLite(c.t.gateway.store.file)
    try {
      new ReminderRecords(cli, c.clock).createSchedule(c.dev.patientId, { kind: 'measurement', readingType: 'blood_pressure', times: ['08:00'] }, 'operator:test')
    } finally {
      cli.close()
    }
    await advance(c, 60)
    expect(reminderMessages(c).map((m) => m.text)).toEqual(['Time to check your blood pressure (08:00)'])
    const device = await connect(c.t, c.dev)
    const reading = build.bloodPressure(124, 80, 66, { measuredAt: '2026-06-01T08:00:40Z', seq: 1 })
    await device.publishAsync(`devices/${c.dev.deviceId}/readings`, JSON.stringify(reading), { qos: 1 })
    const [done] = await waitFor(() => {
      const list = occurrences(c.t, c.dev.patientId)
      return list[0]?.status === 'done' ? list : null
    })
    expect(done).toMatchObject({ due_at: '2026-06-01T08:00:00.000Z', source: 'reading', taken_at: '2026-06-01T08:00:40.000Z' })
  })

  it('America/New_York, 08:00 daily across 2026-03-08: 13:00Z before the change, 12:00Z after, each once', async () => {
    const c = await clinic('2026-03-07T12:59:30Z', { timezone: 'America/New_York' })
    const { body } = await addReminder(c, { ...metformin, times: ['08:00'] })
    expect(body.nextDueAt).toBe('2026-03-07T13:00:00.000Z')
    const device = await connect(c.t, c.dev)
    await device.subscribeAsync(`devices/${c.dev.deviceId}/commands`, { qos: 1 })
    const commands: string[] = []
    device.on('message', (_topic, payload) => commands.push(JSON.parse(payload.toString()).dueAt))

    for (const at of [
      '2026-03-07T13:00:30Z', // 08:00 EST
      '2026-03-08T11:59:30Z',
      '2026-03-08T12:00:30Z', // 08:00 EDT
      '2026-03-08T13:00:30Z', // what 08:00 EST would have been: nothing
      '2026-03-09T11:59:30Z',
      '2026-03-09T12:00:30Z',
      '2026-03-09T13:00:30Z',
    ]) await advanceTo(c, at)

    const expected = ['2026-03-07T13:00:00.000Z', '2026-03-08T12:00:00.000Z', '2026-03-09T12:00:00.000Z']
    expect(occurrences(c.t, c.dev.patientId).map((o) => [o.due_at, o.local_date, o.local_time])).toEqual([
      [expected[0], '2026-03-07', '08:00'],
      [expected[1], '2026-03-08', '08:00'],
      [expected[2], '2026-03-09', '08:00'],
    ])
    expect(reminderMessages(c).map((m) => m.data.reminder.dueAt)).toEqual(expected)
    expect(c.events.due.map((e) => e.dueAt)).toEqual(expected)
    await waitFor(() => commands.length >= 3)
    expect(commands).toEqual(expected)
  })
})

describe('schedules', () => {
  it('bad input is refused with the field named', async () => {
    const c = await clinic('2026-06-01T07:59:30Z')
    const cases: Array<[Record<string, unknown>, string, RegExp?]> = [
      [{ ...metformin, times: ['08:00', '8:00'] }, 'times[1]', /times\[1\] must be HH:MM \(24-hour\)/],
      [{ ...metformin, times: ['24:00'] }, 'times[0]'],
      [{ ...metformin, times: [] }, 'times'],
      [{ ...metformin, times: ['08:00', '08:00'] }, 'times[1]'],
      [{ ...metformin, times: ['08:00'], timezone: 'Mars/Olympus' }, 'timezone', /IANA time zone/],
      [{ ...metformin, times: ['08:00'], days: [1, 8] }, 'days[1]'],
      [{ kind: 'medication', times: ['08:00'] }, 'medication'],
      [{ kind: 'measurement', times: ['08:00'] }, 'readingType'],
      [{ kind: 'measurement', readingType: 'mood', times: ['08:00'] }, 'readingType'],
      [{ ...metformin, times: ['08:00'], startsOn: '2026-02-30' }, 'startsOn'],
      [{ ...metformin, times: ['08:00'], startsOn: '2026-06-10', endsOn: '2026-06-01' }, 'endsOn'],
      [{ ...metformin, times: ['08:00'], color: 'blue' }, 'color'],
    ]
    for (const [body, field, message] of cases) {
      const res = await addReminder(c, body)
      expect(res.status, JSON.stringify(body)).toBe(400)
      expect(res.body.code).toBe('RPM_ERR_BAD_REQUEST')
      expect(res.body.details.field, JSON.stringify(body)).toBe(field)
      if (message) expect(res.body.message).toMatch(message)
    }
    expect(occurrences(c.t, c.dev.patientId)).toHaveLength(0)
    expect((await call(c.t, c.provider, 'GET', `/api/v1/patients/${c.dev.patientId}/reminders`)).body.items).toEqual([])
  })

  it('providers on the care team create and change them; patients read their own; others get 404; every access is audited', async () => {
    const c = await clinic('2026-06-01T07:59:30Z')
    const path = `/api/v1/patients/${c.dev.patientId}/reminders`
    expect((await call(c.t, c.patient, 'POST', path, { ...metformin, times: ['08:00'] })).status).toBe(403)
    expect((await call(c.t, c.stranger, 'POST', path, { ...metformin, times: ['08:00'] })).status).toBe(404)
    expect((await call(c.t, c.stranger, 'GET', path)).status).toBe(404)
    const { body: s } = await addReminder(c, { ...metformin, times: ['08:00'] })
    expect((await call(c.t, c.patient, 'GET', path)).body.items.map((x: any) => x.id)).toEqual([s.id])

    const changed = await call(c.t, c.provider, 'PATCH', `/api/v1/reminders/${s.id}`, { times: ['09:30'], dose: '1000 mg', days: [2] })
    expect(changed.status).toBe(200)
    expect(changed.body).toMatchObject({ times: ['09:30'], dose: '1000 mg', days: [2], nextDueAt: '2026-06-02T09:30:00.000Z' })
    expect((await call(c.t, c.stranger, 'PATCH', `/api/v1/reminders/${s.id}`, { dose: '1 mg' })).status).toBe(404)
    expect((await call(c.t, c.patient, 'PATCH', `/api/v1/reminders/${s.id}`, { dose: '1 mg' })).status).toBe(403)
    expect((await call(c.t, c.provider, 'PATCH', `/api/v1/reminders/${s.id}`, { times: ['9.30'] })).body.details).toEqual({ field: 'times[0]' })

    const stopped = await call(c.t, c.provider, 'DELETE', `/api/v1/reminders/${s.id}`)
    expect(stopped.status).toBe(200)
    expect(stopped.body).toMatchObject({ id: s.id, active: false, nextDueAt: null })
    // Deactivated, not removed: it is listed, and no longer reminds.
    expect((await call(c.t, c.patient, 'GET', path)).body.items).toEqual([expect.objectContaining({ id: s.id, active: false })])
    await advanceTo(c, '2026-06-02T09:30:30Z')
    expect(occurrences(c.t, c.dev.patientId)).toHaveLength(0)
    // Active again: the next one is due, and what came due while it was stopped is not caught up.
    const nurse = await signIn(c.t, 'nurse') // the first session went idle while the clock moved
    const resumed = await call(c.t, nurse, 'PATCH', `/api/v1/reminders/${s.id}`, { active: true })
    expect(resumed.body).toMatchObject({ active: true, nextDueAt: '2026-06-09T09:30:00.000Z' })
    await advance(c, 1)
    expect(occurrences(c.t, c.dev.patientId)).toHaveLength(0)

    const actions = auditOf(c.t).filter((a) => a.action.startsWith('reminder')).map((a) => [a.action, a.outcome])
    expect(actions).toEqual(expect.arrayContaining([
      ['reminder.create', 'allowed'],
      ['reminder.create', 'denied'],
      ['reminders.read', 'allowed'],
      ['reminders.read', 'denied'],
      ['reminder.update', 'allowed'],
      ['reminder.update', 'denied'],
      ['reminder.deactivate', 'allowed'],
    ]))
  })

  it('a retried create with the same clientRequestId answers the first schedule with 200: the patient is reminded once', async () => {
    const c = await clinic('2026-06-01T07:59:30Z')
    const path = `/api/v1/patients/${c.dev.patientId}/reminders`
    const body = { ...metformin, times: ['08:00'], clientRequestId: 'web-7f3a:rem.1' }
    const first = await addReminder(c, body)
    expect(first.status).toBe(201)
    expect(first.body).toMatchObject({ medication: 'Metformin', clientRequestId: 'web-7f3a:rem.1' })
    const retry = await addReminder(c, body)
    expect(retry.status).toBe(200)
    expect(retry.body).toEqual(first.body)
    // A retry answers the first even when its body differs (a client that rebuilt it).
    expect(await addReminder(c, { ...body, times: ['08:00', '20:00'] })).toEqual({ status: 200, body: first.body })

    // Another id is another schedule; so is the same id from another provider on the care team.
    const evening = await addReminder(c, { ...body, times: ['20:00'], clientRequestId: 'web-7f3a:rem.2' })
    expect(evening.status).toBe(201)
    await c.t.gateway.users.addToCareTeam(c.dev.patientId, 'other-nurse')
    const theirs = await call(c.t, c.stranger, 'POST', path, { ...body, times: ['20:00'] })
    expect(theirs.status).toBe(201)
    expect(new Set([first.body.id, evening.body.id, theirs.body.id]).size).toBe(3)
    for (const bad of ['', '-rem', 'has space', 'x'.repeat(65)]) {
      const res = await addReminder(c, { ...body, clientRequestId: bad })
      expect(res.status, bad).toBe(400)
      expect(res.body.details, bad).toMatchObject({ field: 'clientRequestId' })
    }
    expect((await call(c.t, c.provider, 'GET', path)).body.items).toHaveLength(3)

    await advance(c, 60)
    expect(reminderMessages(c).map((m) => m.text)).toEqual(['Time to take Metformin 500 mg (08:00)'])
    expect(auditOf(c.t, 'reminder.create').filter((a) => a.outcome === 'allowed').map((a) => JSON.parse(a.details_json ?? '{}').created)).toEqual([true, false, false, true, true])
  })

  it('the CLI adds a medication and a measurement reminder, lists them and prints adherence (--json)', async () => {
    const dataDir = tempDir('rpm-reminder-cli-')
    const t = await startGateway(EVERY_SECOND, dataDir)
    gateways.push(t)
    const p = await t.gateway.registry.addPatient({ name: 'CLI Patient', timezone: 'Europe/London' })
    const bin = fileURLToPath(new URL('../../bin/rpm-gateway.js', import.meta.url))
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RPM_')))
    const cli = async (args: string[]) => {
      const r = await runProcess(process.execPath, [bin, '--data-dir', dataDir, '--json', ...args], { env, cwd: dataDir, timeoutMs: 20_000 })
      return { ...r, json: r.stdout ? JSON.parse(r.stdout) : null }
    }
    const med = await cli(['reminder', 'add', '--patient', p.id, '--medication', 'Lisinopril', '--dose', '10 mg', '--times', '08:00,20:00', '--days', 'mon,wed,fri', '--instructions', 'with water'])
    expect(med.code, med.stderr).toBe(0)
    expect(med.json).toMatchObject({ kind: 'medication', medication: 'Lisinopril', dose: '10 mg', times: ['08:00', '20:00'], days: [1, 3, 5], instructions: 'with water', active: true })
    const bp = await cli(['reminder', 'add', '--patient', p.id, '--measure', 'blood_pressure', '--times', '07:30'])
    expect(bp.json).toMatchObject({ kind: 'measurement', readingType: 'blood_pressure', times: ['07:30'], days: [1, 2, 3, 4, 5, 6, 7] })
    const bad = await cli(['reminder', 'add', '--patient', p.id, '--medication', 'X', '--times', '08:00,25:00'])
    expect(bad.code).toBe(1)
    expect(bad.json.error).toMatchObject({ code: 'RPM_ERR_BAD_REQUEST', details: { field: 'times[1]' } })

    const list = await cli(['reminder', 'list', '--patient', p.id])
    expect(list.json.items.map((s: any) => s.id)).toEqual([med.json.id, bp.json.id])
    // The running gateway sees schedules the CLI wrote.
    expect(t.gateway.reminders.records.schedules(p.id)).toHaveLength(2)
    const adherence = await cli(['adherence', '--patient', p.id])
    expect(adherence.json).toMatchObject({ patientId: p.id, last7Days: { taken: 0, missed: 0, rate: null }, last30Days: { schedules: expect.arrayContaining([expect.objectContaining({ scheduleId: med.json.id })]) } })
  })
})
