/** Messages between bench/ingest.ts and its child processes (Node IPC, JSON). */
import type { HistogramSnapshot } from './histogram.ts'

export interface BenchDevice {
  deviceId: string
  secret: string
  kind: string
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

export interface ServerStart {
  cmd: 'start'
  target: 'bare' | 'gateway'
  devices: number
  tls: { cert: string; key: string; ca: string }
  dataDir: string
  /** Extra gateway config key paths (e.g. 'ingest.commitIntervalMs'). */
  settings: Record<string, string | number | boolean>
  /** PRAGMA synchronous for the journal, applied after start-up (diagnostics only). */
  synchronous?: 'FULL' | 'NORMAL' | 'OFF'
}

export type ToServer = ServerStart | { cmd: 'cpu' } | { cmd: 'stop' }

export type FromServer =
  | { type: 'ready'; port: number; metricsUrl?: string; devices: BenchDevice[]; startupMs: number }
  | { type: 'cpu'; cpu: CpuSnapshot }
  | { type: 'stopped'; storedReadings?: number; quarantined?: number }
  | { type: 'error'; message: string }

// ---- load processes (bench/load-worker.ts) ----

export type ToWorker =
  | { cmd: 'connect'; url: string; ca: string; devices: BenchDevice[]; concurrency: number }
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
