/**
 * Every benchmark in one bounded run: ingest (the gateway, bare aedes and Mosquitto), alert
 * latency, connections (reconnect storm and idle memory), chat fan-out and the time-series drain,
 * one after the other, each in its own process. Prints one summary with the targets, and writes
 * docs/benchmarks.md: the machine, how to reproduce, the tables, notes on method, the figures.
 *
 *   npm run bench                      about 10 minutes; writes docs/benchmarks.md
 *   npm run bench -- --quick           a smoke run, about 3-4 minutes; writes bench/results/benchmarks-quick.md
 *   npm run bench -- --only ingest,connections      some of them (writes bench/results/benchmarks-partial.md)
 *   npm run bench -- --docs FILE       where to write the report instead
 *   npm run bench -- --from-results    no runs: the report from the figures already in bench/results/
 *   npm run bench -- --profile         also profile the gateway (ingest, connections) and report where its time goes;
 *                                      the profiler costs the gateway some CPU, so its figures come out a little lower
 *
 * Needs Debian's mosquitto (bench/ingest.ts installs it with apt-get when missing) and
 * victoria-metrics (installed here the same way when missing; bench/timeseries.ts needs it).
 * Each benchmark's own figures land in bench/results/<name>-latest.json and its output in
 * bench/results/bench-all.log. Never fails on a figure: the exit code is 1 only when a
 * benchmark crashed or overran its time limit.
 */
import { spawn, spawnSync } from 'node:child_process'
import { createWriteStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { BENCH_DIR, fileSystemOf, int, ms, pct, RESULTS_DIR, usageOf } from './harness.ts'

const ROOT = path.dirname(BENCH_DIR)
const NAMES = ['ingest', 'alerts', 'connections', 'chat', 'timeseries'] as const
type Name = (typeof NAMES)[number]

interface Spec {
  name: Name
  title: string
  /** Extra arguments for a full run and for --quick. */
  full: string[]
  quick: string[]
  /** Time limit, s, for a full run (a quick run gets half). */
  limitS: number
}

const SPECS: Spec[] = [
  // --quick with 500 devices: connecting 1,000 devices to each of the three brokers is most of a quick run.
  { name: 'ingest', title: 'Ingest: gateway vs bare aedes vs Mosquitto', full: [], quick: ['--quick', '--devices', '500'], limitS: 420 },
  // 45 s measured (300 crises) instead of 60 keeps the whole run near ten minutes.
  { name: 'alerts', title: 'Alert latency under load', full: ['--seconds', '45'], quick: ['--quick'], limitS: 360 },
  { name: 'connections', title: 'Connections: reconnect storm and idle memory', full: [], quick: ['--quick'], limitS: 600 },
  { name: 'chat', title: 'Chat fan-out', full: [], quick: ['--quick'], limitS: 300 },
  { name: 'timeseries', title: 'Time-series drain', full: [], quick: ['--quick'], limitS: 360 },
]

// ---------------------------------------------------------------- the JSON each benchmark writes (what is read here)

interface Target {
  value: number | null
  target: number
  met: boolean | null
  [k: string]: unknown
}
interface Latency {
  count: number
  p50Ms: number
  p90Ms: number
  p99Ms: number
  maxMs: number
}
interface Machine {
  cores: number
  cpuModel: string
  node: string
  platform: string
  memoryGiB: number
  loadAverage: number[]
}
interface ProfileShare {
  name: string
  ms: number
  share: number
}
interface ProfileSummary {
  windowMs: number
  categories: ProfileShare[]
  inclusive: ProfileShare[]
}
interface JournalFigures {
  commits: number
  readingsPerCommitMean: number
  commitMsMean: number
  serverPubackMsMean: number
}
interface IngestTarget {
  target: string
  label: string
  journal?: { saturation: JournalFigures; fixed: JournalFigures }
  profile?: { saturation: ProfileSummary; fixed: ProfileSummary }
  saturation: { acked: number; readingsPerSecond: number; serverCpuUsPerReading: number; serverCores: number; loadCores: number; workerCores: number[]; bottleneck: string; latency: Latency; otherCores?: number }
  fixed: { acked: number; achievedRate: number; latency: Latency; serverCpuUsPerReading: number }
  broker?: { version: string }
}
interface IngestJson {
  at: string
  options: { devices: number; workers: number; window: number; durationS: number; ratePerSecond: number; provision: string }
  results: IngestTarget[]
  targets: { throughputRatio: Target; mosquittoFactor: Target & { mosquittoWasTheLimit: boolean | null }; pubackP99Ms: Target }
}
interface AlertsJson {
  at: string
  options: { patients: number; devices: number; ratePerSecond: number; durationS: number; intervalMs: number }
  engine: { readingsPerSecond: number; usPerReading: number } | null
  gateway: {
    alertLatency: Latency
    alertAfterPuback: Latency
    alertsMissing: number
    socketCloses: number[]
    background: { achievedRate: number; pubackLatency: Latency }
    gateway: { cores: number; loopUtilisation: number }
    machine?: { busyCores: number }
  } | null
  targets: { alertP99Ms: Target }
}
interface Storm {
  mode: string
  devices: number
  ok: number
  failed: number
  perSecond: number
  latency: Latency
  gatewayCpuMsPerConnect: number
  clientCpuMsPerConnect: number
  gatewayCores: number
  machineBusyCores?: number
}
interface ConnectionsJson {
  at: string
  options: { devices: number; workers: number; concurrency: number; keepaliveS: number }
  fileDescriptors: { note: string }
  certs: Array<{
    cert: string
    label: string
    tls: Storm
    mqtt: Storm
    clientCert?: Storm
    profile?: { tls: ProfileSummary; mqtt: ProfileSummary }
    idle?: { connected: number; rssBeforeBytes: number; rssWithBytes: number; rssPerConnectionBytes: number; heapPerConnectionBytes: number; rssAfterCloseBytes: number; projectedRssAtTargetBytes: number }
  }>
  productionScrypt: Storm | null
  targets: { idleRssAt10kBytes: Target }
}
interface ChatJson {
  at: string
  result: {
    topology: { threads: number; participants: number; socketsConnected: number }
    sent: { perSecond: number }
    deliveries: { expected: number; received: number; perSecond: number }
    deliveryLatency: Latency
    gateway: { cores: number; cpuUsPerDelivery: number }
    otherCores?: number
  }
  targets: { deliveryP99Ms: Target }
}
interface TimeseriesJson {
  at: string
  options: { readings: number; devices: number }
  drain: { readings: number; pointsPerSecond: number; gatewayCores: number; gatewayCpuUsPerPoint: number } | null
  ingest: Array<{ writer: string; round: number; readingsPerSecond: number; otherCores?: number }>
  targets: { drainPointsPerSecond: Target; ingestRatio: Target }
}

// ---------------------------------------------------------------- running

interface Outcome {
  spec: Spec
  status: 'ok' | 'crashed' | 'timed out' | 'skipped'
  exitCode: number | null
  seconds: number
  json?: unknown
  note?: string
}

function log(line: string): void {
  process.stderr.write(`▸ ${line}\n`)
}

/** The benchmark running now: in a process group of its own, so a time-out or Ctrl-C stops it with its children. */
let current: ReturnType<typeof spawn> | undefined
function stopCurrent(): void {
  if (current?.pid === undefined || current.exitCode !== null) return
  try {
    process.kill(-current.pid, 'SIGKILL')
  } catch {
    current.kill('SIGKILL')
  }
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    stopCurrent()
    process.exit(130)
  })
}

