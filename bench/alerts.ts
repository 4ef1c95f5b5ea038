/**
 * Clinical alerts: the rule engine's throughput on its own, then the time from a device's
 * PUBLISH of a crisis reading to the alert reaching a provider's WebSocket, while the gateway
 * ingests a steady stream of normal readings.
 *
 *   npm run bench:alerts [-- --patients 10000 --devices 1000 --rate 2000 --seconds 60 --workers 2]
 *   npm run bench:alerts -- --quick          shorter phases, for a smoke run
 *
 * 1. Rule engine: the shipped rules (rules/*.yaml) evaluated with evaluateThreshold and
 *    evaluateDelta on --readings readings per patient for --patients patients (six reading types,
 *    mostly normal values), each patient's history per type kept and trimmed as RuleEngine does.
 * 2. Gateway: a real gateway in its own process on a temporary data directory, --patients
 *    patients provisioned in bulk with one provider on every care team. --devices of them have a
 *    device, connected over MQTT/TLS from --workers load processes that send --rate normal
 *    readings/s in all. The provider signs in over REST and opens the live WebSocket. A probe
 *    device of each of --probes further patients publishes in turn, every --interval ms, a
 *    hypertensive crisis reading (190/125) and, one step later, a normal one that resolves the
 *    alert; each crisis is timed from its PUBLISH to `{type: 'alert', change: 'raised'}` for that
 *    patient on the provider's socket. --warmup s first (the socket's first live reading of each
 *    patient is audited, caches fill), then --seconds s measured.
 *
 * Diagnostics: --only engine|gateway, --profile (V8 CPU profile of the gateway process,
 * summarised by where the time goes), --set key=value (any gateway config key; repeatable).
 * Each option also reads from the environment: BENCH_PATIENTS, BENCH_RATE, BENCH_SECONDS, ...
 *
 * Prints figures and writes them to bench/results/alerts-latest.json; never fails on a time.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import mqtt, { type MqttClient } from 'mqtt'
import WebSocket from 'ws'
import { build } from '../device-simulator/readings.ts'
import { ensureDevelopmentPki, serverNames } from '../src/broker/pki.ts'
import type { ReadingType } from '../src/ingest/types.ts'
import { evaluateDelta, evaluateThreshold, type Sample } from '../src/rules/evaluate.ts'
import { addNeed, placeSample, type HistoryNeed } from '../src/rules/history.ts'
import { loadRuleDir } from '../src/rules/load.ts'
import type { DeltaRule, ThresholdRule } from '../src/rules/spec.ts'
import { alertKeys, profileLines, summariseProfile, type ProfileSummary } from './cpu-profile.ts'
import { journalFigures, journalLines, scrape, type JournalFigures } from './gateway-metrics.ts'
import {
  BENCH_DIR, benchArgs, deviceClientOptions, forkChild, int, machineCpu, machineInfo, machineLines, ms, newestProfile, numberOption, pct, Peer, RESULTS_DIR,
  signIn,
} from './harness.ts'
import { LatencyHistogram, type LatencySummary } from './histogram.ts'
import { cpuDelta, cpuSnapshot } from './process-stats.ts'
import type { BenchDevice, FromServer, FromWorker, ToServer, ToWorker } from './protocol.ts'

const ALERT_P99_TARGET_MS = 50
const CRISIS = { systolic: 190, diastolic: 125, pulse: 96 }
const RESOLVING = { systolic: 118, diastolic: 76, pulse: 70 }
const PROVIDER = { username: 'bench-dr-alerts', password: 'bench-dr-alerts-password' }

type Part = 'engine' | 'gateway'

// ---------------------------------------------------------------- options

interface Options {
  patients: number
  devices: number
  ratePerSecond: number
  warmupS: number
  durationS: number
  intervalMs: number
  probes: number
  workers: number
  readingsPerPatient: number
  quick: boolean
  only: Part[]
  profile: boolean
  settings: Record<string, string | number | boolean>
}

function options(): Options {
  const { values, quick, profile, settings } = benchArgs(fileURLToPath(import.meta.url), ['patients', 'devices', 'rate', 'warmup', 'seconds', 'interval', 'probes', 'workers', 'readings', 'only'])
  const env = process.env
  const num = numberOption
  const only = (values.only ?? env.BENCH_ONLY ?? 'engine,gateway').split(',').map((s) => s.trim())
  for (const p of only) if (p !== 'engine' && p !== 'gateway') throw new Error(`--only takes engine, gateway or both, got "${p}"`)
  const opts: Options = {
    patients: Math.floor(num(values.patients, 'PATIENTS', 10_000, 2)),
    devices: Math.floor(num(values.devices, 'DEVICES', 1000, 1)),
    ratePerSecond: num(values.rate, 'RATE', 2000, 1),
    warmupS: num(values.warmup, 'WARMUP', quick ? 8 : 15, 1),
    durationS: num(values.seconds, 'SECONDS', quick ? 15 : 60, 1),
    intervalMs: num(values.interval, 'INTERVAL', 150, 10),
    probes: Math.floor(num(values.probes, 'PROBES', 20, 2)),
    workers: Math.floor(num(values.workers, 'WORKERS', 2, 1)),
    readingsPerPatient: Math.floor(num(values.readings, 'READINGS', quick ? 8 : 24, 1)),
    quick,
    only: only as Part[],
    profile,
    settings,
  }
  if (opts.only.includes('gateway') && opts.devices + opts.probes > opts.patients) throw new Error(`--devices + --probes (${opts.devices + opts.probes}) must not exceed --patients (${opts.patients})`)
  return opts
}

function log(line: string): void {
  process.stderr.write(`  · ${line}\n`)
}

// ---------------------------------------------------------------- 1. the rule engine alone

type ReadingRule = ThresholdRule | DeltaRule
type Need = HistoryNeed
const TYPES: readonly ReadingType[] = ['blood_pressure', 'glucose', 'spo2', 'heart_rate', 'weight', 'temperature']
const ABNORMAL_SHARE = 0.02
const PASSES = 5

/** The enabled reading rules by type and how far back each type's rules look, as RuleEngine indexes them. */
function indexRules(dir: string): { byType: Map<ReadingType, ReadingRule[]>; needs: Map<ReadingType, Need>; count: number } {
  const byType = new Map<ReadingType, ReadingRule[]>()
  const needs = new Map<ReadingType, Need>()
  const set = loadRuleDir(dir)
  for (const { rule } of set.rules.values()) {
    if (rule.kind !== 'threshold' && rule.kind !== 'delta') continue
    addNeed(needs, rule)
    if (rule.enabled) byType.set(rule.reading, [...(byType.get(rule.reading) ?? []), rule])
  }
  return { byType, needs, count: set.rules.size }
}

