/**
 * The InfluxDB time-series writer: how fast it drains a backlog, and what it costs ingest.
 *
 *   npm run bench:timeseries [-- --readings 200000 --devices 120 --duration 8 --rounds 2 --workers 2 --window 10]
 *   npm run bench:timeseries -- --quick          a smaller backlog and shorter phases, for a smoke run
 *
 * Needs VictoriaMetrics (Debian package victoria-metrics, /usr/bin/victoria-metrics): a real server
 * that takes InfluxDB 2's /api/v2/write, started fresh on a free port for each part.
 *
 * 1. Drain: --readings readings put straight into a fresh data directory's journal (the gateway's
 *    migrations, then one transaction of prepared inserts: six reading types over --devices
 *    devices), then the real gateway starts in its own process with influx.* pointing at a fresh
 *    VictoriaMetrics (a new bucket). Timed from the start command until rpm_timeseries_backlog_readings
 *    is 0; points/s from rpm_timeseries_points_written_total between the first and last scrape.
 *    Then VictoriaMetrics' samples are counted against the journal's values.
 * 2. Ingest cost: the gateway at saturation under bench/ingest.ts's load (--devices devices over
 *    MQTT/TLS from --workers load processes, each device keeping --window QoS1 publishes
 *    unacknowledged), with the writer off and on in turn, --rounds times each, --duration s
 *    measured after a warm-up. Acknowledged readings/s for each and the on/off ratio.
 *
 * Diagnostics: --only drain|ingest, --set key=value (any gateway config key for every gateway,
 * e.g. --set influx.batchSize=10000; repeatable). Each option also reads from the environment:
 * BENCH_READINGS, BENCH_DEVICES, BENCH_DURATION, ...
 *
 * Prints figures and writes them to bench/results/timeseries-latest.json; never fails on a time.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { ensureDevelopmentPki, serverNames } from '../src/broker/pki.ts'
import { openStore } from '../src/store/db.ts'
import { Victoria } from '../test/victoria.ts'
import { counterDelta, scrape, type Scrape } from './gateway-metrics.ts'
import { benchArgs, forkChild, int, machineCpu, machineInfo, machineLines, ms, numberOption, pct, Peer, RESULTS_DIR } from './harness.ts'
import { LatencyHistogram, type LatencySummary } from './histogram.ts'
import { cpuDelta, cpuSnapshot } from './process-stats.ts'
import type { BenchDevice, CpuSnapshot, FromServer, FromWorker, ServerStart, ToServer, ToWorker, WorkerMark } from './protocol.ts'

const DRAIN_TARGET_POINTS_PER_S = 50_000
const INGEST_RATIO_TARGET = 0.9
/** Other processes' CPU, in cores, above which a saturation figure is flagged as disturbed (as bench/ingest.ts does). */
const NOISY_OTHER_CORES = 0.25
const PROVIDER = { username: 'bench-dr-timeseries', password: 'bench-dr-timeseries-password' }

type Part = 'drain' | 'ingest'
type ServerPeer = Peer<ToServer, FromServer>
type WorkerPeer = Peer<ToWorker, FromWorker>
type Tls = ServerStart['tls']

// ---------------------------------------------------------------- options

interface Options {
  readings: number
  devices: number
  workers: number
  window: number
  warmupS: number
  durationS: number
  rounds: number
  quick: boolean
  only: Part[]
  settings: Record<string, string | number | boolean>
}

function options(): Options {
  const { values, quick, settings } = benchArgs(fileURLToPath(import.meta.url), ['readings', 'devices', 'workers', 'window', 'duration', 'rounds', 'only'])
  const num = numberOption
  const only = (values.only ?? process.env.BENCH_ONLY ?? 'drain,ingest').split(',').map((s) => s.trim())
  for (const p of only) if (p !== 'drain' && p !== 'ingest') throw new Error(`--only takes drain, ingest or both, got "${p}"`)
  return {
    readings: Math.floor(num(values.readings, 'READINGS', quick ? 50_000 : 200_000, 1)),
    devices: Math.floor(num(values.devices, 'DEVICES', quick ? 60 : 120, 1)),
    workers: Math.floor(num(values.workers, 'WORKERS', 2, 1)),
    window: Math.floor(num(values.window, 'WINDOW', 10, 1)),
    warmupS: quick ? 1 : 2,
    durationS: num(values.duration, 'DURATION', quick ? 3 : 8, 1),
    rounds: Math.floor(num(values.rounds, 'ROUNDS', quick ? 1 : 2, 1)),
    quick,
    only: only as Part[],
    settings,
  }
}

