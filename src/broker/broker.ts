import net from 'node:net'
import tls from 'node:tls'
import type { Duplex } from 'node:stream'
import { Aedes, type Client, type AuthenticateError } from 'aedes'
import type { Statement } from 'better-sqlite3'
import type { Logger } from 'pino'
import type { AuditLog } from '../audit/audit.ts'
import type { Clock } from '../clock.ts'
import type { GatewayConfig } from '../config/load.ts'
import { ERRORS, RpmError, type ErrorCode } from '../errors.ts'
import type { EventBus } from '../events.ts'
import type { DeviceIdentity, Ingest } from '../ingest/ingest.ts'
import type { Metrics } from '../metrics.ts'
import { generateSecret, hashSecret, verifySecret } from '../crypto/secrets.ts'
import type { Store } from '../store/db.ts'
import { AddressGuard } from './guard.ts'
import { LimitedConnection } from './packet-limit.ts'
import type { TlsMaterial } from './pki.ts'
import { deviceTopic, mayPublish, maySubscribe } from './topics.ts'

export interface ConnectionInfo {
  address: string
  transport: 'tls' | 'tcp' | 'ws'
  /** The CN of a client certificate that verified against the CA. */
  certCommonName?: string
}

interface DeviceRow {
  id: string
  patient_id: string
  kind: string
  secret_hash: string | null
  status: 'active' | 'disabled'
}

export interface BrokerDeps {
  config: GatewayConfig['mqtt']
  tls: TlsMaterial
  store: Store
  ingest: Ingest
  audit: AuditLog
  bus: EventBus
  metrics: Metrics
  log: Logger
  clock: Clock
}

function refusal(code: ErrorCode, message?: string): AuthenticateError {
  const err = new RpmError(code, message) as RpmError & AuthenticateError
  err.returnCode = (ERRORS[code] as { connack?: number }).connack ?? 5
  return err
}

function peerAddress(socket: net.Socket): string {
  return socket.remoteAddress?.replace(/^::ffff:/, '') ?? 'unknown'
}

/**
 * The embedded MQTT broker: listeners, device authentication, the topic ACL, packet and
 * connection limits, presence, and the hand-off of readings to ingest (the PUBACK waits for it).
 */
export class DeviceBroker {
  readonly aedes: Aedes
  readonly #deps: BrokerDeps
  readonly #guard: AddressGuard
  readonly #connections = new WeakMap<Duplex, ConnectionInfo>()
  readonly #identities = new WeakMap<Client, DeviceIdentity>()
  /** The live client per device: a takeover's late disconnect must not mark the device offline. */
  readonly #live = new Map<string, Client>()
  /** Logged in, not yet ready: a session taking over from the live one (the device stays online). */
  readonly #arriving = new Map<string, Client>()
  readonly #servers: net.Server[] = []
  readonly #findDevice: Statement
  readonly #markOnline: Statement
  readonly #markOffline: Statement
  readonly #findDisabledOnline: Statement
  readonly #sockets = new Set<Duplex>()
  #disabledSweep: NodeJS.Timeout | undefined
  /** A hash no device holds, checked when a login names an unknown device. */
  readonly #decoyHash: Promise<string> = hashSecret(generateSecret())
  #ports: { tls: number; tcp?: number } = { tls: 0 }

  private constructor(deps: BrokerDeps, aedes: Aedes) {
    this.#deps = deps
    this.aedes = aedes
    const { config, clock, store } = deps
    this.#guard = new AddressGuard(
      {
        connectsPerMinute: config.connectRatePerMinute,
        failuresBeforeDelay: config.authFailuresBeforeDelay,
        failureDelayMs: config.authFailureDelayMs,
      },
      clock,
    )
    this.#findDevice = store.sqlite.prepare('SELECT id, patient_id, kind, secret_hash, status FROM devices WHERE id = ?')
    this.#markOnline = store.sqlite.prepare('UPDATE devices SET online = 1, last_connected_at = ?, last_seen_at = ? WHERE id = ?')
    this.#markOffline = store.sqlite.prepare('UPDATE devices SET online = 0, last_seen_at = ? WHERE id = ?')
    this.#findDisabledOnline = store.sqlite.prepare("SELECT id FROM devices WHERE status = 'disabled' AND online = 1")
    // The previous process may have stopped with devices marked online.
    store.sqlite.prepare('UPDATE devices SET online = 0 WHERE online = 1').run()

