/**
 * One load process for bench/ingest.ts and bench/alerts.ts: connects its share of the simulated devices over
 * MQTT/TLS (mqtt.js, MQTT 3.1.1) and publishes valid readings at QoS1, either keeping a fixed
 * window of unacknowledged publishes per device (saturation) or on an open-loop schedule at a
 * fixed rate. Driven over IPC; answers with counts, PUBACK latency histograms and its own CPU.
 */
import { performance } from 'node:perf_hooks'
import mqtt, { type MqttClient } from 'mqtt'
import { build, KIND_READINGS, type ReadingPayload } from '../device-simulator/readings.ts'
import { deviceClientOptions } from './harness.ts'
import { LatencyHistogram } from './histogram.ts'
import { cpuSnapshot } from './process-stats.ts'
import type { BenchDevice, FromWorker, ToWorker } from './protocol.ts'

type Maker = (seq: number) => ReadingPayload

// Plausible values that vary with seq; alternate units so unit conversion is exercised too.
// They sweep past some of the shipped rules' limits (sustained stage-2 blood pressure, weight swings).
const VARIED: Record<keyof typeof build, Maker> = {
  bloodPressure: (seq) => build.bloodPressure(112 + (seq % 37), 68 + (seq % 17), 58 + (seq % 31), { seq }),
  glucose: (seq) => (seq % 2 ? build.glucose(85 + (seq % 60), 'mg/dL', { seq }) : build.glucose(4.8 + (seq % 30) / 10, 'mmol/L', { seq })),
  spo2: (seq) => build.spo2(93 + (seq % 7), 62 + (seq % 25), { seq }),
  heartRate: (seq) => build.heartRate(58 + (seq % 40), { seq }),
  weight: (seq) => (seq % 2 ? build.weight(72 + (seq % 90) / 10, 'kg', { seq }) : build.weight(158 + (seq % 90) / 10, 'lb', { seq })),
  temperature: (seq) => (seq % 2 ? build.temperature(36.4 + (seq % 12) / 10, 'C', { seq }) : build.temperature(97.6 + (seq % 20) / 10, 'F', { seq })),
}

const kgToLb = (kg: number) => Math.round(kg * 2.20462 * 10) / 10

// Inside every shipped rule's limits, weight steady within 0.4 kg: background that raises no alert.
const NORMAL: Record<keyof typeof build, Maker> = {
  bloodPressure: (seq) => build.bloodPressure(112 + (seq % 17), 68 + (seq % 13), 60 + (seq % 25), { seq }),
  glucose: (seq) => (seq % 2 ? build.glucose(90 + (seq % 40), 'mg/dL', { seq }) : build.glucose(5.2 + (seq % 20) / 10, 'mmol/L', { seq })),
  spo2: (seq) => build.spo2(95 + (seq % 5), 62 + (seq % 25), { seq }),
  heartRate: (seq) => build.heartRate(58 + (seq % 40), { seq }),
  weight: (seq) => (seq % 2 ? build.weight(74 + (seq % 5) / 10, 'kg', { seq }) : build.weight(kgToLb(74 + (seq % 5) / 10), 'lb', { seq })),
  temperature: (seq) => (seq % 2 ? build.temperature(36.4 + (seq % 10) / 10, 'C', { seq }) : build.temperature(97.6 + (seq % 14) / 10, 'F', { seq })),
}

interface Device {
  id: string
  client: MqttClient
  topic: string
  makers: Maker[]
  seq: number
  inflight: number
}

const send = (m: FromWorker) => process.send!(m)

let devices: Device[] = []
let mode: 'idle' | 'saturate' | 'fixed' = 'idle'
let window = 1
let inflight = 0
let errors = 0
let totalAcked = 0
let ackedSinceMark = 0
let markAt = performance.now()
let onDrained: (() => void) | undefined
const latency = new LatencyHistogram()

function nextPayload(d: Device): string {
  d.seq++
  const make = d.makers[d.seq % d.makers.length]!
  return JSON.stringify(make(d.seq))
}

/** Publishes one reading; `record` decides whether its PUBACK latency counts. */
function publish(d: Device, record: boolean, onAck?: (ok: boolean) => void): void {
  const payload = nextPayload(d)
  d.inflight++
  inflight++
  const t0 = performance.now()
  d.client.publish(d.topic, payload, { qos: 1 }, (err) => {
    d.inflight--
    inflight--
    if (err) {
      errors++
    } else {
      totalAcked++
      ackedSinceMark++
      if (record) latency.record(performance.now() - t0)
    }
    onAck?.(!err)
    if (mode === 'saturate' && !err) pump(d)
    else if (inflight === 0 && onDrained) onDrained()
  })
}

