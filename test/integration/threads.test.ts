import type { MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { build } from '../../device-simulator/readings.ts'
import type { DeviceKind } from '../../src/store/schema.ts'
import { auditOf, call, connectDevice, nextMessage, provision, signInAs, startGateway, waitFor, type Caller, type TestDevice, type TestGateway } from '../helpers.ts'

let t: TestGateway | undefined
let clients: MqttClient[] = []

afterEach(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)))
  clients = []
  await t?.stop()
  t = undefined
})

const PASSWORD = 'correct horse battery'

const signIn = (t: TestGateway, username: string): Promise<Caller> => signInAs(t, username, PASSWORD)

/**
 * A gateway with one patient (a bp_cuff, and a signed-in patient user), a provider on the care
 * team and a provider who is not.
 */
async function clinic(settings: Record<string, unknown> = {}): Promise<{
  t: TestGateway
  dev: TestDevice
  patient: Caller
  provider: Caller
  stranger: Caller
  threadId: string
}> {
  t = await startGateway(settings)
  const g = t.gateway
  const dev = await provision(g, 'bp_cuff')
  await g.users.add({ username: 'pat', password: PASSWORD, role: 'patient', patientId: dev.patientId })
  await g.users.add({ username: 'nurse', password: PASSWORD, role: 'provider', name: 'Nurse' })
  await g.users.add({ username: 'other-nurse', password: PASSWORD, role: 'provider', name: 'Other' })
  await g.users.addToCareTeam(dev.patientId, 'nurse')
  const [patient, provider, stranger] = await Promise.all([signIn(t, 'pat'), signIn(t, 'nurse'), signIn(t, 'other-nurse')])
  const thread = await call(t, patient, 'GET', `/api/v1/patients/${dev.patientId}/thread`)
  expect(thread.status).toBe(200)
  return { t, dev, patient, provider, stranger, threadId: thread.body.id }
}

async function addDevice(t: TestGateway, patientId: string, kind: DeviceKind): Promise<TestDevice> {
  const d = await t.gateway.registry.addDevice({ patientId, kind })
  return { patientId, deviceId: d.id, secret: d.secret }
}

async function connect(t: TestGateway, dev: TestDevice): Promise<MqttClient> {
  const client = await connectDevice(t, dev)
  clients.push(client)
  return client
}

const send = (t: TestGateway, who: Caller, threadId: string, clientMessageId: string, text: string, extra: Record<string, unknown> = {}) =>
  call(t, who, 'POST', `/api/v1/threads/${threadId}/messages`, { clientMessageId, text, ...extra })

const history = async (t: TestGateway, who: Caller, threadId: string, query = '') => {
  const res = await call(t, who, 'GET', `/api/v1/threads/${threadId}/messages${query}`)
  expect(res.status).toBe(200)
  return res.body as { items: any[]; hasMore: boolean; lastSeq: number; lastRevision: number }
}

