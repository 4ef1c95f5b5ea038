import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { build } from '../../device-simulator/readings.ts'
import type { AuditRow } from '../../src/audit/audit.ts'
import type { Patient } from '../../src/registry/registry.ts'
import {
  api,
  auditOf,
  connectDevice,
  login,
  runProcess,
  startGateway,
  TestClock,
  type ApiResponse,
  type TestDevice,
  type TestGateway,
} from '../helpers.ts'

const BIN = fileURLToPath(new URL('../../bin/rpm-gateway.js', import.meta.url))
const PASSWORD = 'a long enough password'

let t: TestGateway | undefined

afterEach(async () => {
  await t?.stop()
  t = undefined
})

interface Actor {
  name: string
  id: string
  token: string
}

interface World {
  t: TestGateway
  clock: TestClock
  A: Patient
  B: Patient
  devA: TestDevice
  devB: TestDevice
  /** Patient A's own account, patient B's, provider P (A's care team), provider Q (no team), admin D. */
  actors: { patA: Actor; patB: Actor; P: Actor; Q: Actor; D: Actor }
}

/**
 * Patients A and B, each with a device that has sent one reading over MQTT and a patient
 * account; provider P on A's care team, provider Q on none, admin D. Everyone is signed in.
 */
async function world(settings: Record<string, unknown> = {}): Promise<World> {
  const clock = new TestClock()
  t = await startGateway(settings, undefined, { clock })
  const g = t.gateway
  const A = await g.registry.addPatient({ name: 'Alice Avery', timezone: 'UTC' })
  const B = await g.registry.addPatient({ name: 'Bruno Bell', timezone: 'UTC' })
  const [a, b] = await Promise.all([g.registry.addDevice({ patientId: A.id, kind: 'bp_cuff' }), g.registry.addDevice({ patientId: B.id, kind: 'glucometer' })])
  const devA = { patientId: A.id, deviceId: a.id, secret: a.secret }
  const devB = { patientId: B.id, deviceId: b.id, secret: b.secret }
  const specs = [
    ['patA', 'alice.avery', 'patient', A.id],
    ['patB', 'bruno.bell', 'patient', B.id],
    ['P', 'prov.p', 'provider', undefined],
    ['Q', 'prov.q', 'provider', undefined],
    ['D', 'admin.d', 'admin', undefined],
  ] as const
  await Promise.all(specs.map(([, username, role, patientId]) => g.users.add({ username, password: PASSWORD, role, ...(patientId ? { patientId } : {}) })))
  await g.users.addToCareTeam(A.id, 'prov.p')

  const sent: Array<[TestDevice, object]> = [
    [devA, build.bloodPressure(152, 95, 78, { seq: 1 })],
    [devB, build.glucose(97, 'mg/dL', { seq: 1 })],
  ]
  for (const [dev, reading] of sent) {
    const client = await connectDevice(t, dev)
    await client.publishAsync(`devices/${dev.deviceId}/readings`, JSON.stringify(reading), { qos: 1 })
    await client.endAsync()
  }

  const sessions = await Promise.all(specs.map(([, username]) => login(t!, username, PASSWORD)))
  const actors = Object.fromEntries(specs.map(([key, username], i) => [key, { name: username, id: sessions[i]!.user.id, token: sessions[i]!.accessToken }])) as World['actors']
  return { t, clock, A, B, devA, devB, actors }
}

/** Runs a request and returns it with the audit rows it added. */
async function audited(t: TestGateway, request: () => Promise<ApiResponse>): Promise<{ res: ApiResponse; rows: AuditRow[] }> {
  const before = auditOf(t).length
  const res = await request()
  return { res, rows: auditOf(t).slice(before) }
}

/** What a response could leak about a patient: name, device id, the kind of reading they take. */
function leaks(w: World, patient: 'A' | 'B'): string[] {
  return patient === 'A' ? [w.A.name, w.devA.deviceId, 'systolic'] : [w.B.name, w.devB.deviceId, 'glucose']
}

