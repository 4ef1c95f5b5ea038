// The application shell: session gate, layout (header, nav, main), routes, live regions, the
// idle warning. Routes live under / (history API); the gateway serves index.html for them.
import type { ComponentChildren } from 'preact'
import { useEffect, useMemo, useRef } from 'preact/hooks'
import type { User } from './api/types.ts'
import { PageHeading } from './components/common.tsx'
import { IDLE_TIMEOUT_MINUTES } from './lib/idle.ts'
import { Link, match, usePath } from './lib/router.tsx'
import { useStore } from './lib/store.ts'
import { AlertsPage } from './pages/alerts.tsx'
import { homeFor, LoginPage, safeNext } from './pages/login.tsx'
import { PatientHome } from './pages/patient-home.tsx'
import { PatientPage } from './pages/patient.tsx'
import { PatientsPage } from './pages/patients.tsx'
import { ThreadPage, ThreadRedirect } from './pages/thread.tsx'
import { type AppServices, type Console, ConsoleContext, initConsole, useConsole } from './state/console.ts'
import { SIGNED_OUT } from './state/session.ts'

export function App({ app }: { app: AppServices }) {
  const state = useStore(app.session.state)
  const path = usePath(app.router)

  // Signed out: every route shows the sign-in page at /login?next=<where they were>.
  useEffect(() => {
    if (state.status !== 'signed-out' || path === '/login') return
    const next = path === '/' ? '' : `?next=${encodeURIComponent(path)}`
    app.router.navigate(`/login${next}`, { replace: true })
  }, [state.status, path])

  useEffect(() => {
    document.documentElement.classList.toggle('patient-view', state.status === 'signed-in' && state.user.role === 'patient')
  }, [state])

  return (
    <>
      {state.status === 'restoring' ? (
        <Frame app={app}>
          <p role="status" class="loading">
            Loading…
          </p>
        </Frame>
      ) : state.status === 'signed-out' ? (
        <Frame app={app}>
          <LoginPage app={app} message={state.message} />
        </Frame>
      ) : (
        <SignedIn key={state.user.id} app={app} user={state.user} />
      )}
      <LiveRegions app={app} />
    </>
  )
}

function SignedIn({ app, user }: { app: AppServices; user: User }) {
  const c = useMemo(() => initConsole(app, user), [app, user])
  useEffect(() => () => c.close(), [c])
  return (
    <ConsoleContext.Provider value={c}>
      <Frame app={app} console={c}>
        <Routes />
      </Frame>
      <IdleWarning />
    </ConsoleContext.Provider>
  )
}

function Routes() {
  const c = useConsole()
  const path = usePath(c.router)
  const home = homeFor(c.user.role)
  const redirect = (to: string) => {
    // Only if nothing else navigated meanwhile.
    queueMicrotask(() => c.router.path.value === path && c.router.navigate(to, { replace: true }))
    return null
  }
  // Just signed in: where they were going (?next=), else their start page.
  if (path === '/login') return redirect(safeNext(c.router.search.value) ?? home)
  if (path === '/') return redirect(home)
  let m: Record<string, string> | null
  if ((m = match('/threads/:threadId', path))) return <ThreadRedirect threadId={m['threadId']!} />
  if (c.user.role === 'patient') {
    if (path === '/me') return <PatientHome />
    if (path.startsWith('/alerts') || path.startsWith('/patients')) return redirect(home)
    return <NotFound />
  }
  if (path === '/alerts') return <AlertsPage />
  if ((m = match('/alerts/:alertId', path))) return <AlertsPage alertId={m['alertId']!} />
  if (path === '/patients') return <PatientsPage />
  if ((m = match('/patients/:patientId', path))) return <PatientPage key={m['patientId']} patientId={m['patientId']!} />
  if ((m = match('/patients/:patientId/thread', path))) return <ThreadPage key={m['patientId']} patientId={m['patientId']!} />
  if (path === '/me') return redirect(home)
  return <NotFound />
}

