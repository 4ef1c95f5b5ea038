/**
 * `npm run soak`: a long run of the real `rpm-gateway start` under steady simulated ingest, with
 * the failures of docs/reliability.md happening on a schedule: SIGKILL and restart, InfluxDB
 * (a real VictoriaMetrics) going away and coming back, and hostile connections (idle sockets,
 * garbage, oversized packets). Each minute it prints the gateway's memory, event-loop lag,
 * PUBACK latency and journal counts; at the end a summary. It exits 1 when an acknowledged
 * reading is missing from the journal or stored twice, or a reading never reached InfluxDB.
 *
 *   npm run soak                      10 minutes, 6 devices, 10 readings/s each
 *   npm run soak -- --minutes 60 --devices 20 --rate 5
 *   npm run soak -- --minutes 1       a smoke run: everything happens, faster
 *   npm run soak -- --no-influx       without VictoriaMetrics
 *   npm run soak -- --no-kill         no SIGKILLs: one gateway process for the whole run (memory over time)
 *   npm run soak -- --json            the summary as one JSON document on stdout
 *
 * Everything runs on this machine (127.0.0.1) in a temporary directory, removed at the end
 * unless --keep.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import tls from 'node:tls'
import { parseArgs } from 'node:util'
import { build } from '../device-simulator/readings.ts'
import {
  caOf, checkJournal, cleanEnv, GatewayProcess, memoryOf, percentile, provisionOffline, readJournal, ResendingDevice, round1, scrapeMetrics, sleep,
} from '../test/integration/reliability/harness.ts'
import { freePort, Victoria } from '../test/victoria.ts'

const { values: args } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    devices: { type: 'string', default: '6' },
    rate: { type: 'string', default: '10' },
    'no-influx': { type: 'boolean', default: false },
    'no-kill': { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
})
if (args.help) {
  console.log('usage: npm run soak -- [--minutes N] [--devices N] [--rate READINGS_PER_SECOND_PER_DEVICE] [--no-influx] [--no-kill] [--keep] [--json]')
  process.exit(0)
}
const minutes = Number(args.minutes)
const deviceCount = Number(args.devices)
const rate = Number(args.rate)
if (!(minutes > 0) || !Number.isInteger(deviceCount) || deviceCount < 1 || !(rate > 0)) {
  console.error('error: --minutes must be > 0, --devices a whole number >= 1, --rate > 0')
  process.exit(2)
}
const withInflux = !args['no-influx']
const withKills = !args['no-kill']
const totalMs = minutes * 60_000
/** Printed lines go to stderr with --json, so stdout holds only the summary. */
const say = (line: string) => (args.json ? process.stderr : process.stdout).write(`${line}\n`)
const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v))
// The schedule scales with the run so that a one-minute smoke run sees every failure.
const KILL_EVERY_MS = clamp(totalMs / 6, 15_000, 120_000)
const FLAP_EVERY_MS = clamp(totalMs / 4, 25_000, 180_000)
const FLAP_FOR_MS = clamp(FLAP_EVERY_MS / 3, 8_000, 45_000)
const HOSTILE_EVERY_MS = totalMs < 180_000 ? 15_000 : 30_000
const REPORT_EVERY_MS = 60_000

interface Minute {
  minute: number
  rssMb: number
  heapUsedMb: number
  eventLoopLagP99Ms: number
  pubackMs: { p50: number; p99: number; max: number }
  acknowledged: number
  journalRows: number
  pendingOnDevices: number
  influxBacklog: number | undefined
  mqttConnections: number | undefined
}

