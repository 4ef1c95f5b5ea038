import { mkdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core'

/** Debian's Chromium, installed by scripts/test-prereqs.sh; no browser download. */
export const CHROMIUM = '/usr/bin/chromium'

// Headless on a machine without a network: without the background-networking flags Chromium
// keeps trying to reach Google's hosts and has its connections refused.
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
]

export function launch(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
}

/** One person at one browser: a context of their own (cookies, storage), signed in through the page. */
export async function signIn(browser: Browser, baseUrl: string, username: string, password: string): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ baseURL: baseUrl, viewport: { width: 1280, height: 860 } })
  const page = await context.newPage()
  await page.goto('/login')
  await page.getByLabel('Username').fill(username)
  await page.getByLabel('Password').fill(password)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.waitForURL((u) => !u.pathname.startsWith('/login'))
  return { context, page }
}

export interface AxeViolation {
  id: string
  impact: 'minor' | 'moderate' | 'serious' | 'critical' | null
  help: string
  nodes: Array<{ target: string[]; failureSummary?: string }>
}

const AXE = readFileSync(path.resolve('node_modules/axe-core/axe.min.js'), 'utf8')

/** axe-core's serious and critical WCAG 2.1 A/AA violations on the page as it is now. */
export async function seriousViolations(page: Page): Promise<AxeViolation[]> {
  // Evaluated, not injected as a <script>: the console's content security policy allows only its own scripts.
  await page.evaluate(AXE)
  const violations = await page.evaluate(async () => {
    const axe = (globalThis as unknown as { axe: { run(ctx: unknown, opts: unknown): Promise<{ violations: AxeViolation[] }> } }).axe
    const r = await axe.run((globalThis as unknown as { document: unknown }).document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => ({ target: n.target, failureSummary: n.failureSummary })) }))
  })
  return violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
}

/** Saves a screenshot under docs/screenshots (shown in the README). */
export async function screenshot(page: Page, name: string): Promise<string> {
  const dir = path.resolve('docs', 'screenshots')
  mkdirSync(dir, { recursive: true })
  const file = path.join(dir, `${name}.png`)
  // From the top of the page, as someone arriving sees it.
  await page.evaluate(() => (globalThis as unknown as { scrollTo(x: number, y: number): void }).scrollTo(0, 0))
  await page.screenshot({ path: file, fullPage: false })
  return file
}
