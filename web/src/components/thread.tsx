// A patient's thread: message bubbles, structured cards (reading, alert, reminder), receipts,
// typing, presence, replies, history on scroll-up, read marking when seen, and the composer.
// The same component serves the provider console and the patient page (variant).
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks'
import type { Alert, Message, PatientRule } from '../api/types.ts'
import { describeError } from '../api/http.ts'
import { DEVICE_LABEL, formatValues, readingLabel, roleLabel } from '../lib/format.ts'
import { plainReading } from '../lib/plain.ts'
import { useStore } from '../lib/store.ts'
import { useConsole } from '../state/console.ts'
import { useParticipants, type Participants } from '../state/participants.ts'
import { sortedMessages, useThreadView, type Outgoing, type ThreadView } from '../state/threads.ts'
import { AlertActions } from './alert-actions.tsx'
import { Ago, ErrorNote, SeverityBadge, useId, When } from './common.tsx'

export type ThreadVariant = 'provider' | 'patient'

interface Props {
  threadId: string
  patientId: string
  variant: ThreadVariant
  /** The patient's limits, for "higher than your target" on reading cards (patient page). */
  rules?: PatientRule[]
}

/** Reads are only sent while someone is looking: the tab visible and focused, and recent activity. */
const READ_ACTIVITY_MS = 60_000

