/**
 * Ingest throughput and PUBACK latency over MQTT/TLS: the gateway against a bare aedes broker and
 * against Mosquitto (Debian's package) under the same load, in one run.
 *
 *   npm run bench:ingest [-- --devices 1000 --duration 10 --workers 3 --window 3 --rate 2000]
 *   npm run bench:ingest -- --quick          3 s phases, for a smoke run
 *
 * Each broker runs in its own process and gets the same load: --devices devices over MQTT
 * 3.1.1/TLS from --workers load-generator processes (mqtt.js), first at saturation (each device
 * keeps --window QoS1 publishes unacknowledged), then at --rate readings/s open loop. Mosquitto
 * is installed with apt-get when missing and started on a free loopback port with a generated
 * configuration (bench/mosquitto.ts): persistence off, so it acknowledges QoS1 from memory.
 * The gateway's devices are provisioned in bulk (--provision bulk: one transaction, a cheap
 * shared secret hash) or one by one through the registry (--provision registry, scrypt per device).
 *
 * Diagnostics: --only bare|gateway|mosquitto (comma-separated), --profile (V8 CPU profile of the gateway process, summarised
 * by where the time goes), --synchronous NORMAL|OFF (journal sync mode, to isolate fsync),
 * --set ingest.commitIntervalMs=5 (any gateway config key; repeatable; JSON for lists, e.g. threads.readingKinds=[]).
 * Each option also reads from the environment: BENCH_DEVICES, BENCH_DURATION, BENCH_WORKERS, ...
 *
 * Prints figures and writes them to bench/results/ingest-latest.json; never fails on a time.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { ensureDevelopmentPki, serverNames } from '../src/broker/pki.ts'
import { profileLines, summariseProfile, type ProfileSummary } from './cpu-profile.ts'
import { journalFigures, journalLines, scrape, type JournalFigures, type Scrape } from './gateway-metrics.ts'
import { benchArgs, forkChild, int, lpad, machineCpu, machineInfo, machineLines, ms, newestProfile, pad, pct, Peer, RESULTS_DIR, numberOption } from './harness.ts'
import { LatencyHistogram, type LatencySummary } from './histogram.ts'
import { cpuDelta, cpuSnapshot } from './process-stats.ts'
import { ensureMosquitto } from './mosquitto.ts'
import type { BenchDevice, BrokerTarget, CpuSnapshot, FromServer, FromWorker, ServerStart, ToServer, ToWorker, WorkerMark } from './protocol.ts'

const PUBACK_P99_TARGET_MS = 25
const THROUGHPUT_RATIO_TARGET = 0.8
/** Other processes' CPU, in cores, above which a saturation figure is flagged as disturbed. */
const NOISY_OTHER_CORES = 0.25

type Target = BrokerTarget
const TARGETS: readonly Target[] = ['bare', 'gateway', 'mosquitto']
const LABEL: Record<Target, string> = { bare: 'bare aedes (no hooks)', gateway: 'rpm-gateway', mosquitto: 'mosquitto (in memory)' }
/** The gateway within this factor of Mosquitto's throughput. */
const MOSQUITTO_FACTOR_TARGET = 2

// ---------------------------------------------------------------- options

interface Options {
  devices: number
  workers: number
  /** Unacknowledged QoS1 publishes each device keeps open in the saturation phase. */
  window: number
  warmupS: number
  durationS: number
  ratePerSecond: number
  fixedWarmupS: number
  fixedDurationS: number
  quick: boolean
  only: Target[]
  provision: 'bulk' | 'registry'
  profile: boolean
  synchronous: 'FULL' | 'NORMAL' | 'OFF' | undefined
  settings: Record<string, string | number | boolean>
}