function NotFound() {
  const c = useConsole()
  return (
    <>
      <PageHeading title="Page not found" router={c.router} />
      <p>
        There is no page at this address.{' '}
        <Link router={c.router} href={homeFor(c.user.role)}>
          Go to the start page
        </Link>
        .
      </p>
    </>
  )
}

/** Skip link, header (brand, navigation, connection, sound, text size, sign-out) and main. */
function Frame({ app, console: c, children }: { app: AppServices; console?: Console; children: ComponentChildren }) {
  return (
    <>
      <a class="skip-link" href="#main">
        Skip to main content
      </a>
      <header class="topbar">
        <div class="topbar-inner">
          <a
            class="brand"
            href={c ? homeFor(c.user.role) : '/login'}
            onClick={(e) => {
              e.preventDefault()
              app.router.navigate(c ? homeFor(c.user.role) : '/login')
            }}
          >
            <svg viewBox="0 0 32 32" width="28" height="28" aria-hidden="true" focusable="false">
              <rect width="32" height="32" rx="6" fill="#0b4a8b" />
              <path d="M4 17h6l3-7 5 14 3-7h7" fill="none" stroke="#fff" stroke-width="2.5" stroke-linejoin="round" stroke-linecap="round" />
            </svg>
            <span>{c?.user.role === 'patient' ? 'My care team' : 'RPM console'}</span>
          </a>
          {c && c.user.role !== 'patient' && <MainNav />}
          <div class="tools">
            {c && <ConnectionStatus />}
            {c && c.user.role !== 'patient' && <SoundToggle />}
            <TextSizeControl app={app} />
            {c && <UserMenu />}
          </div>
        </div>
      </header>
      {c && <ReconnectBanner />}
      <main id="main" tabIndex={-1}>
        {children}
      </main>
    </>
  )
}

function MainNav() {
  const c = useConsole()
  const path = usePath(c.router)
  const all = useStore(c.alerts.all)
  const unread = useStore(c.threads.totalUnread)
  useEffect(() => {
    void c.alerts.load()
    void c.patients.load()
  }, [])
  const active = [...all.values()].filter((a) => a.status !== 'resolved').length
  const item = (href: string, label: string, extra: ComponentChildren) => {
    const current = path === href || path.startsWith(`${href}/`)
    return (
      <li>
        <Link router={c.router} href={href} aria-current={current ? 'page' : undefined}>
          {label}
          {extra}
        </Link>
      </li>
    )
  }
  return (
    <nav aria-label="Main" class="main-nav">
      <ul>
        {item(
          '/alerts',
          'Alerts',
          active > 0 ? (
            <span class="count">
              {active}
              <span class="sr-only"> active</span>
            </span>
          ) : null,
        )}
        {item(
          '/patients',
          'Patients',
          unread > 0 ? (
            <span class="count">
              {unread}
              <span class="sr-only"> unread messages</span>
            </span>
          ) : null,
        )}
      </ul>
    </nav>
  )
}

const CONNECTION_TEXT = { open: 'Live', connecting: 'Connecting…', reconnecting: 'Reconnecting…', offline: 'Offline, will reconnect', stopped: 'Not connected' } as const

function ConnectionStatus() {
  const c = useConsole()
  const state = useStore(c.socket.state)
  return (
    <p class={`conn conn-${state}`} role="status">
      <svg viewBox="0 0 12 12" width="12" height="12" aria-hidden="true" focusable="false">
        {state === 'open' ? <circle cx="6" cy="6" r="5" /> : <circle cx="6" cy="6" r="4" fill="none" stroke-width="2" />}
      </svg>
      <span class="sr-only">Connection: </span>
      {CONNECTION_TEXT[state]}
    </p>
  )
}

/** A visible band while the live connection is down: new messages and alerts may be late. */
function ReconnectBanner() {
  const c = useConsole()
  const state = useStore(c.socket.state)
  const shown = useRef(false)
  if (state === 'open') shown.current = true
  if (state === 'open' || state === 'stopped' || (!shown.current && state === 'connecting')) return null
  return (
    <div class="banner banner-warn">
      <span aria-hidden="true">⟳ </span>
      {state === 'offline' ? 'This device is offline.' : 'Reconnecting…'} New messages and alerts will appear when the connection is back. Messages you send wait and go out then.
    </div>
  )
}

