/**
 * A simulator run: connect the fleet at a gentle pace, send readings on one schedule for the
 * whole fleet, then wait for every PUBACK and error message and sum it all up.
 */
import { performance } from 'node:perf_hooks'
import type { DeviceCredential } from './credentials.ts'
import { ConnectError, SimDevice, Tally } from './device.ts'
import { Pacer, plannedTotal, RoundRobin } from './pacing.ts'
import type { ProgressReporter, ProgressSnapshot } from './progress.ts'
import { Random, seedFrom } from './random.ts'
import { type DeviceModel, goesOffline, invalidCycle, KIND_TYPES, planPublish, publishBytes, type ScenarioName } from './scenarios.ts'
import { RateMeter } from './stats.ts'
import { exitCodeFor, type Summary } from './summary.ts'
import { makeProfile } from './vitals.ts'

export interface RunOptions {
  url: string
  ca?: Buffer
  scenario: ScenarioName
  devices: DeviceCredential[]
  /** Readings per second across the fleet. */
  ratePerSecond: number
  batch: number
  durationSeconds?: number
  count?: number
  connectionsPerSecond: number
  maxBatchSize: number
  /** The gateway's mqtt.maxPacketBytes: a larger PUBLISH makes it close the connection. */
  maxPacketBytes: number
  seed: number
  connectTimeoutSeconds: number
  drainTimeoutSeconds: number
  progress: ProgressReporter
}

/** Stop requests from outside (SIGINT): the first ends sending, the second abandons the drain. */
export class StopSwitch {
  stopped = false
  aborted = false
  readonly #waiters = new Set<() => void>()

  stop(): void {
    if (this.stopped) this.aborted = true
    this.stopped = true
    for (const wake of [...this.#waiters]) wake()
  }

  /** Resolves after `ms`, or at the next stop(). */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer)
        this.#waiters.delete(wake)
        resolve()
      }
      const timer = setTimeout(wake, Math.max(0, ms))
      this.#waiters.add(wake)
    })
  }
}

const RECONNECT_PERIOD_MS = 1000

