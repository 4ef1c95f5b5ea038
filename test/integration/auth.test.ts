import { randomBytes } from 'node:crypto'
import { rmSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { SignJWT, decodeJwt } from 'jose'
import { afterEach, describe, expect, it } from 'vitest'
import {
  api,
  auditOf,
  login,
  runProcess,
  startGateway,
  tempDir,
  TestClock,
  type TestGateway,
} from '../helpers.ts'

const BIN = fileURLToPath(new URL('../../bin/rpm-gateway.js', import.meta.url))
const PASSWORD = 'correct horse battery staple'

let t: TestGateway | undefined
let dirs: string[] = []

afterEach(async () => {
  await t?.stop()
  t = undefined
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  dirs = []
})

/** A gateway on a hand-moved clock with one provider account, `nurse.ada`. */
async function gatewayWithUser(settings: Record<string, unknown> = {}): Promise<{ t: TestGateway; clock: TestClock; userId: string }> {
  const clock = new TestClock()
  t = await startGateway(settings, undefined, { clock })
  const user = await t.gateway.users.add({ username: 'nurse.ada', password: PASSWORD, role: 'provider', name: 'Ada' })
  return { t, clock, userId: user.id }
}

const me = (t: TestGateway, token: string) => api(t, 'GET', '/api/v1/me', { token })
const refresh = (t: TestGateway, refreshToken: string) => api(t, 'POST', '/api/v1/auth/refresh', { body: { refreshToken } })
const attempt = (t: TestGateway, username: string, password: string) => api(t, 'POST', '/api/v1/auth/login', { body: { username, password } })

function sessionRow(t: TestGateway, sessionId: string): { revoked_at: string | null; revoked_reason: string | null } {
  return t.gateway.store.sqlite.prepare('SELECT revoked_at, revoked_reason FROM sessions WHERE id = ?').get(sessionId) as never
}

describe('sign-in', () => {
  it('returns an access token, a refresh token, their lifetime and the user; the token opens the API', async () => {
    const { t, userId } = await gatewayWithUser({ 'auth.accessTokenTtlSeconds': 600 })
    const res = await attempt(t, 'nurse.ada', PASSWORD)
    expect(res.status).toBe(200)
    expect(res.body).toEqual({
      accessToken: expect.any(String),
      refreshToken: expect.any(String),
      expiresIn: 600,
      tokenType: 'Bearer',
      user: { id: userId, username: 'nurse.ada', role: 'provider', name: 'Ada', patientId: null, status: 'active', createdAt: expect.any(String) },
    })
    // Nothing secret about the account travels back.
    expect(res.text).not.toContain('scrypt')
    expect(res.text).not.toContain(PASSWORD)
    expect(decodeJwt(res.body.accessToken)).toMatchObject({ sub: userId, iss: 'rpm-gateway' })

    const who = await me(t, res.body.accessToken)
    expect(who.status).toBe(200)
    expect(who.body).toMatchObject({ id: userId, username: 'nurse.ada' })
    expect(auditOf(t, 'auth.login')).toEqual([expect.objectContaining({ actor_id: userId, outcome: 'allowed', address: '127.0.0.1' })])
  })

  it('answers a wrong password and an unknown user alike (401 RPM_ERR_BAD_CREDENTIALS) and audits both', async () => {
    const { t, userId } = await gatewayWithUser()
    const wrong = await attempt(t, 'nurse.ada', 'not the password at all')
    const unknown = await attempt(t, 'nobody.here', PASSWORD)
    expect(wrong.status).toBe(401)
    expect(unknown.status).toBe(401)
    expect(wrong.body).toEqual({ code: 'RPM_ERR_BAD_CREDENTIALS', message: expect.any(String) })
    // The same answer, so the response does not tell which usernames exist.
    expect(unknown.body).toEqual(wrong.body)

    expect(auditOf(t, 'auth.login')).toEqual([
      expect.objectContaining({ actor_type: 'user', actor_id: userId, outcome: 'denied', address: '127.0.0.1' }),
      expect.objectContaining({ actor_type: 'anonymous', actor_id: 'unknown', outcome: 'denied', address: '127.0.0.1' }),
    ])
    expect(auditOf(t, 'auth.login').map((r) => JSON.parse(r.details_json!).code)).toEqual(['RPM_ERR_BAD_CREDENTIALS', 'RPM_ERR_BAD_CREDENTIALS'])
  })
})

describe('lockout', () => {
  it('locks the account after auth.maxFailedLogins failures, even for the right password, until auth.lockoutSeconds pass', async () => {
    const { t, clock, userId } = await gatewayWithUser({ 'auth.maxFailedLogins': 3, 'auth.lockoutSeconds': 600 })
    for (let i = 0; i < 3; i++) expect((await attempt(t, 'nurse.ada', `guess number ${i}`)).status).toBe(401)

    const locked = await attempt(t, 'nurse.ada', PASSWORD)
    expect(locked.status).toBe(423)
    expect(locked.body).toEqual({ code: 'RPM_ERR_ACCOUNT_LOCKED', message: expect.any(String) })
    expect(auditOf(t, 'auth.login').at(-1)).toMatchObject({ actor_id: userId, outcome: 'denied' })
    expect(JSON.parse(auditOf(t, 'auth.login').at(-1)!.details_json!)).toMatchObject({ code: 'RPM_ERR_ACCOUNT_LOCKED' })

    clock.advanceSeconds(599)
    expect((await attempt(t, 'nurse.ada', PASSWORD)).status).toBe(423)

    clock.advanceSeconds(2)
    const unlocked = await attempt(t, 'nurse.ada', PASSWORD)
    expect(unlocked.status).toBe(200)
    // A success starts the count again: two more failures do not lock.
    for (let i = 0; i < 2; i++) expect((await attempt(t, 'nurse.ada', `late guess ${i}`)).status).toBe(401)
    expect((await attempt(t, 'nurse.ada', PASSWORD)).status).toBe(200)
  })

  it('locks the account when the failures arrive all at once', async () => {
    const { t } = await gatewayWithUser({ 'auth.maxFailedLogins': 3, 'auth.lockoutSeconds': 600 })
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => attempt(t, 'nurse.ada', `parallel guess ${i}`)))
    for (const a of answers) expect([401, 423]).toContain(a.status)
    expect((await attempt(t, 'nurse.ada', PASSWORD)).status).toBe(423)
  })
})