export function ThreadPanel({ threadId, patientId, variant, rules }: Props) {
  const c = useConsole()
  const view = useThreadView(c.threads, threadId)
  const people = useParticipants(c, patientId)
  const presence = useStore(c.threads.presence)
  const alerts = useStore(c.alerts.all)
  const occurrences = useStore(c.occurrences)
  const connection = useStore(c.socket.state)
  const [replyTo, setReplyTo] = useState<Message | null>(null)
  const scrollRef = useRef<HTMLDivElement>(null)
  const topRef = useRef<HTMLDivElement>(null)
  const composerRef = useRef<HTMLTextAreaElement>(null)
  const atBottom = useRef(true)
  const prevFirst = useRef<number | undefined>(undefined)
  const prevHeight = useRef(0)
  const logId = useId('thread-log')

  useEffect(() => c.threads.open(threadId), [threadId])

  const messages = view ? sortedMessages(view) : []
  const byId = new Map(messages.map((m) => [m.id, m]))
  const firstSeq = messages[0]?.seq
  // The height before this render's changes reach the page, to keep the place when older messages come in above.
  if (scrollRef.current) prevHeight.current = scrollRef.current.scrollHeight

  useLayoutEffect(() => {
    const el = scrollRef.current
    if (!el) return
    if (prevFirst.current !== undefined && firstSeq !== undefined && firstSeq < prevFirst.current) el.scrollTop += el.scrollHeight - prevHeight.current
    else if (atBottom.current) el.scrollTop = el.scrollHeight
    prevFirst.current = firstSeq
  })

  // Older history when the top comes into view.
  useEffect(() => {
    const el = topRef.current
    const root = scrollRef.current
    if (!el || !root || typeof IntersectionObserver !== 'function') return
    const io = new IntersectionObserver(
      (entries) => {
        const v = c.threads.view(threadId)
        if (entries.some((e) => e.isIntersecting) && v && v.loaded && v.hasOlder && !v.loadingOlder && root.scrollHeight > root.clientHeight) void c.threads.loadOlder(threadId)
      },
      { root, rootMargin: '200px 0px 0px 0px' },
    )
    io.observe(el)
    return () => io.disconnect()
  }, [threadId])

  // Mark read what is on screen, while someone is looking.
  const checkRead = () => {
    const v = c.threads.view(threadId)
    const el = scrollRef.current
    if (!v || !el || document.visibilityState !== 'visible' || !document.hasFocus() || !c.idle.activeWithin(READ_ACTIVITY_MS)) return
    const box = el.getBoundingClientRect()
    const bottom = Math.min(box.bottom, innerHeight)
    if (bottom <= box.top) return
    const items = el.querySelectorAll<HTMLElement>('[data-seq]')
    for (let i = items.length - 1; i >= 0; i--) {
      const r = items[i]!.getBoundingClientRect()
      if (r.top < bottom - 8 && r.bottom > box.top) {
        const seq = Number(items[i]!.dataset['seq'])
        if (seq > v.readSeq) c.threads.markRead(threadId, seq)
        return
      }
    }
  }
  useEffect(() => {
    const t = setInterval(checkRead, 2000)
    addEventListener('focus', checkRead)
    document.addEventListener('visibilitychange', checkRead)
    return () => {
      clearInterval(t)
      removeEventListener('focus', checkRead)
      document.removeEventListener('visibilitychange', checkRead)
    }
  }, [threadId])
  useEffect(() => {
    requestAnimationFrame(checkRead)
  })

  if (!view) return <p role="status">Loading the conversation…</p>

  const onScroll = () => {
    const el = scrollRef.current!
    atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 48
    checkRead()
  }

  // Reminders confirmed in the thread itself ("Marked as taken"), and the newest message per alert.
  const taken = new Set<string>()
  const latestAlertMessage = new Map<string, number>()
  for (const m of messages) {
    if (m.kind === 'reminder' && m.data?.event === 'taken' && m.data?.reminder?.occurrenceId) taken.add(m.data.reminder.occurrenceId)
    if (m.kind === 'alert' && m.data?.alert?.id) latestAlertMessage.set(m.data.alert.id, m.seq)
  }

  const typingNames = [...view.typing.entries()].filter(([, t]) => t.until > Date.now()).map(([uid, t]) => people.userName(uid, t.role) ?? (t.role === 'patient' ? (people.patient?.name ?? 'The patient') : 'Someone from the care team'))

  return (
    <div class={`thread thread-${variant}`}>
      <Presence view={view} people={people} presence={presence} variant={variant} />
      <div
        class="thread-scroll"
        ref={scrollRef}
        onScroll={onScroll}
        tabIndex={0}
        role="region"
        aria-label="Conversation history"
        aria-describedby={logId}
        aria-busy={view.loadingOlder}
      >
        <div ref={topRef} class="thread-top">
          {view.loadingOlder ? (
            <p role="status">Loading earlier messages…</p>
          ) : !view.loaded && view.error ? (
            <button type="button" class="btn btn-small" onClick={() => void c.threads.loadOlder(threadId)}>
              Try loading the messages again
            </button>
          ) : view.loaded && view.hasOlder ? (
            <button type="button" class="btn btn-small" onClick={() => void c.threads.loadOlder(threadId)}>
              Load earlier messages
            </button>
          ) : view.loaded && messages.length > 0 ? (
            <p class="muted">This is the start of the conversation.</p>
          ) : null}
        </div>
        <p id={logId} class="sr-only">
          Newest messages are at the end.
        </p>
        {view.loaded && messages.length === 0 && view.outbox.length === 0 && <p class="muted empty">No messages yet. Write the first one below.</p>}
        <ol class="messages">
          {messages.map((m) => (
            <MessageItem
              key={m.seq}
              m={m}
              own={c.threads.isOwn(m)}
              view={view}
              people={people}
              variant={variant}
              replied={m.replyTo ? byId.get(m.replyTo) : undefined}
              onReply={
                variant === 'provider'
                  ? () => {
                      setReplyTo(m)
                      composerRef.current?.focus()
                    }
                  : undefined
              }
              alert={m.kind === 'alert' ? alertFor(m, alerts, latestAlertMessage) : null}
              occurrence={m.kind === 'reminder' ? occurrenceState(m, occurrences, taken) : null}
              rules={rules}
            />
          ))}
          {view.outbox.map((o) => (
            <PendingItem key={o.clientMessageId} o={o} live={view.live} threadId={threadId} />
          ))}
        </ol>
      </div>
      <p class="typing" aria-hidden={typingNames.length === 0}>
        {typingNames.length === 1 ? `${typingNames[0]} is typing…` : typingNames.length > 1 ? `${typingNames.join(' and ')} are typing…` : '\u00a0'}
      </p>
      <ErrorNote>{view.error}</ErrorNote>
      <Composer
        threadId={threadId}
        replyTo={replyTo}
        replyName={replyTo ? people.nameOf(replyTo.from) : ''}
        onCancelReply={() => setReplyTo(null)}
        onSent={() => {
          setReplyTo(null)
          atBottom.current = true
        }}
        inputRef={composerRef}
        waiting={connection !== 'open'}
      />
    </div>
  )
}

