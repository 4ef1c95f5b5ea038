import { performance } from 'node:perf_hooks'
import type { CpuSnapshot } from './protocol.ts'

/** This process's CPU time and event-loop busy/idle time so far. */
export function cpuSnapshot(): CpuSnapshot {
  const { user, system } = process.cpuUsage()
  const { idle, active } = performance.eventLoopUtilization()
  return { userUs: user, systemUs: system, idleMs: idle, activeMs: active, monotonicUs: Number(process.hrtime.bigint() / 1000n) }
}

export interface CpuDelta {
  cpuMs: number
  /** Share of the interval the event loop was busy, 0..1. */
  loopUtilisation: number
}

export function cpuDelta(from: CpuSnapshot, to: CpuSnapshot): CpuDelta {
  const cpuMs = (to.userUs - from.userUs + (to.systemUs - from.systemUs)) / 1000
  const active = to.activeMs - from.activeMs
  const idle = to.idleMs - from.idleMs
  return { cpuMs, loopUtilisation: active + idle > 0 ? active / (active + idle) : Number.NaN }
}
