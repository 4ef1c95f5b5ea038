import type { Clock } from '../clock.ts'
import { RpmError } from '../errors.ts'
import type { Store } from '../store/db.ts'

/** Adds an on-call shift for a provider (used by the API and the CLI). */
export async function addOnCall(store: Store, clock: Clock, input: { username: string; startsAt?: string; endsAt: string }, createdBy: string) {
  const user = await store.db.selectFrom('users').select(['id', 'role', 'status']).where('username', '=', input.username).executeTakeFirst()
  if (!user) throw new RpmError('RPM_ERR_NOT_FOUND', `no user ${input.username}`, { details: { field: 'username' } })
  if (user.role !== 'provider' || user.status !== 'active') throw new RpmError('RPM_ERR_BAD_REQUEST', 'only an active provider can be on call', { details: { field: 'username' } })
  const starts = input.startsAt ? Date.parse(input.startsAt) : clock.now()
  const ends = Date.parse(input.endsAt)
  if (Number.isNaN(starts)) throw new RpmError('RPM_ERR_BAD_REQUEST', 'startsAt must be an ISO-8601 time', { details: { field: 'startsAt' } })
  if (Number.isNaN(ends) || ends <= starts) throw new RpmError('RPM_ERR_BAD_REQUEST', 'endsAt must be an ISO-8601 time after startsAt', { details: { field: 'endsAt' } })
  const row = await store.db
    .insertInto('on_call')
    .values({ user_id: user.id, starts_at: new Date(starts).toISOString(), ends_at: new Date(ends).toISOString(), created_by: createdBy, created_at: new Date(clock.now()).toISOString() })
    .returning('id')
    .executeTakeFirstOrThrow()
  return { id: row.id as unknown as number, userId: user.id, username: input.username, startsAt: new Date(starts).toISOString(), endsAt: new Date(ends).toISOString() }
}