function SoundToggle() {
  const c = useConsole()
  const muted = useStore(c.beeper.muted)
  return (
    <button type="button" class="btn btn-small tool" aria-pressed={muted} onClick={() => c.beeper.setMuted(!muted)}>
      <svg viewBox="0 0 20 20" width="18" height="18" aria-hidden="true" focusable="false" class="tool-icon">
        <path d="M3 7h3l5-4v14l-5-4H3z" fill="currentColor" />
        {muted ? <path d="M13 7l5 6M18 7l-5 6" stroke="currentColor" stroke-width="2" /> : <path d="M14 7c1.5 1.5 1.5 4.5 0 6M16 5c2.7 2.7 2.7 7.3 0 10" stroke="currentColor" stroke-width="1.6" fill="none" />}
      </svg>
      Mute alert sound
    </button>
  )
}

function TextSizeControl({ app }: { app: AppServices }) {
  const scale = useStore(app.textSize.scale)
  return (
    <div class="text-size" role="group" aria-label="Text size">
      <button type="button" class="btn btn-small tool" onClick={() => app.textSize.step(-1)} disabled={!app.textSize.canShrink}>
        A−<span class="sr-only"> Smaller text</span>
      </button>
      <span class="text-size-value" aria-live="polite">
        <span class="sr-only">Text size </span>
        {Math.round(scale * 100)}%
      </span>
      <button type="button" class="btn btn-small tool" onClick={() => app.textSize.step(1)} disabled={!app.textSize.canGrow}>
        A+<span class="sr-only"> Larger text</span>
      </button>
    </div>
  )
}

function UserMenu() {
  const c = useConsole()
  return (
    <div class="user">
      <span class="user-name">
        <span class="sr-only">Signed in as </span>
        {c.user.name || c.user.username}
      </span>
      <button type="button" class="btn btn-small tool" onClick={() => void c.session.signOut(SIGNED_OUT.byUser)}>
        Sign out
      </button>
    </div>
  )
}

function LiveRegions({ app }: { app: AppServices }) {
  const polite = useStore(app.announcer.polite)
  const assertive = useStore(app.announcer.assertive)
  return (
    <>
      <div class="sr-only" aria-live="polite" aria-atomic="true">
        {polite}
      </div>
      <div class="sr-only" aria-live="assertive" aria-atomic="true">
        {assertive}
      </div>
    </>
  )
}

/** The automatic-logoff warning: a modal dialog, 60 s before, with "Stay signed in". */
function IdleWarning() {
  const c = useConsole()
  const left = useStore(c.idle.warning)
  const ref = useRef<HTMLDialogElement>(null)
  useEffect(() => {
    const d = ref.current
    if (!d) return
    if (left !== null && !d.open) {
      d.showModal()
      d.querySelector<HTMLButtonElement>('button')?.focus()
    } else if (left === null && d.open) d.close()
  }, [left !== null])
  return (
    <dialog
      ref={ref}
      class="idle-dialog"
      role="alertdialog"
      aria-labelledby="idle-title"
      aria-describedby="idle-desc"
      onCancel={(e) => {
        e.preventDefault()
        c.idle.staySignedIn()
      }}
    >
      <h2 id="idle-title">Are you still there?</h2>
      <p id="idle-desc">
        For privacy, you will be signed out in <strong>{left ?? 0} seconds</strong> because there was no activity for {IDLE_TIMEOUT_MINUTES - 1} minutes.
      </p>
      <div class="button-row">
        <button type="button" class="btn btn-primary btn-large" onClick={() => c.idle.staySignedIn()}>
          Stay signed in
        </button>
        <button type="button" class="btn btn-large" onClick={() => void c.session.signOut(SIGNED_OUT.byUser)}>
          Sign out
        </button>
      </div>
    </dialog>
  )
}
