/**
 * Progress on stderr while a run goes: one line redrawn in place on a terminal, a plain line
 * every few seconds otherwise (CI logs, pipes). Counts only: never a reading's values.
 */
export interface ProgressSnapshot {
  phase: 'provisioning' | 'connecting' | 'sending' | 'draining'
  elapsedMs: number
  devices: number
  connected: number
  /** Devices deliberately offline right now. */
  offline: number
  sent: number
  acknowledged: number
  quarantined: number
  inFlight: number
  /** Acknowledged readings per second, recently. */
  ratePerSecond: number
  /** For provisioning: devices done / to do. */
  done?: number
  total?: number
}

const secs = (ms: number) => `${(ms / 1000).toFixed(1)}s`

export function formatProgress(s: ProgressSnapshot): string {
  if (s.phase === 'provisioning') return s.total ? `provisioning devices ${s.done ?? 0}/${s.total}` : 'checking devices'
  if (s.phase === 'connecting') return `${secs(s.elapsedMs)} connecting ${s.connected}/${s.devices}`
  const parts = [
    secs(s.elapsedMs),
    s.phase === 'draining' ? 'waiting for acks' : `${s.connected - s.offline}/${s.devices} online`,
    `sent ${s.sent}`,
    `acked ${s.acknowledged}`,
    `quarantined ${s.quarantined}`,
    `in flight ${s.inFlight}`,
    `${s.ratePerSecond.toFixed(1)}/s`,
  ]
  return parts.join('  ')
}

export interface ProgressOutput {
  write(text: string): unknown
  isTTY?: boolean
}

export type ProgressMode = 'tty' | 'lines' | 'off'

export function progressMode(stream: ProgressOutput, quiet: boolean): ProgressMode {
  if (quiet) return 'off'
  return stream.isTTY ? 'tty' : 'lines'
}

/** Draws progress from `snapshot()`; notes (warnings) go above the progress line. */
export class ProgressReporter {
  #timer: NodeJS.Timeout | undefined
  #drawn = false
  #snapshot: (() => ProgressSnapshot) | undefined

  constructor(
    private readonly out: ProgressOutput,
    private readonly mode: ProgressMode,
    private readonly linesEveryMs = 5000,
  ) {}

  start(snapshot: () => ProgressSnapshot): void {
    this.#snapshot = snapshot
    if (this.mode === 'off' || this.#timer) return
    this.#timer = setInterval(() => this.draw(), this.mode === 'tty' ? 250 : this.linesEveryMs)
    this.#timer.unref()
    if (this.mode === 'tty') this.draw()
  }

  draw(): void {
    if (this.mode === 'off' || !this.#snapshot) return
    const line = formatProgress(this.#snapshot())
    if (this.mode === 'tty') {
      this.out.write(`\r\x1b[2K${line}`)
      this.#drawn = true
    } else {
      this.out.write(`${line}\n`)
    }
  }

  /** Information for the user; --quiet hides it. */
  note(text: string): void {
    if (this.mode !== 'off') this.warn(text)
  }

  /** Something the user should see even with --quiet. */
  warn(text: string): void {
    this.#clear()
    this.out.write(`${text}\n`)
    if (this.mode === 'tty' && this.#timer) this.draw()
  }

  #clear(): void {
    if (this.#drawn) {
      this.out.write('\r\x1b[2K')
      this.#drawn = false
    }
  }

  stop(): void {
    clearInterval(this.#timer)
    this.#timer = undefined
    this.#clear()
  }
}