function options(): Options {
  const { values, quick, profile, settings } = benchArgs(fileURLToPath(import.meta.url), ['devices', 'duration', 'workers', 'window', 'rate', 'only', 'synchronous', 'provision'])
  const env = process.env
  const num = numberOption
  const durationS = num(values.duration, 'DURATION', quick ? 3 : 10, 1)
  const only = (values.only ?? env.BENCH_ONLY ?? TARGETS.join(',')).split(',').map((s) => s.trim())
  for (const t of only) if (!TARGETS.includes(t as Target)) throw new Error(`--only takes ${TARGETS.join(', ')} (comma-separated), got "${t}"`)
  const provision = values.provision ?? env.BENCH_PROVISION ?? 'bulk'
  if (provision !== 'bulk' && provision !== 'registry') throw new Error('--provision takes bulk or registry')
  const sync = (values.synchronous ?? env.BENCH_SYNCHRONOUS)?.toUpperCase()
  if (sync !== undefined && !['FULL', 'NORMAL', 'OFF'].includes(sync)) throw new Error('--synchronous takes FULL, NORMAL or OFF')
  return {
    devices: Math.floor(num(values.devices, 'DEVICES', 1000, 1)),
    workers: Math.floor(num(values.workers, 'WORKERS', 3, 1)),
    window: Math.floor(num(values.window, 'WINDOW', 3, 1)),
    warmupS: quick ? 1 : 2,
    durationS,
    ratePerSecond: num(values.rate, 'RATE', 2000, 1),
    fixedWarmupS: quick ? 0.5 : 1,
    fixedDurationS: durationS,
    quick,
    only: only as Target[],
    provision,
    profile,
    synchronous: sync as Options['synchronous'],
    settings,
  }
}

// ---------------------------------------------------------------- child processes

type ServerPeer = Peer<ToServer, FromServer>
type WorkerPeer = Peer<ToWorker, FromWorker>

// ---------------------------------------------------------------- one broker under load

interface SaturationResult {
  durationS: number
  acked: number
  readingsPerSecond: number
  latency: LatencySummary
  serverCpuMs: number
  serverCpuUsPerReading: number
  serverLoopUtilisation: number
  loadCpuUsPerReading: number
  /** CPU used by the load processes, in cores, in all and by each. */
  loadCores: number
  workerCores: number[]
  /** CPU used by the broker process, in cores. */
  serverCores: number
  /** What limited throughput, as far as the CPU figures tell (see bottleneckOf). */
  bottleneck: Bottleneck
  /** CPU used on the machine by processes other than this benchmark, in cores. */
  otherCores: number | undefined
}

interface FixedResult {
  targetRate: number
  achievedRate: number
  sent: number
  acked: number
  unacked: number
  latency: LatencySummary
  maxScheduleLagMs: number
  serverCpuUsPerReading: number
  serverLoopUtilisation: number
}

/**
 * broker: its process used about a core (a single event loop or thread: mosquitto and aedes are
 * single-threaded), or its event loop was busy (the gateway's includes waiting for fsync) while
 * the machine had cores to spare; machine: the cores were all busy (broker, load generators and
 * anything else) and the broker used less than a core, so the figure is a lower bound of what
 * the broker can do; load: neither, so the load generators' window limited it.
 */
type Bottleneck = 'broker' | 'machine' | 'load'

interface TargetResult {
  target: Target
  label: string
  /** mosquitto: its version and generated configuration. */
  broker?: { version: string; pid: number; config: string }
  startupMs: number
  connectMs: number
  saturation: SaturationResult
  fixed: FixedResult
  /** From the gateway's /metrics, over the saturation and the fixed-rate windows. */
  journal?: { saturation: JournalFigures; fixed: JournalFigures }
  totals: { acked: number; errors: number; storedReadings?: number; quarantined?: number }
  /** Gateway CPU profile summaries (with --profile) for the saturation and fixed-rate windows. */
  profile?: { saturation: ProfileSummary; fixed: ProfileSummary }
}

function log(line: string): void {
  process.stderr.write(`  · ${line}\n`)
}

