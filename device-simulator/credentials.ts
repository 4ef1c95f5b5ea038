/**
 * Simulated devices' identities. The simulator provisions its devices into the gateway's data
 * directory through the gateway's own Registry, and keeps their secrets (which the database
 * holds only as hashes) in <data-dir>/simulator/devices.json, mode 0600, so later runs reuse the
 * same devices and continue their seq numbers.
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { AuditLog } from '../src/audit/audit.ts'
import { systemClock } from '../src/clock.ts'
import { RpmError } from '../src/errors.ts'
import { DEVICE_KINDS, Registry } from '../src/registry/registry.ts'
import { databaseFile, openStore } from '../src/store/db.ts'
import type { DeviceKind } from '../src/store/schema.ts'

export interface DeviceCredential {
  deviceId: string
  secret: string
  kind: DeviceKind
  patientId?: string
  /** The seq the device's next reading carries. */
  nextSeq: number
}

interface SimulatorFile {
  note: string
  devices: DeviceCredential[]
}

const NOTE = 'Simulated devices for the rpm-gateway simulator. The gateway keeps only hashes of these secrets: this file is the only copy.'

/** Device id prefixes by kind: sim-bp-0001, sim-glu-0001, ... */
export const ID_PREFIX: Record<DeviceKind, string> = {
  bp_cuff: 'bp',
  glucometer: 'glu',
  oximeter: 'ox',
  scale: 'scale',
  thermometer: 'temp',
  hub: 'hub',
}

const pad = (n: number) => String(n).padStart(4, '0')
export const simDeviceId = (kind: DeviceKind, n: number) => `sim-${ID_PREFIX[kind]}-${pad(n)}`
export const simPatientId = (n: number) => `sim-pat-${pad(n)}`

export function simulatorDir(dataDir: string): string {
  return path.join(dataDir, 'simulator')
}

export function devicesFile(dataDir: string): string {
  return path.join(simulatorDir(dataDir), 'devices.json')
}

function isKind(k: unknown): k is DeviceKind {
  return typeof k === 'string' && (DEVICE_KINDS as readonly string[]).includes(k)
}

function checkEntry(e: unknown, where: string, i: number): DeviceCredential | string {
  if (e === null || typeof e !== 'object') return `${where}: entry ${i} is not an object`
  const o = e as Record<string, unknown>
  if (typeof o.deviceId !== 'string' || !o.deviceId) return `${where}: entry ${i} has no deviceId`
  if (typeof o.secret !== 'string' || !o.secret) return `${where}: entry ${i} (${o.deviceId}) has no secret`
  if (o.kind !== undefined && !isKind(o.kind)) return `${where}: entry ${i} (${o.deviceId}) has an unknown kind ${JSON.stringify(o.kind)}`
  if (o.nextSeq !== undefined && !(Number.isSafeInteger(o.nextSeq) && (o.nextSeq as number) >= 0)) {
    return `${where}: entry ${i} (${o.deviceId}) has a nextSeq that is not a whole number`
  }
  const c: DeviceCredential = { deviceId: o.deviceId, secret: o.secret, kind: (o.kind as DeviceKind) ?? 'bp_cuff', nextSeq: (o.nextSeq as number) ?? 1 }
  if (typeof o.patientId === 'string') c.patientId = o.patientId
  return c
}

function readJson(file: string): unknown {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new RpmError('RPM_ERR_BAD_REQUEST', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  try {
    return JSON.parse(text)
  } catch {
    throw new RpmError('RPM_ERR_BAD_REQUEST', `${file} is not valid JSON`)
  }
}

/**
 * Devices provisioned elsewhere: a JSON array of {deviceId, secret} (optionally kind, nextSeq).
 * A device without a kind gets one from `kinds` in turn.
 */
export function loadCredentials(file: string, kinds: readonly DeviceKind[]): DeviceCredential[] {
  const body = readJson(file)
  if (!Array.isArray(body) || body.length === 0) {
    throw new RpmError('RPM_ERR_BAD_REQUEST', `${file} must hold a JSON array of {"deviceId": ..., "secret": ...}`)
  }
  return body.map((e, i) => {
    const c = checkEntry(e, file, i)
    if (typeof c === 'string') throw new RpmError('RPM_ERR_BAD_REQUEST', c)
    if ((e as { kind?: unknown }).kind === undefined) c.kind = kinds[i % kinds.length]!
    return c
  })
}

export function readSimulatorFile(dataDir: string): DeviceCredential[] {
  const file = devicesFile(dataDir)
  if (!existsSync(file)) return []
  const body = readJson(file) as Partial<SimulatorFile>
  if (!body || !Array.isArray(body.devices)) throw new RpmError('RPM_ERR_BAD_REQUEST', `${file}: expected {"devices": [...]}`)
  return body.devices.map((e, i) => {
    const c = checkEntry(e, file, i)
    if (typeof c === 'string') throw new RpmError('RPM_ERR_BAD_REQUEST', c)
    return c
  })
}

/** Writes the file whole (temp file + rename), readable by its owner only. */
export function writeSimulatorFile(dataDir: string, devices: readonly DeviceCredential[]): void {
  const dir = simulatorDir(dataDir)
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const file = devicesFile(dataDir)
  const tmp = `${file}.${process.pid}.tmp`
  const sorted = [...devices].sort((a, b) => a.deviceId.localeCompare(b.deviceId))
  writeFileSync(tmp, JSON.stringify({ note: NOTE, devices: sorted } satisfies SimulatorFile, null, 2) + '\n', { mode: 0o600 })
  renameSync(tmp, file)
}

/**
 * One simulator at a time per data directory: two runs with the same device ids would take
 * each other's MQTT sessions over. Returns the release function.
 */
export function lockSimulator(dataDir: string): () => void {
  const dir = simulatorDir(dataDir)
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const file = path.join(dir, 'run.lock')
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx', 0o600)
      writeFileSync(fd, String(process.pid))
      closeSync(fd)
      return () => rmSync(file, { force: true })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const pid = Number(readFileSync(file, 'utf8').trim())
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
        throw new RpmError(
          'RPM_ERR_CONFLICT',
          `another simulator run (pid ${pid}) is using the devices in ${dir}; wait for it, or use --credentials with other devices`,
        )
      }
      rmSync(file, { force: true }) // left behind by a run that was killed
    }
  }
  throw new RpmError('RPM_ERR_CONFLICT', `cannot lock ${file}`)
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

