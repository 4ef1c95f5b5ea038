import { existsSync } from 'node:fs'
import type { MqttClient } from 'mqtt'
import type { Browser, BrowserContext, Page } from 'playwright-core'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { build } from '../../device-simulator/readings.ts'
import { WEB_ROOT } from '../../src/http/web.ts'
import { launch, screenshot, seriousViolations, signIn } from '../browser.ts'
import { call, connectDevice, signInAs, startGateway, TestClock, waitFor, type TestDevice, type TestGateway } from '../helpers.ts'

// The console as people use it: real Chromium, the built console served by a real gateway,
// devices over MQTT/TLS. The test command builds web/dist first (npm run build:web).
const PASSWORD = 'correct horse battery'
const WAIT = { timeout: 15_000 }

let browser: Browser
let t: TestGateway | undefined
let contexts: BrowserContext[] = []
let devices: MqttClient[] = []

beforeAll(async () => {
  if (!existsSync(`${WEB_ROOT}/index.html`)) throw new Error('the web console is not built: run npm run build:web (the test command does)')
  browser = await launch()
}, 60_000)

afterAll(async () => {
  await browser?.close()
})

afterEach(async () => {
  await Promise.all(contexts.map((c) => c.close()))
  contexts = []
  await Promise.all(devices.map((d) => d.endAsync(true)))
  devices = []
  await t?.stop()
  t = undefined
})

interface Clinic {
  t: TestGateway
  dev: TestDevice
  threadId: string
  clock?: TestClock
}

async function clinic(settings: Record<string, unknown> = {}, clock?: TestClock): Promise<Clinic> {
  t = await startGateway({ 'alerts.tickMs': 50, ...settings }, undefined, clock ? { clock } : {})
  const g = t.gateway
  const patient = await g.registry.addPatient({ name: 'Ada Lovelace', timezone: 'UTC' })
  const device = await g.registry.addDevice({ patientId: patient.id, kind: 'bp_cuff' })
  await g.users.add({ username: 'ada', password: PASSWORD, role: 'patient', patientId: patient.id, name: 'Ada Lovelace' })
  await g.users.add({ username: 'nurse', password: PASSWORD, role: 'provider', name: 'Nurse Joy' })
  await g.users.addToCareTeam(patient.id, 'nurse')
  return { t, dev: { patientId: patient.id, deviceId: device.id, secret: device.secret }, threadId: g.threads.ensure(patient.id).id, ...(clock ? { clock } : {}) }
}

async function person(c: Clinic, username: string): Promise<Page> {
  const { context, page } = await signIn(browser, c.t.urls.http, username, PASSWORD)
  contexts.push(context)
  return page
}

async function publish(c: Clinic, reading: object): Promise<void> {
  const client = await connectDevice(c.t, c.dev)
  devices.push(client)
  await client.publishAsync(`devices/${c.dev.deviceId}/readings`, JSON.stringify(reading), { qos: 1 })
}