async function runTarget(target: Target, opts: Options, tlsFiles: ServerStart['tls'], dataDir: string, profileDir: string): Promise<TargetResult> {
  const profiling = opts.profile && target === 'gateway'
  const server: ServerPeer = new Peer(`${target} broker`, forkChild('ingest-server.ts', profiling ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : []))
  const workers: WorkerPeer[] = []
  let mosquittoPid: number | undefined
  try {
    const start: ServerStart = {
      cmd: 'start',
      target,
      devices: opts.devices,
      tls: tlsFiles,
      dataDir,
      settings: opts.settings,
      ...(opts.synchronous ? { synchronous: opts.synchronous } : {}),
      // One transaction of inserts and one cheap shared secret hash, instead of a scrypt hash per device.
      ...(target === 'gateway' && opts.provision === 'bulk' ? { population: { patients: opts.devices, probes: 0 } } : {}),
    }
    const ready = await server.request(start, 'ready', 600_000)
    mosquittoPid = ready.broker?.pid
    log(`${LABEL[target]}: up in ${(ready.startupMs / 1000).toFixed(1)} s on port ${ready.port}${ready.broker ? ` (mosquitto ${ready.broker.version}, pid ${ready.broker.pid})` : ''}`)

    for (let i = 0; i < opts.workers; i++) workers.push(new Peer(`load worker ${i + 1}`, forkChild('load-worker.ts')))
    const ca = readFileSync(tlsFiles.ca, 'utf8')
    const shares: BenchDevice[][] = workers.map(() => [])
    ready.devices.forEach((d, i) => shares[i % workers.length]!.push(d))
    const t0 = performance.now()
    await Promise.all(
      workers.map((w, i) =>
        w.request({ cmd: 'connect', url: `mqtts://127.0.0.1:${ready.port}`, ca, devices: shares[i]!, concurrency: 16 }, 'connected', 300_000),
      ),
    )
    const connectMs = performance.now() - t0
    log(`${opts.devices} devices connected in ${(connectMs / 1000).toFixed(1)} s`)
    await sleep(500)

    // -- saturation: every device keeps `window` QoS1 publishes unacknowledged.
    const markAll = async () => {
      const [marks, cpu, scraped] = await Promise.all([
        Promise.all(workers.map((w) => w.request({ cmd: 'mark' }, 'mark'))),
        server.request({ cmd: 'cpu' }, 'cpu'),
        scrape(ready.metricsUrl),
      ])
      return { marks, cpu: cpu.cpu, scraped, machine: machineCpu(), self: cpuSnapshot() }
    }
    log(`saturation: window ${opts.window} per device, ${opts.warmupS} s warm-up + ${opts.durationS} s`)
    for (const w of workers) w.send({ cmd: 'saturate', window: opts.window })
    await sleep(opts.warmupS * 1000)
    const before = await markAll()
    await sleep(opts.durationS * 1000)
    const after = await markAll()
    await Promise.all(workers.map((w) => w.request({ cmd: 'stop' }, 'stopped', 30_000)))
    const saturation = saturationFigures(before, after)
    log(`saturation: ${Math.round(saturation.readingsPerSecond).toLocaleString('en-US')} readings/s`)

    // -- fixed rate, open loop, spread over all devices.
    await sleep(1000)
    log(`fixed rate: ${opts.ratePerSecond} readings/s, ${opts.fixedWarmupS} s warm-up + ${opts.fixedDurationS} s`)
    const fixedRuns = Promise.all(
      workers.map((w) =>
        w.request(
          { cmd: 'fixed', ratePerSecond: opts.ratePerSecond / workers.length, warmupMs: opts.fixedWarmupS * 1000, durationMs: opts.fixedDurationS * 1000 },
          'fixed',
          (opts.fixedWarmupS + opts.fixedDurationS) * 1000 + 60_000,
        ),
      ),
    )
    await sleep(opts.fixedWarmupS * 1000)
    const [{ cpu: cpu0 }, scraped0] = await Promise.all([server.request({ cmd: 'cpu' }, 'cpu'), scrape(ready.metricsUrl)])
    const fixedReplies = await fixedRuns
    const [{ cpu: cpu1 }, scraped1] = await Promise.all([server.request({ cmd: 'cpu' }, 'cpu'), scrape(ready.metricsUrl)])
    const fixed = fixedFigures(opts, fixedReplies, cpu0, cpu1)

    const closed = await Promise.all(workers.map((w) => w.request({ cmd: 'close' }, 'closed', 60_000)))
    const stopped = await server.request({ cmd: 'stop' }, 'stopped', 60_000)
    // Children exit on their own once closed; do not let a stray handle hold the run.
    await Promise.race([Promise.all([server.exited, ...workers.map((w) => w.exited)]), sleep(10_000)])

    const result: TargetResult = {
      target,
      label: LABEL[target],
      ...(ready.broker ? { broker: ready.broker } : {}),
      startupMs: ready.startupMs,
      connectMs,
      saturation,
      fixed,
      totals: {
        acked: closed.reduce((n, c) => n + c.totalAcked, 0),
        errors: closed.reduce((n, c) => n + c.errors, 0),
        ...(stopped.type === 'stopped' && stopped.storedReadings !== undefined
          ? { storedReadings: stopped.storedReadings, quarantined: stopped.quarantined ?? 0 }
          : {}),
      },
    }
    if (before.scraped && after.scraped && scraped0 && scraped1) {
      result.journal = { saturation: journalFigures(before.scraped, after.scraped), fixed: journalFigures(scraped0, scraped1) }
    }
    if (profiling) {
      const file = newestProfile(profileDir)
      if (file) {
        result.profile = {
          saturation: summariseProfile(file, before.cpu.monotonicUs, after.cpu.monotonicUs),
          fixed: summariseProfile(file, cpu0.monotonicUs, cpu1.monotonicUs),
        }
      }
    }
    return result
  } finally {
    server.kill()
    for (const w of workers) w.kill()
    // Killed on an error, the broker process leaves its mosquitto child behind: stop that too.
    if (mosquittoPid !== undefined && isMosquitto(mosquittoPid)) process.kill(mosquittoPid, 'SIGKILL')
  }
}

