/** What the demo prints: the banner for people, one JSON document for scripts and tests. */
import path from 'node:path'
import type { GatewayUrls } from '../../src/app.ts'
import { PATIENTS, PROVIDER, type SeedCounts, signIns } from './clinic.ts'
import { markerFile } from './datadir.ts'
import type { Pace } from './fleet.ts'
import { CRISES } from './vitals.ts'

export interface DemoFacts {
  urls: GatewayUrls
  dataDir: string
  console: { built: boolean; note: string | null }
  seeded: { reused: boolean; created: SeedCounts }
  devices: number
  pace: Pace
  fast: boolean
  /** The demo dose: when it is due. */
  dose: { dueAt: string; localTime: string }
  startedAt: number
  durationSeconds: number | null
  notes: string[]
}

const rel = (p: string) => {
  const r = path.relative(process.cwd(), p)
  return r && !r.startsWith('..') ? `./${r}` : p
}

const minutes = (ms: number) => `${Math.round((ms / 60_000) * 10) / 10} min`
const range = ([lo, hi]: [number, number], unit: 's' | 'min') =>
  unit === 's' ? `${Math.round(lo / 1000)}-${Math.round(hi / 1000)} s` : `${Math.round((lo / 60_000) * 10) / 10}-${Math.round((hi / 60_000) * 10) / 10} min`

function firstName(name: string): string {
  return name.replace(/^Demo /, '').split(' ')[0] ?? name
}

/** What happens in the first minute (and after), with times relative to the start. */
export function timeline(f: DemoFacts): Array<{ atSeconds: number | null; at: string | null; what: string }> {
  const first = CRISES[0]!
  const crisisPatient = PATIENTS.find((p) => p.id === first.patientId)!
  const doseIn = Math.max(0, Math.round((Date.parse(f.dose.dueAt) - f.startedAt) / 1000))
  const confirmers = PATIENTS.filter((p) => p.confirmsDoses).map((p) => firstName(p.name))
  const forgetters = PATIENTS.filter((p) => !p.confirmsDoses).map((p) => firstName(p.name))
  return [
    { atSeconds: 0, at: new Date(f.startedAt).toISOString(), what: `${f.devices} simulated devices send readings, each every ${range(f.pace.readingEveryMs, 's')}: the nurse sees them live` },
    {
      atSeconds: Math.round(f.pace.firstCrisisMs / 1000),
      at: new Date(f.startedAt + f.pace.firstCrisisMs).toISOString(),
      what: `${crisisPatient.name}'s cuff sends a hypertensive crisis (186/112 mmHg): an urgent alert for the nurse, also posted in ${firstName(crisisPatient.name)}'s thread`,
    },
    {
      atSeconds: doseIn,
      at: f.dose.dueAt,
      what: `medication reminders post in every patient's thread and go to their devices; ${confirmers.join(', ')} confirm from the device${forgetters.length ? `, ${forgetters.join(', ')} forgets (a missed-dose alert after 60 min)` : ''}`,
    },
    {
      atSeconds: null,
      at: null,
      what: `a crisis every ${range(f.pace.crisisEveryMs, 'min')}, each patient in turn; normal readings clear it ("All clear") ${minutes(f.pace.quietAfterCrisisMs)} later; an urgent alert nobody acknowledges escalates (on call after 15 min, admins after 30 min)`,
    },
  ]
}

export function jsonDocument(f: DemoFacts): Record<string, unknown> {
  const url = `${f.urls.http}/`
  return {
    demo: true,
    dataDir: f.dataDir,
    marker: markerFile(f.dataDir),
    url,
    api: `${f.urls.http}/api/v1`,
    docs: `${f.urls.http}/docs`,
    console: { url, built: f.console.built, note: f.console.note },
    mqtts: f.urls.mqtts,
    caFile: f.urls.caFile,
    signIns: signIns(),
    patients: PATIENTS.map((p) => ({
      id: p.id,
      name: p.name,
      username: p.username,
      condition: p.condition,
      devices: p.devices,
      medication: { ...p.medication, times: [...new Set([f.dose.localTime, ...p.medication.times])].sort() },
      threshold: p.threshold ? { ruleId: p.threshold.ruleId, summary: p.threshold.summary } : null,
    })),
    seeded: f.seeded,
    fast: f.fast,
    startedAt: new Date(f.startedAt).toISOString(),
    firstMinute: timeline(f),
    durationSeconds: f.durationSeconds,
    notes: f.notes,
    stop: 'SIGINT or SIGTERM (Ctrl-C): the devices disconnect, then the gateway stops',
  }
}

function table(rows: string[][], indent = '  '): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)))
  return rows.map((r) => indent + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd())
}

export function banner(f: DemoFacts): string {
  const u = f.urls
  const seeded = f.seeded.reused
    ? 'the clinic from an earlier run, reused (nothing added)'
    : `seeded now: ${Object.entries(f.seeded.created).filter(([, n]) => n > 0).map(([k, n]) => `${n} ${k === 'careTeam' ? 'care-team places' : k === 'onCall' ? 'on-call shift' : k}`).join(', ')}`
  const people = table([
    ['role', 'username', 'password', 'name'],
    ...signIns().map((s) => [s.role, s.username, s.password, `${s.name}${s.username === PROVIDER.username ? ' (care team of every patient; on call)' : ''}`]),
  ])
  const patients = table(PATIENTS.map((p) => {
    const times = [...new Set([f.dose.localTime, ...p.medication.times])].sort().join(', ')
    return [p.id, p.name, p.condition, p.devices.map((d) => d.kind).join(', '), `${p.medication.name} ${p.medication.dose} at ${times}${p.threshold ? `; own threshold: ${p.threshold.summary}` : ''}`]
  }))
  const events = timeline(f).map((e) => {
    const when = e.atSeconds === null ? 'then' : e.atSeconds === 0 ? 'now' : e.at === f.dose.dueAt ? `${f.dose.localTime} (+${e.atSeconds} s)` : `+${e.atSeconds} s`
    return [when, e.what]
  })
  return [
    `rpm-gateway DEMO: fake patients, demo data only, in ${rel(f.dataDir)} (marked by ${rel(markerFile(f.dataDir))}; \`npm start\` never uses it)`,
    `  clinic         ${seeded}`,
    '',
    `  Web console    ${u.http}/${f.console.built ? '' : `    (${f.console.note ?? 'not built'})`}`,
    `  REST API       ${u.http}/api/v1    (OpenAPI and a UI to try it: ${u.http}/docs)`,
    `  MQTT over TLS  ${u.mqtts}    (CA certificate: ${rel(u.caFile)}; device secrets: ${rel(path.join(f.dataDir, 'demo', 'devices.json'))})`,
    ...f.notes.map((n) => `  note           ${n}`),
    '',
    'Sign in with these demo passwords:',
    people.join('\n'),
    '',
    'Patients (made up):',
    patients.join('\n'),
    '',
    `What happens${f.fast ? ' (--fast)' : ''}:`,
    table(events).join('\n'),
    '',
    `Stop with Ctrl-C: the devices disconnect, then the gateway stops${f.durationSeconds !== null ? ` (or by itself after ${f.durationSeconds} s)` : ''}.`,
    '`npm run demo` again carries on with the same clinic; `npm run demo -- --reset` starts over.',
    '',
    'Activity:',
  ].join('\n')
}