    aedes.authenticate = (client, username, password, done) => this.#authenticate(client, username, password, done)
    aedes.authorizePublish = (client, packet, callback) => {
      if (!client) return callback(null) // the broker's own messages (errors, commands, status)
      const identity = this.#identities.get(client)
      if (!identity || !mayPublish(identity.deviceId, packet.topic)) {
        this.#deny(client, identity, 'mqtt.publish', packet.topic)
        return callback(new RpmError('RPM_ERR_TOPIC_FORBIDDEN'))
      }
      // Only the status topic keeps a retained message; readings and events are not broker state.
      if (!packet.topic.endsWith('/status')) packet.retain = false
      if (packet.topic.endsWith('/readings')) {
        deps.ingest.submit(identity, packet.payload as Buffer, callback)
        return
      }
      if (packet.topic.endsWith('/events')) {
        // Handled before the PUBACK: an acknowledged event has been acted on (or answered on
        // the errors topic). A listener's failure must not close the device's connection.
        try {
          deps.bus.emit('device.event', { ...identity, payload: packet.payload as Buffer })
        } catch (err) {
          deps.log.error({ deviceId: identity.deviceId, err: (err as Error).message }, 'device event handling failed')
        }
      }
      callback(null)
    }
    aedes.authorizeSubscribe = (client, sub, callback) => {
      const identity = this.#identities.get(client)
      if (!identity || !maySubscribe(identity.deviceId, sub.topic)) {
        this.#deny(client, identity, 'mqtt.subscribe', sub.topic)
        return callback(null, null) // SUBACK 0x80 for this filter [MQTT-3.9.3-2]; the connection stays
      }
      callback(null, sub)
    }