function log(line: string): void {
  process.stderr.write(`  · ${line}\n`)
}

const influxSettings = (url: string) => ({ 'influx.url': url, 'influx.token': 'bench', 'influx.org': 'bench', 'influx.bucket': 'rpm' })

/** CPU time (user + system) of another process so far, ms (Linux /proc; undefined elsewhere). */
function processCpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) * (1000 / 100) // utime + stime, USER_HZ ticks
  } catch {
    return undefined
  }
}

// ---------------------------------------------------------------- 1. drain

const KINDS = ['bp_cuff', 'glucometer', 'oximeter', 'scale', 'thermometer', 'hub'] as const
const HUB_TYPES = ['blood_pressure', 'glucose', 'spo2', 'heart_rate', 'weight', 'temperature'] as const
const KIND_TYPE: Record<string, (typeof HUB_TYPES)[number]> = { bp_cuff: 'blood_pressure', glucometer: 'glucose', oximeter: 'spo2', scale: 'weight', thermometer: 'temperature' }
/** Field values per reading of each type: one point (a line) per reading carries them. */
const FIELDS: Record<string, number> = { blood_pressure: 3, glucose: 1, spo2: 2, heart_rate: 1, weight: 1, temperature: 1 }

/** Canonical values as the journal holds them (docs/devices.md units, converted at ingest). */
function valuesOf(type: string, i: number): Record<string, number | string> {
  switch (type) {
    case 'blood_pressure':
      return { systolicMmHg: 110 + (i % 40), diastolicMmHg: 70 + (i % 20), pulseBpm: 60 + (i % 30) }
    case 'glucose':
      return { glucoseMgDl: Math.round((85 + (i % 70) + 0.1 * (i % 10)) * 10) / 10, context: 'fasting' }
    case 'spo2':
      return { spo2Percent: 93 + (i % 7), pulseBpm: 60 + (i % 30) }
    case 'heart_rate':
      return { heartRateBpm: 55 + (i % 45) }
    case 'weight':
      return { weightKg: Math.round((70 + (i % 300) / 10) * 1000) / 1000 }
    default:
      return { temperatureC: Math.round((36.2 + (i % 20) / 10) * 100) / 100 }
  }
}

/**
 * A journal of `readings` readings over `devices` devices (one patient each, kinds in turn),
 * measured 10 s apart over the last weeks, written with the gateway's own migrations and one
 * transaction of prepared inserts. Returns the number of field values they make.
 */