function alertFor(m: Message, alerts: ReadonlyMap<string, Alert>, latest: Map<string, number>): { alert: Alert; actionable: boolean } | null {
  const a = m.data?.alert as (Partial<Alert> & { id: string }) | undefined
  if (!a?.id) return null
  const current = alerts.get(a.id)
  const isLatest = latest.get(a.id) === m.seq
  const status = current?.status ?? (m.data?.event === 'resolved' ? 'resolved' : a.status)
  const merged = { ...a, ...current, status } as Alert
  return { alert: merged, actionable: isLatest && status !== 'resolved' && Array.isArray(m.data?.actions) && m.data.actions.length > 0 }
}

type OccurrenceView = { id: string; status: 'taken' | 'pending' | 'missed' | 'done' | 'unknown'; canConfirm: boolean }

/** A confirmable reminder: still pending, or (status unknown here) due within the last two hours. */
function occurrenceState(m: Message, known: ReadonlyMap<string, string>, taken: Set<string>): OccurrenceView | null {
  const r = m.data?.reminder
  if (!r?.occurrenceId || m.data?.event !== 'due') return null
  const status = (taken.has(r.occurrenceId) ? 'taken' : (known.get(r.occurrenceId) ?? 'unknown')) as OccurrenceView['status']
  const recent = Date.now() - Date.parse(r.dueAt) < 2 * 3600_000
  const canConfirm = Array.isArray(r.actions) && r.actions.includes('taken') && (status === 'pending' || (status === 'unknown' && recent))
  return { id: r.occurrenceId, status, canConfirm }
}

function MessageItem(props: {
  m: Message
  own: boolean
  view: ThreadView
  people: Participants
  variant: ThreadVariant
  replied: Message | undefined
  onReply: (() => void) | undefined
  alert: { alert: Alert; actionable: boolean } | null
  occurrence: OccurrenceView | null
  rules: PatientRule[] | undefined
}) {
  const { m, own, view, people, variant, replied, onReply } = props
  const name = people.nameOf(m.from)
  const bodyId = `msg-${m.seq}-body`
  const deleted = m.deletedAt !== null
  return (
    <li class={`msg msg-kind-${m.kind}${own ? ' msg-own' : ''}${m.from.role === 'system' || m.from.role === 'device' ? ' msg-system' : ''}`} data-seq={m.seq}>
      <p class="msg-meta">
        <span class="msg-from">{own ? 'You' : name}</span>
        {!own && variant === 'provider' && m.from.role !== 'system' && <span class="msg-role">{roleLabel(m.from.role)}</span>}
        <When iso={m.createdAt} />
        {m.editedAt && !deleted && <span class="msg-edited">(edited)</span>}
      </p>
      {replied && (
        <blockquote class="msg-quote">
          <span class="sr-only">In reply to </span>
          {people.nameOf(replied.from)}: {snippet(replied)}
        </blockquote>
      )}
      <div class="msg-body" id={bodyId}>
        {deleted ? <p class="muted">This message was deleted.</p> : <Body {...props} bodyId={bodyId} />}
      </div>
      {own && m.kind === 'text' && <p class="msg-status">{receiptText(view, m.seq, people)}</p>}
      {onReply && m.kind === 'text' && !deleted && (
        <button type="button" class="btn-link msg-reply" onClick={onReply}>
          Reply<span class="sr-only"> to {own ? 'your message' : name}</span>
        </button>
      )}
    </li>
  )
}