async function runOne(spec: Spec, quick: boolean, profile: boolean, logFile: ReturnType<typeof createWriteStream>): Promise<Outcome> {
  const args = [
    '--import',
    'tsx',
    path.join(BENCH_DIR, `${spec.name}.ts`),
    ...(quick ? spec.quick : spec.full),
    ...(profile && (spec.name === 'ingest' || spec.name === 'connections') ? ['--profile'] : []),
  ]
  const limitS = quick ? spec.limitS / 2 : spec.limitS
  const started = Date.now()
  const t0 = performance.now()
  log(`${spec.title}: node ${args.slice(2).map((a) => path.relative(ROOT, a) || a).join(' ')} (limit ${limitS} s)`)
  logFile.write(`\n===== ${spec.name}: ${args.join(' ')} (${new Date().toISOString()})\n`)
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  current = child
  child.stdout.on('data', (d: Buffer) => {
    process.stdout.write(d)
    logFile.write(d)
  })
  child.stderr.on('data', (d: Buffer) => {
    process.stderr.write(d)
    logFile.write(d)
  })
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    log(`${spec.name} overran its ${limitS} s: stopping it`)
    stopCurrent()
  }, limitS * 1000)
  const exitCode = await new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  clearTimeout(timer)
  const seconds = (performance.now() - t0) / 1000
  const file = path.join(RESULTS_DIR, `${spec.name}-latest.json`)
  let json: unknown
  try {
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as { at?: string }
    // Only this run's figures: an older file from an earlier run does not count.
    if (parsed.at && Date.parse(parsed.at) >= started - 1000) json = parsed
  } catch {
    // no figures
  }
  const status = timedOut ? 'timed out' : exitCode === 0 ? 'ok' : 'crashed'
  log(`${spec.name}: ${status} in ${seconds.toFixed(0)} s${json ? '' : ' (no figures written)'}`)
  return { spec, status, exitCode, seconds, ...(json ? { json } : {}) }
}

/** VictoriaMetrics for bench/timeseries.ts: installs Debian's package when missing. Returns a reason when it cannot. */
function ensureVictoria(): string | undefined {
  const has = () => spawnSync('sh', ['-c', 'command -v victoria-metrics'], { encoding: 'utf8' }).status === 0
  if (has()) return undefined
  const sudo = process.getuid?.() === 0 ? [] : ['sudo']
  log(`victoria-metrics is missing: installing Debian's package (${[...sudo, 'apt-get', 'install', '-y', 'victoria-metrics'].join(' ')})`)
  const run = (args: string[]) => {
    const [cmd, ...rest] = [...sudo, ...args]
    return spawnSync(cmd!, rest, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } }).status === 0
  }
  if (!run(['apt-get', 'install', '-y', '-qq', 'victoria-metrics'])) {
    run(['apt-get', 'update', '-qq'])
    run(['apt-get', 'install', '-y', '-qq', 'victoria-metrics'])
  }
  return has() ? undefined : 'victoria-metrics could not be installed'
}

// ---------------------------------------------------------------- summary

interface Row {
  benchmark: string
  figure: string
  target: string
  value: string
  met: boolean | null
  note?: string
}

const yes = (m: boolean | null | undefined) => (m === true ? 'met' : m === false ? 'NOT met' : '-')
const mib = (b: number | null | undefined) => (b === null || b === undefined || !Number.isFinite(b) ? '-' : `${(b / 2 ** 20).toFixed(0)} MiB`)
const us = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '-')

/** The gateway's CPU per reading over Mosquitto's, e.g. "6.6x". */
function cpuFactor(j: IngestJson): string {
  const gw = j.results.find((r) => r.target === 'gateway')
  const mq = j.results.find((r) => r.target === 'mosquitto')
  return gw && mq ? `${(gw.saturation.serverCpuUsPerReading / mq.saturation.serverCpuUsPerReading).toFixed(1)}x` : '-'
}

