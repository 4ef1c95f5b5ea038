// Acknowledge, Resolve (with a note) and Snooze (minutes) for one alert (docs/rules.md "API and
// WebSocket"). Each button's accessible name is exactly its word; the alert it belongs to is
// its description (aria-describedby), so "Acknowledge" stays a stable name to find.
import { useRef, useState } from 'preact/hooks'
import type { Alert } from '../api/types.ts'
import { describeError } from '../api/http.ts'
import { MAX_SNOOZE_MINUTES } from '../state/alerts.ts'
import { useConsole } from '../state/console.ts'
import { ErrorNote, focusOnMount, useId } from './common.tsx'

const SNOOZE_CHOICES = [15, 30, 60, 120, 240, 480, 720, 1440]

function minutesLabel(m: number): string {
  return m < 60 ? `${m} minutes` : m === 60 ? '1 hour' : m % 60 === 0 ? `${m / 60} hours` : `${m} minutes`
}

export function AlertActions({ alert, describedBy }: { alert: Alert; describedBy?: string }) {
  const c = useConsole()
  const [mode, setMode] = useState<'idle' | 'resolve' | 'snooze'>('idle')
  const [busy, setBusy] = useState(false)
  const [error, setError] = useState<string | null>(null)
  const [note, setNote] = useState('')
  const max = MAX_SNOOZE_MINUTES[alert.severity]
  const choices = SNOOZE_CHOICES.filter((m) => m <= max)
  const [minutes, setMinutes] = useState(String(Math.min(60, max)))
  const [reason, setReason] = useState('')
  const noteId = useId('resolve-note')
  const minutesId = useId('snooze-minutes')
  const reasonId = useId('snooze-reason')
  const toggleRef = useRef<HTMLDivElement>(null)

  if (alert.status === 'resolved') return null
  if (c.user.role === 'patient') return null

  const run = async (what: () => Promise<void>, done: string) => {
    setBusy(true)
    setError(null)
    try {
      await what()
      c.announcer.say(done)
      setMode('idle')
      setNote('')
      setReason('')
    } catch (err) {
      setError(describeError(err))
    } finally {
      setBusy(false)
    }
  }

  const cancel = () => {
    setMode('idle')
    setError(null)
    requestAnimationFrame(() => toggleRef.current?.querySelector<HTMLButtonElement>('button')?.focus())
  }

  if (mode === 'resolve') {
    return (
      <form
        class="alert-form"
        onSubmit={(e) => {
          e.preventDefault()
          if (!note.trim()) return setError('Write a note saying how the alert was resolved.')
          void run(() => c.alerts.resolve(alert.id, note.trim()), 'Alert resolved.')
        }}
      >
        <label for={noteId}>Resolution note</label>
        <textarea id={noteId} required rows={2} maxLength={2000} value={note} onInput={(e) => setNote(e.currentTarget.value)} ref={focusOnMount} aria-describedby={describedBy} />
        <div class="button-row">
          <button type="submit" class="btn btn-primary" disabled={busy} aria-describedby={describedBy}>
            Resolve
          </button>
          <button type="button" class="btn" onClick={cancel}>
            Cancel
          </button>
        </div>
        <ErrorNote>{error}</ErrorNote>
      </form>
    )
  }

  if (mode === 'snooze') {
    return (
      <form
        class="alert-form"
        onSubmit={(e) => {
          e.preventDefault()
          void run(() => c.alerts.snooze(alert.id, Number(minutes), reason.trim() || undefined), `Alert snoozed for ${minutesLabel(Number(minutes))}.`)
        }}
      >
        <div class="field-row">
          <div>
            <label for={minutesId}>Snooze for</label>
            <select id={minutesId} value={minutes} onChange={(e) => setMinutes(e.currentTarget.value)} ref={focusOnMount}>
              {choices.map((m) => (
                <option value={String(m)}>{minutesLabel(m)}</option>
              ))}
            </select>
          </div>
          <div class="grow">
            <label for={reasonId}>Reason (optional)</label>
            <input id={reasonId} type="text" maxLength={500} value={reason} onInput={(e) => setReason(e.currentTarget.value)} />
          </div>
        </div>
        <div class="button-row">
          <button type="submit" class="btn btn-primary" disabled={busy} aria-describedby={describedBy}>
            Snooze
          </button>
          <button type="button" class="btn" onClick={cancel}>
            Cancel
          </button>
        </div>
        <ErrorNote>{error}</ErrorNote>
      </form>
    )
  }

  return (
    <div class="alert-actions" ref={toggleRef}>
      <div class="button-row">
        {alert.status === 'open' && (
          <button type="button" class="btn btn-primary" disabled={busy} aria-describedby={describedBy} onClick={() => void run(() => c.alerts.acknowledge(alert.id), 'Alert acknowledged.')}>
            Acknowledge
          </button>
        )}
        <button type="button" class="btn" disabled={busy} aria-describedby={describedBy} onClick={() => setMode('resolve')}>
          Resolve
        </button>
        {alert.status === 'open' && (
          <button type="button" class="btn" disabled={busy} aria-describedby={describedBy} onClick={() => setMode('snooze')}>
            Snooze
          </button>
        )}
      </div>
      <ErrorNote>{error}</ErrorNote>
    </div>
  )
}