function isMosquitto(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'mosquitto'
  } catch {
    return false
  }
}

type Marked = { marks: WorkerMark[]; cpu: CpuSnapshot; scraped: Scrape | undefined; machine: ReturnType<typeof machineCpu>; self: CpuSnapshot }

function saturationFigures(before: Marked, after: Marked): SaturationResult {
  const marks = after.marks
  const acked = marks.reduce((n, m) => n + m.acked, 0)
  const readingsPerSecond = marks.reduce((r, m) => r + m.acked / (m.elapsedMs / 1000), 0)
  const durationS = marks.reduce((s, m) => s + m.elapsedMs, 0) / marks.length / 1000
  const server = cpuDelta(before.cpu, after.cpu)
  const workerCpuMs = marks.map((m, i) => cpuDelta(before.marks[i]!.cpu, m.cpu).cpuMs)
  const loadCpuMs = workerCpuMs.reduce((a, b) => a + b, 0)
  let otherCores: number | undefined
  let machineBusyCores: number | undefined
  if (before.machine && after.machine) {
    const ours = server.cpuMs + loadCpuMs + cpuDelta(before.self, after.self).cpuMs
    machineBusyCores = (after.machine.busyMs - before.machine.busyMs) / (durationS * 1000)
    otherCores = Math.max(0, (after.machine.busyMs - before.machine.busyMs - ours) / (durationS * 1000))
  }
  const serverCores = server.cpuMs / 1000 / durationS
  return {
    durationS,
    acked,
    readingsPerSecond,
    latency: LatencyHistogram.from(marks.map((m) => m.latency)).summary(),
    serverCpuMs: server.cpuMs,
    serverCpuUsPerReading: acked ? (server.cpuMs * 1000) / acked : Number.NaN,
    serverLoopUtilisation: server.loopUtilisation,
    loadCpuUsPerReading: acked ? (loadCpuMs * 1000) / acked : Number.NaN,
    loadCores: loadCpuMs / 1000 / durationS,
    workerCores: workerCpuMs.map((ms) => ms / 1000 / durationS),
    serverCores,
    bottleneck: bottleneckOf(serverCores, server.loopUtilisation, machineBusyCores ?? serverCores + loadCpuMs / 1000 / durationS),
    otherCores,
  }
}