describe('who sees which patient', () => {
  it('patients see themselves, providers their care team, admins demographics of all; every read and refusal is audited', async () => {
    const w = await world()
    const { t, A, B } = w
    const { patA, patB, P, Q, D } = w.actors

    // What each actor may see: list contents, demographics, clinical data (readings), devices.
    const matrix: Array<{ actor: Actor; list: string[]; demographics: string[]; readings: string[] }> = [
      { actor: patA, list: [A.id], demographics: [A.id], readings: [A.id] },
      { actor: patB, list: [B.id], demographics: [B.id], readings: [B.id] },
      { actor: P, list: [A.id], demographics: [A.id], readings: [A.id] },
      { actor: Q, list: [], demographics: [], readings: [] },
      { actor: D, list: [A.id, B.id], demographics: [A.id, B.id], readings: [] },
    ]

    for (const { actor, list, demographics, readings } of matrix) {
      const listed = await audited(t, () => api(t, 'GET', '/api/v1/patients', { token: actor.token }))
      expect(listed.res.status, actor.name).toBe(200)
      expect(listed.res.body.items.map((p: Patient) => p.id), actor.name).toEqual(list)
      expect(listed.rows, actor.name).toEqual([
        expect.objectContaining({ actor_type: 'user', actor_id: actor.id, action: 'patients.list', target: null, outcome: 'allowed', address: '127.0.0.1' }),
      ])
      for (const hidden of (['A', 'B'] as const).filter((p) => !list.includes(w[p].id))) {
        for (const leak of leaks(w, hidden)) expect(listed.res.text, `${actor.name} list`).not.toContain(leak)
      }

      for (const key of ['A', 'B'] as const) {
        const patient = w[key]
        const checks = [
          { path: `/api/v1/patients/${patient.id}`, action: 'patient.read', allowed: demographics.includes(patient.id) },
          { path: `/api/v1/patients/${patient.id}/devices`, action: 'devices.read', allowed: demographics.includes(patient.id) },
          { path: `/api/v1/patients/${patient.id}/readings`, action: 'readings.read', allowed: readings.includes(patient.id) },
        ]
        for (const { path, action, allowed } of checks) {
          const what = `${actor.name} GET ${path}`
          const { res, rows } = await audited(t, () => api(t, 'GET', path, { token: actor.token }))
          expect(rows, what).toEqual([
            expect.objectContaining({ actor_id: actor.id, action, target: patient.id, outcome: allowed ? 'allowed' : 'denied', address: '127.0.0.1' }),
          ])
          if (!allowed) {
            // Not 403: the answer is the same as for a patient that does not exist.
            expect(res.status, what).toBe(404)
            expect(res.body, what).toEqual({ code: 'RPM_ERR_NOT_FOUND', message: `no patient ${patient.id}`, details: { field: 'patientId' } })
            for (const leak of leaks(w, key)) expect(res.text, what).not.toContain(leak)
            continue
          }
          expect(res.status, what).toBe(200)
          if (action === 'patient.read') expect(res.body).toMatchObject({ id: patient.id, name: patient.name })
          if (action === 'devices.read') {
            const dev = key === 'A' ? w.devA : w.devB
            expect(res.body.items).toEqual([expect.objectContaining({ id: dev.deviceId, patientId: patient.id, status: 'active' })])
            expect(res.text).not.toContain(dev.secret)
            expect(res.body.items[0]).not.toHaveProperty('secret')
          }
          if (action === 'readings.read') {
            expect(res.body.items).toHaveLength(1)
            expect(res.body.items[0]).toMatchObject({ patientId: patient.id, type: key === 'A' ? 'blood_pressure' : 'glucose', seq: 1 })
            expect(JSON.parse(rows[0]!.details_json!)).toMatchObject({ basis: actor === P ? 'care_team' : 'self', count: 1 })
          }
        }
      }
    }

    // A patient that does not exist gets the very same answer as one the caller may not see.
    for (const actor of [patA, P, Q, D]) {
      const { res, rows } = await audited(t, () => api(t, 'GET', '/api/v1/patients/pat-nobody', { token: actor.token }))
      expect(res.status).toBe(404)
      expect(res.body).toEqual({ code: 'RPM_ERR_NOT_FOUND', message: 'no patient pat-nobody', details: { field: 'patientId' } })
      expect(rows).toEqual([expect.objectContaining({ actor_id: actor.id, action: 'patient.read', target: 'pat-nobody', outcome: 'denied' })])
    }

    // The admin reads the same trail over the API, filtered by actor, newest first.
    const trail = await api(t, 'GET', `/api/v1/audit?actorId=${Q.id}&limit=5`, { token: D.token })
    expect(trail.status).toBe(200)
    expect(trail.body.items[0]).toMatchObject({ actorType: 'user', actorId: Q.id, action: 'patient.read', target: 'pat-nobody', outcome: 'denied', address: '127.0.0.1', details: { code: 'RPM_ERR_NOT_FOUND' } })
    expect(trail.body.items.every((e: { actorId: string }) => e.actorId === Q.id)).toBe(true)
    expect(trail.body.nextBefore).toEqual(expect.any(Number))
    expect(auditOf(t, 'audit.read')).toEqual([expect.objectContaining({ actor_id: D.id, outcome: 'allowed' })])

    // The chain holds, in process and as the operator's command sees it.
    expect(t.gateway.audit.verify()).toMatchObject({ ok: true })
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RPM_')))
    const verify = await runProcess(process.execPath, [BIN, '--data-dir', t.dataDir, '--json', 'audit', 'verify'], { env, timeoutMs: 20_000 })
    expect(verify.code).toBe(0)
    expect(JSON.parse(verify.stdout)).toEqual({ ok: true, rows: auditOf(t).length })
  })
})

