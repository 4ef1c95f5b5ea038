import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import type { Statement } from 'better-sqlite3'
import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { GatewayConfig } from '../config/load.ts'
import type { EventBus } from '../events.ts'
import type { Metrics } from '../metrics.ts'
import type { Store } from '../store/db.ts'
import { type FromWriterThread, type ToWriterThread, type WriterThreadData, cursorKey } from './writer-thread.ts'

export interface TimeSeriesDeps {
  config: GatewayConfig['influx']
  store: Store
  bus: EventBus
  clock: Clock
  log: Logger
  metrics: Metrics
}

export interface TimeSeriesStatus {
  /** off: not configured; up: keeping up; degraded: InfluxDB away or the backlog older than influx.degradedAfterSeconds. */
  state: 'off' | 'up' | 'degraded'
  target: string | null
  /** Readings not yet confirmed by InfluxDB. */
  backlog: number
  oldestPendingAt: string | null
  lastError: string | null
  failingSince: string | null
}

/** InfluxDB's identity for cursors and set-aside records: url|org|bucket. */
export const targetOf = (c: Pick<GatewayConfig['influx'], 'url' | 'org' | 'bucket'>) => `${c.url.replace(/\/+$/, '')}|${c.org}|${c.bucket}`

export const isConfigured = (c: GatewayConfig['influx']) => c.url !== ''

