import { randomBytes } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { Clock } from '../clock.ts'
import { hashPassword } from '../crypto/secrets.ts'
import { RpmError } from '../errors.ts'
import type { Database } from '../store/db.ts'
import type { Role, UserTable } from '../store/schema.ts'

export const ROLES: readonly Role[] = ['patient', 'provider', 'admin']
const USERNAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{2,63}$/
export const MIN_PASSWORD_LENGTH = 12

export interface User {
  id: string
  username: string
  role: Role
  name: string
  patientId: string | null
  status: 'active' | 'disabled'
  createdAt: string
}

export function toUser(row: UserTable): User {
  return { id: row.id, username: row.username, role: row.role, name: row.name, patientId: row.patient_id, status: row.status, createdAt: row.created_at }
}

const bad = (field: string, message: string) => new RpmError('RPM_ERR_BAD_REQUEST', message, { details: { field } })

/** People who sign in: patients, providers, admins; and care teams. */
export class Users {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
  ) {}

  async add(input: { username: string; password: string; role: Role; name?: string; patientId?: string }): Promise<User> {
    if (!USERNAME.test(input.username ?? '')) throw bad('username', 'username must be 3-64 letters, digits, ".", "_", "@" or "-"')
    if (!ROLES.includes(input.role)) throw bad('role', `role must be one of ${ROLES.join(', ')}`)
    if (typeof input.password !== 'string' || input.password.length < MIN_PASSWORD_LENGTH) {
      throw bad('password', `password must be at least ${MIN_PASSWORD_LENGTH} characters`)
    }
    if (input.role === 'patient') {
      if (!input.patientId) throw bad('patientId', 'a patient user must be linked to a patient record (patientId)')
      const patient = await this.db.selectFrom('patients').select(['id', 'name']).where('id', '=', input.patientId).executeTakeFirst()
      if (!patient) throw new RpmError('RPM_ERR_NOT_FOUND', `no patient ${input.patientId}`, { details: { field: 'patientId' } })
      input.name ??= patient.name
    } else if (input.patientId) {
      throw bad('patientId', 'only patient users are linked to a patient record')
    }
    const taken = () => new RpmError('RPM_ERR_CONFLICT', `username ${input.username} is taken`, { details: { field: 'username' } })
    if (await this.db.selectFrom('users').select('id').where('username', '=', input.username).executeTakeFirst()) throw taken()
    const row: UserTable = {
      id: `usr-${randomBytes(6).toString('hex')}`,
      username: input.username,
      role: input.role,
      name: input.name?.trim() || input.username,
      patient_id: input.patientId ?? null,
      password_hash: await hashPassword(input.password),
      status: 'active',
      failed_logins: 0,
      locked_until: null,
      created_at: new Date(this.clock.now()).toISOString(),
    }
    try {
      await this.db.insertInto('users').values(row).execute()
    } catch (err) {
      // Another add of the same username finished while this one was hashing the password.
      if ((err as { code?: unknown }).code === 'SQLITE_CONSTRAINT_UNIQUE') throw taken()
      throw err
    }
    return toUser(row)
  }

  async get(id: string): Promise<User> {
    const row = await this.db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst()
    if (!row) throw new RpmError('RPM_ERR_NOT_FOUND', `no user ${id}`, { details: { field: 'user' } })
    return toUser(row)
  }

  async byUsername(username: string): Promise<User> {
    const row = await this.db.selectFrom('users').selectAll().where('username', '=', username).executeTakeFirst()
    if (!row) throw new RpmError('RPM_ERR_NOT_FOUND', `no user ${username}`, { details: { field: 'username' } })
    return toUser(row)
  }

  async list(): Promise<User[]> {
    return (await this.db.selectFrom('users').selectAll().orderBy('username').execute()).map(toUser)
  }

  /** Puts a provider on a patient's care team (idempotent). */
  async addToCareTeam(patientId: string, provider: string): Promise<{ patientId: string; userId: string; username: string }> {
    const patient = await this.db.selectFrom('patients').select('id').where('id', '=', patientId).executeTakeFirst()
    if (!patient) throw new RpmError('RPM_ERR_NOT_FOUND', `no patient ${patientId}`, { details: { field: 'patientId' } })
    const user = provider.startsWith('usr-') ? await this.get(provider) : await this.byUsername(provider)
    if (user.role !== 'provider') throw bad('provider', `${user.username} is not a provider`)
    await this.db
      .insertInto('care_team')
      .values({ patient_id: patientId, user_id: user.id, added_at: new Date(this.clock.now()).toISOString() })
      .onConflict((oc) => oc.columns(['patient_id', 'user_id']).doNothing())
      .execute()
    return { patientId, userId: user.id, username: user.username }
  }

  async careTeam(patientId: string): Promise<User[]> {
    const rows = await this.db
      .selectFrom('care_team')
      .innerJoin('users', 'users.id', 'care_team.user_id')
      .selectAll('users')
      .where('care_team.patient_id', '=', patientId)
      .orderBy('users.username')
      .execute()
    return rows.map(toUser)
  }
}
