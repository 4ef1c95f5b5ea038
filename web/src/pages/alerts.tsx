// The alert inbox: open and acknowledged alerts, most severe first, then oldest first; live.
import { useEffect, useRef, useState } from 'preact/hooks'
import type { Alert, Severity } from '../api/types.ts'
import { describeError } from '../api/http.ts'
import { AlertActions } from '../components/alert-actions.tsx'
import { Ago, ErrorNote, Loading, PageHeading, SeverityBadge, When } from '../components/common.tsx'
import { formatValues, readingLabel, SEVERITY_LABEL } from '../lib/format.ts'
import { Link } from '../lib/router.tsx'
import { useStore } from '../lib/store.ts'
import { compareAlerts, isActive } from '../state/alerts.ts'
import { useConsole } from '../state/console.ts'

export function AlertsPage({ alertId }: { alertId?: string }) {
  const c = useConsole()
  const all = useStore(c.alerts.all)
  const fresh = useStore(c.alerts.fresh)
  const loading = useStore(c.alerts.loading)
  const error = useStore(c.alerts.error)
  useStore(c.patients.all)
  const [selectedError, setSelectedError] = useState<string | null>(null)

  useEffect(() => {
    void c.alerts.load()
    void c.patients.load()
  }, [])

  // A link to one alert (a notification, say): fetch it if it is not in the inbox (resolved).
  useEffect(() => {
    if (!alertId || all.has(alertId)) return
    c.alerts.fetchOne(alertId).catch((err: unknown) => setSelectedError(describeError(err)))
  }, [alertId])

  const active = [...all.values()].filter(isActive).sort(compareAlerts)
  const selected = alertId ? all.get(alertId) : undefined
  const counts = (['critical', 'urgent', 'warning', 'info'] as Severity[]).map((s) => [s, active.filter((a) => a.severity === s).length] as const).filter(([, n]) => n > 0)

  return (
    <>
      <PageHeading title="Alerts" router={c.router} />
      <p class="lead" role="status">
        {loading && !active.length
          ? 'Loading alerts…'
          : active.length === 0
            ? 'No open or acknowledged alerts.'
            : `${active.length} active alert${active.length === 1 ? '' : 's'}: ${counts.map(([s, n]) => `${n} ${SEVERITY_LABEL[s].toLowerCase()}`).join(', ')}.`}
      </p>
      <ErrorNote>{error}</ErrorNote>
      {selected && !isActive(selected) && (
        <section aria-labelledby="selected-alert-heading" class="selected-alert">
          <h2 id="selected-alert-heading">The alert you opened</h2>
          <AlertItem alert={selected} isNew={false} focus headingLevel={3} />
        </section>
      )}
      <ErrorNote>{selectedError}</ErrorNote>
      {loading && !active.length ? (
        <Loading label="Loading alerts…" />
      ) : (
        <ol class="alert-list" aria-label="Active alerts, most severe first">
          {active.map((a) => (
            <li key={a.id}>
              <AlertItem alert={a} isNew={fresh.has(a.id)} focus={a.id === alertId} headingLevel={2} />
            </li>
          ))}
        </ol>
      )}
    </>
  )
}

export function AlertItem({ alert: a, isNew, focus, headingLevel }: { alert: Alert; isNew: boolean; focus: boolean; headingLevel: 2 | 3 }) {
  const c = useConsole()
  const ref = useRef<HTMLElement>(null)
  const titleId = `alert-${a.id}-title`
  const descId = `alert-${a.id}-desc`
  useEffect(() => {
    if (focus) {
      ref.current?.scrollIntoView({ block: 'center' })
      ref.current?.focus({ preventScroll: true })
    }
  }, [focus])
  const H = headingLevel === 2 ? 'h2' : 'h3'
  const snoozed = a.snoozedUntil && Date.parse(a.snoozedUntil) > Date.now()
  return (
    <article ref={ref} tabIndex={-1} class={`alert-item sev-border-${a.severity}${isNew ? ' is-new' : ''}${focus ? ' is-selected' : ''}`} aria-labelledby={titleId} aria-describedby={descId}>
      <div class="alert-head">
        <SeverityBadge severity={a.severity} />
        {isNew && <span class="new-badge">New</span>}
        <span class={`status-tag status-${a.status}`}>{a.status === 'open' ? 'Open' : a.status === 'acknowledged' ? 'Acknowledged' : 'Resolved'}</span>
        {snoozed && <span class="status-tag status-snoozed">Snoozed</span>}
      </div>
      <H id={titleId} class="alert-title">
        <Link router={c.router} href={`/patients/${encodeURIComponent(a.patientId)}`}>
          {c.patients.name(a.patientId)}
        </Link>
        : {a.title}
      </H>
      <p id={descId} class="alert-desc">
        {a.lastValues && a.readingType ? (
          <>
            {readingLabel(a.readingType)} {formatValues(a.readingType, a.lastValues)}
            {a.lastMeasuredAt && (
              <>
                , measured <Ago iso={a.lastMeasuredAt} />
              </>
            )}
            .{' '}
          </>
        ) : null}
        Opened <Ago iso={a.openedAt} />
        {a.count > 1 ? `, ${a.count} matching readings` : ''}.
      </p>
      <ul class="alert-facts">
        {a.status === 'acknowledged' && a.acknowledgedAt && (
          <li>
            Acknowledged <When iso={a.acknowledgedAt} />
          </li>
        )}
        {snoozed && (
          <li>
            Snoozed until <When iso={a.snoozedUntil} />
          </li>
        )}
        {a.status === 'open' && a.tier > 0 && <li>Escalated (tier {a.tier + 1})</li>}
        {a.status === 'resolved' && (
          <li>
            Resolved <When iso={a.resolvedAt} />
            {a.resolution === 'auto' ? ' (all clear)' : a.note ? `: ${a.note}` : ''}
          </li>
        )}
      </ul>
      <AlertActions alert={a} describedBy={titleId} />
      <p class="alert-links">
        <Link router={c.router} href={`/patients/${encodeURIComponent(a.patientId)}/thread`}>
          Open the conversation<span class="sr-only"> with {c.patients.name(a.patientId)}</span>
        </Link>
      </p>
    </article>
  )
}
