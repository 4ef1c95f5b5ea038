/**
 * One load process for bench/chat.ts: opens its share of the WebSocket clients (`ws`), each
 * signed in with a token offered as a subprotocol and subscribed to its thread, then sends text
 * messages from sockets picked at random on an open-loop schedule. Every client message id
 * carries the sending socket and the wall-clock send time, so each receiving socket measures
 * the delivery latency itself. Driven over IPC; answers with counts and latency histograms.
 */
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import WebSocket, { type RawData } from 'ws'
import { LatencyHistogram } from './histogram.ts'
import { cpuSnapshot } from './process-stats.ts'
import type { ChatRun, ChatSocketSpec, CpuSnapshot, FromChatWorker, ToChatWorker } from './protocol.ts'

const send = (m: FromChatWorker) => process.send!(m)
/** Wall-clock ms with sub-ms resolution, comparable across the processes of one machine. */
const now = () => performance.timeOrigin + performance.now()

interface Client {
  spec: ChatSocketSpec
  ws: WebSocket
  /** The largest seq seen in the thread. */
  lastSeq: number
}

let clients: Client[] = []
let closing = false
let sentMeasured = 0
let sentTotal = 0
let ackedMeasured = 0
let receivedMeasured = 0
let receivedTotal = 0
let seqGaps = 0
let duplicates = 0
let maxScheduleLagMs = 0
let firstMeasuredSendAt = Number.NaN
let lastMeasuredSendAt = Number.NaN
const errors: Record<string, number> = {}
const closes: Record<string, number> = {}
const frames: Record<string, number> = {}
const deliveryLatency = new LatencyHistogram()
const ackLatency = new LatencyHistogram()
/** Send times of measured sends still waiting for their `sent`, by client message id. */
const awaitingAck = new Map<string, number>()

const bump = (counts: Record<string, number>, key: string) => {
  counts[key] = (counts[key] ?? 0) + 1
}

// Client message ids: `<socket index>:<n>:<m|w>:<wall-clock ms>` (m: measured, w: warm-up).
let nextMessage = 0
const parseId = (id: string) => {
  const [index, , flag, at] = id.split(':')
  return { index: Number(index), measured: flag === 'm', at: Number(at) }
}

const TYPE = /^\{"type":"([^"]+)"/

function onFrame(c: Client, data: RawData): void {
  const t = now()
  const text = data.toString()
  const type = TYPE.exec(text)?.[1] ?? 'unknown'
  bump(frames, type)
  switch (type) {
    case 'message': {
      const { message } = JSON.parse(text) as { message: { seq: number; clientMessageId: string | null } }
      if (message.seq === c.lastSeq + 1) c.lastSeq = message.seq
      else if (message.seq <= c.lastSeq) duplicates++
      else {
        seqGaps += message.seq - c.lastSeq - 1
        c.lastSeq = message.seq
      }
      if (!message.clientMessageId) return
      const id = parseId(message.clientMessageId)
      if (id.index === c.spec.index) return // the sender's own copy
      receivedTotal++
      if (!id.measured) return
      receivedMeasured++
      deliveryLatency.record(t - id.at)
      return
    }
    case 'sent': {
      const { clientMessageId } = JSON.parse(text) as { clientMessageId: string }
      const at = awaitingAck.get(clientMessageId)
      if (at === undefined) return
      awaitingAck.delete(clientMessageId)
      ackedMeasured++
      ackLatency.record(t - at)
      return
    }
    case 'error': {
      const { code } = JSON.parse(text) as { code: string }
      bump(errors, code)
      return
    }
  }
}

/** Opens one socket, signs in (subprotocol), subscribes to its thread from its current end. */
function open(url: string, spec: ChatSocketSpec): Promise<Client> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ['rpm.v1', `bearer.${spec.token}`], { perMessageDeflate: false })
    const c: Client = { spec, ws, lastSeq: 0 }
    let settled = false
    const fail = (err: Error) => {
      if (settled) return
      settled = true
      ws.terminate()
      reject(err)
    }
    const timer = setTimeout(() => fail(new Error(`socket ${spec.index}: not subscribed within 30 s`)), 30_000)
    ws.on('error', (err) => fail(err))
    ws.on('close', (code) => {
      if (!settled) return fail(new Error(`socket ${spec.index}: closed with ${code} while connecting`))
      if (!closing) bump(closes, String(code))
    })
    const setup = (data: RawData) => {
      const e = JSON.parse(data.toString()) as {
        type: string
        threads?: Array<{ threadId: string; lastSeq: number }>
        threadId?: string
        lastSeq?: number
        replayedTo?: number
        live?: boolean
        code?: string
        message?: string
      }
      if (e.type === 'ready') {
        const t = e.threads?.find((x) => x.threadId === spec.threadId)
        if (!t) return fail(new Error(`socket ${spec.index}: thread ${spec.threadId} is not among the user's threads`))
        ws.send(JSON.stringify({ type: 'subscribe', threads: [{ threadId: spec.threadId, after: t.lastSeq }] }))
      } else if (e.type === 'subscribed' && e.threadId === spec.threadId) {
        if (!e.live) return fail(new Error(`socket ${spec.index}: subscribe did not reach live`))
        c.lastSeq = e.replayedTo ?? 0
        clearTimeout(timer)
        settled = true
        ws.off('message', setup)
        ws.on('message', (d: RawData) => onFrame(c, d))
        resolve(c)
      } else if (e.type === 'error') {
        fail(new Error(`socket ${spec.index}: ${e.code}: ${e.message}`))
      }
    }
    ws.on('message', setup)
  })
}

