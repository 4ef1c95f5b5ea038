/**
 * The broker side of bench/ingest.ts, bench/alerts.ts, bench/timeseries.ts and
 * bench/connections.ts, in its own process so it has a core to itself as far as the machine
 * allows: a bare aedes broker with no hooks behind a TLS server, the real gateway (buildGateway)
 * with provisioned devices, or Debian's mosquitto started as a child of this process (whose CPU
 * and memory are then mosquitto's, read from /proc). Driven over IPC.
 */
import { readdirSync, readFileSync } from 'node:fs'
import tls from 'node:tls'
import { performance } from 'node:perf_hooks'
import type { AddressInfo } from 'node:net'
import { Aedes } from 'aedes'
import { buildGateway, type Gateway } from '../src/app.ts'
import { loadConfig } from '../src/config/load.ts'
import { hashSecret } from '../src/crypto/secrets.ts'
import { DEVICE_KINDS } from '../src/registry/registry.ts'
import { startMosquitto } from './mosquitto.ts'
import { cpuSnapshot } from './process-stats.ts'
import type { BenchDevice, BulkPopulation, CpuSnapshot, FromServer, ServerStart, ServerStats, ToServer } from './protocol.ts'

const send = (m: FromServer) => process.send!(m)

let stop: () => Promise<FromServer> = async () => ({ type: 'stopped' })
/** The broker's CPU: this process's, or mosquitto's (a child process) read from /proc. */
let brokerCpu: () => CpuSnapshot = cpuSnapshot
/** The broker's memory and clients (see ServerStats). */
let brokerStats: (gc: boolean) => Omit<ServerStats, 'type' | 'cpu'> = (gc) => {
  if (gc) globalThis.gc?.() // the process runs with --expose-gc when a benchmark wants figures after a collection
  const m = process.memoryUsage()
  return { rssBytes: m.rss, heapUsedBytes: m.heapUsed, externalBytes: m.external, ...fdCount(process.pid), ...connectedClients() }
}
let connectedClients: () => { connectedClients?: number } = () => ({})

function fdCount(pid: number): { openFds?: number } {
  try {
    return { openFds: readdirSync(`/proc/${pid}/fd`).length }
  } catch {
    return {}
  }
}

const deviceId = (i: number) => `bench-${String(i + 1).padStart(4, '0')}`
const kindOf = (i: number) => DEVICE_KINDS[i % DEVICE_KINDS.length]!

async function startBare(m: ServerStart): Promise<FromServer> {
  const t0 = performance.now()
  const aedes = await Aedes.createBroker()
  const server = tls.createServer(
    // The same certificate and handshake as the gateway's listener (which asks for an optional
    // client certificate), so the two differ only in what happens after the handshake.
    { key: readFileSync(m.tls.key), cert: readFileSync(m.tls.cert), ca: readFileSync(m.tls.ca), requestCert: true, rejectUnauthorized: false },
    (socket) => {
      socket.setNoDelay(true) // as the gateway's listener does
      aedes.handle(socket)
    },
  )
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const sockets = new Set<tls.TLSSocket>()
  server.on('secureConnection', (s) => {
    sockets.add(s)
    s.once('close', () => sockets.delete(s))
  })
  stop = async () => {
    await new Promise<void>((resolve) => aedes.close(() => resolve()))
    for (const s of sockets) s.destroy()
    await new Promise<void>((resolve) => server.close(() => resolve()))
    return { type: 'stopped' }
  }
  connectedClients = () => ({ connectedClients: aedes.connectedClients })
  // No authentication hook: any credentials connect. Same ids and kinds as the gateway run.
  const devices: BenchDevice[] = Array.from({ length: m.devices }, (_, i) => ({ deviceId: deviceId(i), secret: 'unused', kind: kindOf(i) }))
  return { type: 'ready', port: (server.address() as AddressInfo).port, devices, startupMs: performance.now() - t0 }
}

/** Debian's mosquitto (bench/mosquitto.ts) with the same certificate: this process only starts it and reads its CPU. */
async function startMosquittoTarget(m: ServerStart): Promise<FromServer> {
  const t0 = performance.now()
  const broker = await startMosquitto({ tls: m.tls })
  brokerCpu = () => {
    const ms = broker.cpuMs() ?? Number.NaN
    // No event loop to speak of: report the CPU only (loop utilisation comes out as NaN).
    return { userUs: ms * 1000, systemUs: 0, idleMs: 0, activeMs: 0, monotonicUs: Number(process.hrtime.bigint() / 1000n) }
  }
  brokerStats = () => ({ rssBytes: broker.rssBytes() ?? Number.NaN, ...fdCount(broker.pid) })
  stop = async () => {
    await broker.stop()
    return { type: 'stopped' }
  }
  const devices: BenchDevice[] = Array.from({ length: m.devices }, (_, i) => ({ deviceId: deviceId(i), secret: 'unused', kind: kindOf(i) }))
  return {
    type: 'ready',
    port: broker.port,
    devices,
    startupMs: performance.now() - t0,
    broker: { version: broker.version, pid: broker.pid, config: broker.config },
  }
}

/**
 * A large population in one transaction of direct inserts (the registry writes and syncs each
 * row on its own): see BulkPopulation. The devices share one secret hashed with a small scrypt
 * cost, since the broker checks it once per connection, never per reading.
 */
