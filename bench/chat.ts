/**
 * Live messaging over the WebSocket: delivery latency from a send to its receipt by the other
 * participants of the thread, with many sockets open and a steady stream of messages.
 *
 *   npm run bench:chat [-- --threads 100 --participants 10 --rate 500 --duration 15 --workers 2]
 *   npm run bench:chat -- --quick          2 s warm-up + 5 s measured, for a smoke run
 *
 * The gateway runs in its own process (a temporary data directory), seeded with one patient
 * and one thread per --threads, the patient's user and --participants - 1 providers on each care
 * team, drawn in turn from --providers providers (so a provider has several sockets open, one
 * per thread). Every participant of every thread has a socket subscribed to it: threads x
 * participants sockets in --workers load processes. Random sockets send at --rate messages/s in
 * all; each other socket of the thread records send-to-receipt latency.
 *
 * Diagnostics: --profile (V8 CPU profile of the gateway process, summarised by where the time
 * goes), --set websocket.messagesPerSecond=50 (any gateway config key; repeatable),
 * --warmup 5, --text 80 (characters per message).
 * Each option also reads from the environment: BENCH_THREADS, BENCH_RATE, BENCH_DURATION, ...
 *
 * Prints figures and writes them to bench/results/chat-latest.json; never fails on a time.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { chatKeys, summariseProfile, type ProfileSummary } from './cpu-profile.ts'
import { benchArgs, forkChild, int, lpad, machineCpu, machineInfo, machineLines, ms, newestProfile, pad, pct, Peer, RESULTS_DIR, signIn, numberOption } from './harness.ts'
import { LatencyHistogram, type LatencySummary } from './histogram.ts'
import { cpuDelta, cpuSnapshot } from './process-stats.ts'
import type { ChatReport, ChatServerStats, ChatSocketSpec, FromChatServer, FromChatWorker, ToChatServer, ToChatWorker } from './protocol.ts'

const DELIVERY_P99_TARGET_MS = 50

type ServerPeer = Peer<ToChatServer, FromChatServer>
type WorkerPeer = Peer<ToChatWorker, FromChatWorker>

/** Wall-clock ms with sub-ms resolution; the load processes stamp and measure with the same clock. */
const now = () => performance.timeOrigin + performance.now()

// ---------------------------------------------------------------- options

interface Options {
  threads: number
  participants: number
  providers: number
  ratePerSecond: number
  workers: number
  warmupS: number
  durationS: number
  textLength: number
  quick: boolean
  profile: boolean
  settings: Record<string, string | number | boolean>
}

function options(): Options {
  const { values, quick, profile, settings } = benchArgs(fileURLToPath(import.meta.url), ['threads', 'participants', 'providers', 'rate', 'workers', 'warmup', 'duration', 'text'])
  const env = process.env
  const num = numberOption
  const participants = Math.floor(num(values.participants, 'PARTICIPANTS', 10, 2))
  const providers = Math.floor(num(values.providers, 'PROVIDERS', 90, 1))
  if (providers < participants - 1) throw new Error(`--providers must be at least --participants - 1 (${participants - 1})`)
  return {
    threads: Math.floor(num(values.threads, 'THREADS', 100, 1)),
    participants,
    providers,
    ratePerSecond: num(values.rate, 'RATE', 500, 1),
    workers: Math.floor(num(values.workers, 'WORKERS', 2, 1)),
    warmupS: num(values.warmup, 'WARMUP', quick ? 2 : 5, 0),
    durationS: num(values.duration, 'DURATION', quick ? 5 : 15, 1),
    textLength: Math.floor(num(values.text, 'TEXT', 80, 1)),
    quick,
    profile,
    settings,
  }
}

function log(line: string): void {
  process.stderr.write(`  · ${line}\n`)
}

// ---------------------------------------------------------------- the run

