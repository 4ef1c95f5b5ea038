/**
 * The demo's own data directory: marked with a DEMO file, never the directory `npm start` uses,
 * never one holding someone's real gateway data, and used by one demo at a time.
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { databaseFile } from '../../src/store/db.ts'

export const MARKER = 'DEMO'
export const DEFAULT_DEMO_DIR = 'demo-data'

/** A refusal the demo explains and exits with code 1. */
export class DemoRefusal extends Error {
  override name = 'DemoRefusal'
}

export const markerFile = (dir: string) => path.join(dir, MARKER)
const lockFile = (dir: string) => path.join(dir, 'demo', 'run.lock')

const real = (p: string) => {
  try {
    return realpathSync(p)
  } catch {
    return path.resolve(p)
  }
}

/** The data directories the gateway uses by itself: ./data, or RPM_DATA_DIR. */
function gatewayDefaults(env: NodeJS.ProcessEnv): string[] {
  return [path.resolve('data'), ...(env.RPM_DATA_DIR ? [path.resolve(env.RPM_DATA_DIR)] : [])]
}

function lockHolder(dir: string): number | null {
  const file = lockFile(dir)
  if (!existsSync(file)) return null
  const pid = Number(readFileSync(file, 'utf8').trim())
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return null
  try {
    process.kill(pid, 0)
    return pid
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' ? pid : null
  }
}

export interface PreparedDir {
  dir: string
  /** True when the directory was created (or wiped) by this run. */
  fresh: boolean
  /** Releases the run lock. */
  release(): void
}

/**
 * Checks the directory and makes it the demo's: refuses npm start's directory, a directory with
 * a gateway database but no DEMO marker, and a non-empty one that is not the demo's; with
 * `reset`, wipes a demo directory first. Writes the marker before any database exists and takes
 * the run lock.
 */
export function prepareDataDir(dirArg: string, options: { reset: boolean; env?: NodeJS.ProcessEnv }): PreparedDir {
  const dir = path.resolve(dirArg)
  const env = options.env ?? process.env
  for (const d of gatewayDefaults(env)) {
    if (real(d) === real(dir)) {
      throw new DemoRefusal(
        `${dir} is the data directory \`npm start\` uses${d !== path.resolve('data') ? ' (RPM_DATA_DIR)' : ''}: the demo keeps its fake patients apart, in ./${DEFAULT_DEMO_DIR} by default. Choose another --data-dir.`,
      )
    }
  }
  const present = existsSync(dir)
  const marked = present && existsSync(markerFile(dir))
  if (present && !marked) {
    if (existsSync(databaseFile(dir))) {
      throw new DemoRefusal(
        `${dir} holds a gateway database that is not demo data (there is no ${MARKER} marker file): the demo will not seed fake patients into it${options.reset ? ', nor wipe it' : ''}. Use another --data-dir (default ./${DEFAULT_DEMO_DIR}).`,
      )
    }
    if (readdirSync(dir).length > 0) {
      throw new DemoRefusal(`${dir} is not empty and is not a demo data directory (no ${MARKER} marker file): the demo will not use it${options.reset ? ', nor wipe it' : ''}. Use another --data-dir (default ./${DEFAULT_DEMO_DIR}).`)
    }
  }
  if (marked) {
    const pid = lockHolder(dir)
    if (pid !== null) throw new DemoRefusal(`another demo (pid ${pid}) is running with ${dir}: stop it first (Ctrl-C), or use another --data-dir.`)
  }
  let fresh = !marked
  if (marked && options.reset) {
    rmSync(dir, { recursive: true, force: true })
    fresh = true
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  if (!existsSync(markerFile(dir))) {
    writeFileSync(
      markerFile(dir),
      [
        'rpm-gateway demo data: fake patients, made up by `npm run demo`.',
        `Created ${new Date().toISOString()}. Not for real patients; \`npm start\` never uses this directory.`,
        'Start over with `npm run demo -- --reset`, or delete this directory.',
        '',
      ].join('\n'),
    )
  }
  // One demo at a time per directory: two gateways on one database would fight over it.
  mkdirSync(path.dirname(lockFile(dir)), { recursive: true, mode: 0o700 })
  rmSync(lockFile(dir), { force: true })
  const fd = openSync(lockFile(dir), 'wx', 0o600)
  writeFileSync(fd, String(process.pid))
  closeSync(fd)
  return {
    dir,
    fresh,
    release() {
      try {
        if (readFileSync(lockFile(dir), 'utf8').trim() === String(process.pid)) rmSync(lockFile(dir), { force: true })
      } catch {
        // already gone
      }
    },
  }
}
