/**
 * What the benchmarks share: forked children spoken to over IPC, signing in to the gateway as a
 * user or a device, machine figures, the results directory and number formatting.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import type { IClientOptions } from 'mqtt'
import type { BenchDevice } from './protocol.ts'

export const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url))
export const RESULTS_DIR = path.join(BENCH_DIR, 'results')

// ---------------------------------------------------------------- child processes

/** A forked child that answers typed messages; `{type: 'error', message}` from it fails every wait. */
export class Peer<In extends object, Out extends { type: string }> {
  readonly #buffered: Out[] = []
  readonly #waiters: Array<{ type: string; resolve: (m: Out) => void; reject: (e: Error) => void }> = []
  #failure: Error | undefined
  readonly exited: Promise<void>

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    child.on('message', (raw) => {
      const m = raw as Out
      if (m.type === 'error') return this.#fail(new Error(`${name}: ${(m as unknown as { message: string }).message}`))
      const i = this.#waiters.findIndex((w) => w.type === m.type)
      if (i < 0) this.#buffered.push(m)
      else this.#waiters.splice(i, 1)[0]!.resolve(m)
    })
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.#fail(new Error(`${name} exited (${signal ?? code})`))
        resolve()
      })
    })
  }

  #fail(err: Error): void {
    this.#failure ??= err
    for (const w of this.#waiters.splice(0)) w.reject(err)
  }

  send(m: In): void {
    if (this.child.connected) this.child.send(m)
  }

  next<T extends Out['type']>(type: T, timeoutMs = 120_000): Promise<Extract<Out, { type: T }>> {
    const i = this.#buffered.findIndex((m) => m.type === type)
    if (i >= 0) return Promise.resolve(this.#buffered.splice(i, 1)[0] as Extract<Out, { type: T }>)
    if (this.#failure) return Promise.reject(this.#failure)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name}: no "${type}" within ${timeoutMs} ms`)), timeoutMs)
      this.#waiters.push({
        type,
        resolve: (m) => {
          clearTimeout(timer)
          resolve(m as Extract<Out, { type: T }>)
        },
        reject: (e) => {
          clearTimeout(timer)
          reject(e)
        },
      })
    })
  }

  request<T extends Out['type']>(m: In, type: T, timeoutMs?: number): Promise<Extract<Out, { type: T }>> {
    const reply = this.next(type, timeoutMs)
    this.send(m)
    return reply
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL')
  }
}