interface ChatResult {
  topology: { threads: number; participants: number; users: number; patients: number; providers: number; sockets: number; socketsConnected: number; workers: number }
  setup: { gatewayStartupMs: number; seedMs: number; signInMs: number; connectMs: number }
  window: { durationS: number; targetRate: number }
  sent: { measured: number; perSecond: number; total: number; acknowledged: number; maxScheduleLagMs: number }
  deliveries: { expected: number; received: number; missing: number; perSecond: number; seqGaps: number; duplicates: number; drainMs: number; receivedWholeRun: number }
  deliveryLatency: LatencySummary
  /** Send to the sender's own `sent` answer. */
  ackLatency: LatencySummary
  gateway: {
    cores: number
    loopUtilisation: number
    cpuUsPerMessage: number
    cpuUsPerDelivery: number
    rssMiB: { start: number; end: number; peak: number }
    heapUsedMiB: number
    /** CPU in cores for each second of the window. */
    coresPerSecond: number[]
    storedMessages: number
    auditRows: number
  }
  load: { cores: number }
  otherCores: number | undefined
  errors: Record<string, number>
  closes: Record<string, number>
  frames: Record<string, number>
  profile?: ProfileSummary
}

const MiB = 2 ** 20
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0)
const merge = (records: Array<Record<string, number>>) => {
  const out: Record<string, number> = {}
  for (const r of records) for (const [k, v] of Object.entries(r)) out[k] = (out[k] ?? 0) + v
  return out
}

