// One patient for the care team: open alerts, vitals charts (7/30/90 days) with the patient's
// limits, the readings table, medications and adherence, thresholds, devices.
import { useEffect, useState } from 'preact/hooks'
import type { Adherence, Device, Occurrence, Page, Patient, PatientRule, Reading, ReminderSchedule } from '../api/types.ts'
import { ApiError, describeError } from '../api/http.ts'
import { AlertItem } from './alerts.tsx'
import { Ago, ErrorNote, Loading, OnlineState, PageHeading, When } from '../components/common.tsx'
import { Medications } from '../components/medications.tsx'
import { ReadingsTable } from '../components/readings-table.tsx'
import { ThresholdsEditor } from '../components/thresholds-editor.tsx'
import { VitalsChart, type Series } from '../components/vitals-chart.tsx'
import { DEVICE_LABEL } from '../lib/format.ts'
import { Link } from '../lib/router.tsx'
import { useStore } from '../lib/store.ts'
import { thresholdLines } from '../lib/thresholds.ts'
import { useConsole } from '../state/console.ts'
import { useThreadList } from '../state/threads.ts'

const RANGES = [7, 30, 90] as const
const MAX_PAGES = 10

const CHARTS: Array<{ type: string; title: string; unit: string; digits: number; fields: Array<{ field: string; name: string; short?: string }> }> = [
  { type: 'blood_pressure', title: 'Blood pressure', unit: 'mmHg', digits: 0, fields: [{ field: 'systolicMmHg', name: 'Systolic', short: 'sys' }, { field: 'diastolicMmHg', name: 'Diastolic', short: 'dia' }] },
  { type: 'glucose', title: 'Glucose', unit: 'mg/dL', digits: 0, fields: [{ field: 'glucoseMgDl', name: 'Glucose' }] },
  { type: 'spo2', title: 'SpO2', unit: '%', digits: 0, fields: [{ field: 'spo2Percent', name: 'SpO2' }] },
  { type: 'heart_rate', title: 'Heart rate', unit: 'bpm', digits: 0, fields: [{ field: 'heartRateBpm', name: 'Heart rate' }] },
  { type: 'weight', title: 'Weight', unit: 'kg', digits: 1, fields: [{ field: 'weightKg', name: 'Weight' }] },
]