describe('patient and provider messages', () => {
  it('both see the exchange in order, numbered by seq, with replies', async () => {
    const { t, patient, provider, threadId, dev } = await clinic()
    const first = await send(t, patient, threadId, 'p-1', 'My readings were high this morning')
    expect(first.status).toBe(201)
    expect(first.body).toMatchObject({ threadId, seq: 1, kind: 'text', from: { role: 'patient', userId: patient.userId, deviceId: null }, replyTo: null })
    const reply = await send(t, provider, threadId, 'n-1', 'Please measure again in an hour', { replyTo: first.body.id })
    expect(reply.status).toBe(201)
    expect(reply.body).toMatchObject({ seq: 2, from: { role: 'provider', userId: provider.userId }, replyTo: first.body.id })
    expect((await send(t, patient, threadId, 'p-2', 'Will do')).body.seq).toBe(3)

    for (const who of [patient, provider]) {
      const page = await history(t, who, threadId)
      expect(page.items.map((m) => [m.seq, m.text])).toEqual([
        [1, 'My readings were high this morning'],
        [2, 'Please measure again in an hour'],
        [3, 'Will do'],
      ])
      expect(page.lastSeq).toBe(3)
    }

    // The provider's thread list shows the patient's thread with its last message.
    const list = await call(t, provider, 'GET', '/api/v1/threads')
    expect(list.status).toBe(200)
    expect(list.body.items).toHaveLength(1)
    expect(list.body.items[0]).toMatchObject({ id: threadId, patientId: dev.patientId, lastSeq: 3, lastMessage: { seq: 3, text: 'Will do' } })

    // A reply must point into the same thread.
    const stray = await send(t, patient, threadId, 'p-3', 'hello', { replyTo: 'msg-nope' })
    expect(stray.status).toBe(400)
    expect(stray.body.details).toEqual({ field: 'replyTo' })
  })

  it('a retried clientMessageId makes one message: 201 the first time, 200 with the same message after', async () => {
    const { t, patient, provider, threadId } = await clinic()
    const first = await send(t, patient, threadId, 'retry-me', 'Feeling dizzy')
    const again = await send(t, patient, threadId, 'retry-me', 'Feeling dizzy')
    expect(first.status).toBe(201)
    expect(again.status).toBe(200)
    expect(again.body).toEqual(first.body)
    // The same client id from another sender is that sender's own message.
    const theirs = await send(t, provider, threadId, 'retry-me', 'Sit down and rest')
    expect(theirs.status).toBe(201)
    expect((await history(t, patient, threadId)).items.map((m) => m.seq)).toEqual([1, 2])
  })

  it('refuses bad bodies: unknown fields, empty or overlong text', async () => {
    const { t, patient, threadId } = await clinic()
    expect((await call(t, patient, 'POST', `/api/v1/threads/${threadId}/messages`, { clientMessageId: 'a', text: 'x', extra: 1 })).status).toBe(400)
    expect((await send(t, patient, threadId, 'b', '   ')).status).toBe(400)
    expect((await send(t, patient, threadId, 'c', 'x'.repeat(4001))).status).toBe(400)
    expect((await send(t, patient, threadId, 'd', 'x'.repeat(4000))).status).toBe(201)
    expect((await call(t, undefined, 'GET', `/api/v1/threads/${threadId}/messages`)).status).toBe(401)
  })
})