async function fillJournal(dataDir: string, readings: number, devices: number): Promise<number> {
  const store = await openStore(dataDir)
  try {
    const sqlite = store.sqlite
    const at = new Date().toISOString()
    const patient = sqlite.prepare('INSERT INTO patients (id, name, timezone, created_at) VALUES (?, ?, ?, ?)')
    const device = sqlite.prepare(`INSERT INTO devices (id, patient_id, kind, secret_hash, status, created_at, disabled_at, online, last_seen_at, last_connected_at)
      VALUES (?, ?, ?, 'scrypt$unused', 'active', ?, NULL, 0, NULL, NULL)`)
    const reading = sqlite.prepare(`INSERT INTO readings (device_id, patient_id, type, seq, measured_at, received_at, values_json, original_json, dedupe_key)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)
    const ids = Array.from({ length: devices }, (_, d) => ({ deviceId: `drain-${String(d + 1).padStart(4, '0')}`, patientId: `pat-drain-${String(d + 1).padStart(4, '0')}`, kind: KINDS[d % KINDS.length]! }))
    const start = Date.now() - readings * 10_000 - 60_000
    let fieldValues = 0
    sqlite.transaction(() => {
      for (const d of ids) {
        patient.run(d.patientId, `Drain Patient ${d.deviceId}`, 'UTC', at)
        device.run(d.deviceId, d.patientId, d.kind, at)
      }
      for (let i = 0; i < readings; i++) {
        const d = ids[i % devices]!
        const seq = Math.floor(i / devices) + 1
        const type = d.kind === 'hub' ? HUB_TYPES[seq % HUB_TYPES.length]! : KIND_TYPE[d.kind]!
        const measuredAt = new Date(start + i * 10_000 + (i % 1000)).toISOString()
        const values = valuesOf(type, i)
        const json = JSON.stringify(values)
        reading.run(d.deviceId, d.patientId, type, seq, measuredAt, at, json, json, `${measuredAt}|${d.deviceId}|${type}|${seq}`)
        fieldValues += FIELDS[type]!
      }
    })()
    return fieldValues
  } finally {
    await store.close()
  }
}

interface DrainResult {
  /** One point (a line of line protocol: measurement, tags, fields, time) per reading. */
  readings: number
  fieldValues: number
  fillMs: number
  gatewayStartupMs: number
  /** From the start command to rpm_timeseries_backlog_readings 0 (includes the gateway's start-up). */
  wallMs: number
  /** Between the first scrape after start-up and the one that saw the backlog at 0. */
  steady: { points: number; ms: number } | null
  pointsPerSecond: number
  fieldValuesPerSecond: number
  batches: number
  failedBatches: number
  gatewayCores: number
  gatewayCpuUsPerPoint: number
  victoriaCores: number | undefined
  /** Busy cores on the whole machine during the drain (gateway, VictoriaMetrics, this process, anything else). */
  machineBusyCores: number | undefined
  stored: { samples: number; series: number; exportMs: number } | null
}

async function runDrain(opts: Options, root: string, tls: Tls): Promise<DrainResult> {
  const dataDir = path.join(root, 'drain')
  const t0 = performance.now()
  const fieldValues = await fillJournal(dataDir, opts.readings, opts.devices)
  const fillMs = performance.now() - t0
  log(`journal: ${int(opts.readings)} readings (${int(fieldValues)} field values) over ${opts.devices} devices inserted in ${(fillMs / 1000).toFixed(1)} s`)

  const vm = await Victoria.start()
  const server: ServerPeer = new Peer('gateway (drain)', forkChild('ingest-server.ts'))
  try {
    const machine0 = machineCpu()
    const vm0 = processCpuMs(vm.pid)
    const started = performance.now()
    const ready = await server.request({ cmd: 'start', target: 'gateway', devices: 0, tls, dataDir, settings: { ...opts.settings, ...influxSettings(vm.url) } }, 'ready', 300_000)
    const { cpu: cpu0 } = await server.request({ cmd: 'cpu' }, 'cpu')
    log(`gateway up in ${(ready.startupMs / 1000).toFixed(1)} s, writing to VictoriaMetrics at ${vm.url}`)

    let first: { at: number; written: number } | undefined
    let last: { at: number; scraped: Scrape } | undefined
    const until = performance.now() + 150_000
    for (;;) {
      const scraped = await scrape(ready.metricsUrl)
      const at = performance.now()
      if (scraped) {
        const written = scraped.get('rpm_timeseries_points_written_total') ?? 0
        first ??= { at, written }
        last = { at, scraped }
        if (scraped.get('rpm_timeseries_backlog_readings') === 0 && written >= opts.readings) break
      }
      if (at > until) throw new Error(`the backlog did not drain within 150 s: ${JSON.stringify(scraped && Object.fromEntries([...scraped].filter(([k]) => k.startsWith('rpm_timeseries'))))}`)
      await sleep(20)
    }
    const wallMs = last.at - started
    const { cpu: cpu1 } = await server.request({ cmd: 'cpu' }, 'cpu')
    const machine1 = machineCpu()
    const vm1 = processCpuMs(vm.pid)
    const elapsedMs = performance.now() - started
    const written = last.scraped.get('rpm_timeseries_points_written_total') ?? 0
    const steadyPoints = written - first!.written
    const steadyMs = last.at - first!.at
    const steady = steadyMs > 0 && steadyPoints > 0 ? { points: steadyPoints, ms: steadyMs } : null
    const gw = cpuDelta(cpu0, cpu1)
    const batchSize = Number(opts.settings['influx.batchSize'] ?? 5000)
    log(`drained in ${(wallMs / 1000).toFixed(1)} s from the start command`)
    await server.request({ cmd: 'stop' }, 'stopped', 60_000)

    // What VictoriaMetrics holds: every field value of every point, once.
    let stored: DrainResult['stored'] = null
    const e0 = performance.now()
    try {
      const series = await vm.waitFor((s) => s.reduce((n, x) => n + x.samples.length, 0) >= fieldValues, 30_000, `${fieldValues} samples`)
      stored = { samples: series.reduce((n, x) => n + x.samples.length, 0), series: series.length, exportMs: performance.now() - e0 }
    } catch (err) {
      log(`could not count VictoriaMetrics' samples: ${(err as Error).message.slice(0, 300)}`)
    }
    const pointsPerSecond = steady ? steady.points / (steady.ms / 1000) : written / (wallMs / 1000)
    return {
      readings: opts.readings,
      fieldValues,
      fillMs,
      gatewayStartupMs: ready.startupMs,
      wallMs,
      steady,
      pointsPerSecond,
      fieldValuesPerSecond: pointsPerSecond * (fieldValues / opts.readings),
      batches: Math.ceil(opts.readings / batchSize),
      failedBatches: counterDelta(new Map(), last.scraped, 'rpm_timeseries_batches_failed_total'),
      gatewayCores: gw.cpuMs / (cpu1.monotonicUs / 1000 - cpu0.monotonicUs / 1000),
      gatewayCpuUsPerPoint: written ? (gw.cpuMs * 1000) / written : Number.NaN,
      victoriaCores: vm0 !== undefined && vm1 !== undefined ? (vm1 - vm0) / elapsedMs : undefined,
      machineBusyCores: machine0 && machine1 ? (machine1.busyMs - machine0.busyMs) / elapsedMs : undefined,
      stored,
    }
  } finally {
    server.kill()
    await vm.close()
  }
}

