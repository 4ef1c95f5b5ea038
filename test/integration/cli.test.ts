import { readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import SQLite from 'better-sqlite3'
import type { MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { build } from '../../device-simulator/readings.ts'
import { AuditLog } from '../../src/audit/audit.ts'
import { systemClock } from '../../src/clock.ts'
import { Registry } from '../../src/registry/registry.ts'
import { databaseFile, openStore } from '../../src/store/db.ts'
import {
  auditOf,
  connackCode,
  connectDevice,
  mosquittoArgs,
  provision,
  readingsOf,
  runProcess,
  startGateway,
  tempDir,
  type ProcessResult,
  type TestGateway,
} from '../helpers.ts'

const BIN = fileURLToPath(new URL('../../bin/rpm-gateway.js', import.meta.url))

let gateways: TestGateway[] = []
let clients: MqttClient[] = []
let dirs: string[] = []

afterEach(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)))
  clients = []
  await Promise.all(gateways.map((g) => g.stop()))
  gateways = []
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  dirs = []
})

function scratch(prefix = 'rpm-cli-'): string {
  const dir = tempDir(prefix)
  dirs.push(dir)
  return dir
}

/** The environment without any RPM_* settings of the machine running the tests. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RPM_')))
  return { ...env, ...extra }
}

type CliResult = ProcessResult & { json: any }

/** Runs the real CLI against `dataDir` with --json; `json` is the parsed stdout (null if none). */
async function cli(dataDir: string, args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  const result = await runProcess(process.execPath, [BIN, '--data-dir', dataDir, '--json', ...args], {
    env: cleanEnv(env),
    cwd: dataDir,
    timeoutMs: 20_000,
  })
  let json: unknown = null
  try {
    json = result.stdout.trim() ? JSON.parse(result.stdout) : null
  } catch {
    json = null
  }
  return { ...result, json }
}

/** Like `cli`, but a non-zero exit fails the test with what the CLI said. */
async function ok(dataDir: string, args: string[]): Promise<any> {
  const result = await cli(dataDir, args)
  if (result.code !== 0) throw new Error(`rpm-gateway ${args.join(' ')} exited ${result.code}: ${result.stderr || result.stdout}`)
  return result.json
}

/** Sets up records in a data directory the way the CLI would, without paying for a process each. */
async function seed(dataDir: string, fn: (registry: Registry, audit: AuditLog) => Promise<void>): Promise<void> {
  const store = await openStore(dataDir)
  try {
    await fn(new Registry(store.db, systemClock), new AuditLog(store.sqlite, systemClock))
  } finally {
    await store.close()
  }
}

describe('rpm-gateway patient add', () => {
  it('adds a patient with the given id, or a generated one; a bad time zone is a clear error with exit code 1', async () => {
    const dir = scratch()
    await seed(dir, async () => {}) // an existing, migrated database, so the commands below can run at once
    const [given, generated, bad] = await Promise.all([
      ok(dir, ['patient', 'add', '--name', 'Jane Doe', '--id', 'pat-jane', '--timezone', 'America/Chicago']),
      ok(dir, ['patient', 'add', '--name', 'John Roe', '--timezone', 'Europe/Paris']),
      cli(dir, ['patient', 'add', '--name', 'Mars Resident', '--timezone', 'Mars/Olympus_Mons']),
    ])
    expect(given).toMatchObject({ id: 'pat-jane', name: 'Jane Doe', timezone: 'America/Chicago' })
    expect(generated).toMatchObject({ name: 'John Roe', timezone: 'Europe/Paris' })
    expect(generated.id).toMatch(/^pat-[0-9a-f]+$/)

    expect(bad.code).toBe(1)
    expect(bad.json).toEqual({
      error: { code: 'RPM_ERR_BAD_REQUEST', message: 'timezone must be an IANA time zone such as America/Chicago', details: { field: 'timezone' } },
    })

    const sqlite = new SQLite(databaseFile(dir), { readonly: true })
    const patients = sqlite.prepare('SELECT id FROM patients ORDER BY id').all()
    sqlite.close()
    expect(patients).toEqual([{ id: generated.id }, { id: 'pat-jane' }].sort((a, b) => a.id.localeCompare(b.id)))
  })
})