/** Forks a script in bench/ with this process's loader flags (tsx) plus `execArgv`. */
export function forkChild(file: string, execArgv: string[] = []): ChildProcess {
  return fork(path.join(BENCH_DIR, file), [], { execArgv: [...process.execArgv, ...execArgv], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
}

/** The newest main-thread CPU profile (node --cpu-prof) in a directory. */
export function newestProfile(dir: string): string | undefined {
  if (!existsSync(dir)) return undefined
  // CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile: thread 0 is the main thread (tsx runs
  // its module loader on a second one).
  const files = readdirSync(dir)
    .filter((f) => /\.\d+\.0\.\d+\.cpuprofile$/.test(f))
    .map((f) => path.join(dir, f))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)
  return files[0]
}

// ---------------------------------------------------------------- gateway clients

export interface Login {
  token: string
  userId: string
}

/** Signs every account in over REST, a few at a time (each sign-in is a scrypt check). */
export async function signIn(httpUrl: string, accounts: Array<{ username: string; password: string }>, concurrency: number): Promise<Map<string, Login>> {
  const out = new Map<string, Login>()
  let next = 0
  const lane = async () => {
    while (next < accounts.length) {
      const a = accounts[next++]!
      const res = await fetch(`${httpUrl}/api/v1/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username: a.username, password: a.password }),
      })
      const body = (await res.json()) as { accessToken?: string; user?: { id: string }; code?: string }
      if (!res.ok || !body.accessToken || !body.user) throw new Error(`sign-in of ${a.username} failed: ${res.status} ${body.code ?? ''}`)
      out.set(a.username, { token: body.accessToken, userId: body.user.id })
    }
  }
  await Promise.all(Array.from({ length: concurrency }, lane))
  return out
}

/** mqtt.js options for a simulated device signing in with its id and secret (MQTT 3.1.1 over TLS). */
export function deviceClientOptions(device: BenchDevice, ca: string): IClientOptions {
  return {
    clientId: device.deviceId,
    username: device.deviceId,
    password: device.secret,
    ca,
    servername: 'localhost',
    protocolVersion: 4,
    clean: true,
    reconnectPeriod: 0,
    connectTimeout: 60_000,
    keepalive: 120,
  }
}

// ---------------------------------------------------------------- machine figures

/** Busy and total CPU time of the whole machine, ms (Linux /proc/stat; undefined elsewhere). */
export function machineCpu(): { busyMs: number; totalMs: number } | undefined {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f
    const tick = 1000 / 100 // USER_HZ
    const busy = user + nice + system + irq + softirq + steal
    return { busyMs: busy * tick, totalMs: (busy + idle + iowait) * tick }
  } catch {
    return undefined
  }
}

/** The file system a path lives on, e.g. "ext4 on /dev/vda" (Linux; undefined elsewhere). */
export function fileSystemOf(dir: string): string | undefined {
  try {
    let best: { mount: string; text: string } | undefined
    for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [dev, mount, type] = line.split(' ')
      if (!dev || !mount || !type) continue
      if ((dir === mount || dir.startsWith(mount.endsWith('/') ? mount : mount + '/')) && (!best || mount.length > best.mount.length)) {
        best = { mount, text: `${type} on ${dev}` }
      }
    }
    return best?.text
  } catch {
    return undefined
  }
}

export interface MachineInfo {
  cores: number
  cpuModel: string
  node: string
  platform: string
  memoryGiB: number
  loadAverage: number[]
  /** The file system the benchmark's data directory is on. */
  journalFileSystem: string
}

export function machineInfo(dataDir: string): MachineInfo {
  const cpus = os.cpus()
  return {
    cores: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    node: process.version,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    loadAverage: os.loadavg().map((n) => Number(n.toFixed(2))),
    journalFileSystem: fileSystemOf(dataDir) ?? 'unknown',
  }
}

/** The machine lines every benchmark prints first. */
export function machineLines(machine: MachineInfo, dataDir: string): string[] {
  return [
    `machine: ${machine.cores} cores, ${machine.cpuModel}, ${machine.memoryGiB} GiB, Node ${machine.node}, ${machine.platform}`,
    `load average at start: ${machine.loadAverage.join(' ')}; journal on ${machine.journalFileSystem} (${dataDir})`,
  ]
}

// ---------------------------------------------------------------- options and formatting

/**
 * A benchmark's command line: string options `--<name> value` for each of `names`, plus what
 * every benchmark takes: --quick (or BENCH_QUICK=1), --profile, --set key=value (repeatable, see
 * parseSettings) and --help, which prints the leading comment of `file` and exits.
 */
export function benchArgs<K extends string>(file: string, names: readonly K[]) {
  const { values } = parseArgs({
    options: {
      ...Object.fromEntries(names.map((n) => [n, { type: 'string' }] as const)),
      quick: { type: 'boolean' },
      profile: { type: 'boolean' },
      set: { type: 'string', multiple: true },
      help: { type: 'boolean' },
    },
  })
  if (values.help) {
    process.stdout.write(usageOf(file))
    process.exit(0)
  }
  return {
    values: values as Partial<Record<K, string>>,
    quick: (values.quick as boolean | undefined) ?? /^(1|true|yes)$/i.test(process.env.BENCH_QUICK ?? ''),
    profile: (values.profile as boolean | undefined) ?? false,
    settings: parseSettings((values.set as string[] | undefined) ?? []),
  }
}

/** A numeric option from `--name` or the BENCH_NAME environment variable, at least `min`. */
export function numberOption(flag: string | undefined, name: string, fallback: number, min: number): number {
  const raw = flag ?? process.env[`BENCH_${name}`]
  if (raw === undefined) return fallback
  const n = Number(raw)
  if (!Number.isFinite(n) || n < min) throw new Error(`--${name.toLowerCase()} must be a number >= ${min}, got "${raw}"`)
  return n
}

/** `--set key=value` pairs as gateway config overrides: numbers, booleans, JSON for lists and objects. */
export function parseSettings(pairs: readonly string[]): Record<string, string | number | boolean> {
  const settings: Record<string, string | number | boolean> = {}
  for (const pair of pairs) {
    const eq = pair.indexOf('=')
    if (eq < 1) throw new Error(`--set takes key=value, got "${pair}"`)
    const raw = pair.slice(eq + 1)
    settings[pair.slice(0, eq)] = /^[[{]/.test(raw) ? JSON.parse(raw) : /^-?\d+(\.\d+)?$/.test(raw) ? Number(raw) : /^(true|false)$/.test(raw) ? raw === 'true' : raw
  }
  return settings
}

/** The leading doc comment of a benchmark script, for --help. */
export function usageOf(file: string): string {
  return readFileSync(file, 'utf8').split('*/')[0]!.replace(/^\/\*\*|^ \* ?/gm, '') + '\n'
}

export const int = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-')
export const ms = (n: number) => (!Number.isFinite(n) ? '-' : n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2))
export const pct = (n: number) => (Number.isFinite(n) ? `${(n * 100).toFixed(0)}%` : '-')
export const pad = (s: string, n: number) => s.padEnd(n)
export const lpad = (s: string, n: number) => s.padStart(n)