function Body({ m, variant, alert, occurrence, rules, bodyId }: Parameters<typeof MessageItem>[0] & { bodyId: string }) {
  if (m.kind === 'reading' && m.data?.values) {
    const d = m.data as { type: string; values: Record<string, number>; measuredAt: string }
    return (
      <div class="card reading-card">
        <p>
          {variant === 'patient' ? (
            plainReading(d.type, d.values, rules)
          ) : (
            <>
              <strong>{readingLabel(d.type)}</strong> {formatValues(d.type, d.values)}
            </>
          )}
          <span class="muted small">
            {' '}
            · measured <When iso={d.measuredAt} />
          </span>
        </p>
      </div>
    )
  }
  if (m.kind === 'alert' && alert) {
    const a = alert.alert
    return (
      <div class={`card alert-card sev-border-${a.severity}`}>
        <p>
          <SeverityBadge severity={a.severity} /> <span>{m.text}</span>
        </p>
        {variant === 'provider' && alert.actionable && <AlertActions alert={a} describedBy={bodyId} />}
        {variant === 'provider' && !alert.actionable && m.data?.event !== 'resolved' && a.status === 'resolved' && <p class="muted small">Resolved since.</p>}
      </div>
    )
  }
  if (m.kind === 'reminder') return <ReminderCard m={m} occurrence={occurrence} variant={variant} describedBy={bodyId} />
  if (m.kind === 'device_event') {
    const d = m.data as { deviceKind?: string; event?: { type?: string } } | null
    return (
      <p class="muted">
        {DEVICE_LABEL[d?.deviceKind ?? ''] ?? 'Device'} event: {d?.event?.type?.replace(/_/g, ' ') ?? 'unknown'}
      </p>
    )
  }
  return <p class="msg-text">{m.text}</p>
}

function ReminderCard({ m, occurrence, variant, describedBy }: { m: Message; occurrence: OccurrenceView | null; variant: ThreadVariant; describedBy: string }) {
  const c = useConsole()
  const [busy, setBusy] = useState(false)
  const [error, setError] = useState<string | null>(null)
  const isTakenNote = m.data?.event === 'taken'
  const confirm = async () => {
    if (!occurrence) return
    setBusy(true)
    setError(null)
    try {
      const occ = await c.api.post<{ id: string; status: 'taken' | 'pending' | 'missed' | 'done' }>(`/reminder-occurrences/${encodeURIComponent(occurrence.id)}/taken`, {})
      const next = new Map(c.occurrences.value)
      next.set(occ.id, occ.status)
      c.occurrences.set(next)
      c.announcer.say('Thank you. Your dose is marked as taken.')
    } catch (err) {
      setError(
        (err as { status?: number }).status === 409
          ? 'The time for this dose has passed. Please send your care team a message saying when you took it.'
          : describeError(err),
      )
    } finally {
      setBusy(false)
    }
  }
  return (
    <div class={`card reminder-card${isTakenNote ? ' reminder-done' : ''}`} data-occurrence={occurrence?.id}>
      <p>
        <svg class="card-icon" viewBox="0 0 20 20" width="20" height="20" aria-hidden="true" focusable="false">
          {isTakenNote ? (
            <path d="M4 10.5l4 4 8-9" fill="none" stroke="currentColor" stroke-width="2.5" stroke-linecap="round" stroke-linejoin="round" />
          ) : (
            <>
              <circle cx="10" cy="10" r="8" fill="none" stroke="currentColor" stroke-width="2" />
              <path d="M10 5v5l3.5 2" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" />
            </>
          )}
        </svg>{' '}
        {m.text}
      </p>
      {occurrence && occurrence.status === 'taken' && <p class="ok-text">✓ Taken</p>}
      {occurrence && occurrence.status === 'missed' && <p class="muted">Not confirmed in time.</p>}
      {occurrence?.canConfirm && variant === 'patient' && (
        <button type="button" class="btn btn-primary btn-large" disabled={busy} onClick={() => void confirm()} aria-describedby={describedBy}>
          I took it
        </button>
      )}
      {occurrence?.canConfirm && variant === 'provider' && <p class="muted small">Not confirmed yet.</p>}
      <ErrorNote>{error}</ErrorNote>
    </div>
  )
}

function PendingItem({ o, live, threadId }: { o: Outgoing; live: boolean; threadId: string }) {
  const c = useConsole()
  return (
    <li class={`msg msg-own msg-pending${o.state === 'failed' ? ' msg-failed' : ''}`}>
      <p class="msg-meta">
        <span class="msg-from">You</span>
      </p>
      <div class="msg-body">
        <p class="msg-text">{o.text}</p>
      </div>
      <p class="msg-status">
        {o.state === 'failed' ? `Not sent: ${o.error ?? 'the gateway refused it'}` : !live ? 'Waiting for the connection…' : 'Sending…'}
      </p>
      {o.state === 'failed' && (
        <div class="button-row">
          <button type="button" class="btn btn-small" onClick={() => c.threads.retry(threadId, o.clientMessageId)}>
            Try again
          </button>
          <button type="button" class="btn btn-small" onClick={() => c.threads.discard(threadId, o.clientMessageId)}>
            Discard
          </button>
        </div>
      )}
    </li>
  )
}

