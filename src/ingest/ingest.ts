import type { Logger } from 'pino'
import type { Statement } from 'better-sqlite3'
import type { Clock } from '../clock.ts'
import type { GatewayConfig } from '../config/load.ts'
import { RpmError } from '../errors.ts'
import type { EventBus } from '../events.ts'
import type { Metrics } from '../metrics.ts'
import type { Store } from '../store/db.ts'
import { ReadingValidator } from './readings.ts'
import type { AcceptedReading, NormalisedReading, ReadingProblem } from './types.ts'

/** The device a payload came from, as the broker authenticated it. */
export interface DeviceIdentity {
  readonly deviceId: string
  readonly patientId: string
  readonly kind: string
}

interface Pending {
  device: DeviceIdentity
  readings: NormalisedReading[]
  problems: ReadingProblem[]
  receivedAt: number
  startedNs: bigint
  /** The payload text, when it held one valid reading. */
  originalText?: string
  done: (err: Error | null) => void
}

const RAW_LIMIT = 65536
/** Objects and arrays nested deeper than this are refused before parsing (a reading needs 3). */
const MAX_NESTING = 16

/** How deep `[` and `{` nest in JSON text, outside strings; stops counting past MAX_NESTING. */
function nestingDepth(text: string): number {
  let depth = 0
  let max = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === 92) i++ // backslash: skip the escaped character
      else if (c === 34) inString = false
    } else if (c === 34) inString = true
    else if (c === 123 || c === 91) {
      if (++depth > max) {
        max = depth
        if (max > MAX_NESTING) return max
      }
    } else if (c === 125 || c === 93) depth--
  }
  return max
}

/**
 * Validation and the readings journal. `submit` calls `done` only after the readings (and any
 * quarantine records) are committed to disk; the broker releases the PUBACK in `done`.
 * Commits are grouped across devices: whatever arrives within `commitIntervalMs` shares one
 * transaction and one disk sync.
 */
export class Ingest {
  readonly #validator: ReadingValidator
  readonly #insertReading: Statement
  readonly #insertProblem: Statement
  readonly #touchDevice: Statement
  readonly #commit: (batch: Pending[]) => { accepted: AcceptedReading[]; duplicates: number; after: Array<() => void> }
  readonly #savepoint: (hook: (a: AcceptedReading[]) => (() => void) | void, accepted: AcceptedReading[]) => (() => void) | void
  readonly #writeLastSeen: (entries: Array<[string, number]>) => void
  /** Last reading time per device, written every few seconds rather than in every commit. */
  #lastSeen = new Map<string, number>()
  readonly #lastSeenTimer: NodeJS.Timeout
  /** Run inside each journal commit with the newly accepted readings; see addCommitHook. */
  readonly #commitHooks: Array<(accepted: AcceptedReading[]) => (() => void) | void> = []
  #queue: Pending[] = []
  #queuedCount = 0
  #timer: NodeJS.Timeout | NodeJS.Immediate | undefined
  #closed = false
  #lastCommitFailed = false