describe('who may see a thread', () => {
  it('a provider off the care team gets 404 for the thread, as for one that does not exist, and it is audited', async () => {
    const { t, patient, stranger, threadId, dev } = await clinic()
    await send(t, patient, threadId, 'p-1', 'private')

    const read = await call(t, stranger, 'GET', `/api/v1/threads/${threadId}/messages`)
    expect(read.status).toBe(404)
    expect(read.body.code).toBe('RPM_ERR_NOT_FOUND')
    const missing = await call(t, stranger, 'GET', '/api/v1/threads/thr-nonexistent/messages')
    expect(missing.status).toBe(404)
    expect(missing.body.message).toBe('no thread thr-nonexistent')
    expect(read.body.message).toBe(`no thread ${threadId}`)

    expect((await send(t, stranger, threadId, 's-1', 'hi')).status).toBe(404)
    expect((await call(t, stranger, 'POST', `/api/v1/threads/${threadId}/read`, { seq: 1 })).status).toBe(404)
    expect((await call(t, stranger, 'GET', `/api/v1/patients/${dev.patientId}/thread`)).status).toBe(404)
    expect((await call(t, stranger, 'GET', '/api/v1/threads')).body.items).toEqual([])

    const denied = auditOf(t).filter((r) => r.actor_id === stranger.userId && r.outcome === 'denied')
    expect(denied.map((r) => [r.action, r.target])).toEqual([
      ['messages.read', threadId],
      ['messages.read', 'thr-nonexistent'],
      ['message.post', threadId],
      ['thread.mark_read', threadId],
      ['thread.read', dev.patientId],
    ])
    // Audit entries name records, never message text.
    expect(auditOf(t).some((r) => (r.details_json ?? '').includes('private'))).toBe(false)
    expect(auditOf(t, 'message.post').filter((r) => r.outcome === 'allowed')).toHaveLength(1)
  })

  it('another patient gets 404; an admin needs break-glass to take part', async () => {
    const { t, patient, threadId, dev } = await clinic()
    const other = await provision(t.gateway, 'scale')
    await t.gateway.users.add({ username: 'pat2', password: PASSWORD, role: 'patient', patientId: other.patientId })
    await t.gateway.users.add({ username: 'root', password: PASSWORD, role: 'admin' })
    const [patient2, admin] = await Promise.all([signIn(t, 'pat2'), signIn(t, 'root')])
    await send(t, patient, threadId, 'p-1', 'hello')

    expect((await call(t, patient2, 'GET', `/api/v1/threads/${threadId}/messages`)).status).toBe(404)
    const own = await call(t, patient2, 'GET', '/api/v1/threads')
    expect(own.body.items.map((i: any) => i.patientId)).toEqual([other.patientId])

    expect((await send(t, admin, threadId, 'a-1', 'checking')).status).toBe(404)
    const grant = await call(t, admin, 'POST', '/api/v1/break-glass', { patientId: dev.patientId, reason: 'patient unreachable, urgent follow-up', minutes: 5 })
    expect(grant.status).toBe(201)
    expect((await send(t, admin, threadId, 'a-1', 'checking')).body).toMatchObject({ seq: 2, from: { role: 'admin' } })
    expect((await call(t, admin, 'GET', '/api/v1/threads')).body.items.map((i: any) => i.id)).toEqual([threadId])
    const posted = auditOf(t, 'message.post').filter((r) => r.actor_id === admin.userId && r.outcome === 'allowed')
    expect(JSON.parse(posted[0]!.details_json!)).toMatchObject({ basis: 'break_glass' })
  })
})