async function runChat(opts: Options, dataDir: string, profileDir: string): Promise<ChatResult> {
  const server: ServerPeer = new Peer('gateway', forkChild('chat-server.ts', opts.profile ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : []))
  const workers: WorkerPeer[] = []
  try {
    const providersPerThread = opts.participants - 1
    const ready = await server.request(
      { cmd: 'start', dataDir, threads: opts.threads, providersPerThread, providers: opts.providers, settings: opts.settings },
      'ready',
      600_000,
    )
    log(`gateway up in ${(ready.startupMs / 1000).toFixed(1)} s at ${ready.httpUrl}; ${ready.accounts.length} users and ${ready.threads.length} threads seeded in ${(ready.seedMs / 1000).toFixed(1)} s`)

    const t0 = performance.now()
    const logins = await signIn(ready.httpUrl, ready.accounts, 8)
    const signInMs = performance.now() - t0
    log(`${logins.size} users signed in over REST in ${(signInMs / 1000).toFixed(1)} s`)

    // One socket per participant per thread; a thread's sockets alternate between the load
    // processes, so most deliveries cross from one process to another.
    const specs: ChatSocketSpec[][] = Array.from({ length: opts.workers }, () => [])
    let index = 0
    for (const t of ready.threads) {
      for (const username of t.members) {
        const login = logins.get(username)!
        specs[index % opts.workers]!.push({ index, token: login.token, userId: login.userId, threadId: t.threadId })
        index++
      }
    }
    for (let i = 0; i < opts.workers; i++) workers.push(new Peer(`load worker ${i + 1}`, forkChild('chat-worker.ts')))
    const wsUrl = ready.httpUrl.replace(/^http/, 'ws') + '/api/v1/ws'
    const t1 = performance.now()
    const connected = await Promise.all(workers.map((w, i) => w.request({ cmd: 'connect', url: wsUrl, sockets: specs[i]!, concurrency: 25 }, 'connected', 300_000)))
    const connectMs = performance.now() - t1
    const socketsConnected = sum(connected.map((c) => c.sockets))
    log(`${socketsConnected} sockets signed in and subscribed in ${(connectMs / 1000).toFixed(1)} s`)
    await sleep(1000)

    // -- the run: open-loop sends, warm-up then the measured window.
    const startAt = now() + 500
    const measureFrom = startAt + opts.warmupS * 1000
    const measureTo = measureFrom + opts.durationS * 1000
    log(`sending ${int(opts.ratePerSecond)} messages/s: ${opts.warmupS} s warm-up + ${opts.durationS} s measured`)
    for (const w of workers) {
      w.send({ cmd: 'run', ratePerSecond: opts.ratePerSecond / workers.length, startAt, measureFrom, measureTo, textLength: opts.textLength })
    }
    const stats = () => server.request({ cmd: 'stats' }, 'stats')
    await sleep(Math.max(0, measureFrom - now()))
    const first = await stats()
    const machine0 = machineCpu()
    const self0 = cpuSnapshot()
    const samples: ChatServerStats[] = [first]
    // One sample a second, on the second, for RSS peaks and CPU per second.
    for (let i = 1; measureFrom + i * 1000 < measureTo - 250; i++) {
      await sleep(Math.max(0, measureFrom + i * 1000 - now()))
      samples.push(await stats())
    }
    await sleep(Math.max(0, measureTo - now()))
    const last = await stats()
    const machine1 = machineCpu()
    const self1 = cpuSnapshot()
    samples.push(last)

    // -- drain: every measured message should reach every other participant.
    const firstReports = await Promise.all(workers.map((w) => w.request({ cmd: 'report' }, 'report', 60_000)))
    const expected = sum(firstReports.map((r) => r.sentMeasured)) * (opts.participants - 1)
    const drainStart = performance.now()
    let received = 0
    let lastChange = performance.now()
    while (performance.now() - drainStart < 10_000 && performance.now() - lastChange < 2000) {
      const counts = await Promise.all(workers.map((w) => w.request({ cmd: 'counts' }, 'counts')))
      const r = sum(counts.map((c) => c.received))
      if (r !== received) lastChange = performance.now()
      received = r
      if (received >= expected) break
      await sleep(100)
    }
    const drainMs = performance.now() - drainStart
    const reports: ChatReport[] = await Promise.all(workers.map((w) => w.request({ cmd: 'report' }, 'report', 60_000)))

    await Promise.all(workers.map((w) => w.request({ cmd: 'close' }, 'closed', 30_000)))
    const stopped = await server.request({ cmd: 'stop' }, 'stopped', 60_000)
    // Children exit on their own once closed; do not let a stray handle hold the run.
    await Promise.race([Promise.all([server.exited, ...workers.map((w) => w.exited)]), sleep(10_000)])

    // -- figures
    const windowS = opts.durationS
    const gw = cpuDelta(first.cpu, last.cpu)
    const gwWallMs = (last.cpu.monotonicUs - first.cpu.monotonicUs) / 1000
    const sentMeasured = sum(reports.map((r) => r.sentMeasured))
    const receivedMeasured = sum(reports.map((r) => r.receivedMeasured))
    const loadCpuMs = sum(reports.map((r) => cpuDelta(r.cpuFrom, r.cpuTo).cpuMs))
    let otherCores: number | undefined
    if (machine0 && machine1) {
      const ours = gw.cpuMs + loadCpuMs + cpuDelta(self0, self1).cpuMs
      otherCores = Math.max(0, (machine1.busyMs - machine0.busyMs - ours) / gwWallMs)
    }
    const coresPerSecond: number[] = []
    for (let i = 1; i < samples.length; i++) {
      const a = samples[i - 1]!.cpu
      const b = samples[i]!.cpu
      coresPerSecond.push(Number((cpuDelta(a, b).cpuMs / ((b.monotonicUs - a.monotonicUs) / 1000)).toFixed(2)))
    }
    const result: ChatResult = {
      topology: {
        threads: opts.threads,
        participants: opts.participants,
        users: ready.accounts.length,
        patients: ready.threads.length,
        providers: opts.providers,
        sockets: index,
        socketsConnected,
        workers: opts.workers,
      },
      setup: { gatewayStartupMs: ready.startupMs, seedMs: ready.seedMs, signInMs, connectMs },
      window: { durationS: windowS, targetRate: opts.ratePerSecond },
      sent: {
        measured: sentMeasured,
        perSecond: sentMeasured / windowS,
        total: sum(reports.map((r) => r.sentTotal)),
        acknowledged: sum(reports.map((r) => r.ackedMeasured)),
        maxScheduleLagMs: Math.max(...reports.map((r) => r.maxScheduleLagMs)),
      },
      deliveries: {
        expected,
        received: receivedMeasured,
        missing: expected - receivedMeasured,
        perSecond: receivedMeasured / windowS,
        seqGaps: sum(reports.map((r) => r.seqGaps)),
        duplicates: sum(reports.map((r) => r.duplicates)),
        drainMs,
        receivedWholeRun: sum(reports.map((r) => r.receivedTotal)),
      },
      deliveryLatency: LatencyHistogram.from(reports.map((r) => r.deliveryLatency)).summary(),
      ackLatency: LatencyHistogram.from(reports.map((r) => r.ackLatency)).summary(),
      gateway: {
        cores: gw.cpuMs / gwWallMs,
        loopUtilisation: gw.loopUtilisation,
        cpuUsPerMessage: sentMeasured ? (gw.cpuMs * 1000) / sentMeasured : Number.NaN,
        cpuUsPerDelivery: receivedMeasured ? (gw.cpuMs * 1000) / receivedMeasured : Number.NaN,
        rssMiB: { start: first.rssBytes / MiB, end: last.rssBytes / MiB, peak: Math.max(...samples.map((s) => s.rssBytes)) / MiB },
        heapUsedMiB: last.heapUsedBytes / MiB,
        coresPerSecond,
        storedMessages: stopped.storedMessages,
        auditRows: stopped.auditRows,
      },
      load: { cores: loadCpuMs / gwWallMs },
      otherCores,
      errors: merge(reports.map((r) => r.errors)),
      closes: merge(reports.map((r) => r.closes)),
      frames: merge(reports.map((r) => r.frames)),
    }
    if (opts.profile) {
      const file = newestProfile(profileDir)
      if (file) result.profile = summariseProfile(file, first.cpu.monotonicUs, last.cpu.monotonicUs, chatKeys)
    }
    return result
  } finally {
    server.kill()
    for (const w of workers) w.kill()
  }
}

