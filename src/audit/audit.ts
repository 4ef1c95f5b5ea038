import { createHash } from 'node:crypto'
import type { Statement, Database as SQLiteDatabase } from 'better-sqlite3'
import type { Clock } from '../clock.ts'

export interface AuditEntry {
  actorType: 'device' | 'user' | 'operator' | 'system' | 'anonymous'
  actorId: string
  /** What was attempted, e.g. `mqtt.publish`, `device.add`. */
  action: string
  /** What it was attempted on: a topic, a record id. Never PHI values. */
  target?: string
  outcome: 'allowed' | 'denied' | 'failed'
  address?: string
  details?: Record<string, unknown>
}

export interface AuditRow {
  id: number
  at: string
  actor_type: string
  actor_id: string
  action: string
  target: string | null
  outcome: string
  address: string | null
  details_json: string | null
  prev_hash: string
  hash: string
}

const GENESIS = '0'.repeat(64)

function rowHash(prev: string, r: Omit<AuditRow, 'id' | 'hash' | 'prev_hash'>): string {
  const canonical = JSON.stringify([prev, r.at, r.actor_type, r.actor_id, r.action, r.target, r.outcome, r.address, r.details_json])
  return createHash('sha256').update(canonical).digest('hex')
}

/**
 * The append-only audit trail. Each row carries the hash of the one before it, so a changed,
 * removed or reordered row breaks the chain (`verify`); triggers refuse UPDATE and DELETE.
 */
export class AuditLog {
  readonly #last: Statement
  readonly #insert: Statement
  readonly #append: (entry: AuditEntry) => void
  readonly #appendMany: (entries: AuditEntry[]) => void
  /** Entries waiting for the next batch (recordSoon). */
  #queue: Array<{ entry: AuditEntry; resolve: () => void; reject: (err: unknown) => void }> = []

  constructor(
    private readonly sqlite: SQLiteDatabase,
    private readonly clock: Clock,
  ) {
    this.#last = sqlite.prepare('SELECT hash FROM audit ORDER BY id DESC LIMIT 1')
    this.#insert = sqlite.prepare(
      `INSERT INTO audit (at, actor_type, actor_id, action, target, outcome, address, details_json, prev_hash, hash)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    )
    const appendRow = (entry: AuditEntry) => {
      const prev = (this.#last.get() as { hash: string } | undefined)?.hash ?? GENESIS
      const row = {
        at: new Date(this.clock.now()).toISOString(),
        actor_type: entry.actorType,
        actor_id: entry.actorId,
        action: entry.action,
        target: entry.target ?? null,
        outcome: entry.outcome,
        address: entry.address ?? null,
        details_json: entry.details ? JSON.stringify(entry.details) : null,
      }
      const hash = rowHash(prev, row)
      this.#insert.run(row.at, row.actor_type, row.actor_id, row.action, row.target, row.outcome, row.address, row.details_json, prev, hash)
    }
    // IMMEDIATE: another process (the CLI) appending at the same time cannot fork the chain.
    this.#append = sqlite.transaction(appendRow).immediate
    this.#appendMany = sqlite.transaction((entries: AuditEntry[]) => entries.forEach(appendRow)).immediate
  }

  record(entry: AuditEntry): void {
    this.#append(entry)
  }

  /**
   * Records the entry with others made in the same turn of the event loop, in one transaction
   * (one disk sync for a burst, such as a provider's first live reading of many patients).
   * Resolves once it is committed: act on what it records only then.
   */
  recordSoon(entry: AuditEntry): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ entry, resolve, reject })
      if (this.#queue.length === 1) setImmediate(() => this.#flush())
    })
  }

  #flush(): void {
    const batch = this.#queue
    this.#queue = []
    try {
      this.#appendMany(batch.map((b) => b.entry))
    } catch (err) {
      for (const b of batch) b.reject(err)
      return
    }
    for (const b of batch) b.resolve()
  }

  /** Walks the chain; returns the first row that does not fit, or ok. */
  verify(): { ok: true; rows: number } | { ok: false; rows: number; brokenAt: number; reason: string } {
    let prev = GENESIS
    let rows = 0
    for (const r of this.sqlite.prepare('SELECT * FROM audit ORDER BY id').iterate() as IterableIterator<AuditRow>) {
      rows++
      if (r.prev_hash !== prev) return { ok: false, rows, brokenAt: r.id, reason: 'a row before it was changed or removed' }
      if (rowHash(prev, r) !== r.hash) return { ok: false, rows, brokenAt: r.id, reason: 'the row was changed' }
      prev = r.hash
    }
    return { ok: true, rows }
  }
}
