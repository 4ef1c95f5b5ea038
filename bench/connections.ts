/**
 * Connections: a reconnect storm of many devices against the gateway, with an ECDSA P-256 and
 * with an RSA 2048 server certificate, then the gateway's resident memory per idle connection.
 *
 *   npm run bench:connections [-- --devices 10000 --workers 4 --concurrency 50]
 *   npm run bench:connections -- --quick          1,000 devices, smaller subsets, for a smoke run
 *
 * The gateway runs in its own process (bench/ingest-server.ts) on a temporary data directory,
 * --devices devices provisioned in bulk (one transaction; they share one secret whose scrypt hash
 * has cost N=1024, where the registry uses N=16384). Its per-address connection rate limit and
 * connection cap are raised for the run (mqtt.connectRatePerMinute, mqtt.maxConnections), since
 * every simulated device comes from loopback. --workers load processes (bench/conn-worker.ts,
 * node:tls sockets and hand-made MQTT packets, each from its own loopback address) share the
 * devices and keep --concurrency connects in flight each. For each server certificate:
 *
 * 1. TLS storm: every device opens a TLS connection (TLS 1.3, full handshake, no resumption)
 *    and closes it once the handshake is done. Handshakes/s over the whole storm.
 * 2. MQTT storm: every device connects again and sends CONNECT with its id and secret; timed to
 *    its CONNACK. The connections stay open.
 * 3. (ECDSA) Idle: with every device connected and idle (keepalive --keepalive s, no traffic),
 *    the gateway's RSS, after a garbage collection, against its RSS with none connected just
 *    before the MQTT storm: ((RSS with N) - (RSS with 0)) / N.
 * 4. (ECDSA) Client certificates: --cert-devices devices connect with a client certificate (CN =
 *    device id, from the development CA) and no secret.
 * Then --scrypt-devices devices whose secret hash has the registry's cost (N=16384) connect in a
 * storm of their own against a fresh gateway: what device-secret logins cost in production.
 *
 * Diagnostics: --certs ecdsa,rsa (which server certificates), --profile (V8 CPU profile of the
 * ECDSA gateway, summarised for its TLS and MQTT storms), --set key=value (any gateway config key; repeatable).
 * Each option also reads from the environment: BENCH_DEVICES, BENCH_WORKERS, BENCH_CONCURRENCY, ...
 *
 * Prints figures and writes them to bench/results/connections-latest.json; never fails on a time.
 */
import 'reflect-metadata' // @peculiar/x509 needs it loaded first
import { spawnSync } from 'node:child_process'
import { webcrypto } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import * as x509 from '@peculiar/x509'
import { ensureDevelopmentPki, serverNames } from '../src/broker/pki.ts'
import { connectKeys, profileLines, summariseProfile, type ProfileSummary } from './cpu-profile.ts'
import { benchArgs, forkChild, int, lpad, machineCpu, machineInfo, machineLines, ms, newestProfile, numberOption, pad, Peer, RESULTS_DIR } from './harness.ts'
import { LatencyHistogram, type LatencySummary } from './histogram.ts'
import { cpuDelta } from './process-stats.ts'
import type { BenchDevice, ConnDevice, ConnStorm, ConnStormReport, FromConnWorker, FromServer, ServerStart, ServerStats, ToConnWorker, ToServer } from './protocol.ts'

x509.cryptoProvider.set(webcrypto as never)

const IDLE_RSS_TARGET_BYTES = 2 ** 30
const IDLE_TARGET_DEVICES = 10_000
const DAY = 86_400_000

type CertKind = 'ecdsa' | 'rsa'
const CERT_LABEL: Record<CertKind, string> = { ecdsa: 'ECDSA P-256', rsa: 'RSA 2048' }
type ServerPeer = Peer<ToServer, FromServer>
type WorkerPeer = Peer<ToConnWorker, FromConnWorker>
type Tls = ServerStart['tls']

// ---------------------------------------------------------------- options

interface Options {
  devices: number
  workers: number
  concurrency: number
  certDevices: number
  /** Devices in the RSA gateway's MQTT storm (the TLS storm has them all). */
  rsaConnectDevices: number
  scryptDevices: number
  keepaliveS: number
  idleS: number
  certs: CertKind[]
  quick: boolean
  profile: boolean
  settings: Record<string, string | number | boolean>
}

