/**
 * `npm run simulate -- [options]`: simulated home vitals devices against a running gateway.
 * Progress goes to stderr; stdout carries only the final summary (a JSON document with --json).
 */
import { randomInt } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander'
import { pkiFiles } from '../src/broker/pki.ts'
import { RpmError, isRpmError } from '../src/errors.ts'
import { DEVICE_KINDS } from '../src/registry/registry.ts'
import type { DeviceKind } from '../src/store/schema.ts'
import { type DeviceCredential, devicesFile, loadCredentials, lockSimulator, provisionDevices, writeSimulatorFile } from './credentials.ts'
import { ProgressReporter, progressMode, type ProgressOutput } from './progress.ts'
import { runSimulation, StopSwitch } from './run.ts'
import { checkKinds, SCENARIO_NAMES, SCENARIOS, type ScenarioName } from './scenarios.ts'
import { INVALID_CASES } from './invalid.ts'
import { formatSummary } from './summary.ts'

interface Options {
  url: string
  ca?: string
  dataDir?: string
  credentials?: string
  devices: number
  rate: number
  duration?: number
  count?: number
  scenario: ScenarioName
  kind?: DeviceKind[]
  batch: number
  connectionsPerSecond: number
  maxBatchSize: number
  maxPacketBytes: number
  seed?: number
  connectTimeout: number
  drainTimeout: number
  json?: boolean
  quiet?: boolean
}

/** Where the simulator writes and which signals stop it; tests pass their own. */
export interface SimulatorIo {
  stdout: ProgressOutput
  stderr: ProgressOutput
  signals: Pick<NodeJS.Process, 'on' | 'off'>
}

const positiveInt = (name: string) => (value: string) => {
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a whole number of at least 1`)
  return n
}

const positiveNumber = (name: string) => (value: string) => {
  const n = Number(value)
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a number above 0`)
  return n
}

function kindList(value: string): DeviceKind[] {
  const kinds = value.split(',').map((k) => k.trim()).filter(Boolean)
  const bad = kinds.filter((k) => !(DEVICE_KINDS as readonly string[]).includes(k))
  if (kinds.length === 0 || bad.length) throw new InvalidArgumentError(`kinds are ${DEVICE_KINDS.join(', ')} (comma-separated for a mix)`)
  return kinds as DeviceKind[]
}

const envInt = (name: string, fallback: number) => {
  const n = Number(process.env[name])
  return Number.isSafeInteger(n) && n > 0 ? n : fallback
}

export function buildProgram(): Command {
  const scenarioHelp = SCENARIO_NAMES.map((s) => `  ${s.padEnd(20)} ${SCENARIOS[s].summary} (devices: ${SCENARIOS[s].kinds.join(', ')})`).join('\n')
  const invalidHelp = INVALID_CASES.map((c) => `  ${c.name.padEnd(16)} ${c.code.padEnd(28)} ${c.description}`).join('\n')
  return new Command('simulate')
    .description('Simulated home vitals devices: MQTT over TLS to an rpm-gateway, at a given rate, with clinical and failure scenarios')
    .option('--url <url>', 'the gateway\'s MQTT endpoint (mqtts://, mqtt://, wss:// or ws://)', 'mqtts://localhost:8883')
    .option('--ca <file>', 'CA certificate that signed the gateway\'s certificate (default: <data-dir>/tls/ca.pem)')
    .option('--data-dir <dir>', 'the gateway\'s data directory, where simulated devices are provisioned (default: $RPM_DATA_DIR or ./data)')
    .option('--credentials <file>', 'use devices provisioned elsewhere: a JSON array of {"deviceId", "secret"[, "kind"]}; nothing is provisioned')
    .option('-n, --devices <n>', 'number of simulated devices', positiveInt('--devices'), 10)
    .option('-r, --rate <r>', 'readings per second across all devices', positiveNumber('--rate'), 10)
    .option('-d, --duration <seconds>', 'stop after this long (default: run until Ctrl-C)', positiveNumber('--duration'))
    .option('-c, --count <n>', 'stop after this many readings in total', positiveInt('--count'))
    .addOption(new Option('-s, --scenario <name>', 'what the devices report').choices(SCENARIO_NAMES as unknown as string[]).default('normal'))
    .option('--kind <kinds>', `device kind, or several comma-separated and used in turn: ${DEVICE_KINDS.join(', ')} (default: by scenario)`, kindList)
    .option('--batch <n>', 'readings per PUBLISH (an array when above 1)', positiveInt('--batch'), 1)
    .option('--connections-per-second <n>', 'how fast devices connect at the start', positiveNumber('--connections-per-second'), 20)
    .option('--max-batch-size <n>', 'the gateway\'s ingest.maxBatchSize (the invalid scenario sends one more)', positiveInt('--max-batch-size'), envInt('RPM_INGEST_MAX_BATCH_SIZE', 200))
    .option('--max-packet-bytes <n>', 'the gateway\'s mqtt.maxPacketBytes (warns before sending a larger PUBLISH)', positiveInt('--max-packet-bytes'), envInt('RPM_MQTT_MAX_PACKET_BYTES', 65536))
    .option('--seed <n>', 'seed for the readings\' values, to reproduce a run', (v) => {
      const n = Number(v)
      if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError('--seed must be a whole number')
      return n >>> 0
    })
    .option('--connect-timeout <seconds>', 'how long each device keeps trying to connect', positiveNumber('--connect-timeout'), 10)
    .option('--drain-timeout <seconds>', 'how long to wait for outstanding PUBACKs at the end', positiveNumber('--drain-timeout'), 10)
    .option('--json', 'print the summary as one JSON document on stdout')
    .option('--quiet', 'no progress and no notes on stderr (problems are still reported)')
    .addHelpText(
      'after',
      [
        '',
        'Scenarios:',
        scenarioHelp,
        '',
        'Invalid payloads (scenario invalid, and 5 % of mixed), each answered on devices/{id}/errors:',
        invalidHelp,
        '',
        'Exit status: 0 all acknowledged as expected; 1 bad options or setup; 2 no device connected or',
        'nothing acknowledged; 3 finished with problems (unacknowledged readings, missing or unexpected',
        'errors, devices that could not connect); 130 stopped by a second Ctrl-C.',
        '',
        'Examples:',
        '  npm run simulate -- --devices 20 --rate 50 --duration 30',
        '  npm run simulate -- --scenario hypertensive-crisis --devices 3 --count 40',
        '  npm run simulate -- --scenario invalid --devices 5 --count 50 --json',
        '  RPM_MQTT_CONNECT_RATE_PER_MINUTE=6000 npm start   # then: npm run simulate -- --devices 2000 --connections-per-second 50',
      ].join('\n'),
    )
    .showHelpAfterError('(--help lists the options, scenarios and invalid payloads)')
    .exitOverride()
}