// ---------------------------------------------------------------- 2. ingest with the writer off and on

interface IngestRun {
  writer: 'off' | 'on'
  round: number
  readingsPerSecond: number
  acked: number
  durationS: number
  latency: LatencySummary
  gatewayCpuUsPerReading: number
  gatewayLoopUtilisation: number
  /** Writer on: points InfluxDB confirmed in the window, per second, and the backlog at its end. */
  writtenPerSecond?: number
  backlogAtEnd?: number
  victoriaCores?: number
  /** CPU used on the machine by processes other than this benchmark's (and VictoriaMetrics), in cores. */
  otherCores: number | undefined
  errors: number
}

async function runIngest(writer: 'off' | 'on', round: number, opts: Options, root: string, tls: Tls, vm: Victoria): Promise<IngestRun> {
  const server: ServerPeer = new Peer(`gateway (writer ${writer})`, forkChild('ingest-server.ts'))
  const workers: WorkerPeer[] = []
  try {
    const ready = await server.request(
      {
        cmd: 'start',
        target: 'gateway',
        devices: opts.devices,
        tls,
        dataDir: path.join(root, `ingest-${writer}-${round}`),
        settings: { ...opts.settings, ...(writer === 'on' ? influxSettings(vm.url) : {}) },
        population: { patients: opts.devices, probes: 0, provider: PROVIDER },
      },
      'ready',
      300_000,
    )
    for (let i = 0; i < opts.workers; i++) workers.push(new Peer(`load worker ${i + 1}`, forkChild('load-worker.ts')))
    const ca = readFileSync(tls.ca, 'utf8')
    const shares: BenchDevice[][] = workers.map(() => [])
    ready.devices.forEach((d, i) => shares[i % workers.length]!.push(d))
    await Promise.all(workers.map((w, i) => w.request({ cmd: 'connect', url: `mqtts://127.0.0.1:${ready.port}`, ca, devices: shares[i]!, concurrency: 16 }, 'connected', 300_000)))
    await sleep(300)

    const markAll = async () => {
      const [marks, cpu, scraped] = await Promise.all([
        Promise.all(workers.map((w) => w.request({ cmd: 'mark' }, 'mark'))),
        server.request({ cmd: 'cpu' }, 'cpu'),
        scrape(ready.metricsUrl),
      ])
      return { marks, cpu: cpu.cpu, scraped, machine: machineCpu(), self: cpuSnapshot(), vm: processCpuMs(vm.pid) }
    }
    for (const w of workers) w.send({ cmd: 'saturate', window: opts.window })
    await sleep(opts.warmupS * 1000)
    const before = await markAll()
    await sleep(opts.durationS * 1000)
    const after = await markAll()
    await Promise.all(workers.map((w) => w.request({ cmd: 'stop' }, 'stopped', 30_000)))
    const closed = await Promise.all(workers.map((w) => w.request({ cmd: 'close' }, 'closed', 60_000)))
    await server.request({ cmd: 'stop' }, 'stopped', 60_000)

    const figures = saturation(after.marks, before.cpu, after.cpu)
    const windowMs = figures.durationS * 1000
    const vmMs = before.vm !== undefined && after.vm !== undefined ? after.vm - before.vm : 0
    let otherCores: number | undefined
    if (before.machine && after.machine) {
      const loadMs = after.marks.reduce((n, m, i) => n + cpuDelta(before.marks[i]!.cpu, m.cpu).cpuMs, 0)
      const ours = cpuDelta(before.cpu, after.cpu).cpuMs + loadMs + cpuDelta(before.self, after.self).cpuMs + vmMs
      otherCores = Math.max(0, (after.machine.busyMs - before.machine.busyMs - ours) / windowMs)
    }
    const run: IngestRun = { writer, round, ...figures, otherCores, errors: closed.reduce((n, c) => n + c.errors, 0) }
    if (writer === 'on') run.victoriaCores = vmMs / windowMs
    if (writer === 'on' && before.scraped && after.scraped) {
      run.writtenPerSecond = counterDelta(before.scraped, after.scraped, 'rpm_timeseries_points_written_total') / figures.durationS
      run.backlogAtEnd = after.scraped.get('rpm_timeseries_backlog_readings') ?? Number.NaN
    }
    log(
      `writer ${writer} (round ${round}): ${int(run.readingsPerSecond)} readings/s acknowledged` +
        (otherCores !== undefined ? ` (other processes ${otherCores.toFixed(2)} cores)` : '') +
        (run.writtenPerSecond !== undefined ? `, ${int(run.writtenPerSecond)} readings/s written to InfluxDB, backlog ${int(run.backlogAtEnd!)} at the end` : ''),
    )
    return run
  } finally {
    server.kill()
    for (const w of workers) w.kill()
  }
}

