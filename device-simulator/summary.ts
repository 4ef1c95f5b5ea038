/**
 * The end-of-run summary: one document (`--json`) or a short table, and the exit code that
 * follows from it. Pure.
 */
import type { LatencySummary } from './stats.ts'

export interface Summary {
  scenario: string
  url: string
  /** Reproduces the readings' values with --seed (not their timing). */
  seed: number
  devices: number
  connected: number
  /** Devices that never connected, grouped by reason. */
  connectFailures: Array<{ reason: string; devices: number }>
  connectSeconds: number
  /** From the first PUBLISH until the last PUBACK (or the end of the drain). */
  elapsedSeconds: number
  targetRate: number
  batch: number
  /** Readings sent; a payload the gateway refuses whole (bad JSON, oversized batch) counts as one. */
  sent: number
  publishes: number
  acknowledged: number
  /** Error messages received on devices/{id}/errors. */
  quarantined: number
  /** Sent but never acknowledged (still in flight when the run ended, or failed). */
  unacknowledged: number
  publishErrors: number
  /** Acknowledged readings per second of `elapsedSeconds`. */
  readingsPerSecond: number
  pubackMs: LatencySummary
  quarantinedByCode: Record<string, number>
  /** Refusals the scenario provoked on purpose (acknowledged ones). */
  expectedQuarantine: number
  /** Errors for readings sent as valid, or more errors than refused payloads. */
  unexpectedQuarantine: number
  unexpectedByCode: Record<string, number>
  /** Refusals acknowledged but never answered on the error topic. */
  missingErrors: number
  missingByCode: Record<string, number>
  /** Errors about an earlier run's readings, delivered from the persistent session: not counted above. */
  staleErrorsIgnored: number
  offline: { drops: number; reconnects: number; queuedWhileOffline: number; connectionsLost: number }
  /** How far the fleet's schedule ran behind at worst (a busy simulator shows here). */
  maxScheduleLagMs: number
  stoppedBy: 'duration' | 'count' | 'interrupt' | 'no-connection'
  exitCode: number
}

/** The exit code a summary deserves. */
export function exitCodeFor(s: Omit<Summary, 'exitCode'>, aborted = false): number {
  if (aborted) return 130
  if (s.connected === 0 || s.acknowledged === 0) return 2
  if (s.unacknowledged > 0 || s.missingErrors > 0 || s.unexpectedQuarantine > 0 || s.connectFailures.length > 0) return 3
  return 0
}

const ms = (n: number | null) => (n === null ? '-' : `${n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : n.toFixed(0)} ms`)
const codes = (m: Record<string, number>) =>
  Object.entries(m)
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .map(([code, n]) => `${code} ${n}`)
    .join(', ')

export function formatSummary(s: Summary): string {
  const rows: Array<[string, string]> = [
    ['connected', `${s.connected}/${s.devices} in ${s.connectSeconds.toFixed(1)} s`],
    ['sent', `${s.sent} readings in ${s.publishes} publishes (target ${s.targetRate}/s${s.batch > 1 ? `, ${s.batch} per publish` : ''})`],
    ['acknowledged', String(s.acknowledged)],
    ['quarantined', s.expectedQuarantine || s.quarantined ? `${s.quarantined} (expected ${s.expectedQuarantine})` : '0'],
    ['unacknowledged', String(s.unacknowledged)],
    ['elapsed', `${s.elapsedSeconds.toFixed(1)} s, first publish to last PUBACK`],
    ['readings/s', `${s.readingsPerSecond.toFixed(1)} acknowledged`],
    ['PUBACK latency', s.pubackMs.count ? `p50 ${ms(s.pubackMs.p50)}   p90 ${ms(s.pubackMs.p90)}   p99 ${ms(s.pubackMs.p99)}   max ${ms(s.pubackMs.max)}` : '-'],
  ]
  if (Object.keys(s.quarantinedByCode).length) rows.push(['errors by code', codes(s.quarantinedByCode)])
  const o = s.offline
  if (o.drops || o.connectionsLost) {
    rows.push(['offline', `${o.drops} drops, ${o.reconnects} reconnects, ${o.queuedWhileOffline} readings queued while offline`])
    if (o.connectionsLost) rows.push(['connections lost', `${o.connectionsLost} (not planned by the scenario; MQTT.js reconnected)`])
  }
  const width = Math.max(...rows.map((r) => r[0].length))
  const lines = [
    `rpm-gateway simulator: scenario ${s.scenario}, ${s.devices} device${s.devices === 1 ? '' : 's'}, ${s.url} (seed ${s.seed})`,
    ...rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`),
  ]
  const problems: string[] = []
  for (const f of s.connectFailures) problems.push(`${f.devices} device${f.devices === 1 ? '' : 's'} could not connect: ${f.reason}`)
  if (s.unacknowledged) problems.push(`${s.unacknowledged} readings were not acknowledged${s.publishErrors ? ` (${s.publishErrors} failed)` : ''}`)
  if (s.missingErrors) problems.push(`${s.missingErrors} refused readings got no error message: ${codes(s.missingByCode)}`)
  if (s.unexpectedQuarantine) problems.push(`${s.unexpectedQuarantine} error messages for readings sent as valid: ${codes(s.unexpectedByCode)}`)
  if (s.maxScheduleLagMs > 1000) problems.push(`the simulator fell up to ${(s.maxScheduleLagMs / 1000).toFixed(1)} s behind its schedule (too busy for --rate)`)
  for (const p of problems) lines.push(`  ! ${p}`)
  if (s.stoppedBy === 'interrupt') lines.push('  (stopped by interrupt)')
  return lines.join('\n')
}