function options(): Options {
  const { values, quick, profile, settings } = benchArgs(fileURLToPath(import.meta.url), ['devices', 'workers', 'concurrency', 'cert-devices', 'rsa-connect-devices', 'scrypt-devices', 'keepalive', 'idle', 'certs'])
  const num = numberOption
  const certs = (values.certs ?? process.env.BENCH_CERTS ?? 'ecdsa,rsa').split(',').map((s) => s.trim())
  for (const c of certs) if (c !== 'ecdsa' && c !== 'rsa') throw new Error(`--certs takes ecdsa, rsa or both, got "${c}"`)
  const devices = Math.floor(num(values.devices, 'DEVICES', quick ? 1000 : 10_000, 1))
  return {
    devices,
    workers: Math.floor(num(values.workers, 'WORKERS', 4, 1)),
    concurrency: Math.floor(num(values.concurrency, 'CONCURRENCY', 50, 1)),
    certDevices: Math.min(devices, Math.floor(num(values['cert-devices'], 'CERT_DEVICES', quick ? 300 : 2000, 0))),
    rsaConnectDevices: Math.min(devices, Math.floor(num(values['rsa-connect-devices'], 'RSA_CONNECT_DEVICES', quick ? 300 : 2000, 1))),
    scryptDevices: Math.floor(num(values['scrypt-devices'], 'SCRYPT_DEVICES', quick ? 60 : 300, 0)),
    keepaliveS: Math.floor(num(values.keepalive, 'KEEPALIVE', 600, 0)),
    idleS: num(values.idle, 'IDLE', quick ? 2 : 5, 0),
    certs: certs as CertKind[],
    quick,
    profile,
    settings,
  }
}

function log(line: string): void {
  process.stderr.write(`  · ${line}\n`)
}

// ---------------------------------------------------------------- file descriptors

interface FdLimits {
  soft: number
  hard: number
  /** The soft limit before this process raised it, when it did. */
  raisedFrom?: number
  note: string
}

/** `ulimit -n` of this process (children inherit it); raised towards `need` with prlimit when the hard limit allows. */
function fileLimits(need: number): FdLimits {
  const read = () => {
    const r = spawnSync('sh', ['-c', 'ulimit -Sn; ulimit -Hn'], { encoding: 'utf8' })
    const [soft, hard] = (r.stdout ?? '').trim().split('\n').map((s) => (s === 'unlimited' ? Infinity : Number(s)))
    return { soft: soft ?? Number.NaN, hard: hard ?? Number.NaN }
  }
  const before = read()
  if (!(before.soft < need)) return { ...before, note: `ulimit -n ${before.soft} (hard ${before.hard}): enough for ${int(need)} descriptors` }
  const target = Math.min(before.hard, Math.max(need, 65_536))
  const r = spawnSync('prlimit', ['--pid', String(process.pid), `--nofile=${target}:${before.hard === Infinity ? 'unlimited' : before.hard}`], { encoding: 'utf8' })
  const after = read()
  const note =
    after.soft >= need
      ? `ulimit -n raised from ${before.soft} to ${after.soft} (hard ${after.hard}) with prlimit for this process and its children`
      : `ulimit -n is ${after.soft} (hard ${after.hard}), below the ${int(need)} descriptors the gateway needs${r.status === 0 ? '' : ` (prlimit failed: ${(r.stderr ?? '').trim().slice(0, 120)})`}: expect refused connections`
  return { ...after, raisedFrom: before.soft, note }
}

// ---------------------------------------------------------------- certificates

const RSA_ALG = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 } as const
const EC_ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const

function toPem(der: ArrayBuffer, label: string): string {
  const b64 = Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n')
  return `-----BEGIN ${label}-----\n${b64}${b64.endsWith('\n') ? '' : '\n'}-----END ${label}-----\n`
}

const exportKey = async (key: webcrypto.CryptoKey) => toPem(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY')

function serial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16))
  bytes[0]! &= 0x7f
  return Buffer.from(bytes).toString('hex')
}