async function expectAccessible(page: Page, what: string): Promise<void> {
  const violations = await seriousViolations(page)
  expect(violations.map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`), what).toEqual([])
}

describe('a provider and a patient in two browsers', () => {
  it('chat both ways with a typing indicator and a read receipt', async () => {
    const c = await clinic()
    await publish(c, build.bloodPressure(152, 95, 78, { seq: 1 }))
    const nurse = await person(c, 'nurse')
    const ada = await person(c, 'ada')
    await nurse.goto(`/patients/${c.dev.patientId}/thread`)
    await nurse.getByLabel('Message').waitFor(WAIT)
    await ada.getByLabel('Message').waitFor(WAIT)
    // The patient's latest reading, in plain words against their own limits.
    await ada.getByText('Blood pressure 152/95, higher than your target').first().waitFor(WAIT)

    // Ada types: the nurse sees it.
    await ada.getByLabel('Message').pressSequentially('Good morning, my readings are', { delay: 20 })
    await nurse.getByText(/is typing/).waitFor(WAIT)
    await ada.getByLabel('Message').fill('Good morning, I feel dizzy today')
    await ada.getByRole('button', { name: 'Send' }).click()
    await nurse.getByText('Good morning, I feel dizzy today').waitFor(WAIT)
    // The nurse has the thread open: Ada's message shows it was read.
    await ada.getByText(/Read by/).first().waitFor(WAIT)

    await nurse.getByLabel('Message').fill('Please sit down and take your blood pressure again')
    await nurse.getByRole('button', { name: 'Send' }).click()
    await ada.getByText('Please sit down and take your blood pressure again').waitFor(WAIT)

    await expectAccessible(nurse, 'provider thread')
    await expectAccessible(ada, 'patient home')
    await screenshot(nurse, 'provider-thread')
    await screenshot(ada, 'patient-home')
  }, 90_000)

  it('a crisis published over MQTT reaches the provider\'s inbox live; acknowledging it tells the patient', async () => {
    const c = await clinic()
    const nurse = await person(c, 'nurse')
    const ada = await person(c, 'ada')
    await nurse.goto('/alerts')
    await nurse.getByRole('heading', { name: 'Alerts' }).first().waitFor(WAIT)

    await publish(c, build.bloodPressure(186, 112, 80, { seq: 1 }))
    const acknowledge = nurse.getByRole('button', { name: 'Acknowledge' }).first()
    await acknowledge.waitFor(WAIT)
    await nurse.getByText(/Hypertensive crisis/).first().waitFor(WAIT)
    await expectAccessible(nurse, 'alerts inbox with an urgent alert')
    await screenshot(nurse, 'provider-alerts')
    await acknowledge.click()
    await waitFor(() => c.t.gateway.store.sqlite.prepare("SELECT status FROM alerts").get() as { status: string } | undefined, 10_000, 'the alert')
    await waitFor(() => (c.t.gateway.store.sqlite.prepare('SELECT status FROM alerts').get() as { status: string }).status === 'acknowledged', 10_000, 'acknowledged')
    await ada.getByText(/acknowledged the alert/).first().waitFor(WAIT)

    // The patient list and the patient page, with the reading just taken.
    await nurse.goto('/patients')
    await nurse.getByText('Ada Lovelace').first().waitFor(WAIT)
    await expectAccessible(nurse, 'patient list')
    await screenshot(nurse, 'provider-patients')
    await nurse.goto(`/patients/${c.dev.patientId}`)
    await nurse.getByRole('heading', { name: /Vitals/ }).first().waitFor(WAIT)
    await expectAccessible(nurse, 'patient page')
    await screenshot(nurse, 'provider-patient')
  }, 90_000)

  it('a medication reminder: the patient taps "I took it" and the provider\'s page shows the dose taken', async () => {
    const clock = new TestClock()
    const c = await clinic({ 'reminders.cron': '* * * * * *' }, clock)
    const nurseApi = await signInAs(c.t, 'nurse', PASSWORD)
    const due = new Date(clock.now() + 2 * 60_000).toISOString().slice(11, 16)
    const added = await call(c.t, nurseApi, 'POST', `/api/v1/patients/${c.dev.patientId}/reminders`, { kind: 'medication', medication: 'Lisinopril', dose: '10 mg', times: [due] })
    expect(added.status).toBe(201)
    const ada = await person(c, 'ada')
    await ada.getByLabel('Message').waitFor(WAIT)
    clock.advanceSeconds(3 * 60)
    const took = ada.getByRole('button', { name: 'I took it' }).first()
    await took.waitFor(WAIT)
    await screenshot(ada, 'patient-reminder')
    await took.click()
    await waitFor(() => (c.t.gateway.store.sqlite.prepare("SELECT status FROM reminder_occurrences").get() as { status: string } | undefined)?.status === 'taken', 10_000, 'the dose recorded')

    const nurse = await person(c, 'nurse')
    await nurse.goto(`/patients/${c.dev.patientId}`)
    await nurse.getByText(/Medication adherence: 100%/).first().waitFor(WAIT)
  }, 90_000)

  it('reconnects after the connection drops and shows what was sent meanwhile exactly once', async () => {
    const c = await clinic()
    const nurse = await person(c, 'nurse')
    await nurse.goto(`/patients/${c.dev.patientId}/thread`)
    await nurse.getByLabel('Message').waitFor(WAIT)
    const ada = await signInAs(c.t, 'ada', PASSWORD)
    expect((await call(c.t, ada, 'POST', `/api/v1/threads/${c.threadId}/messages`, { clientMessageId: 'before', text: 'Before the drop' })).status).toBe(201)
    await nurse.getByText('Before the drop').waitFor(WAIT)

    // Every live socket is cut (a network drop); two messages arrive before the console is back.
    for (const ws of c.t.gateway.http.websocketServer.clients) ws.terminate()
    for (const [id, text] of [['d1', 'While you were away, one'], ['d2', 'While you were away, two']] as const) {
      expect((await call(c.t, ada, 'POST', `/api/v1/threads/${c.threadId}/messages`, { clientMessageId: id, text })).status).toBe(201)
    }
    await nurse.getByText('While you were away, two').waitFor(WAIT)
    for (const text of ['Before the drop', 'While you were away, one', 'While you were away, two']) {
      expect(await nurse.getByText(text, { exact: true }).count(), text).toBe(1)
    }
    // And a message the nurse writes now goes out once.
    await nurse.getByLabel('Message').fill('Got both, thank you')
    await nurse.getByRole('button', { name: 'Send' }).click()
    await waitFor(() => (c.t.gateway.store.sqlite.prepare("SELECT count(*) AS n FROM messages WHERE text = 'Got both, thank you'").get() as { n: number }).n === 1, 10_000, 'stored once')
  }, 60_000)

  it('the sign-in page is accessible, and a wrong password is said plainly', async () => {
    await clinic()
    const context = await browser.newContext({ baseURL: t!.urls.http })
    contexts.push(context)
    const page = await context.newPage()
    await page.goto('/login')
    await page.getByLabel('Username').fill('nurse')
    await page.getByLabel('Password').fill('not the password')
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.getByText(/wrong username or password/i).waitFor(WAIT)
    await expectAccessible(page, 'sign-in page')
    await screenshot(page, 'sign-in')
    // Nothing secret is kept where scripts can read it.
    const stored = await page.evaluate(() => JSON.stringify({ ...(globalThis as any).localStorage, ...(globalThis as any).sessionStorage }))
    expect(stored).not.toMatch(/eyJ|refresh/i)
  }, 60_000)
})
