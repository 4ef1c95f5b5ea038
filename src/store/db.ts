import { mkdirSync } from 'node:fs'
import path from 'node:path'
import SQLite from 'better-sqlite3'
import { Kysely, Migrator, SqliteDialect } from 'kysely'
import { RpmError } from '../errors.ts'
import { migrationProvider } from './migrations.ts'
import type { Database } from './schema.ts'

export type { Database } from './schema.ts'

export interface Store {
  /** Typed query builder for everything but the ingest hot path. */
  readonly db: Kysely<Database>
  /** The raw connection, for prepared statements on the hot path and synchronous transactions. */
  readonly sqlite: SQLite.Database
  readonly file: string
  close(): Promise<void>
}

async function listApplied(sqlite: SQLite.Database): Promise<string[]> {
  try {
    return (sqlite.prepare('SELECT name FROM kysely_migration ORDER BY name').all() as Array<{ name: string }>).map((r) => r.name)
  } catch {
    return []
  }
}

export function databaseFile(dataDir: string): string {
  return path.join(dataDir, 'rpm-gateway.db')
}

/**
 * Opens (creating when missing) the gateway database under the data directory and brings its
 * schema up to date. WAL with synchronous=FULL: a commit survives power loss, not only a
 * process crash, which is what a PUBACK promises.
 */
export async function openStore(dataDir: string): Promise<Store> {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 })
  const file = databaseFile(dataDir)
  let sqlite: SQLite.Database
  try {
    sqlite = new SQLite(file)
  } catch (err) {
    throw new RpmError('RPM_ERR_UNAVAILABLE', `cannot open the database at ${file}`, { cause: err })
  }
  sqlite.pragma('journal_mode = WAL')
  sqlite.pragma('synchronous = FULL')
  sqlite.pragma('foreign_keys = ON')
  // Another process (the CLI while the gateway runs) may hold the write lock briefly.
  sqlite.pragma('busy_timeout = 5000')

  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) })
  // One transaction around all migrations: atomic (SQLite has transactional DDL), and a second
  // process opening a new database at the same moment waits for the first (busy_timeout).
  sqlite.exec('BEGIN IMMEDIATE')
  const { error, results } = await new Migrator({ db, provider: migrationProvider }).migrateToLatest()
  sqlite.exec(error ? 'ROLLBACK' : 'COMMIT')
  if (error) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName
    const known = new Set(Object.keys(await migrationProvider.getMigrations()))
    const newer = (await listApplied(sqlite)).filter((name) => !known.has(name))
    await db.destroy()
    throw new RpmError(
      'RPM_ERR_UNAVAILABLE',
      newer.length > 0
        ? `the database at ${file} was upgraded by a newer release (migrations ${newer.join(', ')}); run that release or restore a backup`
        : `database migration ${failed ?? ''} failed: ${(error as Error).message}`,
      { cause: error },
    )
  }
  let closed = false
  return {
    db,
    sqlite,
    file,
    async close() {
      if (closed) return
      closed = true
      await db.destroy() // closes the better-sqlite3 connection too
    },
  }
}