// Plain CommonJS, evaluated in the worker, as src/store/checkpointer.ts starts its own: tsx
// compiles writer-thread.ts (and what it imports) for this thread, as bin/rpm-gateway.js does
// for the main one, so the thread builds lines with the same code as backfill.
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads')
require(workerData.tsx).require(workerData.module, workerData.module).runWriterThread(parentPort, workerData.thread)
`
const THREAD_MODULE = fileURLToPath(new URL('./writer-thread.ts', import.meta.url))

/** How long stop() waits beyond influx.timeoutMs (the batch in flight) before it ends the thread. */
const STOP_GRACE_MS = 2000

/**
 * Feeds InfluxDB from the readings journal. The journal is the outbox: a reading is queued by
 * the very commit that stores it (and acknowledges it to the device), and the writer's position
 * (the last reading id InfluxDB confirmed) lives in the database and moves only after InfluxDB
 * confirms a batch. While InfluxDB is away the backlog waits on disk and drains oldest first
 * when it is back; a crash at any point resends at most the batch in flight (a power cut, the
 * last few: see writer-thread.ts).
 *
 * The loop (reading the journal back, building lines, gzip, HTTP) runs in a worker thread with
 * its own database connection (writer-thread.ts), off the event loop that acknowledges
 * readings. This side wakes it when readings come, logs and counts from its messages, and
 * answers status() from the main connection.
 */
export class TimeSeriesWriter {
  readonly configured: boolean
  readonly target: string | null
  /** The position as the thread last reported it (moves with the counters, so /metrics agrees with itself). */
  #cursor = 0
  #thread: Worker | null = null
  #exited: Promise<void> = Promise.resolve()
  /** The thread has caught up and waits for a wake: at most one wake is in flight. */
  #waiting = false
  #stopping = false
  #failingSince: number | null = null
  #lastError: string | null = null
  #gaugeTimer: NodeJS.Timeout | undefined
  readonly #q: Record<'maxId' | 'oldest' | 'getCursor', Statement>
  readonly #onAccepted = () => {
    if (!this.#waiting) return
    this.#waiting = false
    this.#post({ type: 'wake' })
  }

  constructor(private readonly deps: TimeSeriesDeps) {
    this.configured = isConfigured(deps.config)
    this.target = this.configured ? targetOf(deps.config) : null
    const p = (sql: string) => deps.store.sqlite.prepare(sql)
    this.#q = {
      maxId: p('SELECT COALESCE(MAX(id), 0) AS id FROM readings'),
      oldest: p('SELECT received_at FROM readings WHERE id > ? ORDER BY id LIMIT 1'),
      getCursor: p('SELECT value FROM gateway_state WHERE key = ?'),
    }
    if (this.target !== null) {
      const row = this.#q.getCursor.get(cursorKey(this.target)) as { value: string } | undefined
      this.#cursor = row ? Number(row.value) : 0
    }
  }

  start(): void {
    const { config, log, bus, store, clock } = this.deps
    if (!this.configured) {
      log.info('time series: no InfluxDB configured (influx.url is empty); readings are kept in the journal only')
      return
    }
    // The URL only: the token never reaches a log.
    log.info({ url: config.url, org: config.org, bucket: config.bucket, from: this.#cursor }, 'time series: writing readings to InfluxDB')
    const thread: WriterThreadData = { file: store.file, config, target: this.target!, cursor: this.#cursor, clockOffsetMs: clock.now() - Date.now() }
    const tsx = createRequire(import.meta.url).resolve('tsx/cjs/api')
    const worker = new Worker(WORKER, { eval: true, workerData: { tsx, module: THREAD_MODULE, thread } })
    this.#thread = worker
    this.#exited = new Promise((resolve) => worker.once('exit', () => resolve()))
    worker.on('message', (m: FromWriterThread) => this.#onMessage(m))
    worker.on('error', (err) => log.error({ err: err.message }, 'time-series writer stopped'))
    worker.unref() // stop() refs it while it finishes
    bus.on('reading.accepted', this.#onAccepted)
    this.#updateGauges()
    this.#gaugeTimer = setInterval(() => this.#updateGauges(), 5000)
    this.#gaugeTimer.unref()
  }

  async stop(): Promise<void> {
    clearInterval(this.#gaugeTimer)
    this.deps.bus.off('reading.accepted', this.#onAccepted)
    const worker = this.#thread
    if (worker === null || this.#stopping) return this.#exited
    this.#stopping = true
    worker.ref()
    this.#post({ type: 'stop' })
    // The batch in flight ends within influx.timeoutMs (the request's own timeout); a thread
    // that is still there after that is ended, so no gateway leaves one running.
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), this.deps.config.timeoutMs + STOP_GRACE_MS)))
    if ((await Promise.race([this.#exited, late])) === 'late') {
      this.deps.log.warn({ waitedMs: this.deps.config.timeoutMs + STOP_GRACE_MS }, 'time-series writer did not stop in time; ending its thread')
      await worker.terminate()
    }
    clearTimeout(timer)
    await this.#exited
  }

  status(): TimeSeriesStatus {
    if (!this.configured) return { state: 'off', target: null, backlog: 0, oldestPendingAt: null, lastError: null, failingSince: null }
    const backlog = this.#backlog()
    const oldest = backlog > 0 ? ((this.#q.oldest.get(this.#cursor) as { received_at: string } | undefined)?.received_at ?? null) : null
    const lagging = oldest !== null && this.deps.clock.now() - Date.parse(oldest) > this.deps.config.degradedAfterSeconds * 1000
    return {
      state: this.#failingSince !== null || lagging ? 'degraded' : 'up',
      target: this.target,
      backlog,
      oldestPendingAt: oldest,
      lastError: this.#lastError,
      failingSince: this.#failingSince !== null ? new Date(this.#failingSince).toISOString() : null,
    }
  }

  #maxId(): number {
    return (this.#q.maxId.get() as { id: number }).id
  }

  #backlog(): number {
    // Journal ids are dense (no deletes; a refused duplicate takes no id): the gap is the count.
    return Math.max(0, this.#maxId() - this.#cursor)
  }

  #updateGauges(): void {
    try {
      const s = this.status()
      this.deps.metrics.timeseriesBacklog.set(s.backlog)
      this.deps.metrics.timeseriesOldestPending.set(s.oldestPendingAt ? Math.max(0, (this.deps.clock.now() - Date.parse(s.oldestPendingAt)) / 1000) : 0)
    } catch {
      // the store is closing
    }
  }

  #post(m: ToWriterThread): void {
    this.#thread?.postMessage(m)
  }

  #onMessage(m: FromWriterThread): void {
    const { log, metrics, clock } = this.deps
    switch (m.type) {
      case 'waiting':
        // Readings committed after the thread's last look (their wake-up came before it said it
        // was waiting) would otherwise wait for influx.flushIntervalMs.
        if (this.#stopping) return
        if (this.#safe(() => this.#maxId() > m.cursor)) this.#post({ type: 'wake' })
        else this.#waiting = true
        return
      case 'written': {
        if (m.refusals > 0) metrics.timeseriesBatchesFailed.inc({ reason: 'rejected' }, m.refusals)
        this.#cursor = m.cursor
        if (m.written > 0) metrics.timeseriesPointsWritten.inc(m.written)
        if (m.refusedIds.length > 0) {
          metrics.timeseriesPointsRejected.inc(m.refusedIds.length)
          log.warn({ readingIds: m.refusedIds, status: m.refusedStatus }, 'InfluxDB refused readings as invalid; set aside (timeseries_rejected)')
        }
        if (this.#failingSince !== null) {
          log.info({ downForMs: clock.now() - this.#failingSince }, 'InfluxDB takes writes again; draining the backlog')
          this.#failingSince = null
          this.#lastError = null
        }
        // After every batch, not only a short one: a backlog that ends on a full batch would
        // otherwise show its last value until the 5 s timer (two indexed lookups per batch).
        this.#updateGauges()
        return
      }
      case 'unavailable': {
        if (m.refusals > 0) metrics.timeseriesBatchesFailed.inc({ reason: 'rejected' }, m.refusals)
        metrics.timeseriesBatchesFailed.inc({ reason: 'unavailable' })
        const first = this.#failingSince === null
        this.#failingSince ??= clock.now()
        this.#lastError = m.error
        if (first) log.warn({ err: m.error, backlog: this.#safe(() => this.#backlog()) }, 'InfluxDB is not taking writes; the backlog waits in the journal')
        this.#updateGauges()
        return
      }
      case 'failed':
        log.error({ err: m.error }, 'time-series writer stopped')
        return
      case 'stopped':
        // Everything is closed; end the thread rather than wait for idle sockets to let it go.
        void this.#thread?.terminate()
        return
    }
  }

  /** A lookup on the main connection, or undefined while the store is closing. */
  #safe<T>(lookup: () => T): T | undefined {
    try {
      return lookup()
    } catch {
      return undefined
    }
  }
}
