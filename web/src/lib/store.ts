// Observable state for the console: a store holds a value, notifies on change, and components
// read it with useStore(). Stores are created per sign-in (see state/console.ts), never at module level.
import { useEffect, useRef, useState } from 'preact/hooks'

export class Store<T> {
  #value: T
  readonly #listeners = new Set<(value: T) => void>()

  constructor(initial: T) {
    this.#value = initial
  }

  get value(): T {
    return this.#value
  }

  set(value: T): void {
    if (Object.is(value, this.#value)) return
    this.#value = value
    for (const l of [...this.#listeners]) l(value)
  }

  update(fn: (value: T) => T): void {
    this.set(fn(this.#value))
  }

  subscribe(listener: (value: T) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }
}

/** Re-renders the component when the store changes. */
export function useStore<T>(store: Store<T>): T {
  const [, setTick] = useState(0)
  const rendered = useRef(store.value)
  rendered.current = store.value
  useEffect(() => {
    const off = store.subscribe(() => setTick((n) => n + 1))
    // A change between this render and the subscription (effects run after paint) is not lost.
    if (!Object.is(rendered.current, store.value)) setTick((n) => n + 1)
    return off
  }, [store])
  return store.value
}