/** mulberry32: the same readings on every run. */
function random(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

interface PureReading {
  patientId: string
  type: ReadingType
  sample: Sample
}

/**
 * `perPatient` readings for each patient in canonical units, a wave across all patients every
 * 4 hours, each patient measuring the six types in turn; ABNORMAL_SHARE of them past a limit.
 */
function pureReadings(patients: number, perPatient: number): PureReading[] {
  const rnd = random(20261125)
  const between = (lo: number, hi: number) => lo + rnd() * (hi - lo)
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rnd() * xs.length)]!
  const t0 = Date.parse('2026-11-01T06:00:00Z')
  const weights = Array.from({ length: patients }, () => between(55, 110))
  const ids = Array.from({ length: patients }, (_, p) => `pat-${p + 1}`)
  const out: PureReading[] = []
  let id = 0
  for (let k = 0; k < perPatient; k++) {
    for (let p = 0; p < patients; p++) {
      const type = TYPES[(p + k) % TYPES.length]!
      const odd = rnd() < ABNORMAL_SHARE
      let values: Record<string, number>
      switch (type) {
        case 'blood_pressure': {
          const [s, d] = odd ? pick([[186, 122], [150, 95], [86, 55]] as const) : [between(105, 134), between(64, 84)]
          values = { systolicMmHg: Math.round(s), diastolicMmHg: Math.round(d), pulseBpm: Math.round(between(58, 92)) }
          break
        }
        case 'glucose':
          values = { glucoseMgDl: odd ? pick([62, 50, 280, 420]) : Math.round(between(80, 160)) }
          break
        case 'spo2':
          values = { spo2Percent: odd ? pick([90, 86]) : Math.round(between(94, 99)), pulseBpm: Math.round(between(58, 92)) }
          break
        case 'heart_rate':
          values = { heartRateBpm: odd ? pick([126, 38]) : Math.round(between(55, 100)) }
          break
        case 'weight':
          values = { weightKg: Math.round((weights[p]! + (odd ? 1.2 : between(-0.3, 0.3))) * 10) / 10 }
          break
        case 'temperature':
          values = { temperatureC: odd ? pick([38.3, 39.8]) : Math.round(between(36.2, 37.3) * 10) / 10 }
          break
      }
      out.push({ patientId: ids[p]!, type, sample: { readingId: ++id, t: t0 + k * 4 * 3_600_000 + (p % 240) * 60_000, values } })
    }
  }
  return out
}