/** Runs the simulator; returns the exit code. */
export async function main(argv: string[], io: SimulatorIo = { stdout: process.stdout, stderr: process.stderr, signals: process }): Promise<number> {
  const program = buildProgram()
  program.configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
  let opts: Options
  try {
    program.parse(argv, { from: 'user' })
    opts = program.opts<Options>()
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode
    throw err
  }

  const progress = new ProgressReporter(io.stderr, progressMode(io.stderr, Boolean(opts.quiet)))
  const stop = new StopSwitch()
  const onSignal = () => {
    if (!stop.stopped) progress.warn('stopping: waiting for outstanding acknowledgements (interrupt again to quit at once)')
    stop.stop()
  }
  io.signals.on('SIGINT', onSignal)
  io.signals.on('SIGTERM', onSignal)
  let release: (() => void) | undefined
  try {
    const dataDir = path.resolve(opts.dataDir ?? process.env.RPM_DATA_DIR ?? './data')
    const scenario = opts.scenario
    const baseKinds = opts.kind ?? [...SCENARIOS[scenario].kinds]
    const kindProblem = checkKinds(scenario, baseKinds)
    if (kindProblem) throw new RpmError('RPM_ERR_BAD_REQUEST', kindProblem, { details: { field: 'kind' } })
    if (opts.batch > opts.maxBatchSize) {
      throw new RpmError('RPM_ERR_BAD_REQUEST', `--batch ${opts.batch} is above the gateway's batch limit (${opts.maxBatchSize}, --max-batch-size)`)
    }
    const url = checkUrl(opts.url)
    const ca = readCa(opts, dataDir, url, progress)

    let devices: DeviceCredential[]
    let known: DeviceCredential[] | undefined
    if (opts.credentials) {
      const all = loadCredentials(opts.credentials, baseKinds)
      const explicit = program.getOptionValueSource('devices') === 'cli'
      if (explicit && opts.devices > all.length) {
        throw new RpmError('RPM_ERR_BAD_REQUEST', `--devices ${opts.devices}, but ${opts.credentials} holds ${all.length}`)
      }
      devices = explicit ? all.slice(0, opts.devices) : all
      const problem = checkKinds(scenario, [...new Set(devices.map((d) => d.kind))])
      if (problem) throw new RpmError('RPM_ERR_BAD_REQUEST', problem, { details: { field: 'kind' } })
    } else {
      release = lockSimulator(dataDir)
      const kinds = Array.from({ length: opts.devices }, (_, i) => baseKinds[i % baseKinds.length]!)
      const provisioned = { done: 0, total: 0 }
      progress.start(() => ({ phase: 'provisioning', elapsedMs: 0, devices: 0, connected: 0, offline: 0, sent: 0, acknowledged: 0, quarantined: 0, inFlight: 0, ratePerSecond: 0, ...provisioned }))
      const result = await provisionDevices(dataDir, kinds, (done, total) => Object.assign(provisioned, { done, total }))
      progress.stop()
      for (const note of result.notes) progress.note(note)
      if (result.created) progress.note(`provisioned ${result.created} device${result.created === 1 ? '' : 's'}; their secrets are in ${devicesFile(dataDir)}`)
      devices = result.devices
      known = result.known
    }
    if (stop.stopped) return 130

    if (devices.length > 600) {
      progress.note(
        `note: the gateway accepts 600 new connections a minute per address by default; for ${devices.length} devices start it with ` +
          `RPM_MQTT_CONNECT_RATE_PER_MINUTE=${Math.ceil(devices.length * 1.5)} or keep --connections-per-second at 10 or below`,
      )
    }
    const until =
      opts.count !== undefined && opts.duration !== undefined
        ? `${opts.count} readings or ${opts.duration} s`
        : opts.count !== undefined
          ? `${opts.count} readings`
          : opts.duration !== undefined
            ? `${opts.duration} s`
            : 'interrupted (Ctrl-C)'
    progress.note(`${devices.length} devices, scenario ${scenario}, ${opts.rate} readings/s to ${url}, until ${until}`)

    const seed = opts.seed ?? randomInt(2 ** 31)
    let summary
    try {
      summary = await runSimulation(
        {
          url,
          ...(ca ? { ca } : {}),
          scenario,
          devices,
          ratePerSecond: opts.rate,
          batch: opts.batch,
          ...(opts.duration !== undefined ? { durationSeconds: opts.duration } : {}),
          ...(opts.count !== undefined ? { count: opts.count } : {}),
          connectionsPerSecond: opts.connectionsPerSecond,
          maxBatchSize: opts.maxBatchSize,
          maxPacketBytes: opts.maxPacketBytes,
          seed,
          connectTimeoutSeconds: opts.connectTimeout,
          drainTimeoutSeconds: opts.drainTimeout,
          progress,
        },
        stop,
      )
    } finally {
      // The next run continues each device's seq; the gateway would take a repeat for a redelivery.
      if (known) writeSimulatorFile(dataDir, known)
    }
    if (summary.connected === 0 && summary.connectFailures.length > 0 && opts.json) {
      progress.warn(`could not connect to ${url}: ${summary.connectFailures.map((f) => f.reason).join('; ')}`)
    }
    io.stdout.write((opts.json ? JSON.stringify(summary, null, 2) : formatSummary(summary)) + '\n')
    return summary.exitCode
  } catch (err) {
    progress.stop()
    const e = isRpmError(err) ? err : new RpmError('RPM_ERR_INTERNAL', (err as Error).message)
    if (opts.json) io.stdout.write(JSON.stringify({ error: e.toJSON() }, null, 2) + '\n')
    else io.stderr.write(`error: ${e.message} (${e.code})\n`)
    return 1
  } finally {
    release?.()
    io.signals.off('SIGINT', onSignal)
    io.signals.off('SIGTERM', onSignal)
  }
}

