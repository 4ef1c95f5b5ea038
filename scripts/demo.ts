/**
 * `npm run demo`: the gateway with a small made-up clinic and simulated devices, in one process,
 * on embedded defaults. Its data lives in ./demo-data (never ./data), marked as demo data.
 *
 *   npm run demo                          seed (or reuse) the clinic, start, print the sign-ins
 *   npm run demo -- --reset               start over with a fresh demo clinic
 *   npm run demo -- --port 9090           another HTTP port (0: any free one)
 *   npm run demo -- --json --duration 60  one JSON document on stdout; stop after 60 s
 *
 * Ctrl-C stops the devices, then the gateway.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander'
import pino from 'pino'
import { buildGateway, type Gateway } from '../src/app.ts'
import { loadConfig } from '../src/config/load.ts'
import { isRpmError } from '../src/errors.ts'
import { createLogger } from '../src/log.ts'
import { banner, type DemoFacts, jsonDocument } from './demo/banner.ts'
import { PATIENTS, patientById, scheduleSoonDoses, seedClinic, writeDeviceFile } from './demo/clinic.ts'
import { DEFAULT_DEMO_DIR, DemoRefusal, type PreparedDir, prepareDataDir } from './demo/datadir.ts'
import { Fleet, PACE } from './demo/fleet.ts'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const WEB_INDEX = path.join(ROOT, 'web', 'dist', 'index.html')
const HOST = '127.0.0.1'

interface Options {
  dataDir: string
  port: number
  mqttPort: number
  reset: boolean
  json: boolean
  duration?: number
  fast: boolean
  webBuild: boolean
  verbose: boolean
}

const integer = (name: string, min: number, max: number) => (value: string): number => {
  const n = Number(value)
  if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be a whole number from ${min} to ${max}`)
  return n
}

function parseOptions(argv: string[]): Options {
  const program = new Command('npm run demo --')
    .description('Run the gateway with a made-up clinic (fake patients) and simulated devices, in one process. Demo data only: it lives in its own directory, never in ./data. RPM_* environment variables are ignored: the demo runs on the embedded defaults.')
    .option('--data-dir <dir>', 'the demo\'s data directory (never the one `npm start` uses)', `./${DEFAULT_DEMO_DIR}`)
    .option('--port <n>', 'HTTP port (console, API); 0 picks a free one; a port in use falls back to a free one', integer('--port', 0, 65535), 8080)
    .option('--mqtt-port <n>', 'MQTT over TLS port; 0 picks a free one; a port in use falls back to a free one', integer('--mqtt-port', 0, 65535), 8883)
    .option('--reset', 'wipe the demo data directory first and seed a fresh clinic')
    .option('--json', 'print one JSON document (URL, sign-ins, patients) on stdout instead of the banner; activity goes to stderr (through npm: npm run -s demo -- --json)')
    .option('--duration <seconds>', 'stop by itself after this long', integer('--duration', 1, 7 * 86_400))
    .option('--fast', 'a quicker story, for tests: readings every ~2 s, the first crisis at ~5 s')
    .addOption(new Option('--no-web-build', 'do not build the web console when web/dist is missing'))
    .option('--verbose', 'the gateway\'s info logs on stderr (default: warnings and errors only)')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
  program.parse(argv, { from: 'user' })
  const o = program.opts<{ dataDir: string; port: number; mqttPort: number; reset?: boolean; json?: boolean; duration?: number; fast?: boolean; webBuild: boolean; verbose?: boolean }>()
  return {
    dataDir: o.dataDir,
    port: o.port,
    mqttPort: o.mqttPort,
    reset: Boolean(o.reset),
    json: Boolean(o.json),
    ...(o.duration !== undefined ? { duration: o.duration } : {}),
    fast: Boolean(o.fast),
    webBuild: o.webBuild,
    verbose: Boolean(o.verbose),
  }
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer()
    server.once('error', () => resolve(false))
    server.listen({ host: HOST, port, exclusive: true }, () => server.close(() => resolve(true)))
  })
}

/** The port asked for, or 0 (any free one) when it is taken, with a note saying so. */
async function choosePort(port: number, what: string, notes: string[]): Promise<number> {
  if (port === 0 || (await portFree(port))) return port
  notes.push(`port ${port} (${what}) is in use: using a free port instead`)
  return 0
}

