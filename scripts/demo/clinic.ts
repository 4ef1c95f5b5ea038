/**
 * The demo clinic: fake people, their devices, medications and one per-patient threshold, and
 * how they are seeded through the gateway's own modules (the code paths the CLI and the API
 * use: Registry, Users, ReminderRecords, addOnCall, RuleEngine.setOverride, the audit trail).
 * Seeding is idempotent: what exists is reused, nothing is created twice.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { DateTime } from 'luxon'
import type { DeviceCredential } from '../../device-simulator/credentials.ts'
import type { Gateway } from '../../src/app.ts'
import { systemClock } from '../../src/clock.ts'
import { RpmError, isRpmError } from '../../src/errors.ts'
import { MIN_PASSWORD_LENGTH } from '../../src/identity/users.ts'
import { addOnCall } from '../../src/rules/on-call.ts'
import type { DeviceKind, Role } from '../../src/store/schema.ts'

/** Every name the demo gives a person starts with this, so demo data is recognisable anywhere. */
export const DEMO_PREFIX = 'Demo '
/** Who the demo's seeding is recorded as (schedules' createdBy). */
export const DEMO_ACTOR = 'operator:demo'

export interface DemoStaff {
  role: Exclude<Role, 'patient'>
  username: string
  password: string
  name: string
}

export interface DemoMedication {
  name: string
  dose: string
  /** The regular local times; the demo adds one just after each start. */
  times: string[]
  instructions?: string
}

export interface DemoThreshold {
  ruleId: string
  reason: string
  override: Record<string, unknown>
  /** One line for the banner. */
  summary: string
}

export interface DemoPatient {
  id: string
  name: string
  username: string
  password: string
  condition: string
  devices: Array<{ id: string; kind: DeviceKind }>
  medication: DemoMedication
  /** The simulated patient confirms doses from their device (the others forget, now and then a missed dose). */
  confirmsDoses: boolean
  threshold?: DemoThreshold
}

const password = (username: string) => `demo-${username}-1234`

export const STAFF: readonly DemoStaff[] = [
  { role: 'provider', username: 'nurse', password: password('nurse'), name: `${DEMO_PREFIX}Nurse Nina Reyes` },
  { role: 'admin', username: 'admin', password: password('admin'), name: `${DEMO_PREFIX}Admin Alex Kim` },
]
export const PROVIDER = STAFF[0]!

export const PATIENTS: readonly DemoPatient[] = [
  {
    id: 'demo-ada',
    name: `${DEMO_PREFIX}Ada Okafor`,
    username: 'ada',
    password: password('ada'),
    condition: 'hypertension',
    devices: [
      { id: 'demo-ada-cuff', kind: 'bp_cuff' },
      { id: 'demo-ada-scale', kind: 'scale' },
    ],
    medication: { name: 'Lisinopril', dose: '10 mg', times: ['08:00'] },
    confirmsDoses: true,
  },
  {
    id: 'demo-ben',
    name: `${DEMO_PREFIX}Ben Carter`,
    username: 'ben',
    password: password('ben'),
    condition: 'type 2 diabetes',
    devices: [
      { id: 'demo-ben-glucometer', kind: 'glucometer' },
      { id: 'demo-ben-cuff', kind: 'bp_cuff' },
    ],
    medication: { name: 'Metformin', dose: '500 mg', times: ['08:00', '20:00'], instructions: 'With food' },
    confirmsDoses: true,
  },
  {
    id: 'demo-chloe',
    name: `${DEMO_PREFIX}Chloe Martin`,
    username: 'chloe',
    password: password('chloe'),
    condition: 'COPD',
    devices: [
      { id: 'demo-chloe-oximeter', kind: 'oximeter' },
      { id: 'demo-chloe-thermometer', kind: 'thermometer' },
    ],
    medication: { name: 'Tiotropium inhaler', dose: '2 puffs', times: ['09:00'] },
    // Chloe forgets: her dose turns into a missed-dose alert after the grace period (60 min).
    confirmsDoses: false,
    threshold: {
      ruleId: 'spo2-low',
      reason: 'COPD: baseline saturation 89-93% (demo)',
      override: {
        levels: [
          { severity: 'warning', any: { spo2Percent: '< 88' } },
          { severity: 'urgent', any: { spo2Percent: '< 85' } },
        ],
        clear: { all: { spo2Percent: '>= 90' } },
      },
      summary: 'SpO2 alert below 88% (urgent below 85%) instead of 92%',
    },
  },
  {
    id: 'demo-omar',
    name: `${DEMO_PREFIX}Omar Haddad`,
    username: 'omar',
    password: password('omar'),
    condition: 'heart failure',
    devices: [
      { id: 'demo-omar-scale', kind: 'scale' },
      { id: 'demo-omar-cuff', kind: 'bp_cuff' },
      { id: 'demo-omar-oximeter', kind: 'oximeter' },
    ],
    medication: { name: 'Furosemide', dose: '40 mg', times: ['08:00'] },
    confirmsDoses: true,
  },
]