interface EngineResult {
  rules: number
  readingRules: number
  patients: number
  readings: number
  passes: Array<{ ms: number; readingsPerSecond: number }>
  readingsPerSecond: number
  usPerReading: number
  evaluations: number
  raised: number
  cleared: number
  samplesKept: number
}

/** One pass over the readings with empty histories: place each, then run every rule of its type. */
function evaluatePass(readings: readonly PureReading[], byType: Map<ReadingType, ReadingRule[]>, needs: Map<ReadingType, Need>) {
  const history = new Map<string, Sample[]>()
  let evaluations = 0
  let raised = 0
  let cleared = 0
  const t0 = performance.now()
  for (const r of readings) {
    const k = `${r.patientId}\u0000${r.type}`
    let samples = history.get(k)
    if (!samples) history.set(k, (samples = []))
    const index = placeSample(samples, r.sample, needs.get(r.type) ?? { count: 1, spanMs: 0 })
    for (const rule of byType.get(r.type) ?? []) {
      const verdict = rule.kind === 'threshold' ? evaluateThreshold(rule, samples, index) : evaluateDelta(rule, samples, index)
      evaluations++
      if (verdict.severity !== null) raised++
      else if (verdict.clear) cleared++
    }
  }
  const elapsed = performance.now() - t0
  let kept = 0
  for (const s of history.values()) kept += s.length
  return { ms: elapsed, evaluations, raised, cleared, kept }
}

function runEngine(opts: Options): EngineResult {
  const { byType, needs, count } = indexRules(path.join(BENCH_DIR, '..', 'rules'))
  const readings = pureReadings(opts.patients, opts.readingsPerPatient)
  log(`rule engine: ${count} rules, ${int(readings.length)} readings generated for ${int(opts.patients)} patients`)
  evaluatePass(readings.slice(0, Math.min(readings.length, 20_000)), byType, needs) // JIT warm-up
  const passes = Array.from({ length: PASSES }, () => evaluatePass(readings, byType, needs))
  const sorted = [...passes].sort((a, b) => a.ms - b.ms)
  const median = sorted[Math.floor(PASSES / 2)]!
  return {
    rules: count,
    readingRules: [...byType.values()].reduce((n, l) => n + l.length, 0),
    patients: opts.patients,
    readings: readings.length,
    passes: passes.map((p) => ({ ms: p.ms, readingsPerSecond: readings.length / (p.ms / 1000) })),
    readingsPerSecond: readings.length / (median.ms / 1000),
    usPerReading: (median.ms * 1000) / readings.length,
    evaluations: median.evaluations,
    raised: median.raised,
    cleared: median.cleared,
    samplesKept: median.kept,
  }
}

// ---------------------------------------------------------------- 2. through the gateway

type ServerPeer = Peer<ToServer, FromServer>
type WorkerPeer = Peer<ToWorker, FromWorker>

interface Pending {
  measuredAt: string
  /** When the PUBLISH was handed to mqtt.js, and when its PUBACK came back. */
  at: number
  pubackAt?: number
  measured: boolean
}

/** The provider's live socket: counts frames, matches crisis alerts to their probe PUBLISH. */
class ProviderSocket {
  readonly frames: Record<string, number> = {}
  readonly changes: Record<string, number> = {}
  readonly latency = new LatencyHistogram()
  /** From the crisis's PUBACK to its alert: what follows the journal commit (announce, socket queue, send). */
  readonly afterPuback = new LatencyHistogram()
  readonly closes: number[] = []
  /** The probe's latest crisis per patient, until its alert arrives. */
  readonly pending = new Map<string, Pending>()
  /** Alerts about patients that are not probes: background readings that crossed a limit. */
  background = 0
  /** A raised crisis alert whose reading was not the one sent last for that patient: it came after the next crisis was sent. */
  unmatched = 0
  received = 0
  #closing = false

