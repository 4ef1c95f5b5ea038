import type { Logger } from 'pino'
import type { FastifyInstance } from 'fastify'
import { AuditLog } from './audit/audit.ts'
import { DeviceBroker } from './broker/broker.ts'
import { ensureDevelopmentPki, readTlsMaterial, serverNames, type TlsMaterial } from './broker/pki.ts'
import { type Clock, systemClock } from './clock.ts'
import type { GatewayConfig } from './config/load.ts'
import { RpmError } from './errors.ts'
import { EventBus } from './events.ts'
import { buildHttpServer } from './http/server.ts'
import { createLiveState } from './http/ws.ts'
import { AccessPolicy } from './identity/access.ts'
import { Auth, loadTokenKey } from './identity/auth.ts'
import { Users } from './identity/users.ts'
import { Ingest } from './ingest/ingest.ts'
import { createLogger } from './log.ts'
import { createMetrics, type Metrics } from './metrics.ts'
import { Notifier } from './notify/notifier.ts'
import type { FcmTransport } from './notify/fcm.ts'
import { Registry } from './registry/registry.ts'
import { Reminders, checkReminderConfig } from './reminders/reminders.ts'
import { startCheckpointer } from './store/checkpointer.ts'
import { openStore, type Store } from './store/db.ts'
import { RuleEngine, loadRules } from './rules/engine.ts'
import { rulesDir } from './rules/load.ts'
import { startThreadBridge } from './threads/bridge.ts'
import { Threads } from './threads/threads.ts'
import { TimeSeriesWriter } from './timeseries/writer.ts'

export interface GatewayDeps {
  clock?: Clock
  log?: Logger
  /** FCM through a credential and HTTP agent given in code (an egress path, a test double) instead of notify.fcm.serviceAccountFile. */
  fcm?: FcmTransport
}

export interface GatewayUrls {
  mqtts: string
  mqtt?: string
  ws?: string
  http: string
  caFile: string
  dataDir: string
  database: string
}

export interface Gateway {
  readonly config: Readonly<GatewayConfig>
  readonly store: Store
  readonly bus: EventBus
  readonly registry: Registry
  readonly users: Users
  readonly metrics: Metrics
  readonly audit: AuditLog
  readonly threads: Threads
  readonly rules: RuleEngine
  readonly broker: DeviceBroker
  readonly http: FastifyInstance
  readonly reminders: Reminders
  readonly timeseries: TimeSeriesWriter
  readonly notifier: Notifier
  start(): Promise<GatewayUrls>
  stop(): Promise<void>
  urls(): GatewayUrls
}

async function tlsFor(config: Readonly<GatewayConfig>): Promise<{ material: TlsMaterial; caFile: string }> {
  const { cert, key, ca } = config.mqtt.tls
  const given = [cert, key, ca].filter(Boolean).length
  if (given > 0 && given < 3) {
    throw new RpmError('RPM_ERR_CONFIG_INVALID', 'invalid configuration: mqtt.tls needs cert, key and ca together (or none, for the development CA)')
  }
  if (given === 3) {
    try {
      return { material: readTlsMaterial({ cert, key, ca }), caFile: ca }
    } catch (err) {
      throw new RpmError('RPM_ERR_CONFIG_INVALID', `invalid configuration: mqtt.tls: ${(err as Error).message}`)
    }
  }
  const files = await ensureDevelopmentPki(config.dataDir, serverNames(config.mqtt.serverNames))
  return { material: readTlsMaterial({ cert: files.certPath, key: files.keyPath, ca: files.caCertPath }), caFile: files.caCertPath }
}

const hostForUrl = (h: string) => (h === '0.0.0.0' || h === '::' ? 'localhost' : h.includes(':') ? `[${h}]` : h)

