// Text size: a preference kept in localStorage (never anything about the session or a patient).
import { Store } from './store.ts'

const KEY = 'rpm.textScale'
export const TEXT_SCALES = [0.875, 1, 1.125, 1.25, 1.5, 1.75, 2] as const

export class TextSize {
  readonly scale = new Store<number>(read())

  constructor() {
    this.#apply()
  }

  get canGrow(): boolean {
    return this.scale.value < TEXT_SCALES[TEXT_SCALES.length - 1]!
  }

  get canShrink(): boolean {
    return this.scale.value > TEXT_SCALES[0]
  }

  step(direction: 1 | -1): void {
    const i = TEXT_SCALES.findIndex((s) => s >= this.scale.value)
    const next = TEXT_SCALES[Math.min(TEXT_SCALES.length - 1, Math.max(0, (i < 0 ? 1 : i) + direction))]!
    this.scale.set(next)
    try {
      localStorage.setItem(KEY, String(next))
    } catch {
      // Private mode: the size lasts for this page.
    }
    this.#apply()
  }

  #apply(): void {
    document.documentElement.style.setProperty('--text-scale', String(this.scale.value))
  }
}

function read(): number {
  try {
    const v = Number(localStorage.getItem(KEY))
    return (TEXT_SCALES as readonly number[]).includes(v) ? v : 1
  } catch {
    return 1
  }
}
