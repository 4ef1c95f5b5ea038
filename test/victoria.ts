import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

/** One series as VictoriaMetrics exports it: its name (measurement_field), tags and samples by time. */
export interface Series {
  name: string
  labels: Record<string, string>
  samples: Array<{ t: number; v: number }>
}

/** A port nothing listens on right now (the kernel's pick, released at once). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
}

/**
 * A real VictoriaMetrics (the Debian package's /usr/bin/victoria-metrics) for the InfluxDB write
 * path: it takes InfluxDB 2's /api/v2/write. Port and data directory are fixed at create(), so a
 * stop() and start() (or restart()) is the same server with the same data, as an InfluxDB that
 * went away and came back. close() stops it and removes its data; call it in afterEach.
 * bench/timeseries.ts uses it too.
 */
export class Victoria {
  #child: ChildProcess | undefined
  #log = ''

  private constructor(
    readonly port: number,
    readonly dataDir: string,
  ) {}

  /** Reserves a port and a data directory without starting the server (an InfluxDB not there yet). */
  static async create(): Promise<Victoria> {
    return new Victoria(await freePort(), mkdtempSync(path.join(os.tmpdir(), 'rpm-vm-')))
  }

  /** create() and start(). */
  static async start(): Promise<Victoria> {
    const vm = await Victoria.create()
    await vm.start()
    return vm
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`
  }

  /** The server's process id while it runs (for its CPU figures in bench/). */
  get pid(): number | undefined {
    return this.#child?.pid
  }

  get running(): boolean {
    return this.#child !== undefined
  }

  /** Starts the server and resolves once /health answers OK. */
  async start(): Promise<void> {
    if (this.#child) return
    this.#log = ''
    const child = spawn(
      'victoria-metrics',
      [
        '-retentionPeriod', '100y',
        '-httpListenAddr', `127.0.0.1:${this.port}`,
        '-storageDataPath', this.dataDir,
        // A point resent with the same series and timestamp counts once, as InfluxDB overwrites it.
        '-dedup.minScrapeInterval', '1ms',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    )
    this.#child = child
    child.stderr!.on('data', (d: Buffer) => (this.#log = (this.#log + d.toString()).slice(-4000)))
    const exited = new Promise<never>((_, reject) =>
      child.once('exit', (code, signal) => reject(new Error(`victoria-metrics exited (${signal ?? code}): ${this.#log}`))),
    )
    exited.catch(() => undefined)
    const until = Date.now() + 20_000
    for (;;) {
      const ok = await Promise.race([
        fetch(`${this.url}/health`).then((r) => r.ok, () => false),
        exited,
      ]).catch((err: unknown) => {
        this.#child = undefined
        throw err
      })
      if (ok) return
      if (Date.now() > until) {
        await this.stop()
        throw new Error(`victoria-metrics did not answer /health on ${this.url} within 20 s: ${this.#log}`)
      }
      await new Promise((r) => setTimeout(r, 50))
    }
  }

  /** Stops the server gracefully (it flushes what it took); the port and the data stay. */
  async stop(): Promise<void> {
    const child = this.#child
    if (!child) return
    this.#child = undefined
    if (child.exitCode !== null || child.signalCode !== null) return
    const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
    await gone
    clearTimeout(timer)
  }

  async restart(): Promise<void> {
    await this.stop()
    await this.start()
  }

  /** Stops the server and removes its data. */
  async close(): Promise<void> {
    await this.stop()
    rmSync(this.dataDir, { recursive: true, force: true })
  }

  /**
   * Every series and its samples, sorted by name and tags (tags in key order), samples by time. Forces a flush first,
   * so what was written is searchable now rather than in a second or so (poll anyway: a write the
   * server is still taking in may land after it).
   */
  async export(): Promise<Series[]> {
    await fetch(`${this.url}/internal/force_flush`).then((r) => r.text())
    const res = await fetch(`${this.url}/api/v1/export`, {
      method: 'POST',
      body: new URLSearchParams({ 'match[]': '{__name__=~".+"}' }),
    })
    if (!res.ok) throw new Error(`export: HTTP ${res.status} ${await res.text()}`)
    // A series may come in several blocks (one per data part): merge them.
    const byKey = new Map<string, Series>()
    for (const line of (await res.text()).split('\n')) {
      if (!line.trim()) continue
      const block = JSON.parse(line) as { metric: Record<string, string>; values: number[]; timestamps: number[] }
      const { __name__: name = '', ...tags } = block.metric
      const labels = Object.fromEntries(Object.entries(tags).sort(([a], [b]) => a.localeCompare(b)))
      const key = seriesKey(name, labels)
      const series: Series = byKey.get(key) ?? { name, labels, samples: [] }
      byKey.set(key, series)
      block.timestamps.forEach((t, i) => series.samples.push({ t, v: block.values[i]! }))
    }
    const all = [...byKey.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([, s]) => s)
    for (const s of all) s.samples.sort((a, b) => a.t - b.t)
    return all
  }

  /** Polls export() until `check` passes on it (returns truthy), or rejects with the last export. */
  async waitFor(check: (series: Series[]) => unknown, ms = 15_000, what = 'the expected series'): Promise<Series[]> {
    const until = Date.now() + ms
    for (;;) {
      const series = await this.export()
      if (check(series)) return series
      if (Date.now() > until) throw new Error(`${what} not in VictoriaMetrics within ${ms} ms; it holds: ${JSON.stringify(series).slice(0, 3000)}`)
      await new Promise((r) => setTimeout(r, 200))
    }
  }
}

/** `name{tag="value",...}` with the tags sorted: one key per series. */
export function seriesKey(name: string, labels: Record<string, string>): string {
  const tags = Object.keys(labels)
    .sort()
    .map((k) => `${k}="${labels[k]}"`)
  return `${name}{${tags.join(',')}}`
}