export const patientById = (id: string): DemoPatient | undefined => PATIENTS.find((p) => p.id === id)

/** The sign-ins the banner prints: staff first, then one per patient. */
export function signIns(): Array<{ role: Role; username: string; password: string; name: string; patientId?: string }> {
  return [
    ...STAFF.map((s) => ({ role: s.role as Role, username: s.username, password: s.password, name: s.name })),
    ...PATIENTS.map((p) => ({ role: 'patient' as Role, username: p.username, password: p.password, name: p.name, patientId: p.id })),
  ]
}

for (const s of signIns()) {
  if (s.password.length < MIN_PASSWORD_LENGTH) throw new Error(`demo password for ${s.username} is shorter than ${MIN_PASSWORD_LENGTH} characters`)
}

// --- device secrets ---------------------------------------------------------------------------

/** The gateway keeps only hashes of device secrets: the demo keeps its devices' secrets here. */
export function devicesFile(dataDir: string): string {
  return path.join(dataDir, 'demo', 'devices.json')
}

export function readDeviceFile(dataDir: string): DeviceCredential[] {
  const file = devicesFile(dataDir)
  if (!existsSync(file)) return []
  const body = JSON.parse(readFileSync(file, 'utf8')) as { devices?: DeviceCredential[] }
  return Array.isArray(body.devices) ? body.devices : []
}

export function writeDeviceFile(dataDir: string, devices: readonly DeviceCredential[]): void {
  const file = devicesFile(dataDir)
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 })
  const tmp = `${file}.${process.pid}.tmp`
  const note = 'Secrets of the rpm-gateway demo\'s simulated devices (fake patients). The gateway keeps only their hashes.'
  writeFileSync(tmp, JSON.stringify({ note, devices: [...devices].sort((a, b) => a.deviceId.localeCompare(b.deviceId)) }, null, 2) + '\n', { mode: 0o600 })
  renameSync(tmp, file)
}

// --- seeding ------------------------------------------------------------------------------------

export interface SeedCounts {
  patients: number
  users: number
  devices: number
  careTeam: number
  onCall: number
  schedules: number
  thresholds: number
}

export interface SeedResult {
  created: SeedCounts
  /** True when nothing had to be created: the clinic was there from an earlier run. */
  reused: boolean
  credentials: DeviceCredential[]
  /** Patient id -> the medication schedule's id. */
  schedules: Map<string, string>
  providerUserId: string
}

const operator = () => {
  try {
    return os.userInfo().username
  } catch {
    return 'demo'
  }
}

async function exists<T>(lookup: () => Promise<T>): Promise<T | undefined> {
  try {
    return await lookup()
  } catch (err) {
    if (isRpmError(err) && err.code === 'RPM_ERR_NOT_FOUND') return undefined
    throw err
  }
}

