import type { MessagePort } from 'node:worker_threads'
import SQLite from 'better-sqlite3'
import type { GatewayConfig } from '../config/load.ts'
import { JOURNAL_SQL, type Refusal, sendSplitting, toEntries } from './batches.ts'
import type { JournalRow } from './lines.ts'
import { LineSender, describeFailure } from './sender.ts'

/** What the writer's thread is started with (workerData). */
export interface WriterThreadData {
  /** The gateway database; the thread opens its own connection to it. */
  file: string
  config: GatewayConfig['influx']
  target: string
  /** The last reading id InfluxDB confirmed, as the main thread read it from gateway_state. */
  cursor: number
  /** The gateway clock minus the system clock at start, for the time a refused point was set aside. */
  clockOffsetMs: number
}

export type ToWriterThread =
  /** Readings were committed: end a wait for new readings (not a retry delay). */
  | { type: 'wake' }
  /** Finish the batch in flight, close, and say 'stopped'. */
  | { type: 'stop' }

/** Ids, counts, statuses and failure descriptions only: no values, no InfluxDB messages, no token. */
export type FromWriterThread =
  /** InfluxDB answered a batch and the position moved to `cursor` (with any refused points set aside, in one transaction). */
  | { type: 'written'; cursor: number; written: number; refusedIds: number[]; refusedStatus: number | null; refusals: number }
  /** InfluxDB did not take the batch (not there, 5xx, 401 ...): it is tried again after the retry delay. */
  | { type: 'unavailable'; error: string; refusals: number }
  /** Caught up at `cursor`: waiting for a 'wake' or influx.flushIntervalMs. */
  | { type: 'waiting'; cursor: number }
  /** The loop ended on an unexpected error (the database gone, say): nothing more is written. */
  | { type: 'failed'; error: string }
  | { type: 'stopped' }

const MIN_RETRY_MS = 1000

/** Where the position for an InfluxDB (targetOf) is kept in gateway_state. */
export const cursorKey = (target: string) => `timeseries.cursor:${target}`

/**
 * The writer's loop, run in its own thread (see TimeSeriesWriter): reads the journal after the
 * position through its own connection (WAL: the journal's writer never waits for these reads),
 * sends batches, and moves the position only after InfluxDB confirms one. It never logs: the
 * main thread logs and counts from its messages.
 */
export function runWriterThread(port: MessagePort, data: WriterThreadData): void {
  const { config } = data
  const post = (m: FromWriterThread) => port.postMessage(m)
  let stopped = false
  let wake: ((m: ToWriterThread) => void) | null = null
  port.on('message', (m: ToWriterThread) => {
    if (m.type === 'stop') stopped = true
    wake?.(m)
  })

  /** Waits `ms`, or until a message `endsOn` accepts comes. */
  const pause = (ms: number, endsOn: (m: ToWriterThread) => boolean) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms)
      function done() {
        clearTimeout(timer)
        wake = null
        resolve()
      }
      wake = (m) => {
        if (endsOn(m)) done()
      }
    })

  let db: SQLite.Database | undefined
  let sender: LineSender | undefined

  const run = async () => {
    db = new SQLite(data.file)
    // Its only writes are the position and set-aside rows, which take the write lock for
    // microseconds; busy_timeout covers a journal commit holding it meanwhile.
    db.pragma('busy_timeout = 5000')
    // No fsync per position commit (WAL, synchronous=NORMAL): the next journal commit (FULL)
    // syncs these frames with its own. A power cut before that loses the last positions, and
    // those batches are sent again, which leaves the same points. A FULL commit here would hold
    // the write lock for a disk sync while the journal's commits wait on the main thread.
    db.pragma('synchronous = NORMAL')
    const batch = db.prepare(JOURNAL_SQL)
    const setCursor = db.prepare('INSERT INTO gateway_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value')
    const reject = db.prepare('INSERT INTO timeseries_rejected (reading_id, target, status, reason, rejected_at) VALUES (?, ?, ?, ?, ?)')
    const confirm = db.transaction((refused: readonly Refusal[], lastId: number, at: string) => {
      for (const r of refused) reject.run(r.id, data.target, r.status, r.reason, at)
      setCursor.run(cursorKey(data.target), String(lastId))
    })
    sender = new LineSender(config)
    const firstRetryMs = Math.min(MIN_RETRY_MS, config.maxRetryDelayMs) // it may be as low as 100 ms
    let retryMs = firstRetryMs
    let cursor = data.cursor

    while (!stopped) {
      const rows = batch.all(cursor, config.batchSize) as JournalRow[]
      if (rows.length === 0) {
        post({ type: 'waiting', cursor })
        await pause(config.flushIntervalMs, () => true)
        continue
      }
      const entries = toEntries(rows)
      const lastId = rows[rows.length - 1]!.id
      let refusals = 0
      let refused: Refusal[]
      try {
        refused = await sendSplitting(sender, entries, () => refusals++)
      } catch (err) {
        post({ type: 'unavailable', error: describeFailure(err), refusals })
        // stop() came while this batch was in flight: do not wait.
        if (stopped) break
        // Wait (doubling up to maxRetryDelayMs), but not for new readings: they join the backlog.
        await pause(retryMs, (m) => m.type === 'stop')
        retryMs = Math.min(retryMs * 2, config.maxRetryDelayMs)
        continue
      }
      confirm.immediate(refused, lastId, new Date(Date.now() + data.clockOffsetMs).toISOString())
      cursor = lastId
      post({ type: 'written', cursor, written: entries.length - refused.length, refusedIds: refused.map((r) => r.id), refusedStatus: refused[0]?.status ?? null, refusals })
      retryMs = firstRetryMs
    }
  }

  void run()
    .catch((err: unknown) => post({ type: 'failed', error: (err as Error).message ?? String(err) }))
    .finally(async () => {
      await sender?.close()
      if (db?.open) db.close()
      post({ type: 'stopped' })
      port.close()
    })
}
