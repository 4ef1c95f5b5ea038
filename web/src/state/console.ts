// Everything a signed-in console runs: the live socket and the stores it feeds. Made at sign-in
// and disposed at sign-out (initConsole/close pair); nothing survives into the next sign-in.
import { createContext } from 'preact'
import { useContext } from 'preact/hooks'
import type { Api } from '../api/http.ts'
import type { OccurrenceStatus, User } from '../api/types.ts'
import { Announcer } from '../lib/announcer.ts'
import { Beeper } from '../lib/beeper.ts'
import { formatValues, readingLabel, SEVERITY_LABEL } from '../lib/format.ts'
import { IdleMonitor } from '../lib/idle.ts'
import { TextSize } from '../lib/prefs.ts'
import { PushControl } from '../lib/push.ts'
import { Router } from '../lib/router.tsx'
import { Store } from '../lib/store.ts'
import { LiveSocket } from '../live/socket.ts'
import { AlertsStore } from './alerts.ts'
import { PatientsStore } from './patients.ts'
import { Session, SIGNED_OUT, whySessionEnded } from './session.ts'
import { SummariesStore } from './summaries.ts'
import { ThreadsStore } from './threads.ts'

/** What lives as long as the page: the session, routes, preferences, the live regions. */
export interface AppServices {
  session: Session
  router: Router
  announcer: Announcer
  beeper: Beeper
  textSize: TextSize
}

export function initApp(): AppServices {
  return { session: new Session(), router: new Router(), announcer: new Announcer(), beeper: new Beeper(), textSize: new TextSize() }
}

/** What lives as long as one sign-in. */
export interface Console extends AppServices {
  user: User
  api: Api
  socket: LiveSocket
  threads: ThreadsStore
  alerts: AlertsStore
  patients: PatientsStore
  summaries: SummariesStore
  push: PushControl
  idle: IdleMonitor
  /** Reminder occurrences whose state this console learned (fetched, confirmed here). */
  occurrences: Store<ReadonlyMap<string, OccurrenceStatus>>
  close(): void
}

export function initConsole(app: AppServices, user: User): Console {
  const { session, announcer, beeper, router } = app
  const api = session.api
  const socket = new LiveSocket({
    url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/v1/ws`,
    token: () => session.token,
    secondsLeft: () => session.secondsLeft,
    refresh: () => session.refresh(),
    signedOut: (code, reason) =>
      void session.signOut(code === 4003 ? SIGNED_OUT.ended(whySessionEnded(reason)) : SIGNED_OUT.refused, { callServer: false }),
  })
  const threads = new ThreadsStore(api, socket, user)
  const alerts = new AlertsStore(api, socket)
  const patients = new PatientsStore(api)
  const summaries = new SummariesStore(api, socket)
  const push = new PushControl(api)
  const idle = new IdleMonitor(session)
  const occurrences = new Store<ReadonlyMap<string, OccurrenceStatus>>(new Map())

  const off = [
    session.events.on('token', (token) => socket.reauthenticate(token)),
    session.events.on('signing-out', () => socket.stop()),
    session.beforeSignOut(() => push.forget()),
    alerts.sounding.on('alert', (alert) => {
      beeper.beep(alert.severity)
      const values = alert.lastValues && alert.readingType ? `, ${readingLabel(alert.readingType).toLowerCase()} ${formatValues(alert.readingType, alert.lastValues)}` : ''
      announcer.say(`${SEVERITY_LABEL[alert.severity]} alert for ${patients.name(alert.patientId)}: ${alert.title}${values}`, 'assertive')
    }),
    threads.incoming.on('message', (view, m) => {
      if (m.kind === 'text') {
        const who = m.from.role === 'patient' ? patients.name(view.patientId) : user.role === 'patient' ? 'your care team' : 'the care team'
        // Who, not what: the text is on screen, and a copy in the live region would be a second one.
        announcer.say(`New message from ${who}.`)
      } else if (m.kind === 'reminder' && user.role === 'patient' && m.data?.event === 'due') {
        announcer.say('New reminder from your care team, in your messages.')
      }
    }),
  ]

  const onWorkerMessage = (e: MessageEvent) => {
    const d = e.data as { type?: string; url?: string } | null
    if (d?.type === 'rpm.navigate' && typeof d.url === 'string' && d.url.startsWith('/') && !d.url.startsWith('//')) router.navigate(d.url)
  }
  navigator.serviceWorker?.addEventListener('message', onWorkerMessage)

  socket.start()
  idle.start()
  void push.check()

  return {
    ...app,
    user,
    api,
    socket,
    threads,
    alerts,
    patients,
    summaries,
    push,
    idle,
    occurrences,
    close() {
      for (const f of off) f()
      navigator.serviceWorker?.removeEventListener('message', onWorkerMessage)
      idle.stop()
      socket.stop()
      threads.dispose()
      alerts.dispose()
      summaries.dispose()
    },
  }
}

export const ConsoleContext = createContext<Console | null>(null)

export function useConsole(): Console {
  const c = useContext(ConsoleContext)
  if (!c) throw new Error('useConsole outside a signed-in console')
  return c
}