async function main(): Promise<number> {
  const root = mkdtempSync(path.join(os.tmpdir(), 'rpm-soak-'))
  const dataDir = path.join(root, 'data')
  const mqttPort = await freePort()
  const httpPort = await freePort()
  let vm: Victoria | undefined
  let gateway: GatewayProcess | undefined
  const fleet: ResendingDevice[] = []
  const hostileSockets = new Set<net.Socket>()
  const events: string[] = []
  const note = (e: string) => {
    events.push(`${round1((Date.now() - startedAt) / 1000)}s ${e}`)
    say(`  [${new Date().toISOString().slice(11, 19)}] ${e}`)
  }
  let startedAt = Date.now()
  try {
    const provisioned = await provisionOffline(
      dataDir,
      Array.from({ length: deviceCount }, (_, i) => ({ id: `soak-${i + 1}`, patient: `soak-pt-${(i % Math.max(1, Math.floor(deviceCount / 2))) + 1}`, kind: i % 3 === 2 ? ('oximeter' as const) : ('bp_cuff' as const) })),
    )
    const env: Record<string, string> = { RPM_MQTT_PORT: String(mqttPort), RPM_HTTP_PORT: String(httpPort), RPM_LOG_LEVEL: 'warn' }
    if (withInflux) {
      vm = await Victoria.start()
      Object.assign(env, { RPM_INFLUX_URL: vm.url, RPM_INFLUX_TOKEN: 'soak', RPM_INFLUX_ORG: 'soak', RPM_INFLUX_BUCKET: 'soak', RPM_INFLUX_MAX_RETRY_DELAY_MS: '2000' })
    }
    const start = async () => {
      const t0 = Date.now()
      gateway = await GatewayProcess.start(dataDir, cleanEnv(env))
      return Date.now() - t0
    }
    const firstStartMs = await start()
    const url = `mqtts://127.0.0.1:${mqttPort}`
    const metricsUrl = `http://127.0.0.1:${httpPort}/metrics`
    /** /metrics, retried while the gateway is restarting. */
    const scrapeWhenUp = async (): Promise<Map<string, number>> => {
      for (let i = 0; i < 40; i++) {
        try {
          return await scrapeMetrics(metricsUrl)
        } catch {
          await sleep(250)
        }
      }
      return new Map()
    }
    const ca = caOf(dataDir)
    say(`soak: ${minutes} min, ${deviceCount} devices x ${rate} readings/s, ${withKills ? `kill every ~${round1(KILL_EVERY_MS / 1000)}s` : 'no kills'}, InfluxDB ${withInflux ? `down ${round1(FLAP_FOR_MS / 1000)}s every ${round1(FLAP_EVERY_MS / 1000)}s` : 'off'}, hostile connections every ${HOSTILE_EVERY_MS / 1000}s; data in ${dataDir}`)
    say(`gateway started in ${firstStartMs} ms (pid ${gateway!.child.pid})`)

    for (const d of provisioned) {
      fleet.push(
        new ResendingDevice(d, {
          url: () => url,
          ca,
          inFlight: 8,
          intervalMs: 1000 / rate,
          maxBackoffMs: 2000,
          reading: (seq) => (d.kind === 'oximeter' ? build.spo2(94 + (seq % 5), 60 + (seq % 30), { seq }) : build.bloodPressure(112 + (seq % 25), 70 + (seq % 15), 55 + (seq % 40), { seq })),
        }).start(),
      )
    }
    startedAt = Date.now()
    const endsAt = startedAt + totalMs

    // ------------------------------------------------------------ the failures, on a schedule
    const kills: Array<{ atS: number; restartMs: number; inFlightAtKill: number; heldAtRestart: number }> = []
    const flaps: Array<{ atS: number; downS: number; backlogAtReturn?: number; drainedS?: number }> = []
    const hostile = { rounds: 0, idle: 0, garbage: 0, oversized: 0, noHandshake: 0, noHandshakeCheckedAt60s: 0, noHandshakeStillOpenAfter60s: 0, failed: 0 }
    let stopping = false
    let wake!: () => void
    const stopped = new Promise<void>((resolve) => (wake = resolve))
    /** Sleeps, or less when the run is winding down. */
    const nap = (ms: number) => Promise.race([sleep(ms), stopped])

    const killer = (async () => {
      if (!withKills) return
      for (;;) {
        await nap(KILL_EVERY_MS * (0.75 + Math.random() * 0.5))
        if (stopping || Date.now() > endsAt - 10_000) return
        const inFlightAtKill = fleet.reduce((n, d) => n + d.pendingSeqs.length, 0)
        await gateway!.kill('SIGKILL')
        const restartMs = await start()
        const heldAtRestart = fleet.reduce((n, d) => n + d.pendingSeqs.length, 0)
        kills.push({ atS: round1((Date.now() - startedAt) / 1000), restartMs, inFlightAtKill, heldAtRestart })
        note(`SIGKILL #${kills.length} with ${inFlightAtKill} readings in flight; restarted in ${restartMs} ms; devices held ${heldAtRestart} readings meanwhile`)
      }
    })()

    const flapper = (async () => {
      if (!vm) return
      for (;;) {
        await nap(FLAP_EVERY_MS * (0.75 + Math.random() * 0.5))
        if (stopping || Date.now() > endsAt - FLAP_FOR_MS - 10_000) return
        const t0 = Date.now()
        await vm.stop()
        note(`InfluxDB down for ${round1(FLAP_FOR_MS / 1000)}s`)
        await nap(FLAP_FOR_MS)
        await vm.start()
        const flap: (typeof flaps)[number] = { atS: round1((t0 - startedAt) / 1000), downS: round1((Date.now() - t0) / 1000) }
        flaps.push(flap)
        const backAt = Date.now()
        flap.backlogAtReturn = (await scrapeWhenUp()).get('rpm_timeseries_backlog_readings')
        note(`InfluxDB back; backlog ${flap.backlogAtReturn ?? '?'} readings`)
        // How long the writer takes to catch up (steady ingest keeps a small backlog).
        for (let i = 0; i < 120 && !stopping; i++) {
          await sleep(500)
          const backlog = (await scrapeWhenUp()).get('rpm_timeseries_backlog_readings')
          if (backlog !== undefined && backlog < rate * deviceCount) {
            flap.drainedS = round1((Date.now() - backAt) / 1000)
            break
          }
        }
      }
    })()

    const attacker = (async () => {
      for (;;) {
        await nap(HOSTILE_EVERY_MS)
        if (stopping || Date.now() > endsAt - 5_000) return
        hostile.rounds++
        const open = (how: 'tls' | 'tcp-to-tls'): Promise<net.Socket | undefined> =>
          new Promise((resolve) => {
            const s = how === 'tls' ? tls.connect({ host: '127.0.0.1', port: mqttPort, ca, servername: 'localhost' }) : net.connect(mqttPort, '127.0.0.1')
            let opened = false
            s.on('error', (err) => {
              if (opened) return // the gateway cut it, as it should
              hostile.failed++
              if (hostile.failed <= 3) note(`hostile ${how} connection failed: ${err.message}`)
              resolve(undefined)
            })
            s.once(how === 'tls' ? 'secureConnect' : 'connect', () => {
              opened = true
              hostileSockets.add(s)
              s.once('close', () => hostileSockets.delete(s))
              resolve(s)
            })
            setTimeout(() => resolve(undefined), 10_000).unref()
          })
        // Idle TLS connections that never send CONNECT (closed by the gateway after 30 s).
        for (let i = 0; i < 40; i++) if (await open('tls')) hostile.idle++
        // Garbage and oversized packets after the handshake.
        for (let i = 0; i < 10; i++) {
          const s = await open('tls')
          if (!s) continue
          s.write(randomBytes(512 + Math.floor(Math.random() * 4096)))
          hostile.garbage++
        }
        for (let i = 0; i < 3; i++) {
          const s = await open('tls')
          if (!s) continue
          s.write(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]))
          s.write(randomBytes(64 * 1024))
          hostile.oversized++
        }
        // TCP to the TLS port, no handshake: closed here after 60 s if the gateway has not.
        for (let i = 0; i < 5; i++) {
          const s = await open('tcp-to-tls')
          if (!s) continue
          hostile.noHandshake++
          setTimeout(() => {
            hostile.noHandshakeCheckedAt60s++
            if (!s.destroyed) {
              hostile.noHandshakeStillOpenAfter60s++
              s.destroy()
            }
          }, 60_000).unref()
        }
      }
    })()

    // ------------------------------------------------------------ the report each minute
    const perMinute: Minute[] = []
    let lastLatencyIndex = fleet.map(() => 0)
    const report = async () => {
      const latencies: number[] = []
      fleet.forEach((d, i) => {
        const from = Math.min(lastLatencyIndex[i]!, d.latenciesMs.length)
        latencies.push(...d.latenciesMs.slice(from))
      })
      lastLatencyIndex = fleet.map((d) => d.latenciesMs.length)
      const m = await scrapeMetrics(metricsUrl).catch(() => new Map<string, number>())
      const mem = gateway?.running ? await memoryOf(gateway).catch(() => ({ rssMb: Number.NaN, heapUsedMb: Number.NaN })) : { rssMb: Number.NaN, heapUsedMb: Number.NaN }
      let journalRows = Number.NaN
      try {
        journalRows = [...readJournal(dataDir).values()].reduce((n, v) => n + v, 0)
      } catch {
        // the database is being opened by a restarting gateway
      }
      const row: Minute = {
        minute: perMinute.length + 1,
        rssMb: mem.rssMb,
        heapUsedMb: mem.heapUsedMb,
        eventLoopLagP99Ms: round1((m.get('rpm_nodejs_eventloop_lag_p99_seconds') ?? Number.NaN) * 1000),
        pubackMs: { p50: round1(percentile(latencies, 50)), p99: round1(percentile(latencies, 99)), max: round1(percentile(latencies, 100)) },
        acknowledged: fleet.reduce((n, d) => n + d.acked.size, 0),
        journalRows,
        pendingOnDevices: fleet.reduce((n, d) => n + d.pendingSeqs.length, 0),
        influxBacklog: m.get('rpm_timeseries_backlog_readings'),
        mqttConnections: m.get('rpm_mqtt_connections'),
      }
      perMinute.push(row)
      say(
        `minute ${row.minute}: rss ${row.rssMb} MB, heap ${row.heapUsedMb} MB, event-loop lag p99 ${row.eventLoopLagP99Ms} ms, ` +
          `PUBACK p50/p99/max ${row.pubackMs.p50}/${row.pubackMs.p99}/${row.pubackMs.max} ms, acknowledged ${row.acknowledged}, journal ${row.journalRows}, ` +
          `held by devices ${row.pendingOnDevices}, InfluxDB backlog ${row.influxBacklog ?? '-'}, devices connected ${row.mqttConnections ?? '-'}`,
      )
    }
    while (Date.now() < endsAt) {
      await sleep(Math.min(REPORT_EVERY_MS, endsAt - Date.now()))
      await report()
    }

    // ------------------------------------------------------------ wind down and check
    stopping = true
    wake()
    await Promise.all([killer, flapper, attacker])
    if (vm && !vm.running) await vm.start()
    say('draining: devices stop measuring and wait for their last PUBACKs')
    await Promise.all(fleet.map((d) => d.drain(120_000)))
    const check = checkJournal(dataDir, fleet)
    let influx: { journal: number; written?: number; backlog?: number; ok: boolean } | undefined
    if (vm) {
      const journal = [...readJournal(dataDir).values()].reduce((n, v) => n + v, 0)
      let backlog: number | undefined
      for (let i = 0; i < 120; i++) {
        backlog = (await scrapeWhenUp()).get('rpm_timeseries_backlog_readings')
        if (backlog === 0) break
        await sleep(500)
      }
      influx = { journal, backlog, ok: backlog === 0 }
    }
    const exit = await gateway!.kill('SIGTERM')
    const all = fleet.flatMap((d) => d.latenciesMs)
    const summary = {
      ok: check.missing.length === 0 && check.duplicated.length === 0 && (influx?.ok ?? true) && exit.code === 0,
      minutes,
      devices: deviceCount,
      readingsPerSecond: deviceCount * rate,
      acknowledged: check.checked,
      journalRows: check.rows,
      missing: check.missing.length,
      duplicated: check.duplicated.length,
      storedWithoutPuback: check.unacknowledged.length,
      resentAfterLostConnection: fleet.reduce((n, d) => n + d.unacknowledged, 0),
      reconnects: fleet.reduce((n, d) => n + d.connects, 0),
      kills,
      influxFlaps: flaps,
      influx,
      hostile,
      pubackMs: { p50: round1(percentile(all, 50)), p99: round1(percentile(all, 99)), max: round1(percentile(all, 100)) },
      memory: perMinute.length ? { firstMinute: { rssMb: perMinute[0]!.rssMb, heapUsedMb: perMinute[0]!.heapUsedMb }, lastMinute: { rssMb: perMinute.at(-1)!.rssMb, heapUsedMb: perMinute.at(-1)!.heapUsedMb }, maxRssMb: Math.max(...perMinute.map((p) => p.rssMb).filter(Number.isFinite)) } : undefined,
      perMinute,
      stopExit: exit,
      examples: { missing: check.missing.slice(0, 10), duplicated: check.duplicated.slice(0, 10) },
    }
    if (args.json) process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`)
    else {
      say('')
      say(`summary: ${summary.ok ? 'OK' : 'FAILED'}`)
      say(`  acknowledged ${summary.acknowledged}, in the journal ${summary.journalRows}: missing ${summary.missing}, stored twice ${summary.duplicated}`)
      say(`  ${kills.length} SIGKILLs${kills.length ? ` (restart ${kills.map((k) => k.restartMs).join('/')} ms)` : ''}, ${summary.resentAfterLostConnection} publishes resent after a lost connection, ${summary.reconnects} reconnects`)
      if (influx) say(`  InfluxDB: ${flaps.length} outages (${flaps.map((f) => `${f.downS}s down, backlog ${f.backlogAtReturn ?? '?'}, caught up in ${f.drainedS ?? '?'}s`).join('; ')}); backlog at the end ${influx.backlog ?? '?'}`)
      say(`  hostile: ${hostile.rounds} rounds, ${hostile.idle} idle, ${hostile.garbage} garbage, ${hostile.oversized} oversized, ${hostile.noHandshake} without TLS handshake (of ${hostile.noHandshakeCheckedAt60s} checked at 60 s, ${hostile.noHandshakeStillOpenAfter60s} still open)`)
      say(`  PUBACK p50/p99/max ${summary.pubackMs.p50}/${summary.pubackMs.p99}/${summary.pubackMs.max} ms`)
      if (summary.memory) say(`  gateway memory: rss ${summary.memory.firstMinute.rssMb} MB (minute 1) -> ${summary.memory.lastMinute.rssMb} MB (last), max ${summary.memory.maxRssMb} MB; heap ${summary.memory.firstMinute.heapUsedMb} -> ${summary.memory.lastMinute.heapUsedMb} MB`)
      say(`  SIGTERM at the end: exit ${exit.code ?? exit.signal}`)
      if (!summary.ok) say(`  first problems: ${JSON.stringify(summary.examples)}`)
    }
    return summary.ok ? 0 : 1
  } finally {
    for (const s of hostileSockets) s.destroy()
    await Promise.all(fleet.map((d) => d.close()))
    await gateway?.kill('SIGKILL')
    await vm?.close()
    if (args.keep) say(`kept ${root}`)
    else rmSync(root, { recursive: true, force: true })
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`soak: ${(err as Error).stack ?? String(err)}`)
    process.exit(2)
  },
)