export function PatientPage({ patientId }: { patientId: string }) {
  const c = useConsole()
  const alerts = useStore(c.alerts.all)
  useThreadList(c.threads)
  const [patient, setPatient] = useState<Patient | null>(c.patients.all.value.get(patientId) ?? null)
  const [error, setError] = useState<string | null>(null)
  const [noClinicalAccess, setNoClinicalAccess] = useState(false)
  const [rules, setRules] = useState<PatientRule[]>([])
  const [devices, setDevices] = useState<Device[]>([])
  const [schedules, setSchedules] = useState<ReminderSchedule[]>([])
  const [adherence, setAdherence] = useState<Adherence | null>(null)
  const [occurrences, setOccurrences] = useState<Occurrence[]>([])
  const [generation, setGeneration] = useState(0)
  const p = encodeURIComponent(patientId)

  const loadRules = () => c.api.get<{ items: PatientRule[] }>(`/patients/${p}/thresholds`).then((r) => setRules(r.items))

  useEffect(() => {
    setError(null)
    c.api.get<Patient>(`/patients/${p}`).then(setPatient, (err: unknown) => setError(describeError(err)))
    c.api.get<{ items: Device[] }>(`/patients/${p}/devices`).then((r) => setDevices(r.items), () => {})
    loadRules().catch(() => {})
    void c.alerts.load()
    // Clinical data: an admin sees it only with break-glass access (docs/api.md "Who sees what").
    c.api.get<{ items: ReminderSchedule[] }>(`/patients/${p}/reminders`).then(
      (r) => {
        setSchedules(r.items)
        setNoClinicalAccess(false)
      },
      (err: unknown) => {
        if (err instanceof ApiError && (err.status === 404 || err.status === 403)) setNoClinicalAccess(true)
      },
    )
    c.api.get<Adherence>(`/patients/${p}/adherence`).then(setAdherence, () => {})
    c.api.get<{ items: Occurrence[] }>(`/patients/${p}/reminders/occurrences`, { limit: 20 }).then((r) => setOccurrences(r.items), () => {})
  }, [patientId, generation])

  if (error && !patient) return <ErrorNote>{error}</ErrorNote>
  if (!patient) return <Loading label="Loading the patient…" />

  const active = [...alerts.values()].filter((a) => a.patientId === patientId && a.status !== 'resolved')
  const unread = c.threads.unreadFor(patientId)
  const canEdit = c.user.role === 'provider'

  return (
    <>
      <PageHeading title={patient.name} router={c.router} docTitle={`${patient.name} – Patients`} />
      <p class="lead">
        Time zone {patient.timezone}.{' '}
        <Link router={c.router} href={`/patients/${p}/thread`} class="btn btn-primary">
          Messages{unread > 0 ? ` (${unread} unread)` : ''}
        </Link>
      </p>
      <nav aria-label="Sections of this page" class="toc">
        <ul>
          <li>
            <a href="#alerts">Open alerts</a>
          </li>
          <li>
            <a href="#vitals">Vitals</a>
          </li>
          <li>
            <a href="#readings">Readings</a>
          </li>
          <li>
            <a href="#medications">Medications</a>
          </li>
          <li>
            <a href="#thresholds">Alert limits</a>
          </li>
          <li>
            <a href="#devices">Devices</a>
          </li>
        </ul>
      </nav>

      {noClinicalAccess && <BreakGlass patientId={patientId} onGranted={() => setGeneration((g) => g + 1)} />}

      <section id="alerts" aria-labelledby="alerts-heading">
        <h2 id="alerts-heading">Open alerts</h2>
        {active.length === 0 ? (
          <p>No open alerts.</p>
        ) : (
          <ol class="alert-list">
            {active
              .sort((a, b) => ['critical', 'urgent', 'warning', 'info'].indexOf(a.severity) - ['critical', 'urgent', 'warning', 'info'].indexOf(b.severity))
              .map((a) => (
                <li key={a.id}>
                  <AlertItem alert={a} isNew={false} focus={false} headingLevel={3} />
                </li>
              ))}
          </ol>
        )}
      </section>

      {!noClinicalAccess && (
        <>
          <section id="vitals" aria-labelledby="vitals-heading">
            <h2 id="vitals-heading">Vitals</h2>
            <Vitals patientId={patientId} rules={rules} key={generation} />
          </section>
          <section id="readings" aria-labelledby="readings-heading">
            <h2 id="readings-heading">Readings</h2>
            <ReadingsTable patientId={patientId} devices={devices} key={generation} />
          </section>
          <section id="medications" aria-labelledby="medications-heading">
            <h2 id="medications-heading">Medications and adherence</h2>
            <Medications schedules={schedules} adherence={adherence} occurrences={occurrences} />
          </section>
        </>
      )}

      <section id="thresholds" aria-labelledby="thresholds-heading">
        <h2 id="thresholds-heading">Alert limits for this patient</h2>
        <p class="muted">The clinic’s rules as they apply to {patient.name}. A change needs a reason and is kept as a new version.</p>
        <ThresholdsEditor patientId={patientId} rules={rules} canEdit={canEdit} onChanged={() => void loadRules()} />
      </section>

      <section id="devices" aria-labelledby="devices-heading">
        <h2 id="devices-heading">Devices</h2>
        <DevicesTable devices={devices} />
      </section>
    </>
  )
}

