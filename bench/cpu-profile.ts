/**
 * Summarises a V8 CPU profile (node --cpu-prof) of the gateway process over a time window:
 * self time grouped by area (TLS, MQTT parsing, aedes, JSON, ajv, SQLite, fsync, ...) and
 * inclusive time of a few key frames. V8 samples the main thread whether it is running or
 * blocked in a system call, so a synchronous fsync shows up as time in the statement that
 * waited for it.
 */
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { int, lpad, ms, pad, pct } from './harness.ts'

interface CallFrame {
  functionName: string
  url: string
  lineNumber: number
}

interface ProfileNode {
  id: number
  callFrame: CallFrame
  children?: number[]
}

interface CpuProfile {
  nodes: ProfileNode[]
  startTime: number
  endTime: number
  samples: number[]
  timeDeltas: number[]
}

export interface ProfileShare {
  name: string
  ms: number
  share: number
}

export interface ProfileSummary {
  file: string
  windowMs: number
  categories: ProfileShare[]
  inclusive: ProfileShare[]
}

const has = (f: CallFrame, part: string) => f.url.includes(part)
const isNative = (f: CallFrame) => f.url === ''

/** The area a frame's own time belongs to, or undefined to look at its caller instead. */
function areaOf(f: CallFrame, caller: CallFrame | undefined): string | undefined {
  switch (f.functionName) {
    case '(garbage collector)':
      return 'GC'
    case '(idle)':
      return 'idle (waiting for I/O or timers)'
    case '(program)':
      return 'native, no JS on the stack (libuv, TLS read + decrypt)'
    case '(root)':
      return 'other'
  }
  // Native calls (Statement#run, JSON.parse, TLS writes) have no frame of their own unless they
  // are API callbacks: their time is the self time of the JS function that made them.
  if (isNative(f)) {
    // ajv compiles each schema to a function named validateN.
    if (/^validate\d*$/.test(f.functionName)) return 'ajv schema validation (compiled)'
    if (f.functionName === 'writev' || f.functionName === 'writeBuffer') return 'socket writes (send syscalls; TLS encrypt on TLS sockets)'
    return undefined
  }
  if (has(f, 'better-sqlite3/lib/methods/transaction')) return 'SQLite BEGIN/COMMIT (WAL write, fsync, checkpoints)'
  if (has(f, '/node_modules/ajv-formats/')) return 'ajv date-time format'
  if (has(f, '/node_modules/ajv/')) return 'ajv schema validation (compiled)'
  if (has(f, '/src/ingest/readings.ts')) return 'validation: dates, plausibility, units (readings.ts)'
  if (has(f, '/src/ingest/ingest.ts')) {
    // The transaction body: Statement#run for each reading, JSON.stringify of values and original.
    if (caller && has(caller, 'better-sqlite3/lib/methods/transaction')) return 'SQLite INSERT per reading (+ JSON.stringify)'
    if (f.functionName === '#parse') return 'JSON.parse of payloads (Ingest#parse)'
    return 'ingest bookkeeping (submit, flush, metrics calls)'
  }
  if (has(f, '/src/http/ws.ts')) return 'WebSocket handlers (ws.ts)'
  if (has(f, '/src/threads/')) return 'threads (post, receipts, unread; incl. their SQLite calls)'
  if (has(f, '/src/identity/')) return 'auth and access checks (identity/)'
  if (has(f, '/src/audit/')) return 'audit trail'
  if (has(f, '/node_modules/kysely/') && has(f, 'sqlite')) return 'SQLite via Kysely (statements, incl. native time)'
  if (has(f, '/node_modules/kysely/')) return 'Kysely query building/compiling'
  if (has(f, '/node_modules/jose/')) return 'jose (JWT verify)'
  if (has(f, '/node_modules/ws/')) return 'ws (frames, masking, send)'
  if (has(f, '/src/broker/packet-limit.ts')) return 'packet-size guard stream (packet-limit.ts)'
  if (has(f, '/src/broker/')) return 'broker hooks (broker.ts, topics.ts)'
  if (has(f, '/src/rules/')) return 'rules and alerts (rules/)'
  if (has(f, '/src/events.ts')) return 'event bus'
  if (has(f, '/src/')) return 'other gateway code'
  if (has(f, '/node_modules/prom-client/')) return 'metrics (prom-client)'
  if (has(f, '/node_modules/better-sqlite3/')) return 'SQLite (other)'
  if (has(f, '/node_modules/mqtt-packet/') || has(f, '/node_modules/bl/')) return 'MQTT parse/serialise (mqtt-packet)'
  if (/\/node_modules\/(aedes|mqemitter|fastfall|fastparallel|fastseries|reusify|hyperid|qlobber|retimer|aedes-[^/]+)\//.test(f.url)) {
    return 'aedes (handlers, mqemitter, persistence)'
  }
  if (has(f, 'node:_tls_wrap') || has(f, 'node:tls') || has(f, 'node:internal/tls')) return 'TLS socket (JS side)'
  if (has(f, 'node:internal/stream_base_commons') || has(f, 'node:net')) return 'socket read/write (JS side)'
  if (has(f, 'node:internal/streams') || has(f, 'node:stream')) return 'Node streams'
  if (has(f, 'node:internal/timers') || has(f, 'node:timers')) return 'timers'
  if (has(f, 'node:internal/process/task_queues')) return 'nextTick / microtasks'
  if (has(f, 'node:')) return 'Node internals (other)'
  const pkg = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(f.url)
  if (pkg) return `node_modules/${pkg[1]}`
  return 'other'
}