describe('rpm-gateway device', () => {
  it('device add prints the secret once; the database keeps only its scrypt hash', async () => {
    const dir = scratch()
    await seed(dir, async (registry) => {
      await registry.addPatient({ name: 'Jane Doe', id: 'pat-1', timezone: 'UTC' })
    })
    const added = await ok(dir, ['device', 'add', '--patient', 'pat-1', '--id', 'dev-1', '--kind', 'glucometer'])
    expect(added).toMatchObject({ id: 'dev-1', patientId: 'pat-1', kind: 'glucometer', status: 'active' })
    expect(added.secret).toMatch(/^[A-Za-z0-9_-]{32,}$/)

    const sqlite = new SQLite(databaseFile(dir), { readonly: true })
    const row = sqlite.prepare('SELECT * FROM devices WHERE id = ?').get('dev-1') as Record<string, unknown>
    const audit = sqlite.prepare('SELECT actor_type, action, target, outcome FROM audit ORDER BY id').all()
    sqlite.close()
    expect(row.secret_hash).toMatch(/^scrypt\$\d+\$\d+\$\d+\$[\w-]+\$[\w-]+$/)
    expect(JSON.stringify(row)).not.toContain(added.secret)
    // Not anywhere on disk either: the database, its WAL, or anything else in the data directory.
    for (const file of readdirSync(dir)) {
      if (statSync(path.join(dir, file)).isFile()) expect(readFileSync(path.join(dir, file)).includes(added.secret)).toBe(false)
    }
    expect(audit).toEqual([{ actor_type: 'operator', action: 'device.add', target: 'dev-1', outcome: 'allowed' }])
  })

  it('device cert writes a certificate, key and CA that openssl verifies and that log the device in', async () => {
    const t = await startGateway()
    gateways.push(t)
    const out = scratch('rpm-cli-certs-')
    await provision(t.gateway, 'bp_cuff', 'dev-1')
    const written = await ok(t.dataDir, ['device', 'cert', '--device', 'dev-1', '--out', out])
    const files = { cert: path.join(out, 'dev-1.pem'), key: path.join(out, 'dev-1-key.pem'), ca: path.join(out, 'ca.pem') }
    expect(written).toEqual({ deviceId: 'dev-1', ...files })
    expect(statSync(files.key).mode & 0o077).toBe(0) // the private key is readable by its owner only

    const [verified, subject] = await Promise.all([
      runProcess('openssl', ['verify', '-CAfile', files.ca, files.cert]),
      runProcess('openssl', ['x509', '-in', files.cert, '-noout', '-subject']),
    ])
    expect(verified).toMatchObject({ code: 0, stdout: `${files.cert}: OK\n` })
    expect(subject.stdout).toMatch(/CN ?= ?dev-1$/m)

    const published = await runProcess('mosquitto_pub', [
      ...mosquittoArgs(t, { clientId: 'dev-1', cert: files.cert, key: files.key, cafile: files.ca }),
      '-q', '1', '-t', 'devices/dev-1/readings', '-m', JSON.stringify(build.bloodPressure(131, 84, 72, { seq: 1 })),
    ])
    expect(published).toMatchObject({ code: 0, stderr: '' })
    expect(readingsOf(t, 'dev-1')).toHaveLength(1)
  })

  it('device disable stops the device from logging in to a running gateway', async () => {
    const t = await startGateway({ 'mqtt.authFailuresBeforeDelay': 1000 })
    gateways.push(t)
    const device = await provision(t.gateway, 'bp_cuff', 'dev-1')
    expect(await connackCode(connectDevice(t, device))).toBe(0)

    expect(await ok(t.dataDir, ['device', 'disable', '--device', 'dev-1'])).toMatchObject({ id: 'dev-1', status: 'disabled', disabledAt: expect.any(String) })
    expect(await connackCode(connectDevice(t, device))).toBe(5)
  })
})

