import type { Statement } from 'better-sqlite3'
import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { GatewayConfig } from '../config/load.ts'
import type { EventBus } from '../events.ts'
import type { Metrics } from '../metrics.ts'
import type { Store } from '../store/db.ts'
import { type JournalRow, toLine } from './lines.ts'
import { LineSender, WriteRefused, describeFailure } from './sender.ts'

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

/** One entry of a batch: the journal row id and its line. */
interface Entry {
  id: number
  line: string
}

const MIN_RETRY_MS = 1000

/** InfluxDB's identity for cursors and set-aside records: url|org|bucket. */
export const targetOf = (c: Pick<GatewayConfig['influx'], 'url' | 'org' | 'bucket'>) => `${c.url.replace(/\/+$/, '')}|${c.org}|${c.bucket}`

export const isConfigured = (c: GatewayConfig['influx']) => c.url !== ''

/**
 * Sends a batch; when InfluxDB refuses it as invalid, splits it until the refused points stand
 * alone, so one bad point does not hold up the rest. Returns the refused points with the reason.
 * Any other failure (InfluxDB away) throws: the whole batch is tried again later (points are
 * idempotent: the same series and timestamp is the same point).
 */
export async function sendSplitting(sender: LineSender, entries: readonly Entry[], onRefused?: () => void): Promise<Array<{ id: number; status: number; reason: string }>> {
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

/** Journal rows after `afterId`, oldest first, with their device kind. */
export function journalQuery(store: Store): Statement {
  return store.sqlite.prepare(`SELECT r.id, r.patient_id, r.device_id, COALESCE(d.kind, 'unknown') AS device_kind, r.type, r.measured_at, r.values_json
    FROM readings r LEFT JOIN devices d ON d.id = r.device_id WHERE r.id > ? ORDER BY r.id LIMIT ?`)
}

export function toEntries(rows: readonly JournalRow[]): Entry[] {
  const out: Entry[] = []
  for (const r of rows) {
    const line = toLine(r)
    if (line !== null) out.push({ id: r.id, line })
  }
  return out
}

/**
 * Feeds InfluxDB from the readings journal. The journal is the outbox: a reading is queued by
 * the very commit that stores it (and acknowledges it to the device), and the writer's position
 * (the last reading id InfluxDB confirmed) lives in the database and moves only after InfluxDB
 * confirms a batch. While InfluxDB is away the backlog waits on disk and drains oldest first
 * when it is back; a crash at any point resends at most the batch in flight.
 */
export class TimeSeriesWriter {
  readonly configured: boolean
  readonly target: string | null
  #sender: LineSender | null = null
  #cursor = 0
  #loop: Promise<void> | null = null
  #stopped = false
  #wake: (() => void) | null = null
  #failingSince: number | null = null
  #lastError: string | null = null
  #retryMs: number
  #gaugeTimer: NodeJS.Timeout | undefined
  readonly #q: Record<string, Statement>
  readonly #onAccepted = () => this.#wake?.()

  constructor(private readonly deps: TimeSeriesDeps) {
    this.configured = isConfigured(deps.config)
    this.target = this.configured ? targetOf(deps.config) : null
    this.#retryMs = this.#firstRetryMs()
    const p = (sql: string) => deps.store.sqlite.prepare(sql)
    this.#q = {
      batch: journalQuery(deps.store),
      maxId: p('SELECT COALESCE(MAX(id), 0) AS id FROM readings'),
      oldest: p('SELECT received_at FROM readings WHERE id > ? ORDER BY id LIMIT 1'),
      getCursor: p('SELECT value FROM gateway_state WHERE key = ?'),
      setCursor: p('INSERT INTO gateway_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value'),
      reject: p('INSERT INTO timeseries_rejected (reading_id, target, status, reason, rejected_at) VALUES (?, ?, ?, ?, ?)'),
    }
    if (this.target !== null) {
      const row = this.#q.getCursor!.get(this.#cursorKey()) as { value: string } | undefined
      this.#cursor = row ? Number(row.value) : 0
    }
  }

  /** 1 s, or maxRetryDelayMs when that is shorter (it may be as low as 100 ms). */
  #firstRetryMs(): number {
    return Math.min(MIN_RETRY_MS, this.deps.config.maxRetryDelayMs)
  }

  #cursorKey(): string {
    return `timeseries.cursor:${this.target}`
  }

  start(): void {
    const { config, log, bus } = this.deps
    if (!this.configured) {
      log.info('time series: no InfluxDB configured (influx.url is empty); readings are kept in the journal only')
      return
    }
    // The URL only: the token never reaches a log.
    log.info({ url: config.url, org: config.org, bucket: config.bucket, from: this.#cursor }, 'time series: writing readings to InfluxDB')
    this.#sender = new LineSender(config)
    bus.on('reading.accepted', this.#onAccepted)
    this.#updateGauges()
    this.#gaugeTimer = setInterval(() => this.#updateGauges(), 5000)
    this.#gaugeTimer.unref()
    this.#loop = this.#run().catch((err: unknown) => log.error({ err: (err as Error).message }, 'time-series writer stopped'))
  }

  async stop(): Promise<void> {
    this.#stopped = true
    clearInterval(this.#gaugeTimer)
    this.deps.bus.off('reading.accepted', this.#onAccepted)
    this.#wake?.()
    await this.#loop
    await this.#sender?.close()
  }

  status(): TimeSeriesStatus {
    if (!this.configured) return { state: 'off', target: null, backlog: 0, oldestPendingAt: null, lastError: null, failingSince: null }
    const backlog = this.#backlog()
    const oldest = backlog > 0 ? ((this.#q.oldest!.get(this.#cursor) as { received_at: string } | undefined)?.received_at ?? null) : null
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

  #backlog(): number {
    // Journal ids are dense (no deletes; a refused duplicate takes no id): the gap is the count.
    return Math.max(0, (this.#q.maxId!.get() as { id: number }).id - this.#cursor)
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

  /** Waits for new readings (or `ms`), whichever comes first. */
  #pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms)
      function done() {
        clearTimeout(timer)
        resolve()
      }
      this.#wake = () => {
        this.#wake = null
        done()
      }
    })
  }

  async #run(): Promise<void> {
    const { config, log, metrics, clock } = this.deps
    while (!this.#stopped) {
      const rows = this.#q.batch!.all(this.#cursor, config.batchSize) as JournalRow[]
      if (rows.length === 0) {
        await this.#pause(config.flushIntervalMs)
        continue
      }
      const entries = toEntries(rows)
      const lastId = rows[rows.length - 1]!.id
      let refused: Array<{ id: number; status: number; reason: string }>
      try {
        refused = await sendSplitting(this.#sender!, entries, () => metrics.timeseriesBatchesFailed.inc({ reason: 'rejected' }))
      } catch (err) {
        metrics.timeseriesBatchesFailed.inc({ reason: 'unavailable' })
        const first = this.#failingSince === null
        this.#failingSince ??= clock.now()
        this.#lastError = describeFailure(err)
        if (first) log.warn({ err: this.#lastError, backlog: this.#backlog() }, 'InfluxDB is not taking writes; the backlog waits in the journal')
        this.#updateGauges()
        // stop() came while this batch was in flight: its wake-up has passed, so do not wait.
        if (this.#stopped) break
        // Wait (doubling up to maxRetryDelayMs), but not for new readings: they join the backlog.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, this.#retryMs)
          this.#wake = () => {
            if (this.#stopped) {
              clearTimeout(timer)
              resolve()
            }
          }
        })
        this.#wake = null
        this.#retryMs = Math.min(this.#retryMs * 2, config.maxRetryDelayMs)
        continue
      }
      const at = new Date(clock.now()).toISOString()
      this.deps.store.sqlite.transaction(() => {
        for (const r of refused) this.#q.reject!.run(r.id, this.target, r.status, r.reason, at)
        this.#q.setCursor!.run(this.#cursorKey(), String(lastId))
      }).immediate()
      this.#cursor = lastId
      metrics.timeseriesPointsWritten.inc(entries.length - refused.length)
      if (refused.length > 0) {
        metrics.timeseriesPointsRejected.inc(refused.length)
        log.warn({ readingIds: refused.map((r) => r.id), status: refused[0]!.status }, 'InfluxDB refused readings as invalid; set aside (timeseries_rejected)')
      }
      if (this.#failingSince !== null) {
        log.info({ downForMs: clock.now() - this.#failingSince }, 'InfluxDB takes writes again; draining the backlog')
        this.#failingSince = null
        this.#lastError = null
      }
      this.#retryMs = this.#firstRetryMs()
      // After every batch, not only a short one: a backlog that ends on a full batch would
      // otherwise show its last value until the 5 s timer (two indexed lookups per batch).
      this.#updateGauges()
    }
  }
}