describe('refresh tokens', () => {
  it('rotate: each works once; a reused one ends the whole session, including the tokens it was traded for', async () => {
    const { t, userId } = await gatewayWithUser()
    const first = await login(t, 'nurse.ada', PASSWORD)
    const sessionId = decodeJwt(first.accessToken).sid as string

    const rotated = await refresh(t, first.refreshToken)
    expect(rotated.status).toBe(200)
    expect(rotated.body).toEqual({ accessToken: expect.any(String), refreshToken: expect.any(String), expiresIn: first.expiresIn, tokenType: 'Bearer' })
    expect(rotated.body.refreshToken).not.toBe(first.refreshToken)
    expect((await me(t, rotated.body.accessToken)).status).toBe(200)

    // Someone presents the first refresh token again: a copy is loose.
    const reused = await refresh(t, first.refreshToken)
    expect(reused.status).toBe(401)
    expect(reused.body).toMatchObject({ code: 'RPM_ERR_SESSION_ENDED' })

    for (const token of [rotated.body.accessToken, first.accessToken]) {
      const res = await me(t, token)
      expect(res.status).toBe(401)
      expect(res.body).toMatchObject({ code: 'RPM_ERR_UNAUTHENTICATED' })
    }
    expect((await refresh(t, rotated.body.refreshToken)).body).toMatchObject({ code: 'RPM_ERR_SESSION_ENDED' })
    expect(sessionRow(t, sessionId)).toEqual({ revoked_at: expect.any(String), revoked_reason: 'refresh token reused' })

    const refreshes = auditOf(t, 'auth.refresh')
    expect(refreshes[0]).toMatchObject({ actor_id: userId, outcome: 'allowed', address: '127.0.0.1' })
    expect(refreshes[1]).toMatchObject({ actor_id: userId, outcome: 'denied', address: '127.0.0.1' })
    expect(JSON.parse(refreshes[1]!.details_json!)).toMatchObject({ code: 'RPM_ERR_SESSION_ENDED', reason: 'refresh token reused', sessionId })
  })

  it('refuses a refresh token the gateway never issued', async () => {
    const { t } = await gatewayWithUser()
    const res = await refresh(t, randomBytes(32).toString('base64url'))
    expect(res.status).toBe(401)
    expect(res.body).toMatchObject({ code: 'RPM_ERR_SESSION_ENDED' })
    expect(auditOf(t, 'auth.refresh')).toEqual([expect.objectContaining({ outcome: 'denied', address: '127.0.0.1' })])
  })
})

