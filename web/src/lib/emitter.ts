// A small typed event emitter: live events and session changes are named and typed, never free-form.
export class Emitter<Events extends Record<string, unknown[]>> {
  readonly #handlers = new Map<keyof Events, Set<(...args: any[]) => void>>()

  on<K extends keyof Events>(name: K, handler: (...args: Events[K]) => void): () => void {
    let set = this.#handlers.get(name)
    if (!set) this.#handlers.set(name, (set = new Set()))
    set.add(handler)
    return () => set!.delete(handler)
  }

  emit<K extends keyof Events>(name: K, ...args: Events[K]): void {
    for (const h of [...(this.#handlers.get(name) ?? [])]) {
      try {
        h(...args)
      } catch (err) {
        console.error(`handler for ${String(name)} failed`, err)
      }
    }
  }
}
