import { randomBytes } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { Clock } from '../clock.ts'
import type { GatewayConfig } from '../config/load.ts'
import { RpmError } from '../errors.ts'
import type { Database } from '../store/db.ts'
import type { Principal } from './auth.ts'

/** How a caller came to see a patient's clinical record. */
export type AccessBasis = 'self' | 'care_team' | 'break_glass' | 'escalation'

/**
 * Who may see which patient. A patient sees their own record; a provider the patients on their
 * care teams; an admin manages accounts and sees clinical data only through a break-glass grant
 * that carries a reason and expires on its own. An alert escalated to an on-call provider or an
 * admin lets them see that patient until the alert is resolved (to follow it up after
 * acknowledging it); it does not let them change the patient's thresholds.
 */
export class AccessPolicy {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly config: GatewayConfig['auth'],
    private readonly clock: Clock,
  ) {}

  /** The basis on which `p` may read this patient's clinical data, or null. */
  async clinical(p: Principal, patientId: string): Promise<AccessBasis | null> {
    switch (p.role) {
      case 'patient':
        return p.patientId === patientId ? 'self' : null
      case 'provider': {
        const member = await this.db
          .selectFrom('care_team')
          .select('patient_id')
          .where('patient_id', '=', patientId)
          .where('user_id', '=', p.userId)
          .executeTakeFirst()
        if (member) return 'care_team'
        return (await this.#escalated(p.userId, patientId)) ? 'escalation' : null
      }
      case 'admin': {
        const grant = await this.db
          .selectFrom('break_glass')
          .select('id')
          .where('user_id', '=', p.userId)
          .where('patient_id', '=', patientId)
          .where('expires_at', '>', new Date(this.clock.now()).toISOString())
          .executeTakeFirst()
        if (grant) return 'break_glass'
        return (await this.#escalated(p.userId, patientId)) ? 'escalation' : null
      }
    }
  }

  /** Whether an unresolved alert for this patient has been escalated to this user. */
  async #escalated(userId: string, patientId: string): Promise<boolean> {
    const row = await this.db
      .selectFrom('alert_recipients as r')
      .innerJoin('alerts as a', 'a.id', 'r.alert_id')
      .select('r.alert_id')
      .where('r.user_id', '=', userId)
      .where('r.patient_id', '=', patientId)
      .where('a.status', '<>', 'resolved')
      .executeTakeFirst()
    return row !== undefined
  }

  /** Patient ids whose demographics `p` may list: own, care team, or all for an admin. */
  async listable(p: Principal): Promise<string[] | 'all'> {
    if (p.role === 'admin') return 'all'
    if (p.role === 'patient') return p.patientId ? [p.patientId] : []
    const rows = await this.db.selectFrom('care_team').select('patient_id').where('user_id', '=', p.userId).execute()
    return rows.map((r) => r.patient_id)
  }

  /** Emergency access for an admin to one patient's clinical record, for a limited time. */
  async breakGlass(p: Principal, patientId: string, reason: string, minutes: number): Promise<{ id: string; patientId: string; expiresAt: string }> {
    if (p.role !== 'admin') throw new RpmError('RPM_ERR_FORBIDDEN', 'only admins use break-glass access; providers join the care team')
    if (reason.trim().length < 10) {
      throw new RpmError('RPM_ERR_BAD_REQUEST', 'reason must say why access is needed (at least 10 characters)', { details: { field: 'reason' } })
    }
    if (!Number.isInteger(minutes) || minutes < 1 || minutes > this.config.breakGlassMaxMinutes) {
      throw new RpmError('RPM_ERR_BAD_REQUEST', `minutes must be from 1 to ${this.config.breakGlassMaxMinutes}`, { details: { field: 'minutes' } })
    }
    const patient = await this.db.selectFrom('patients').select('id').where('id', '=', patientId).executeTakeFirst()
    if (!patient) throw new RpmError('RPM_ERR_NOT_FOUND', `no patient ${patientId}`, { details: { field: 'patientId' } })
    const now = this.clock.now()
    const grant = {
      id: `bg-${randomBytes(6).toString('hex')}`,
      user_id: p.userId,
      patient_id: patientId,
      reason: reason.trim(),
      granted_at: new Date(now).toISOString(),
      expires_at: new Date(now + minutes * 60_000).toISOString(),
    }
    await this.db.insertInto('break_glass').values(grant).execute()
    return { id: grant.id, patientId, expiresAt: grant.expires_at }
  }
}
