// A patient's conversation with the care team, for the provider console.
import { useEffect, useState } from 'preact/hooks'
import { describeError } from '../api/http.ts'
import { ErrorNote, Loading, PageHeading } from '../components/common.tsx'
import { ThreadPanel } from '../components/thread.tsx'
import { Link } from '../lib/router.tsx'
import { useStore } from '../lib/store.ts'
import { useConsole } from '../state/console.ts'

export function ThreadPage({ patientId }: { patientId: string }) {
  const c = useConsole()
  useStore(c.patients.all)
  const [threadId, setThreadId] = useState<string | undefined>(c.threads.threadIdOf(patientId))
  const [error, setError] = useState<string | null>(null)
  useEffect(() => {
    void c.patients.load()
    void c.alerts.load()
    c.threads.forPatient(patientId).then(
      (v) => setThreadId(v.id),
      (err: unknown) => setError(describeError(err)),
    )
  }, [patientId])
  const name = c.patients.all.value.get(patientId)?.name ?? 'the patient'
  return (
    <div class="thread-page">
      <PageHeading title="Messages" router={c.router} docTitle={`Messages – ${name}`} />
      <p class="lead">
        Conversation with {name} and the care team.{' '}
        <Link router={c.router} href={`/patients/${encodeURIComponent(patientId)}`}>
          Back to {name}
        </Link>
      </p>
      <ErrorNote>{error}</ErrorNote>
      {threadId ? <ThreadPanel threadId={threadId} patientId={patientId} variant="provider" /> : !error && <Loading label="Loading the conversation…" />}
    </div>
  )
}

/** /threads/:threadId (a notification's link): find the thread's patient and go there. */
export function ThreadRedirect({ threadId }: { threadId: string }) {
  const c = useConsole()
  const [error, setError] = useState<string | null>(null)
  useEffect(() => {
    c.threads.byId(threadId).then(
      (v) => c.router.navigate(c.user.role === 'patient' ? '/me#messages' : `/patients/${encodeURIComponent(v.patientId)}/thread`, { replace: true }),
      (err: unknown) => setError(describeError(err)),
    )
  }, [threadId])
  return (
    <>
      <PageHeading title="Messages" router={c.router} />
      {error ? <ErrorNote>{error}</ErrorNote> : <Loading label="Opening the conversation…" />}
    </>
  )
}