  private constructor(
    readonly ws: WebSocket,
    readonly probePatients: ReadonlySet<string>,
  ) {
    ws.on('message', (data) => this.#onFrame(data.toString()))
    ws.on('close', (code) => {
      if (!this.#closing) this.closes.push(code)
    })
  }

  static open(url: string, token: string, probePatients: ReadonlySet<string>): Promise<ProviderSocket> {
    const ws = new WebSocket(url, ['rpm.v1'], { perMessageDeflate: false })
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the provider socket was not ready within 30 s')), 30_000)
      ws.once('error', reject)
      ws.once('open', () => ws.send(JSON.stringify({ type: 'auth', token })))
      ws.once('message', (data) => {
        clearTimeout(timer)
        const e = JSON.parse(data.toString()) as { type: string; code?: string }
        if (e.type !== 'ready') return reject(new Error(`the provider socket answered ${e.type} ${e.code ?? ''}`))
        resolve(new ProviderSocket(ws, probePatients))
      })
    })
  }

  #onFrame(text: string): void {
    const t = performance.now()
    const type = /^\{"type":"([^"]+)"/.exec(text)?.[1] ?? 'unknown'
    this.frames[type] = (this.frames[type] ?? 0) + 1
    if (type !== 'alert') return
    const { change, alert } = JSON.parse(text) as { change: string; alert: { patientId: string; ruleId: string; lastMeasuredAt: string | null } }
    this.changes[`${alert.ruleId} ${change}`] = (this.changes[`${alert.ruleId} ${change}`] ?? 0) + 1
    if (!this.probePatients.has(alert.patientId)) this.background++
    if (change !== 'raised' || alert.ruleId !== 'bp-crisis') return
    const p = this.pending.get(alert.patientId)
    if (!p || p.measuredAt !== alert.lastMeasuredAt) {
      this.unmatched++
      return
    }
    this.pending.delete(alert.patientId)
    if (!p.measured) return
    this.received++
    this.latency.record(t - p.at)
    // The gateway writes the PUBACK before it announces the alert; here the two arrive on
    // different sockets, so an alert handled first counts as no time after its PUBACK.
    this.afterPuback.record(p.pubackAt === undefined ? 0 : Math.max(0, t - p.pubackAt))
  }

  close(): void {
    this.#closing = true
    this.ws.close()
  }
}

interface ProbeResult {
  crises: number
  crisesMeasured: number
  resolving: number
  pubackLatency: LatencySummary
  maxScheduleLagMs: number
}

/**
 * Every `intervalMs`: the crisis reading for the next probe patient in turn and the resolving
 * reading for the one before, until `endAt`. Crises sent from `measureFrom` on are measured.
 */
async function runProbe(clients: Array<{ device: BenchDevice; client: MqttClient }>, socket: ProviderSocket, intervalMs: number, measureFrom: number, endAt: number): Promise<ProbeResult> {
  const puback = new LatencyHistogram()
  let crises = 0
  let crisesMeasured = 0
  let resolving = 0
  let maxLag = 0
  const start = performance.now()
  /** Publishes one reading; its clock starts as it is handed to mqtt.js, which writes it in this tick. */
  const publish = (c: (typeof clients)[number], reading: typeof CRISIS, measured: boolean): Pending => {
    const measuredAt = new Date().toISOString()
    const payload = JSON.stringify(build.bloodPressure(reading.systolic, reading.diastolic, reading.pulse, { measuredAt }))
    const pending: Pending = { measuredAt, at: performance.now(), measured }
    c.client.publish(`devices/${c.device.deviceId}/readings`, payload, { qos: 1 }, (err) => {
      if (err) return
      pending.pubackAt = performance.now()
      if (measured) puback.record(pending.pubackAt - pending.at)
    })
    return pending
  }
  for (let i = 0; ; i++) {
    const due = start + i * intervalMs
    if (due >= endAt) break
    const wait = due - performance.now()
    if (wait > 0) await sleep(wait)
    maxLag = Math.max(maxLag, performance.now() - due)
    const measured = due >= measureFrom
    if (i > 0) {
      publish(clients[(i - 1) % clients.length]!, RESOLVING, false)
      resolving++
    }
    const c = clients[i % clients.length]!
    socket.pending.set(c.device.patientId!, publish(c, CRISIS, measured))
    crises++
    if (measured) crisesMeasured++
  }
  return { crises, crisesMeasured, resolving, pubackLatency: puback.summary(), maxScheduleLagMs: maxLag }
}

