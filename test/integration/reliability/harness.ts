/**
 * The pieces the reliability tests and `npm run soak` share: the real gateway command as a
 * child process, devices provisioned in its data directory before it starts, simulated devices
 * that keep every reading until its PUBACK and resend it unchanged after a reconnect (as
 * docs/devices.md "Retrying" asks of firmware), the journal read back from disk, and the
 * gateway's /metrics and /readyz.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import SQLite from 'better-sqlite3'
import mqtt, { type MqttClient } from 'mqtt'
import { type ReadingPayload } from '../../../device-simulator/readings.ts'
import { systemClock } from '../../../src/clock.ts'
import { Users } from '../../../src/identity/users.ts'
import { Registry } from '../../../src/registry/registry.ts'
import { databaseFile, openStore } from '../../../src/store/db.ts'
import type { DeviceKind } from '../../../src/store/schema.ts'

export const BIN = fileURLToPath(new URL('../../../bin/rpm-gateway.js', import.meta.url))

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

// ---------------------------------------------------------------- provisioning

export interface DeviceSpec {
  id: string
  kind?: DeviceKind
  /** Patient id; devices with the same patient share one record. */
  patient: string
}

export interface ProvisionedDevice {
  id: string
  patientId: string
  kind: DeviceKind
  secret: string
}

/**
 * Patients, devices and (optionally) users written to the data directory before the gateway
 * starts, through the same Registry and Users the CLI uses.
 */
export async function provisionOffline(
  dataDir: string,
  devices: DeviceSpec[],
  users: Array<{ username: string; password: string; role: 'provider' | 'patient' | 'admin'; patientId?: string; careTeamOf?: string[] }> = [],
): Promise<ProvisionedDevice[]> {
  const store = await openStore(dataDir)
  try {
    const registry = new Registry(store.db, systemClock)
    const people = new Users(store.db, systemClock)
    const patients = new Set<string>()
    const out: ProvisionedDevice[] = []
    for (const d of devices) {
      if (!patients.has(d.patient)) {
        await registry.addPatient({ id: d.patient, name: `Reliability ${d.patient}`, timezone: 'UTC' })
        patients.add(d.patient)
      }
      const device = await registry.addDevice({ patientId: d.patient, id: d.id, kind: d.kind ?? 'bp_cuff' })
      out.push({ id: device.id, patientId: d.patient, kind: d.kind ?? 'bp_cuff', secret: device.secret })
    }
    for (const u of users) {
      await people.add({ username: u.username, password: u.password, role: u.role, ...(u.patientId ? { patientId: u.patientId } : {}) })
      for (const p of u.careTeamOf ?? []) await people.addToCareTeam(p, u.username)
    }
    return out
  } finally {
    await store.close()
  }
}

// ---------------------------------------------------------------- the gateway command

export interface GatewayUrlsJson {
  mqtts: string
  mqtt?: string
  http: string
  caFile: string
  dataDir: string
  database: string
  ws?: string
}

/** The environment without the RPM_* settings of the machine running the tests. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RPM_')))
  return { ...env, RPM_MQTT_PORT: '0', RPM_HTTP_PORT: '0', RPM_MQTT_HOST: '127.0.0.1', RPM_LOG_LEVEL: 'warn', ...extra }
}

/** `rpm-gateway start --json --data-dir D` as an operator runs it. */
export class GatewayProcess {
  readonly child: ChildProcess
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  #stderr = ''
  #urls: GatewayUrlsJson | undefined

  private constructor(child: ChildProcess) {
    this.child = child
    child.stderr!.on('data', (d: Buffer) => {
      // The tail is enough to say why something failed; a long soak must not grow it forever.
      this.#stderr = (this.#stderr + d.toString()).slice(-200_000)
    })
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
  }