describe('readings and devices in the thread', () => {
  it('a bp_cuff reading over MQTT becomes a structured message; a kind outside threads.readingKinds does not', async () => {
    const { t, dev, provider, threadId } = await clinic({ 'threads.readingKinds': ['bp_cuff'] })
    const meter = await addDevice(t, dev.patientId, 'glucometer')
    const cuff = await connect(t, dev)
    const glucometer = await connect(t, meter)
    const measuredAt = new Date(Date.now() - 60_000).toISOString().replace(/\.\d+Z$/, '.000Z')
    await glucometer.publishAsync(`devices/${meter.deviceId}/readings`, JSON.stringify(build.glucose(110, 'mg/dL', { seq: 1 })), { qos: 1 })
    await cuff.publishAsync(`devices/${dev.deviceId}/readings`, JSON.stringify(build.bloodPressure(152, 95, 78, { seq: 7, measuredAt })), { qos: 1 })
    // Committed with the reading itself: present as soon as the PUBACK is.
    const inThread = t.gateway.store.sqlite.prepare("SELECT COUNT(*) AS n FROM messages WHERE thread_id = ? AND kind = 'reading'").get(threadId) as { n: number }
    expect(inThread.n).toBe(1)

    const page = await waitFor(async () => {
      const p = await history(t, provider, threadId)
      return p.items.length > 0 ? p : undefined
    })
    expect(page.items).toHaveLength(1)
    expect(page.items[0]).toMatchObject({
      seq: 1,
      kind: 'reading',
      text: null,
      from: { role: 'device', userId: null, deviceId: dev.deviceId },
      data: { type: 'blood_pressure', values: { systolicMmHg: 152, diastolicMmHg: 95, pulseBpm: 78 }, measuredAt, deviceId: dev.deviceId },
    })
    expect(typeof page.items[0].data.readingId).toBe('number')
    // Both readings are in the clinical record all the same.
    const stored = t.gateway.store.sqlite.prepare('SELECT COUNT(*) AS n FROM readings WHERE patient_id = ?').get(dev.patientId) as { n: number }
    expect(stored.n).toBe(2)
  })

  it('a batch of readings becomes consecutive messages in the batch\'s order, after what the thread already held', async () => {
    const { t, dev, provider, patient, threadId } = await clinic()
    await send(t, patient, threadId, 'before', 'Taking my readings now')
    const cuff = await connect(t, dev)
    const at = (m: number) => new Date(Date.now() - m * 60_000).toISOString()
    await cuff.publishAsync(
      `devices/${dev.deviceId}/readings`,
      JSON.stringify([1, 2, 3].map((seq) => build.bloodPressure(120 + seq, 80, 70, { seq, measuredAt: at(10 - seq) }))),
      { qos: 1 },
    )
    const page = await history(t, provider, threadId)
    expect(page.items.map((m: { seq: number; kind: string }) => [m.seq, m.kind])).toEqual([[1, 'text'], [2, 'reading'], [3, 'reading'], [4, 'reading']])
    expect(page.items.slice(1).map((m: { data: { values: { systolicMmHg: number } } }) => m.data.values.systolicMmHg)).toEqual([121, 122, 123])
  })

  it('a hub\'s message event becomes a patient message; a bad one is answered on its errors topic', async () => {
    const { t, dev, provider, threadId } = await clinic()
    const hubDevice = await addDevice(t, dev.patientId, 'hub')
    const hub = await connect(t, hubDevice)
    await hub.subscribeAsync(`devices/${hubDevice.deviceId}/errors`, { qos: 1 })

    await hub.publishAsync(`devices/${hubDevice.deviceId}/events`, JSON.stringify({ type: 'message', text: 'Out of test strips', id: 'hub-1' }), { qos: 1 })
    // QoS1 can redeliver: the hub's id makes it one message.
    await hub.publishAsync(`devices/${hubDevice.deviceId}/events`, JSON.stringify({ type: 'message', text: 'Out of test strips', id: 'hub-1' }), { qos: 1 })
    const page = await history(t, provider, threadId)
    expect(page.items).toHaveLength(1)
    expect(page.items[0]).toMatchObject({ seq: 1, kind: 'text', text: 'Out of test strips', from: { role: 'patient', userId: null, deviceId: hubDevice.deviceId } })

    const errors = nextMessage(hub, `devices/${hubDevice.deviceId}/errors`)
    await hub.publishAsync(`devices/${hubDevice.deviceId}/events`, JSON.stringify({ type: 'message', text: 'hi', colour: 'red' }), { qos: 1 })
    expect(JSON.parse((await errors).toString())).toEqual({ code: 'RPM_ERR_EVENT_INVALID', message: 'unknown field colour', path: '/colour' })
    const notJson = nextMessage(hub, `devices/${hubDevice.deviceId}/errors`)
    await hub.publishAsync(`devices/${hubDevice.deviceId}/events`, '{not json', { qos: 1 })
    expect(JSON.parse((await notJson).toString())).toMatchObject({ code: 'RPM_ERR_PAYLOAD_JSON' })
    expect(hub.connected).toBe(true)

    // Only hubs speak for the patient: a cuff's message event is refused.
    const cuff = await connect(t, dev)
    await cuff.subscribeAsync(`devices/${dev.deviceId}/errors`, { qos: 1 })
    const refused = nextMessage(cuff, `devices/${dev.deviceId}/errors`)
    await cuff.publishAsync(`devices/${dev.deviceId}/events`, JSON.stringify({ type: 'message', text: 'hi' }), { qos: 1 })
    expect(JSON.parse((await refused).toString())).toMatchObject({ code: 'RPM_ERR_EVENT_INVALID', path: '/type' })

    // Other device events are structured messages; with an id, a resend posts once.
    const taken = JSON.stringify({ type: 'medication_taken', medicationId: 'med-1', id: 'evt-1' })
    await cuff.publishAsync(`devices/${dev.deviceId}/events`, taken, { qos: 1 })
    await cuff.publishAsync(`devices/${dev.deviceId}/events`, taken, { qos: 1 })
    const after = await history(t, provider, threadId, '?after=1')
    expect(after.items.map((m) => [m.kind, m.data])).toEqual([
      ['device_event', { deviceId: dev.deviceId, deviceKind: 'bp_cuff', event: { type: 'medication_taken', medicationId: 'med-1', id: 'evt-1' } }],
    ])
    const byDevices = auditOf(t, 'message.post').filter((r) => r.actor_type === 'device')
    expect(byDevices.filter((r) => r.outcome === 'allowed').map((r) => r.actor_id)).toEqual([hubDevice.deviceId, hubDevice.deviceId])
    // The cuff's refused message is audited too.
    expect(byDevices.filter((r) => r.outcome === 'denied').map((r) => r.actor_id)).toEqual([dev.deviceId])
  })

  it('a provider\'s message reaches the patient\'s hub on devices/{hubId}/commands', async () => {
    const { t, dev, provider, patient, threadId } = await clinic()
    const hubDevice = await addDevice(t, dev.patientId, 'hub')
    const hub = await connect(t, hubDevice)
    await hub.subscribeAsync(`devices/${hubDevice.deviceId}/commands`, { qos: 1 })

    const command = nextMessage(hub, `devices/${hubDevice.deviceId}/commands`)
    await send(t, provider, threadId, 'n-1', 'Please take your evening dose')
    expect(JSON.parse((await command).toString())).toEqual({ type: 'message', threadId, seq: 1, from: { role: 'provider' }, text: 'Please take your evening dose' })

    // The patient's own app messages show on the hub too, but not a message the hub itself sent.
    const seen: any[] = []
    hub.on('message', (topic, payload) => {
      if (topic.endsWith('/commands')) seen.push(JSON.parse(payload.toString()))
    })
    await hub.publishAsync(`devices/${hubDevice.deviceId}/events`, JSON.stringify({ type: 'message', text: 'Done' }), { qos: 1 })
    await send(t, patient, threadId, 'p-1', 'Thanks')
    await waitFor(() => seen.length >= 1)
    await new Promise((r) => setTimeout(r, 100))
    expect(seen).toEqual([{ type: 'message', threadId, seq: 3, from: { role: 'patient' }, text: 'Thanks' }])
  })
})