describe('sign-out', () => {
  it('answers 204, and the access and refresh tokens stop working at once; other sessions go on', async () => {
    const { t, userId } = await gatewayWithUser()
    const session = await login(t, 'nurse.ada', PASSWORD)
    const other = await login(t, 'nurse.ada', PASSWORD)

    const out = await api(t, 'POST', '/api/v1/auth/logout', { token: session.accessToken })
    expect(out.status).toBe(204)
    expect(out.text).toBe('')

    expect((await me(t, session.accessToken)).body).toMatchObject({ code: 'RPM_ERR_UNAUTHENTICATED' })
    expect((await refresh(t, session.refreshToken)).body).toMatchObject({ code: 'RPM_ERR_SESSION_ENDED' })
    expect((await api(t, 'POST', '/api/v1/auth/logout', { token: session.accessToken })).status).toBe(401)
    expect((await me(t, other.accessToken)).status).toBe(200)
    expect(auditOf(t, 'auth.logout')).toEqual([expect.objectContaining({ actor_id: userId, outcome: 'allowed', address: '127.0.0.1' })])
  })

  it('accepts a sign-out sent with a JSON content type and no body, as browsers and many clients send it', async () => {
    const { t } = await gatewayWithUser()
    const session = await login(t, 'nurse.ada', PASSWORD)
    const out = await api(t, 'POST', '/api/v1/auth/logout', { token: session.accessToken, contentType: 'application/json' })
    expect(out.status).toBe(204)
    expect((await me(t, session.accessToken)).status).toBe(401)
  })
})

describe('automatic logoff', () => {
  it('ends a session with no activity for auth.idleTimeoutSeconds: access and refresh are refused', async () => {
    const { t, clock } = await gatewayWithUser({ 'auth.idleTimeoutSeconds': 120, 'auth.accessTokenTtlSeconds': 3600 })
    const session = await login(t, 'nurse.ada', PASSWORD)
    clock.advanceSeconds(119)
    expect((await me(t, session.accessToken)).status).toBe(200)

    clock.advanceSeconds(121)
    const idle = await me(t, session.accessToken)
    expect(idle.status).toBe(401)
    expect(idle.body).toMatchObject({ code: 'RPM_ERR_UNAUTHENTICATED' })
    const refused = await refresh(t, session.refreshToken)
    expect(refused.status).toBe(401)
    expect(refused.body).toMatchObject({ code: 'RPM_ERR_SESSION_ENDED' })
  })

  it('keeps a session alive while it is used', async () => {
    const { t, clock } = await gatewayWithUser({ 'auth.idleTimeoutSeconds': 60, 'auth.accessTokenTtlSeconds': 3600 })
    const session = await login(t, 'nurse.ada', PASSWORD)
    // Five minutes of use with a request every 45 s: never 60 s idle.
    for (let i = 0; i < 7; i++) {
      clock.advanceSeconds(45)
      expect((await me(t, session.accessToken)).status).toBe(200)
    }
    clock.advanceSeconds(45)
    const rotated = await refresh(t, session.refreshToken)
    expect(rotated.status).toBe(200)
    clock.advanceSeconds(61)
    expect((await me(t, rotated.body.accessToken)).status).toBe(401)
  })

  it('does not count token refreshes as activity: an app refreshing in the background still logs off', async () => {
    const { t, clock } = await gatewayWithUser({ 'auth.idleTimeoutSeconds': 60, 'auth.accessTokenTtlSeconds': 3600 })
    const session = await login(t, 'nurse.ada', PASSWORD)
    clock.advanceSeconds(50)
    const rotated = await refresh(t, session.refreshToken)
    expect(rotated.status).toBe(200)
    clock.advanceSeconds(50) // 100 s since the last request, 50 s since the refresh
    expect((await me(t, rotated.body.accessToken)).status).toBe(401)
    expect((await refresh(t, rotated.body.refreshToken)).status).toBe(401)
  })

  it('ends a session after auth.sessionTtlSeconds however active it is', async () => {
    const { t, clock } = await gatewayWithUser({ 'auth.sessionTtlSeconds': 300, 'auth.idleTimeoutSeconds': 3600, 'auth.accessTokenTtlSeconds': 3600 })
    const session = await login(t, 'nurse.ada', PASSWORD)
    clock.advanceSeconds(200)
    expect((await me(t, session.accessToken)).status).toBe(200)
    clock.advanceSeconds(101)
    expect((await me(t, session.accessToken)).status).toBe(401)
    expect((await refresh(t, session.refreshToken)).body).toMatchObject({ code: 'RPM_ERR_SESSION_ENDED' })
  })

  it('refuses an access token past auth.accessTokenTtlSeconds; a refresh gives a working one', async () => {
    const { t, clock } = await gatewayWithUser({ 'auth.accessTokenTtlSeconds': 60, 'auth.idleTimeoutSeconds': 900 })
    const session = await login(t, 'nurse.ada', PASSWORD)
    clock.advanceSeconds(59)
    expect((await me(t, session.accessToken)).status).toBe(200)
    clock.advanceSeconds(2)
    const expired = await me(t, session.accessToken)
    expect(expired.status).toBe(401)
    expect(expired.body).toMatchObject({ code: 'RPM_ERR_UNAUTHENTICATED' })

    const rotated = await refresh(t, session.refreshToken)
    expect(rotated.status).toBe(200)
    expect((await me(t, rotated.body.accessToken)).status).toBe(200)
  })
})

