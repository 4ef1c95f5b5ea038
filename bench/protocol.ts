/** Messages between the benchmarks (bench/ingest.ts, bench/chat.ts, bench/alerts.ts) and their child processes (Node IPC, JSON). */
import type { HistogramSnapshot } from './histogram.ts'

export interface BenchDevice {
  deviceId: string
  secret: string
  kind: string
  /** Whose device it is (gateway runs provisioned in bulk). */
  patientId?: string
}

export interface CpuSnapshot {
  /** process.cpuUsage(), µs. */
  userUs: number
  systemUs: number
  /** performance.eventLoopUtilization() figures, ms. */
  idleMs: number
  activeMs: number
  /** process.hrtime() in µs: the clock V8's CPU profiler stamps its samples with. */
  monotonicUs: number
}

// ---- broker process (bench/ingest-server.ts) ----

export type BrokerTarget = 'bare' | 'gateway' | 'mosquitto'

export interface ServerStart {
  cmd: 'start'
  /** mosquitto: this process starts Debian's mosquitto (bench/mosquitto.ts) and reports that process's CPU. */
  target: BrokerTarget
  devices: number
  tls: { cert: string; key: string; ca: string }
  dataDir: string
  /** Extra gateway config key paths (e.g. 'ingest.commitIntervalMs'). */
  settings: Record<string, string | number | boolean>
  /** PRAGMA synchronous for the journal, applied after start-up (diagnostics only). */
  synchronous?: 'FULL' | 'NORMAL' | 'OFF'
  /** Gateway only: a large population inserted in bulk instead of one patient per device through the registry. */
  population?: BulkPopulation
}

/**
 * `patients` patients; the first `devices` of them have one device each (kinds in turn), the
 * next `probes` one bp_cuff each; one provider is on every care team (none without `provider`).
 */
export interface BulkPopulation {
  patients: number
  probes: number
  provider?: { username: string; password: string }
  /** scrypt cost N of the devices' (shared) secret hash: 1024 by default; the registry uses 16384. */
  secretCostN?: number
}

export type ToServer = ServerStart | { cmd: 'cpu' } | { cmd: 'stats'; gc?: boolean } | { cmd: 'stop' }

/** Memory of the broker process (for mosquitto, of the mosquitto process: rss only). */
export interface ServerStats {
  type: 'stats'
  rssBytes: number
  heapUsedBytes?: number
  externalBytes?: number
  /** Open file descriptors of the broker process (Linux /proc), when readable. */
  openFds?: number
  /** Clients the broker has connected (gateway: devices online; bare: aedes clients). */
  connectedClients?: number
  cpu: CpuSnapshot
}

export type FromServer =
  | {
      type: 'ready'
      port: number
      metricsUrl?: string
      httpUrl?: string
      devices: BenchDevice[]
      probes?: BenchDevice[]
      startupMs: number
      /** mosquitto: its version, process id and generated configuration. */
      broker?: { version: string; pid: number; config: string }
    }
  | { type: 'cpu'; cpu: CpuSnapshot }
  | ServerStats
  | { type: 'stopped'; storedReadings?: number; quarantined?: number }
  | { type: 'error'; message: string }

// ---- load processes (bench/load-worker.ts) ----

export type ToWorker =
  /** values: 'varied' (default) sweeps plausible values, some past the shipped rules' limits; 'normal' stays inside them. */
  | { cmd: 'connect'; url: string; ca: string; devices: BenchDevice[]; concurrency: number; values?: 'varied' | 'normal' }
  | { cmd: 'saturate'; window: number }
  | { cmd: 'mark' }
  | { cmd: 'stop' }
  | { cmd: 'fixed'; ratePerSecond: number; warmupMs: number; durationMs: number }
  | { cmd: 'close' }

export interface WorkerMark {
  type: 'mark'
  /** PUBACKs received since the previous mark. */
  acked: number
  elapsedMs: number
  latency: HistogramSnapshot
  cpu: CpuSnapshot
}

export interface WorkerFixed {
  type: 'fixed'
  sent: number
  acked: number
  /** Publishes still without a PUBACK when the run ended. */
  unacked: number
  elapsedMs: number
  latency: HistogramSnapshot
  /** How far the sender fell behind its schedule at worst, ms. */
  maxScheduleLagMs: number
}

export type FromWorker =
  | { type: 'connected'; devices: number; ms: number }
  | WorkerMark
  | { type: 'stopped'; inflight: number; totalAcked: number; errors: number }
  | WorkerFixed
  | { type: 'closed'; totalAcked: number; errors: number }
  | { type: 'error'; message: string }

// ---- chat: gateway process (bench/chat-server.ts) ----

export interface ChatServerStart {
  cmd: 'start'
  dataDir: string
  /** Patients, each with one thread. */
  threads: number
  /** Providers on each patient's care team. */
  providersPerThread: number
  /** Providers in all; each is on the care teams of threads * providersPerThread / providers patients. */
  providers: number
  /** Extra gateway config key paths (e.g. 'websocket.messagesPerSecond'). */
  settings: Record<string, string | number | boolean>
}