/** Picks the key frames whose inclusive time is reported (a sample counts once per key). */
export type KeyFrames = (f: CallFrame) => string | undefined

/** Key frames of the ingest path. */
export function ingestKeys(f: CallFrame): string | undefined {
  if (has(f, '/src/ingest/ingest.ts')) {
    if (f.functionName === 'submit') return 'Ingest.submit (parse + validate + queue)'
    if (f.functionName === 'flush') return 'Ingest.flush (commit + PUBACK release + events)'
  }
  if (has(f, '/src/ingest/readings.ts') && f.functionName === 'check') return 'ReadingValidator.check'
  if (has(f, 'better-sqlite3/lib/methods/transaction')) return 'journal transaction (inserts + COMMIT)'
  if (has(f, '/node_modules/aedes/lib/handlers/publish')) return 'aedes PUBLISH handler'
  if (has(f, '/node_modules/mqtt-packet/parser')) return 'mqtt-packet parser'
  if (has(f, '/node_modules/mqtt-packet/writeToStream')) return 'mqtt-packet writeToStream (PUBACK)'
  if (has(f, '/src/broker/packet-limit.ts')) return 'packet-size guard stream'
  if (has(f, '/node_modules/prom-client/')) return 'prom-client'
  if (has(f, 'node:_tls_wrap')) return 'node:_tls_wrap'
  return undefined
}

/** Key frames of the alert path: a reading through the rules to a provider's socket, then the ingest path's. */
export function alertKeys(f: CallFrame): string | undefined {
  if (has(f, '/src/rules/engine.ts') && f.functionName === '#onReadings') return 'RuleEngine#onReadings (rules, in the journal commit)'
  if (has(f, '/src/rules/alerts.ts')) {
    if (f.functionName === 'raise' || f.functionName === 'clear') return 'AlertStore.raise / clear (rows, events, thread message)'
    if (f.functionName === 'announceEffects') return 'announceEffects (alert.updated on the bus)'
  }
  if (has(f, '/src/threads/bridge.ts')) return 'thread bridge (a message per spot-check reading)'
  if (has(f, '/src/http/ws.ts')) {
    switch (f.functionName) {
      case 'onReadings':
        return 'ws onReadings (live readings: queue a push per socket and patient)'
      case 'onAlert':
        return 'ws onAlert (queue a push per socket)'
      case 'mayReceive':
        return 'ws mayReceive (access check per push)'
      case 'recordFor':
        return 'ws recordFor (audit of a first live read)'
      case 'send':
        return 'ws send (JSON.stringify + socket write)'
    }
  }
  if (has(f, '/src/identity/access.ts') && f.functionName === 'clinical') return 'AccessPolicy.clinical'
  if (has(f, '/src/audit/') && f.functionName === 'record') return 'AuditLog.record (a transaction of its own)'
  return ingestKeys(f)
}

/** Key frames of the live WebSocket path. */
export function chatKeys(f: CallFrame): string | undefined {
  if (has(f, '/src/http/ws.ts')) {
    switch (f.functionName) {
      case 'handle':
        return 'ws handle (one client event: parse, validate, checks, handler)'
      case 'checkLive':
        return 'ws checkLive (token + session check per event)'
      case 'sendMessage':
        return 'ws sendMessage (access, post, audit, sent)'
      case 'visibleThread':
        return 'ws visibleThread (access check per event)'
      case 'mayReceive':
        return 'ws mayReceive (access check per push)'
      case 'sendUnread':
        return 'ws sendUnread (unread count per push)'
      case 'send':
        return 'ws send (JSON.stringify + socket write)'
      case 'onPosted':
        return 'ws onPosted (fan-out to subscribers)'
    }
  }
  if (has(f, '/src/threads/threads.ts') && f.functionName === 'post') return 'Threads.post (insert + COMMIT + bus)'
  if (has(f, '/src/threads/threads.ts') && f.functionName === 'receipt') return 'Threads.receipt (unread query)'
  if (has(f, '/src/identity/auth.ts') && f.functionName === 'authenticate') return 'Auth.authenticate (JWT + session row)'
  if (has(f, '/src/identity/access.ts') && f.functionName === 'clinical') return 'AccessPolicy.clinical'
  if (has(f, '/src/audit/') && f.functionName === 'record') return 'AuditLog.record'
  if (has(f, 'better-sqlite3/lib/methods/transaction')) return 'SQLite transactions (incl. COMMIT + fsync)'
  if (has(f, '/node_modules/kysely/')) return 'Kysely (build + run statements)'
  if (has(f, '/node_modules/ws/lib/receiver')) return 'ws receiver (frame parsing)'
  if (has(f, '/node_modules/ws/lib/sender')) return 'ws sender (framing + write)'
  return undefined
}