describe('break-glass', () => {
  it('lets an admin read one patient\'s clinical record with a stated reason until the grant expires', async () => {
    const w = await world()
    const { t, clock, A, B } = w
    const { D, P } = w.actors
    const readingsOf = (id: string) => api(t, 'GET', `/api/v1/patients/${id}/readings`, { token: D.token })
    const grant = (body: object, token = D.token) => audited(t, () => api(t, 'POST', '/api/v1/break-glass', { token, body }))

    expect((await readingsOf(A.id)).status).toBe(404)

    const short = await grant({ patientId: A.id, reason: 'need it', minutes: 5 })
    expect(short.res.status).toBe(400)
    expect(short.res.body).toMatchObject({ code: 'RPM_ERR_BAD_REQUEST', details: { field: 'reason' } })
    expect(short.rows).toEqual([expect.objectContaining({ actor_id: D.id, action: 'breakglass.grant', target: A.id, outcome: 'denied' })])
    const long = await grant({ patientId: A.id, reason: 'patient unresponsive on call', minutes: 61 })
    expect(long.res.status).toBe(400)
    expect(long.res.body).toMatchObject({ code: 'RPM_ERR_BAD_REQUEST', details: { field: 'minutes' } })
    const nobody = await grant({ patientId: 'pat-nobody', reason: 'patient unresponsive on call', minutes: 5 })
    expect(nobody.res.status).toBe(404)
    const byProvider = await grant({ patientId: B.id, reason: 'patient unresponsive on call', minutes: 5 }, P.token)
    expect(byProvider.res.status).toBe(403)
    expect(byProvider.res.body).toMatchObject({ code: 'RPM_ERR_FORBIDDEN' })
    expect((await readingsOf(A.id)).status).toBe(404)

    const reason = 'patient unresponsive, on-call review of recent BP'
    const granted = await grant({ patientId: A.id, reason, minutes: 5 })
    expect(granted.res.status).toBe(201)
    expect(granted.res.body).toEqual({ id: expect.any(String), patientId: A.id, expiresAt: new Date(clock.now() + 5 * 60_000).toISOString() })
    expect(granted.rows).toEqual([expect.objectContaining({ actor_id: D.id, action: 'breakglass.grant', target: A.id, outcome: 'allowed', address: '127.0.0.1' })])
    expect(JSON.parse(granted.rows[0]!.details_json!)).toMatchObject({ reason, grantId: granted.res.body.id })

    const during = await audited(t, () => readingsOf(A.id))
    expect(during.res.status).toBe(200)
    expect(during.res.body.items).toEqual([expect.objectContaining({ patientId: A.id, type: 'blood_pressure' })])
    expect(JSON.parse(during.rows[0]!.details_json!)).toMatchObject({ basis: 'break_glass' })
    // The grant covers one patient.
    expect((await readingsOf(B.id)).status).toBe(404)

    clock.advanceSeconds(5 * 60 - 1)
    expect((await readingsOf(A.id)).status).toBe(200)
    clock.advanceSeconds(2)
    const after = await audited(t, () => readingsOf(A.id))
    expect(after.res.status).toBe(404)
    expect(after.res.body).toMatchObject({ code: 'RPM_ERR_NOT_FOUND' })
    for (const leak of leaks(w, 'A')) expect(after.res.text).not.toContain(leak)
    expect(after.rows).toEqual([expect.objectContaining({ actor_id: D.id, action: 'readings.read', target: A.id, outcome: 'denied' })])
    expect(t.gateway.audit.verify()).toMatchObject({ ok: true })
  })
})

