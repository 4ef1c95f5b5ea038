/**
 * The demo's simulated devices, in the demo's process: real MQTT clients over TLS (the device
 * simulator's SimDevice), sending plausible readings at a gentle pace, now and then a crisis,
 * and confirming medication doses from the device when a reminder arrives.
 */
import { performance } from 'node:perf_hooks'
import type { DeviceCredential } from '../../device-simulator/credentials.ts'
import { SimDevice, Tally } from '../../device-simulator/device.ts'
import { Random, seedFrom } from '../../device-simulator/random.ts'
import type { ReadingPayload } from '../../device-simulator/readings.ts'
import type { DeviceModel } from '../../device-simulator/scenarios.ts'
import { makeProfile } from '../../device-simulator/vitals.ts'
import { PATIENTS, patientById } from './clinic.ts'
import { CRISES, type Crisis, normalReading } from './vitals.ts'

export interface Pace {
  /** Each device sends a reading every this many ms (uniform in the range). */
  readingEveryMs: [number, number]
  /** The first crisis, after the start. */
  firstCrisisMs: number
  /** Between later crises. */
  crisisEveryMs: [number, number]
  /** After a crisis reading the device stays quiet this long; its next normal reading clears the alert. */
  quietAfterCrisisMs: number
  /** A patient who confirms doses does so this long after the reminder reached the device. */
  confirmDoseAfterMs: [number, number]
  /** The demo's dose is due at the first whole minute at least this long after the start. */
  reminderLeadMs: number
}

export const PACE: Record<'normal' | 'fast', Pace> = {
  normal: {
    readingEveryMs: [6_000, 10_000],
    firstCrisisMs: 20_000,
    crisisEveryMs: [150_000, 210_000],
    quietAfterCrisisMs: 180_000,
    confirmDoseAfterMs: [15_000, 45_000],
    reminderLeadMs: 5_000,
  },
  fast: {
    readingEveryMs: [1_500, 2_500],
    firstCrisisMs: 5_000,
    crisisEveryMs: [30_000, 40_000],
    quietAfterCrisisMs: 60_000,
    confirmDoseAfterMs: [2_000, 4_000],
    reminderLeadMs: 3_000,
  },
}

interface Running {
  device: SimDevice
  model: DeviceModel
  patientId: string
  /** The patient's first device answers reminders (the others get them too, and leave them). */
  responder: boolean
  quietUntil: number
  timer?: NodeJS.Timeout
}

export type Say = (line: string) => void

export class Fleet {
  readonly tally = new Tally()
  readonly #devices: Running[] = []
  readonly #pace: Pace
  readonly #say: Say
  readonly #rng: Random
  readonly #timers = new Set<NodeJS.Timeout>()
  #stopped = false
  #crisisIndex = 0

  constructor(credentials: readonly DeviceCredential[], options: { url: string; ca: Buffer; pace: Pace; say: Say; seed?: number }) {
    this.#pace = options.pace
    this.#say = options.say
    this.#rng = new Random(options.seed ?? seedFrom('rpm-gateway demo', Date.now()))
    credentials.forEach((c, index) => {
      const rng = new Random(seedFrom('demo', c.deviceId, Date.now()))
      const model: DeviceModel = { deviceId: c.deviceId, kind: c.kind, index, profile: makeProfile(rng, index), rng, nextSeq: c.nextSeq, built: {}, typeCursor: 0 }
      const device = new SimDevice(c, model, { url: options.url, ca: options.ca, tally: this.tally, reconnectPeriodMs: 1_000 })
      const patientId = c.patientId ?? ''
      const first = PATIENTS.find((p) => p.id === patientId)?.devices[0]?.id === c.deviceId
      this.#devices.push({ device, model, patientId, responder: first, quietUntil: 0 })
    })
  }

  get size(): number {
    return this.#devices.length
  }

  /** Where each device's seq has got to (kept for the next run). */
  credentials(): DeviceCredential[] {
    return this.#devices.map((d) => ({ ...d.device.credential, nextSeq: d.model.nextSeq }))
  }

