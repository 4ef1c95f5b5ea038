// Per-patient summary for the patient list: latest vitals, devices, 7-day adherence. Fetched a
// few patients at a time, then kept current by live `reading` events.
import type { Api } from '../api/http.ts'
import type { Adherence, Device, Page, Reading } from '../api/types.ts'
import { Store } from '../lib/store.ts'
import type { LiveSocket } from '../live/socket.ts'

export interface PatientSummary {
  latest: Map<string, Reading>
  devices: Device[]
  adherence: Adherence | null
  error: string | null
  loaded: boolean
}

const CONCURRENCY = 4

export class SummariesStore {
  /** Bumped on every change (the list re-renders). */
  readonly version = new Store(0)
  readonly #items = new Map<string, PatientSummary>()
  readonly #off: () => void

  constructor(
    private readonly api: Api,
    socket: LiveSocket,
  ) {
    this.#off = socket.events.on('reading', (e) => {
      const s = this.#items.get(e.patientId)
      if (!s) return
      const r: Reading = { ...e.reading, patientId: e.patientId }
      const held = s.latest.get(r.type)
      if (!held || Date.parse(held.measuredAt) <= Date.parse(r.measuredAt)) s.latest.set(r.type, r)
      const d = s.devices.find((x) => x.id === r.deviceId)
      if (d) {
        d.online = true
        d.lastSeenAt = r.receivedAt
      }
      this.#bump()
    })
  }

  dispose(): void {
    this.#off()
  }

  get(patientId: string): PatientSummary | undefined {
    return this.#items.get(patientId)
  }

  /** Loads the summaries not yet held (or all, with refresh). */
  async load(patientIds: string[], { refresh = false } = {}): Promise<void> {
    const queue = patientIds.filter((id) => refresh || !this.#items.get(id)?.loaded)
    const worker = async () => {
      for (let id = queue.shift(); id; id = queue.shift()) await this.#loadOne(id)
    }
    await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  }

  async #loadOne(id: string): Promise<void> {
    const p = encodeURIComponent(id)
    const s: PatientSummary = this.#items.get(id) ?? { latest: new Map(), devices: [], adherence: null, error: null, loaded: false }
    this.#items.set(id, s)
    const [readings, devices, adherence] = await Promise.allSettled([
      this.api.get<Page<Reading>>(`/patients/${p}/readings`, { limit: 100 }),
      this.api.get<{ items: Device[] }>(`/patients/${p}/devices`),
      this.api.get<Adherence>(`/patients/${p}/adherence`),
    ])
    if (readings.status === 'fulfilled') {
      // Newest first: the first of each type is the latest.
      for (const r of readings.value.items) if (!s.latest.has(r.type)) s.latest.set(r.type, r)
    }
    if (devices.status === 'fulfilled') s.devices = devices.value.items
    if (adherence.status === 'fulfilled') s.adherence = adherence.value
    const failed = [readings, devices, adherence].find((x) => x.status === 'rejected')
    s.error = failed ? String((failed.reason as Error)?.message ?? failed.reason) : null
    s.loaded = true
    this.#bump()
  }

  #bump(): void {
    this.version.set(this.version.value + 1)
  }
}