describe('receipts', () => {
  it('counts messages, alerts and reminders as unread, not the reading cards that arrive all day', async () => {
    const { t, dev, patient, provider, threadId } = await clinic()
    const cuff = await connect(t, dev)
    for (let seq = 1; seq <= 3; seq++) await cuff.publishAsync(`devices/${dev.deviceId}/readings`, JSON.stringify(build.bloodPressure(120 + seq, 80, 70, { seq })), { qos: 1 })
    await waitFor(async () => (await history(t, provider, threadId)).items.length === 3, 5000, 'three reading cards')
    const unread = async (who: Caller) => (await call(t, who, 'GET', '/api/v1/threads')).body.items[0].unread
    expect(await unread(provider)).toBe(0)
    await send(t, patient, threadId, 'p-1', 'my readings are up')
    expect(await unread(provider)).toBe(1)
  })

  it('the read horizon moves only forward and sets the unread count per caller', async () => {
    const { t, patient, provider, threadId } = await clinic()
    await send(t, patient, threadId, 'p-1', 'one')
    await send(t, patient, threadId, 'p-2', 'two')
    await send(t, provider, threadId, 'n-1', 'three')

    const unread = async (who: Caller) => (await call(t, who, 'GET', '/api/v1/threads')).body.items[0].unread
    expect(await unread(provider)).toBe(2)
    expect(await unread(patient)).toBe(1)

    const read = await call(t, provider, 'POST', `/api/v1/threads/${threadId}/read`, { seq: 1 })
    expect(read.status).toBe(200)
    expect(read.body).toEqual({ threadId, readSeq: 1, deliveredSeq: 1, unread: 1 })
    // Backwards changes nothing.
    expect((await call(t, provider, 'POST', `/api/v1/threads/${threadId}/read`, { seq: 0 })).body).toMatchObject({ readSeq: 1, unread: 1 })
    expect((await call(t, provider, 'POST', `/api/v1/threads/${threadId}/read`, { seq: 3 })).body).toMatchObject({ readSeq: 3, unread: 0 })
    expect((await call(t, provider, 'POST', `/api/v1/threads/${threadId}/read`, { seq: 4 })).status).toBe(400)
    expect(await unread(provider)).toBe(0)
    expect(await unread(patient)).toBe(1)

    // Fetching history moves the delivered horizon, not the read one.
    await history(t, patient, threadId)
    const mine = (await call(t, patient, 'GET', '/api/v1/threads')).body.items[0]
    expect(mine).toMatchObject({ readSeq: 0, deliveredSeq: 3, unread: 1 })

    const events: any[] = []
    t.gateway.bus.on('receipt.updated', (e) => events.push(e))
    await call(t, patient, 'POST', `/api/v1/threads/${threadId}/read`, { seq: 3 })
    await call(t, patient, 'POST', `/api/v1/threads/${threadId}/read`, { seq: 3 })
    expect(events).toEqual([{ patientId: expect.any(String), threadId, userId: patient.userId, readSeq: 3, deliveredSeq: 3 }])
  })
})

