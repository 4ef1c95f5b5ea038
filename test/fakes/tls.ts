/**
 * TLS material for the fake remote services: a throwaway CA and a server certificate for
 * `localhost` and `127.0.0.1`, made by the project's own development PKI so the fakes are
 * trusted exactly the way the gateway trusts its own broker certificate (by passing `ca`).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { ensureDevelopmentPki, pkiFiles } from '../../src/broker/pki.ts'

export interface FakeTls {
  /** Temp directory holding `tls/ca.pem`, `tls/server.pem`, ... */
  dir: string
  /** Path of the CA certificate, for code that wants a file (e.g. TWILIO_CA_BUNDLE). */
  caFile: string
  /** PEM strings. */
  ca: string
  cert: string
  key: string
}

// Generating keys costs a few tens of milliseconds; one PKI per test process is plenty.
let cached: Promise<FakeTls> | undefined

export function fakeTls(): Promise<FakeTls> {
  cached ??= create()
  return cached
}

async function create(): Promise<FakeTls> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rpm-fake-tls-'))
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }))
  await ensureDevelopmentPki(dir, ['localhost', '127.0.0.1'])
  const files = pkiFiles(dir)
  return {
    dir,
    caFile: files.caCertPath,
    ca: readFileSync(files.caCertPath, 'utf8'),
    cert: readFileSync(files.certPath, 'utf8'),
    key: readFileSync(files.keyPath, 'utf8'),
  }
}