async function connect(url: string, specs: ChatSocketSpec[], concurrency: number): Promise<void> {
  const t0 = performance.now()
  const opened: Client[] = new Array(specs.length)
  let next = 0
  const lane = async () => {
    while (next < specs.length) {
      const i = next++
      opened[i] = await open(url, specs[i]!)
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, specs.length) }, lane))
  clients = opened
  send({ type: 'connected', sockets: clients.length, ms: performance.now() - t0 })
}

/** Open loop: the n-th send is due at startAt + n / rate, whatever the answers do. */
async function run(m: ChatRun): Promise<void> {
  const filler = 'Blood pressure readings look steady this week; keep the evening dose and log how you feel. '
  const text = filler.repeat(Math.ceil(m.textLength / filler.length)).slice(0, m.textLength).trim()
  await sleep(Math.max(0, m.startAt - now()))
  let cpuFrom: CpuSnapshot | undefined
  let n = 0
  const intervalMs = 1000 / m.ratePerSecond
  await new Promise<void>((resolve) => {
    const tick = () => {
      const t = now()
      if (t >= m.measureTo) return resolve()
      while (m.startAt + n * intervalMs <= t) {
        const due = m.startAt + n * intervalMs
        if (due >= m.measureTo) break
        maxScheduleLagMs = Math.max(maxScheduleLagMs, t - due)
        n++
        const c = clients[Math.floor(Math.random() * clients.length)]!
        if (c.ws.readyState !== WebSocket.OPEN) continue
        const at = now()
        const measured = at >= m.measureFrom
        if (measured && cpuFrom === undefined) cpuFrom = cpuSnapshot()
        const clientMessageId = `${c.spec.index}:${nextMessage++}:${measured ? 'm' : 'w'}:${at.toFixed(3)}`
        c.ws.send(JSON.stringify({ type: 'send', threadId: c.spec.threadId, clientMessageId, text }))
        sentTotal++
        if (measured) {
          sentMeasured++
          awaitingAck.set(clientMessageId, at)
          if (Number.isNaN(firstMeasuredSendAt)) firstMeasuredSendAt = at
          lastMeasuredSendAt = at
        }
      }
      setTimeout(tick, 1)
    }
    tick()
  })
  measuredCpu = { from: cpuFrom ?? cpuSnapshot(), to: cpuSnapshot() }
}

let measuredCpu: { from: CpuSnapshot; to: CpuSnapshot } | undefined
let running: Promise<void> = Promise.resolve()

async function close(): Promise<void> {
  closing = true
  await Promise.race([
    Promise.all(
      clients.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.ws.readyState === WebSocket.CLOSED) return resolve()
            c.ws.once('close', () => resolve())
            c.ws.close(1000, 'done')
          }),
      ),
    ),
    sleep(5000),
  ])
  for (const c of clients) c.ws.terminate()
  send({ type: 'closed' })
  process.disconnect?.()
}

process.on('message', (raw) => {
  const m = raw as ToChatWorker
  const fail = (err: unknown) => send({ type: 'error', message: (err as Error).stack ?? String(err) })
  switch (m.cmd) {
    case 'connect':
      connect(m.url, m.sockets, m.concurrency).catch(fail)
      break
    case 'run':
      running = run(m).catch((err: unknown) => void fail(err))
      break
    case 'counts':
      send({ type: 'counts', received: receivedMeasured })
      break
    case 'report':
      running.then(() => {
        const cpu = measuredCpu ?? { from: cpuSnapshot(), to: cpuSnapshot() }
        send({
          type: 'report',
          sentMeasured,
          sentTotal,
          ackedMeasured,
          ackLatency: ackLatency.snapshot(),
          receivedMeasured,
          deliveryLatency: deliveryLatency.snapshot(),
          receivedTotal,
          seqGaps,
          duplicates,
          errors,
          closes,
          frames,
          maxScheduleLagMs,
          firstMeasuredSendAt,
          lastMeasuredSendAt,
          cpuFrom: cpu.from,
          cpuTo: cpu.to,
        })
      }, fail)
      break
    case 'close':
      close().catch(fail)
      break
  }
})