export interface ProvisionResult {
  /** In the order of `kinds`: device i has kind kinds[i]. */
  devices: DeviceCredential[]
  /** Every device the file knows, including ones this run does not use. */
  known: DeviceCredential[]
  created: number
  notes: string[]
}

/**
 * Finds or provisions one device per entry of `kinds` (device i gets kinds[i]). Reuses devices
 * from devices.json that the database still knows and has active; re-provisions (new secret,
 * same id, same seq) those the database lost; skips ids taken by devices whose secret the file
 * does not have.
 */
export async function provisionDevices(
  dataDir: string,
  kinds: readonly DeviceKind[],
  onProgress: (done: number, total: number) => void = () => {},
): Promise<ProvisionResult> {
  if (!existsSync(databaseFile(dataDir))) {
    throw new RpmError(
      'RPM_ERR_BAD_REQUEST',
      `no gateway database in ${dataDir}: start the gateway with this data directory first (--data-dir or RPM_DATA_DIR), or pass --credentials FILE`,
    )
  }
  const known = readSimulatorFile(dataDir)
  const byId = new Map(known.map((d) => [d.deviceId, d]))
  const notes: string[] = []
  const store = await openStore(dataDir)
  const registry = new Registry(store.db, systemClock)
  const audit = new AuditLog(store.sqlite, systemClock)
  const operator = os.userInfo().username
  let created = 0
  try {
    const need = new Map<DeviceKind, number>()
    for (const k of kinds) need.set(k, (need.get(k) ?? 0) + 1)
    const chosen = new Map<DeviceKind, DeviceCredential[]>()
    // Devices to (re)provision: the credential entry is filled in once the secret exists.
    const toCreate: Array<{ entry: DeviceCredential; patientNo: number }> = []

    for (const [kind, count] of need) {
      const list: DeviceCredential[] = []
      const fromFile = known.filter((d) => d.kind === kind).sort((a, b) => a.deviceId.localeCompare(b.deviceId))
      for (const entry of fromFile) {
        if (list.length === count) break
        const row = await registry.findDeviceRow(entry.deviceId)
        if (!row) {
          // The database was reset since the file was written: same id, new secret, seq continues.
          toCreate.push({ entry, patientNo: numberOf(entry.deviceId) })
          list.push(entry)
        } else if (row.status !== 'active') {
          notes.push(`${entry.deviceId} is disabled in the gateway; using another device`)
        } else if (row.kind !== kind) {
          notes.push(`${entry.deviceId} is a ${row.kind} in the gateway, not a ${kind}; using another device`)
        } else {
          list.push(entry)
        }
      }
      for (let n = 1; list.length < count; n++) {
        const id = simDeviceId(kind, n)
        if (byId.has(id) || (await registry.findDeviceRow(id))) continue
        const entry: DeviceCredential = { deviceId: id, secret: '', kind, patientId: simPatientId(n), nextSeq: 1 }
        toCreate.push({ entry, patientNo: n })
        list.push(entry)
        byId.set(id, entry)
        known.push(entry)
      }
      chosen.set(kind, list)
    }

    // Patients first, one at a time (several devices share one); then the devices, whose scrypt
    // hashing runs on the thread pool a few at a time.
    for (const { entry, patientNo } of toCreate) {
      const patientId = entry.patientId ?? simPatientId(patientNo)
      entry.patientId = patientId
      const exists = await store.db.selectFrom('patients').select('id').where('id', '=', patientId).executeTakeFirst()
      if (!exists) {
        await registry.addPatient({ id: patientId, name: `Simulated patient ${patientId.slice(-4)}`, timezone: 'UTC' })
        audit.record({ actorType: 'operator', actorId: operator, action: 'patient.add', target: patientId, outcome: 'allowed', details: { via: 'simulator' } })
      }
    }
    let done = 0
    const queue = [...toCreate]
    const worker = async () => {
      for (let job = queue.shift(); job; job = queue.shift()) {
        const { entry } = job
        const device = await registry.addDevice({ patientId: entry.patientId!, id: entry.deviceId, kind: entry.kind })
        audit.record({ actorType: 'operator', actorId: operator, action: 'device.add', target: device.id, outcome: 'allowed', details: { via: 'simulator' } })
        entry.secret = device.secret
        created++
        onProgress(++done, toCreate.length)
      }
    }
    try {
      await Promise.all(Array.from({ length: Math.min(4, toCreate.length) }, worker))
    } finally {
      // Whatever was provisioned is kept, even when a later device failed: its secret exists only here.
      if (created > 0) writeSimulatorFile(dataDir, known.filter((d) => d.secret))
    }

    const cursor = new Map<DeviceKind, number>()
    const devices = kinds.map((k) => {
      const i = cursor.get(k) ?? 0
      cursor.set(k, i + 1)
      return chosen.get(k)![i]!
    })
    return { devices, known: known.filter((d) => d.secret), created, notes }
  } finally {
    await store.close()
  }
}

function numberOf(deviceId: string): number {
  const m = /-(\d+)$/.exec(deviceId)
  return m ? Number(m[1]) : 1
}
