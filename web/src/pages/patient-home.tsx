// The patient's page: medicines, latest readings in plain words, messages with the care team,
// and notifications in this browser. Large text and controls (html.patient-view).
import { useEffect, useState } from 'preact/hooks'
import type { Occurrence, Page, PatientRule, Reading, ReminderSchedule } from '../api/types.ts'
import { describeError } from '../api/http.ts'
import { ErrorNote, Loading, PageHeading } from '../components/common.tsx'
import { scheduleName } from '../components/medications.tsx'
import { ThreadPanel } from '../components/thread.tsx'
import { friendlyTime } from '../lib/format.ts'
import { plainReading } from '../lib/plain.ts'
import { useStore } from '../lib/store.ts'
import { useConsole } from '../state/console.ts'

const ORDER = ['blood_pressure', 'glucose', 'spo2', 'heart_rate', 'weight', 'temperature']

export function PatientHome() {
  const c = useConsole()
  const patientId = c.user.patientId
  const occurrences = useStore(c.occurrences)
  const [threadId, setThreadId] = useState<string | undefined>(patientId ? c.threads.threadIdOf(patientId) : undefined)
  const [rules, setRules] = useState<PatientRule[] | undefined>(undefined)
  const [latest, setLatest] = useState<Map<string, Reading> | null>(null)
  const [schedules, setSchedules] = useState<ReminderSchedule[]>([])
  const [today, setToday] = useState<Occurrence[]>([])
  const [error, setError] = useState<string | null>(null)

  useEffect(() => {
    if (!patientId) return
    const p = encodeURIComponent(patientId)
    c.threads.forPatient(patientId).then(
      (v) => setThreadId(v.id),
      (err: unknown) => setError(describeError(err)),
    )
    c.api.get<{ items: PatientRule[] }>(`/patients/${p}/thresholds`).then((r) => setRules(r.items), () => setRules([]))
    c.api.get<Page<Reading>>(`/patients/${p}/readings`, { limit: 100 }).then(
      (r) => {
        const m = new Map<string, Reading>()
        for (const x of r.items) if (!m.has(x.type)) m.set(x.type, x)
        setLatest(m)
      },
      () => setLatest(new Map()),
    )
    c.api.get<{ items: ReminderSchedule[] }>(`/patients/${p}/reminders`).then((r) => setSchedules(r.items.filter((s) => s.active && s.kind === 'medication')), () => {})
    const since = new Date()
    since.setHours(0, 0, 0, 0)
    c.api.get<{ items: Occurrence[] }>(`/patients/${p}/reminders/occurrences`, { since: new Date(since.getTime() - 86_400_000).toISOString(), limit: 100 }).then(
      (r) => {
        const next = new Map(c.occurrences.value)
        for (const o of r.items) next.set(o.id, o.status)
        c.occurrences.set(next)
        setToday(r.items.filter((o) => o.kind === 'medication' && Date.parse(o.dueAt) >= since.getTime()).reverse())
      },
      () => {},
    )
  }, [patientId])

  useEffect(
    () =>
      c.socket.events.on('reading', (e) => {
        if (e.patientId !== patientId) return
        setLatest((m) => {
          const next = new Map(m ?? [])
          const held = next.get(e.reading.type)
          if (!held || Date.parse(held.measuredAt) <= Date.parse(e.reading.measuredAt)) next.set(e.reading.type, { ...e.reading, patientId })
          return next
        })
      }),
    [patientId],
  )

  if (!patientId) return <ErrorNote>This account is not linked to a patient record. Please ask the clinic.</ErrorNote>
  const first = c.user.name?.split(' ')[0] || c.user.username

  const goToReminder = (occurrenceId: string) => {
    const el = document.querySelector<HTMLElement>(`[data-occurrence="${CSS.escape(occurrenceId)}"] button`)
    if (el) {
      el.scrollIntoView({ block: 'center' })
      el.focus()
    }
  }

  return (
    <>
      <PageHeading title={`Hello, ${first}`} router={c.router} docTitle="Your page" />
      <p class="lead">Here you can see your readings, your medicines, and talk with your care team.</p>

      {schedules.length > 0 && (
        <section aria-labelledby="medicines-heading" class="panel">
          <h2 id="medicines-heading">Your medicines</h2>
          <ul class="big-list">
            {schedules.map((s) => (
              <li key={s.id}>
                {scheduleName(s)} at {s.times.join(' and ')}
                {s.instructions ? `. ${s.instructions}` : ''}
              </li>
            ))}
          </ul>
          {today.length > 0 && (
            <>
              <h3>Today</h3>
              <ul class="big-list">
                {today.map((o) => {
                  const status = occurrences.get(o.id) ?? o.status
                  return (
                    <li key={o.id}>
                      {o.localTime} {scheduleName(o)}:{' '}
                      {status === 'taken' ? (
                        <strong class="ok-text">✓ taken</strong>
                      ) : status === 'missed' ? (
                        <strong>not confirmed in time</strong>
                      ) : (
                        <>
                          <strong>waiting for you</strong>{' '}
                          <button type="button" class="btn btn-link-like" onClick={() => goToReminder(o.id)}>
                            Show the reminder<span class="sr-only"> for {scheduleName(o)} at {o.localTime}</span>
                          </button>
                        </>
                      )}
                    </li>
                  )
                })}
              </ul>
            </>
          )}
        </section>
      )}

      <section aria-labelledby="readings-heading" class="panel">
        <h2 id="readings-heading">Your latest readings</h2>
        {!latest ? (
          <Loading label="Loading your readings…" />
        ) : latest.size === 0 ? (
          <p>No readings yet. When you use your devices, your readings show here.</p>
        ) : (
          <ul class="big-list readings-plain">
            {ORDER.filter((t) => latest.has(t)).map((t) => {
              const r = latest.get(t)!
              return (
                <li key={t}>
                  <strong>{plainReading(r.type, r.values, rules)}</strong>
                  <span class="muted">, {friendlyTime(r.measuredAt)}</span>
                </li>
              )
            })}
          </ul>
        )}
      </section>

      {/* No aria-labelledby here: a region named "Messages" would share the composer's label "Message". */}
      <section id="messages" class="panel">
        <h2 id="messages-heading">Messages</h2>
        <p>Write to your care team here. In an emergency, call your local emergency number.</p>
        <ErrorNote>{error}</ErrorNote>
        {threadId ? <ThreadPanel threadId={threadId} patientId={patientId} variant="patient" rules={rules} /> : !error && <Loading label="Loading your messages…" />}
      </section>

      <section aria-labelledby="notifications-heading" class="panel">
        <h2 id="notifications-heading">Notifications</h2>
        <NotificationsControl />
      </section>
    </>
  )
}

export function NotificationsControl() {
  const c = useConsole()
  const status = useStore(c.push.status)
  return (
    <div class="notifications">
      <p role="status">{status.message}</p>
      {status.state === 'on' ? (
        <button type="button" class="btn btn-large" onClick={() => void c.push.disable()}>
          Turn off notifications
        </button>
      ) : status.state !== 'unsupported' ? (
        <button type="button" class="btn btn-primary btn-large" disabled={status.state === 'working' || status.state === 'checking'} onClick={() => void c.push.enable()}>
          Turn on notifications
        </button>
      ) : null}
      <p class="muted small">Notifications only say that something new is waiting; they never show your health details.</p>
    </div>
  )
}
