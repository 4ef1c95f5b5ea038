// The patient list: latest vitals, devices, open alerts, 7-day adherence, unread messages;
// search by name, filter by open alerts and offline devices.
import { useEffect, useState } from 'preact/hooks'
import type { Device, Patient } from '../api/types.ts'
import { Ago, ErrorNote, Loading, OnlineState, PageHeading, SeverityBadge } from '../components/common.tsx'
import { DEVICE_LABEL, formatValues, percent, readingLabel } from '../lib/format.ts'
import { Link } from '../lib/router.tsx'
import { useStore } from '../lib/store.ts'
import { useConsole } from '../state/console.ts'
import { useThreadList } from '../state/threads.ts'

const VITAL_ORDER = ['blood_pressure', 'glucose', 'spo2', 'heart_rate', 'weight', 'temperature']

function hasOffline(devices: Device[]): boolean {
  return devices.some((d) => d.status === 'active' && !d.online)
}

export function PatientsPage() {
  const c = useConsole()
  const patients = useStore(c.patients.all)
  const loaded = useStore(c.patients.loaded)
  const error = useStore(c.patients.error)
  const alerts = useStore(c.alerts.all)
  useStore(c.summaries.version)
  useThreadList(c.threads)
  const [query, setQuery] = useState('')
  const [withAlerts, setWithAlerts] = useState(false)
  const [offline, setOffline] = useState(false)

  useEffect(() => {
    void c.patients.load()
    void c.alerts.load()
    void c.threads.loadList().catch(() => {})
  }, [])
  useEffect(() => {
    void c.summaries.load([...patients.keys()])
  }, [patients])

  const activeByPatient = new Map<string, number>()
  const worst = new Map<string, string>()
  for (const a of alerts.values()) {
    if (a.status === 'resolved') continue
    activeByPatient.set(a.patientId, (activeByPatient.get(a.patientId) ?? 0) + 1)
    const rank = ['critical', 'urgent', 'warning', 'info']
    const w = worst.get(a.patientId)
    if (!w || rank.indexOf(a.severity) < rank.indexOf(w)) worst.set(a.patientId, a.severity)
  }

  const q = query.trim().toLowerCase()
  const all = [...patients.values()].sort((a, b) => a.name.localeCompare(b.name))
  const shown = all.filter((p) => {
    if (q && !p.name.toLowerCase().includes(q)) return false
    if (withAlerts && !activeByPatient.get(p.id)) return false
    if (offline && !hasOffline(c.summaries.get(p.id)?.devices ?? [])) return false
    return true
  })

  return (
    <>
      <PageHeading title="Patients" router={c.router} />
      <form class="filters" role="search" aria-label="Find patients" onSubmit={(e) => e.preventDefault()}>
        <div class="field">
          <label for="patient-search">Search by name</label>
          <input id="patient-search" type="search" value={query} onInput={(e) => setQuery(e.currentTarget.value)} autoComplete="off" />
        </div>
        <fieldset class="checks">
          <legend>Show only patients</legend>
          <label>
            <input type="checkbox" checked={withAlerts} onChange={(e) => setWithAlerts(e.currentTarget.checked)} /> Has open alerts
          </label>
          <label>
            <input type="checkbox" checked={offline} onChange={(e) => setOffline(e.currentTarget.checked)} /> Device offline
          </label>
        </fieldset>
      </form>
      <ErrorNote>{error}</ErrorNote>
      <p role="status" class="muted">
        {loaded ? `Showing ${shown.length} of ${all.length} patient${all.length === 1 ? '' : 's'}.` : ''}
      </p>
      {!loaded ? (
        <Loading label="Loading patients…" />
      ) : (
        <div class="table-wrap" tabIndex={0} role="region" aria-labelledby="patients-caption">
          <table class="patients-table">
            <caption id="patients-caption">Patients on your care teams</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Latest vitals</th>
                <th scope="col">Devices</th>
                <th scope="col">Open alerts</th>
                <th scope="col">Adherence, 7 days</th>
                <th scope="col">Messages</th>
              </tr>
            </thead>
            <tbody>
              {shown.map((p) => (
                <PatientRow key={p.id} p={p} open={activeByPatient.get(p.id) ?? 0} worst={worst.get(p.id)} />
              ))}
              {shown.length === 0 && (
                <tr>
                  <td colSpan={6}>No patients match.</td>
                </tr>
              )}
            </tbody>
          </table>
        </div>
      )}
    </>
  )
}

function PatientRow({ p, open, worst }: { p: Patient; open: number; worst: string | undefined }) {
  const c = useConsole()
  const s = c.summaries.get(p.id)
  const unread = c.threads.unreadFor(p.id)
  const href = `/patients/${encodeURIComponent(p.id)}`
  const latest = s ? VITAL_ORDER.map((t) => s.latest.get(t)).filter((r) => r !== undefined) : []
  const rate = s?.adherence?.last7Days
  return (
    <tr>
      <th scope="row">
        <Link router={c.router} href={href}>
          {p.name}
        </Link>
      </th>
      <td>
        {!s?.loaded ? (
          <span class="muted">Loading…</span>
        ) : latest.length === 0 ? (
          <span class="muted">No readings</span>
        ) : (
          <ul class="compact">
            {latest.map((r) => (
              <li key={r.type}>
                {readingLabel(r.type)} {formatValues(r.type, r.values)}, <Ago iso={r.measuredAt} />
              </li>
            ))}
          </ul>
        )}
      </td>
      <td>
        {s?.loaded &&
          (s.devices.length === 0 ? (
            <span class="muted">None</span>
          ) : (
            <ul class="compact">
              {s.devices.map((d) => (
                <li key={d.id}>
                  {DEVICE_LABEL[d.kind] ?? d.kind}: {d.status === 'disabled' ? 'Disabled' : <OnlineState online={d.online} />}
                  {d.status !== 'disabled' && !d.online && (
                    <>
                      , last seen <Ago iso={d.lastSeenAt} />
                    </>
                  )}
                </li>
              ))}
            </ul>
          ))}
      </td>
      <td>
        {open > 0 ? (
          <span class="open-alerts">
            {open} {worst && <SeverityBadge severity={worst as 'critical'} />}
          </span>
        ) : (
          <span>0</span>
        )}
      </td>
      <td>{!s?.loaded ? '' : rate && rate.rate !== null ? `${percent(rate.rate)} (${rate.taken} of ${rate.taken + rate.missed} doses)` : <span class="muted">No doses due</span>}</td>
      <td>
        <Link router={c.router} href={`${href}/thread`}>
          {unread > 0 ? `${unread} unread` : 'Open'}
          <span class="sr-only"> messages with {p.name}</span>
        </Link>
        {s?.error && <ErrorNote>Some details could not be loaded.</ErrorNote>}
      </td>
    </tr>
  )
}
