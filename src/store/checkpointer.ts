import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import type SQLite from 'better-sqlite3'
import type { Logger } from 'pino'

// Plain CommonJS, evaluated in the worker: it only opens its own connection and checkpoints.
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads')
const Database = require(workerData.driver)
const db = new Database(workerData.file)
db.pragma('busy_timeout = 5000')
db.pragma('synchronous = FULL')
const checkpoint = (mode) => {
  try {
    db.pragma('wal_checkpoint(' + mode + ')')
  } catch (err) {
    parentPort.postMessage({ error: String(err && err.message || err) })
  }
}
const timer = setInterval(() => checkpoint('PASSIVE'), workerData.intervalMs)
parentPort.on('message', (message) => {
  if (message !== 'stop') return
  clearInterval(timer)
  checkpoint('TRUNCATE')
  db.close()
  parentPort.postMessage({ stopped: true })
  parentPort.close()
})
`

export interface Checkpointer {
  stop(): Promise<void>
}

/**
 * Moves WAL checkpoints off the event loop. SQLite otherwise runs a checkpoint inside whichever
 * commit crosses the WAL size threshold, holding that commit's PUBACKs for tens of
 * milliseconds. A worker thread with its own connection checkpoints on a timer instead (PASSIVE:
 * it never blocks the writer). If the worker fails, automatic checkpoints come back on.
 */
export function startCheckpointer(sqlite: SQLite.Database, file: string, log: Logger, intervalMs = 500): Checkpointer {
  const driver = createRequire(import.meta.url).resolve('better-sqlite3')
  const worker = new Worker(WORKER, { eval: true, workerData: { driver, file, intervalMs } })
  sqlite.pragma('wal_autocheckpoint = 0')
  let running = true
  const fallBack = (reason: string) => {
    if (!running) return
    running = false
    log.warn({ reason }, 'background checkpoints stopped; SQLite checkpoints during commits again')
    if (sqlite.open) sqlite.pragma('wal_autocheckpoint = 1000')
  }
  let stopped: () => void = () => undefined
  worker.on('message', (m: { error?: string; stopped?: boolean }) => {
    if (m.error) log.warn({ err: m.error }, 'WAL checkpoint failed')
    if (m.stopped) stopped()
  })
  worker.on('error', (err) => fallBack(err.message))
  worker.on('exit', () => {
    fallBack('the checkpoint worker exited')
    stopped()
  })
  worker.unref()
  return {
    stop() {
      if (!running) return Promise.resolve()
      running = false
      if (sqlite.open) sqlite.pragma('wal_autocheckpoint = 1000')
      return new Promise<void>((resolve) => {
        stopped = resolve
        worker.ref() // keep the process alive until the final checkpoint is done
        worker.postMessage('stop')
      })
    },
  }
}