/**
 * Seeds the clinic into a built (not necessarily started) gateway. What exists already is reused;
 * the device secrets of devices created now are written to <dataDir>/demo/devices.json.
 */
export async function seedClinic(gateway: Gateway, dataDir: string): Promise<SeedResult> {
  const { registry, users, audit, store, rules } = gateway
  const records = gateway.reminders.records
  const actorId = operator()
  const done = (action: string, target: string, details: Record<string, unknown> = {}) =>
    audit.record({ actorType: 'operator', actorId, action, target, outcome: 'allowed', details: { ...details, via: 'demo' } })
  const created: SeedCounts = { patients: 0, users: 0, devices: 0, careTeam: 0, onCall: 0, schedules: 0, thresholds: 0 }
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'

  // Patients.
  for (const p of PATIENTS) {
    if (await exists(() => registry.getPatient(p.id))) continue
    await registry.addPatient({ id: p.id, name: p.name, timezone: zone })
    done('patient.add', p.id)
    created.patients++
  }

  // People who sign in.
  const wanted: Array<{ username: string; password: string; role: Role; name: string; patientId?: string }> = [
    ...STAFF.map((s) => ({ username: s.username, password: s.password, role: s.role as Role, name: s.name })),
    ...PATIENTS.map((p) => ({ username: p.username, password: p.password, role: 'patient' as Role, name: p.name, patientId: p.id })),
  ]
  for (const u of wanted) {
    const found = await exists(() => users.byUsername(u.username))
    if (found) {
      if (found.role !== u.role || (u.patientId ?? null) !== found.patientId) {
        throw new RpmError('RPM_ERR_CONFLICT', `user ${u.username} in this data directory is a ${found.role}, not the demo's ${u.role}: run the demo with --reset`)
      }
      continue
    }
    const user = await users.add(u)
    done('user.add', user.id, { role: user.role })
    created.users++
  }
  const provider = await users.byUsername(PROVIDER.username)

  // Care teams: the nurse looks after every demo patient.
  for (const p of PATIENTS) {
    const team = await users.careTeam(p.id)
    if (team.some((m) => m.id === provider.id)) continue
    const m = await users.addToCareTeam(p.id, provider.username)
    done('careteam.add', p.id, { userId: m.userId })
    created.careTeam++
  }

  // On call: the nurse is the second escalation tier too (30 days, renewed by a later run).
  const nowIso = new Date().toISOString()
  const shift = await store.db.selectFrom('on_call').select('id')
    .where('user_id', '=', provider.id).where('starts_at', '<=', nowIso).where('ends_at', '>', nowIso).executeTakeFirst()
  if (!shift) {
    const s = await addOnCall(store, systemClock, { username: provider.username, endsAt: new Date(Date.now() + 30 * 86_400_000).toISOString() }, DEMO_ACTOR)
    done('oncall.add', s.userId, { shiftId: s.id })
    created.onCall++
  }

  // Devices, with their secrets kept next to the database.
  const known = new Map(readDeviceFile(dataDir).map((c) => [c.deviceId, c]))
  const credentials: DeviceCredential[] = []
  let newSecrets = false
  try {
    for (const p of PATIENTS) {
      for (const d of p.devices) {
        const row = await registry.findDeviceRow(d.id)
        const entry = known.get(d.id)
        if (row) {
          if (!entry?.secret || row.status !== 'active' || row.kind !== d.kind || row.patient_id !== p.id) {
            throw new RpmError(
              'RPM_ERR_CONFLICT',
              `device ${d.id} exists in ${dataDir} but ${!entry?.secret ? `its secret is not in ${devicesFile(dataDir)}` : 'it is not the demo\'s (disabled or changed)'}: run the demo with --reset to start over`,
            )
          }
          credentials.push(entry)
          continue
        }
        const device = await registry.addDevice({ patientId: p.id, id: d.id, kind: d.kind })
        done('device.add', device.id)
        const c: DeviceCredential = { deviceId: device.id, secret: device.secret, kind: device.kind, patientId: p.id, nextSeq: entry?.nextSeq ?? 1 }
        known.set(c.deviceId, c)
        credentials.push(c)
        newSecrets = true
        created.devices++
      }
    }
  } finally {
    // A secret exists only here: keep whatever was provisioned, even when a later step failed.
    if (newSecrets) writeDeviceFile(dataDir, [...known.values()].filter((c) => c.secret))
  }

  // Medication schedules: one per patient, found again by its medication.
  const schedules = new Map<string, string>()
  for (const p of PATIENTS) {
    const mine = records.schedules(p.id).find((s) => s.kind === 'medication' && s.medication === p.medication.name && s.active)
    if (mine) {
      // Drop the last run's demo dose before the gateway starts, so it is not caught up late now;
      // this run's comes with scheduleSoonDoses.
      const regular = [...p.medication.times].sort()
      if (JSON.stringify(mine.times) !== JSON.stringify(regular)) {
        records.updateSchedule(mine.id, { times: regular })
        done('reminder.update', p.id, { scheduleId: mine.id })
      }
      schedules.set(p.id, mine.id)
      continue
    }
    const { schedule, created: isNew } = records.createScheduleOnce(p.id, {
      kind: 'medication',
      medication: p.medication.name,
      dose: p.medication.dose,
      times: p.medication.times,
      ...(p.medication.instructions ? { instructions: p.medication.instructions } : {}),
      clientRequestId: `demo-${p.id}-medication`,
    }, DEMO_ACTOR)
    if (isNew) {
      done('reminder.create', p.id, { scheduleId: schedule.id, kind: schedule.kind })
      created.schedules++
    }
    schedules.set(p.id, schedule.id)
  }

  // Per-patient thresholds, set as the nurse would through PUT /patients/{id}/thresholds/{rule}.
  for (const p of PATIENTS) {
    if (!p.threshold) continue
    const t = p.threshold
    const current = rules.effectiveRules(p.id).find((e) => e.rule.id === t.ruleId)
    if (!current) throw new RpmError('RPM_ERR_CONFIG_INVALID', `the rules in force have no rule ${t.ruleId}, which the demo tunes for ${p.id}`)
    if (current.override && JSON.stringify(current.override.override) === JSON.stringify(t.override)) continue
    const { version } = rules.setOverride(p.id, t.ruleId, t.override, t.reason, provider.id)
    done('thresholds.change', p.id, { ruleId: t.ruleId, version })
    created.thresholds++
  }

  const reused = Object.values(created).every((n) => n === 0)
  return { created, reused, credentials, schedules, providerUserId: provider.id }
}