function receiptText(view: ThreadView, seq: number, people: Participants): string {
  const readers: string[] = []
  let delivered = false
  for (const [userId, r] of view.receipts) {
    if (r.readSeq >= seq) readers.push(people.userName(userId) ?? 'someone')
    else if (r.deliveredSeq >= seq) delivered = true
  }
  if (readers.length) return `Read by ${[...new Set(readers)].join(', ')}`
  return delivered ? 'Delivered' : 'Sent'
}

function snippet(m: Message): string {
  if (m.deletedAt) return 'a deleted message'
  const t = m.text ?? ''
  return t.length > 80 ? `“${t.slice(0, 79)}…”` : `“${t}”`
}

function Presence({ view, people, presence, variant }: { view: ThreadView; people: Participants; presence: ReadonlyMap<string, { status: string; lastActiveAt: string | null }>; variant: ThreadVariant }) {
  const c = useConsole()
  const rows: Array<{ id: string; name: string; status: string; lastActiveAt: string | null }> = []
  const others = variant === 'patient' ? people.careTeam.map((u) => u.id) : [...people.careTeam.map((u) => u.id), ...people.patientUserIds]
  for (const id of new Set(others)) {
    if (id === c.user.id) continue
    const p = presence.get(id)
    rows.push({ id, name: people.userName(id) ?? 'Participant', status: p?.status ?? 'offline', lastActiveAt: p?.lastActiveAt ?? null })
  }
  void view
  if (!rows.length) return null
  return (
    <div class="presence">
      <p class="presence-title">{variant === 'patient' ? 'Your care team' : 'In this conversation'}</p>
      <ul>
        {rows.map((r) => (
          <li key={r.id}>
            <span class={`presence-dot presence-${r.status}`} aria-hidden="true" />
            {r.name}: {r.status === 'online' ? 'online' : r.status === 'away' ? 'away' : 'offline'}
            {r.status === 'offline' && r.lastActiveAt && (
              <>
                , last active <Ago iso={r.lastActiveAt} />
              </>
            )}
          </li>
        ))}
      </ul>
    </div>
  )
}

function Composer({
  threadId,
  replyTo,
  replyName,
  onCancelReply,
  onSent,
  inputRef,
  waiting,
}: {
  threadId: string
  replyTo: Message | null
  replyName: string
  onCancelReply: () => void
  onSent: () => void
  inputRef: { current: HTMLTextAreaElement | null }
  waiting: boolean
}) {
  const c = useConsole()
  const [text, setText] = useState('')
  const [error, setError] = useState<string | null>(null)
  const inputId = useId('composer')
  const hintId = useId('composer-hint')
  const send = () => {
    const t = text.trim()
    if (!t) {
      setError('Write a message first.')
      return
    }
    c.threads.send(threadId, t, replyTo?.id)
    setText('')
    setError(null)
    onSent()
  }
  return (
    <form
      class="composer"
      onSubmit={(e) => {
        e.preventDefault()
        send()
      }}
    >
      {replyTo && (
        <div class="replying">
          <span>
            Replying to {replyName}: {snippet(replyTo)}
          </span>
          <button type="button" class="btn btn-small" onClick={onCancelReply}>
            Cancel reply
          </button>
        </div>
      )}
      <label for={inputId}>Message</label>
      <div class="composer-row">
        <textarea
          id={inputId}
          ref={inputRef}
          rows={2}
          maxLength={4000}
          value={text}
          aria-describedby={hintId}
          onInput={(e) => {
            setText(e.currentTarget.value)
            if (e.currentTarget.value.trim()) c.threads.typing(threadId)
          }}
          onKeyDown={(e) => {
            if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
              e.preventDefault()
              send()
            }
          }}
        />
        <button type="submit" class="btn btn-primary">
          Send
        </button>
      </div>
      <p id={hintId} class="hint">
        Enter sends the message; Shift+Enter starts a new line.{waiting ? ' Messages wait here until the connection is back, then go out on their own.' : ''}
      </p>
      <ErrorNote>{error}</ErrorNote>
    </form>
  )
}

