// Patients the user may see, and their names for alerts and threads.
import type { Api } from '../api/http.ts'
import type { Patient } from '../api/types.ts'
import { Store } from '../lib/store.ts'

export class PatientsStore {
  readonly all = new Store<ReadonlyMap<string, Patient>>(new Map())
  readonly loaded = new Store(false)
  readonly error = new Store<string | null>(null)
  #loading: Promise<void> | null = null

  constructor(private readonly api: Api) {}

  name(id: string): string {
    return this.all.value.get(id)?.name ?? 'a patient'
  }

  load(): Promise<void> {
    this.#loading ??= this.api
      .get<{ items: Patient[] }>('/patients')
      .then(({ items }) => {
        this.all.set(new Map(items.map((p) => [p.id, p])))
        this.loaded.set(true)
        this.error.set(null)
      })
      .catch((err: unknown) => {
        this.error.set(err instanceof Error ? err.message : String(err))
      })
      .finally(() => {
        this.#loading = null
      })
    return this.#loading
  }
}
