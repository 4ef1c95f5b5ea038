/**
 * Slow WebSocket consumers: several providers sign in on /api/v1/ws, subscribe to a busy thread
 * and stop reading, while the patient posts many messages through the REST API and the
 * patient's cuff publishes readings over MQTT. The gateway holds at most
 * websocket.maxBufferedBytes (1 MiB by default) for each, then closes it (1013); memory stays
 * bounded, and a provider who reads keeps getting every message, in order.
 * (test/integration/websocket.test.ts `limits` covers one slow socket and its resume.)
 */
import type { Socket } from 'node:net'
import type { MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { build } from '../../../device-simulator/readings.ts'
import { call, connectDevice, provision, signInAs, startGateway, waitFor, type TestGateway } from '../../helpers.ts'
import { closeSockets, connect } from '../../live.ts'
import { percentile, round1 } from './harness.ts'

let t: TestGateway | undefined
let devices: MqttClient[] = []

afterEach(async () => {
  closeSockets()
  await Promise.all(devices.map((c) => c.endAsync(true)))
  devices = []
  await t?.stop()
  t = undefined
})

const PASSWORD = 'slow consumer password'
const SLOW = 8
const mb = (n: number) => round1(n / 1048576)

describe('slow WebSocket consumers', () => {
  it(`${SLOW} providers that stop reading are closed once their backlog passes the limit; memory stays bounded; a reading provider gets everything`, async () => {
    t = await startGateway()
    const g = t.gateway
    const dev = await provision(g, 'bp_cuff')
    await g.users.add({ username: 'pat', password: PASSWORD, role: 'patient', patientId: dev.patientId })
    const names = ['reader', ...Array.from({ length: SLOW }, (_, i) => `slow-${i}`)]
    for (const username of names) {
      await g.users.add({ username, password: PASSWORD, role: 'provider' })
      await g.users.addToCareTeam(dev.patientId, username)
    }
    const patient = await signInAs(t, 'pat', PASSWORD)
    const [reader, ...slow] = await Promise.all(names.map((n) => signInAs(t!, n, PASSWORD)))
    const threadId = g.threads.ensure(dev.patientId).id
    const cuff = await connectDevice(t, dev)
    devices.push(cuff)

    const healthy = await connect(t, reader!)
    await healthy.subscribe(threadId)
    const receivedAt = new Map<string, number>()
    healthy.ws.on('message', (data) => {
      const e = JSON.parse(data.toString())
      if (e.type === 'message') receivedAt.set(e.message.id, Date.now())
    })
    const stalled = await Promise.all(slow.map((who) => connect(t!, who)))
    for (const s of stalled) {
      await s.subscribe(threadId)
      // Stop reading: the kernel's buffers fill, then the gateway's send buffer for this socket.
      ;(s.ws as unknown as { _socket: Socket })._socket.pause()
    }
    const slowClosures = async () => (await g.metrics.wsClosed.get()).values.find((v) => v.labels.reason === 'slow_consumer')?.value ?? 0
    global.gc?.()
    const before = process.memoryUsage()
    let peakRss = before.rss
    let peakHeap = before.heapUsed
    const sampler = setInterval(() => {
      const m = process.memoryUsage()
      peakRss = Math.max(peakRss, m.rss)
      peakHeap = Math.max(peakHeap, m.heapUsed)
    }, 50)

    // The patient writes long messages through the API, eight at a time, while the cuff sends
    // readings, until every stalled socket is closed (or 8,000 messages).
    const text = 'How are you feeling today? Remember to measure before breakfast. '.repeat(60)
    const postedAt = new Map<string, number>()
    let posted = 0
    let readings = 0
    const startedAt = Date.now()
    const post = async (worker: number) => {
      for (let i = 0; posted < 8000 && (await slowClosures()) < SLOW; i++) {
        const clientMessageId = `slow-${worker}-${i}`
        const res = await call(t!, patient, 'POST', `/api/v1/threads/${threadId}/messages`, { clientMessageId, text })
        expect(res.status).toBe(201)
        postedAt.set(res.body.id ?? clientMessageId, Date.now())
        posted++
        if (posted % 50 === 0) {
          readings++
          cuff.publish(`devices/${dev.deviceId}/readings`, JSON.stringify(build.bloodPressure(128, 80, 70, { seq: readings })), { qos: 1 })
        }
      }
    }
    await Promise.all(Array.from({ length: 8 }, (_, w) => post(w)))
    const floodMs = Date.now() - startedAt
    await waitFor(async () => (await g.metrics.wsConnections.get()).values[0]?.value === 1, 10_000, 'the stalled sockets to be dropped')
    clearInterval(sampler)
    global.gc?.()
    const after = process.memoryUsage()

    // The reader got every message, in order, none twice.
    const lastSeq = g.threads.byId(threadId)!.lastSeq
    await waitFor(() => healthy.seqs(threadId).at(-1) === lastSeq, 15_000, 'the reading provider to catch up')
    const seqs = healthy.seqs(threadId)
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => seqs[0]! + i))
    // From the API's 201 to the reader's socket (the message is pushed before the answer, so small or negative).
    const lags = [...postedAt].map(([id, at]) => (receivedAt.get(id) ?? Number.NaN) - at).filter(Number.isFinite)
    console.log('[slow-websocket] %j', {
      stalledSockets: SLOW,
      messagesPosted: posted,
      readingsPublished: readings,
      floodMs,
      slowClosures: await slowClosures(),
      closeCodes: await Promise.all(stalled.map(async (s) => {
        ;(s.ws as unknown as { _socket: Socket })._socket.resume()
        return (await s.closed).code
      })),
      readerGot: seqs.length,
      memoryMb: {
        rssBefore: mb(before.rss), rssPeak: mb(peakRss), rssAfter: mb(after.rss),
        heapBefore: mb(before.heapUsed), heapPeak: mb(peakHeap), heapAfter: mb(after.heapUsed),
      },
      readerLagMs: { p50: round1(percentile(lags, 50)), p99: round1(percentile(lags, 99)), max: round1(percentile(lags, 100)) },
    })
    // Closed as slow consumers (1013; the stalled client itself sees 1006, as the close frame
    // waits behind the backlog it never reads and the gateway ends the connection).
    expect(await slowClosures()).toBe(SLOW)
    expect(healthy.ws.readyState).toBe(healthy.ws.OPEN)
    // Bounded: a stalled socket costs its 1 MiB of backlog, not the flood (posted x text x sockets).
    expect(peakHeap - before.heapUsed).toBeLessThan(150 * 1048576)
    expect(after.rss - before.rss).toBeLessThan(150 * 1048576)
  }, 90_000)
})