function summaryRows(o: Record<Name, Outcome | undefined>): Row[] {
  const rows: Row[] = []
  const missing = (name: Name, benchmark: string, figure: string, target: string) => {
    const out = o[name]
    if (!out || out.json) return false
    rows.push({ benchmark, figure, target, value: out.status === 'skipped' ? `skipped${out.note ? `: ${out.note}` : ''}` : `${out.status}, no figures`, met: null })
    return true
  }
  const ing = o.ingest?.json as IngestJson | undefined
  if (!missing('ingest', 'ingest', 'gateway / bare aedes readings/s', '>= 80%') && ing) {
    const t = ing.targets
    rows.push({ benchmark: 'ingest', figure: 'gateway / bare aedes readings/s', target: '>= 80%', value: t.throughputRatio.value === null ? '-' : pct(t.throughputRatio.value), met: t.throughputRatio.met })
    rows.push({
      benchmark: 'ingest',
      figure: 'Mosquitto / gateway readings/s',
      target: '<= 2x',
      value: t.mosquittoFactor.value === null ? '-' : `${t.mosquittoFactor.value.toFixed(2)}x`,
      met: t.mosquittoFactor.met,
      ...(t.mosquittoFactor.mosquittoWasTheLimit === false ? { note: `Mosquitto was not the bottleneck, so a lower bound; CPU per reading ${cpuFactor(ing)}` } : {}),
    })
    rows.push({ benchmark: 'ingest', figure: `gateway PUBACK p99 at ${int(ing.options.ratePerSecond)}/s`, target: `< ${t.pubackP99Ms.target} ms`, value: t.pubackP99Ms.value === null ? '-' : `${ms(t.pubackP99Ms.value)} ms`, met: t.pubackP99Ms.met })
  }
  const al = o.alerts?.json as AlertsJson | undefined
  if (!missing('alerts', 'alerts', 'PUBLISH -> provider WebSocket p99', '< 50 ms') && al) {
    const t = al.targets.alertP99Ms
    const n = al.gateway?.alertLatency.count ?? 0
    rows.push({
      benchmark: 'alerts',
      figure: `PUBLISH -> provider WebSocket p99, ${int(al.options.ratePerSecond)} readings/s background`,
      target: `< ${t.target} ms`,
      value: n === 0 ? 'no alert arrived' + (al.gateway?.socketCloses.length ? ` (socket closed: ${al.gateway.socketCloses.join(', ')})` : '') : `${ms(t.value ?? Number.NaN)} ms (n=${int(n)})`,
      met: t.met,
    })
  }
  const co = o.connections?.json as ConnectionsJson | undefined
  if (!missing('connections', 'connections', '10,000 idle TLS devices, gateway RSS', '< 1 GiB') && co) {
    const t = co.targets.idleRssAt10kBytes
    const measured = (t.measuredWith as number | null) ?? 0
    rows.push({
      benchmark: 'connections',
      figure: '10,000 idle TLS devices, gateway RSS',
      target: '< 1 GiB',
      value: `${mib(t.value)}${measured && measured < 10_000 ? ` (projected from ${int(measured)})` : ''}`,
      met: t.met,
    })
  }
  const ch = o.chat?.json as ChatJson | undefined
  if (!missing('chat', 'chat', 'delivery p99', '< 50 ms') && ch) {
    const t = ch.targets.deliveryP99Ms
    rows.push({ benchmark: 'chat', figure: `delivery p99, ${int(ch.result.topology.socketsConnected)} sockets, ${int(ch.result.sent.perSecond)} messages/s`, target: `< ${t.target} ms`, value: t.value === null ? '-' : `${ms(t.value)} ms`, met: t.met })
  }
  const ts = o.timeseries?.json as TimeseriesJson | undefined
  if (!missing('timeseries', 'timeseries', 'backlog drain', '>= 50,000 points/s') && ts) {
    const t = ts.targets
    rows.push({ benchmark: 'timeseries', figure: 'backlog drain into InfluxDB (VictoriaMetrics)', target: `>= ${int(t.drainPointsPerSecond.target)} points/s`, value: t.drainPointsPerSecond.value === null ? '-' : `${int(t.drainPointsPerSecond.value)} points/s`, met: t.drainPointsPerSecond.met })
    rows.push({ benchmark: 'timeseries', figure: 'ingest with the InfluxDB writer on / off', target: `>= ${pct(t.ingestRatio.target)}`, value: t.ingestRatio.value === null ? '-' : pct(t.ingestRatio.value), met: t.ingestRatio.met })
  }
  return rows
}

function table(head: string[], rows: string[][]): string[] {
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)]
}

function textTable(head: string[], rows: string[][]): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()
  return [line(head), '-'.repeat(widths.reduce((a, b) => a + b + 2, -2)), ...rows.map(line)]
}

// ---------------------------------------------------------------- the report