function saturation(marks: WorkerMark[], cpu0: CpuSnapshot, cpu1: CpuSnapshot) {
  const acked = marks.reduce((n, m) => n + m.acked, 0)
  const gw = cpuDelta(cpu0, cpu1)
  return {
    acked,
    readingsPerSecond: marks.reduce((r, m) => r + m.acked / (m.elapsedMs / 1000), 0),
    durationS: marks.reduce((s, m) => s + m.elapsedMs, 0) / marks.length / 1000,
    latency: LatencyHistogram.from(marks.map((m) => m.latency)).summary(),
    gatewayCpuUsPerReading: acked ? (gw.cpuMs * 1000) / acked : Number.NaN,
    gatewayLoopUtilisation: gw.loopUtilisation,
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}

// ---------------------------------------------------------------- report

function report(opts: Options, drain: DrainResult | undefined, runs: IngestRun[]): { lines: string[]; ratio: number | undefined } {
  const out: string[] = []
  if (drain) {
    const d = drain
    out.push('', 'Drain: a backlog in the journal into a new bucket')
    out.push(`backlog:          ${int(d.readings)} readings = ${int(d.readings)} points (one line each) with ${int(d.fieldValues)} field values; six types, ${opts.devices} devices; inserted in ${(d.fillMs / 1000).toFixed(1)} s`)
    out.push(
      `drained:          ${(d.wallMs / 1000).toFixed(2)} s from the start command to backlog 0 (process boot and gateway start-up included, ${(d.gatewayStartupMs / 1000).toFixed(1)} s of it start-up); ` +
        `${d.batches} batches of up to ${int(Number(opts.settings['influx.batchSize'] ?? 5000))} readings, ${int(d.failedBatches)} failed`,
    )
    out.push(
      `rate:             ${int(d.pointsPerSecond)} points/s = ${int(d.fieldValuesPerSecond)} field values/s` +
        (d.steady ? ` (${int(d.steady.points)} points in ${ms(d.steady.ms)} ms, first to last scrape of /metrics)` : ' (over the whole run: it drained before the first scrape)'),
    )
    out.push(
      `CPU:              gateway ${d.gatewayCores.toFixed(2)} cores, ${d.gatewayCpuUsPerPoint.toFixed(1)} µs per point written` +
        (d.victoriaCores === undefined ? '' : `; VictoriaMetrics ${d.victoriaCores.toFixed(2)} cores`) +
        (d.machineBusyCores === undefined ? '' : `; whole machine ${d.machineBusyCores.toFixed(2)} of ${os.cpus().length} cores busy`),
    )
    out.push(
      d.stored
        ? `VictoriaMetrics holds ${int(d.stored.samples)} samples in ${int(d.stored.series)} series (expected ${int(d.fieldValues)}: ${d.stored.samples === d.fieldValues ? 'every field value once' : 'MISMATCH'})`
        : 'VictoriaMetrics samples: not counted',
    )
    out.push(`drain rate: ${int(d.pointsPerSecond)} points/s  (target >= ${int(DRAIN_TARGET_POINTS_PER_S)}/s: ${d.pointsPerSecond >= DRAIN_TARGET_POINTS_PER_S ? 'met' : 'NOT met'})`)
  }
  let ratio: number | undefined
  if (runs.length) {
    out.push('', `Ingest at saturation, writer off and on (${opts.devices} devices, window ${opts.window}, ${opts.warmupS} s warm-up + ${opts.durationS} s, ${opts.rounds} round(s) each, alternating)`)
    for (const r of runs) {
      out.push(
        `  writer ${r.writer.padEnd(3)} round ${r.round}: ${int(r.readingsPerSecond).padStart(7)} readings/s, PUBACK p50 ${ms(r.latency.p50Ms)} / p99 ${ms(r.latency.p99Ms)} ms, ` +
          `gateway ${r.gatewayCpuUsPerReading.toFixed(1)} µs CPU/reading, loop busy ${pct(r.gatewayLoopUtilisation)}` +
          (r.writtenPerSecond !== undefined ? `; written to InfluxDB ${int(r.writtenPerSecond)}/s, backlog ${int(r.backlogAtEnd!)} at the end, VictoriaMetrics ${r.victoriaCores!.toFixed(2)} cores` : '') +
          (r.otherCores !== undefined ? `; other processes ${r.otherCores.toFixed(2)} cores` : '') +
          (r.errors ? `; ${r.errors} client errors` : ''),
      )
    }
    const noisy = runs.filter((r) => (r.otherCores ?? 0) > NOISY_OTHER_CORES)
    if (noisy.length) {
      out.push(`  note: other processes used more than ${NOISY_OTHER_CORES} cores in ${noisy.length} of ${runs.length} windows; the ratio is unreliable, compare CPU µs per reading or run again`)
    }
    const off = runs.filter((r) => r.writer === 'off').map((r) => r.readingsPerSecond)
    const on = runs.filter((r) => r.writer === 'on').map((r) => r.readingsPerSecond)
    if (off.length && on.length) {
      ratio = median(on) / median(off)
      out.push(`median: writer off ${int(median(off))} readings/s, writer on ${int(median(on))} readings/s`)
      const cpuOff = median(runs.filter((r) => r.writer === 'off').map((r) => r.gatewayCpuUsPerReading))
      const cpuOn = median(runs.filter((r) => r.writer === 'on').map((r) => r.gatewayCpuUsPerReading))
      out.push(`gateway CPU per reading, writer on / off: ${(cpuOn / cpuOff).toFixed(2)}x (median ${cpuOn.toFixed(1)} vs ${cpuOff.toFixed(1)} µs; with the event loop the bottleneck, about ${pct(cpuOff / cpuOn)} of the throughput)`)
      out.push(`ingest with the writer on / off: ${pct(ratio)}  (target >= ${pct(INGEST_RATIO_TARGET)}: ${ratio >= INGEST_RATIO_TARGET ? 'met' : 'NOT met'})`)
    }
  }
  return { lines: out, ratio }
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const opts = options()
  const root = mkdtempSync(path.join(os.tmpdir(), 'rpm-bench-timeseries-'))
  const machine = machineInfo(root)
  const print = (line = '') => process.stdout.write(line + '\n')
  print('rpm-gateway time-series benchmark')
  for (const line of machineLines(machine, root)) print(line)
  print(`InfluxDB: VictoriaMetrics (${'/usr/bin/victoria-metrics'}) on /api/v2/write, a fresh server for each part${opts.quick ? '; --quick' : ''}`)
  const notes = Object.entries(opts.settings).map(([k, v]) => `${k}=${v}`)
  if (notes.length) print(`gateway settings: ${notes.join(', ')}`)

  let drain: DrainResult | undefined
  const runs: IngestRun[] = []
  const t0 = performance.now()
  try {
    const files = await ensureDevelopmentPki(path.join(root, 'pki'), serverNames())
    const tls = { cert: files.certPath, key: files.keyPath, ca: files.caCertPath }
    if (opts.only.includes('drain')) drain = await runDrain(opts, root, tls)
    if (opts.only.includes('ingest')) {
      const vm = await Victoria.start()
      try {
        for (let round = 1; round <= opts.rounds; round++) {
          // Alternate which goes first, so a machine that warms up or slows down favours neither.
          const order: Array<'off' | 'on'> = round % 2 ? ['off', 'on'] : ['on', 'off']
          for (const writer of order) runs.push(await runIngest(writer, round, opts, root, tls, vm))
        }
      } finally {
        await vm.close()
      }
    }
  } finally {
    rmSync(root, { recursive: true, force: true })
  }

  const { lines, ratio } = report(opts, drain, runs)
  for (const line of lines) print(line)
  print()
  print(`whole run: ${((performance.now() - t0) / 1000).toFixed(0)} s`)

  mkdirSync(RESULTS_DIR, { recursive: true })
  const file = path.join(RESULTS_DIR, 'timeseries-latest.json')
  writeFileSync(
    file,
    JSON.stringify(
      {
        at: new Date().toISOString(),
        command: `node --import tsx bench/timeseries.ts ${process.argv.slice(2).join(' ')}`.trim(),
        machine,
        options: opts,
        drain: drain ?? null,
        ingest: runs,
        targets: {
          drainPointsPerSecond: { value: drain?.pointsPerSecond ?? null, target: DRAIN_TARGET_POINTS_PER_S, met: drain ? drain.pointsPerSecond >= DRAIN_TARGET_POINTS_PER_S : null },
          ingestRatio: { value: ratio ?? null, target: INGEST_RATIO_TARGET, met: ratio === undefined ? null : ratio >= INGEST_RATIO_TARGET },
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
  process.stderr.write(`bench:timeseries failed: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