describe('forged tokens', () => {
  it('refuses a token signed with another key, an unsigned one, a tampered one and none at all, and audits each', async () => {
    const { t, userId } = await gatewayWithUser()
    const session = await login(t, 'nurse.ada', PASSWORD)
    const claims = decodeJwt(session.accessToken)
    const now = Math.floor(Date.now() / 1000)
    const otherKey = await new SignJWT({ sid: claims.sid, role: 'admin' })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuer('rpm-gateway')
      .setSubject(userId)
      .setIssuedAt(now)
      .setExpirationTime(now + 600)
      .sign(randomBytes(32))
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url')
    const [header, , signature] = session.accessToken.split('.')
    const unsigned = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ ...claims, role: 'admin' })}.`
    const tampered = `${header}.${b64({ ...claims, role: 'admin', exp: now + 86_400 })}.${signature}`

    const before = auditOf(t).length
    for (const token of [otherKey, unsigned, tampered, 'not-a-jwt']) {
      const res = await me(t, token)
      expect(res.status).toBe(401)
      expect(res.body).toEqual({ code: 'RPM_ERR_UNAUTHENTICATED', message: expect.any(String) })
    }
    const missing = await api(t, 'GET', '/api/v1/me')
    expect(missing.status).toBe(401)
    const refusals = auditOf(t).slice(before)
    expect(refusals).toHaveLength(5)
    for (const r of refusals) expect(r).toMatchObject({ actor_type: 'anonymous', outcome: 'denied', action: 'GET /api/v1/me', address: '127.0.0.1' })
    // The genuine token still works.
    expect((await me(t, session.accessToken)).status).toBe(200)
  })
})

describe('operator CLI and sign-in', () => {
  it('a user added with `rpm-gateway user add --password-stdin` signs in over HTTP', async () => {
    const dataDir = tempDir('rpm-auth-cli-')
    dirs.push(dataDir)
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RPM_')))
    const added = await runProcess(
      process.execPath,
      [BIN, '--data-dir', dataDir, '--json', 'user', 'add', '--role', 'admin', '--username', 'ops.lee', '--name', 'Lee', '--password-stdin'],
      { env, cwd: dataDir, input: `${PASSWORD}\n`, timeoutMs: 20_000 },
    )
    expect(added.stderr).toBe('')
    expect(added.code).toBe(0)
    const user = JSON.parse(added.stdout)
    expect(user).toMatchObject({ username: 'ops.lee', role: 'admin', name: 'Lee', status: 'active' })
    expect(added.stdout).not.toContain(PASSWORD)

    t = await startGateway({}, dataDir)
    const session = await login(t, 'ops.lee', PASSWORD)
    expect(session.user.id).toBe(user.id)
    const users = await api(t, 'GET', '/api/v1/users', { token: session.accessToken })
    expect(users.status).toBe(200)
    expect(users.body.items.map((u: { username: string }) => u.username)).toEqual(['ops.lee'])
    // The password was read whole from stdin: the trailing newline is not part of it.
    expect((await attempt(t, 'ops.lee', `${PASSWORD}\n`)).status).toBe(401)
    expect(auditOf(t, 'user.add')).toEqual([expect.objectContaining({ actor_type: 'operator', target: user.id, outcome: 'allowed' })])
    expect(t.gateway.audit.verify()).toMatchObject({ ok: true })
  })
})