function ingestSection(j: IngestJson): string[] {
  const o = j.options
  const out = [
    `${int(o.devices)} devices over MQTT 3.1.1/TLS (mqtt.js) in ${o.workers} load-generator processes, one reading per QoS1 PUBLISH; saturation with ` +
      `${o.window} unacknowledged publishes per device (${o.durationS} s measured), then ${int(o.ratePerSecond)} readings/s open loop. The same load, ` +
      'certificate (ECDSA P-256) and machine for each broker, one after the other, each in its own process.',
    '',
    ...table(
      ['broker', 'readings/s at saturation', 'broker CPU per reading', 'broker cores', 'load-generator cores', 'limited by', `PUBACK at ${int(o.ratePerSecond)}/s p50 / p99 / max`],
      j.results.map((r) => [
        r.label + (r.broker ? ` ${r.broker.version}` : ''),
        int(r.saturation.readingsPerSecond),
        `${us(r.saturation.serverCpuUsPerReading)} µs`,
        r.saturation.serverCores.toFixed(2),
        `${r.saturation.loadCores.toFixed(2)} (${r.saturation.workerCores.map((c) => c.toFixed(2)).join(' + ')})`,
        r.saturation.bottleneck,
        `${ms(r.fixed.latency.p50Ms)} / ${ms(r.fixed.latency.p99Ms)} / ${ms(r.fixed.latency.maxMs)} ms`,
      ]),
    ),
    '',
  ]
  const bare = j.results.find((r) => r.target === 'bare')
  const gw = j.results.find((r) => r.target === 'gateway')
  const mq = j.results.find((r) => r.target === 'mosquitto')
  if (gw && bare) {
    out.push(
      `- The gateway keeps **${pct(gw.saturation.readingsPerSecond / bare.saturation.readingsPerSecond)}** of bare aedes' throughput (target 80%: ${yes(j.targets.throughputRatio.met)}) and ` +
        `spends ${(gw.saturation.serverCpuUsPerReading / bare.saturation.serverCpuUsPerReading).toFixed(1)}x its CPU per reading.`,
    )
  }
  if (gw && mq) {
    out.push(
      `- Mosquitto acknowledges **${(mq.saturation.readingsPerSecond / gw.saturation.readingsPerSecond).toFixed(2)}x** the gateway's readings/s (target within 2x: ${yes(j.targets.mosquittoFactor.met)}) ` +
        `and spends ${us(mq.saturation.serverCpuUsPerReading)} µs of CPU per reading against the gateway's ${us(gw.saturation.serverCpuUsPerReading)} µs ` +
        `(${(gw.saturation.serverCpuUsPerReading / mq.saturation.serverCpuUsPerReading).toFixed(1)}x).` +
        (mq.saturation.bottleneck !== 'broker'
          ? ` Mosquitto used only ${mq.saturation.serverCores.toFixed(2)} cores: the load generators (mqtt.js, ${mq.saturation.loadCores.toFixed(2)} cores) and the rest of the machine, not Mosquitto, set its figure, so the true factor is larger; CPU per reading is the fairer comparison.`
          : ''),
    )
  }
  if (gw) out.push(`- Gateway PUBACK p99 at ${int(o.ratePerSecond)} readings/s: ${ms(gw.fixed.latency.p99Ms)} ms (target < 25 ms: ${yes(j.targets.pubackP99Ms.met)}).`)
  const noisy = j.results.filter((r) => (r.saturation.otherCores ?? 0) > 0.25)
  if (noisy.length) out.push(`- Other processes on the machine used ${noisy.map((r) => `${r.saturation.otherCores!.toFixed(2)} cores during the ${r.label} window`).join(', ')}: those throughput figures are disturbed.`)
  if (gw?.journal) {
    const js = gw.journal.saturation
    const jf = gw.journal.fixed
    out.push(
      `- The gateway's journal (its /metrics): at saturation ${int(js.commits)} group commits of ${js.readingsPerCommitMean.toFixed(0)} readings on average, ${ms(js.commitMsMean)} ms each ` +
        `(inserts with the rules and thread messages, COMMIT, fsync), all on the event loop; at ${int(o.ratePerSecond)}/s ${jf.readingsPerCommitMean.toFixed(1)} readings per commit, ${ms(jf.commitMsMean)} ms each, ` +
        `and a reading waits ${ms(jf.serverPubackMsMean)} ms on average inside the gateway for its PUBACK.`,
    )
  }
  if (gw?.profile) {
    out.push('', `Where the gateway's main thread spends its time at saturation (V8 CPU profile, \`--profile\`; time per acknowledged reading):`, '')
    out.push(...profileTable(gw.profile.saturation, gw.saturation.acked, 'reading'))
  }
  return out
}

/** The largest self-time areas and the key frames of a profile as a table. */
function profileTable(p: ProfileSummary, count: number, unit: string): string[] {
  const per = (msTotal: number) => {
    if (!count) return '-'
    const v = (msTotal * 1000) / count
    return v >= 1000 ? `${(v / 1000).toFixed(2)} ms` : `${v.toFixed(1)} µs`
  }
  const rows = p.categories.filter((c) => c.share >= 0.02).slice(0, 12).map((c) => [c.name, pct(c.share), per(c.ms)])
  const keys = p.inclusive.slice(0, 6).map((c) => [`(inclusive) ${c.name}`, pct(c.share), per(c.ms)])
  return table(['area (self time) or key frame (inclusive)', 'share of the window', `per ${unit}`], [...rows, ...keys])
}

function alertsSection(j: AlertsJson): string[] {
  const g = j.gateway
  const out: string[] = []
  if (j.engine) out.push(`Rule engine alone (the shipped rules, one core): ${int(j.engine.readingsPerSecond)} readings/s, ${j.engine.usPerReading.toFixed(2)} µs per reading.`, '')
  if (!g) return out
  const a = g.alertLatency
  out.push(
    `A crisis blood pressure every ${j.options.intervalMs} ms, timed from its PUBLISH to the alert on the WebSocket of a provider on all ${int(j.options.patients)} care teams, ` +
      `while ${int(j.options.devices)} devices send ${int(j.options.ratePerSecond)} normal readings/s (${j.options.durationS} s measured):`,
    '',
    ...table(
      ['alert p50 / p90 / p99 / max', 'alerts (missing)', 'background readings/s (PUBACK p99)', 'gateway CPU', 'machine busy'],
      [
        [
          `${ms(a.p50Ms)} / ${ms(a.p90Ms)} / ${ms(a.p99Ms)} / ${ms(a.maxMs)} ms`,
          `${int(a.count)} (${g.alertsMissing})`,
          `${int(g.background.achievedRate)} (${ms(g.background.pubackLatency.p99Ms)} ms)`,
          `${g.gateway.cores.toFixed(2)} cores (event loop busy ${pct(g.gateway.loopUtilisation)})`,
          g.machine ? `${g.machine.busyCores.toFixed(2)} of ${os.cpus().length} cores` : '-',
        ],
      ],
    ),
    '',
    a.count
      ? `- Alert p99 ${ms(a.p99Ms)} ms (target < 50 ms: ${yes(j.targets.alertP99Ms.met)}); after the crisis's PUBACK the alert takes p50 ${ms(g.alertAfterPuback.p50Ms)} / p99 ${ms(g.alertAfterPuback.p99Ms)} ms more.`
      : `- No alert reached the provider in the measured window (target: NOT met)` +
          (g.socketCloses.length ? `: the gateway closed the provider's socket (close code ${g.socketCloses.join(', ')}${g.socketCloses.includes(1013) ? ', slow consumer: the socket fell too far behind the live readings' : ''}).` : '.'),
  )
  return out
}