describe('edits and tombstones', () => {
  it('an edit keeps the earlier text; a delete leaves a tombstone with its seq', async () => {
    const { t, patient, provider, threadId } = await clinic()
    const events: Array<{ change: string; seq: number; text: string | null }> = []
    t.gateway.bus.on('message.updated', (e) => events.push({ change: e.change, seq: e.message.seq, text: e.message.text }))
    const msg = (await send(t, patient, threadId, 'p-1', 'I took 2 pills')).body
    await send(t, provider, threadId, 'n-1', 'ok')

    const edited = await call(t, patient, 'PATCH', `/api/v1/threads/${threadId}/messages/${msg.id}`, { text: 'I took 1 pill' })
    expect(edited.status).toBe(200)
    expect(edited.body).toMatchObject({ id: msg.id, seq: 1, text: 'I took 1 pill', revision: 3 })
    expect(edited.body.editedAt).not.toBeNull()
    await call(t, patient, 'PATCH', `/api/v1/threads/${threadId}/messages/${msg.id}`, { text: 'I took one pill' })
    const versions = await call(t, provider, 'GET', `/api/v1/threads/${threadId}/messages/${msg.id}/versions`)
    expect(versions.body.items.map((v: any) => [v.version, v.text])).toEqual([[1, 'I took 2 pills'], [2, 'I took 1 pill']])

    // Only the sender changes a message.
    expect((await call(t, provider, 'PATCH', `/api/v1/threads/${threadId}/messages/${msg.id}`, { text: 'x' })).status).toBe(403)
    expect((await call(t, provider, 'DELETE', `/api/v1/threads/${threadId}/messages/${msg.id}`)).status).toBe(403)
    expect(auditOf(t, 'message.edit').filter((r) => r.outcome === 'denied').map((r) => r.actor_id)).toEqual([provider.userId])

    const deleted = await call(t, patient, 'DELETE', `/api/v1/threads/${threadId}/messages/${msg.id}`)
    expect(deleted.status).toBe(200)
    expect(deleted.body).toMatchObject({ id: msg.id, seq: 1, text: null })
    expect(deleted.body.deletedAt).not.toBeNull()
    expect((await call(t, patient, 'DELETE', `/api/v1/threads/${threadId}/messages/${msg.id}`)).status).toBe(200)
    expect((await call(t, patient, 'PATCH', `/api/v1/threads/${threadId}/messages/${msg.id}`, { text: 'back' })).status).toBe(409)

    const page = await history(t, provider, threadId)
    expect(page.items.map((m) => [m.seq, m.text, m.deletedAt !== null])).toEqual([[1, null, true], [2, 'ok', false]])
    expect((await call(t, provider, 'GET', `/api/v1/threads/${threadId}/messages/${msg.id}/versions`)).body.items).toEqual([])
    expect(events).toEqual([
      { change: 'edited', seq: 1, text: 'I took 1 pill' },
      { change: 'edited', seq: 1, text: 'I took one pill' },
      { change: 'deleted', seq: 1, text: null },
    ])
    // The next message still gets the next seq.
    expect((await send(t, patient, threadId, 'p-2', 'sorry')).body.seq).toBe(3)

    // A client that saw revision 2 catches up on the edits and the delete too.
    const changes = await history(t, provider, threadId, '?changedAfter=2')
    expect(changes.items.map((m) => [m.seq, m.revision])).toEqual([[1, 5], [3, 6]])
  })
})

