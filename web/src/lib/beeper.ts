// The audible cue for new urgent and critical alerts: a short Web Audio beep, no sound file.
// Browsers only let audio start after a user gesture, so the context is made on the first one.
import { Store } from './store.ts'
import type { Severity } from '../api/types.ts'

const MUTE_KEY = 'rpm.alertSoundMuted'

export class Beeper {
  readonly muted = new Store(readMuted())
  #ctx: AudioContext | null = null

  constructor() {
    const unlock = () => {
      this.#context()
      removeEventListener('pointerdown', unlock)
      removeEventListener('keydown', unlock)
    }
    addEventListener('pointerdown', unlock)
    addEventListener('keydown', unlock)
  }

  setMuted(muted: boolean): void {
    this.muted.set(muted)
    try {
      localStorage.setItem(MUTE_KEY, muted ? '1' : '0')
    } catch {
      // Storage refused (private mode): the choice lasts for this page.
    }
  }

  /** Two tones for urgent, three faster ones for critical. */
  beep(severity: Severity): void {
    if (this.muted.value) return
    const ctx = this.#context()
    if (!ctx) return
    const n = severity === 'critical' ? 3 : 2
    const gap = severity === 'critical' ? 0.18 : 0.28
    const t0 = ctx.currentTime + 0.02
    for (let i = 0; i < n; i++) {
      const osc = ctx.createOscillator()
      const gain = ctx.createGain()
      osc.type = 'sine'
      osc.frequency.value = severity === 'critical' ? 988 : 880
      const t = t0 + i * gap
      gain.gain.setValueAtTime(0.0001, t)
      gain.gain.exponentialRampToValueAtTime(0.25, t + 0.01)
      gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.14)
      osc.connect(gain).connect(ctx.destination)
      osc.start(t)
      osc.stop(t + 0.15)
    }
  }

  #context(): AudioContext | null {
    try {
      this.#ctx ??= new AudioContext()
      if (this.#ctx.state === 'suspended') void this.#ctx.resume()
      return this.#ctx
    } catch {
      return null
    }
  }
}

function readMuted(): boolean {
  try {
    return localStorage.getItem(MUTE_KEY) === '1'
  } catch {
    return false
  }
}
