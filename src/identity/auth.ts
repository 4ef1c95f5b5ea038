import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { SignJWT, jwtVerify } from 'jose'
import type { Kysely } from 'kysely'
import type { AuditLog } from '../audit/audit.ts'
import type { Clock } from '../clock.ts'
import type { GatewayConfig } from '../config/load.ts'
import { generateSecret, hashPassword, verifySecret } from '../crypto/secrets.ts'
import { RpmError } from '../errors.ts'
import type { EventBus } from '../events.ts'
import type { Database } from '../store/db.ts'
import type { Role } from '../store/schema.ts'
import { type User, toUser } from './users.ts'

/** Who is calling, as established from a valid access token and a live session. */
export interface Principal {
  userId: string
  username: string
  role: Role
  patientId: string | null
  sessionId: string
}

export interface TokenPair {
  accessToken: string
  refreshToken: string
  /** Seconds until the access token expires. */
  expiresIn: number
  tokenType: 'Bearer'
}

const ISSUER = 'rpm-gateway'
const iso = (ms: number) => new Date(ms).toISOString()
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')

/** Loads the token signing key, generating it into the data directory on first use. */
export function loadTokenKey(config: GatewayConfig['auth'], dataDir: string): Uint8Array {
  const file = config.tokenKeyFile || path.join(dataDir, 'keys', 'token-signing.key')
  if (!existsSync(file)) {
    if (config.tokenKeyFile) throw new RpmError('RPM_ERR_CONFIG_INVALID', `invalid configuration: auth.tokenKeyFile: ${file} does not exist`)
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 })
    writeFileSync(file, randomBytes(32).toString('base64') + '\n', { mode: 0o600 })
  }
  const key = Buffer.from(readFileSync(file, 'utf8').trim(), 'base64')
  if (key.length < 32) throw new RpmError('RPM_ERR_CONFIG_INVALID', `invalid configuration: auth.tokenKeyFile: ${file} must hold at least 32 bytes, base64`)
  return new Uint8Array(key)
}

/**
 * Sign-in, short-lived access tokens, rotating refresh tokens, sign-out and automatic logoff.
 * A session is one sign-in; its refresh tokens form a family: each works once, and presenting
 * a used one again (a stolen copy, most likely) ends the whole session.
 */
export class Auth {
  readonly #decoy: Promise<string>

  constructor(
    private readonly db: Kysely<Database>,
    private readonly config: GatewayConfig['auth'],
    private readonly key: Uint8Array,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    private readonly bus?: EventBus,
  ) {
    this.#decoy = hashPassword(generateSecret())
  }

