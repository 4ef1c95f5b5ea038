import { randomBytes } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { Clock } from '../clock.ts'
import { RpmError } from '../errors.ts'
import type { Database } from '../store/db.ts'
import type { DeviceKind, DeviceTable, PatientTable } from '../store/schema.ts'
import { generateSecret, hashSecret } from '../crypto/secrets.ts'

export const DEVICE_KINDS: readonly DeviceKind[] = ['bp_cuff', 'glucometer', 'oximeter', 'scale', 'thermometer', 'hub']

/** Ids appear in MQTT topics: no '/', '+', '#' or spaces. */
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/

export interface Patient {
  id: string
  name: string
  timezone: string
  createdAt: string
}

export interface Device {
  id: string
  patientId: string
  kind: DeviceKind
  status: 'active' | 'disabled'
  online: boolean
  lastSeenAt: string | null
  lastConnectedAt: string | null
  createdAt: string
  disabledAt: string | null
}

function newId(prefix: string): string {
  return `${prefix}-${randomBytes(6).toString('hex')}`
}

function checkId(id: string, field: string): void {
  if (!ID_PATTERN.test(id)) {
    throw new RpmError('RPM_ERR_BAD_REQUEST', `${field} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`, {
      details: { field },
    })
  }
}

export function toPatient(row: PatientTable): Patient {
  return { id: row.id, name: row.name, timezone: row.timezone, createdAt: row.created_at }
}

export function toDevice(row: DeviceTable): Device {
  return {
    id: row.id,
    patientId: row.patient_id,
    kind: row.kind,
    status: row.status,
    online: row.online === 1,
    lastSeenAt: row.last_seen_at,
    lastConnectedAt: row.last_connected_at,
    createdAt: row.created_at,
    disabledAt: row.disabled_at,
  }
}

/** Patients and devices: provisioning and lookup. */
export class Registry {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
  ) {}

  async addPatient(input: { name: string; id?: string; timezone?: string }): Promise<Patient> {
    const name = input.name?.trim()
    if (!name) throw new RpmError('RPM_ERR_BAD_REQUEST', 'name is required', { details: { field: 'name' } })
    const id = input.id ?? newId('pat')
    checkId(id, 'id')
    const timezone = input.timezone ?? Intl.DateTimeFormat().resolvedOptions().timeZone
    try {
      new Intl.DateTimeFormat('en', { timeZone: timezone })
    } catch {
      throw new RpmError('RPM_ERR_BAD_REQUEST', 'timezone must be an IANA time zone such as America/Chicago', {
        details: { field: 'timezone' },
      })
    }
    const row: PatientTable = { id, name, timezone, created_at: new Date(this.clock.now()).toISOString() }
    if (await this.db.selectFrom('patients').select('id').where('id', '=', id).executeTakeFirst()) {
      throw new RpmError('RPM_ERR_CONFLICT', `patient ${id} already exists`, { details: { field: 'id' } })
    }
    await this.db.insertInto('patients').values(row).execute()
    return toPatient(row)
  }

  async getPatient(id: string): Promise<Patient> {
    const row = await this.db.selectFrom('patients').selectAll().where('id', '=', id).executeTakeFirst()
    if (!row) throw new RpmError('RPM_ERR_NOT_FOUND', `no patient ${id}`, { details: { field: 'patient' } })
    return toPatient(row)
  }

  /** Provisions a device for a patient; the secret is returned once and only its hash is kept. */
  async addDevice(input: { patientId: string; id?: string; kind?: DeviceKind }): Promise<Device & { secret: string }> {
    const kind = input.kind ?? 'bp_cuff'
    if (!DEVICE_KINDS.includes(kind)) {
      throw new RpmError('RPM_ERR_BAD_REQUEST', `kind must be one of ${DEVICE_KINDS.join(', ')}`, { details: { field: 'kind' } })
    }
    await this.getPatient(input.patientId)
    const id = input.id ?? newId('dev')
    checkId(id, 'id')
    if (await this.db.selectFrom('devices').select('id').where('id', '=', id).executeTakeFirst()) {
      throw new RpmError('RPM_ERR_CONFLICT', `device ${id} already exists`, { details: { field: 'id' } })
    }
    const secret = generateSecret()
    const row: DeviceTable = {
      id,
      patient_id: input.patientId,
      kind,
      secret_hash: await hashSecret(secret),
      status: 'active',
      created_at: new Date(this.clock.now()).toISOString(),
      disabled_at: null,
      online: 0,
      last_seen_at: null,
      last_connected_at: null,
    }
    await this.db.insertInto('devices').values(row).execute()
    return { ...toDevice(row), secret }
  }

  async getDevice(id: string): Promise<Device> {
    const row = await this.findDeviceRow(id)
    if (!row) throw new RpmError('RPM_ERR_NOT_FOUND', `no device ${id}`, { details: { field: 'device' } })
    return toDevice(row)
  }

  async findDeviceRow(id: string): Promise<DeviceTable | undefined> {
    return this.db.selectFrom('devices').selectAll().where('id', '=', id).executeTakeFirst()
  }

  async disableDevice(id: string): Promise<Device> {
    await this.getDevice(id)
    await this.db
      .updateTable('devices')
      .set({ status: 'disabled', disabled_at: new Date(this.clock.now()).toISOString() })
      .where('id', '=', id)
      .execute()
    return this.getDevice(id)
  }

  async listDevices(patientId?: string): Promise<Device[]> {
    let q = this.db.selectFrom('devices').selectAll().orderBy('id')
    if (patientId) q = q.where('patient_id', '=', patientId)
    return (await q.execute()).map(toDevice)
  }
}
