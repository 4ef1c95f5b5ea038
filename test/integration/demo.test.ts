import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { api, login, runProcess, tempDir, type TestGateway, waitFor } from '../helpers.ts'

/**
 * `npm run demo` end to end: the script runs as its own process, as a newcomer would run it, and
 * everything is checked through the REST API with the sign-ins it prints.
 */
const ROOT = path.resolve(import.meta.dirname, '..', '..')
const DEMO = path.join(ROOT, 'scripts', 'demo.ts')
// The runs below start in a temp directory (to see which directories the defaults touch), where
// a bare `--import tsx` would not resolve: name the loader by its file.
const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href
const QUICK = ['--port', '0', '--mqtt-port', '0', '--json', '--fast', '--no-web-build']

interface DemoDoc {
  demo: true
  dataDir: string
  marker: string
  url: string
  api: string
  signIns: Array<{ role: string; username: string; password: string; patientId?: string }>
  patients: Array<{ id: string; username: string; devices: Array<{ id: string; kind: string }>; medication: { name: string } }>
  seeded: { reused: boolean; created: Record<string, number> }
  firstMinute: Array<{ atSeconds: number | null; at: string | null; what: string }>
}

interface DemoRun {
  child: ChildProcess
  doc: DemoDoc
  /** The gateway as the API helpers want it: only its URL is used. */
  gw: TestGateway
  stdout(): string
  stderr(): string
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

const cleanEnv = (): NodeJS.ProcessEnv => Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RPM_')))
const running = new Set<ChildProcess>()
const dirs: string[] = []

/** Starts the demo and resolves once it has printed its JSON document (the gateway is up then). */
function startDemo(cwd: string, args: string[]): Promise<DemoRun> {
  const child = spawn(process.execPath, ['--import', TSX, DEMO, ...QUICK, ...args], { cwd, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
  running.add(child)
  let stdout = ''
  let stderr = ''
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s))
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      running.delete(child)
      resolve({ code, signal })
    }))
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the demo printed nothing within 30 s; stderr:\n${stderr}`)), 30_000)
    const onData = () => {
      const nl = stdout.indexOf('\n')
      if (nl < 0) return
      clearTimeout(timer)
      child.stdout!.off('data', onData)
      const doc = JSON.parse(stdout.slice(0, nl)) as DemoDoc
      resolve({ child, doc, gw: { urls: { http: new URL(doc.url).origin } } as unknown as TestGateway, stdout: () => stdout, stderr: () => stderr, exited })
    }
    child.stdout!.on('data', onData)
    void exited.then(({ code }) => {
      clearTimeout(timer)
      reject(new Error(`the demo exited (${code}) before printing its document; stderr:\n${stderr}`))
    })
  })
}

/** Ctrl-C, as a person stops it: the devices, then the gateway; exit code 0. */
async function interrupt(run: DemoRun): Promise<number | null> {
  run.child.kill('SIGINT')
  const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`the demo did not stop within 20 s; stderr:\n${run.stderr()}`)), 20_000))
  return (await Promise.race([run.exited, timeout])).code
}

const passwordOf = (doc: DemoDoc, username: string) => doc.signIns.find((s) => s.username === username)!.password

async function get(run: DemoRun, token: string, url: string): Promise<any> {
  const res = await api(run.gw, 'GET', url, { token })
  if (res.status !== 200) throw new Error(`GET ${url}: ${res.status} ${res.text}`)
  return res.body
}

describe('npm run demo', () => {
  // Shared by the tests below, in order: the second run reuses what the first one seeded.
  const cwd = tempDir('rpm-demo-')
  dirs.push(cwd)
  let first: { users: string[]; devices: Record<string, number> } | undefined

  afterAll(() => {
    for (const child of running) child.kill('SIGKILL')
    for (const d of dirs) rmSync(d, { recursive: true, force: true })
  })

  it('seeds a marked demo clinic in ./demo-data; readings flow, an urgent alert opens, a reminder reaches a thread; Ctrl-C stops it', async () => {
    const run = await startDemo(cwd, ['--duration', '150'])
    const { doc } = run
    expect(realpathSync(doc.dataDir)).toBe(realpathSync(path.join(cwd, 'demo-data')))
    expect(readFileSync(doc.marker, 'utf8')).toMatch(/demo data/)
    expect(doc.seeded.reused).toBe(false)
    expect(doc.signIns.map((s) => s.role)).toEqual(expect.arrayContaining(['provider', 'admin', 'patient']))
    for (const s of doc.signIns) expect(s.password.length).toBeGreaterThanOrEqual(12)
    expect(doc.patients.length).toBeGreaterThanOrEqual(3)
    for (const p of doc.patients) expect(p.id).toMatch(/^demo-/)

    const nurse = (await login(run.gw, 'nurse', passwordOf(doc, 'nurse'))).accessToken
    const patients = (await get(run, nurse, '/api/v1/patients')).items as Array<{ id: string; name: string }>
    expect(patients.map((p) => p.id).sort()).toEqual(doc.patients.map((p) => p.id).sort())
    for (const p of patients) expect(p.name).toMatch(/^Demo /)

    // Live readings, for every patient.
    await waitFor(async () => {
      for (const p of doc.patients) {
        if ((await get(run, nurse, `/api/v1/patients/${p.id}/readings?limit=5`)).items.length === 0) return false
      }
      return true
    }, 20_000, 'readings stored for every demo patient')

    // The hypertensive crisis of the first minute (at ~5 s with --fast): an urgent alert, open.
    const alert = await waitFor(async () => {
      const items = (await get(run, nurse, '/api/v1/alerts?severity=urgent')).items as Array<{ patientId: string; ruleId: string; status: string; severity: string }>
      return items.find((a) => a.ruleId === 'bp-crisis' && a.status === 'open')
    }, 30_000, 'an open urgent bp-crisis alert')
    expect(alert).toMatchObject({ severity: 'urgent', status: 'open' })

    // The demo dose (due at the first whole minute after the start): a reminder message in the
    // patient's own thread, seen with the patient's sign-in.
    const patient = doc.patients.find((p) => p.id === alert.patientId) ?? doc.patients[0]!
    const own = (await login(run.gw, patient.username, passwordOf(doc, patient.username))).accessToken
    const thread = await get(run, own, `/api/v1/patients/${patient.id}/thread`)
    let after = 0
    const reminder = await waitFor(async () => {
      for (;;) {
        const page = await get(run, own, `/api/v1/threads/${thread.id}/messages?after=${after}&limit=500`)
        const found = (page.items as Array<{ seq: number; kind: string; text: string | null; createdAt: string }>).find((m) => m.kind === 'reminder')
        if (found) return found
        if (page.items.length > 0) after = page.items[page.items.length - 1].seq
        if (!page.hasMore) return undefined
      }
    }, 75_000, 'a reminder message in the patient\'s thread')
    expect(reminder.text).toContain(patient.medication.name)
    const due = doc.firstMinute.find((e) => e.what.includes('reminders'))!
    expect(Date.parse(reminder.createdAt)).toBeGreaterThanOrEqual(Date.parse(due.at!) - 1000)

    // What the seed made, for the second run to compare with.
    const admin = (await login(run.gw, 'admin', passwordOf(doc, 'admin'))).accessToken
    const users = ((await get(run, admin, '/api/v1/users')).items as Array<{ username: string }>).map((u) => u.username).sort()
    expect(users).toEqual(doc.signIns.map((s) => s.username).sort())
    const devices: Record<string, number> = {}
    for (const p of doc.patients) devices[p.id] = (await get(run, nurse, `/api/v1/patients/${p.id}/devices`)).items.length
    first = { users, devices }

    expect(await interrupt(run)).toBe(0)
    // stdout held the one JSON document and nothing else; the activity went to stderr.
    expect(run.stdout().trim().split('\n')).toHaveLength(1)
    expect(run.stderr()).toMatch(/URGENT alert/)
    expect(run.stderr()).toMatch(/SIGINT: stopping the devices, then the gateway/)
    // `npm start`'s default data directory was never created.
    expect(existsSync(path.join(cwd, 'data'))).toBe(false)
    expect(readdirSync(cwd)).toEqual(['demo-data'])
  }, 150_000)

  it('a second run reuses the clinic: nothing seeded twice', async () => {
    expect(first).toBeDefined()
    const run = await startDemo(cwd, ['--data-dir', 'demo-data', '--duration', '60'])
    const { doc } = run
    expect(doc.seeded.reused).toBe(true)
    expect(Object.values(doc.seeded.created).every((n) => n === 0)).toBe(true)

    const admin = (await login(run.gw, 'admin', passwordOf(doc, 'admin'))).accessToken
    const users = ((await get(run, admin, '/api/v1/users')).items as Array<{ username: string }>).map((u) => u.username).sort()
    expect(users).toEqual(first!.users)
    const nurse = (await login(run.gw, 'nurse', passwordOf(doc, 'nurse'))).accessToken
    expect((await get(run, nurse, '/api/v1/patients')).items).toHaveLength(doc.patients.length)
    for (const p of doc.patients) {
      expect((await get(run, nurse, `/api/v1/patients/${p.id}/devices`)).items).toHaveLength(first!.devices[p.id]!)
      expect((await get(run, nurse, `/api/v1/patients/${p.id}/care-team`)).items).toHaveLength(1)
      const schedules = (await get(run, nurse, `/api/v1/patients/${p.id}/reminders`)).items as Array<{ medication: string; active: boolean }>
      expect(schedules.filter((s) => s.active).map((s) => s.medication)).toEqual([p.medication.name])
    }
    const thresholds = (await get(run, nurse, '/api/v1/patients/demo-chloe/thresholds/spo2-low/history')).items
    expect(thresholds).toHaveLength(1)
    expect((await get(run, nurse, '/api/v1/on-call')).items).toHaveLength(1)

    expect(await interrupt(run)).toBe(0)
    expect(existsSync(path.join(cwd, 'data'))).toBe(false)
  }, 60_000)

  it('refuses a data directory with non-demo gateway data (also with --reset) and npm start\'s ./data', async () => {
    const foreign = tempDir('rpm-demo-foreign-')
    dirs.push(foreign)
    writeFileSync(path.join(foreign, 'rpm-gateway.db'), '')
    for (const extra of [[], ['--reset']]) {
      const r = await runProcess(process.execPath, ['--import', TSX, DEMO, ...QUICK, '--data-dir', foreign, ...extra], { cwd, env: cleanEnv(), timeoutMs: 20_000 })
      expect(r.code).toBe(1)
      expect(r.stderr).toMatch(/not demo data \(there is no DEMO marker file\)/)
      expect(r.stdout).toBe('')
      expect(readdirSync(foreign)).toEqual(['rpm-gateway.db'])
    }
    const here = tempDir('rpm-demo-cwd-')
    dirs.push(here)
    const r = await runProcess(process.execPath, ['--import', TSX, DEMO, ...QUICK, '--data-dir', 'data'], { cwd: here, env: cleanEnv(), timeoutMs: 20_000 })
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/the data directory `npm start` uses/)
    expect(readdirSync(here)).toEqual([])
  }, 60_000)
})