interface GatewayResult {
  setup: { gatewayStartupMs: number; signInMs: number; connectMs: number; devicesConnected: number }
  window: { warmupS: number; durationS: number }
  background: { targetRate: number; achievedRate: number; sent: number; acked: number; unacked: number; pubackLatency: LatencySummary; maxScheduleLagMs: number }
  probe: ProbeResult & { intervalMs: number; patients: number }
  alertLatency: LatencySummary
  alertAfterPuback: LatencySummary
  alertsMissing: number
  alertsUnmatched: number
  backgroundAlerts: number
  alertChanges: Record<string, number>
  frames: Record<string, number>
  socketCloses: number[]
  gateway: { cores: number; loopUtilisation: number; cpuUsPerReading: number; coresPerSecond: number[] }
  machine: { busyCores: number } | undefined
  self: { cores: number }
  totals: { storedReadings?: number; quarantined?: number; workerErrors: number }
  /** From the gateway's /metrics over the measured window. */
  journal?: JournalFigures
  profile?: ProfileSummary
}

async function runGateway(opts: Options, dataDir: string, tlsFiles: { cert: string; key: string; ca: string }, profileDir: string): Promise<GatewayResult> {
  const server: ServerPeer = new Peer('gateway', forkChild('ingest-server.ts', opts.profile ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : []))
  const workers: WorkerPeer[] = []
  const probeClients: Array<{ device: BenchDevice; client: MqttClient }> = []
  let socket: ProviderSocket | undefined
  try {
    const ready = await server.request(
      {
        cmd: 'start',
        target: 'gateway',
        devices: opts.devices,
        tls: tlsFiles,
        dataDir,
        settings: opts.settings,
        population: { patients: opts.patients, probes: opts.probes, provider: PROVIDER },
      },
      'ready',
      600_000,
    )
    const probes = ready.probes ?? []
    log(`gateway up at ${ready.httpUrl} in ${(ready.startupMs / 1000).toFixed(1)} s: ${int(opts.patients)} patients, ${int(ready.devices.length)} devices + ${probes.length} probes, one provider on every care team`)

    const t0 = performance.now()
    const login = (await signIn(ready.httpUrl!, [PROVIDER], 1)).get(PROVIDER.username)!
    socket = await ProviderSocket.open(`${ready.httpUrl!.replace(/^http/, 'ws')}/api/v1/ws`, login.token, new Set(probes.map((d) => d.patientId!)))
    const signInMs = performance.now() - t0
    log(`provider signed in over REST and on the WebSocket in ${int(signInMs)} ms`)

    const url = `mqtts://127.0.0.1:${ready.port}`
    const ca = readFileSync(tlsFiles.ca, 'utf8')
    const t1 = performance.now()
    const shares: BenchDevice[][] = Array.from({ length: opts.workers }, () => [])
    ready.devices.forEach((d, i) => shares[i % opts.workers]!.push(d))
    for (let i = 0; i < opts.workers; i++) workers.push(new Peer(`load worker ${i + 1}`, forkChild('load-worker.ts')))
    const [connected] = await Promise.all([
      Promise.all(workers.map((w, i) => w.request({ cmd: 'connect', url, ca, devices: shares[i]!, concurrency: 16, values: 'normal' }, 'connected', 300_000))),
      Promise.all(probes.map(async (device) => probeClients.push({ device, client: await mqtt.connectAsync(url, deviceClientOptions(device, ca)) }))),
    ])
    probeClients.sort((a, b) => a.device.deviceId.localeCompare(b.device.deviceId))
    const connectMs = performance.now() - t1
    const devicesConnected = connected.reduce((n, c) => n + c.devices, 0)
    log(`${int(devicesConnected)} devices and ${probeClients.length} probes connected over MQTT/TLS in ${(connectMs / 1000).toFixed(1)} s`)
    await sleep(1000)

    // -- the run: background at a fixed rate and the probe, warm-up then the measured window.
    log(`${int(opts.ratePerSecond)} background readings/s and a crisis every ${opts.intervalMs} ms: ${opts.warmupS} s warm-up + ${opts.durationS} s measured`)
    const warmupMs = opts.warmupS * 1000
    const durationMs = opts.durationS * 1000
    const start = performance.now()
    const fixedRuns = Promise.all(
      workers.map((w) => w.request({ cmd: 'fixed', ratePerSecond: opts.ratePerSecond / workers.length, warmupMs, durationMs }, 'fixed', warmupMs + durationMs + 60_000)),
    )
    const probeRun = runProbe(probeClients, socket, opts.intervalMs, start + warmupMs, start + warmupMs + durationMs)
    await sleep(warmupMs)
    const [{ cpu: cpu0 }, scraped0] = await Promise.all([server.request({ cmd: 'cpu' }, 'cpu'), scrape(ready.metricsUrl)])
    const first = { cpu: cpu0, machine: machineCpu(), self: cpuSnapshot() }
    const samples = [first.cpu]
    let sampling = true
    const sampler = setInterval(() => {
      server.request({ cmd: 'cpu' }, 'cpu').then((m) => sampling && samples.push(m.cpu), () => undefined)
    }, 1000)
    const [replies, probe] = await Promise.all([fixedRuns, probeRun])
    clearInterval(sampler)
    sampling = false
    const [{ cpu: cpu1 }, scraped1] = await Promise.all([server.request({ cmd: 'cpu' }, 'cpu'), scrape(ready.metricsUrl)])
    const last = { cpu: cpu1, machine: machineCpu(), self: cpuSnapshot() }
    samples.push(last.cpu)

    // Alerts still on their way.
    const drainUntil = performance.now() + 5000
    while ([...socket.pending.values()].some((p) => p.measured) && performance.now() < drainUntil) await sleep(50)
    const missing = [...socket.pending.values()].filter((p) => p.measured).length

    const closed = await Promise.all(workers.map((w) => w.request({ cmd: 'close' }, 'closed', 60_000)))
    await Promise.all(probeClients.map((c) => c.client.endAsync(true).catch(() => undefined)))
    socket.close()
    const stopped = await server.request({ cmd: 'stop' }, 'stopped', 60_000)
    await Promise.race([Promise.all([server.exited, ...workers.map((w) => w.exited)]), sleep(10_000)])

    // -- figures
    const gw = cpuDelta(first.cpu, last.cpu)
    const wallMs = (last.cpu.monotonicUs - first.cpu.monotonicUs) / 1000
    const sent = replies.reduce((n, r) => n + r.sent, 0)
    const acked = replies.reduce((n, r) => n + r.acked, 0)
    const coresPerSecond: number[] = []
    for (let i = 1; i < samples.length; i++) {
      const a = samples[i - 1]!
      const b = samples[i]!
      coresPerSecond.push(Number((cpuDelta(a, b).cpuMs / ((b.monotonicUs - a.monotonicUs) / 1000)).toFixed(2)))
    }
    const result: GatewayResult = {
      setup: { gatewayStartupMs: ready.startupMs, signInMs, connectMs, devicesConnected },
      window: { warmupS: opts.warmupS, durationS: opts.durationS },
      background: {
        targetRate: opts.ratePerSecond,
        achievedRate: replies.reduce((r, f) => r + f.acked / (f.elapsedMs / 1000), 0),
        sent,
        acked,
        unacked: replies.reduce((n, r) => n + r.unacked, 0),
        pubackLatency: LatencyHistogram.from(replies.map((r) => r.latency)).summary(),
        maxScheduleLagMs: Math.max(...replies.map((r) => r.maxScheduleLagMs)),
      },
      probe: { ...probe, intervalMs: opts.intervalMs, patients: probeClients.length },
      alertLatency: socket.latency.summary(),
      alertAfterPuback: socket.afterPuback.summary(),
      alertsMissing: missing,
      alertsUnmatched: socket.unmatched,
      backgroundAlerts: socket.background,
      alertChanges: socket.changes,
      frames: socket.frames,
      socketCloses: socket.closes,
      gateway: { cores: gw.cpuMs / wallMs, loopUtilisation: gw.loopUtilisation, cpuUsPerReading: acked ? (gw.cpuMs * 1000) / acked : Number.NaN, coresPerSecond },
      machine: first.machine && last.machine ? { busyCores: (last.machine.busyMs - first.machine.busyMs) / wallMs } : undefined,
      self: { cores: cpuDelta(first.self, last.self).cpuMs / wallMs },
      totals: {
        workerErrors: closed.reduce((n, c) => n + c.errors, 0),
        ...(stopped.type === 'stopped' && stopped.storedReadings !== undefined ? { storedReadings: stopped.storedReadings, quarantined: stopped.quarantined ?? 0 } : {}),
      },
    }
    if (scraped0 && scraped1) result.journal = journalFigures(scraped0, scraped1)
    if (opts.profile) {
      const file = newestProfile(profileDir)
      if (file) result.profile = summariseProfile(file, first.cpu.monotonicUs, last.cpu.monotonicUs, alertKeys)
    }
    return result
  } finally {
    socket?.ws.terminate()
    for (const c of probeClients) c.client.end(true)
    server.kill()
    for (const w of workers) w.kill()
  }
}