/** Builds a whole gateway from a validated config. No globals: several can run in one process. */
export async function buildGateway(config: Readonly<GatewayConfig>, deps: GatewayDeps = {}): Promise<Gateway> {
  const clock = deps.clock ?? systemClock
  const log = deps.log ?? createLogger(config.log.level)
  // Rule files and the reminder clock first: a mistake stops the start before anything is opened.
  const ruleFiles = rulesDir(config.rules.dir)
  const initialRules = loadRules(ruleFiles)
  checkReminderConfig(config.reminders)
  const { material, caFile } = await tlsFor(config)
  const store = await openStore(config.dataDir)
  const checkpointer = startCheckpointer(store.sqlite, store.file, log.child({ module: 'store' }))
  const bus = new EventBus()
  const metrics = createMetrics()
  const audit = new AuditLog(store.sqlite, clock)
  const registry = new Registry(store.db, clock)
  const users = new Users(store.db, clock)
  const auth = new Auth(store.db, config.auth, loadTokenKey(config.auth, config.dataDir), audit, clock, bus)
  const access = new AccessPolicy(store.db, config.auth, clock)
  const threads = new Threads(store, bus, clock)
  const ingest = new Ingest(config.ingest, store, bus, clock, metrics, log.child({ module: 'ingest' }))
  const stopThreadBridge = startThreadBridge({
    threads,
    bus,
    config: config.threads,
    audit,
    log: log.child({ module: 'threads' }),
    onJournalCommit: (hook) => ingest.addCommitHook(hook),
  })
  // Alerts are written after the readings' thread messages, in the same journal commit.
  const rules = new RuleEngine({
    rules: { ...config.rules, dir: ruleFiles },
    initial: initialRules,
    alerts: config.alerts,
    store,
    bus,
    clock,
    log: log.child({ module: 'rules' }),
    metrics,
    post: (patientId, text, data) => threads.postSystem(patientId, 'alert', text, data).announce,
    onJournalCommit: (hook) => ingest.addCommitHook(hook),
  })
  const broker = await DeviceBroker.create({
    config: config.mqtt,
    tls: material,
    store,
    ingest,
    audit,
    bus,
    metrics,
    log: log.child({ module: 'broker' }),
    clock,
  })
  // Reminders post into threads only through this narrow function.
  const reminders = new Reminders({
    config: config.reminders,
    store,
    bus,
    clock,
    log: log.child({ module: 'reminders' }),
    postToThread: (patientId, text, data, key) => {
      const { message, created, announce } = threads.postSystem(patientId, 'reminder', text, data, key)
      return { messageId: message.id, created, announce }
    },
  })
  const timeseries = new TimeSeriesWriter({ config: config.influx, store, bus, clock, log: log.child({ module: 'timeseries' }), metrics })
  const live = createLiveState(clock, config.websocket)
  const firstUnread = store.sqlite.prepare(`SELECT m.created_at FROM messages m
    WHERE m.thread_id = @thread AND m.kind = 'text' AND m.deleted_at IS NULL AND m.seq <= @seq
      AND m.sender_user_id IS NOT @user
      AND m.seq > coalesce((SELECT read_seq FROM thread_receipts WHERE thread_id = @thread AND user_id = @user), 0)
    ORDER BY m.seq LIMIT 1`)
  const notifier = new Notifier({
    config: config.notify,
    dataDir: config.dataDir,
    store,
    bus,
    clock,
    log: log.child({ module: 'notify' }),
    metrics,
    ...(deps.fcm ? { fcm: deps.fcm } : {}),
    presence: (userId) => live.presence(userId).status,
    firstUnreadAt: (userId, threadId, seq) => {
      const row = firstUnread.get({ thread: threadId, seq, user: userId }) as { created_at: string } | undefined
      return row ? Date.parse(row.created_at) : null
    },
    alertOpen: (alertId) => rules.alerts.get(alertId)?.status === 'open',
  })
  let started = false
  const http = await buildHttpServer({
    config: config.http,
    maxPacketBytes: config.mqtt.maxPacketBytes,
    broker,
    metrics,
    log: log.child({ module: 'http' }),
    tls: material,
    api: { store, auth, access, users, registry, audit, clock },
    sessionTtlSeconds: config.auth.sessionTtlSeconds,
    threads: { threads, store, auth, access, audit, clock },
    alerts: { rules, store, bus, auth, access, audit, clock },
    reminders: { reminders, auth, access, audit },
    live: { config: config.websocket, threads, store, auth, access, audit, clock, bus, metrics, log: log.child({ module: 'ws' }), live },
    notify: { notifier, auth, access, audit, publicUrl: config.notify.sms.publicUrl },
    readiness: {
      database: () => store.sqlite.open,
      journal: () => ingest.healthy,
      mqtt: () => started && broker.listening,
      // InfluxDB away or behind is "degraded": readings are safe in the journal meanwhile.
      influxdb: () => {
        const state = timeseries.status().state
        return state === 'up' ? true : state
      },
      // A push service or Twilio being down never makes the gateway unready: notifications wait in the outbox.
      notifications: () => (Object.values(notifier.channels()).includes('failing') ? 'degraded' : true),
    },
  })
  let httpPort = 0

  const urls = (): GatewayUrls => {
    const scheme = http.initialConfig.https ? 'https' : 'http'
    const host = hostForUrl(config.http.host)
    const u: GatewayUrls = {
      mqtts: `mqtts://${hostForUrl(config.mqtt.host)}:${broker.ports.tls}`,
      http: `${scheme}://${host}:${httpPort}`,
      caFile,
      dataDir: config.dataDir,
      database: store.file,
    }
    if (broker.ports.tcp !== undefined) u.mqtt = `mqtt://${hostForUrl(config.mqtt.tcpHost)}:${broker.ports.tcp}`
    if (config.http.mqttWebSocket) u.ws = `${scheme === 'https' ? 'wss' : 'ws'}://${host}:${httpPort}/mqtt`
    return u
  }

  return {
    config,
    store,
    bus,
    registry,
    users,
    metrics,
    audit,
    threads,
    rules,
    broker,
    http,
    reminders,
    timeseries,
    notifier,
    urls,
    async start() {
      await broker.listen()
      try {
        await http.listen({ host: config.http.host, port: config.http.port })
      } catch (err) {
        await broker.close()
        const code = (err as NodeJS.ErrnoException).code
        throw new RpmError('RPM_ERR_UNAVAILABLE', `cannot listen for HTTP on ${config.http.host}:${config.http.port}: ${code === 'EADDRINUSE' ? 'the port is in use' : (err as Error).message}`, { cause: err })
      }
      httpPort = (http.server.address() as { port: number }).port
      reminders.start() // catches up what came due while the gateway was down, then follows reminders.cron
      rules.start()
      timeseries.start()
      notifier.start()
      started = true
      return urls()
    },
    async stop() {
      started = false
      await reminders.stop() // no reminder ticks while the broker and the database close
      // Commit what is queued so every reading already received gets its PUBACK or its error.
      ingest.flush()
      await broker.close()
      ingest.close()
      await timeseries.stop()
      stopThreadBridge()
      rules.stop()
      await http.close()
      // Last before the database: escalations and messages up to here still get their notifications recorded.
      await notifier.stop()
      await checkpointer.stop()
      await store.close()
    },
  }
}