    aedes.on('clientReady', (client) => this.#online(client))
    // After the SUBACK: what the device now listens to (commands it missed can be sent again).
    aedes.on('subscribe', (subscriptions, client) => {
      const identity = client ? this.#identities.get(client) : undefined
      if (identity) this.#deps.bus.emit('device.subscribed', { deviceId: identity.deviceId, topics: subscriptions.map((s) => s.topic) })
    })
    aedes.on('clientDisconnect', (client) => this.#offline(client))
    aedes.on('clientError', (client, err) => {
      deps.log.debug({ deviceId: this.#identities.get(client)?.deviceId, err: err.message }, 'client error')
    })
    aedes.on('connectionError', (_client, err) => {
      deps.log.debug({ err: err.message }, 'connection error before CONNECT completed')
    })

    deps.bus.on('reading.quarantined', (e) => {
      const body: Record<string, unknown> = { code: e.code, message: e.message }
      if (e.seq !== undefined) body.seq = e.seq
      if (e.path !== undefined) body.path = e.path
      if (e.index !== undefined) body.index = e.index
      this.publish(deviceTopic(e.deviceId, 'errors'), JSON.stringify(body), { qos: 1, retain: false })
    })
    deps.bus.on('device.error', (e) => {
      const body: Record<string, unknown> = { code: e.code, message: e.message }
      if (e.path !== undefined) body.path = e.path
      this.publish(deviceTopic(e.deviceId, 'errors'), JSON.stringify(body), { qos: 1, retain: false })
    })
    deps.bus.on('device.command', (e) => {
      this.publish(deviceTopic(e.deviceId, 'commands'), e.payload, { qos: 1, retain: false })
    })
  }

  static async create(deps: BrokerDeps): Promise<DeviceBroker> {
    const aedes = await Aedes.createBroker({
      id: 'rpm-gateway',
      connectTimeout: 30_000,
      heartbeatInterval: 60_000,
      maxClientsIdLength: 64,
      queueLimit: 100,
    })
    return new DeviceBroker(deps, aedes)
  }

  get ports(): { tls: number; tcp?: number } {
    return this.#ports
  }

  get connectedDevices(): number {
    return this.#live.size
  }

  get listening(): boolean {
    return this.#servers.length > 0 && this.#servers.every((s) => s.listening)
  }

  /** Publishes from the gateway to a device topic. */
  publish(topic: string, payload: string, opts: { qos: 0 | 1; retain: boolean }): void {
    this.aedes.publish({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: opts.qos, retain: opts.retain, dup: false }, (err) => {
      if (err) this.#deps.log.warn({ topic, err: err.message }, 'publish to device failed')
    })
  }

  /**
   * Connection limit and per-address rate, checked before any TLS or MQTT work is spent on
   * the connection. Call once per connection, then `attach`.
   */
  admit(stream: Duplex, address: string): boolean {
    const { config, metrics, log } = this.#deps
    let reason: 'max_connections' | 'rate_limited' | undefined
    if (this.#sockets.size >= config.maxConnections) reason = 'max_connections'
    else if (!this.#guard.allowConnect(address)) reason = 'rate_limited'
    if (reason) {
      metrics.connectRefused.inc({ reason })
      if (this.#guard.shouldLog(reason === 'max_connections' ? reason : `rate:${address}`)) {
        log.warn(
          reason === 'max_connections'
            ? { code: 'RPM_ERR_TOO_MANY_CONNECTIONS', limit: config.maxConnections }
            : { code: 'RPM_ERR_RATE_LIMITED', address },
          `connection refused: ${reason === 'max_connections' ? 'connection limit reached' : 'too many new connections from this address'} (repeats suppressed for a minute)`,
        )
      }
      stream.destroy()
      return false
    }
    this.#sockets.add(stream)
    stream.once('close', () => this.#sockets.delete(stream))
    return true
  }

  /** Hands an admitted connection (TLS, TCP or WebSocket stream) to the broker behind the packet limit. */
  attach(stream: Duplex, info: ConnectionInfo): void {
    const { config, metrics, log } = this.#deps
    const conn = new LimitedConnection(stream, config.maxPacketBytes, (err) => {
      metrics.packetsTooLarge.inc()
      const client = (conn as Duplex & { client?: Client }).client
      log.warn(
        { deviceId: client ? this.#identities.get(client)?.deviceId : undefined, address: info.address, code: 'RPM_ERR_PACKET_TOO_LARGE' },
        err.message,
      )
    })
    this.#connections.set(conn, info)
    this.aedes.handle(conn)
  }

  async listen(): Promise<{ tls: number; tcp?: number }> {
    const { config, tls: material } = this.#deps
    const onTlsSocket = (socket: tls.TLSSocket) => {
      if (socket.destroyed) return
      const info: ConnectionInfo = { address: peerAddress(socket), transport: 'tls' }
      const peer = socket.authorized ? socket.getPeerCertificate() : undefined
      const cn = peer?.subject?.CN
      if (typeof cn === 'string' && cn) info.certCommonName = cn
      socket.setNoDelay(true)
      this.attach(socket, info)
    }
    const server = tls.createServer(
      {
        key: material.key,
        cert: material.cert,
        ca: material.ca,
        // Devices may log in with a client certificate or with a secret: ask for a certificate,
        // verify it against the CA, and decide in authenticate.
        requestCert: true,
        rejectUnauthorized: false,
        minVersion: 'TLSv1.2',
        handshakeTimeout: 10_000,
      },
      onTlsSocket,
    )
    server.on('tlsClientError', (err, socket) => {
      this.#deps.log.debug({ address: peerAddress(socket), err: err.message }, 'TLS handshake failed')
      // Node reports a handshake timeout but leaves the socket open: a connection that never
      // handshakes would hold its place under mqtt.maxConnections for good.
      socket.destroy()
    })
    this.#ports.tls = await this.#listen(server, config.port, config.host)

    if (config.tcpPort >= 0) {
      const plain = net.createServer((socket) => {
        if (socket.destroyed) return
        socket.setNoDelay(true)
        this.attach(socket, { address: peerAddress(socket), transport: 'tcp' })
      })
      this.#ports.tcp = await this.#listen(plain, config.tcpPort, config.tcpHost)
    }

    this.#disabledSweep = setInterval(() => this.#closeDisabled(), 5_000)
    this.#disabledSweep.unref()
    return this.#ports
  }

  async #listen(server: net.Server, port: number, host: string): Promise<number> {
    // Refuse over-limit and rate-limited sockets before the TLS handshake costs anything.
    server.on('connection', (socket: net.Socket) => {
      this.admit(socket, peerAddress(socket))
    })
    await new Promise<void>((resolve, reject) => {
      const fail = (err: NodeJS.ErrnoException) =>
        reject(new RpmError('RPM_ERR_UNAVAILABLE', `cannot listen for MQTT on ${host}:${port}: ${err.code === 'EADDRINUSE' ? 'the port is in use' : err.message}`, { cause: err }))
      server.once('error', fail)
      server.listen(port, host, () => {
        server.off('error', fail)
        resolve()
      })
    })
    this.#servers.push(server)
    return (server.address() as net.AddressInfo).port
  }

  #authenticate(
    client: Client,
    username: string | undefined,
    password: Buffer | undefined,
    done: (error: AuthenticateError | null, success: boolean | null) => void,
  ): void {
    const info = this.#connections.get(client.conn as Duplex) ?? { address: 'unknown', transport: 'ws' as const }
    const attempt = async (): Promise<DeviceIdentity> => {
      const certId = info.certCommonName
      const deviceId = certId ?? username
      if (!deviceId) throw refusal('RPM_ERR_DEVICE_AUTH', 'no credentials: send the device id as username and the secret as password, or a client certificate')
      if (certId && username && username !== certId) throw refusal('RPM_ERR_DEVICE_AUTH', 'username does not match the client certificate')
      if (client.id !== deviceId) throw refusal('RPM_ERR_CLIENT_ID_MISMATCH')
      const row = this.#findDevice.get(deviceId) as DeviceRow | undefined
      if (!certId) {
        // Unknown id and wrong secret answer alike, in code and in time (the same scrypt work),
        // so device ids cannot be probed; only the holder of the secret learns the device is disabled.
        const stored = row?.secret_hash ?? (await this.#decoyHash)
        const matches = await verifySecret(password?.toString('utf8') ?? '', stored)
        if (!row || !row.secret_hash || !password || !matches) throw refusal('RPM_ERR_DEVICE_AUTH')
      } else if (!row) {
        throw refusal('RPM_ERR_DEVICE_UNKNOWN')
      }
      if (row.status !== 'active') throw refusal('RPM_ERR_DEVICE_DISABLED')
      return { deviceId: row.id, patientId: row.patient_id, kind: row.kind }
    }
    const run = () => {
      attempt().then(
        (identity) => {
          this.#guard.loginSucceeded(info.address)
          this.#identities.set(client, identity)
          this.#arriving.set(identity.deviceId, client)
          client.conn.once('close', () => {
            if (this.#arriving.get(identity.deviceId) !== client) return
            // It never became ready; if nothing else is connected the device is offline.
            this.#arriving.delete(identity.deviceId)
            if (!this.#live.has(identity.deviceId)) this.#markOffline.run(new Date(this.#deps.clock.now()).toISOString(), identity.deviceId)
          })
          this.#audit({ actorType: 'device', actorId: identity.deviceId, action: 'mqtt.connect', outcome: 'allowed', address: info.address, details: { method: info.certCommonName ? 'certificate' : 'secret', transport: info.transport } })
          done(null, true)
        },
        (err: RpmError & AuthenticateError) => {
          const code = err instanceof RpmError ? err.code : 'RPM_ERR_INTERNAL'
          this.#guard.loginFailed(info.address)
          this.#deps.metrics.connectRefused.inc({ reason: code })
          const claimed = (info.certCommonName ?? username ?? '').slice(0, 64)
          this.#deps.log.warn({ deviceId: claimed || undefined, address: info.address, transport: info.transport, code }, 'device login refused')
          this.#audit({ actorType: claimed ? 'device' : 'anonymous', actorId: claimed || 'unknown', action: 'mqtt.connect', outcome: 'denied', address: info.address, details: { code } })
          done(err.returnCode ? err : refusal('RPM_ERR_DEVICE_AUTH'), false)
        },
      )
    }
    const delay = this.#guard.loginDelayMs(info.address)
    if (delay > 0) setTimeout(run, delay)
    else run()
  }

  #deny(client: Client, identity: DeviceIdentity | undefined, action: string, topic: string): void {
    const info = this.#connections.get(client.conn as Duplex)
    const deviceId = identity?.deviceId ?? client.id
    this.#deps.metrics.aclDenied.inc({ action })
    this.#deps.log.warn({ deviceId, address: info?.address, action, code: 'RPM_ERR_TOPIC_FORBIDDEN' }, 'topic refused by ACL')
    this.#audit({ actorType: 'device', actorId: deviceId, action, target: topic.slice(0, 256), outcome: 'denied', ...(info ? { address: info.address } : {}) })
  }

  #audit(entry: Parameters<AuditLog['record']>[0]): void {
    try {
      this.#deps.audit.record(entry)
    } catch (err) {
      this.#deps.log.error({ err: (err as Error).message, action: entry.action }, 'audit write failed')
    }
  }

  #online(client: Client): void {
    const identity = this.#identities.get(client)
    if (!identity) return
    const at = new Date(this.#deps.clock.now())
    if (this.#arriving.get(identity.deviceId) === client) this.#arriving.delete(identity.deviceId)
    this.#live.set(identity.deviceId, client)
    this.#deps.metrics.connections.set(this.#live.size)
    try {
      this.#markOnline.run(at.toISOString(), at.toISOString(), identity.deviceId)
    } catch (err) {
      this.#deps.log.error({ deviceId: identity.deviceId, err: (err as Error).message }, 'presence update failed')
    }
    this.publish(deviceTopic(identity.deviceId, 'status'), 'online', { qos: 1, retain: true })
    this.#deps.bus.emit('device.connected', { deviceId: identity.deviceId, at })
  }

  #offline(client: Client): void {
    const identity = this.#identities.get(client)
    if (!identity || this.#live.get(identity.deviceId) !== client) return
    this.#live.delete(identity.deviceId)
    this.#deps.metrics.connections.set(this.#live.size)
    // A new session of the same device replaced this one: it is not offline.
    if (this.#arriving.has(identity.deviceId)) return
    const at = new Date(this.#deps.clock.now())
    try {
      this.#markOffline.run(at.toISOString(), identity.deviceId)
    } catch (err) {
      this.#deps.log.error({ deviceId: identity.deviceId, err: (err as Error).message }, 'presence update failed')
    }
    this.publish(deviceTopic(identity.deviceId, 'status'), 'offline', { qos: 1, retain: true })
    this.#deps.bus.emit('device.disconnected', { deviceId: identity.deviceId, at })
  }

  /** Devices disabled by an operator (perhaps from another process) lose their connection. */
  #closeDisabled(): void {
    if (this.#live.size === 0) return
    const rows = this.#findDisabledOnline.all() as Array<{ id: string }>
    for (const { id } of rows) {
      const client = this.#live.get(id)
      if (!client) continue
      this.#deps.log.info({ deviceId: id }, 'closing the connection of a disabled device')
      client.close()
    }
  }

  async close(): Promise<void> {
    clearInterval(this.#disabledSweep)
    this.#guard.close()
    await new Promise<void>((resolve) => this.aedes.close(() => resolve()))
    for (const socket of this.#sockets) socket.destroy()
    await Promise.all(
      this.#servers.map((s) => new Promise<void>((resolve) => {
        s.close(() => resolve())
      })),
    )
    this.#servers.length = 0
  }
}

