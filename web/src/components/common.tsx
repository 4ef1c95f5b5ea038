// Small shared pieces: severity badge (text + shape, never colour alone), page heading with
// title and focus, times, notices.
import type { ComponentChildren } from 'preact'
import { useEffect, useRef, useState } from 'preact/hooks'
import type { Severity } from '../api/types.ts'
import { ago, formatDateTime, SEVERITY_LABEL } from '../lib/format.ts'
import type { Router } from '../lib/router.tsx'

const APP = 'RPM console'

/** The page's h1: sets the document title and, after an in-page navigation, takes focus so screen readers start there. */
export function PageHeading({ title, router, children, docTitle }: { title: string; router: Router; children?: ComponentChildren; docTitle?: string }) {
  const ref = useRef<HTMLHeadingElement>(null)
  useEffect(() => {
    document.title = `${docTitle ?? title} – ${APP}`
  }, [title, docTitle])
  useEffect(() => {
    if (router.navigations > 0) ref.current?.focus({ preventScroll: false })
  }, [])
  return (
    <h1 ref={ref} tabIndex={-1} class="page-title">
      {children ?? title}
    </h1>
  )
}

/** Shapes differ per severity (octagon, triangle, diamond, circle), and the word is always there. */
export function SeverityIcon({ severity }: { severity: Severity }) {
  const shape =
    severity === 'critical' ? (
      <polygon points="5,1 11,1 15,5 15,11 11,15 5,15 1,11 1,5" />
    ) : severity === 'urgent' ? (
      <polygon points="8,1 15,15 1,15" />
    ) : severity === 'warning' ? (
      <polygon points="8,1 15,8 8,15 1,8" />
    ) : (
      <circle cx="8" cy="8" r="7" />
    )
  return (
    <svg class="sev-icon" viewBox="0 0 16 16" width="16" height="16" aria-hidden="true" focusable="false">
      {shape}
      {severity === 'info' ? (
        <>
          <circle class="glyph" cx="8" cy="4.6" r="1.3" />
          <rect class="glyph" x="7" y="6.8" width="2" height="5.6" rx="0.6" />
        </>
      ) : (
        <>
          <rect class="glyph" x="7" y={severity === 'urgent' ? 5.6 : 3.8} width="2" height="5.2" rx="0.6" />
          <circle class="glyph" cx="8" cy={severity === 'urgent' ? 12.6 : 11.6} r="1.2" />
        </>
      )}
    </svg>
  )
}

export function SeverityBadge({ severity }: { severity: Severity }) {
  return (
    <span class={`sev-badge sev-${severity}`}>
      <SeverityIcon severity={severity} />
      {SEVERITY_LABEL[severity]}
    </span>
  )
}

/** A time with its exact value for machines and a tooltip, re-rendered each minute for "5 min ago". */
export function Ago({ iso }: { iso: string | null | undefined }) {
  const [, tick] = useState(0)
  useEffect(() => {
    const t = setInterval(() => tick((n) => n + 1), 60_000)
    return () => clearInterval(t)
  }, [])
  if (!iso) return <span>never</span>
  return (
    <time dateTime={iso} title={formatDateTime(iso)}>
      {ago(iso)}
    </time>
  )
}

export function When({ iso }: { iso: string | null | undefined }) {
  if (!iso) return <span>–</span>
  return <time dateTime={iso}>{formatDateTime(iso)}</time>
}

export function ErrorNote({ children }: { children: ComponentChildren }) {
  if (!children) return null
  return (
    <p class="note note-error" role="alert">
      <span aria-hidden="true" class="note-icon">
        ✕
      </span>{' '}
      {children}
    </p>
  )
}

export function Loading({ label = 'Loading…' }: { label?: string }) {
  return (
    <p class="loading" role="status">
      {label}
    </p>
  )
}

export function VisuallyHidden({ children }: { children: ComponentChildren }) {
  return <span class="sr-only">{children}</span>
}

/** Online (filled dot) / offline (hollow ring) with the word. */
export function OnlineState({ online }: { online: boolean }) {
  return (
    <span class={`online-state ${online ? 'is-online' : 'is-offline'}`}>
      <svg viewBox="0 0 12 12" width="12" height="12" aria-hidden="true" focusable="false">
        <circle cx="6" cy="6" r="4.5" />
      </svg>
      {online ? 'Online' : 'Offline'}
    </span>
  )
}

let idCounter = 0
/** A stable id for label/aria wiring. */
export function useId(prefix: string): string {
  const ref = useRef<string>('')
  if (!ref.current) ref.current = `${prefix}-${++idCounter}`
  return ref.current
}

/** A ref callback that focuses its element once, when it first appears (forms that open in place). */
export function focusOnMount(el: HTMLElement | null): void {
  if (el && !el.dataset['focused']) {
    el.dataset['focused'] = '1'
    el.focus()
  }
}