function connectionsSection(j: ConnectionsJson): string[] {
  const o = j.options
  const rows: string[][] = []
  const row = (label: string, step: string, s: Storm) =>
    rows.push([label, step, int(s.devices), `${int(s.perSecond)}/s`, `${s.gatewayCpuMsPerConnect.toFixed(2)} ms`, `${s.clientCpuMsPerConnect.toFixed(2)} ms`, `${ms(s.latency.p50Ms)} / ${ms(s.latency.p99Ms)} ms`, `${int(s.ok)} / ${int(s.failed)}`])
  for (const c of j.certs) {
    row(c.label, 'TLS handshake only', c.tls)
    row(c.label, 'MQTT CONNECT, secret (scrypt N=1024)', c.mqtt)
    if (c.clientCert) row(c.label, 'MQTT CONNECT, client certificate', c.clientCert)
  }
  if (j.productionScrypt) row('ECDSA P-256', 'MQTT CONNECT, secret (scrypt N=16384, as provisioned)', j.productionScrypt)
  const out = [
    `A reconnect storm of ${int(o.devices)} devices against the gateway from ${o.workers} load processes (node:tls, hand-made MQTT packets), ${o.concurrency} connects in flight each; ` +
      'TLS 1.3 full handshakes, no resumption. Rate: connections completed per second over the storm; CPU per connection on each side.',
    '',
    ...table(['server certificate', 'step', 'devices', 'rate', 'gateway CPU', 'client CPU', 'p50 / p99', 'ok / failed'], rows),
    '',
  ]
  const ec = j.certs.find((c) => c.cert === 'ecdsa')
  const rsa = j.certs.find((c) => c.cert === 'rsa')
  if (ec && rsa) {
    out.push(
      `- TLS handshakes: the gateway spends ${ec.tls.gatewayCpuMsPerConnect.toFixed(2)} ms of CPU per handshake with the ECDSA certificate and ${rsa.tls.gatewayCpuMsPerConnect.toFixed(2)} ms with RSA ` +
        `(${int(1000 / ec.tls.gatewayCpuMsPerConnect)} vs ${int(1000 / rsa.tls.gatewayCpuMsPerConnect)} handshakes per CPU-second); the storm rates were ${int(ec.tls.perSecond)}/s and ${int(rsa.tls.perSecond)}/s ` +
        `(ECDSA / RSA ${(ec.tls.perSecond / rsa.tls.perSecond).toFixed(2)}x). The signature is a small part of a handshake's cost in Node (RSA 2048 signs in about 0.4 ms, ECDSA P-256 in 0.02 ms, ` +
        'by `openssl speed` here); the rest is per-connection work (key exchange, TLS socket and aedes client set-up). On two shared cores the client side ' +
        `(${ec.tls.clientCpuMsPerConnect.toFixed(2)} ms per handshake) costs more than the server side, so the storm rate is a machine figure and the CPU per handshake is the comparison` +
        ` (the machine was ${ec.tls.machineBusyCores?.toFixed(2) ?? '-'} and ${rsa.tls.machineBusyCores?.toFixed(2) ?? '-'} cores busy during the two TLS storms).`,
    )
  }
  if (ec && j.productionScrypt) {
    out.push(
      `- Device-secret logins: with the registry's scrypt cost (N=16384) a login costs the gateway ${j.productionScrypt.gatewayCpuMsPerConnect.toFixed(1)} ms of CPU, so ${int(10_000)} devices take about ` +
        `${(10_000 / j.productionScrypt.perSecond).toFixed(0)} s to come back (${j.productionScrypt.perSecond.toFixed(0)}/s); with the benchmark's N=1024 ${(10_000 / ec.mqtt.perSecond).toFixed(0)} s` +
        (ec.clientCert ? `, with client certificates ${(10_000 / ec.clientCert.perSecond).toFixed(0)} s` : '') +
        '. Below scrypt, each login also waits for two synchronous SQLite commits on the event loop (the audit record and the presence update, each fsynced).',
    )
  }
  const idle = ec?.idle
  if (idle) {
    out.push(
      `- Idle: ${int(idle.connected)} devices connected (keepalive ${o.keepaliveS} s, no traffic): gateway RSS ${mib(idle.rssBeforeBytes)} with none connected, ${mib(idle.rssWithBytes)} with them (after a full GC), ` +
        `**${(idle.rssPerConnectionBytes / 1024).toFixed(1)} KiB per idle connection** (V8 heap ${(idle.heapPerConnectionBytes / 1024).toFixed(1)} KiB); ${mib(idle.rssAfterCloseBytes)} after they left. ` +
        `${int(10_000)} idle TLS devices: ${mib(idle.projectedRssAtTargetBytes)}${idle.connected < 10_000 ? ' (projected)' : ''} (target < 1 GiB: ${yes(j.targets.idleRssAt10kBytes.met)}).`,
    )
  }
  if (ec?.profile) {
    out.push('', `Where the gateway's main thread spends an MQTT login (V8 CPU profile of the ECDSA storm, \`--profile\`; the scrypt hash itself runs on libuv's thread pool):`, '')
    out.push(...profileTable(ec.profile.mqtt, ec.mqtt.ok, 'login'))
    out.push('')
  }
  out.push(`- File descriptors: ${j.fileDescriptors.note}. The gateway's connection rate limit and cap were raised for the run (mqtt.connectRatePerMinute, mqtt.maxConnections), since every device comes from loopback.`)
  return out
}