  async login(username: string, password: string, address: string): Promise<TokenPair & { user: User }> {
    const now = this.clock.now()
    const row = await this.db.selectFrom('users').selectAll().where('username', '=', username).executeTakeFirst()
    const denied = (code: 'RPM_ERR_BAD_CREDENTIALS' | 'RPM_ERR_ACCOUNT_LOCKED') => {
      this.audit.record({ actorType: row ? 'user' : 'anonymous', actorId: row?.id ?? 'unknown', action: 'auth.login', outcome: 'denied', address, details: { code } })
      return new RpmError(code)
    }
    if (row?.locked_until && Date.parse(row.locked_until) > now) throw denied('RPM_ERR_ACCOUNT_LOCKED')
    // The same scrypt work whether or not the user exists: usernames cannot be probed by timing.
    const matches = await verifySecret(password, row?.password_hash ?? (await this.#decoy))
    if (!row || !matches || row.status !== 'active') {
      if (row) await this.#failed(row.id, now)
      throw denied('RPM_ERR_BAD_CREDENTIALS')
    }
    // Guesses sent in parallel all pass the check above before any of them fails: the lock they
    // set while this one was hashing still holds, so clear the count only on an unlocked account.
    const cleared = await this.db
      .updateTable('users')
      .set({ failed_logins: 0, locked_until: null })
      .where('id', '=', row.id)
      .where((eb) => eb.or([eb('locked_until', 'is', null), eb('locked_until', '<=', iso(now))]))
      .executeTakeFirst()
    if (Number(cleared.numUpdatedRows) !== 1) throw denied('RPM_ERR_ACCOUNT_LOCKED')
    const sessionId = `ses-${randomBytes(12).toString('hex')}`
    await this.db
      .insertInto('sessions')
      .values({
        id: sessionId,
        user_id: row.id,
        created_at: iso(now),
        last_active_at: iso(now),
        expires_at: iso(now + this.config.sessionTtlSeconds * 1000),
        revoked_at: null,
        revoked_reason: null,
        address,
      })
      .execute()
    this.audit.record({ actorType: 'user', actorId: row.id, action: 'auth.login', outcome: 'allowed', address, details: { sessionId } })
    const user = toUser(row)
    return { ...(await this.#issue(user, sessionId)), user }
  }

  /**
   * Counts a failed sign-in and locks the account at auth.maxFailedLogins. The count is
   * incremented in the database, not from the row read before hashing: parallel guesses would
   * otherwise each write the same count and never reach the limit.
   */
  async #failed(userId: string, now: number): Promise<void> {
    const counted = await this.db
      .updateTable('users')
      .set((eb) => ({ failed_logins: eb('failed_logins', '+', 1) }))
      .where('id', '=', userId)
      .returning('failed_logins')
      .executeTakeFirst()
    if (!counted || counted.failed_logins < this.config.maxFailedLogins) return
    await this.db
      .updateTable('users')
      .set({ failed_logins: 0, locked_until: iso(now + this.config.lockoutSeconds * 1000) })
      .where('id', '=', userId)
      .execute()
  }

  async refresh(refreshToken: string, address: string): Promise<TokenPair> {
    const now = this.clock.now()
    const hash = sha256(refreshToken)
    const token = await this.db.selectFrom('refresh_tokens').selectAll().where('token_hash', '=', hash).executeTakeFirst()
    if (!token) {
      this.audit.record({ actorType: 'anonymous', actorId: 'unknown', action: 'auth.refresh', outcome: 'denied', address, details: { code: 'RPM_ERR_SESSION_ENDED' } })
      throw new RpmError('RPM_ERR_SESSION_ENDED')
    }
    const session = await this.db.selectFrom('sessions').selectAll().where('id', '=', token.session_id).executeTakeFirstOrThrow()
    // Used once already: whoever holds this copy is not the only holder. End the whole session.
    const claimed = await this.db.updateTable('refresh_tokens').set({ used_at: iso(now) }).where('token_hash', '=', hash).where('used_at', 'is', null).executeTakeFirst()
    if (Number(claimed.numUpdatedRows) !== 1) {
      await this.revoke(session.id, 'refresh token reused')
      this.audit.record({ actorType: 'user', actorId: session.user_id, action: 'auth.refresh', outcome: 'denied', address, details: { code: 'RPM_ERR_SESSION_ENDED', reason: 'refresh token reused', sessionId: session.id } })
      throw new RpmError('RPM_ERR_SESSION_ENDED', 'this refresh token was already used: the session has ended, sign in again')
    }
    const ended = this.#ended(session, now)
    if (ended) {
      this.audit.record({ actorType: 'user', actorId: session.user_id, action: 'auth.refresh', outcome: 'denied', address, details: { code: 'RPM_ERR_SESSION_ENDED', reason: ended } })
      throw new RpmError('RPM_ERR_SESSION_ENDED', `the session has ended (${ended}): sign in again`)
    }
    const user = await this.db.selectFrom('users').selectAll().where('id', '=', session.user_id).executeTakeFirstOrThrow()
    if (user.status !== 'active') {
      this.audit.record({ actorType: 'user', actorId: user.id, action: 'auth.refresh', outcome: 'denied', address, details: { code: 'RPM_ERR_SESSION_ENDED', reason: 'account disabled' } })
      throw new RpmError('RPM_ERR_SESSION_ENDED', 'the account is disabled')
    }
    // A refresh is not activity: an app that refreshes on a timer in the background must not keep
    // an unattended session from logging off. Only requests made with the access token count.
    this.audit.record({ actorType: 'user', actorId: user.id, action: 'auth.refresh', outcome: 'allowed', address, details: { sessionId: session.id } })
    return this.#issue(toUser(user), session.id)
  }

  async logout(principal: Principal, address: string): Promise<void> {
    await this.revoke(principal.sessionId, 'signed out')
    this.audit.record({ actorType: 'user', actorId: principal.userId, action: 'auth.logout', outcome: 'allowed', address, details: { sessionId: principal.sessionId } })
  }

  async revoke(sessionId: string, reason: string): Promise<void> {
    const result = await this.db
      .updateTable('sessions')
      .set({ revoked_at: iso(this.clock.now()), revoked_reason: reason })
      .where('id', '=', sessionId)
      .where('revoked_at', 'is', null)
      .executeTakeFirst()
    if (Number(result.numUpdatedRows) > 0) this.bus?.emit('session.ended', { sessionId, reason })
  }

  /**
   * Checks an access token and its session (not revoked, not expired, not idle) and records the
   * activity (unless `activity: false`: a socket signing in or presenting a refreshed token is
   * not the user doing something). Throws RPM_ERR_UNAUTHENTICATED for anything else.
   */
  async authenticate(accessToken: string, options: { activity?: boolean } = {}): Promise<Principal & { expiresAt: number }> {
    const now = this.clock.now()
    let claims: { sub?: string; sid?: unknown; exp?: number }
    try {
      ;({ payload: claims } = await jwtVerify(accessToken, this.key, { issuer: ISSUER, algorithms: ['HS256'], currentDate: new Date(now) }))
    } catch {
      throw new RpmError('RPM_ERR_UNAUTHENTICATED')
    }
    if (!claims.sub || typeof claims.sid !== 'string') throw new RpmError('RPM_ERR_UNAUTHENTICATED')
    const row = await this.db
      .selectFrom('sessions')
      .innerJoin('users', 'users.id', 'sessions.user_id')
      .select(['sessions.id as sid', 'sessions.last_active_at', 'sessions.expires_at', 'sessions.revoked_at', 'users.id', 'users.username', 'users.role', 'users.patient_id', 'users.status'])
      .where('sessions.id', '=', claims.sid)
      .executeTakeFirst()
    if (!row || row.id !== claims.sub || row.status !== 'active') throw new RpmError('RPM_ERR_UNAUTHENTICATED')
    const ended = this.#ended(row, now)
    if (ended) throw new RpmError('RPM_ERR_UNAUTHENTICATED', `the session has ended (${ended}): sign in again`)
    // Record activity for the idle timeout, at most every 30 s per session.
    if (options.activity !== false && now - Date.parse(row.last_active_at) > 30_000) {
      await this.db.updateTable('sessions').set({ last_active_at: iso(now) }).where('id', '=', row.sid).execute()
    }
    return { userId: row.id, username: row.username, role: row.role, patientId: row.patient_id, sessionId: row.sid, expiresAt: (claims.exp ?? 0) * 1000 }
  }

  /**
   * Why this session no longer lets its tokens work (revoked, expired, idle, account disabled),
   * or null while it is live. Unlike `authenticate` it records no activity: a long-lived
   * connection checking on its session must not keep it from going idle.
   */
  async sessionEnded(sessionId: string): Promise<string | null> {
    const row = await this.db
      .selectFrom('sessions')
      .innerJoin('users', 'users.id', 'sessions.user_id')
      .select(['sessions.last_active_at', 'sessions.expires_at', 'sessions.revoked_at', 'users.status'])
      .where('sessions.id', '=', sessionId)
      .executeTakeFirst()
    if (!row) return 'unknown session'
    if (row.status !== 'active') return 'account disabled'
    return this.#ended(row, this.clock.now())
  }

  #ended(session: { revoked_at: string | null; expires_at: string; last_active_at: string }, now: number): string | null {
    if (session.revoked_at) return 'signed out or revoked'
    if (Date.parse(session.expires_at) <= now) return 'expired'
    if (now - Date.parse(session.last_active_at) > this.config.idleTimeoutSeconds * 1000) return 'idle too long'
    return null
  }

  async #issue(user: User, sessionId: string): Promise<TokenPair> {
    const now = this.clock.now()
    const accessToken = await new SignJWT({ sid: sessionId, role: user.role })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuer(ISSUER)
      .setSubject(user.id)
      .setIssuedAt(Math.floor(now / 1000))
      .setExpirationTime(Math.floor(now / 1000) + this.config.accessTokenTtlSeconds)
      .sign(this.key)
    const refreshToken = randomBytes(32).toString('base64url')
    await this.db.insertInto('refresh_tokens').values({ token_hash: sha256(refreshToken), session_id: sessionId, issued_at: iso(now), used_at: null }).execute()
    return { accessToken, refreshToken, expiresIn: this.config.accessTokenTtlSeconds, tokenType: 'Bearer' }
  }
}