function bottleneckOf(serverCores: number, loopUtilisation: number, machineBusyCores: number): Bottleneck {
  const machineFull = machineBusyCores >= os.cpus().length * 0.9
  if (serverCores >= 0.9) return 'broker'
  // A busy event loop that gets little CPU is waiting: for the disk (the gateway's fsync) when
  // the machine has cores to spare, for a core when it has none.
  if (loopUtilisation >= 0.9 && !machineFull) return 'broker'
  if (machineFull) return 'machine'
  return 'load'
}

function fixedFigures(opts: Options, replies: Array<Extract<FromWorker, { type: 'fixed' }>>, cpu0: CpuSnapshot, cpu1: CpuSnapshot): FixedResult {
  const sent = replies.reduce((n, r) => n + r.sent, 0)
  const acked = replies.reduce((n, r) => n + r.acked, 0)
  const server = cpuDelta(cpu0, cpu1)
  return {
    targetRate: opts.ratePerSecond,
    achievedRate: replies.reduce((r, f) => r + f.acked / (f.elapsedMs / 1000), 0),
    sent,
    acked,
    unacked: replies.reduce((n, r) => n + r.unacked, 0),
    latency: LatencyHistogram.from(replies.map((r) => r.latency)).summary(),
    maxScheduleLagMs: Math.max(...replies.map((r) => r.maxScheduleLagMs)),
    // From the end of the warm-up to the last PUBACK: the measured readings only.
    serverCpuUsPerReading: acked ? (server.cpuMs * 1000) / acked : Number.NaN,
    serverLoopUtilisation: server.loopUtilisation,
  }
}

// ---------------------------------------------------------------- report

