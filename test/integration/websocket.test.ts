import type { MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { build } from '../../device-simulator/readings.ts'
import { api, auditOf, connectDevice, provision, signInAs, startGateway, TestClock, waitFor, type Caller, type TestGateway } from '../helpers.ts'
import { closeSockets, connect, Live, open, wsUrl } from '../live.ts'

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

const signIn = (t: TestGateway, username: string): Promise<Caller> => signInAs(t, username, PASSWORD)

async function clinic(settings: Record<string, unknown> = {}, clock?: TestClock) {
  t = await startGateway(settings, undefined, clock ? { clock } : {})
  const g = t.gateway
  const dev = await provision(g, 'bp_cuff')
  await g.users.add({ username: 'pat', password: PASSWORD, role: 'patient', patientId: dev.patientId })
  await g.users.add({ username: 'nurse', password: PASSWORD, role: 'provider', name: 'Nurse' })
  await g.users.add({ username: 'other-nurse', password: PASSWORD, role: 'provider', name: 'Other' })
  await g.users.addToCareTeam(dev.patientId, 'nurse')
  const [patient, provider, stranger] = await Promise.all([signIn(t, 'pat'), signIn(t, 'nurse'), signIn(t, 'other-nurse')])
  const threadId = g.threads.ensure(dev.patientId).id
  return { t, dev, patient, provider, stranger, threadId }
}

describe('signing in on the WebSocket', () => {
  it('accepts the token in the first message or in the subprotocol, and refuses a bad one', async () => {
    const { t, patient, threadId, dev } = await clinic()
    const byMessage = await connect(t, patient)
    const ready = byMessage.of('ready')[0]
    expect(ready.user).toMatchObject({ id: patient.userId, role: 'patient', patientId: dev.patientId })
    expect(ready.threads).toEqual([{ threadId, patientId: dev.patientId, lastSeq: 0, readSeq: 0, deliveredSeq: 0, unread: 0 }])
    expect(ready.limits.maxMessageBytes).toBe(16384)

    const bySubprotocol = await open(t, ['rpm.v1', `bearer.${patient.token}`])
    expect(bySubprotocol.ws.protocol).toBe('rpm.v1')
    await bySubprotocol.next('ready')

    const forged = await open(t)
    forged.send({ type: 'auth', token: `${patient.token.slice(0, -4)}AAAA` })
    expect(await forged.closed).toMatchObject({ code: 4001 })
    expect(forged.of('error')[0]).toMatchObject({ code: 'RPM_ERR_UNAUTHENTICATED' })

    const rude = await open(t)
    rude.send({ type: 'subscribe', threads: [{ threadId, after: 0 }] })
    expect((await rude.closed).code).toBe(4001)
    // Nothing leaked to the unauthenticated sockets.
    expect([...forged.events, ...rude.events].filter((e) => e.type !== 'error')).toEqual([])
    expect(auditOf(t, 'ws.connect').map((r) => r.outcome)).toEqual(['allowed', 'allowed', 'denied'])
  })

  it('refuses an expired token, and closes an open socket when its token expires (4002)', async () => {
    const clock = new TestClock()
    const { t, patient } = await clinic({ 'auth.accessTokenTtlSeconds': 60, 'websocket.sessionCheckSeconds': 1 }, clock)
    const live = await connect(t, patient)
    clock.advanceSeconds(61)
    const closed = await live.closed
    expect(closed.code).toBe(4002)
    expect(closed.reason).toMatch(/token expired/)

    const late = await open(t)
    late.send({ type: 'auth', token: patient.token })
    expect((await late.closed).code).toBe(4001)
  })

  it('closes the socket when the session is revoked (sign-out over REST, 4003)', async () => {
    const { t, provider } = await clinic({ 'websocket.sessionCheckSeconds': 1 })
    const live = await connect(t, provider)
    expect((await api(t, 'POST', '/api/v1/auth/logout', { token: provider.token })).status).toBe(204)
    const closed = await live.closed
    expect(closed.code).toBe(4003)
    expect(closed.reason).toMatch(/session ended/)
  })

  it('closes the session\'s sockets on sign-out itself, not at the next periodic check', async () => {
    // With five minutes between periodic checks, only sign-out itself can close the socket in time.
    const { t, provider } = await clinic({ 'websocket.sessionCheckSeconds': 300 })
    const live = await connect(t, provider)
    expect((await api(t, 'POST', '/api/v1/auth/logout', { token: provider.token })).status).toBe(204)
    const closed = await live.closed
    expect(closed.code).toBe(4003)
    expect(closed.reason).toMatch(/signed out/)
  })

  it('refuses a send made right after sign-out, before the periodic session check: nothing is posted', async () => {
    const { t, patient, threadId } = await clinic()
    const live = await connect(t, patient)
    await live.subscribe(threadId)
    expect((await api(t, 'POST', '/api/v1/auth/logout', { token: patient.token })).status).toBe(204)
    live.send({ type: 'send', threadId, clientMessageId: 'after-sign-out', text: 'still here?' })
    const closed = await Promise.race([live.closed, live.next('sent').then((e) => ({ code: 0, reason: `sent: ${JSON.stringify(e)}` }))])
    expect(closed.code).toBe(4003)
    expect(live.of('sent')).toEqual([])
    const posted = t.gateway.store.sqlite.prepare("SELECT COUNT(*) AS n FROM messages WHERE client_message_id = 'after-sign-out'").get() as { n: number }
    expect(posted.n).toBe(0)
  })
  it('does not keep an unattended session alive by reconnecting: only what the user does counts toward the idle timeout', async () => {
    const clock = new TestClock()
    const { t, provider } = await clinic({ 'auth.idleTimeoutSeconds': 60, 'auth.accessTokenTtlSeconds': 600 }, clock)
    // Signed in at 0 s; a console connects its socket in the background at 40 s and again at 55 s.
    clock.advanceSeconds(40)
    ;(await connect(t, provider)).ws.close()
    clock.advanceSeconds(15)
    ;(await connect(t, provider)).ws.close()
    // Nobody did anything for more than 60 s: the session has logged off.
    clock.advanceSeconds(10)
    const me = await api(t, 'GET', '/api/v1/me', { token: provider.token })
    expect(me.status).toBe(401)
    expect(me.body.message).toMatch(/idle/)
  })
})

describe('live conversation', () => {
  it('patient and provider exchange messages live with typing, receipts, unread counts and presence', async () => {
    const { t, patient, provider, threadId } = await clinic()
    const pat = await connect(t, patient)
    await pat.subscribe(threadId)
    const nurse = await connect(t, provider)
    await nurse.subscribe(threadId)
    // Each sees the other online.
    expect(await nurse.next('presence', { userId: patient.userId })).toMatchObject({ status: 'online' })
    expect(await pat.next('presence', { userId: provider.userId })).toMatchObject({ status: 'online' })

    // Typing: one broadcast per throttle window, with an expiry.
    pat.send({ type: 'typing', threadId })
    pat.send({ type: 'typing', threadId })
    const typing = await nurse.next('typing', { threadId })
    expect(typing).toMatchObject({ userId: patient.userId, role: 'patient' })
    expect(Date.parse(typing.until)).toBeGreaterThan(Date.now())
    await pat.settle()
    await nurse.settle()
    expect(nurse.of('typing')).toHaveLength(1)
    expect(pat.of('typing')).toHaveLength(0)

    pat.send({ type: 'send', threadId, clientMessageId: 'p-1', text: 'My readings were high this morning' })
    const sent = await pat.next('sent', { clientMessageId: 'p-1' })
    expect(sent.message).toMatchObject({ threadId, seq: 1, text: 'My readings were high this morning', from: { role: 'patient', userId: patient.userId } })
    expect((await nurse.next('message', { threadId })).message.id).toBe(sent.message.id)
    expect(await nurse.next('unread', { threadId, count: 1 })).toBeTruthy()

    // The provider has received and read it: the patient sees both horizons move.
    nurse.send({ type: 'delivered', threadId, seq: 1 })
    expect(await pat.next('receipt', { userId: provider.userId, deliveredSeq: 1 })).toMatchObject({ readSeq: 0 })
    nurse.send({ type: 'read', threadId, seq: 1 })
    expect(await pat.next('receipt', { userId: provider.userId, readSeq: 1 })).toMatchObject({ threadId, deliveredSeq: 1 })
    expect(await nurse.next('unread', { threadId, count: 0 })).toBeTruthy()

    nurse.send({ type: 'send', threadId, clientMessageId: 'n-1', text: 'Please measure again in an hour', replyTo: sent.message.id })
    // The sender's own sockets get the message too (before the ack); the patient sees the reply.
    const reply = await waitFor(() => pat.of('message', { threadId }).find((e) => e.message.seq === 2))
    expect(reply.message).toMatchObject({ replyTo: sent.message.id, from: { role: 'provider', userId: provider.userId } })
    expect(await pat.next('unread', { threadId, count: 1 })).toBeTruthy()

    // The provider leaves: offline, with when they were last active.
    nurse.ws.close()
    const gone = await pat.next('presence', { userId: provider.userId, status: 'offline' })
    expect(Date.parse(gone.lastActiveAt)).toBeLessThanOrEqual(Date.now())
    expect(auditOf(t, 'message.post').filter((r) => r.details_json?.includes('"via":"ws"'))).toHaveLength(2)
  })

  it('a socket that closes while its sign-in is being checked leaves no one online', async () => {
    const { t, patient, provider, threadId } = await clinic()
    const nurse = await connect(t, provider)
    await nurse.subscribe(threadId)
    // Sockets of the patient that go away right after sending their token (the close lands
    // before, during or after the token check, depending on timing: try a few).
    for (let i = 0; i < 12; i++) {
      const gone = await open(t)
      gone.send({ type: 'auth', token: patient.token })
      gone.ws.terminate()
      await gone.closed
    }
    await new Promise((r) => setTimeout(r, 200))
    const pat = await connect(t, patient)
    await pat.subscribe(threadId)
    expect(await nurse.next('presence', { userId: patient.userId })).toMatchObject({ status: 'online' })
    pat.ws.close()
    expect(await nurse.next('presence', { userId: patient.userId, status: 'offline' })).toBeTruthy()
  })

  it('presence turns away after a quiet spell and back to online with activity', async () => {
    const clock = new TestClock()
    const { t, patient, provider, threadId } = await clinic({ 'websocket.heartbeatSeconds': 1, 'websocket.awaySeconds': 10 }, clock)
    const pat = await connect(t, patient)
    await pat.subscribe(threadId)
    const nurse = await connect(t, provider)
    await nurse.subscribe(threadId)
    await nurse.next('presence', { userId: patient.userId, status: 'online' })
    clock.advanceSeconds(11)
    const away = await nurse.next('presence', { userId: patient.userId, status: 'away' })
    expect(Date.parse(away.lastActiveAt)).toBeLessThan(clock.now() - 10_000)
    pat.send({ type: 'typing', threadId })
    await nurse.next('presence', { userId: patient.userId, status: 'online' }, nurse.events.indexOf(away))
  })

  it('a reconnecting client resumes after seq N with exactly what it missed, and a resent clientMessageId posts once', async () => {
    const { t, patient, provider, threadId } = await clinic()
    const pat = await connect(t, patient)
    await pat.subscribe(threadId)
    let nurse = await connect(t, provider)
    await nurse.subscribe(threadId)
    pat.send({ type: 'send', threadId, clientMessageId: 'p-1', text: 'one' })
    await nurse.next('message', { threadId })
    const seen = Math.max(...nurse.seqs(threadId))
    expect(seen).toBe(1)

    nurse.ws.close()
    await nurse.closed
    for (const [i, text] of ['two', 'three', 'four'].entries()) {
      pat.send({ type: 'send', threadId, clientMessageId: `p-${i + 2}`, text })
      await pat.next('sent', { clientMessageId: `p-${i + 2}` })
    }
    // A retry of p-3 (same id, even with other text) answers the first message and posts nothing.
    pat.send({ type: 'send', threadId, clientMessageId: 'p-3', text: 'three again' })
    const retry = await waitFor(() => pat.of('sent', { clientMessageId: 'p-3' })[1])
    expect(retry).toMatchObject({ created: false, message: { seq: 3, text: 'three' } })

    nurse = await connect(t, provider)
    await nurse.subscribe(threadId, seen)
    expect(nurse.of('message').map((e) => [e.message.seq, e.message.text])).toEqual([[2, 'two'], [3, 'three'], [4, 'four']])
    pat.send({ type: 'send', threadId, clientMessageId: 'p-5', text: 'five' })
    await nurse.next('message', { threadId }, nurse.events.findIndex((e) => e.type === 'subscribed'))
    await nurse.settle()
    expect(nurse.seqs(threadId)).toEqual([2, 3, 4, 5])
    expect(t.gateway.threads.history(threadId, { limit: 100 }).items).toHaveLength(5)
  })

  it('a provider off the care team cannot subscribe or send (error, audited) and stays connected', async () => {
    const { t, patient, stranger, threadId } = await clinic()
    const pat = await connect(t, patient)
    await pat.subscribe(threadId)
    pat.send({ type: 'send', threadId, clientMessageId: 'p-1', text: 'private' })
    await pat.next('sent')

    const other = await connect(t, stranger)
    expect(other.of('ready')[0].threads).toEqual([])
    other.send({ type: 'subscribe', threads: [{ threadId, after: 0 }], ref: 'sub-1' })
    expect(await other.next('error', { ref: 'sub-1' })).toMatchObject({ code: 'RPM_ERR_NOT_FOUND' })
    other.send({ type: 'send', threadId, clientMessageId: 'x-1', text: 'hello' })
    expect(await other.next('error', { ref: 'x-1' })).toMatchObject({ code: 'RPM_ERR_NOT_FOUND' })
    other.send({ type: 'typing', threadId })
    other.send({ type: 'read', threadId, seq: 1 })
    await other.settle()
    expect(other.of('message')).toEqual([])
    expect(pat.of('typing')).toEqual([])

    const denied = (action: string) => auditOf(t, action).filter((r) => r.outcome === 'denied' && r.actor_id === stranger.userId && r.target === threadId)
    expect(denied('messages.read')).toHaveLength(1)
    expect(denied('message.post')).toHaveLength(1)
    expect(denied('thread.mark_read')).toHaveLength(1)
    expect(t.gateway.threads.history(threadId, { limit: 10 }).items).toHaveLength(1)

    // Bad input is answered, not punished with a disconnect.
    other.ws.send('{not json')
    other.send({ type: 'send', threadId, clientMessageId: 'x-2' })
    await other.settle()
    expect(other.of('error').map((e) => e.code)).toContain('RPM_ERR_BAD_REQUEST')
    expect(other.ws.readyState).toBe(WebSocket.OPEN)
  })

  it('a reading published over MQTT reaches the care team provider live, and nobody else', async () => {
    const { t, dev, provider, stranger, patient } = await clinic()
    const nurse = await connect(t, provider)
    const other = await connect(t, stranger)
    const pat = await connect(t, patient)
    const cuff = await connectDevice(t, dev)
    devices.push(cuff)
    await cuff.publishAsync(`devices/${dev.deviceId}/readings`, JSON.stringify(build.bloodPressure(152, 95, 78, { seq: 7 })), { qos: 1 })
    const reading = await nurse.next('reading', { patientId: dev.patientId })
    expect(reading.reading).toMatchObject({ deviceId: dev.deviceId, type: 'blood_pressure', seq: 7, values: { systolicMmHg: 152, diastolicMmHg: 95 } })
    expect(await pat.next('reading', { patientId: dev.patientId })).toBeTruthy()
    await other.settle()
    expect(other.of('reading')).toEqual([])
    // Seeing a patient's readings live is a read of the record: audited once per socket and patient.
    const audited = t.gateway.store.sqlite
      .prepare("SELECT actor_id FROM audit WHERE action = 'readings.live' AND target = ? ORDER BY actor_id")
      .all(dev.patientId) as Array<{ actor_id: string }>
    expect(audited.map((r) => r.actor_id).sort()).toEqual([provider.userId, patient.userId].sort())
  })
})

describe('limits', () => {
  it('disconnects a client that stops reading once its buffer passes the limit; it resumes on reconnect', async () => {
    const { t, patient, provider, threadId } = await clinic({ 'websocket.maxBufferedBytes': 65536 })
    const g = t.gateway
    const slow = await connect(t, provider)
    await slow.subscribe(threadId)
    // Stop reading: the kernel buffers fill, then the gateway's own send buffer.
    const raw = (slow.ws as unknown as { _socket: import('node:net').Socket })._socket
    raw.pause()

    const text = 'x'.repeat(3900)
    const slowClosures = async () => {
      const m = await g.metrics.wsClosed.get()
      return m.values.find((v) => v.labels.reason === 'slow_consumer')?.value ?? 0
    }
    let batches = 0
    for (; batches < 60 && (await slowClosures()) === 0; batches++) {
      // 200 messages in one commit, as fast as the gateway can produce them.
      g.store.sqlite.transaction(() => {
        for (let i = 0; i < 200; i++) {
          g.threads.post({ threadId, sender: { type: 'user', userId: patient.userId, role: 'patient' }, kind: 'text', text, clientMessageId: `flood-${batches}-${i}` })
        }
      })()
      await new Promise((r) => setTimeout(r, 20))
    }
    expect(await slowClosures()).toBe(1)
    // Well short of the whole flood; the socket is gone from the gateway.
    expect(batches).toBeLessThan(60)
    await waitFor(async () => (await g.metrics.wsConnections.get()).values[0]?.value === 0, 5000, 'the slow socket to be dropped')

    raw.resume()
    await slow.closed
    const lastSeq = g.threads.byId(threadId)!.lastSeq
    const seen = slow.seqs(threadId)
    const after = seen.length > 0 ? Math.max(...seen) : 0
    expect(after).toBeLessThan(lastSeq)

    // Reconnect and resume: everything after the last seq received, in order, none twice.
    const again = await connect(t, provider)
    await again.subscribe(threadId, after)
    const resumed = again.seqs(threadId)
    expect(resumed).toEqual(Array.from({ length: lastSeq - after }, (_, i) => after + 1 + i))
  }, 30_000)

  it('closes a socket that stops answering protocol pings', async () => {
    const { t, patient } = await clinic({ 'websocket.heartbeatSeconds': 1 })
    const mute = await open(t, undefined, { autoPong: false })
    mute.send({ type: 'auth', token: patient.token })
    await mute.next('ready')
    const healthy = await connect(t, patient)
    expect((await mute.closed).code).toBe(1006)
    expect(healthy.ws.readyState).toBe(WebSocket.OPEN)
  })

  it('closes a socket that sends an oversized message (1009) and answers floods with an error', async () => {
    const { t, patient } = await clinic({ 'websocket.messagesPerSecond': 5 })
    const live = await connect(t, patient)
    for (let i = 0; i < 12; i++) live.send({ type: 'ping', ref: `r${i}` })
    await live.next('error', { code: 'RPM_ERR_RATE_LIMITED' })
    expect(live.ws.readyState).toBe(WebSocket.OPEN)
    live.ws.send(JSON.stringify({ type: 'ping', ref: 'x'.repeat(20_000) }))
    expect((await live.closed).code).toBe(1009)
  })

  it('answers JSON that is not an event object, or names no event of its own, with an error and stays open', async () => {
    const { t, patient } = await clinic()
    const live = await connect(t, patient)
    for (const raw of ['null', '{"type":"hasOwnProperty"}', '{"type":"constructor","ref":"c"}', '{"type":"__proto__"}']) {
      const from = live.events.length
      live.ws.send(raw)
      const error = await live.next('error', {}, from)
      expect(error.code).toBe('RPM_ERR_BAD_REQUEST')
    }
    await live.settle()
    expect(live.ws.readyState).toBe(WebSocket.OPEN)
  })
})