/** An RSA 2048 CA and a server certificate it signs for the loopback names, as PEM files in `dir`. */
async function rsaChain(dir: string, names: readonly string[]): Promise<Tls> {
  mkdirSync(dir, { recursive: true })
  const now = Date.now()
  const caKeys = await webcrypto.subtle.generateKey(RSA_ALG, true, ['sign', 'verify'])
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: 'CN=rpm-gateway bench RSA CA',
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + 30 * DAY),
    signingAlgorithm: RSA_ALG,
    keys: caKeys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  })
  const keys = await webcrypto.subtle.generateKey(RSA_ALG, true, ['sign', 'verify'])
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${names[0] ?? 'localhost'}`,
    issuer: ca.subject,
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + 30 * DAY),
    signingAlgorithm: RSA_ALG,
    publicKey: keys.publicKey,
    signingKey: caKeys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      await x509.AuthorityKeyIdentifierExtension.create(ca),
      new x509.SubjectAlternativeNameExtension(names.map((n) => ({ type: /^[\d.]+$/.test(n) || n.includes(':') ? 'ip' : 'dns', value: n }))),
    ],
  })
  const files: Tls = { ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'server.pem'), key: path.join(dir, 'server-key.pem') }
  writeFileSync(files.ca, ca.toString('pem') + '\n')
  writeFileSync(files.cert, cert.toString('pem') + '\n')
  writeFileSync(files.key, await exportKey(keys.privateKey), { mode: 0o600 })
  return files
}

/**
 * Client certificates (CN = device id) from the development CA for `ids`, all over one ECDSA key
 * (issuing a key per device would only slow the benchmark's set-up; the server's work is the same).
 */
async function clientCerts(caCertPath: string, caKeyPath: string, ids: readonly string[]): Promise<{ key: string; certs: Map<string, string> }> {
  const caCert = new x509.X509Certificate(readFileSync(caCertPath, 'utf8'))
  const der = Buffer.from(readFileSync(caKeyPath, 'utf8').replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64')
  const caKey = await webcrypto.subtle.importKey('pkcs8', der, EC_ALG, false, ['sign'])
  const keys = await webcrypto.subtle.generateKey(EC_ALG, true, ['sign', 'verify'])
  const now = Date.now()
  const aki = await x509.AuthorityKeyIdentifierExtension.create(caCert)
  const certs = new Map<string, string>()
  for (const id of ids) {
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: `CN=${id}`,
      issuer: caCert.subject,
      notBefore: new Date(now - DAY),
      notAfter: new Date(now + 30 * DAY),
      signingAlgorithm: EC_ALG,
      publicKey: keys.publicKey,
      signingKey: caKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
        aki,
      ],
    })
    certs.set(id, cert.toString('pem') + '\n')
  }
  return { key: await exportKey(keys.privateKey), certs }
}

// ---------------------------------------------------------------- a storm

interface StormResult {
  mode: ConnStorm['mode']
  devices: number
  ok: number
  failed: number
  errors: Record<string, number>
  wallMs: number
  perSecond: number
  latency: LatencySummary
  handshake: LatencySummary
  gatewayCpuMs: number
  gatewayCpuMsPerConnect: number
  gatewayCores: number
  gatewayLoopUtilisation: number
  clientCores: number
  clientCpuMsPerConnect: number
  machineBusyCores: number | undefined
  /** The gateway's clock (process.hrtime, µs) at the start and end of its CPU window, for the profile. */
  gatewayWindowUs: { from: number; to: number }
}

const now = () => performance.timeOrigin + performance.now()

async function storm(
  server: ServerPeer,
  workers: WorkerPeer[],
  port: number,
  ca: string,
  mode: ConnStorm['mode'],
  devices: ConnDevice[],
  opts: Options,
  clientKey?: string,
): Promise<StormResult> {
  const shares: ConnDevice[][] = workers.map(() => [])
  devices.forEach((d, i) => shares[i % workers.length]!.push(d))
  // Client certificates: each process makes a TLS context per device first (about 1 ms each).
  const startAt = now() + 300 + (mode === 'mqtt-cert' ? (devices.length / workers.length) * 1.5 : 0)
  const cpu0 = (await server.request({ cmd: 'cpu' }, 'cpu')).cpu
  const machine0 = machineCpu()
  const t0 = performance.now()
  const reports: ConnStormReport[] = await Promise.all(
    workers.map((w, i) =>
      w.request(
        {
          cmd: 'storm',
          mode,
          host: '127.0.0.1',
          port,
          servername: 'localhost',
          ca,
          ...(clientKey ? { clientKey } : {}),
          localAddress: `127.0.0.${11 + i}`,
          devices: shares[i]!,
          concurrency: opts.concurrency,
          keepaliveS: opts.keepaliveS,
          timeoutMs: 60_000,
          startAt,
        },
        'storm',
        30 * 60_000,
      ),
    ),
  )
  const elapsed = performance.now() - t0
  const cpu1 = (await server.request({ cmd: 'cpu' }, 'cpu')).cpu
  const machine1 = machineCpu()
  const started = Math.min(...reports.map((r) => r.startedAt))
  const ended = Math.max(...reports.map((r) => r.endedAt))
  const wallMs = ended - started
  const ok = reports.reduce((n, r) => n + r.ok, 0)
  const gw = cpuDelta(cpu0, cpu1)
  const clientCpuMs = reports.reduce((n, r) => n + cpuDelta(r.cpuFrom, r.cpuTo).cpuMs, 0)
  const errors: Record<string, number> = {}
  for (const r of reports) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v
  return {
    mode,
    devices: devices.length,
    ok,
    failed: reports.reduce((n, r) => n + r.failed, 0),
    errors,
    wallMs,
    perSecond: ok / (wallMs / 1000),
    latency: LatencyHistogram.from(reports.map((r) => r.latency)).summary(),
    handshake: LatencyHistogram.from(reports.map((r) => r.handshake)).summary(),
    gatewayCpuMs: gw.cpuMs,
    gatewayCpuMsPerConnect: ok ? gw.cpuMs / ok : Number.NaN,
    // The gateway's window is a little wider than the storm's (the IPC round trips and the start delay).
    gatewayCores: gw.cpuMs / wallMs,
    gatewayLoopUtilisation: gw.loopUtilisation,
    clientCores: clientCpuMs / wallMs,
    clientCpuMsPerConnect: ok ? clientCpuMs / ok : Number.NaN,
    machineBusyCores: machine0 && machine1 ? (machine1.busyMs - machine0.busyMs) / elapsed : undefined,
    gatewayWindowUs: { from: cpu0.monotonicUs, to: cpu1.monotonicUs },
  }
}

async function stats(server: ServerPeer): Promise<ServerStats> {
  return server.request({ cmd: 'stats', gc: true }, 'stats')
}

/** Waits until the gateway counts at most `n` devices connected (after a close). */
async function settleConnected(server: ServerPeer, n: number, timeoutMs: number): Promise<number> {
  const until = performance.now() + timeoutMs
  let s = await stats(server)
  while ((s.connectedClients ?? 0) > n && performance.now() < until) {
    await sleep(250)
    s = await server.request({ cmd: 'stats' }, 'stats')
  }
  return s.connectedClients ?? 0
}

// ---------------------------------------------------------------- one gateway

interface IdleResult {
  devices: number
  connected: number
  rssBeforeBytes: number
  rssWithBytes: number
  rssPerConnectionBytes: number
  heapBeforeBytes: number
  heapWithBytes: number
  heapPerConnectionBytes: number
  externalPerConnectionBytes: number
  openFds: number | undefined
  /** The gateway's RSS at start-up (population in place, nothing connected yet). */
  rssAtStartBytes: number
  /** RSS after every device has disconnected again. */
  rssAfterCloseBytes: number
  gatewayCoresIdle: number
  workersRssBytes: number
  /** RSS the gateway would have with IDLE_TARGET_DEVICES devices: with N, or projected from the per-connection figure. */
  projectedRssAtTargetBytes: number
}

interface CertResult {
  cert: CertKind
  label: string
  startupMs: number
  tls: StormResult
  mqtt: StormResult
  idle?: IdleResult
  clientCert?: StormResult
  /** With --profile (ECDSA): where the gateway's main thread spent the TLS and the MQTT storm. */
  profile?: { tls: ProfileSummary; mqtt: ProfileSummary }
}

const PROFILE_DIR = path.join(RESULTS_DIR, 'profiles')

async function withGateway<T>(
  name: string,
  start: Omit<ServerStart, 'cmd' | 'target' | 'settings'>,
  opts: Options,
  run: (server: ServerPeer, ready: Extract<FromServer, { type: 'ready' }>, workers: WorkerPeer[]) => Promise<T>,
  profile = false,
): Promise<T> {
  if (profile) mkdirSync(PROFILE_DIR, { recursive: true })
  const server: ServerPeer = new Peer(name, forkChild('ingest-server.ts', ['--expose-gc', ...(profile ? ['--cpu-prof', '--cpu-prof-dir', PROFILE_DIR] : [])]))
  const workers: WorkerPeer[] = []
  try {
    const ready = await server.request(
      {
        cmd: 'start',
        target: 'gateway',
        settings: {
          // Every simulated device connects from loopback within seconds: raised for the benchmark.
          'mqtt.connectRatePerMinute': 100_000_000,
          'mqtt.maxConnections': start.devices + 1000,
          ...opts.settings,
        },
        ...start,
      },
      'ready',
      600_000,
    )
    for (let i = 0; i < opts.workers; i++) workers.push(new Peer(`connection worker ${i + 1}`, forkChild('conn-worker.ts')))
    const out = await run(server, ready, workers)
    for (const w of workers) w.send({ cmd: 'exit' })
    await server.request({ cmd: 'stop' }, 'stopped', 120_000)
    await Promise.race([Promise.all([server.exited, ...workers.map((w) => w.exited)]), sleep(10_000)])
    return out
  } finally {
    server.kill()
    for (const w of workers) w.kill()
  }
}

const connDevices = (devices: BenchDevice[]): ConnDevice[] => devices.map((d) => ({ deviceId: d.deviceId, secret: d.secret }))

async function runCert(cert: CertKind, tlsFiles: Tls, ecdsa: { caCertPath: string; caKeyPath: string }, dataDir: string, opts: Options): Promise<CertResult> {
  const profiling = opts.profile && cert === 'ecdsa'
  const result = await withGateway(`gateway (${CERT_LABEL[cert]})`, { devices: opts.devices, tls: tlsFiles, dataDir, population: { patients: opts.devices, probes: 0 } }, opts, async (server, ready, workers) => {
    log(`${CERT_LABEL[cert]}: gateway up in ${(ready.startupMs / 1000).toFixed(1)} s with ${int(ready.devices.length)} devices`)
    const ca = readFileSync(tlsFiles.ca, 'utf8')
    const devices = connDevices(ready.devices)
    const atStart = await stats(server)

    const tls = await storm(server, workers, ready.port, ca, 'tls', devices, opts)
    log(`${CERT_LABEL[cert]}: ${int(tls.ok)} TLS handshakes in ${(tls.wallMs / 1000).toFixed(1)} s, ${int(tls.perSecond)}/s${tls.failed ? `, ${tls.failed} failed ${JSON.stringify(tls.errors)}` : ''}`)
    await settleConnected(server, 0, 10_000)
    await sleep(500)

    const before = await stats(server)
    // The MQTT step costs the same after either handshake but for the handshake itself: with RSA, a share of the devices.
    const mqtt = await storm(server, workers, ready.port, ca, 'mqtt', cert === 'rsa' ? devices.slice(0, opts.rsaConnectDevices) : devices, opts)
    log(`${CERT_LABEL[cert]}: ${int(mqtt.ok)} MQTT CONNECT/CONNACK in ${(mqtt.wallMs / 1000).toFixed(1)} s, ${int(mqtt.perSecond)}/s${mqtt.failed ? `, ${mqtt.failed} failed ${JSON.stringify(mqtt.errors)}` : ''}`)

    let idle: IdleResult | undefined
    if (cert === 'ecdsa') {
      // Idle: let the storm's tail (presence writes, audit, GC) settle, then measure, collect and read.
      await sleep(1000)
      const c0 = (await server.request({ cmd: 'cpu' }, 'cpu')).cpu
      await sleep(opts.idleS * 1000)
      const c1 = (await server.request({ cmd: 'cpu' }, 'cpu')).cpu
      const withN = await stats(server)
      const workerStats = await Promise.all(workers.map((w) => w.request({ cmd: 'stats' }, 'stats')))
      const connected = withN.connectedClients ?? mqtt.ok
      const per = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined && connected ? (a - b) / connected : Number.NaN)
      const rssPer = per(withN.rssBytes, before.rssBytes)
      idle = {
        devices: devices.length,
        connected,
        rssBeforeBytes: before.rssBytes,
        rssWithBytes: withN.rssBytes,
        rssPerConnectionBytes: rssPer,
        heapBeforeBytes: before.heapUsedBytes ?? Number.NaN,
        heapWithBytes: withN.heapUsedBytes ?? Number.NaN,
        heapPerConnectionBytes: per(withN.heapUsedBytes, before.heapUsedBytes),
        externalPerConnectionBytes: per(withN.externalBytes, before.externalBytes),
        openFds: withN.openFds,
        rssAtStartBytes: atStart.rssBytes,
        rssAfterCloseBytes: Number.NaN,
        gatewayCoresIdle: cpuDelta(c0, c1).cpuMs / ((c1.monotonicUs - c0.monotonicUs) / 1000),
        workersRssBytes: workerStats.reduce((n, s) => n + s.rssBytes, 0),
        projectedRssAtTargetBytes: connected >= IDLE_TARGET_DEVICES ? withN.rssBytes : before.rssBytes + rssPer * IDLE_TARGET_DEVICES,
      }
      log(`idle: ${int(connected)} devices connected, gateway RSS ${mib(before.rssBytes)} -> ${mib(withN.rssBytes)} MiB, ${kib(rssPer)} KiB per connection`)
    }

    await Promise.all(workers.map((w) => w.request({ cmd: 'close' }, 'closed', 120_000)))
    const left = await settleConnected(server, 0, 30_000)
    if (left > 0) log(`${left} devices still connected 30 s after the close`)
    if (idle) idle.rssAfterCloseBytes = (await stats(server)).rssBytes

    let clientCert: StormResult | undefined
    if (cert === 'ecdsa' && opts.certDevices > 0) {
      const ids = devices.slice(0, opts.certDevices).map((d) => d.deviceId)
      const t0 = performance.now()
      const issued = await clientCerts(ecdsa.caCertPath, ecdsa.caKeyPath, ids)
      log(`${int(ids.length)} client certificates issued in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
      const withCerts = devices.slice(0, opts.certDevices).map((d) => ({ ...d, cert: issued.certs.get(d.deviceId)! }))
      clientCert = await storm(server, workers, ready.port, ca, 'mqtt-cert', withCerts, opts, issued.key)
      log(`client certificates: ${int(clientCert.ok)} MQTT CONNECT/CONNACK in ${(clientCert.wallMs / 1000).toFixed(1)} s, ${int(clientCert.perSecond)}/s${clientCert.failed ? `, ${clientCert.failed} failed ${JSON.stringify(clientCert.errors)}` : ''}`)
      await Promise.all(workers.map((w) => w.request({ cmd: 'close' }, 'closed', 120_000)))
      await settleConnected(server, 0, 30_000)
    }
    return { cert, label: CERT_LABEL[cert], startupMs: ready.startupMs, tls, mqtt, ...(idle ? { idle } : {}), ...(clientCert ? { clientCert } : {}) } as CertResult
  }, profiling)
  if (profiling) {
    const file = newestProfile(PROFILE_DIR)
    if (file) {
      result.profile = {
        tls: summariseProfile(file, result.tls.gatewayWindowUs.from, result.tls.gatewayWindowUs.to, connectKeys),
        mqtt: summariseProfile(file, result.mqtt.gatewayWindowUs.from, result.mqtt.gatewayWindowUs.to, connectKeys),
      }
    }
  }
  return result
}