function report(opts: Options, results: TargetResult[]): string[] {
  const out: string[] = []
  out.push('', 'Results')
  const head = [
    pad('broker', 22),
    lpad('readings/s', 11),
    lpad('CPU µs/rdg', 11),
    lpad('cores', 6),
    lpad('load cores', 11),
    lpad('limit', 8),
    lpad('sat. p50/p99 ms', 17),
    lpad(`@${int(opts.ratePerSecond)}/s p50 / p90 / p99 / max ms`, 34),
  ]
  out.push(head.join('  '))
  out.push('-'.repeat(head.join('  ').length))
  for (const r of results) {
    const s = r.saturation
    const f = r.fixed.latency
    out.push(
      [
        pad(r.label, 22),
        lpad(int(s.readingsPerSecond), 11),
        lpad(s.serverCpuUsPerReading.toFixed(1), 11),
        lpad(s.serverCores.toFixed(2), 6),
        lpad(s.loadCores.toFixed(2), 11),
        lpad(s.bottleneck, 8),
        lpad(`${ms(s.latency.p50Ms)} / ${ms(s.latency.p99Ms)}`, 17),
        lpad(`${ms(f.p50Ms)} / ${ms(f.p90Ms)} / ${ms(f.p99Ms)} / ${ms(f.maxMs)}`, 34),
      ].join('  '),
    )
  }
  out.push('')
  out.push('readings/s: acknowledged QoS1 readings per second at saturation; CPU µs/rdg: broker process CPU (user+system)')
  out.push('per acknowledged reading (mosquitto: its process, from /proc/<pid>/stat); cores: broker CPU in cores; load cores: the')
  out.push(`${opts.workers} load-generator processes' CPU; limit: broker = the broker used a whole core (it is single-threaded),`)
  out.push('machine = every core was busy while the broker had time to spare (the figure is a lower bound for that broker),')
  out.push('load = neither; sat.: PUBACK latency at saturation. Mosquitto acknowledges QoS1 from memory (persistence off,')
  out.push('no write or fsync per message); the gateway acknowledges after its journal commit (SQLite, synchronous=FULL).')

  const bare = results.find((r) => r.target === 'bare')
  const gw = results.find((r) => r.target === 'gateway')
  const mq = results.find((r) => r.target === 'mosquitto')
  out.push('')
  const noisy = results.filter((r) => (r.saturation.otherCores ?? 0) > NOISY_OTHER_CORES)
  for (const r of noisy) {
    out.push(
      `note: other processes used ${r.saturation.otherCores!.toFixed(2)} cores during the ${r.label} saturation window; ` +
        'throughput ratios are unreliable, compare CPU µs per reading or run again',
    )
  }
  for (const r of results.filter((x) => x.saturation.bottleneck !== 'broker')) {
    out.push(
      `note: ${r.label} used ${r.saturation.serverCores.toFixed(2)} cores at saturation while the load generators used ${r.saturation.loadCores.toFixed(2)} ` +
        `(${r.saturation.workerCores.map((c) => c.toFixed(2)).join(' + ')}): ${r.saturation.bottleneck === 'machine' ? 'the machine\'s cores' : 'the load'}, not the broker, ` +
        `limited it; its readings/s is a lower bound, its CPU per reading is the fairer figure`,
    )
  }
  if (bare && gw) {
    const ratio = gw.saturation.readingsPerSecond / bare.saturation.readingsPerSecond
    out.push(`gateway / bare aedes throughput: ${pct(ratio)}  (target >= ${pct(THROUGHPUT_RATIO_TARGET)}: ${ratio >= THROUGHPUT_RATIO_TARGET ? 'met' : 'NOT met'})`)
    const cpuRatio = gw.saturation.serverCpuUsPerReading / bare.saturation.serverCpuUsPerReading
    out.push(`broker CPU per reading, gateway / bare aedes: ${cpuRatio.toFixed(2)}x (${gw.saturation.serverCpuUsPerReading.toFixed(1)} vs ${bare.saturation.serverCpuUsPerReading.toFixed(1)} µs)`)
  }
  if (mq && gw) {
    const factor = mq.saturation.readingsPerSecond / gw.saturation.readingsPerSecond
    out.push(
      `mosquitto / gateway throughput: ${factor.toFixed(2)}x  (target: gateway within ${MOSQUITTO_FACTOR_TARGET}x of mosquitto: ${factor <= MOSQUITTO_FACTOR_TARGET ? 'met' : 'NOT met'}` +
        `${mq.saturation.bottleneck !== 'broker' ? '; mosquitto was not the limit, so the true factor is larger' : ''})`,
    )
    const cpuRatio = gw.saturation.serverCpuUsPerReading / mq.saturation.serverCpuUsPerReading
    out.push(`broker CPU per reading, gateway / mosquitto: ${cpuRatio.toFixed(2)}x (${gw.saturation.serverCpuUsPerReading.toFixed(1)} vs ${mq.saturation.serverCpuUsPerReading.toFixed(1)} µs)`)
  }
  if (gw) {
    const p99 = gw.fixed.latency.p99Ms
    out.push(`gateway PUBACK p99 at ${int(opts.ratePerSecond)} readings/s: ${ms(p99)} ms  (target < ${PUBACK_P99_TARGET_MS} ms: ${p99 < PUBACK_P99_TARGET_MS ? 'met' : 'NOT met'})`)
  }

  out.push('', 'Details')
  for (const r of results) {
    const s = r.saturation
    const f = r.fixed
    out.push(`${r.label}:`)
    out.push(`  start-up ${(r.startupMs / 1000).toFixed(1)} s, ${opts.devices} devices connected in ${(r.connectMs / 1000).toFixed(1)} s`)
    out.push(
      `  saturation: ${int(s.acked)} readings acknowledged in ${s.durationS.toFixed(1)} s; broker CPU ${int(s.serverCpuMs)} ms` +
        ` (${(s.serverCpuMs / 1000 / s.durationS).toFixed(2)} cores); load generators ${s.loadCpuUsPerReading.toFixed(1)} µs CPU/reading` +
        ` (${s.loadCores.toFixed(2)} cores: ${s.workerCores.map((c) => c.toFixed(2)).join(' + ')})` +
        (s.otherCores === undefined ? '' : `; other processes on the machine: ${s.otherCores.toFixed(2)} cores`),
    )
    out.push(`  saturation PUBACK latency ms: p50 ${ms(s.latency.p50Ms)}, p90 ${ms(s.latency.p90Ms)}, p99 ${ms(s.latency.p99Ms)}, max ${ms(s.latency.maxMs)}`)
    out.push(
      `  fixed rate: ${int(f.achievedRate)}/s achieved of ${int(f.targetRate)}/s (${int(f.acked)}/${int(f.sent)} acknowledged, ${f.unacked} unacknowledged);` +
        ` broker CPU ${f.serverCpuUsPerReading.toFixed(1)} µs/reading, loop busy ${pct(f.serverLoopUtilisation)}; sender max lag ${ms(f.maxScheduleLagMs)} ms`,
    )
    out.push(`  fixed-rate PUBACK latency ms: p50 ${ms(f.latency.p50Ms)}, p90 ${ms(f.latency.p90Ms)}, p99 ${ms(f.latency.p99Ms)}, p99.9 ${ms(f.latency.p999Ms)}, max ${ms(f.latency.maxMs)} (n=${int(f.latency.count)})`)
    if (r.journal) {
      for (const [j, window] of [[r.journal.saturation, 'saturation'], [r.journal.fixed, `${int(opts.ratePerSecond)}/s`]] as const) {
        out.push(...journalLines(j, window))
      }
    }
    const t = r.totals
    out.push(
      `  whole run: ${int(t.acked)} PUBACKs received, ${t.errors} client errors` +
        (t.storedReadings === undefined ? '' : `; journal holds ${int(t.storedReadings)} readings, ${t.quarantined} quarantined`),
    )
    if (r.profile) {
      out.push(...profileLines(r.profile.saturation, 'the saturation window', r.saturation.acked))
      out.push(...profileLines(r.profile.fixed, `the ${int(opts.ratePerSecond)} readings/s window`, r.fixed.acked))
    }
  }
  return out
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const opts = options()
  const root = mkdtempSync(path.join(os.tmpdir(), 'rpm-bench-'))
  const machine = machineInfo(root)
  const print = (line = '') => process.stdout.write(line + '\n')
  print('rpm-gateway ingest benchmark')
  for (const line of machineLines(machine, root)) print(line)
  print(
    `load: ${int(opts.devices)} devices over MQTT 3.1.1/TLS (mqtt.js) in ${opts.workers} load processes; one reading per QoS1 PUBLISH, ` +
      `mixed types and units; the same ECDSA P-256 server certificate for every broker`,
  )
  print(`brokers: ${opts.only.map((t) => LABEL[t]).join(', ')}, one after the other, each in its own process`)
  print(
    `phases: saturation with ${opts.window} unacknowledged publishes per device, ${opts.warmupS} s warm-up + ${opts.durationS} s measured; ` +
      `then ${int(opts.ratePerSecond)} readings/s open loop, ${opts.fixedWarmupS} s warm-up + ${opts.fixedDurationS} s measured` +
      (opts.quick ? ' (--quick)' : ''),
  )
  const gwNotes = [
    ...(opts.synchronous ? [`journal synchronous=${opts.synchronous} (diagnostic; the product uses FULL)`] : []),
    ...Object.entries(opts.settings).map(([k, v]) => `${k}=${v}`),
  ]
  if (opts.only.includes('gateway')) {
    print(
      `gateway: validation, unit normalisation, journal (SQLite WAL, synchronous=FULL, group commit) with the clinical rules and a thread ` +
        `message per reading in the commit, before the PUBACK; the journal is the time-series outbox (the InfluxDB writer is off here: bench:timeseries ` +
        `measures it); devices provisioned ${opts.provision === 'bulk' ? 'in bulk (one transaction)' : 'through the registry'}` +
        (gwNotes.length ? `; settings: ${gwNotes.join(', ')}` : ''),
    )
  }
  if (opts.only.includes('mosquitto')) {
    try {
      const m = ensureMosquitto((line) => print(line))
      print(
        `mosquitto ${m.version} (${m.binary}): generated config, TLS listener on a free loopback port, anonymous logins, persistence off ` +
          `(QoS1 acknowledged from memory, no per-message fsync), max_inflight_messages/max_queued_messages unlimited`,
      )
    } catch (err) {
      print(`mosquitto left out: ${(err as Error).message}`)
      opts.only = opts.only.filter((t) => t !== 'mosquitto')
    }
  }
  print()

  const files = await ensureDevelopmentPki(path.join(root, 'pki'), serverNames())
  const tlsFiles = { cert: files.certPath, key: files.keyPath, ca: files.caCertPath }
  const profileDir = path.join(RESULTS_DIR, 'profiles')
  if (opts.profile) mkdirSync(profileDir, { recursive: true })

  const results: TargetResult[] = []
  try {
    for (const target of opts.only) {
      results.push(await runTarget(target, opts, tlsFiles, path.join(root, target), profileDir))
    }
  } finally {
    rmSync(root, { recursive: true, force: true })
  }

  for (const line of report(opts, results)) print(line)

  mkdirSync(RESULTS_DIR, { recursive: true })
  const file = path.join(RESULTS_DIR, 'ingest-latest.json')
  const bare = results.find((r) => r.target === 'bare')
  const gw = results.find((r) => r.target === 'gateway')
  const mq = results.find((r) => r.target === 'mosquitto')
  const ratio = bare && gw ? gw.saturation.readingsPerSecond / bare.saturation.readingsPerSecond : undefined
  const factor = mq && gw ? mq.saturation.readingsPerSecond / gw.saturation.readingsPerSecond : undefined
  writeFileSync(
    file,
    JSON.stringify(
      {
        at: new Date().toISOString(),
        command: `node --import tsx bench/ingest.ts ${process.argv.slice(2).join(' ')}`.trim(),
        machine,
        options: opts,
        results,
        targets: {
          throughputRatio: { value: ratio ?? null, target: THROUGHPUT_RATIO_TARGET, met: ratio === undefined ? null : ratio >= THROUGHPUT_RATIO_TARGET },
          /** Mosquitto's readings/s over the gateway's: at most MOSQUITTO_FACTOR_TARGET. */
          mosquittoFactor: {
            value: factor ?? null,
            target: MOSQUITTO_FACTOR_TARGET,
            met: factor === undefined ? null : factor <= MOSQUITTO_FACTOR_TARGET,
            mosquittoWasTheLimit: mq ? mq.saturation.bottleneck === 'broker' : null,
          },
          pubackP99Ms: {
            value: gw?.fixed.latency.p99Ms ?? null,
            target: PUBACK_P99_TARGET_MS,
            atReadingsPerSecond: opts.ratePerSecond,
            met: gw ? gw.fixed.latency.p99Ms < PUBACK_P99_TARGET_MS : null,
          },
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
  process.stderr.write(`bench:ingest failed: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