function Vitals({ patientId, rules }: { patientId: string; rules: PatientRule[] }) {
  const c = useConsole()
  const [days, setDays] = useState<(typeof RANGES)[number]>(30)
  const [readings, setReadings] = useState<Reading[] | null>(null)
  const [error, setError] = useState<string | null>(null)
  const [to, setTo] = useState(Date.now())
  const from = to - days * 86_400_000

  useEffect(() => {
    let live = true
    const now = Date.now()
    setTo(now)
    setReadings(null)
    setError(null)
    ;(async () => {
      const items: Reading[] = []
      let cursor: string | null = null
      for (let i = 0; i < MAX_PAGES; i++) {
        const page: Page<Reading> = await c.api.get<Page<Reading>>(`/patients/${encodeURIComponent(patientId)}/readings`, { since: new Date(now - days * 86_400_000).toISOString(), limit: 500, cursor })
        items.push(...page.items)
        cursor = page.nextCursor
        if (!cursor) break
      }
      if (live) setReadings(items)
    })().catch((err: unknown) => live && setError(describeError(err)))
    return () => {
      live = false
    }
  }, [patientId, days])

  useEffect(
    () =>
      c.socket.events.on('reading', (e) => {
        if (e.patientId !== patientId) return
        setTo(Date.now())
        setReadings((rs) => (rs && !rs.some((r) => r.id === e.reading.id) ? [{ ...e.reading, patientId }, ...rs] : rs))
      }),
    [patientId],
  )

  return (
    <div>
      <fieldset class="segmented">
        <legend>Time range</legend>
        {RANGES.map((d) => (
          <label key={d} class={days === d ? 'is-checked' : ''}>
            <input type="radio" name="vitals-range" value={String(d)} checked={days === d} onChange={() => setDays(d)} />
            {d} days
          </label>
        ))}
      </fieldset>
      <ErrorNote>{error}</ErrorNote>
      {!readings ? (
        <Loading label="Loading readings…" />
      ) : (
        <div class="charts">
          {CHARTS.map((chart) => {
            const ofType = readings.filter((r) => r.type === chart.type).sort((a, b) => Date.parse(a.measuredAt) - Date.parse(b.measuredAt))
            const series: Series[] = chart.fields.map((f, i) => ({
              name: f.name,
              field: f.field,
              style: i === 0 ? 'solid' : 'dashed',
              points: ofType.filter((r) => typeof r.values[f.field] === 'number').map((r) => ({ t: Date.parse(r.measuredAt), v: r.values[f.field]! })),
            }))
            return (
              <div class="chart-card" key={chart.type}>
                <h3>{chart.title}</h3>
                <VitalsChart
                  title={chart.title}
                  unit={chart.unit}
                  digits={chart.digits}
                  series={series}
                  thresholds={thresholdLines(rules, chart.type)}
                  from={from}
                  to={to}
                  days={days}
                  fieldShort={Object.fromEntries(chart.fields.map((f) => [f.field, f.short ?? f.name]))}
                />
              </div>
            )
          })}
        </div>
      )}
    </div>
  )
}

function DevicesTable({ devices }: { devices: Device[] }) {
  if (devices.length === 0) return <p>No devices.</p>
  return (
    <div class="table-wrap" tabIndex={0} role="region" aria-labelledby="devices-caption">
      <table>
        <caption id="devices-caption">Devices of this patient</caption>
        <thead>
          <tr>
            <th scope="col">Device</th>
            <th scope="col">Id</th>
            <th scope="col">Connection</th>
            <th scope="col">Last seen</th>
            <th scope="col">Added</th>
          </tr>
        </thead>
        <tbody>
          {devices.map((d) => (
            <tr key={d.id}>
              <th scope="row">{DEVICE_LABEL[d.kind] ?? d.kind}</th>
              <td>
                <code>{d.id}</code>
              </td>
              <td>{d.status === 'disabled' ? 'Disabled' : <OnlineState online={d.online} />}</td>
              <td>
                <Ago iso={d.lastSeenAt} />
              </td>
              <td>
                <When iso={d.createdAt} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  )
}

/** Admins read clinical data only through audited, expiring break-glass access. */
function BreakGlass({ patientId, onGranted }: { patientId: string; onGranted: () => void }) {
  const c = useConsole()
  const [reason, setReason] = useState('')
  const [minutes, setMinutes] = useState('30')
  const [error, setError] = useState<string | null>(null)
  const [busy, setBusy] = useState(false)
  if (c.user.role !== 'admin') return <p class="note note-info">You do not have access to this patient’s clinical record.</p>
  return (
    <section aria-labelledby="bg-heading" class="panel">
      <h2 id="bg-heading">Emergency access</h2>
      <p>Administrators see clinical data only with emergency (break-glass) access. It is recorded with your reason and ends on its own.</p>
      <form
        onSubmit={async (e) => {
          e.preventDefault()
          if (reason.trim().length < 10) return setError('Give a reason of at least 10 characters.')
          setBusy(true)
          setError(null)
          try {
            await c.api.post('/break-glass', { patientId, reason: reason.trim(), minutes: Number(minutes) })
            c.announcer.say('Emergency access granted.')
            onGranted()
          } catch (err) {
            setError(describeError(err))
          } finally {
            setBusy(false)
          }
        }}
      >
        <div class="field">
          <label for="bg-reason">Reason (required)</label>
          <textarea id="bg-reason" rows={2} minLength={10} maxLength={500} required value={reason} onInput={(e) => setReason(e.currentTarget.value)} />
        </div>
        <div class="field inline-field">
          <label for="bg-minutes">For</label>
          <select id="bg-minutes" value={minutes} onChange={(e) => setMinutes(e.currentTarget.value)}>
            <option value="15">15 minutes</option>
            <option value="30">30 minutes</option>
            <option value="60">1 hour</option>
          </select>
        </div>
        <button type="submit" class="btn btn-primary" disabled={busy}>
          Request emergency access
        </button>
        <ErrorNote>{error}</ErrorNote>
      </form>
    </section>
  )
}