describe('rpm-gateway readings and quarantine', () => {
  it('list what a running gateway stored and set aside', async () => {
    const t = await startGateway()
    gateways.push(t)
    const patient = await t.gateway.registry.addPatient({ name: 'Jane Doe', id: 'pat-1', timezone: 'UTC' })
    const dev = await t.gateway.registry.addDevice({ patientId: patient.id, id: 'dev-1', kind: 'bp_cuff' })
    const client = await connectDevice(t, { patientId: patient.id, deviceId: dev.id, secret: dev.secret })
    clients.push(client)
    await client.publishAsync('devices/dev-1/readings', JSON.stringify(build.bloodPressure(152, 95, 78, { seq: 1 })), { qos: 1 })
    await client.publishAsync('devices/dev-1/readings', JSON.stringify(build.bloodPressure(400, 95, 78, { seq: 2 })), { qos: 1 })

    const [readings, quarantine] = await Promise.all([
      ok(t.dataDir, ['readings', '--patient', 'pat-1']),
      ok(t.dataDir, ['quarantine', '--device', 'dev-1']),
    ])
    expect(readings.items).toEqual([
      expect.objectContaining({ deviceId: 'dev-1', patientId: 'pat-1', type: 'blood_pressure', seq: 1, values: { systolicMmHg: 152, diastolicMmHg: 95, pulseBpm: 78 } }),
    ])
    expect(quarantine.items).toEqual([expect.objectContaining({ code: 'RPM_ERR_READING_IMPLAUSIBLE', seq: 2 })])
    // Reading a patient's record is itself on the audit trail.
    expect(auditOf(t, 'readings.read')).toEqual([expect.objectContaining({ actor_type: 'operator', target: 'pat-1', outcome: 'allowed' })])
  })
})

describe('rpm-gateway audit verify', () => {
  it('reports an intact trail, and an altered row with exit code 2', async () => {
    const dir = scratch()
    await seed(dir, async (_registry, audit) => {
      audit.record({ actorType: 'operator', actorId: 'ops', action: 'patient.add', target: 'pat-1', outcome: 'allowed' })
      audit.record({ actorType: 'device', actorId: 'dev-1', action: 'mqtt.connect', outcome: 'denied', address: '192.0.2.7' })
      audit.record({ actorType: 'operator', actorId: 'ops', action: 'readings.read', target: 'pat-1', outcome: 'allowed' })
    })
    expect(await cli(dir, ['audit', 'verify'])).toMatchObject({ code: 0, json: { ok: true, rows: 3 } })

    const sqlite = new SQLite(databaseFile(dir))
    // The database itself refuses to change the trail...
    expect(() => sqlite.prepare("UPDATE audit SET address = '10.0.0.1' WHERE id = 2").run()).toThrow(/append-only/)
    // ...so someone with file access has to remove the guard first; the hash chain still tells.
    sqlite.exec('DROP TRIGGER audit_no_update')
    sqlite.prepare("UPDATE audit SET address = '10.0.0.1' WHERE id = 2").run()
    sqlite.close()

    const altered = await cli(dir, ['audit', 'verify'])
    expect(altered.code).toBe(2)
    expect(altered.json).toMatchObject({ ok: false, brokenAt: 2, reason: expect.any(String) })
  })
})

describe('rpm-gateway start: configuration errors', () => {
  it('exits non-zero naming the key and what was expected', async () => {
    const dir = scratch()
    const unknownKey = path.join(dir, 'gateway.yaml')
    writeFileSync(unknownKey, 'http:\n  prot: 8080\n')
    // Free ports in case a configuration were wrongly accepted: then the test fails, not the machine.
    const ports = { RPM_HTTP_PORT: '0', RPM_MQTT_PORT: '0' }

    const [badEnv, badKey] = await Promise.all([
      // As an operator reads it, on stderr...
      runProcess(process.execPath, [BIN, '--data-dir', dir, 'start'], { env: cleanEnv({ ...ports, RPM_HTTP_PORT: 'abc' }), cwd: dir }),
      // ...and as a script reads it, with --json.
      cli(dir, ['start', '--config', unknownKey], ports),
    ])
    expect(badEnv.code).toBe(1)
    expect(badEnv.stderr).toMatch(/^error: invalid configuration: RPM_HTTP_PORT: expected a number, got "abc"/)

    expect(badKey.code).toBe(1)
    expect(badKey.json.error).toMatchObject({
      code: 'RPM_ERR_CONFIG_INVALID',
      message: expect.stringMatching(/unknown key "http\.prot".*expected one of http\.host, http\.port, http\.mqttWebSocket/),
    })
  })
})