function chatSection(j: ChatJson): string[] {
  const r = j.result
  const d = r.deliveryLatency
  return [
    `${int(r.topology.socketsConnected)} WebSocket clients across ${int(r.topology.threads)} threads (${r.topology.participants} participants each), ${int(r.sent.perSecond)} messages/s from random senders, ` +
      'delivery measured by every other participant:',
    '',
    ...table(
      ['delivery p50 / p90 / p99 / max', 'delivered / expected', 'gateway CPU'],
      [[`${ms(d.p50Ms)} / ${ms(d.p90Ms)} / ${ms(d.p99Ms)} / ${ms(d.maxMs)} ms`, `${int(r.deliveries.received)} / ${int(r.deliveries.expected)}`, `${r.gateway.cores.toFixed(2)} cores, ${us(r.gateway.cpuUsPerDelivery)} µs per delivery`]],
    ),
    '',
    `- Delivery p99 ${ms(d.p99Ms)} ms (target < 50 ms: ${yes(j.targets.deliveryP99Ms.met)})${r.otherCores !== undefined ? `; other processes used ${r.otherCores.toFixed(2)} cores meanwhile` : ''}.`,
  ]
}

function timeseriesSection(j: TimeseriesJson): string[] {
  const out: string[] = []
  if (j.drain) {
    out.push(
      `A ${int(j.drain.readings)}-reading backlog drained from the journal into a fresh VictoriaMetrics (InfluxDB 2's /api/v2/write): **${int(j.drain.pointsPerSecond)} points/s** ` +
        `(target >= 50,000: ${yes(j.targets.drainPointsPerSecond.met)}), gateway ${j.drain.gatewayCores.toFixed(2)} cores, ${us(j.drain.gatewayCpuUsPerPoint)} µs CPU per point.`,
      '',
    )
  }
  if (j.ingest.length) {
    out.push(
      ...table(
        ['round', 'writer', 'readings/s at saturation', 'other processes'],
        j.ingest.map((r) => [String(r.round), r.writer, int(r.readingsPerSecond), r.otherCores === undefined ? '-' : `${r.otherCores.toFixed(2)} cores`]),
      ),
      '',
      `- Ingest with the writer on / off: ${j.targets.ingestRatio.value === null ? '-' : pct(j.targets.ingestRatio.value)} (target >= 90%: ${yes(j.targets.ingestRatio.met)}).`,
    )
  }
  return out
}

/** What the benchmarks measured of other processes' CPU in their windows, as phrases. */
function disturbance(o: Record<Name, Outcome | undefined>): string[] {
  const out: string[] = []
  const cores = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(2))
  const ing = o.ingest?.json as IngestJson | undefined
  if (ing) out.push(`ingest ${ing.results.map((r) => `${r.target} ${cores(r.saturation.otherCores)}`).join(', ')} cores`)
  const ch = o.chat?.json as ChatJson | undefined
  if (ch?.result.otherCores !== undefined) out.push(`chat ${cores(ch.result.otherCores)} cores`)
  const ts = o.timeseries?.json as TimeseriesJson | undefined
  if (ts?.ingest.length) out.push(`time-series ingest rounds ${ts.ingest.map((r) => cores(r.otherCores)).join(', ')} cores`)
  const al = o.alerts?.json as AlertsJson | undefined
  if (al?.gateway?.machine) out.push(`alerts: the whole machine (the benchmark included) ${cores(al.gateway.machine.busyCores)} of ${os.cpus().length} cores busy`)
  return out
}

interface RunInfo {
  quick: boolean
  fromResults: boolean
  started: Date
  seconds: number
  loadBefore: number[]
  loadAfter: number[]
  outcomes: Outcome[]
  mosquitto: string
}

/** What a run of bench/all.ts leaves in bench/results/all-latest.json, so --from-results can render its report again. */
interface RunRecord {
  quick: boolean
  started: string
  seconds: number
  loadBefore: number[]
  loadAfter: number[]
  mosquitto: string
  outcomes: Array<{ name: Name; status: Outcome['status']; exitCode: number | null; seconds: number }>
}

function fromRecord(file: string, info: RunInfo, byName: Record<Name, Outcome | undefined>): RunInfo | undefined {
  let record: RunRecord
  try {
    record = JSON.parse(readFileSync(file, 'utf8')) as RunRecord
  } catch {
    return undefined
  }
  const started = Date.parse(record.started)
  const end = started + record.seconds * 1000 + 60_000
  for (const x of info.outcomes) {
    const at = Date.parse((x.json as { at?: string } | undefined)?.at ?? '')
    const ran = record.outcomes.find((o) => o.name === x.spec.name)
    if (!ran || (x.json && !(at >= started && at <= end))) return undefined
  }
  for (const x of info.outcomes) {
    const ran = record.outcomes.find((o) => o.name === x.spec.name)!
    Object.assign(x, { status: ran.status, exitCode: ran.exitCode, seconds: ran.seconds })
    byName[x.spec.name] = x
  }
  return { ...info, quick: record.quick, fromResults: false, started: new Date(started), seconds: record.seconds, loadBefore: record.loadBefore, loadAfter: record.loadAfter, mosquitto: record.mosquitto }
}

function machineSection(info: RunInfo): string[] {
  const cpus = os.cpus()
  const mem = Math.round(os.totalmem() / 2 ** 30)
  return table(
    ['cores', 'CPU', 'memory', 'Node', 'OS', 'file system (temp data)', 'date', 'load average before / after (1, 5, 15 min)'],
    [
      [
        String(cpus.length),
        cpus[0]?.model.trim() ?? 'unknown',
        `${mem} GiB`,
        process.version,
        `${os.platform()} ${os.release()} ${os.arch()}`,
        fileSystemOf(os.tmpdir()) ?? 'unknown',
        info.started.toISOString().slice(0, 16).replace('T', ' ') + ' UTC',
        `${info.loadBefore.map((n) => n.toFixed(2)).join(' ')} / ${info.loadAfter.map((n) => n.toFixed(2)).join(' ')}`,
      ],
    ],
  )
}

