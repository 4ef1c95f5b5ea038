import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { api, startGateway, tempDir, type TestGateway } from '../helpers.ts'

let t: TestGateway | undefined

afterEach(async () => {
  await t?.stop()
  t = undefined
})

const PASSWORD = 'correct horse battery'

function builtConsole(): string {
  const root = tempDir('rpm-web-')
  mkdirSync(path.join(root, 'assets'))
  writeFileSync(path.join(root, 'index.html'), '<!doctype html><html lang="en"><title>console</title><div id="app"></div></html>')
  writeFileSync(path.join(root, 'assets', 'main-3f9a.js'), 'console.log(1)')
  writeFileSync(path.join(root, 'sw.js'), 'self.addEventListener("push", () => {})')
  return root
}

const page = (t: TestGateway, p: string) => fetch(`${t.urls.http}${p}`, { headers: { accept: 'text/html,application/xhtml+xml' } })

describe('the web console at /', () => {
  it('serves its files, and index.html for its routes, with a strict content security policy; the API keeps its JSON 404', async () => {
    t = await startGateway({ 'http.webRoot': builtConsole() })
    const home = await page(t, '/')
    expect(home.status).toBe(200)
    expect(await home.text()).toContain('<div id="app">')
    expect(home.headers.get('content-security-policy')).toContain("default-src 'self'")
    expect(home.headers.get('content-security-policy')).toContain("frame-ancestors 'none'")
    expect(home.headers.get('x-frame-options')).toBe('DENY')

    // A reload on a client route opens the console.
    const deep = await page(t, '/patients/pat-123/thread')
    expect(deep.status).toBe(200)
    expect(await deep.text()).toContain('<div id="app">')
    expect(deep.headers.get('cache-control')).toBe('no-cache')

    const asset = await fetch(`${t.urls.http}/assets/main-3f9a.js`)
    expect(asset.status).toBe(200)
    expect(asset.headers.get('cache-control')).toContain('immutable')
    const sw = await fetch(`${t.urls.http}/sw.js`)
    expect(sw.status).toBe(200)
    expect(sw.headers.get('cache-control')).toBe('no-cache')

    // Not the console's: a missing file, an unknown API route, the operators' endpoints.
    expect((await fetch(`${t.urls.http}/assets/missing.js`)).status).toBe(404)
    const unknownApi = await page(t, '/api/v1/nothing-here')
    expect(unknownApi.status).toBe(404)
    expect(await unknownApi.json()).toMatchObject({ code: 'RPM_ERR_NOT_FOUND' })
    expect((await api(t, 'GET', '/healthz')).body).toEqual({ status: 'ok' })
    expect((await fetch(`${t.urls.http}/docs/json`)).status).toBe(200)
  })

  it('says how to build the console when it is not built', async () => {
    t = await startGateway({ 'http.webRoot': tempDir('rpm-web-empty-') })
    const home = await page(t, '/')
    expect(home.status).toBe(200)
    expect(await home.text()).toContain('npm run build:web')
  })
})

describe('a browser session in an HttpOnly cookie', () => {
  it('keeps the refresh token out of script reach, rotates it on refresh, refuses a reused one and clears it at sign-out', async () => {
    t = await startGateway()
    await t.gateway.users.add({ username: 'nurse', password: PASSWORD, role: 'provider' })
    const login = await fetch(`${t.urls.http}/api/v1/auth/login`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'nurse', password: PASSWORD, session: 'cookie' }),
    })
    expect(login.status).toBe(200)
    const body = (await login.json()) as Record<string, unknown>
    expect(body.accessToken).toEqual(expect.any(String))
    expect(body).not.toHaveProperty('refreshToken')
    const cookie = login.headers.get('set-cookie')!
    expect(cookie).toMatch(/^rpm_refresh=[^;]+; Path=\/api\/v1\/auth; HttpOnly; SameSite=Strict; Max-Age=\d+$/)
    const first = cookie.split(';')[0]!

    const refresh = (c: string) => fetch(`${t!.urls.http}/api/v1/auth/refresh`, { method: 'POST', headers: { 'content-type': 'application/json', cookie: c }, body: '{}' })
    const r1 = await refresh(first)
    expect(r1.status).toBe(200)
    const r1body = (await r1.json()) as { accessToken: string }
    expect(r1body).not.toHaveProperty('refreshToken')
    const second = r1.headers.get('set-cookie')!.split(';')[0]!
    expect(second).not.toBe(first)
    expect((await api(t, 'GET', '/api/v1/me', { token: r1body.accessToken })).status).toBe(200)

    // The first cookie again (a stolen copy): the whole session ends and the cookie is cleared.
    const reused = await refresh(first)
    expect(reused.status).toBe(401)
    expect(reused.headers.get('set-cookie')).toMatch(/^rpm_refresh=; .*Max-Age=0$/)
    expect((await refresh(second)).status).toBe(401)

    // Without a cookie or a body: the field is named.
    const none = await fetch(`${t.urls.http}/api/v1/auth/refresh`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
    expect(none.status).toBe(400)
    expect(((await none.json()) as { details: { field: string } }).details.field).toBe('refreshToken')

    // Sign-out clears the cookie.
    const again = await fetch(`${t.urls.http}/api/v1/auth/login`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'nurse', password: PASSWORD, session: 'cookie' }),
    })
    const { accessToken } = (await again.json()) as { accessToken: string }
    const out = await fetch(`${t.urls.http}/api/v1/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${accessToken}`, cookie: again.headers.get('set-cookie')!.split(';')[0]! } })
    expect(out.status).toBe(204)
    expect(out.headers.get('set-cookie')).toMatch(/^rpm_refresh=; .*Max-Age=0$/)
  })
})