  /** Starts the command and resolves once it printed its URLs (it listens then). */
  static async start(dataDir: string, env: NodeJS.ProcessEnv = cleanEnv(), timeoutMs = 30_000): Promise<GatewayProcess> {
    const child = spawn(process.execPath, [BIN, 'start', '--json', '--data-dir', dataDir], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    const g = new GatewayProcess(child)
    g.#urls = await new Promise<GatewayUrlsJson>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`rpm-gateway start did not print its URLs within ${timeoutMs} ms: ${g.stderr}`)), timeoutMs)
      const lines = createInterface({ input: child.stdout! })
      lines.once('line', (line) => {
        clearTimeout(timer)
        try {
          resolve(JSON.parse(line) as GatewayUrlsJson)
        } catch {
          reject(new Error(`rpm-gateway start printed ${line}`))
        }
      })
      void g.exited.then(({ code, signal }) => {
        clearTimeout(timer)
        reject(new Error(`rpm-gateway start exited (${signal ?? code}) before listening: ${g.stderr}`))
      })
    })
    return g
  }

  get urls(): GatewayUrlsJson {
    return this.#urls!
  }

  /** mqtts://127.0.0.1:PORT (the certificate names 127.0.0.1 too). */
  get mqttsUrl(): string {
    return this.urls.mqtts.replace('localhost', '127.0.0.1')
  }

  get tlsPort(): number {
    return Number(new URL(this.urls.mqtts).port)
  }

  get tcpPort(): number | undefined {
    return this.urls.mqtt ? Number(new URL(this.urls.mqtt).port) : undefined
  }

  get stderr(): string {
    return this.#stderr
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null
  }

  /** Sends the signal and resolves once the process is gone. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running) this.child.kill(signal)
    return this.exited
  }

  async readyz(): Promise<{ status: number; body: { status: string; checks: Record<string, string> } }> {
    const res = await fetch(`${this.urls.http}/readyz`)
    return { status: res.status, body: (await res.json()) as never }
  }

  async healthy(): Promise<boolean> {
    try {
      return (await fetch(`${this.urls.http}/healthz`)).status === 200
    } catch {
      return false
    }
  }

  metrics(): Promise<Map<string, number>> {
    return scrapeMetrics(`${this.urls.http}/metrics`)
  }
}

/** Prometheus text as samples keyed `name` or `name{label="value",...}`. */
export async function scrapeMetrics(url: string): Promise<Map<string, number>> {
  const text = await (await fetch(url)).text()
  const samples = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue
    const m = /^([^\s{]+)(\{[^}]*\})?\s+(\S+)/.exec(line)
    if (m) samples.set(m[1]! + (m[2] ?? ''), Number(m[3]))
  }
  return samples
}

/** The figures printed about the gateway process's memory, from its own /metrics. */
export interface MemoryFigures {
  rssMb: number
  heapUsedMb: number
}

export async function memoryOf(g: GatewayProcess): Promise<MemoryFigures> {
  const m = await g.metrics()
  return {
    rssMb: Math.round(((m.get('rpm_process_resident_memory_bytes') ?? Number.NaN) / 1048576) * 10) / 10,
    heapUsedMb: Math.round(((m.get('rpm_nodejs_heap_size_used_bytes') ?? Number.NaN) / 1048576) * 10) / 10,
  }
}

// ---------------------------------------------------------------- a device that never loses a reading

export interface ResendingDeviceOptions {
  /** Where the gateway is now (it may move between restarts); undefined while it is down. */
  url: () => string | undefined
  ca: Buffer
  /** PUBLISHes in flight at once. */
  inFlight?: number
  /** The payload for a sequence number; called once per seq, the result is resent unchanged. */
  reading: (seq: number) => ReadingPayload | ReadingPayload[]
  /** Readings per sequence number (a batch counts one seq per reading: seq, seq+1, ...). */
  readingsPerPublish?: number
  /** Longest wait between reconnect attempts (it doubles from 100 ms). */
  maxBackoffMs?: number
  /** A new reading this often, connected or not (they wait on the device meanwhile); unset: as fast as PUBACKs come. */
  intervalMs?: number
}

interface Outstanding {
  seqs: number[]
  payload: string
}

/**
 * A device as docs/devices.md asks firmware to behave: it keeps each reading until the PUBACK,
 * and after any lost connection reconnects with backoff and publishes the same payload again
 * (same measuredAt and seq). `acked` holds every seq a PUBACK confirmed. With `intervalMs` it
 * measures at that pace whether connected or not (readings wait on the device meanwhile);
 * without, it publishes as fast as PUBACKs come.
 */