function pump(d: Device): void {
  // A disconnected client fails publishes synchronously: do not spin on it.
  while (mode === 'saturate' && d.inflight < window && d.client.connected) publish(d, true)
}

function waitDrained(timeoutMs: number): Promise<void> {
  if (inflight === 0) return Promise.resolve()
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      onDrained = undefined
      resolve()
    }, timeoutMs)
    onDrained = () => {
      clearTimeout(timer)
      onDrained = undefined
      resolve()
    }
  })
}

async function connect(url: string, ca: string, creds: BenchDevice[], concurrency: number, values: 'varied' | 'normal'): Promise<void> {
  const makers = values === 'normal' ? NORMAL : VARIED
  const t0 = performance.now()
  let next = 0
  const connectOne = async (cred: BenchDevice): Promise<Device> => {
    const client = await mqtt.connectAsync(url, deviceClientOptions(cred, ca))
    client.on('error', () => {
      errors++
    })
    const names = KIND_READINGS[cred.kind] ?? ['bloodPressure']
    return {
      id: cred.deviceId,
      client,
      topic: `devices/${cred.deviceId}/readings`,
      makers: names.map((n) => makers[n]),
      seq: 0,
      inflight: 0,
    }
  }
  const lane = async () => {
    while (next < creds.length) {
      const cred = creds[next++]!
      devices.push(await connectOne(cred))
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, lane))
  send({ type: 'connected', devices: devices.length, ms: performance.now() - t0 })
}

function mark(): void {
  const now = performance.now()
  send({ type: 'mark', acked: ackedSinceMark, elapsedMs: now - markAt, latency: latency.snapshot(), cpu: cpuSnapshot() })
  ackedSinceMark = 0
  markAt = now
  latency.reset()
}

/** Open loop: publish i is due at i / rate, whatever happened to the ones before it. */
async function fixedRate(ratePerSecond: number, warmupMs: number, durationMs: number): Promise<void> {
  mode = 'fixed'
  latency.reset()
  const warmupCount = Math.floor((warmupMs / 1000) * ratePerSecond)
  const total = Math.floor(((warmupMs + durationMs) / 1000) * ratePerSecond)
  let issued = 0
  let sent = 0
  let acked = 0
  let rr = 0
  let maxLag = 0
  const start = performance.now()
  await new Promise<void>((resolve) => {
    const tick = () => {
      const elapsed = performance.now() - start
      const due = Math.min(total, Math.floor((elapsed / 1000) * ratePerSecond) + 1)
      if (due - issued > 1) maxLag = Math.max(maxLag, elapsed - (issued / ratePerSecond) * 1000)
      while (issued < due) {
        const d = devices[rr++ % devices.length]!
        const measured = issued >= warmupCount
        issued++
        if (!d.client.connected) {
          errors++
          continue
        }
        if (measured) sent++
        publish(d, measured, measured ? (ok) => { if (ok) acked++ } : undefined)
      }
      if (issued >= total) resolve()
      else setTimeout(tick, 1)
    }
    tick()
  })
  const elapsedMs = performance.now() - start - warmupMs
  await waitDrained(5_000)
  mode = 'idle'
  send({
    type: 'fixed',
    sent,
    acked,
    unacked: sent - acked,
    elapsedMs,
    latency: latency.snapshot(),
    maxScheduleLagMs: maxLag,
  })
  latency.reset()
}

async function close(): Promise<void> {
  mode = 'idle'
  await Promise.all(devices.map((d) => d.client.endAsync(true).catch(() => undefined)))
  send({ type: 'closed', totalAcked, errors })
  devices = []
  process.disconnect?.()
}

process.on('message', (raw) => {
  const m = raw as ToWorker
  const fail = (err: unknown) => send({ type: 'error', message: (err as Error).message ?? String(err) })
  switch (m.cmd) {
    case 'connect':
      connect(m.url, m.ca, m.devices, m.concurrency, m.values ?? 'varied').catch(fail)
      break
    case 'saturate':
      mode = 'saturate'
      window = m.window
      ackedSinceMark = 0
      markAt = performance.now()
      latency.reset()
      for (const d of devices) pump(d)
      break
    case 'mark':
      mark()
      break
    case 'stop':
      mode = 'idle'
      waitDrained(10_000).then(() => send({ type: 'stopped', inflight, totalAcked, errors }), fail)
      break
    case 'fixed':
      fixedRate(m.ratePerSecond, m.warmupMs, m.durationMs).catch(fail)
      break
    case 'close':
      close().catch(fail)
      break
  }
})