async function populate(gateway: Gateway, count: number, p: BulkPopulation): Promise<{ devices: BenchDevice[]; probes: BenchDevice[] }> {
  if (count + p.probes > p.patients) throw new Error(`${count} devices and ${p.probes} probes need as many patients, not ${p.patients}`)
  const provider = p.provider
    ? await gateway.users.add({ username: p.provider.username, password: p.provider.password, role: 'provider', name: 'Bench Provider' })
    : undefined
  const secret = 'bench-device-secret'
  const secretHash = await hashSecret(secret, p.secretCostN ?? 1024)
  const at = new Date().toISOString()
  const sqlite = gateway.store.sqlite
  const patient = sqlite.prepare('INSERT INTO patients (id, name, timezone, created_at) VALUES (?, ?, ?, ?)')
  const member = sqlite.prepare('INSERT INTO care_team (patient_id, user_id, added_at) VALUES (?, ?, ?)')
  const device = sqlite.prepare(`INSERT INTO devices (id, patient_id, kind, secret_hash, status, created_at, disabled_at, online, last_seen_at, last_connected_at)
    VALUES (?, ?, ?, ?, 'active', ?, NULL, 0, NULL, NULL)`)
  const devices: BenchDevice[] = []
  const probes: BenchDevice[] = []
  sqlite.transaction(() => {
    for (let i = 0; i < p.patients; i++) {
      const patientId = `pat-bench-${String(i + 1).padStart(5, '0')}`
      patient.run(patientId, `Bench Patient ${i + 1}`, 'UTC', at)
      if (provider) member.run(patientId, provider.id, at)
      const d: BenchDevice | undefined =
        i < count ? { deviceId: deviceId(i), secret, kind: kindOf(i), patientId }
        : i < count + p.probes ? { deviceId: `probe-${String(i - count + 1).padStart(3, '0')}`, secret, kind: 'bp_cuff', patientId }
        : undefined
      if (!d) continue
      device.run(d.deviceId, patientId, d.kind, secretHash, at)
      ;(i < count ? devices : probes).push(d)
    }
  })()
  return { devices, probes }
}

async function startGateway(m: ServerStart): Promise<FromServer> {
  const t0 = performance.now()
  const config = loadConfig({
    env: {},
    overrides: {
      dataDir: m.dataDir,
      'log.level': 'silent',
      'http.port': 0,
      'mqtt.port': 0,
      'mqtt.host': '127.0.0.1',
      'mqtt.tls.cert': m.tls.cert,
      'mqtt.tls.key': m.tls.key,
      'mqtt.tls.ca': m.tls.ca,
      // Every simulated device connects from 127.0.0.1 within seconds.
      'mqtt.connectRatePerMinute': 1_000_000,
      ...m.settings,
    },
  })
  const gateway: Gateway = await buildGateway(config)
  const urls = await gateway.start()

  let devices: BenchDevice[]
  let probes: BenchDevice[] | undefined
  if (m.population) {
    ;({ devices, probes } = await populate(gateway, m.devices, m.population))
  } else {
    // One patient per device, provisioned as an operator would (secrets are hashed with scrypt).
    devices = new Array(m.devices)
    let next = 0
    const lane = async () => {
      while (next < m.devices) {
        const i = next++
        const patient = await gateway.registry.addPatient({ name: `Bench Patient ${i + 1}`, timezone: 'UTC' })
        const device = await gateway.registry.addDevice({ patientId: patient.id, id: deviceId(i), kind: kindOf(i) })
        devices[i] = { deviceId: device.id, secret: device.secret, kind: device.kind }
      }
    }
    await Promise.all(Array.from({ length: 8 }, lane))
  }
  if (m.synchronous) gateway.store.sqlite.pragma(`synchronous = ${m.synchronous}`)
  connectedClients = () => ({ connectedClients: gateway.broker.connectedDevices })

  stop = async () => {
    // The load processes have drained and disconnected by now: every PUBACK sent is committed.
    const sqlite = gateway.store.sqlite
    const storedReadings = (sqlite.prepare('SELECT count(*) AS n FROM readings').get() as { n: number }).n
    const quarantined = (sqlite.prepare('SELECT count(*) AS n FROM quarantine').get() as { n: number }).n
    await gateway.stop()
    return { type: 'stopped', storedReadings, quarantined }
  }
  return {
    type: 'ready',
    port: gateway.broker.ports.tls,
    metricsUrl: `${urls.http}/metrics`,
    httpUrl: urls.http,
    devices,
    ...(probes ? { probes } : {}),
    startupMs: performance.now() - t0,
  }
}

process.on('message', (raw) => {
  const m = raw as ToServer
  const fail = (err: unknown) => send({ type: 'error', message: (err as Error).stack ?? String(err) })
  switch (m.cmd) {
    case 'start':
      (m.target === 'bare' ? startBare(m) : m.target === 'mosquitto' ? startMosquittoTarget(m) : startGateway(m)).then(send, fail)
      break
    case 'cpu':
      send({ type: 'cpu', cpu: brokerCpu() })
      break
    case 'stats':
      send({ type: 'stats', ...brokerStats(m.gc ?? false), cpu: brokerCpu() })
      break
    case 'stop':
      stop().then(
        (reply) => {
          send(reply)
          // A normal exit, so --cpu-prof writes its profile.
          process.disconnect?.()
          setImmediate(() => process.exit(0))
        },
        fail,
      )
      break
  }
})