/**
 * Moves each patient's demo dose to the first whole minute at least `leadMs` from now (the
 * reminder clock works in local HH:MM), keeping the regular times. Called on every run, after the
 * gateway started: the same schedule, updated, never a second one. Returns when it is due.
 */
export function scheduleSoonDoses(gateway: Gateway, schedules: Map<string, string>, leadMs: number, now = Date.now()): { dueAt: string; localTime: string } {
  const records = gateway.reminders.records
  const dueMs = Math.ceil((now + leadMs) / 60_000) * 60_000
  let localTime = ''
  let dueAt = new Date(dueMs).toISOString()
  for (const p of PATIENTS) {
    const id = schedules.get(p.id)
    if (!id) continue
    const row = records.scheduleRow(id)
    const zone = row?.timezone ?? row?.patient_timezone ?? 'UTC'
    localTime = DateTime.fromMillis(dueMs, { zone }).toFormat('HH:mm')
    const times = [...new Set([localTime, ...p.medication.times])].sort()
    const s = records.updateSchedule(id, { times })
    if (s.nextDueAt) dueAt = s.nextDueAt
    gateway.audit.record({ actorType: 'operator', actorId: operator(), action: 'reminder.update', target: p.id, outcome: 'allowed', details: { scheduleId: id, via: 'demo' } })
  }
  return { dueAt, localTime }
}