function checkUrl(value: string): string {
  let u: URL
  try {
    u = new URL(value)
  } catch {
    throw new RpmError('RPM_ERR_BAD_REQUEST', `--url ${value} is not a URL (e.g. mqtts://localhost:8883)`, { details: { field: 'url' } })
  }
  if (!['mqtts:', 'mqtt:', 'wss:', 'ws:'].includes(u.protocol)) {
    throw new RpmError('RPM_ERR_BAD_REQUEST', '--url must start with mqtts://, mqtt://, wss:// or ws://', { details: { field: 'url' } })
  }
  return value
}

/** The CA for TLS URLs: --ca, else the gateway's development CA in the data directory, else the system's. */
function readCa(opts: Options, dataDir: string, url: string, progress: ProgressReporter): Buffer | undefined {
  const tls = url.startsWith('mqtts:') || url.startsWith('wss:')
  if (!tls) {
    progress.note(`note: ${url} is not encrypted; devices should use mqtts:// (TLS)`)
    return undefined
  }
  const file = opts.ca ?? pkiFiles(dataDir).caCertPath
  if (!existsSync(file)) {
    if (opts.ca) throw new RpmError('RPM_ERR_BAD_REQUEST', `no CA certificate at ${file}`, { details: { field: 'ca' } })
    if (!opts.credentials) {
      throw new RpmError(
        'RPM_ERR_BAD_REQUEST',
        `no CA certificate at ${file}: start the gateway with this data directory once (it creates its development CA), or pass --ca FILE`,
        { details: { field: 'ca' } },
      )
    }
    progress.note(`note: no ${file}; trusting the system's certificate authorities`)
    return undefined
  }
  return readFileSync(file)
}