async function runProductionScrypt(tlsFiles: Tls, dataDir: string, opts: Options): Promise<StormResult> {
  return withGateway(
    'gateway (scrypt N=16384)',
    { devices: opts.scryptDevices, tls: tlsFiles, dataDir, population: { patients: opts.scryptDevices, probes: 0, secretCostN: 16384 } },
    opts,
    async (server, ready, workers) => {
      const r = await storm(server, workers, ready.port, readFileSync(tlsFiles.ca, 'utf8'), 'mqtt', connDevices(ready.devices), opts)
      log(`production secret hashes: ${int(r.ok)} MQTT CONNECT/CONNACK in ${(r.wallMs / 1000).toFixed(1)} s, ${r.perSecond.toFixed(0)}/s`)
      await Promise.all(workers.map((w) => w.request({ cmd: 'close' }, 'closed', 120_000)))
      return r
    },
  )
}

// ---------------------------------------------------------------- report

const mib = (b: number) => (Number.isFinite(b) ? (b / 2 ** 20).toFixed(0) : '-')
const kib = (b: number) => (Number.isFinite(b) ? (b / 1024).toFixed(1) : '-')

function stormCells(s: StormResult): string {
  return `${lpad(int(s.perSecond), 9)}/s  ${lpad(s.gatewayCpuMsPerConnect.toFixed(2), 6)} ms  ${lpad(`${ms(s.latency.p50Ms)} / ${ms(s.latency.p99Ms)}`, 15)}`
}

