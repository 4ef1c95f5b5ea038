// Medication and measurement schedules with adherence over 7 and 30 days, and recent doses
// (docs/reminders.md).
import type { Adherence, Occurrence, ReminderSchedule } from '../api/types.ts'
import { percent, readingLabel } from '../lib/format.ts'
import { When } from './common.tsx'

const DAY = ['', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun']

export function scheduleName(s: { kind: string; medication: string | null; dose: string | null; readingType: string | null }): string {
  return s.kind === 'medication' ? [s.medication, s.dose].filter(Boolean).join(' ') : `Measure ${readingLabel(s.readingType ?? '').toLowerCase()}`
}

function days(d: number[]): string {
  return d.length === 7 ? 'every day' : d.map((x) => DAY[x]).join(', ')
}

const STATUS: Record<string, string> = { taken: 'Taken', missed: 'Missed', pending: 'Waiting', done: 'Done' }

export function Medications({ schedules, adherence, occurrences }: { schedules: ReminderSchedule[]; adherence: Adherence | null; occurrences: Occurrence[] }) {
  const rateOf = (id: string, w: 'last7Days' | 'last30Days') => {
    const s = adherence?.[w].schedules.find((x) => x.scheduleId === id)
    return s ? `${percent(s.rate)}${s.rate !== null ? ` (${s.taken + s.done} of ${s.taken + s.done + s.missed})` : ''}` : '–'
  }
  return (
    <div class="medications">
      {adherence && (
        <p>
          Medication adherence: <strong>{percent(adherence.last7Days.rate)}</strong> over 7 days ({adherence.last7Days.taken} taken, {adherence.last7Days.missed} missed), <strong>{percent(adherence.last30Days.rate)}</strong> over 30 days.
          {adherence.last7Days.unscheduled > 0 && ` ${adherence.last7Days.unscheduled} extra dose(s) recorded outside the schedule this week.`}
        </p>
      )}
      <div class="table-wrap" tabIndex={0} role="region" aria-labelledby="schedules-caption">
        <table>
          <caption id="schedules-caption">Schedules</caption>
          <thead>
            <tr>
              <th scope="col">Medication or measurement</th>
              <th scope="col">Times</th>
              <th scope="col">Next</th>
              <th scope="col">Adherence, 7 days</th>
              <th scope="col">Adherence, 30 days</th>
            </tr>
          </thead>
          <tbody>
            {schedules.map((s) => (
              <tr key={s.id} class={s.active ? '' : 'inactive'}>
                <th scope="row">
                  {scheduleName(s)}
                  {s.instructions ? <span class="muted small"> – {s.instructions}</span> : null}
                  {!s.active && <span class="status-tag">Stopped</span>}
                </th>
                <td>
                  {s.times.join(', ')}, {days(s.days)}
                </td>
                <td>{s.active ? <When iso={s.nextDueAt} /> : '–'}</td>
                <td>{rateOf(s.id, 'last7Days')}</td>
                <td>{rateOf(s.id, 'last30Days')}</td>
              </tr>
            ))}
            {schedules.length === 0 && (
              <tr>
                <td colSpan={5}>No schedules.</td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      {occurrences.length > 0 && (
        <div class="table-wrap" tabIndex={0} role="region" aria-labelledby="doses-caption">
          <table>
            <caption id="doses-caption">Recent reminders, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Due</th>
                <th scope="col">What</th>
                <th scope="col">Status</th>
              </tr>
            </thead>
            <tbody>
              {occurrences.map((o) => (
                <tr key={o.id}>
                  <td>
                    <When iso={o.dueAt} />
                  </td>
                  <td>{scheduleName(o)}</td>
                  <td>
                    <span class={`status-tag status-occ-${o.status}`}>{STATUS[o.status] ?? o.status}</span>
                    {o.takenAt && (
                      <>
                        {' '}
                        at <When iso={o.takenAt} />
                      </>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  )
}