// ---------------------------------------------------------------- report

function report(opts: Options, engine: EngineResult | undefined, g: GatewayResult | undefined): string[] {
  const out: string[] = []
  const counts = (rec: Record<string, number>) => (Object.keys(rec).length ? Object.entries(rec).map(([k, v]) => `${k} ${int(v)}`).join(', ') : 'none')
  if (engine) {
    const e = engine
    out.push('', 'Rule engine alone (evaluateThreshold / evaluateDelta, one core)')
    out.push(`readings evaluated:     ${int(e.readings)} (${int(e.patients)} patients x ${opts.readingsPerPatient}, six types, ${pct(ABNORMAL_SHARE)} past a limit); ${e.readingRules} reading rules of ${e.rules}`)
    out.push(`throughput:             ${int(e.readingsPerSecond)} readings/s, ${e.usPerReading.toFixed(2)} µs/reading (median of ${e.passes.length} passes: ${e.passes.map((p) => int(p.readingsPerSecond)).join(', ')} readings/s)`)
    out.push(`verdicts per pass:      ${int(e.evaluations)} rule evaluations, ${int(e.raised)} raise, ${int(e.cleared)} clear; ${int(e.samplesKept)} samples kept in the histories at the end`)
  }
  if (g) {
    const a = g.alertLatency
    const b = g.background
    out.push('', 'Through the gateway')
    out.push(`crisis PUBLISH -> provider socket alert (raised), ms: p50 ${ms(a.p50Ms)}, p90 ${ms(a.p90Ms)}, p99 ${ms(a.p99Ms)}, max ${ms(a.maxMs)}, mean ${ms(a.meanMs)} (n=${int(a.count)})`)
    const after = g.alertAfterPuback
    out.push(`  of which after the crisis's PUBACK, ms: p50 ${ms(after.p50Ms)}, p99 ${ms(after.p99Ms)}, max ${ms(after.maxMs)} (the rest is ingest: TLS, MQTT, validation, journal commit with its rules)`)
    out.push(
      `alerts:                 ${int(a.count)} of ${int(g.probe.crisesMeasured)} measured crises` +
        (g.alertsMissing ? `, ${int(g.alertsMissing)} MISSING` : ', none missing') +
        `; ${int(g.alertsUnmatched)} raised after the patient's next crisis was sent (late, warm-up included); ${int(g.backgroundAlerts)} about background patients`,
    )
    out.push(`probe:                  a crisis every ${opts.intervalMs} ms over ${g.probe.patients} patients in turn, each resolved one step later; PUBACK p50 ${ms(g.probe.pubackLatency.p50Ms)}, p99 ${ms(g.probe.pubackLatency.p99Ms)} ms; max schedule lag ${ms(g.probe.maxScheduleLagMs)} ms`)
    out.push(
      `background readings:    ${int(b.achievedRate)}/s achieved of ${int(b.targetRate)}/s (${int(b.acked)}/${int(b.sent)} acknowledged, ${int(b.unacked)} not); ` +
        `PUBACK p50 ${ms(b.pubackLatency.p50Ms)}, p99 ${ms(b.pubackLatency.p99Ms)}, max ${ms(b.pubackLatency.maxMs)} ms; sender max lag ${ms(b.maxScheduleLagMs)} ms`,
    )
    out.push(
      `gateway process:        CPU ${g.gateway.cores.toFixed(2)} cores (event loop busy ${pct(g.gateway.loopUtilisation)}), ${g.gateway.cpuUsPerReading.toFixed(0)} µs CPU/background reading` +
        `; this process (probe + provider socket) ${g.self.cores.toFixed(2)} cores` +
        (g.machine ? `; whole machine ${g.machine.busyCores.toFixed(2)} of ${os.cpus().length} cores busy` : ''),
    )
    out.push(`                        CPU per second of the window (cores): ${g.gateway.coresPerSecond.map((c) => c.toFixed(2)).join(' ')}`)
    if (g.journal) out.push(...journalLines(g.journal, 'the measured window'))
    out.push(`provider socket frames: ${counts(g.frames)}${g.socketCloses.length ? `; CLOSED by the gateway: ${g.socketCloses.join(', ')}` : ''}`)
    out.push(`alert changes seen:     ${counts(g.alertChanges)}`)
    out.push(
      `setup:                  gateway start + ${int(opts.patients)} patients ${(g.setup.gatewayStartupMs / 1000).toFixed(1)} s, sign-in ${int(g.setup.signInMs)} ms, ` +
        `${int(g.setup.devicesConnected)} devices connected in ${(g.setup.connectMs / 1000).toFixed(1)} s; ` +
        (g.totals.storedReadings === undefined ? '' : `journal holds ${int(g.totals.storedReadings)} readings, ${int(g.totals.quarantined ?? 0)} quarantined; `) +
        `${g.totals.workerErrors} load-generator errors`,
    )
    out.push('')
    const met = a.p99Ms < ALERT_P99_TARGET_MS
    out.push(`alert p99 at ${int(b.achievedRate)} background readings/s, ${int(opts.patients)} patients: ${ms(a.p99Ms)} ms  (target < ${ALERT_P99_TARGET_MS} ms: ${met ? 'met' : 'NOT met'})`)
    if (g.profile) out.push('', ...profileLines(g.profile, 'the measured window', g.background.acked, 'background reading'))
  }
  return out
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const opts = options()
  const root = mkdtempSync(path.join(os.tmpdir(), 'rpm-bench-alerts-'))
  const machine = machineInfo(root)
  const print = (line = '') => process.stdout.write(line + '\n')
  print('rpm-gateway alerts benchmark')
  for (const line of machineLines(machine, root)) print(line)
  if (opts.only.includes('gateway')) {
    print(
      `load: ${int(opts.patients)} patients, ${int(opts.devices)} of them with a device over MQTT 3.1.1/TLS (mqtt.js) in ${opts.workers} load processes sending ` +
        `${int(opts.ratePerSecond)} normal readings/s; a provider on every care team on the live WebSocket; ${opts.probes} probe patients`,
    )
    print(`phases: ${opts.warmupS} s warm-up + ${opts.durationS} s measured${opts.quick ? ' (--quick)' : ''}`)
    const notes = Object.entries(opts.settings).map(([k, v]) => `${k}=${v}`)
    if (notes.length) print(`gateway settings: ${notes.join(', ')}`)
  }

  const profileDir = path.join(RESULTS_DIR, 'profiles')
  if (opts.profile) mkdirSync(profileDir, { recursive: true })
  let engine: EngineResult | undefined
  let gateway: GatewayResult | undefined
  try {
    if (opts.only.includes('engine')) engine = runEngine(opts)
    if (opts.only.includes('gateway')) {
      const files = await ensureDevelopmentPki(path.join(root, 'pki'), serverNames())
      gateway = await runGateway(opts, path.join(root, 'gateway'), { cert: files.certPath, key: files.keyPath, ca: files.caCertPath }, profileDir)
    }
  } finally {
    rmSync(root, { recursive: true, force: true })
  }

  for (const line of report(opts, engine, gateway)) print(line)

  mkdirSync(RESULTS_DIR, { recursive: true })
  const file = path.join(RESULTS_DIR, 'alerts-latest.json')
  const p99 = gateway?.alertLatency.p99Ms
  writeFileSync(
    file,
    JSON.stringify(
      {
        at: new Date().toISOString(),
        command: `node --import tsx bench/alerts.ts ${process.argv.slice(2).join(' ')}`.trim(),
        machine,
        options: opts,
        engine: engine ?? null,
        gateway: gateway ?? null,
        targets: {
          alertP99Ms: { value: p99 ?? null, target: ALERT_P99_TARGET_MS, atReadingsPerSecond: gateway?.background.achievedRate ?? null, met: p99 === undefined ? null : p99 < ALERT_P99_TARGET_MS },
        },
      },
      null,
      2,
    ) + '\n',
  )
  print()
  print(`figures written to ${path.relative(process.cwd(), file)}`)
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:alerts failed: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
