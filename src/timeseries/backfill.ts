import type { GatewayConfig } from '../config/load.ts'
import type { Store } from '../store/db.ts'
import type { JournalRow } from './lines.ts'
import { LineSender } from './sender.ts'
import { sendSplitting, toEntries } from './batches.ts'

export interface BackfillProgress {
  sent: number
  total: number
  ratePerSecond: number
  secondsLeft: number | null
}

export interface BackfillResult {
  sent: number
  total: number
  elapsedMs: number
  refused: Array<{ id: number; status: number; reason: string }>
}

/** "120,000 of 450,000 points (40,000/s), about 8 s left" */
export function progressLine(p: BackfillProgress): string {
  const n = (x: number) => Math.round(x).toLocaleString('en-US')
  return `${n(p.sent)} of ${n(p.total)} points (${n(p.ratePerSecond)}/s)${p.secondsLeft !== null ? `, about ${Math.ceil(p.secondsLeft)} s left` : ''}`
}

/**
 * Replays the journal (readings measured at or after `since`) into InfluxDB, oldest id first.
 * Points are idempotent (same series, same timestamp), so replaying twice leaves the same data.
 * Independent of the running gateway's own position: it neither reads nor moves it.
 */
export async function backfill(
  store: Store,
  config: GatewayConfig['influx'],
  options: { since?: string; batchSize: number; progress?: (p: BackfillProgress) => void },
): Promise<BackfillResult> {
  const filter = options.since !== undefined ? 'AND r.measured_at >= ?' : ''
  const params = options.since !== undefined ? [options.since] : []
  const total = (store.sqlite.prepare(`SELECT COUNT(*) AS n FROM readings r WHERE 1 = 1 ${filter}`).get(...params) as { n: number }).n
  const query = store.sqlite.prepare(`SELECT r.id, r.patient_id, r.device_id, COALESCE(d.kind, 'unknown') AS device_kind, r.type, r.measured_at, r.values_json
    FROM readings r LEFT JOIN devices d ON d.id = r.device_id WHERE r.id > ? ${filter} ORDER BY r.id LIMIT ?`)
  const sender = new LineSender({ ...config, batchSize: options.batchSize })
  const started = Date.now()
  let lastReport = 0
  let cursor = 0
  let sent = 0
  const refused: BackfillResult['refused'] = []
  try {
    for (;;) {
      const rows = query.all(cursor, ...params, options.batchSize) as JournalRow[]
      if (rows.length === 0) break
      const entries = toEntries(rows)
      refused.push(...(await sendSplitting(sender, entries)))
      sent += entries.length
      cursor = rows[rows.length - 1]!.id
      const now = Date.now()
      if (options.progress && now - lastReport >= 250) {
        lastReport = now
        const rate = sent / Math.max((now - started) / 1000, 0.001)
        options.progress({ sent, total, ratePerSecond: rate, secondsLeft: rate > 0 ? (total - sent) / rate : null })
      }
    }
  } finally {
    await sender.close()
  }
  const elapsedMs = Date.now() - started
  options.progress?.({ sent, total, ratePerSecond: sent / Math.max(elapsedMs / 1000, 0.001), secondsLeft: 0 })
  return { sent: sent - refused.length, total, elapsedMs, refused }
}