describe('admin routes', () => {
  it('refuse patients and providers with 403 RPM_ERR_FORBIDDEN, change nothing and audit each attempt; an admin can', async () => {
    const w = await world()
    const { t, A } = w
    const { patA, P, Q, D } = w.actors
    const attempts: Array<{ method: string; path: string; route: string; body?: object }> = [
      { method: 'POST', path: '/api/v1/patients', route: '/api/v1/patients', body: { name: 'Carol Crane' } },
      { method: 'POST', path: '/api/v1/users', route: '/api/v1/users', body: { username: 'mallory', password: PASSWORD, role: 'admin' } },
      { method: 'POST', path: `/api/v1/patients/${A.id}/care-team`, route: '/api/v1/patients/:patientId/care-team', body: { provider: 'prov.q' } },
      { method: 'POST', path: '/api/v1/break-glass', route: '/api/v1/break-glass', body: { patientId: A.id, reason: 'I would like to look around', minutes: 5 } },
      { method: 'GET', path: '/api/v1/audit', route: '/api/v1/audit' },
      { method: 'GET', path: '/api/v1/users', route: '/api/v1/users' },
      { method: 'POST', path: `/api/v1/patients/${A.id}/devices`, route: '/api/v1/patients/:patientId/devices', body: { kind: 'scale' } },
      { method: 'POST', path: `/api/v1/devices/${w.devA.deviceId}/disable`, route: '/api/v1/devices/:deviceId/disable' },
    ]
    const sqlite = t.gateway.store.sqlite
    const counts = () => sqlite.prepare('SELECT (SELECT count(*) FROM patients) p, (SELECT count(*) FROM users) u, (SELECT count(*) FROM care_team) c, (SELECT count(*) FROM break_glass) g, (SELECT count(*) FROM devices WHERE status = \'active\') d').get()
    const before = counts()

    for (const actor of [patA, P, Q]) {
      for (const a of attempts) {
        const what = `${actor.name} ${a.method} ${a.path}`
        const { res, rows } = await audited(t, () => api(t, a.method, a.path, { token: actor.token, ...(a.body ? { body: a.body } : {}) }))
        expect(res.status, what).toBe(403)
        expect(res.body, what).toEqual({ code: 'RPM_ERR_FORBIDDEN', message: expect.any(String) })
        expect(rows, what).toEqual([
          expect.objectContaining({ actor_id: actor.id, action: `${a.method} ${a.route}`, outcome: 'denied', address: '127.0.0.1' }),
        ])
        expect(JSON.parse(rows[0]!.details_json!), what).toEqual({ code: 'RPM_ERR_FORBIDDEN' })
      }
      // A malformed body changes nothing: the role is checked first.
      const malformed = await api(t, 'POST', '/api/v1/patients', { token: actor.token, body: { name: 42, extra: true } })
      expect(malformed.status).toBe(403)
    }
    expect(counts()).toEqual(before)

    // The admin can, and putting Q on A's care team opens A's record to Q.
    const added = await api(t, 'POST', `/api/v1/patients/${A.id}/care-team`, { token: D.token, body: { provider: 'prov.q' } })
    expect(added.status).toBe(201)
    expect(added.body).toEqual({ patientId: A.id, userId: Q.id, username: 'prov.q' })
    expect((await api(t, 'GET', '/api/v1/patients', { token: Q.token })).body.items.map((p: Patient) => p.id)).toEqual([A.id])
    expect((await api(t, 'GET', `/api/v1/patients/${A.id}/readings`, { token: Q.token })).status).toBe(200)
    const team = await audited(t, () => api(t, 'GET', `/api/v1/patients/${A.id}/care-team`, { token: Q.token }))
    expect(team.res.body.items.map((u: { username: string }) => u.username)).toEqual(['prov.p', 'prov.q'])
    expect(team.rows).toEqual([expect.objectContaining({ actor_id: Q.id, action: 'careteam.read', target: A.id, outcome: 'allowed' })])
    expect(t.gateway.audit.verify()).toMatchObject({ ok: true })
  })

  it('add a username once when it is sent several times at once: 201 and 409, never a 500', async () => {
    const w = await world()
    const { t } = w
    const { D } = w.actors
    const body = { username: 'new.nurse', password: PASSWORD, role: 'provider' }
    const answers = await Promise.all([1, 2, 3].map(() => api(t, 'POST', '/api/v1/users', { token: D.token, body })))
    expect(answers.map((r) => r.status).sort()).toEqual([201, 409, 409])
    for (const r of answers.filter((a) => a.status === 409)) expect(r.body).toMatchObject({ code: 'RPM_ERR_CONFLICT', details: { field: 'username' } })
    expect((t.gateway.store.sqlite.prepare("SELECT COUNT(*) AS n FROM users WHERE username = 'new.nurse'").get() as { n: number }).n).toBe(1)
  })

  it('audit an admin change that fails (an unknown patient) as a refusal', async () => {
    const w = await world()
    const { t } = w
    const { D } = w.actors
    expect((await api(t, 'POST', '/api/v1/patients/pat-nobody/devices', { token: D.token, body: { kind: 'scale' } })).status).toBe(404)
    expect((await api(t, 'POST', '/api/v1/patients/pat-nobody/care-team', { token: D.token, body: { provider: 'nobody' } })).status).toBe(404)
    const rows = t.gateway.store.sqlite
      .prepare("SELECT action, target, outcome, actor_id, details_json FROM audit WHERE target = 'pat-nobody' ORDER BY id")
      .all() as Array<{ action: string; target: string; outcome: string; actor_id: string; details_json: string }>
    expect(rows.map((r) => [r.action, r.outcome, r.actor_id, JSON.parse(r.details_json).code])).toEqual([
      ['POST /api/v1/patients/:patientId/devices', 'denied', D.id, 'RPM_ERR_NOT_FOUND'],
      ['POST /api/v1/patients/:patientId/care-team', 'denied', D.id, 'RPM_ERR_NOT_FOUND'],
    ])
  })

  it('refuse a request without a valid token with 401 before looking at its body, and audit it', async () => {
    const w = await world()
    const { t } = w
    const { res, rows } = await audited(t, () => api(t, 'POST', '/api/v1/users', { body: { username: 7 } }))
    expect(res.status).toBe(401)
    expect(res.body).toEqual({ code: 'RPM_ERR_UNAUTHENTICATED', message: expect.any(String) })
    expect(rows).toEqual([expect.objectContaining({ actor_type: 'anonymous', action: 'POST /api/v1/users', outcome: 'denied', address: '127.0.0.1' })])
    const read = await audited(t, () => api(t, 'GET', `/api/v1/patients/${w.A.id}/readings`, { token: 'forged' }))
    expect(read.res.status).toBe(401)
    for (const leak of leaks(w, 'A')) expect(read.res.text).not.toContain(leak)
    expect(read.rows).toEqual([expect.objectContaining({ actor_type: 'anonymous', target: w.A.id, outcome: 'denied' })])
  })
})
