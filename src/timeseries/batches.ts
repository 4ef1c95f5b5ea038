import { type JournalRow, toLine } from './lines.ts'
import { type LineSender, WriteRefused } from './sender.ts'

/** One entry of a batch: the journal row id and its line. */
export interface Entry {
  id: number
  line: string
}

/** A point InfluxDB refused as invalid, with its status and InfluxDB's message. */
export interface Refusal {
  id: number
  status: number
  reason: string
}

/** Journal rows after an id (first parameter), oldest first, with their device kind; at most the second parameter. */
export const JOURNAL_SQL = `SELECT r.id, r.patient_id, r.device_id, COALESCE(d.kind, 'unknown') AS device_kind, r.type, r.measured_at, r.values_json
    FROM readings r LEFT JOIN devices d ON d.id = r.device_id WHERE r.id > ? ORDER BY r.id LIMIT ?`

export function toEntries(rows: readonly JournalRow[]): Entry[] {
  const out: Entry[] = []
  for (const r of rows) {
    const line = toLine(r)
    if (line !== null) out.push({ id: r.id, line })
  }
  return out
}

/**
 * Sends a batch; when InfluxDB refuses it as invalid, splits it until the refused points stand
 * alone, so one bad point does not hold up the rest. Returns the refused points with the reason.
 * Any other failure (InfluxDB away) throws: the whole batch is tried again later (points are
 * idempotent: the same series and timestamp is the same point).
 */
export async function sendSplitting(sender: LineSender, entries: readonly Entry[], onRefused?: () => void): Promise<Refusal[]> {
  try {
    await sender.send(entries.map((e) => e.line))
    return []
  } catch (err) {
    if (!(err instanceof WriteRefused)) throw err
    onRefused?.()
    if (entries.length === 1) return [{ id: entries[0]!.id, status: err.status, reason: err.message }]
    const half = Math.ceil(entries.length / 2)
    return [...(await sendSplitting(sender, entries.slice(0, half), onRefused)), ...(await sendSplitting(sender, entries.slice(half), onRefused))]
  }
}