export interface ChatAccount {
  username: string
  password: string
  role: 'patient' | 'provider'
}

export interface ChatThread {
  threadId: string
  patientId: string
  /** Usernames of the participants: the patient first, then the providers. */
  members: string[]
}

export interface ChatServerStats {
  type: 'stats'
  cpu: CpuSnapshot
  rssBytes: number
  heapUsedBytes: number
}

export type ToChatServer = ChatServerStart | { cmd: 'stats' } | { cmd: 'stop' }

export type FromChatServer =
  | { type: 'ready'; httpUrl: string; accounts: ChatAccount[]; threads: ChatThread[]; startupMs: number; seedMs: number }
  | ChatServerStats
  | { type: 'stopped'; storedMessages: number; auditRows: number }
  | { type: 'error'; message: string }

// ---- chat: load processes (bench/chat-worker.ts) ----

export interface ChatSocketSpec {
  /** Index of the socket in the whole run; embedded in the client message ids it sends. */
  index: number
  token: string
  userId: string
  threadId: string
}

export interface ChatRun {
  cmd: 'run'
  /** Sends per second from this process, spread over its sockets at random. */
  ratePerSecond: number
  /** Wall-clock ms (performance.timeOrigin + performance.now()): sending starts, measuring starts, both end. */
  startAt: number
  measureFrom: number
  measureTo: number
  textLength: number
}

export type ToChatWorker =
  | { cmd: 'connect'; url: string; sockets: ChatSocketSpec[]; concurrency: number }
  | ChatRun
  | { cmd: 'counts' }
  | { cmd: 'report' }
  | { cmd: 'close' }

export interface ChatCounts {
  type: 'counts'
  /** Measured messages received by sockets other than their sender's. */
  received: number
}

export interface ChatReport {
  type: 'report'
  /** Sends (client events) in the measured window, and over the whole run. */
  sentMeasured: number
  sentTotal: number
  /** `sent` answers for measured sends, and their latency (send to `sent`). */
  ackedMeasured: number
  ackLatency: HistogramSnapshot
  /** Deliveries of measured messages to the other participants' sockets, and their latency. */
  receivedMeasured: number
  deliveryLatency: HistogramSnapshot
  receivedTotal: number
  /** A message whose seq was not the next one the socket expected in its thread. */
  seqGaps: number
  duplicates: number
  /** Error events from the gateway, by code. */
  errors: Record<string, number>
  /** Sockets closed during the run, by close code. */
  closes: Record<string, number>
  /** Frames of every type received. */
  frames: Record<string, number>
  /** How far the sender fell behind its schedule at worst, ms. */
  maxScheduleLagMs: number
  /** First and last send, wall-clock ms, of the measured window. */
  firstMeasuredSendAt: number
  lastMeasuredSendAt: number
  /** This process's CPU at the start and the end of the measured window. */
  cpuFrom: CpuSnapshot
  cpuTo: CpuSnapshot
}

export type FromChatWorker =
  | { type: 'connected'; sockets: number; ms: number }
  | ChatCounts
  | ChatReport
  | { type: 'closed' }
  | { type: 'error'; message: string }

// ---- connections: load processes (bench/conn-worker.ts) ----

export interface ConnDevice {
  deviceId: string
  secret: string
  /** A client certificate whose CN is the device id (mqtt-cert mode), PEM. */
  cert?: string
}

export interface ConnStorm {
  cmd: 'storm'
  /** tls: TLS handshake, then close; mqtt: CONNECT with id and secret, keep open; mqtt-cert: CONNECT with a client certificate, keep open. */
  mode: 'tls' | 'mqtt' | 'mqtt-cert'
  host: string
  port: number
  servername: string
  ca: string
  /** The key of every client certificate (mqtt-cert), PEM. */
  clientKey?: string
  /** Source address on loopback (e.g. 127.0.0.11), so each process has its own ephemeral ports. */
  localAddress?: string
  devices: ConnDevice[]
  /** Connects in flight at once in this process. */
  concurrency: number
  keepaliveS: number
  timeoutMs: number
  /** Wall-clock ms (performance.timeOrigin + performance.now()) at which to begin. */
  startAt: number
}

export type ToConnWorker = ConnStorm | { cmd: 'close' } | { cmd: 'stats' } | { cmd: 'exit' }

export interface ConnStormReport {
  type: 'storm'
  ok: number
  failed: number
  errors: Record<string, number>
  /** Wall-clock ms of the first connect and of the last one done. */
  startedAt: number
  endedAt: number
  /** Connect start to done (handshake for tls, CONNACK for mqtt). */
  latency: HistogramSnapshot
  /** Connect start to the end of the client's TLS handshake. */
  handshake: HistogramSnapshot
  cpuFrom: CpuSnapshot
  cpuTo: CpuSnapshot
  /** Connections this process holds open now. */
  held: number
}

export type FromConnWorker =
  | ConnStormReport
  | { type: 'closed'; count: number }
  | { type: 'stats'; rssBytes: number; held: number; cpu: CpuSnapshot }
  | { type: 'error'; message: string }
