/**
 * One simulated device: an MQTT.js client over TLS that logs in with its secret, listens on its
 * error topic, publishes readings at QoS 1 and measures each PUBACK. In the offline scenarios it
 * drops its network connection now and then; MQTT.js keeps QoS 1 publishes made meanwhile in its
 * outgoing store and sends them when the connection is back.
 */
import { performance } from 'node:perf_hooks'
import mqtt, { type IClientOptions, type MqttClient, type Packet } from 'mqtt'
import type { ErrorCode } from '../src/errors.ts'
import type { DeviceCredential } from './credentials.ts'
import { connectivityWindow, type DeviceModel, type PlannedPublish } from './scenarios.ts'
import { LatencyHistogram } from './stats.ts'

/** Counters shared by every device of a run. */
export class Tally {
  sent = 0
  publishes = 0
  acknowledged = 0
  publishErrors = 0
  /** Messages received on devices/{id}/errors. */
  quarantined = 0
  readonly quarantinedByCode = new Map<string, number>()
  /** Refusals the simulator meant to provoke, counted when their PUBLISH was acknowledged. */
  expectedQuarantine = 0
  readonly expectedByCode = new Map<string, number>()
  /** Errors for readings the simulator sent as valid (or more errors than refused payloads). */
  unexpectedQuarantine = 0
  readonly unexpectedByCode = new Map<string, number>()
  readonly latency = new LatencyHistogram()
  /** Planned network drops and the reconnects after them. */
  drops = 0
  reconnects = 0
  /** Connections lost without the scenario asking for it (the gateway closed them, or the network). */
  connectionsLost = 0
  /** Readings published while their device was offline: MQTT.js held them until it was back. */
  queuedOffline = 0
  /** Error messages about an earlier run's readings (the persistent session kept them): not counted. */
  staleErrors = 0

  get inFlight(): number {
    return this.sent - this.acknowledged - this.publishErrors
  }
}

const bump = (m: Map<string, number>, key: string, by = 1) => m.set(key, (m.get(key) ?? 0) + by)

/** Why a device could not connect; `permanent` ones are not retried. */
export class ConnectError extends Error {
  constructor(
    message: string,
    readonly permanent: boolean,
    readonly returnCode?: number,
  ) {
    super(message)
    this.name = 'ConnectError'
  }
}

// MQTT 3.1.1 CONNACK return codes [MQTT-3.2.2-3].
const CONNACK: Record<number, string> = {
  1: 'unacceptable protocol version',
  2: 'client identifier rejected (the client id must equal the device id)',
  3: 'server unavailable (connection limit or rate limit)',
  4: 'bad user name or password',
  5: 'not authorized (unknown or disabled device)',
}

const TLS_TRUST_ERRORS = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_HAS_EXPIRED',
])

const REFUSED_EARLY =
  'the gateway closed the connection before CONNACK: its limit on new connections per address ' +
  '(mqtt.connectRatePerMinute, RPM_MQTT_CONNECT_RATE_PER_MINUTE; lower --connections-per-second) or on connections (mqtt.maxConnections)'

function classify(err: Error & { code?: unknown }): ConnectError {
  if (typeof err.code === 'number') {
    const rc = err.code
    return new ConnectError(`refused at CONNECT: ${CONNACK[rc] ?? `return code ${rc}`}`, rc !== 3, rc)
  }
  const code = typeof err.code === 'string' ? err.code : ''
  if (TLS_TRUST_ERRORS.has(code)) {
    return new ConnectError(`TLS: ${err.message} (check --ca, and that the URL's host is a name the gateway's certificate holds)`, true)
  }
  switch (code) {
    case 'ECONNREFUSED':
      return new ConnectError('connection refused: nothing listens there (is the gateway running, on this port?)', false)
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new ConnectError(`unknown host: ${err.message}`, true)
    case 'ECONNRESET':
    case 'EPIPE':
    case 'CLOSED_EARLY':
      return new ConnectError(REFUSED_EARLY, false)
  }
  return new ConnectError(code ? `${code}: ${err.message}` : err.message, false)
}

export interface DeviceOptions {
  url: string
  ca?: Buffer
  tally: Tally
  /** How long an automatic reconnect waits after an unplanned drop. */
  reconnectPeriodMs: number
}

/** Resolves with a connected client, or rejects with a ConnectError. One attempt. */
function connectOnce(url: string, options: IClientOptions): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, { ...options, reconnectPeriod: 0 })
    let settled = false
    const fail = (err: Error) => {
      if (settled) return
      settled = true
      client.removeAllListeners()
      client.on('error', () => {})
      client.end(true)
      reject(classify(err))
    }
    client.once('connect', () => {
      if (settled) return
      settled = true
      client.removeListener('error', fail)
      resolve(client)
    })
    client.on('error', fail)
    client.once('close', () => fail(Object.assign(new Error('closed before CONNACK'), { code: 'CLOSED_EARLY' })))
  })
}