export class ResendingDevice {
  readonly acked = new Set<number>()
  /** PUBACK latencies in ms, from publish to PUBACK, for acknowledged publishes (the latest 50,000 or more). */
  readonly latenciesMs: number[] = []
  connects = 0
  connectFailures = 0
  closes = 0
  /** Publishes whose connection closed before their PUBACK (they are sent again). */
  unacknowledged = 0
  #nextSeq: number
  /** Built and not yet acknowledged, by first seq, oldest first. */
  readonly #pending = new Map<number, Outstanding>()
  /** Pending publishes not sent on the current connection yet. */
  #unsent: number[] = []
  #stopping = false
  #paused = false
  #done: Promise<void> | undefined
  #client: MqttClient | undefined
  #kick: (() => void) | undefined
  #ticker: NodeJS.Timeout | undefined

  constructor(
    readonly device: ProvisionedDevice,
    private readonly opts: ResendingDeviceOptions,
    firstSeq = 1,
  ) {
    this.#nextSeq = firstSeq
  }

  /** Seqs built and not yet acknowledged. */
  get pendingSeqs(): number[] {
    return [...this.#pending.values()].flatMap((o) => o.seqs)
  }

  get connected(): boolean {
    return this.#client?.connected === true
  }

  start(): this {
    if (this.opts.intervalMs) {
      this.#ticker = setInterval(() => {
        if (!this.#stopping && !this.#paused) {
          this.#build()
          this.#kick?.()
        }
      }, this.opts.intervalMs)
    }
    this.#done ??= this.#run()
    return this
  }

  /** Stops making new readings while true (resends go on). */
  pause(paused = true): void {
    this.#paused = paused
    if (!paused) this.#kick?.()
  }

  /** Stops making new readings and resolves once everything built is acknowledged (or rejects after `ms`). */
  async drain(ms = 30_000): Promise<void> {
    this.#stopping = true
    clearInterval(this.#ticker)
    this.#kick?.()
    const until = Date.now() + ms
    while (this.#pending.size > 0) {
      if (Date.now() > until) throw new Error(`${this.device.id}: ${this.pendingSeqs.length} readings still without PUBACK after ${ms} ms`)
      await sleep(25)
    }
    await this.close()
  }

  /** Stops at once, acknowledged or not. */
  async close(): Promise<void> {
    this.#stopping = true
    clearInterval(this.#ticker)
    this.#pending.clear()
    this.#unsent = []
    const client = this.#client
    this.#client = undefined
    if (client) await client.endAsync(true).catch(() => undefined)
    await this.#done
  }

  #build(): number {
    const perPublish = this.opts.readingsPerPublish ?? 1
    const first = this.#nextSeq
    this.#nextSeq += perPublish
    const seqs = Array.from({ length: perPublish }, (_, i) => first + i)
    this.#pending.set(first, { seqs, payload: JSON.stringify(this.opts.reading(first)) })
    this.#unsent.push(first)
    return first
  }

  async #run(): Promise<void> {
    let backoff = 100
    const max = this.opts.maxBackoffMs ?? 1000
    while (!(this.#stopping && this.#pending.size === 0)) {
      const url = this.opts.url()
      if (!url) {
        await sleep(50)
        continue
      }
      let client: MqttClient
      try {
        client = await mqtt.connectAsync(url, {
          clientId: this.device.id,
          username: this.device.id,
          password: this.device.secret,
          ca: this.opts.ca,
          servername: 'localhost',
          protocolVersion: 4,
          reconnectPeriod: 0,
          connectTimeout: 5000,
          keepalive: 30,
        })
      } catch {
        this.connectFailures++
        if (this.#stopping && this.#pending.size === 0) break
        await sleep(backoff / 2 + Math.random() * backoff)
        backoff = Math.min(max, backoff * 2)
        continue
      }
      if (this.#stopping && this.#pending.size === 0) {
        await client.endAsync(true).catch(() => undefined)
        break
      }
      this.connects++
      backoff = 100
      this.#client = client
      await this.#session(client)
      this.closes++
      if (this.#client === client) this.#client = undefined
    }
  }

  /** Publishes over one connection until it closes: first what was never acknowledged, then new readings. */
  #session(client: MqttClient): Promise<void> {
    return new Promise<void>((resolve) => {
      let open = true
      let outstanding = 0
      const inFlightHere = new Set<number>()
      this.#unsent = [...this.#pending.keys()]
      const limit = this.opts.inFlight ?? 4
      client.on('error', () => undefined)
      const publish = (first: number, o: Outstanding) => {
        outstanding++
        inFlightHere.add(first)
        const sentAt = performance.now()
        client.publish(`devices/${this.device.id}/readings`, o.payload, { qos: 1 }, (err) => {
          if (!inFlightHere.delete(first)) return // counted when the connection closed
          outstanding--
          if (err) {
            this.unacknowledged++
            return
          }
          this.latenciesMs.push(performance.now() - sentAt)
          if (this.latenciesMs.length > 100_000) this.latenciesMs.splice(0, 50_000)
          for (const s of o.seqs) this.acked.add(s)
          this.#pending.delete(first)
          pump()
        })
      }
      const pump = () => {
        while (open && outstanding < limit) {
          let first = this.#unsent.shift()
          if (first === undefined) {
            if (this.#stopping) {
              if (this.#pending.size === 0 && outstanding === 0) client.end(true)
              return
            }
            if (this.#paused || this.opts.intervalMs) return
            first = this.#build()
            this.#unsent.shift()
          }
          const o = this.#pending.get(first)
          if (o) publish(first, o)
        }
      }
      this.#kick = pump
      client.once('close', () => {
        open = false
        if (this.#kick === pump) this.#kick = undefined
        this.unacknowledged += inFlightHere.size
        inFlightHere.clear()
        client.end(true)
        resolve()
      })
      pump()
    })
  }
}

// ---------------------------------------------------------------- the journal on disk

export interface JournalCheck {
  /** Acknowledged readings checked. */
  checked: number
  /** device#seq acknowledged but not in the journal. */
  missing: string[]
  /** device#seq in the journal more than once. */
  duplicated: string[]
  /** device#seq in the journal that no PUBACK confirmed (fine while a device still has it pending). */
  unacknowledged: string[]
  rows: number
}

/** Reads the journal through its own read-only connection (the gateway may be running). */
export function readJournal(dataDir: string): Map<string, number> {
  const sqlite = new SQLite(databaseFile(dataDir), { readonly: true, fileMustExist: true })
  try {
    sqlite.pragma('busy_timeout = 5000')
    const rows = sqlite.prepare('SELECT device_id, seq, COUNT(*) AS n FROM readings GROUP BY device_id, seq').all() as Array<{ device_id: string; seq: number | null; n: number }>
    return new Map(rows.map((r) => [`${r.device_id}#${r.seq}`, r.n]))
  } finally {
    sqlite.close()
  }
}

/** Every acknowledged reading stored exactly once; nothing stored twice. */
export function checkJournal(dataDir: string, devices: readonly ResendingDevice[], only?: ReadonlySet<string>): JournalCheck {
  const stored = readJournal(dataDir)
  const result: JournalCheck = { checked: 0, missing: [], duplicated: [], unacknowledged: [], rows: 0 }
  const acked = new Set<string>()
  for (const d of devices) for (const seq of d.acked) acked.add(`${d.device.id}#${seq}`)
  for (const key of acked) {
    result.checked++
    const n = stored.get(key) ?? 0
    if (n === 0) result.missing.push(key)
  }
  const ours = new Set(devices.map((d) => d.device.id))
  for (const [key, n] of stored) {
    const deviceId = key.slice(0, key.lastIndexOf('#'))
    if (!ours.has(deviceId) || (only && !only.has(deviceId))) continue
    result.rows += n
    if (n > 1) result.duplicated.push(`${key} x${n}`)
    if (!acked.has(key)) result.unacknowledged.push(key)
  }
  return result
}

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}

export const round1 = (n: number) => Math.round(n * 10) / 10

export function caOf(dataDir: string): Buffer {
  return readFileSync(path.join(dataDir, 'tls', 'ca.pem'))
}

export { sleep }