  constructor(
    private readonly config: GatewayConfig['ingest'],
    store: Store,
    private readonly bus: EventBus,
    private readonly clock: Clock,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {
    this.#validator = new ReadingValidator({
      maxFutureSkewMs: config.maxFutureSkewSeconds * 1000,
      maxAgeMs: config.maxAgeDays * 86_400_000,
    })
    const db = store.sqlite
    // ON CONFLICT DO NOTHING: a QoS1 redelivery or a resent batch is stored once.
    this.#insertReading = db.prepare(
      `INSERT INTO readings (device_id, patient_id, type, seq, measured_at, received_at, values_json, original_json, dedupe_key)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING`,
    )
    this.#insertProblem = db.prepare(
      `INSERT INTO quarantine (device_id, received_at, code, message, path, seq, batch_index, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    )
    this.#touchDevice = db.prepare(`UPDATE devices SET last_seen_at = ? WHERE id = ? AND (last_seen_at IS NULL OR last_seen_at < ?)`)
    this.#commit = db.transaction((batch: Pending[]) => {
      const accepted: AcceptedReading[] = []
      let duplicates = 0
      for (const entry of batch) {
        const { deviceId, patientId, kind } = entry.device
        const receivedAt = new Date(entry.receivedAt).toISOString()
        for (const r of entry.readings) {
          const info = this.#insertReading.run(
            deviceId, patientId, r.type, r.seq, r.measuredAt, receivedAt,
            JSON.stringify(r.values), entry.originalText ?? JSON.stringify(r.original), dedupeKey(deviceId, r),
          )
          if (info.changes === 1) {
            accepted.push({ ...r, id: Number(info.lastInsertRowid), deviceId, deviceKind: kind, patientId, receivedAt })
          } else {
            duplicates++
          }
        }
        for (const p of entry.problems) {
          this.#insertProblem.run(deviceId, receivedAt, p.code, p.message, p.path ?? null, p.seq ?? null, p.index ?? null, p.raw)
        }
      }
      const after: Array<() => void> = []
      if (accepted.length > 0) {
        for (const hook of this.#commitHooks) {
          try {
            const then = this.#savepoint(hook, accepted)
            if (then) after.push(then)
          } catch (err) {
            this.log.error({ err: (err as Error).message, readings: accepted.length }, 'work derived from readings failed; the readings are stored')
          }
        }
      }
      return { accepted, duplicates, after }
    })
    this.#savepoint = db.transaction((hook: (a: AcceptedReading[]) => (() => void) | void, accepted: AcceptedReading[]) => hook(accepted))
    this.#writeLastSeen = db.transaction((entries: Array<[string, number]>) => {
      for (const [deviceId, at] of entries) {
        const iso = new Date(at).toISOString()
        this.#touchDevice.run(iso, deviceId, iso)
      }
    })
    this.#lastSeenTimer = setInterval(() => this.#flushLastSeen(), 5_000)
    this.#lastSeenTimer.unref()
  }

  #flushLastSeen(): void {
    if (this.#lastSeen.size === 0) return
    const entries = [...this.#lastSeen]
    this.#lastSeen = new Map()
    try {
      this.#writeLastSeen(entries)
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'could not record device last-seen times')
    }
  }

  /**
   * Adds work that must be stored in the same transaction as the readings it derives from (a
   * thread message per reading, an outbox row). It runs in a savepoint: if it throws, its own
   * writes are undone and logged, and the readings still commit. It may return a function to run
   * after the commit (to announce what it stored).
   */
  addCommitHook(hook: (accepted: AcceptedReading[]) => (() => void) | void): void {
    this.#commitHooks.push(hook)
  }

  /** False while the journal cannot commit (disk full, I/O error): nothing is being acknowledged. */
  get healthy(): boolean {
    return !this.#lastCommitFailed
  }

  /** Validates a PUBLISH payload and queues it for the next group commit. */
  submit(device: DeviceIdentity, payload: Buffer, done: (err: Error | null) => void): void {
    const startedNs = process.hrtime.bigint()
    if (this.#closed) {
      done(new RpmError('RPM_ERR_JOURNAL_UNAVAILABLE', 'the gateway is shutting down'))
      return
    }
    const now = this.clock.now()
    const entry: Pending = { device, readings: [], problems: [], receivedAt: now, startedNs, done }
    this.#parse(payload, now, entry)
    this.#queue.push(entry)
    this.#queuedCount += entry.readings.length + entry.problems.length
    if (this.#queuedCount >= this.config.commitMaxReadings) {
      this.flush()
    } else if (this.#timer === undefined) {
      this.#timer = this.config.commitIntervalMs === 0
        ? setImmediate(() => this.flush())
        : setTimeout(() => this.flush(), this.config.commitIntervalMs)
    }
  }

  #parse(payload: Buffer, now: number, entry: Pending): void {
    const text = payload.toString('utf8')
    // Checked before parsing: nesting thousands deep fits in a packet and would exhaust the stack
    // of whatever walks it (the parser, the validator, JSON.stringify).
    if (nestingDepth(text) > MAX_NESTING) {
      entry.problems.push({ code: 'RPM_ERR_PAYLOAD_SHAPE', message: `the payload nests deeper than ${MAX_NESTING} levels`, raw: rawOf(payload) })
      return
    }
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch {
      entry.problems.push({ code: 'RPM_ERR_PAYLOAD_JSON', message: 'the payload is not valid JSON', raw: rawOf(payload) })
      return
    }
    if (Array.isArray(body)) {
      if (body.length === 0) {
        entry.problems.push({ code: 'RPM_ERR_PAYLOAD_SHAPE', message: 'the batch is empty', raw: rawOf(payload) })
        return
      }
      if (body.length > this.config.maxBatchSize) {
        entry.problems.push({
          code: 'RPM_ERR_BATCH_TOO_LARGE',
          message: `a batch may hold at most ${this.config.maxBatchSize} readings`,
          raw: rawOf(payload),
        })
        return
      }
      body.forEach((item, index) => this.#check(item, now, entry, index))
    } else if (body !== null && typeof body === 'object') {
      // A single reading is stored as the device sent it, byte for byte.
      if (this.#check(body, now, entry, undefined)) entry.originalText = text
    } else {
      entry.problems.push({ code: 'RPM_ERR_PAYLOAD_SHAPE', message: 'the payload must be a reading object or an array of them', raw: rawOf(payload) })
    }
  }

  #check(item: unknown, now: number, entry: Pending, index: number | undefined): boolean {
    let result: ReturnType<ReadingValidator['check']>
    try {
      result = this.#validator.check(item, now)
    } catch (err) {
      // Nothing a device sends may throw out of here: set aside, with the device told why.
      this.log.warn({ deviceId: entry.device.deviceId, err: (err as Error).message }, 'a reading could not be checked')
      result = { ok: false, code: 'RPM_ERR_READING_INVALID', message: 'the reading could not be checked' }
    }
    if (result.ok) {
      entry.readings.push(result.reading)
      return true
    }
    const seq = (item as { seq?: unknown } | null)?.seq
    const problem: ReadingProblem = { code: result.code, message: result.message, raw: JSON.stringify(item).slice(0, RAW_LIMIT) }
    if (result.path !== undefined) problem.path = result.path
    if (Number.isSafeInteger(seq)) problem.seq = seq as number
    if (index !== undefined) problem.index = index
    entry.problems.push(problem)
    return false
  }

  /** Commits everything queued in one transaction, then releases the PUBACKs. */
  flush(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer as NodeJS.Timeout)
      clearImmediate(this.#timer as NodeJS.Immediate)
      this.#timer = undefined
    }
    const batch = this.#queue
    if (batch.length === 0) return
    this.#queue = []
    const size = this.#queuedCount
    this.#queuedCount = 0

    const t0 = process.hrtime.bigint()
    let result: { accepted: AcceptedReading[]; duplicates: number; after: Array<() => void> }
    try {
      result = this.#commit(batch)
    } catch (cause) {
      // Nothing in this commit is acknowledged: the devices' connections close and they resend.
      this.metrics.commitFailures.inc()
      this.#lastCommitFailed = true
      const code = (cause as { code?: string }).code
      this.log.error({ sqliteCode: code, entries: batch.length }, 'journal commit failed; not acknowledging')
      const err = new RpmError('RPM_ERR_JOURNAL_UNAVAILABLE', `the journal cannot commit (${code ?? 'error'})`, { cause })
      for (const entry of batch) entry.done(err)
      return
    }
    const t1 = process.hrtime.bigint()
    this.#lastCommitFailed = false
    this.metrics.commitSize.observe(size)
    this.metrics.commitDuration.observe(Number(t1 - t0) / 1e9)
    this.metrics.readingsDuplicate.inc(result.duplicates)

    for (const entry of batch) {
      entry.done(null)
      this.#lastSeen.set(entry.device.deviceId, entry.receivedAt)
      this.metrics.pubackLatency.observe(Number(t1 - entry.startedNs) / 1e9)
      for (const p of entry.problems) {
        this.metrics.readingsQuarantined.inc({ type: typeOf(p.raw), code: p.code })
        const event: { deviceId: string; code: string; message: string; path?: string; seq?: number; index?: number } = {
          deviceId: entry.device.deviceId,
          code: p.code,
          message: p.message,
        }
        if (p.path !== undefined) event.path = p.path
        if (p.seq !== undefined) event.seq = p.seq
        if (p.index !== undefined) event.index = p.index
        this.bus.emit('reading.quarantined', event)
      }
    }
    const byType = new Map<string, number>()
    for (const r of result.accepted) byType.set(r.type, (byType.get(r.type) ?? 0) + 1)
    for (const [type, n] of byType) this.metrics.readingsAccepted.inc({ type }, n)
    if (result.accepted.length > 0) this.bus.emit('reading.accepted', result.accepted)
    for (const then of result.after) {
      try {
        then()
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'announcing work derived from readings failed')
      }
    }
  }

  /** Commits what is queued and refuses anything new. */
  close(): void {
    this.flush()
    this.#closed = true
    clearInterval(this.#lastSeenTimer)
    this.#flushLastSeen()
  }
}

/**
 * The same reading sent twice has the same key: device, type, measuredAt and seq when given.
 * measuredAt comes first so new keys land at the end of the unique index: a commit touches a
 * few index pages instead of one per device.
 */
function dedupeKey(deviceId: string, r: NormalisedReading): string {
  return r.seq === null ? `${r.measuredAt}|${deviceId}|${r.type}` : `${r.measuredAt}|${deviceId}|${r.type}|${r.seq}`
}

function rawOf(payload: Buffer): string {
  const slice = payload.subarray(0, RAW_LIMIT)
  const text = slice.toString('utf8')
  // Keep binary payloads intact for whoever inspects the quarantine.
  return text.includes('\uFFFD') ? `base64:${slice.toString('base64')}` : text
}

const KNOWN_TYPE = /"type"\s*:\s*"(blood_pressure|glucose|spo2|heart_rate|weight|temperature)"/
function typeOf(raw: string): string {
  return KNOWN_TYPE.exec(raw)?.[1] ?? 'unknown'
}