interface PendingRefusal {
  code: ErrorCode
  acknowledged: boolean
  answered: boolean
}

export class SimDevice {
  readonly credential: DeviceCredential
  readonly model: DeviceModel
  client: MqttClient | undefined
  /** The last reason a connect attempt failed. */
  lastError: ConnectError | undefined
  #opts: DeviceOptions
  #flaky = false
  #offline = false
  #flakyTimer: NodeJS.Timeout | undefined
  #closing = false
  readonly #topic: string
  readonly #errorTopic: string
  /** PUBLISH packet id -> when it went onto the wire. */
  readonly #wireAt = new Map<number, number>()
  /** Refused readings the gateway should answer, by seq. */
  readonly #refusals = new Map<number, PendingRefusal>()
  #seqlessExpected = 0
  #seqlessAnswered = 0
  readonly #seqlessAnsweredByCode = new Map<string, number>()
  readonly #seqlessExpectedByCode = new Map<string, number>()
  /** Redelivered error messages (DUP) already counted, by content. */
  readonly #seenErrors = new Set<string>()
  /** This run's first seq: errors about lower ones belong to an earlier run. */
  readonly #firstSeq: number
  #published = false

  constructor(credential: DeviceCredential, model: DeviceModel, opts: DeviceOptions) {
    this.credential = credential
    this.model = model
    this.#opts = opts
    this.#topic = `devices/${credential.deviceId}/readings`
    this.#errorTopic = `devices/${credential.deviceId}/errors`
    this.#firstSeq = model.nextSeq
  }

  get id(): string {
    return this.credential.deviceId
  }

  get connected(): boolean {
    return this.client?.connected === true
  }

  get offline(): boolean {
    return this.#offline
  }