  /** Connects every device (over TLS, with its secret) and listens for reminders. */
  async connect(timeoutMs = 15_000): Promise<void> {
    const deadline = performance.now() + timeoutMs
    await Promise.all(this.#devices.map(async (d) => {
      await d.device.connect(deadline, () => this.#stopped)
      const client = d.device.client!
      const commands = `devices/${d.device.id}/commands`
      await client.subscribeAsync(commands, { qos: 1 })
      client.on('message', (topic, payload) => {
        if (topic === commands && d.responder) this.#onCommand(d, payload)
      })
    }))
  }

  /** Starts the readings (each device at a random moment of its first interval) and the crises. */
  start(): void {
    const [lo] = this.#pace.readingEveryMs
    for (const d of this.#devices) this.#next(d, this.#rng.uniform(200, lo))
    this.#later(() => this.#crisis(true), this.#pace.firstCrisisMs)
  }

  #later(fn: () => void, ms: number): void {
    if (this.#stopped) return
    const t = setTimeout(() => {
      this.#timers.delete(t)
      if (!this.#stopped) fn()
    }, ms)
    this.#timers.add(t)
  }

  #next(d: Running, ms: number): void {
    if (this.#stopped) return
    d.timer = setTimeout(() => {
      if (this.#stopped) return
      if (Date.now() >= d.quietUntil) this.#send(d, normalReading(d.patientId, d.model.kind, d.model.rng))
      const [lo, hi] = this.#pace.readingEveryMs
      this.#next(d, d.model.rng.uniform(lo, hi))
    }, ms)
  }

  #send(d: Running, reading: ReadingPayload): void {
    if (!d.device.client) return
    const payload = JSON.stringify({ ...reading, seq: d.model.nextSeq++ })
    d.device.publish({ payload, units: 1, valid: 1, errors: [] })
  }

  #crisis(first: boolean): void {
    const crisis: Crisis = CRISES[this.#crisisIndex++ % CRISES.length]!
    const d = this.#devices.find((x) => x.patientId === crisis.patientId && x.model.kind === crisis.kind)
    if (d) {
      const { payload, shown } = crisis.reading(d.model.rng, first)
      d.quietUntil = Date.now() + this.#pace.quietAfterCrisisMs
      this.#send(d, payload)
      const name = patientById(crisis.patientId)?.name ?? crisis.patientId
      this.#say(`${name}: ${d.device.id} sends ${shown} (expected: ${crisis.expect}); normal readings resume in ${Math.round((this.#pace.quietAfterCrisisMs / 60_000) * 10) / 10} min and clear it`)
    }
    const [lo, hi] = this.#pace.crisisEveryMs
    this.#later(() => this.#crisis(false), this.#rng.uniform(lo, hi))
  }

  /** A reminder on devices/{id}/commands: the patient presses "taken" on the device a little later. */
  #onCommand(d: Running, payload: Buffer): void {
    let cmd: { type?: unknown; kind?: unknown; occurrenceId?: unknown; medicationId?: unknown }
    try {
      cmd = JSON.parse(payload.toString('utf8')) as typeof cmd
    } catch {
      return
    }
    if (cmd.type !== 'reminder' || cmd.kind !== 'medication' || typeof cmd.medicationId !== 'string' || typeof cmd.occurrenceId !== 'string') return
    if (!patientById(d.patientId)?.confirmsDoses) return
    const event = { type: 'medication_taken', medicationId: cmd.medicationId, occurrenceId: cmd.occurrenceId }
    const [lo, hi] = this.#pace.confirmDoseAfterMs
    this.#later(() => {
      d.device.client?.publish(`devices/${d.device.id}/events`, JSON.stringify({ ...event, takenAt: new Date().toISOString() }), { qos: 1 })
    }, this.#rng.uniform(lo, hi))
  }

  /** Stops sending and disconnects every device (DISCONNECT, or a drop after `timeoutMs`). */
  async stop(timeoutMs = 3_000): Promise<void> {
    this.#stopped = true
    for (const t of this.#timers) clearTimeout(t)
    this.#timers.clear()
    for (const d of this.#devices) clearTimeout(d.timer)
    await Promise.all(this.#devices.map((d) => d.device.close(timeoutMs)))
  }
}