function report(opts: Options, certs: CertResult[], scrypt: StormResult | undefined, limits: FdLimits): string[] {
  const out: string[] = ['', 'Reconnect storm']
  out.push(`${pad('server certificate', 12)}  ${pad('step', 30)}  ${lpad('devices', 7)}  ${lpad('rate', 11)}  ${lpad('gw CPU', 9)}  ${lpad('p50 / p99 ms', 15)}  ok / failed`)
  out.push('-'.repeat(110))
  const line = (label: string, step: string, s: StormResult) =>
    out.push(`${pad(label, 12)}  ${pad(step, 30)}  ${lpad(int(s.devices), 7)}  ${stormCells(s)}  ${int(s.ok)} / ${int(s.failed)}${s.failed ? ` ${JSON.stringify(s.errors)}` : ''}`)
  for (const c of certs) {
    line(c.label, 'TLS handshake', c.tls)
    line(c.label, 'MQTT CONNECT, secret N=1024', c.mqtt)
    if (c.clientCert) line(c.label, 'MQTT CONNECT, client cert', c.clientCert)
  }
  if (scrypt) line('ECDSA P-256', 'MQTT CONNECT, secret N=16384', scrypt)
  out.push('')
  out.push('rate: connections completed per second over the storm (first connect to last done); gw CPU: gateway process CPU per')
  out.push(`connection; p50/p99: one connection's time from connect() to the end of its handshake (TLS) or its CONNACK (MQTT), with`)
  out.push(`${opts.workers} x ${opts.concurrency} connects in flight. TLS 1.3, full handshakes (no resumption). Secret N=1024: the benchmark's`)
  out.push('shared device secret hashed with scrypt N=1024; N=16384 is what the registry uses for every provisioned device.')
  for (const c of certs) {
    out.push(
      `${c.label}: machine busy ${c.tls.machineBusyCores?.toFixed(2) ?? '-'} cores in the TLS storm (gateway ${c.tls.gatewayCores.toFixed(2)}, ` +
        `load processes ${c.tls.clientCores.toFixed(2)}, ${c.tls.clientCpuMsPerConnect.toFixed(2)} ms CPU per handshake on the client side); ` +
        `MQTT storm: gateway ${c.mqtt.gatewayCores.toFixed(2)} cores, event loop busy ${Math.round(c.mqtt.gatewayLoopUtilisation * 100)}%`,
    )
    out.push(
      `  the gateway's own cost: ${int(1000 / c.tls.gatewayCpuMsPerConnect)} handshakes per CPU-second; the TLS storm rate is bounded by the two cores ` +
        `the gateway shares with the load processes (${(c.tls.gatewayCpuMsPerConnect + c.tls.clientCpuMsPerConnect).toFixed(2)} ms CPU per handshake on both sides)`,
    )
  }
  const ec = certs.find((c) => c.cert === 'ecdsa')
  const rsa = certs.find((c) => c.cert === 'rsa')
  if (ec && rsa) {
    out.push(`TLS handshakes/s, ECDSA / RSA: ${(ec.tls.perSecond / rsa.tls.perSecond).toFixed(2)}x; gateway CPU per handshake ${ec.tls.gatewayCpuMsPerConnect.toFixed(2)} vs ${rsa.tls.gatewayCpuMsPerConnect.toFixed(2)} ms`)
  }
  if (scrypt && ec) {
    const secs = IDLE_TARGET_DEVICES / scrypt.perSecond
    out.push(
      `with the registry's secret hashes (scrypt N=16384) ${int(IDLE_TARGET_DEVICES)} devices would take about ${secs.toFixed(0)} s to reconnect ` +
        `(${scrypt.perSecond.toFixed(0)}/s, ${scrypt.gatewayCpuMsPerConnect.toFixed(1)} ms gateway CPU per login: scrypt dominates); ` +
        `${(IDLE_TARGET_DEVICES / ec.mqtt.perSecond).toFixed(0)} s with N=1024${ec.clientCert ? `, ${(IDLE_TARGET_DEVICES / ec.clientCert.perSecond).toFixed(0)} s with client certificates` : ''}`,
    )
  }
  const idle = ec?.idle
  if (idle) {
    out.push('', 'Idle connections (ECDSA, MQTT/TLS, keepalive ' + opts.keepaliveS + ' s, no traffic)')
    out.push(
      `gateway RSS: ${mib(idle.rssAtStartBytes)} MiB at start, ${mib(idle.rssBeforeBytes)} MiB with 0 connected (after the TLS storm, just before the MQTT storm), ` +
        `${mib(idle.rssWithBytes)} MiB with ${int(idle.connected)} connected, ${mib(idle.rssAfterCloseBytes)} MiB after they left (each after a full GC)`,
    )
    out.push(
      `per idle connection: ${kib(idle.rssPerConnectionBytes)} KiB resident (V8 heap ${kib(idle.heapPerConnectionBytes)} KiB, external ${kib(idle.externalPerConnectionBytes)} KiB); ` +
        `${idle.openFds ?? '-'} open file descriptors; gateway CPU while idle ${idle.gatewayCoresIdle.toFixed(3)} cores; load processes ${mib(idle.workersRssBytes)} MiB RSS in all`,
    )
    const projected = idle.projectedRssAtTargetBytes
    out.push(
      `${int(IDLE_TARGET_DEVICES)} idle TLS devices: ${mib(projected)} MiB resident${idle.connected >= IDLE_TARGET_DEVICES ? '' : ` (projected from ${int(idle.connected)})`} ` +
        `(target < ${mib(IDLE_RSS_TARGET_BYTES)} MiB: ${projected < IDLE_RSS_TARGET_BYTES ? 'met' : 'NOT met'})`,
    )
  }
  for (const c of certs.filter((x) => x.profile)) {
    out.push('', `${c.label} gateway profile`)
    out.push(...profileLines(c.profile!.tls, 'the TLS storm', c.tls.ok, 'handshake'))
    out.push(...profileLines(c.profile!.mqtt, 'the MQTT storm', c.mqtt.ok, 'connect'))
  }
  out.push('', `file descriptors: ${limits.note}`)
  return out
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const opts = options()
  const root = mkdtempSync(path.join(os.tmpdir(), 'rpm-bench-conn-'))
  const machine = machineInfo(root)
  const print = (line = '') => process.stdout.write(line + '\n')
  print('rpm-gateway connections benchmark')
  for (const line of machineLines(machine, root)) print(line)
  const limits = fileLimits(opts.devices + 2000)
  print(
    `load: ${int(opts.devices)} devices in ${opts.workers} load processes (node:tls, hand-made MQTT 3.1.1 packets), ${opts.concurrency} connects in flight each; ` +
      `server certificates: ${opts.certs.map((c) => CERT_LABEL[c]).join(', ')}; MQTT storm after RSA handshakes: ${int(opts.rsaConnectDevices)} devices; ` +
      `client certificates: ${int(opts.certDevices)} devices; production-cost secrets: ${int(opts.scryptDevices)} devices` +
      (opts.quick ? ' (--quick)' : ''),
  )
  print(`gateway settings for the benchmark: mqtt.connectRatePerMinute=100000000, mqtt.maxConnections=${int(opts.devices + 1000)} (defaults 600 and 20,000)` +
    (Object.keys(opts.settings).length ? `, ${Object.entries(opts.settings).map(([k, v]) => `${k}=${v}`).join(', ')}` : ''))
  print(`file descriptors: ${limits.note}`)
  print()

  const certs: CertResult[] = []
  let scrypt: StormResult | undefined
  try {
    const names = serverNames()
    const ec = await ensureDevelopmentPki(path.join(root, 'pki'), names)
    const ecFiles: Tls = { cert: ec.certPath, key: ec.keyPath, ca: ec.caCertPath }
    for (const kind of opts.certs) {
      const files = kind === 'ecdsa' ? ecFiles : await rsaChain(path.join(root, 'pki-rsa'), names)
      certs.push(await runCert(kind, files, ec, path.join(root, `gateway-${kind}`), opts))
    }
    if (opts.scryptDevices > 0) scrypt = await runProductionScrypt(ecFiles, path.join(root, 'gateway-scrypt'), opts)
  } finally {
    rmSync(root, { recursive: true, force: true })
  }

  for (const line of report(opts, certs, scrypt, limits)) print(line)

  mkdirSync(RESULTS_DIR, { recursive: true })
  const file = path.join(RESULTS_DIR, 'connections-latest.json')
  const idle = certs.find((c) => c.cert === 'ecdsa')?.idle
  writeFileSync(
    file,
    JSON.stringify(
      {
        at: new Date().toISOString(),
        command: `node --import tsx bench/connections.ts ${process.argv.slice(2).join(' ')}`.trim(),
        machine,
        options: opts,
        fileDescriptors: limits,
        certs,
        productionScrypt: scrypt ?? null,
        targets: {
          idleRssAt10kBytes: {
            value: idle?.projectedRssAtTargetBytes ?? null,
            target: IDLE_RSS_TARGET_BYTES,
            devices: IDLE_TARGET_DEVICES,
            measuredWith: idle?.connected ?? null,
            met: idle ? idle.projectedRssAtTargetBytes < IDLE_RSS_TARGET_BYTES : null,
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
  process.stderr.write(`bench:connections failed: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