describe('history paging', () => {
  it('after=SEQ pages forward, before=SEQ pages back, both in seq order', async () => {
    const { t, patient, provider, threadId } = await clinic()
    for (let i = 1; i <= 7; i++) await send(t, i % 2 ? patient : provider, threadId, `m-${i}`, `message ${i}`)

    const first = await history(t, provider, threadId, '?limit=3')
    expect(first.items.map((m) => m.seq)).toEqual([1, 2, 3])
    expect(first.hasMore).toBe(true)
    const next = await history(t, provider, threadId, '?after=3&limit=3')
    expect(next.items.map((m) => m.seq)).toEqual([4, 5, 6])
    const last = await history(t, provider, threadId, '?after=6&limit=3')
    expect(last.items.map((m) => m.seq)).toEqual([7])
    expect(last.hasMore).toBe(false)
    expect((await history(t, provider, threadId, '?after=7')).items).toEqual([])

    const newest = await history(t, provider, threadId, '?before=8&limit=3')
    expect(newest.items.map((m) => m.seq)).toEqual([5, 6, 7])
    expect(newest.hasMore).toBe(true)
    const older = await history(t, provider, threadId, '?before=5&limit=3')
    expect(older.items.map((m) => m.seq)).toEqual([2, 3, 4])
    const oldest = await history(t, provider, threadId, '?before=2&limit=3')
    expect(oldest.items.map((m) => m.seq)).toEqual([1])
    expect(oldest.hasMore).toBe(false)

    expect((await history(t, provider, threadId, '?after=2&before=5')).items.map((m) => m.seq)).toEqual([3, 4])
    expect((await call(t, provider, 'GET', `/api/v1/threads/${threadId}/messages?limit=0`)).status).toBe(400)
    expect((await call(t, provider, 'GET', `/api/v1/threads/${threadId}/messages?changedAfter=1&after=2`)).status).toBe(400)
  })
})

describe('OpenAPI', () => {
  it('documents the thread routes', async () => {
    t = await startGateway()
    const res = await fetch(`${t.urls.http}/docs/json`)
    expect(res.status).toBe(200)
    const doc = (await res.json()) as { paths: Record<string, Record<string, unknown>> }
    expect(Object.keys(doc.paths).filter((p) => p.includes('thread')).sort()).toEqual([
      '/api/v1/patients/{patientId}/thread',
      '/api/v1/threads',
      '/api/v1/threads/{threadId}/messages',
      '/api/v1/threads/{threadId}/messages/{messageId}',
      '/api/v1/threads/{threadId}/messages/{messageId}/versions',
      '/api/v1/threads/{threadId}/read',
    ])
    expect(Object.keys(doc.paths['/api/v1/threads/{threadId}/messages/{messageId}']!).sort()).toEqual(['delete', 'patch'])
  })
})