export async function runSimulation(opts: RunOptions, stop: StopSwitch): Promise<Summary> {
  const tally = new Tally()
  const { progress } = opts
  const total = plannedTotal(opts)
  const devices = opts.devices.map((cred, index) => {
    const rng = new Random(seedFrom(opts.seed, cred.deviceId))
    // One patient, one physiology: a patient's cuff and scale share a profile.
    const profile = makeProfile(new Random(seedFrom(opts.seed, 'patient', cred.patientId ?? cred.deviceId)), index)
    const model: DeviceModel = {
      deviceId: cred.deviceId,
      kind: cred.kind,
      index,
      profile,
      rng,
      nextSeq: cred.nextSeq,
      built: {},
      typeCursor: 0,
    }
    if (total !== undefined) {
      const types = KIND_TYPES[cred.kind]
      const weightShare = types.filter((t) => t === 'weight').length / types.length
      model.plannedWeightReadings = Math.ceil((total / opts.devices.length) * weightShare)
    }
    return new SimDevice(cred, model, { url: opts.url, ...(opts.ca ? { ca: opts.ca } : {}), tally, reconnectPeriodMs: RECONNECT_PERIOD_MS })
  })

  // Phase 1: connect, a few devices a second (the gateway limits new connections per address).
  const connectStart = performance.now()
  let connected = 0
  let phase: ProgressSnapshot['phase'] = 'connecting'
  let sendStart = 0
  const meter = new RateMeter()
  const sampler = setInterval(() => meter.sample(performance.now(), tally.acknowledged), 250)
  sampler.unref()
  progress.start(() => {
    const now = performance.now()
    return {
      phase,
      elapsedMs: now - (phase === 'connecting' ? connectStart : sendStart),
      devices: devices.length,
      connected: phase === 'connecting' ? connected : devices.filter((d) => d.client).length,
      offline: devices.filter((d) => d.offline).length,
      sent: tally.sent,
      acknowledged: tally.acknowledged,
      quarantined: tally.quarantined,
      inFlight: tally.inFlight,
      ratePerSecond: meter.perSecond,
    }
  })
  const failures = new Map<string, number>()
  const connectPacer = new Pacer(opts.connectionsPerSecond, connectStart)
  const attempts: Array<Promise<void>> = []
  let launched = 0
  while (launched < devices.length && !stop.stopped) {
    const n = connectPacer.take(performance.now(), devices.length - launched)
    for (let i = 0; i < n; i++) {
      const device = devices[launched++]!
      const deadline = performance.now() + opts.connectTimeoutSeconds * 1000
      attempts.push(
        device.connect(deadline, () => stop.stopped).then(
          () => {
            connected++
          },
          (err: unknown) => {
            const reason = err instanceof ConnectError ? err.message : (err as Error).message
            failures.set(reason, (failures.get(reason) ?? 0) + 1)
          },
        ),
      )
    }
    if (launched < devices.length) await stop.sleep(connectPacer.nextAt() - performance.now())
  }
  await Promise.all(attempts)
  const connectSeconds = (performance.now() - connectStart) / 1000
  const online = devices.filter((d) => d.client)

  // Phase 2: one schedule for the fleet; each device sends every N-th slot.
  let stoppedBy: Summary['stoppedBy'] = 'interrupt'
  let maxLag = 0
  sendStart = performance.now()
  if (online.length === 0) {
    stoppedBy = stop.stopped ? 'interrupt' : 'no-connection'
  } else {
    phase = 'sending'
    for (const d of online) if (goesOffline(opts.scenario, d.model.index)) d.startFlaky()
    const nextInvalidCase = invalidCycle()
    const pacer = new Pacer(opts.ratePerSecond / opts.batch, sendStart)
    const turn = new RoundRobin(online)
    let warnedSize = false
    const endAt = opts.durationSeconds !== undefined ? sendStart + opts.durationSeconds * 1000 : Number.POSITIVE_INFINITY
    for (;;) {
      if (stop.stopped) break
      const now = performance.now()
      // Slots due before the end are sent even when this tick comes after it: a 3 s run at
      // 50/s sends 150 readings however late the last timer fires.
      const due = pacer.take(Math.min(now, endAt - 0.001), 2000) // bounded: timers and sockets must still run
      for (let i = 0; i < due; i++) {
        const remaining = opts.count === undefined ? opts.batch : opts.count - tally.sent
        if (remaining <= 0) break
        const device = turn.next()
        const plan = planPublish(device.model, {
          scenario: opts.scenario,
          nowMs: Date.now(),
          batch: Math.min(opts.batch, remaining),
          maxBatchSize: opts.maxBatchSize,
          nextInvalidCase,
        })
        if (!warnedSize && publishBytes(device.id, plan.payload) > opts.maxPacketBytes) {
          warnedSize = true
          progress.warn(
            `warning: a PUBLISH of ${publishBytes(device.id, plan.payload)} bytes is above the gateway's packet limit ` +
              `(${opts.maxPacketBytes}, mqtt.maxPacketBytes): the gateway will close the connection, and the device resend it. Use a smaller --batch.`,
          )
        }
        device.publish(plan)
      }
      if (opts.count !== undefined && tally.sent >= opts.count) {
        stoppedBy = 'count'
        break
      }
      if (now >= endAt && pacer.nextAt() >= endAt) {
        stoppedBy = 'duration'
        break
      }
      await stop.sleep(Math.min(pacer.nextAt(), endAt) - performance.now())
    }
    maxLag = pacer.maxLagMs
  }

  // Phase 3: bring offline devices back, then wait for every PUBACK and every error message.
  phase = 'draining'
  for (const d of online) d.stopFlaky()
  const drainUntil = performance.now() + opts.drainTimeoutSeconds * 1000
  while (tally.inFlight > 0 && performance.now() < drainUntil && !stop.aborted) await stop.sleep(20)
  const lastAck = performance.now()
  const awaiting = () => online.reduce((n, d) => n + d.awaitingErrors, 0)
  // The gateway publishes an error right after the PUBACK; give late ones a moment to land.
  const errorsUntil = performance.now() + 3000
  while (awaiting() > 0 && performance.now() < errorsUntil && !stop.aborted) await stop.sleep(20)
  if (!stop.aborted) await stop.sleep(100)
  progress.stop()
  clearInterval(sampler)
  await Promise.all(online.map((d) => d.close(stop.aborted ? 0 : 2000)))

  const missingByCode: Record<string, number> = {}
  let missingErrors = 0
  for (const d of online) {
    const r = d.reconcile()
    missingErrors += r.missing
    for (const [code, n] of r.missingByCode) missingByCode[code] = (missingByCode[code] ?? 0) + n
  }
  for (const d of devices) d.credential.nextSeq = d.model.nextSeq

  const elapsedSeconds = online.length ? Math.max(0.001, (lastAck - sendStart) / 1000) : 0
  const summary: Omit<Summary, 'exitCode'> = {
    scenario: opts.scenario,
    url: opts.url,
    seed: opts.seed,
    devices: devices.length,
    connected,
    connectFailures: [...failures].map(([reason, n]) => ({ reason, devices: n })),
    connectSeconds: round(connectSeconds, 2),
    elapsedSeconds: round(elapsedSeconds, 2),
    targetRate: opts.ratePerSecond,
    batch: opts.batch,
    sent: tally.sent,
    publishes: tally.publishes,
    acknowledged: tally.acknowledged,
    quarantined: tally.quarantined,
    unacknowledged: tally.sent - tally.acknowledged,
    publishErrors: tally.publishErrors,
    readingsPerSecond: elapsedSeconds ? round(tally.acknowledged / elapsedSeconds, 1) : 0,
    pubackMs: tally.latency.summary(),
    quarantinedByCode: Object.fromEntries(tally.quarantinedByCode),
    expectedQuarantine: tally.expectedQuarantine,
    unexpectedQuarantine: tally.unexpectedQuarantine,
    unexpectedByCode: Object.fromEntries(tally.unexpectedByCode),
    missingErrors,
    missingByCode,
    staleErrorsIgnored: tally.staleErrors,
    offline: { drops: tally.drops, reconnects: tally.reconnects, queuedWhileOffline: tally.queuedOffline, connectionsLost: tally.connectionsLost },
    maxScheduleLagMs: Math.round(maxLag),
    stoppedBy,
  }
  return { ...summary, exitCode: exitCodeFor(summary, stop.aborted) }
}

const round = (n: number, digits: number) => Math.round(n * 10 ** digits) / 10 ** digits
