// The alert inbox (docs/rules.md "Alerts", "API and WebSocket"): open and acknowledged alerts,
// kept current by the socket's `alert` events, which reach providers without subscribing.
import type { Api } from '../api/http.ts'
import type { Alert, AlertChange, Page, Severity } from '../api/types.ts'
import { Emitter } from '../lib/emitter.ts'
import { Store } from '../lib/store.ts'
import type { LiveSocket } from '../live/socket.ts'

export const SEVERITY_RANK: Record<Severity, number> = { critical: 0, urgent: 1, warning: 2, info: 3 }

/** Most severe first, then the one waiting longest. */
export function compareAlerts(a: Alert, b: Alert): number {
  return SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity] || Date.parse(a.openedAt) - Date.parse(b.openedAt)
}

export function isActive(a: Alert): boolean {
  return a.status === 'open' || a.status === 'acknowledged'
}

/** The longest snooze per severity (alerts.maxSnoozeMinutes defaults, docs/rules.md "Snooze"). */
export const MAX_SNOOZE_MINUTES: Record<Severity, number> = { info: 1440, warning: 720, urgent: 120, critical: 30 }

export class AlertsStore {
  /** Every alert this console knows, by id (resolved ones stay, for the cards in threads). */
  readonly all = new Store<ReadonlyMap<string, Alert>>(new Map())
  /** Alerts raised (or made worse) since this console loaded: shown as new until acted on. */
  readonly fresh = new Store<ReadonlySet<string>>(new Set())
  readonly loading = new Store(false)
  readonly error = new Store<string | null>(null)
  /** A new urgent or critical alert (raised, or made worse) arrived live. */
  readonly sounding = new Emitter<{ alert: [Alert, AlertChange] }>()

  readonly #off: () => void

  constructor(
    private readonly api: Api,
    socket: LiveSocket,
  ) {
    this.#off = socket.events.on('alert', (e) => this.#onAlert(e.alert, e.change))
  }

  dispose(): void {
    this.#off()
  }

  active(): Alert[] {
    return [...this.all.value.values()].filter(isActive).sort(compareAlerts)
  }

  activeFor(patientId: string): Alert[] {
    return this.active().filter((a) => a.patientId === patientId)
  }

  async load(): Promise<void> {
    this.loading.set(true)
    try {
      const items: Alert[] = []
      let cursor: string | null = null
      // Pages of 200 until done; a clinic's active alerts fit in a few.
      for (let i = 0; i < 20; i++) {
        const page: Page<Alert> = await this.api.get<Page<Alert>>('/alerts', { status: 'active', limit: 200, cursor })
        items.push(...page.items)
        cursor = page.nextCursor
        if (!cursor) break
      }
      const next = new Map([...this.all.value].filter(([, a]) => !isActive(a)))
      for (const a of items) next.set(a.id, a)
      this.all.set(next)
      this.error.set(null)
    } catch (err) {
      this.error.set(err instanceof Error ? err.message : String(err))
    } finally {
      this.loading.set(false)
    }
  }

  async fetchOne(id: string): Promise<Alert> {
    const a = await this.api.get<Alert>(`/alerts/${encodeURIComponent(id)}`)
    this.#put(a)
    return a
  }

  async acknowledge(id: string): Promise<void> {
    await this.#act(id, 'acknowledge', {})
  }

  async resolve(id: string, note: string): Promise<void> {
    await this.#act(id, 'resolve', { note })
  }

  async snooze(id: string, minutes: number, reason?: string): Promise<void> {
    await this.#act(id, 'snooze', { minutes, ...(reason ? { reason } : {}) })
  }

  /**
   * Acts on the alert as shown: the severity on screen goes with the request, and the gateway
   * refuses (409) when a worse reading changed it meanwhile; the card then shows the new state.
   */
  async #act(id: string, action: 'acknowledge' | 'resolve' | 'snooze', body: Record<string, unknown>): Promise<void> {
    const seen = this.all.value.get(id)?.severity
    try {
      this.#put(await this.api.post<Alert>(`/alerts/${encodeURIComponent(id)}/${action}`, { ...body, ...(seen ? { severity: seen } : {}) }))
    } catch (err) {
      await this.fetchOne(id).catch(() => {})
      throw err
    }
    this.#unfresh(id)
  }

  #onAlert(alert: Alert, change: AlertChange): void {
    const before = this.all.value.get(alert.id)
    // Events may cross a REST answer: keep the newer state.
    if (before && Date.parse(before.updatedAt) > Date.parse(alert.updatedAt)) return
    this.#put(alert)
    if (change === 'raised' || change === 'severity_raised') {
      const next = new Set(this.fresh.value)
      next.add(alert.id)
      this.fresh.set(next)
      if (alert.severity === 'urgent' || alert.severity === 'critical') this.sounding.emit('alert', alert, change)
    }
    if (!isActive(alert) || change === 'acknowledged') this.#unfresh(alert.id)
  }

  #put(a: Alert): void {
    const next = new Map(this.all.value)
    next.set(a.id, a)
    this.all.set(next)
  }

  #unfresh(id: string): void {
    if (!this.fresh.value.has(id)) return
    const next = new Set(this.fresh.value)
    next.delete(id)
    this.fresh.set(next)
  }
}