/** Builds web/dist when it is missing; a failed build leaves the gateway running without the console. */
function buildConsole(enabled: boolean, log: (s: string) => void): { built: boolean; note: string | null } {
  if (existsSync(WEB_INDEX)) return { built: true, note: null }
  if (!enabled) return { built: false, note: 'not built (--no-web-build): npm run build:web, then restart the demo' }
  log('Building the web console (web/dist) first ...')
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'build-web.mjs'), '--if-missing'], { cwd: ROOT, stdio: ['ignore', 2, 2], timeout: 300_000 })
  if (existsSync(WEB_INDEX)) return { built: true, note: null }
  const why = r.error ? r.error.message : r.status !== 0 ? `the build failed (exit ${r.status ?? r.signal})` : 'the build made no web/dist/index.html'
  return { built: false, note: `NOT BUILT: ${why}. The API and /docs work meanwhile; npm run build:web, then restart the demo` }
}

function elapsed(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000))
  return s < 60 ? `+${s}s` : `+${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`
}

async function main(argv: string[]): Promise<number> {
  let opts: Options
  try {
    opts = parseOptions(argv)
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode
    throw err
  }
  const out = opts.json ? process.stderr : process.stdout
  let t0: number | null = null
  const say = (line: string) => out.write(`${t0 === null ? '' : `${elapsed(Date.now() - t0).padStart(7)}  `}${line}\n`)

  // Ctrl-C at any point: the steps below look at `stopRequested`; once running, stop at once.
  let stopRequested: string | null = null
  let onStop: (() => void) | null = null
  let signals = 0
  const signal = (name: string) => {
    signals++
    if (signals > 1) {
      process.stderr.write(`${name} again: exiting without waiting\n`)
      process.exit(130)
    }
    stopRequested = name
    onStop?.()
  }
  process.on('SIGINT', () => signal('SIGINT'))
  process.on('SIGTERM', () => signal('SIGTERM'))

  let dir: PreparedDir
  try {
    dir = prepareDataDir(opts.dataDir, { reset: opts.reset })
  } catch (err) {
    if (err instanceof DemoRefusal) {
      process.stderr.write(`demo: ${err.message}\n`)
      return 1
    }
    throw err
  }

  let gateway: Gateway | undefined
  let fleet: Fleet | undefined
  const timers: NodeJS.Timeout[] = []
  let readingsThisRun = 0
  const stop = async (): Promise<void> => {
    for (const t of timers) clearTimeout(t)
    if (fleet) {
      await fleet.stop().catch((err: unknown) => process.stderr.write(`demo: stopping the devices: ${(err as Error).message}\n`))
      writeDeviceFile(dir.dir, fleet.credentials())
    }
    if (gateway) await gateway.stop().catch((err: unknown) => process.stderr.write(`demo: stopping the gateway: ${(err as Error).message}\n`))
    dir.release()
  }

  try {
    const notes: string[] = []
    const consoleState = buildConsole(opts.webBuild, (s) => process.stderr.write(`${s}\n`))
    if (stopRequested) return (await stop(), 0)
    const httpPort = await choosePort(opts.port, 'HTTP', notes)
    const mqttPort = await choosePort(opts.mqttPort, 'MQTT over TLS', notes)

    const config = loadConfig({
      env: {},
      overrides: {
        dataDir: dir.dir,
        'log.level': opts.verbose ? 'info' : 'warn',
        'http.host': HOST,
        'http.port': httpPort,
        'mqtt.host': HOST,
        'mqtt.port': mqttPort,
      },
    })
    // stdout is the banner's (or the JSON document's); the gateway's logs (ids only) go to stderr.
    gateway = await buildGateway(config, { log: createLogger(config.log.level, pino.destination(2)) })
    const seed = await seedClinic(gateway, dir.dir)
    if (stopRequested) return (await stop(), 0)
    const urls = await gateway.start()

    const names = (patientId: string) => patientById(patientId)?.name ?? patientId
    const medication = new Map(PATIENTS.map((p) => [seed.schedules.get(p.id), `${p.medication.name} ${p.medication.dose}`]))
    const quietly = (fn: () => void) => () => {
      try {
        fn()
      } catch {
        // printing must never disturb the gateway
      }
    }
    const bus = gateway.bus
    bus.on('reading.accepted', (readings) => {
      if (readingsThisRun === 0 && readings[0]) quietly(() => say(`first reading stored (${names(readings[0]!.patientId)}): live readings are flowing`))()
      readingsThisRun += readings.length
    })
    bus.on('alert.raised', ({ alert }) => quietly(() => say(`${alert.severity.toUpperCase()} alert for ${names(alert.patientId)}: ${alert.title} (${alert.ruleId}) - in the console's alerts and ${names(alert.patientId).replace(/^Demo /, '')}'s thread`))())
    bus.on('alert.updated', ({ alert, change }) => quietly(() => {
      if (change === 'resolved') say(`alert resolved for ${names(alert.patientId)}: ${alert.title}${alert.resolution === 'auto' ? ' - All clear, readings back to normal' : ' - resolved by a provider'}`)
      else if (change === 'acknowledged') say(`alert acknowledged for ${names(alert.patientId)}: ${alert.title}`)
      else if (change === 'severity_raised') say(`alert got worse for ${names(alert.patientId)}: ${alert.title} is now ${alert.severity}`)
    })())
    bus.on('alert.escalated', ({ alert, tierName, reminder }) => quietly(() => say(`alert for ${names(alert.patientId)} (${alert.title}) ${reminder === 0 ? 'escalated to' : 'repeated to'} ${tierName.replace('_', ' ')}: nobody acknowledged it`))())
    bus.on('reminder.due', (e) => quietly(() => say(`reminder posted in ${names(e.patientId)}'s thread and sent to the devices: ${medication.get(e.scheduleId) ?? e.kind}`))())
    bus.on('dose.taken', (e) => quietly(() => say(`${names(e.patientId)} took ${medication.get(e.scheduleId ?? '') ?? 'a dose'} (confirmed from ${e.source === 'device' ? 'the device' : e.source})`))())
    bus.on('dose.missed', (e) => quietly(() => say(`${names(e.patientId)} missed a dose of ${medication.get(e.scheduleId) ?? 'a medication'}: a missed-dose alert`))())

    fleet = new Fleet(seed.credentials, { url: urls.mqtts, ca: readFileSync(urls.caFile), pace: opts.fast ? PACE.fast : PACE.normal, say })
    await fleet.connect()
    if (stopRequested) return (await stop(), 0)

    const pace = opts.fast ? PACE.fast : PACE.normal
    const dose = scheduleSoonDoses(gateway, seed.schedules, pace.reminderLeadMs)
    t0 = Date.now()
    const facts: DemoFacts = {
      urls,
      dataDir: dir.dir,
      console: consoleState,
      seeded: { reused: seed.reused, created: seed.created },
      devices: fleet.size,
      pace,
      fast: opts.fast,
      dose,
      startedAt: t0,
      durationSeconds: opts.duration ?? null,
      notes,
    }
    if (opts.json) process.stdout.write(JSON.stringify(jsonDocument(facts)) + '\n')
    else process.stdout.write(banner(facts) + '\n')
    fleet.start()

    const openAlerts = gateway.store.sqlite.prepare("SELECT COUNT(*) AS n FROM alerts WHERE status <> 'resolved'").pluck()
    const status = () => {
      const open = openAlerts.get() as number
      say(`${readingsThisRun} readings stored this run; ${open} alert${open === 1 ? '' : 's'} open`)
      timers.push(setTimeout(status, 60_000))
    }
    timers.push(setTimeout(status, 60_000))

    const reason = await new Promise<string>((resolve) => {
      onStop = () => resolve(stopRequested ?? 'stop')
      if (stopRequested) resolve(stopRequested)
      if (opts.duration !== undefined) timers.push(setTimeout(() => resolve(`--duration ${opts.duration}`), opts.duration * 1000))
    })
    say(`${reason}: stopping the devices, then the gateway ...`)
    await stop()
    say(`stopped (${readingsThisRun} readings stored this run). The demo clinic stays in ${dir.dir}: \`npm run demo\` carries on with it, --reset starts over.`)
    return 0
  } catch (err) {
    process.stderr.write(`demo: ${isRpmError(err) ? `${err.message} (${err.code})` : (err as Error).stack ?? String(err)}\n`)
    await stop()
    return 1
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`demo: ${(err as Error).stack ?? String(err)}\n`)
    process.exit(1)
  },
)
