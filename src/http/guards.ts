import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { AuditLog } from '../audit/audit.ts'
import { RpmError, isRpmError } from '../errors.ts'
import type { AccessBasis, AccessPolicy } from '../identity/access.ts'
import type { Auth, Principal } from '../identity/auth.ts'
import type { Role } from '../store/schema.ts'

export interface GuardDeps {
  auth: Auth
  access: AccessPolicy
  audit: AuditLog
}

export interface Guards {
  /** Writes one audit entry for this request (reads, writes and refusals alike). */
  record(req: FastifyRequest, action: string, outcome: 'allowed' | 'denied', target?: string, details?: Record<string, unknown>): void
  /** onRequest hook: a valid access token on a live session (and one of `roles`), checked before the body is read. */
  signedIn(...roles: Role[]): (req: FastifyRequest) => Promise<void>
  /** The basis on which the caller may see this patient's clinical record, or a 404 (audited). */
  clinical(req: FastifyRequest, patientId: string, action: string, refusal: { target: string; error: RpmError }): Promise<AccessBasis>
  /** Adds an onError hook to the plugin: failed writes by signed-in callers are audited. */
  auditFailures(app: FastifyInstance): void
  /** Runs a domain step; a refusal it raises (a 4xx) is audited, with the field it names, before it is answered. */
  audited<T>(req: FastifyRequest, action: string, target: string, step: () => T): T
}

/** Route guards for a plugin: sign-in, role, clinical access, and the audit entry for each. */
export function makeGuards(deps: GuardDeps): Guards {
  const { auth, access, audit } = deps

  const record: Guards['record'] = (req, action, outcome, target, details) => {
    req.audited = true
    const p = req.principal
    audit.record({
      actorType: p ? 'user' : 'anonymous',
      actorId: p?.userId ?? 'unknown',
      action,
      outcome,
      address: req.ip,
      ...(target ? { target } : {}),
      ...(details ? { details } : {}),
    })
  }

  // Runs before the body is read or validated, so a caller without the right to use a route
  // learns nothing about its input, and every such attempt is audited (with the patient in the URL).
  const signedIn: Guards['signedIn'] = (...roles) => async (req) => {
    const header = req.headers.authorization
    const token = header?.startsWith('Bearer ') ? header.slice(7).trim() : undefined
    const action = `${req.method} ${req.routeOptions.url}`
    const target = (req.params as { patientId?: string } | undefined)?.patientId
    let principal: Principal
    try {
      if (!token) throw new RpmError('RPM_ERR_UNAUTHENTICATED')
      principal = await auth.authenticate(token)
    } catch (err) {
      record(req, action, 'denied', target, { code: isRpmError(err) ? err.code : 'RPM_ERR_UNAUTHENTICATED' })
      throw err
    }
    req.principal = principal
    if (roles.length > 0 && !roles.includes(principal.role)) {
      record(req, action, 'denied', target, { code: 'RPM_ERR_FORBIDDEN' })
      throw new RpmError('RPM_ERR_FORBIDDEN', `this needs the ${roles.join(' or ')} role`)
    }
  }

  // A signed-in request that changes something and fails on the way (an unknown patient, a
  // conflict) is a refusal too: record it when the route did not.
  const auditFailures: Guards['auditFailures'] = (app) => {
    app.addHook('onError', async (req, _reply, err) => {
      if (req.audited || !req.principal || req.method === 'GET') return
      const target = (req.params as { patientId?: string; threadId?: string; deviceId?: string } | undefined)
      record(req, `${req.method} ${req.routeOptions.url}`, 'denied', target?.patientId ?? target?.threadId ?? target?.deviceId, {
        code: isRpmError(err) ? err.code : 'RPM_ERR_INTERNAL',
      })
    })
  }

  const clinical: Guards['clinical'] = async (req, patientId, action, refusal) => {
    const basis = await access.clinical(req.principal!, patientId)
    if (!basis) {
      record(req, action, 'denied', refusal.target, { code: refusal.error.code })
      throw refusal.error
    }
    return basis
  }

  const audited: Guards['audited'] = (req, action, target, step) => {
    try {
      return step()
    } catch (err) {
      if (isRpmError(err) && err.status < 500) {
        const field = (err.details as { field?: unknown } | undefined)?.field
        record(req, action, 'denied', target, { code: err.code, ...(field !== undefined ? { field } : {}) })
      }
      throw err
    }
  }

  return { record, signedIn, clinical, auditFailures, audited }
}