/** Key frames of a device connecting: TLS, CONNECT, login, presence and audit writes. */
export function connectKeys(f: CallFrame): string | undefined {
  if (has(f, '/src/broker/broker.ts')) {
    if (f.functionName === '#online') return 'DeviceBroker#online (presence UPDATE + retained status + bus)'
    if (f.functionName === '#offline') return 'DeviceBroker#offline (presence UPDATE + retained status + bus)'
    if (f.functionName === '#authenticate' || f.functionName === 'attempt' || f.functionName === 'run') return 'DeviceBroker#authenticate (lookup, secret check, audit)'
    if (f.functionName === 'admit') return 'DeviceBroker.admit (limits)'
    if (f.functionName === 'onTlsSocket' || f.functionName === 'attach') return 'DeviceBroker TLS socket hand-off'
  }
  if (has(f, '/src/crypto/secrets.ts')) return 'verifySecret (scrypt, main-thread part)'
  if (has(f, '/src/audit/') && f.functionName === 'record') return 'AuditLog.record (a transaction of its own)'
  if (has(f, 'better-sqlite3/lib/methods/transaction')) return 'SQLite transactions (incl. COMMIT + fsync)'
  if (has(f, '/node_modules/aedes/lib/handlers/connect')) return 'aedes CONNECT handler'
  if (has(f, '/node_modules/aedes/lib/client')) return 'aedes client (set-up, close)'
  if (has(f, 'node:_tls_wrap')) return 'node:_tls_wrap (handshake callbacks, socket set-up)'
  return undefined
}

export function summariseProfile(file: string, fromUs: number, toUs: number, keysOf: KeyFrames = ingestKeys): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile
  const byId = new Map<number, ProfileNode>()
  const parent = new Map<number, number>()
  for (const n of profile.nodes) {
    byId.set(n.id, n)
    for (const c of n.children ?? []) parent.set(c, n.id)
  }
  const areaCache = new Map<number, string>()
  const keyCache = new Map<number, string[]>()
  const area = (id: number): string => {
    const cached = areaCache.get(id)
    if (cached) return cached
    let name: string | undefined
    for (let cur: number | undefined = id; cur !== undefined && name === undefined; cur = parent.get(cur)) {
      const p = parent.get(cur)
      name = areaOf(byId.get(cur)!.callFrame, p === undefined ? undefined : byId.get(p)!.callFrame)
    }
    name ??= 'other'
    areaCache.set(id, name)
    return name
  }
  const keys = (id: number): string[] => {
    const cached = keyCache.get(id)
    if (cached) return cached
    const set = new Set<string>()
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const k = keysOf(byId.get(cur)!.callFrame)
      if (k) set.add(k)
    }
    const list = [...set]
    keyCache.set(id, list)
    return list
  }

  const self = new Map<string, number>()
  const inclusive = new Map<string, number>()
  let total = 0
  let t = profile.startTime
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0
    const dt = profile.timeDeltas[i + 1] ?? 0
    if (t < fromUs || t >= toUs) continue
    const id = profile.samples[i]!
    total += dt
    const a = area(id)
    self.set(a, (self.get(a) ?? 0) + dt)
    for (const k of keys(id)) inclusive.set(k, (inclusive.get(k) ?? 0) + dt)
  }
  const shares = (m: Map<string, number>): ProfileShare[] =>
    [...m.entries()].map(([name, us]) => ({ name, ms: us / 1000, share: total ? us / total : 0 })).sort((a, b) => b.ms - a.ms)
  return { file: path.relative(process.cwd(), file), windowMs: total / 1000, categories: shares(self), inclusive: shares(inclusive) }
}

/** The summary as report lines: `count` things (readings, messages) were handled in the window. */
export function profileLines(p: ProfileSummary, window: string, count: number, unit = 'reading'): string[] {
  const lines = [`  CPU profile of the gateway's main thread during ${window} (${ms(p.windowMs)} ms of samples, ${int(count)} ${unit}s; ${p.file}):`]
  const row = (c: ProfileSummary['categories'][number]) =>
    `      ${pad(c.name, 54)} ${lpad(ms(c.ms), 7)} ms ${lpad(pct(c.share), 5)} ${lpad(count ? ((c.ms * 1000) / count).toFixed(1) : '-', 7)} µs/${unit}`
  lines.push('    self time by area (main thread time, on CPU or blocked in a call):')
  for (const c of p.categories.filter((c) => c.share >= 0.002)) lines.push(row(c))
  lines.push('    inclusive time of key frames:')
  for (const c of p.inclusive) lines.push(row(c))
  return lines
}
