import type { Kysely } from 'kysely'
import { RpmError } from '../errors.ts'
import type { Database } from '../store/db.ts'
import { READING_TYPES } from './types.ts'

export interface ReadingQuery {
  patientId: string
  type?: string
  since?: string
  until?: string
  limit?: number
  /** Opaque cursor from a previous page. */
  cursor?: string
}

export interface StoredReading {
  id: number
  deviceId: string
  patientId: string
  type: string
  seq: number | null
  measuredAt: string
  receivedAt: string
  values: Record<string, unknown>
  original: Record<string, unknown>
}

function isoOrThrow(value: string, field: string): string {
  const ms = Date.parse(value)
  if (Number.isNaN(ms)) throw new RpmError('RPM_ERR_BAD_REQUEST', `${field} must be an ISO-8601 date-time`, { details: { field } })
  return new Date(ms).toISOString()
}

/** A patient's readings, newest first, with keyset pagination on (measured_at, id). */
export async function listReadings(db: Kysely<Database>, q: ReadingQuery): Promise<{ items: StoredReading[]; nextCursor: string | null }> {
  const limit = q.limit ?? 100
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
    throw new RpmError('RPM_ERR_BAD_REQUEST', 'limit must be an integer from 1 to 1000', { details: { field: 'limit' } })
  }
  if (q.type !== undefined && !(READING_TYPES as readonly string[]).includes(q.type)) {
    throw new RpmError('RPM_ERR_BAD_REQUEST', `type must be one of ${READING_TYPES.join(', ')}`, { details: { field: 'type' } })
  }
  let query = db.selectFrom('readings').selectAll().where('patient_id', '=', q.patientId)
  if (q.type) query = query.where('type', '=', q.type)
  if (q.since) query = query.where('measured_at', '>=', isoOrThrow(q.since, 'since'))
  if (q.until) query = query.where('measured_at', '<', isoOrThrow(q.until, 'until'))
  if (q.cursor) {
    const [at, id] = Buffer.from(q.cursor, 'base64url').toString('utf8').split('|')
    // Checked in full: a cursor that only looks right would page from the wrong place, silently.
    if (!at || !id || Number.isNaN(Date.parse(at)) || !/^\d{1,15}$/.test(id)) {
      throw new RpmError('RPM_ERR_BAD_REQUEST', 'cursor is not one this server issued', { details: { field: 'cursor' } })
    }
    query = query.where((eb) => eb.or([eb('measured_at', '<', at), eb.and([eb('measured_at', '=', at), eb('id', '<', Number(id))])]))
  }
  const rows = await query.orderBy('measured_at', 'desc').orderBy('id', 'desc').limit(limit + 1).execute()
  const page = rows.slice(0, limit)
  const last = page[page.length - 1]
  return {
    items: page.map((r) => ({
      id: r.id,
      deviceId: r.device_id,
      patientId: r.patient_id,
      type: r.type,
      seq: r.seq,
      measuredAt: r.measured_at,
      receivedAt: r.received_at,
      values: JSON.parse(r.values_json),
      original: JSON.parse(r.original_json),
    })),
    nextCursor: rows.length > limit && last ? Buffer.from(`${last.measured_at}|${last.id}`).toString('base64url') : null,
  }
}

export interface QuarantineRecord {
  id: number
  deviceId: string
  receivedAt: string
  code: string
  message: string
  path: string | null
  seq: number | null
  batchIndex: number | null
  raw: string
}

/** A device's quarantined payloads, newest first. */
export async function listQuarantine(db: Kysely<Database>, deviceId: string, limit = 100): Promise<{ items: QuarantineRecord[] }> {
  const rows = await db.selectFrom('quarantine').selectAll().where('device_id', '=', deviceId).orderBy('id', 'desc').limit(limit).execute()
  return {
    items: rows.map((r) => ({
      id: r.id,
      deviceId: r.device_id,
      receivedAt: r.received_at,
      code: r.code,
      message: r.message,
      path: r.path,
      seq: r.seq,
      batchIndex: r.batch_index,
      raw: r.raw,
    })),
  }
}