  /** Connects, retrying transient failures until `deadline` (performance.now() ms). */
  async connect(deadline: number, stopped: () => boolean): Promise<void> {
    const { url, ca } = this.#opts
    const options: IClientOptions = {
      clientId: this.id,
      username: this.id,
      password: this.credential.secret,
      protocolVersion: 4, // aedes 1.x speaks MQTT 3.1.1 only
      // A persistent session: the gateway keeps the errors subscription and queues error
      // messages while the device is away, as a real device that must not miss them would ask.
      clean: false,
      connectTimeout: 10_000,
      keepalive: 60,
      ...(ca ? { ca } : {}),
    }
    let delay = 500
    for (;;) {
      try {
        const client = await connectOnce(url, options)
        this.#attach(client)
        await client.subscribeAsync(this.#errorTopic, { qos: 1 })
        this.lastError = undefined
        return
      } catch (err) {
        this.lastError = err instanceof ConnectError ? err : new ConnectError((err as Error).message, false)
        if (this.client) {
          this.client.end(true)
          this.client = undefined
        }
        if (this.lastError.permanent || stopped() || performance.now() + delay > deadline) throw this.lastError
        await new Promise((r) => setTimeout(r, delay))
        delay = Math.min(delay * 2, 5000)
      }
    }
  }

  #attach(client: MqttClient): void {
    this.client = client
    const { tally, reconnectPeriodMs } = this.#opts
    // From here on MQTT.js reconnects by itself after an unplanned drop.
    client.options.reconnectPeriod = reconnectPeriodMs
    let up = true
    client.on('error', () => {}) // reported through close/reconnect counts; never crash the run
    client.on('connect', () => {
      up = true
    })
    client.on('close', () => {
      if (up && !this.#offline && !this.#closing) tally.connectionsLost++
      up = false
    })
    client.on('packetsend', (packet: Packet) => {
      if (packet.cmd === 'publish' && packet.qos === 1 && packet.messageId !== undefined) this.#wireAt.set(packet.messageId, performance.now())
    })
    client.on('packetreceive', (packet: Packet) => {
      if (packet.cmd !== 'puback' || packet.messageId === undefined) return
      const at = this.#wireAt.get(packet.messageId)
      if (at === undefined) return
      this.#wireAt.delete(packet.messageId)
      tally.latency.record(performance.now() - at)
    })
    client.on('message', (topic, payload, packet) => {
      if (topic === this.#errorTopic) this.#onError(payload, packet.dup === true)
    })
  }

  /** Sends one planned PUBLISH at QoS 1; the callback runs on its PUBACK. */
  publish(plan: PlannedPublish): void {
    const client = this.client
    if (!client) return
    const { tally } = this.#opts
    this.#published = true
    tally.sent += plan.units
    tally.publishes++
    if (!client.connected) tally.queuedOffline += plan.units
    for (const e of plan.errors) {
      if (e.seq !== undefined) this.#refusals.set(e.seq, { code: e.code, acknowledged: false, answered: false })
    }
    client.publish(this.#topic, plan.payload, { qos: 1 }, (err) => {
      if (err) {
        tally.publishErrors += plan.units
        return
      }
      tally.acknowledged += plan.units
      for (const e of plan.errors) {
        tally.expectedQuarantine++
        bump(tally.expectedByCode, e.code)
        if (e.seq === undefined) {
          this.#seqlessExpected++
          bump(this.#seqlessExpectedByCode, e.code)
          continue
        }
        const r = this.#refusals.get(e.seq)
        if (!r) continue
        r.acknowledged = true
        if (r.answered) this.#refusals.delete(e.seq)
      }
    })
  }

  #onError(payload: Buffer, dup: boolean): void {
    const { tally } = this.#opts
    let body: { seq?: unknown; code?: unknown }
    try {
      body = JSON.parse(payload.toString('utf8')) as typeof body
    } catch {
      body = { code: 'unparseable' }
    }
    const code = typeof body.code === 'string' ? body.code : 'unknown'
    // The gateway queued these for the session while the device was away after an earlier run.
    if (!this.#published || (typeof body.seq === 'number' && body.seq < this.#firstSeq)) {
      tally.staleErrors++
      return
    }
    const key = payload.toString('utf8')
    if (dup && this.#seenErrors.has(key)) return // a QoS 1 redelivery of one already counted
    if (this.#seenErrors.size > 10_000) this.#seenErrors.clear()
    this.#seenErrors.add(key)

    tally.quarantined++
    bump(tally.quarantinedByCode, code)
    if (typeof body.seq === 'number') {
      const r = this.#refusals.get(body.seq)
      if (r && !r.answered) {
        r.answered = true
        if (r.acknowledged) this.#refusals.delete(body.seq)
        return
      }
      tally.unexpectedQuarantine++
      bump(tally.unexpectedByCode, code)
      return
    }
    this.#seqlessAnswered++
    bump(this.#seqlessAnsweredByCode, code)
  }

  /** At the end of a run: refusals that never got their error, and errors nobody asked for. */
  reconcile(): { missing: number; missingByCode: Map<string, number> } {
    const { tally } = this.#opts
    const missingByCode = new Map<string, number>()
    let missing = 0
    for (const r of this.#refusals.values()) {
      if (r.acknowledged && !r.answered) {
        missing++
        bump(missingByCode, r.code)
      }
    }
    for (const code of new Set([...this.#seqlessExpectedByCode.keys(), ...this.#seqlessAnsweredByCode.keys()])) {
      const diff = (this.#seqlessExpectedByCode.get(code) ?? 0) - (this.#seqlessAnsweredByCode.get(code) ?? 0)
      if (diff > 0) {
        missing += diff
        bump(missingByCode, code, diff)
      } else if (diff < 0) {
        tally.unexpectedQuarantine -= diff
        bump(tally.unexpectedByCode, code, -diff)
      }
    }
    return { missing, missingByCode }
  }

  /** Refusals acknowledged but not yet answered on the error topic. */
  get awaitingErrors(): number {
    let n = Math.max(0, this.#seqlessExpected - this.#seqlessAnswered)
    for (const r of this.#refusals.values()) if (r.acknowledged && !r.answered) n++
    return n
  }

  /** Starts dropping off the network now and then (offline and mixed scenarios). */
  startFlaky(): void {
    this.#flaky = true
    this.#scheduleDrop(true)
  }

  #scheduleDrop(first: boolean): void {
    if (!this.#flaky) return
    const w = connectivityWindow(this.model.rng, first)
    this.#flakyTimer = setTimeout(() => {
      this.#goOffline()
      this.#flakyTimer = setTimeout(() => {
        this.#comeBack()
        this.#scheduleDrop(false)
      }, w.offlineMs)
    }, w.onlineMs)
  }

  #goOffline(): void {
    const client = this.client
    if (!client || this.#offline) return
    this.#offline = true
    this.#opts.tally.drops++
    // An abrupt loss (no DISCONNECT), as when a phone leaves Wi-Fi: the gateway sees the socket
    // close and the device's last will. No automatic reconnect while "offline".
    client.options.reconnectPeriod = 0
    client.stream.destroy()
  }

  #comeBack(): void {
    const client = this.client
    if (!client || !this.#offline) return
    this.#offline = false
    this.#opts.tally.reconnects++
    client.options.reconnectPeriod = this.#opts.reconnectPeriodMs
    // Keep the stores: they hold the QoS 1 publishes made while offline, which go out first.
    client.reconnect({ incomingStore: client.incomingStore, outgoingStore: client.outgoingStore })
  }

  /** Stops the drops; a device that is offline comes back now so its queue drains. */
  stopFlaky(): void {
    this.#flaky = false
    clearTimeout(this.#flakyTimer)
    if (this.#offline) this.#comeBack()
  }

  /** Disconnects cleanly (DISCONNECT), or drops the connection when that takes too long. */
  async close(timeoutMs: number): Promise<void> {
    this.stopFlaky()
    this.#closing = true
    const client = this.client
    if (!client) return
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        client.end(true, () => resolve())
        setTimeout(resolve, 200).unref()
      }, timeoutMs)
      client.end(false, () => {
        clearTimeout(timer)
        resolve()
      })
    })
  }
}