// ---------------------------------------------------------------- report

function report(opts: Options, r: ChatResult): string[] {
  const out: string[] = []
  const d = r.deliveryLatency
  const a = r.ackLatency
  const g = r.gateway
  const counts = (rec: Record<string, number>) => (Object.keys(rec).length ? Object.entries(rec).map(([k, v]) => `${k} ${int(v)}`).join(', ') : 'none')
  out.push('', 'Results')
  out.push(`sockets connected:      ${int(r.topology.socketsConnected)} of ${int(r.topology.sockets)} (${r.topology.threads} threads x ${r.topology.participants} participants; ${r.topology.users} users)`)
  out.push(`messages sent:          ${int(r.sent.perSecond)}/s achieved of ${int(opts.ratePerSecond)}/s (${int(r.sent.measured)} in ${opts.durationS} s; ${int(r.sent.acknowledged)} answered with sent)`)
  out.push(`deliveries:             ${int(r.deliveries.perSecond)}/s to the other participants' sockets`)
  out.push(
    `delivered / expected:   ${int(r.deliveries.received)} / ${int(r.deliveries.expected)} (sent x ${r.topology.participants - 1} other participants)` +
      (r.deliveries.missing === 0 ? ', none lost' : `, ${int(r.deliveries.missing)} MISSING`) +
      `; seq gaps ${int(r.deliveries.seqGaps)}, duplicates ${int(r.deliveries.duplicates)}`,
  )
  out.push(`delivery latency ms:    p50 ${ms(d.p50Ms)}, p90 ${ms(d.p90Ms)}, p99 ${ms(d.p99Ms)}, p99.9 ${ms(d.p999Ms)}, max ${ms(d.maxMs)}, mean ${ms(d.meanMs)} (n=${int(d.count)})`)
  out.push(`send -> sent ms:        p50 ${ms(a.p50Ms)}, p90 ${ms(a.p90Ms)}, p99 ${ms(a.p99Ms)}, max ${ms(a.maxMs)} (the sender's own answer)`)
  out.push(
    `gateway process:        CPU ${g.cores.toFixed(2)} cores (event loop busy ${pct(g.loopUtilisation)}), ${int(g.cpuUsPerMessage)} µs CPU/message, ` +
      `${g.cpuUsPerDelivery.toFixed(1)} µs CPU/delivery; RSS ${int(g.rssMiB.start)} -> ${int(g.rssMiB.end)} MiB (peak ${int(g.rssMiB.peak)}), heap used ${int(g.heapUsedMiB)} MiB`,
  )
  out.push(`                        CPU per second of the window (cores): ${g.coresPerSecond.map((c) => c.toFixed(2)).join(' ')}`)
  out.push(
    `load processes:         ${r.load.cores.toFixed(2)} cores in ${r.topology.workers} processes; sender max lag ${ms(r.sent.maxScheduleLagMs)} ms` +
      (r.otherCores === undefined ? '' : `; other processes on the machine ${r.otherCores.toFixed(2)} cores`),
  )
  out.push(`errors from the gateway: ${counts(r.errors)}; sockets closed during the run: ${counts(r.closes)}`)
  out.push(`frames received:        ${counts(r.frames)}`)
  out.push(
    `setup:                  gateway start ${(r.setup.gatewayStartupMs / 1000).toFixed(1)} s, seeding ${(r.setup.seedMs / 1000).toFixed(1)} s, ` +
      `sign-in ${(r.setup.signInMs / 1000).toFixed(1)} s, sockets ${(r.setup.connectMs / 1000).toFixed(1)} s; drain after the window ${int(r.deliveries.drainMs)} ms; ` +
      `${int(g.storedMessages)} messages stored, ${int(g.auditRows)} audit rows`,
  )
  out.push('')
  const met = d.p99Ms < DELIVERY_P99_TARGET_MS
  out.push(`delivery p99 at ${int(opts.ratePerSecond)} messages/s with ${int(r.topology.socketsConnected)} sockets: ${ms(d.p99Ms)} ms  (target < ${DELIVERY_P99_TARGET_MS} ms: ${met ? 'met' : 'NOT met'})`)
  if ((r.otherCores ?? 0) > 0.25) out.push(`  note: other processes used ${r.otherCores!.toFixed(2)} cores during the window; figures may be disturbed`)
  if (r.profile) {
    const p = r.profile
    out.push('', `CPU profile of the gateway's main thread during the measured window (${ms(p.windowMs)} ms of samples, ${int(r.sent.measured)} messages; ${p.file}):`)
    const row = (c: ProfileSummary['categories'][number]) =>
      `      ${pad(c.name, 62)} ${lpad(ms(c.ms), 7)} ms ${lpad(pct(c.share), 5)} ${lpad(r.sent.measured ? ((c.ms * 1000) / r.sent.measured).toFixed(1) : '-', 7)} µs/message`
    out.push('    self time by area (main thread time, on CPU or blocked in a call):')
    for (const c of p.categories.filter((c) => c.share >= 0.005)) out.push(row(c))
    out.push('    inclusive time of key frames:')
    for (const c of p.inclusive) out.push(row(c))
  }
  return out
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const opts = options()
  const root = mkdtempSync(path.join(os.tmpdir(), 'rpm-bench-chat-'))
  const machine = machineInfo(root)
  const print = (line = '') => process.stdout.write(line + '\n')
  print('rpm-gateway live messaging benchmark (WebSocket)')
  for (const line of machineLines(machine, root)) print(line)
  print(
    `load: ${int(opts.threads * opts.participants)} WebSocket clients (ws) in ${opts.workers} load processes, ${opts.threads} threads x ${opts.participants} participants ` +
      `(1 patient + ${opts.participants - 1} providers from a pool of ${opts.providers}); tokens by REST sign-in, offered as a subprotocol`,
  )
  print(
    `phases: ${int(opts.ratePerSecond)} messages/s open loop from random sockets, ${opts.textLength} characters each; ` +
      `${opts.warmupS} s warm-up + ${opts.durationS} s measured${opts.quick ? ' (--quick)' : ''}`,
  )
  const notes = Object.entries(opts.settings).map(([k, v]) => `${k}=${v}`)
  if (notes.length) print(`gateway settings: ${notes.join(', ')}`)
  print()

  const profileDir = path.join(RESULTS_DIR, 'profiles')
  if (opts.profile) mkdirSync(profileDir, { recursive: true })
  let result: ChatResult
  try {
    result = await runChat(opts, path.join(root, 'gateway'), profileDir)
  } finally {
    rmSync(root, { recursive: true, force: true })
  }

  for (const line of report(opts, result)) print(line)

  mkdirSync(RESULTS_DIR, { recursive: true })
  const file = path.join(RESULTS_DIR, 'chat-latest.json')
  const p99 = result.deliveryLatency.p99Ms
  writeFileSync(
    file,
    JSON.stringify(
      {
        at: new Date().toISOString(),
        command: `node --import tsx bench/chat.ts ${process.argv.slice(2).join(' ')}`.trim(),
        machine,
        options: opts,
        result,
        targets: {
          deliveryP99Ms: { value: p99, target: DELIVERY_P99_TARGET_MS, atMessagesPerSecond: opts.ratePerSecond, sockets: result.topology.socketsConnected, met: p99 < DELIVERY_P99_TARGET_MS },
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
  process.stderr.write(`bench:chat failed: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
