/**
 * Eclipse Mosquitto (Debian's package) as a reference broker for bench/ingest.ts: found or
 * installed, started on a free loopback port with a generated configuration (a TLS listener with
 * the same server certificate and CA as the other brokers, anonymous logins allowed, generous
 * in-flight and queue limits, persistence off), its CPU read from /proc, stopped cleanly.
 *
 * Mosquitto acknowledges a QoS1 PUBLISH from memory: with persistence off (and even with it on,
 * which only saves a snapshot every autosave_interval) it does no per-message write or fsync,
 * unlike the gateway, whose PUBACK waits for the journal commit (synchronous=FULL).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

const CANDIDATES = ['/usr/sbin/mosquitto', '/usr/bin/mosquitto', '/usr/local/sbin/mosquitto', '/usr/local/bin/mosquitto']

/** Clock ticks per second for /proc/<pid>/stat (USER_HZ). */
let clockTicks: number | undefined
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' })
    const n = Number(r.stdout?.trim())
    clockTicks = Number.isFinite(n) && n > 0 ? n : 100
  }
  return clockTicks
}

/** CPU time (user + system) of a process so far in ms, from /proc/<pid>/stat; undefined if unreadable. */
export function processCpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / ticksPerSecond() // utime + stime
  } catch {
    return undefined
  }
}

/** Resident memory of a process in bytes, from /proc/<pid>/status; undefined if unreadable. */
export function processRssBytes(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) * 1024 : undefined
  } catch {
    return undefined
  }
}

function which(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(path.join(dir, cmd))) return path.join(dir, cmd)
  }
  return CANDIDATES.find((c) => existsSync(c))
}

function versionOf(binary: string): string {
  const r = spawnSync(binary, ['-h'], { encoding: 'utf8' })
  return /mosquitto version (\S+)/.exec(`${r.stdout ?? ''}${r.stderr ?? ''}`)?.[1] ?? 'unknown'
}

/**
 * The mosquitto binary and its version; installs Debian's package with apt-get (as root, or with
 * sudo) when it is missing, saying so through `say`. Throws when it cannot be had.
 */
export function ensureMosquitto(say: (line: string) => void): { binary: string; version: string; installed: boolean } {
  let binary = which('mosquitto')
  if (binary) return { binary, version: versionOf(binary), installed: false }
  const sudo = process.getuid?.() === 0 ? [] : ['sudo']
  say(`mosquitto is missing: installing Debian's package (${[...sudo, 'apt-get', 'install', '-y', 'mosquitto'].join(' ')})`)
  const run = (args: string[]) => {
    const [cmd, ...rest] = [...sudo, ...args]
    const r = spawnSync(cmd!, rest, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
    return r.status === 0
  }
  if (!run(['apt-get', 'install', '-y', '-qq', 'mosquitto'])) {
    run(['apt-get', 'update', '-qq'])
    if (!run(['apt-get', 'install', '-y', '-qq', 'mosquitto'])) throw new Error('could not install mosquitto with apt-get')
  }
  binary = which('mosquitto')
  if (!binary) throw new Error('mosquitto was installed but its binary is not found')
  const version = versionOf(binary)
  say(`installed mosquitto ${version} (${binary})`)
  return { binary, version, installed: true }
}

/** A port nothing listens on right now (the kernel's pick, released at once). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = (server.address() as net.AddressInfo)
      server.close(() => resolve(port))
    })
  })
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

export interface MosquittoOptions {
  tls: { cert: string; key: string; ca: string }
  binary?: string
}

export interface RunningMosquitto {
  port: number
  pid: number
  version: string
  configFile: string
  /** The generated configuration, for the record. */
  config: string
  cpuMs(): number | undefined
  rssBytes(): number | undefined
  stop(): Promise<void>
}

/** Starts mosquitto on a free loopback port with a generated config in a temp dir; resolves once it accepts connections. */
export async function startMosquitto(opts: MosquittoOptions): Promise<RunningMosquitto> {
  const binary = opts.binary ?? which('mosquitto')
  if (!binary) throw new Error('mosquitto is not installed (ensureMosquitto installs it)')
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rpm-bench-mosquitto-'))
  const port = await freePort()
  // Copies readable by the mosquitto user, in case it drops root privileges before loading them.
  const tlsCopy = { ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'server.pem'), key: path.join(dir, 'server-key.pem') }
  for (const k of ['ca', 'cert', 'key'] as const) writeFileSync(tlsCopy[k], readFileSync(opts.tls[k]), { mode: 0o644 })
  const user = os.userInfo().username
  const config = [
    '# generated by rpm-gateway bench/mosquitto.ts',
    // Stay the user that started it (root drops to "mosquitto" by default), so it reads these files.
    `user ${user}`,
    'per_listener_settings false',
    'allow_anonymous true',
    // QoS1 is acknowledged from memory: no persistence file, no per-message write or fsync.
    'persistence false',
    // No cap on QoS1 messages in flight or queued per client.
    'max_inflight_messages 0',
    'max_queued_messages 0',
    'max_packet_size 65536',
    'memory_limit 0',
    // As the gateway and the bare aedes listener do (socket.setNoDelay).
    'set_tcp_nodelay true',
    'connection_messages false',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    `listener ${port} 127.0.0.1`,
    'max_connections -1',
    `cafile ${tlsCopy.ca}`,
    `certfile ${tlsCopy.cert}`,
    `keyfile ${tlsCopy.key}`,
    'require_certificate false',
    'tls_version tlsv1.2',
    '',
  ].join('\n')
  // tls_version pins the minimum in mosquitto 2.0 ("tlsv1.2" allows 1.2 and 1.3): as the gateway's minVersion.
  const configFile = path.join(dir, 'mosquitto.conf')
  writeFileSync(configFile, config, { mode: 0o644 })
  const child: ChildProcess = spawn(binary, ['-c', configFile], { stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  child.stderr!.on('data', (d: Buffer) => {
    log = (log + d.toString()).slice(-4000)
  })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  let gone = false
  void exited.then(() => {
    gone = true
  })
  const deadline = Date.now() + 10_000
  while (!(await accepts(port))) {
    if (gone) throw new Error(`mosquitto exited at start-up: ${log.trim() || 'no output'}`)
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`mosquitto did not accept connections on port ${port} within 10 s: ${log.trim()}`)
    }
    await sleep(50)
  }
  const pid = child.pid!
  return {
    port,
    pid,
    version: versionOf(binary),
    configFile,
    config,
    cpuMs: () => processCpuMs(pid),
    rssBytes: () => processRssBytes(pid),
    async stop() {
      if (!gone) {
        child.kill('SIGTERM') // mosquitto closes its clients and exits on SIGTERM
        const code = await Promise.race([exited, sleep(5000).then(() => 'timeout' as const)])
        if (code === 'timeout') {
          child.kill('SIGKILL')
          await exited
        }
      }
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