function markdown(info: RunInfo, rows: Row[], o: Record<Name, Outcome | undefined>): string {
  const out: string[] = []
  out.push('# Benchmarks', '')
  out.push(
    (info.fromResults
      ? 'Figures from the latest results in bench/results/ (each benchmark\'s own run; `npm run bench -- --from-results` wrote this page). '
      : `Figures of one \`npm run bench${info.quick ? ' -- --quick' : ''}\` run (bench/all.ts, ${info.seconds < 120 ? `${Math.round(info.seconds)} s` : `${Math.round(info.seconds / 60)} minutes`}), written by that run: rerun it to refresh this page. `) +
      'Every benchmark prints its figures and never fails on one; each compares side by side in the same run on the same machine.',
    '',
  )
  if (info.quick) out.push('**This is a --quick smoke run: shorter phases and smaller populations; its figures are not comparable with a full run.**', '')
  out.push('## Machine', '', ...machineSection(info), '')
  out.push(
    'The machine has two cores and was shared with other work (tests and builds) during the run; the load generators run on the same two cores as the ' +
      'servers. Throughput figures vary by 10-30% between runs and more when other processes compete (each benchmark reports the CPU other processes ' +
      'used during its windows); CPU per reading, per connection or per delivery is the steadier figure.',
    '',
  )
  const others = disturbance(o)
  if (others.length) out.push(`Other processes' CPU during the measured windows of this run (the benchmark's own processes excluded): ${others.join('; ')}.`, '')
  out.push('## How to reproduce', '')
  out.push(
    '```sh',
    'npm ci',
    'npm run bench                 # everything, about 10 minutes; prints a summary and rewrites this file',
    'npm run bench -- --quick      # smoke run, 3-4 minutes (written to bench/results/benchmarks-quick.md)',
    'npm run bench -- --profile    # also where the gateway spends its time (V8 CPU profiles; slightly lower figures)',
    'npm run bench:ingest          # one at a time; each takes --help, --quick, --set key=value',
    'npm run bench:alerts',
    'npm run bench:connections',
    'npm run bench:chat',
    'npm run bench:timeseries',
    '```',
    '',
    `Prerequisites (Debian): \`mosquitto\` (${info.mosquitto}) and \`victoria-metrics\`, installed with apt-get by the harness when missing (as root, or with sudo). ` +
      'Each benchmark writes its figures to bench/results/<name>-latest.json; the full output of this run is in bench/results/bench-all.log.',
    '',
  )
  out.push('## Summary', '')
  out.push(...table(['benchmark', 'figure', 'target', 'this run', 'met'], rows.map((r) => [r.benchmark, r.figure, r.target, r.value + (r.note ? ` (${r.note})` : ''), yes(r.met)])), '')
  if (!info.fromResults) {
    const runs = info.outcomes.map((x) => `${x.spec.name} ${x.status}${x.status === 'skipped' ? '' : ` (${x.seconds.toFixed(0)} s)`}`)
    out.push(`Runs: ${runs.join(', ')}.`, '')
  }

  const section = (name: Name, title: string, body: (j: never) => string[]) => {
    const x = o[name]
    if (!x) return
    out.push(`## ${title}`, '')
    if (!x.json) out.push(`Not measured in this run: ${x.status}${x.note ? ` (${x.note})` : ''}.`, '')
    else out.push(...body(x.json as never), '')
  }
  section('ingest', 'Ingest: QoS1 readings over TLS', ingestSection)
  section('alerts', 'Alert latency', alertsSection)
  section('connections', 'Connections: reconnect storm and idle memory', connectionsSection)
  section('chat', 'Chat fan-out', chatSection)
  section('timeseries', 'Time-series drain', timeseriesSection)

  out.push('## Notes on method', '')
  out.push(
    '- **Ingest** compares three brokers under the same load: the gateway (each reading validated with ajv, units normalised, inserted into the SQLite ' +
      'journal with the clinical rules and a thread message in the same group commit, `synchronous=FULL`, before its PUBACK is released; the journal is ' +
      'the time-series outbox, the InfluxDB writer itself is off here and measured under Time-series), a bare aedes broker with no hooks behind the same TLS ' +
      'listener (what the gateway is built on), and Mosquitto. Broker CPU is the broker process\'s user+system time over the measured window divided by the ' +
      'readings acknowledged in it (Mosquitto\'s from /proc/<pid>/stat, 10 ms ticks). "Limited by" says whether the broker used a whole core (broker), or ' +
      'the two cores were busy while it had time to spare (machine: its readings/s is then a lower bound).',
    '- **Mosquitto** (Debian\'s package) is started by the harness on a free loopback port with a generated configuration: a TLS listener with the same ' +
      'ECDSA server certificate and CA, `allow_anonymous true` (the load generators send the same usernames and passwords, unchecked), ' +
      '`persistence false`, `max_inflight_messages 0` and `max_queued_messages 0` (no caps), `set_tcp_nodelay true`. It acknowledges a QoS1 PUBLISH from ' +
      'memory, with no per-message write or fsync, and it does not ask clients for a certificate; the gateway and the bare aedes listener request an optional one. ' +
      'It is the ceiling for an MQTT broker on this machine, not a like-for-like durable store.',
    '- **Load generators** are separate processes on the same two cores: mqtt.js for ingest and alerts (several processes, since one saturates before ' +
      'a broker does), plain node:tls sockets with hand-made MQTT packets for the connection storm. Their CPU is reported next to the brokers\'.',
    '- **Alert latency** runs the real gateway with 10,000 patients provisioned in bulk; the clock starts when the probe hands the PUBLISH to mqtt.js and ' +
      'stops when the alert frame arrives on the provider\'s WebSocket.',
    '- **Connections**: devices are provisioned in bulk with one shared secret hashed at scrypt N=1024 (the registry hashes each device\'s secret at ' +
      'N=16384; a separate small storm measures that cost). The TLS storm closes each connection after its handshake; the MQTT storm keeps them, and the ' +
      'idle figure is ((RSS with N connected) - (RSS with none, just before)) / N, each read after a full garbage collection (`--expose-gc`). The RSA chain ' +
      '(CA and server, 2048-bit) is generated for the run with @peculiar/x509; client certificates are issued from the development CA.',
    '- **Chat** and **time-series** are the earlier benchmarks (bench/chat.ts, bench/timeseries.ts) run as they are; time-series starts its own VictoriaMetrics.',
    '',
  )
  return out.join('\n')
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const file = fileURLToPath(import.meta.url)
  const { values } = parseArgs({ options: { quick: { type: 'boolean' }, only: { type: 'string' }, docs: { type: 'string' }, profile: { type: 'boolean' }, 'from-results': { type: 'boolean' }, help: { type: 'boolean' } } })
  if (values.help) {
    process.stdout.write(usageOf(file))
    return
  }
  const quick = values.quick ?? /^(1|true|yes)$/i.test(process.env.BENCH_QUICK ?? '')
  const only = (values.only ?? NAMES.join(',')).split(',').map((s) => s.trim()) as Name[]
  for (const n of only) if (!NAMES.includes(n)) throw new Error(`--only takes ${NAMES.join(', ')} (comma-separated), got "${n}"`)
  const complete = NAMES.every((n) => only.includes(n))
  const docsFor = (isQuick: boolean) =>
    values.docs ?? (isQuick ? path.join(RESULTS_DIR, 'benchmarks-quick.md') : complete ? path.join(ROOT, 'docs', 'benchmarks.md') : path.join(RESULTS_DIR, 'benchmarks-partial.md'))

  mkdirSync(RESULTS_DIR, { recursive: true })
  const logPath = path.join(RESULTS_DIR, 'bench-all.log')
  const logFile = createWriteStream(values['from-results'] ? os.devNull : logPath)
  const started = new Date()
  const loadBefore = os.loadavg()
  const cpus = os.cpus()
  const print = (line = '') => process.stdout.write(line + '\n')
  print(`rpm-gateway benchmarks${quick ? ' (--quick)' : ''}: ${only.join(', ')}`)
  print(`machine: ${cpus.length} cores, ${cpus[0]?.model.trim() ?? 'unknown'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${os.platform()} ${os.release()}`)
  print(`load average before: ${loadBefore.map((n) => n.toFixed(2)).join(' ')}; output also in ${path.relative(ROOT, logPath)}`)

  let mosquitto = 'not used'
  if (only.includes('ingest') && !values['from-results']) {
    const { ensureMosquitto } = await import('./mosquitto.ts')
    try {
      mosquitto = `${ensureMosquitto((line) => log(line)).version} here`
    } catch (err) {
      mosquitto = `not available: ${(err as Error).message}`
      log(`mosquitto ${mosquitto}; bench/ingest.ts leaves it out`)
    }
  }

  const t0 = performance.now()
  const outcomes: Outcome[] = []
  const byName = {} as Record<Name, Outcome | undefined>
  for (const spec of SPECS) {
    if (!only.includes(spec.name)) continue
    let outcome: Outcome
    const reason = spec.name === 'timeseries' && !values['from-results'] ? ensureVictoria() : undefined
    if (values['from-results']) {
      const file = path.join(RESULTS_DIR, `${spec.name}-latest.json`)
      let json: unknown
      try {
        json = JSON.parse(readFileSync(file, 'utf8'))
      } catch {
        // none
      }
      outcome = { spec, status: json ? 'ok' : 'skipped', exitCode: null, seconds: 0, ...(json ? { json } : { note: `no ${path.relative(ROOT, file)}` }) }
    } else if (reason) {
      log(`timeseries skipped: ${reason}`)
      outcome = { spec, status: 'skipped', exitCode: null, seconds: 0, note: reason }
    } else {
      outcome = await runOne(spec, quick, values.profile ?? false, logFile)
      await sleep(2000) // let the machine settle between benchmarks
    }
    outcomes.push(outcome)
    byName[spec.name] = outcome
  }
  const seconds = (performance.now() - t0) / 1000
  const loadAfter = os.loadavg()

  const rows = summaryRows(byName)
  print('')
  print(`Summary (${(seconds / 60).toFixed(1)} minutes; load average before ${loadBefore.map((n) => n.toFixed(2)).join(' ')}, after ${loadAfter.map((n) => n.toFixed(2)).join(' ')})`)
  for (const line of textTable(['benchmark', 'figure', 'target', 'this run', 'met'], rows.map((r) => [r.benchmark, r.figure, r.target, r.value + (r.note ? ` (${r.note})` : ''), yes(r.met)]))) print(line)
  print('')
  for (const x of outcomes) print(`${x.spec.name}: ${x.status}${x.status === 'skipped' ? '' : ` in ${x.seconds.toFixed(0)} s`}${x.exitCode !== null && x.exitCode !== 0 ? ` (exit ${x.exitCode})` : ''}`)

  let info: RunInfo = { quick, fromResults: values['from-results'] ?? false, started, seconds, loadBefore, loadAfter, outcomes, mosquitto }
  const runFile = path.join(RESULTS_DIR, 'all-latest.json')
  if (!info.fromResults) {
    const record: RunRecord = {
      quick,
      started: started.toISOString(),
      seconds,
      loadBefore,
      loadAfter,
      mosquitto,
      outcomes: outcomes.map((x) => ({ name: x.spec.name, status: x.status, exitCode: x.exitCode, seconds: x.seconds })),
    }
    writeFileSync(runFile, JSON.stringify(record, null, 2) + '\n')
  } else {
    // The run that wrote these figures, when bench/all.ts did and every file is from it: its header, timings and load.
    info = fromRecord(runFile, info, byName) ?? info
  }
  const docs = docsFor(info.quick)
  mkdirSync(path.dirname(docs), { recursive: true })
  writeFileSync(docs, markdown(info, rows, byName) + '\n')
  print(`report written to ${path.relative(ROOT, docs)}`)
  await new Promise<void>((resolve) => logFile.end(() => resolve()))

  const crashed = outcomes.filter((x) => x.status === 'crashed' || x.status === 'timed out')
  if (crashed.length) {
    print(`${crashed.map((x) => x.spec.name).join(', ')} did not finish: exit code 1`)
    process.exitCode = 1
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
