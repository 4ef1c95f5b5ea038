import type { MessageKind, SenderRole } from '../store/schema.ts'

export type { MessageKind, SenderRole } from '../store/schema.ts'

/** The longest text message, in characters. */
export const MAX_TEXT_LENGTH = 4000

/** A message as clients and the bus see it. */
export interface Message {
  id: string
  threadId: string
  /** Position in the thread: 1, 2, 3, ... with no gaps. "Everything after seq N" resumes a client. */
  seq: number
  /** The thread's change counter at this message's last change (post, edit or tombstone). */
  revision: number
  kind: MessageKind
  from: { role: SenderRole; userId: string | null; deviceId: string | null }
  /** Null for structured messages and tombstones. */
  text: string | null
  /** Structured content: a reading or a device event. */
  data: Record<string, unknown> | null
  replyTo: string | null
  clientMessageId: string | null
  createdAt: string
  editedAt: string | null
  deletedAt: string | null
}

export interface Thread {
  id: string
  patientId: string
  createdAt: string
  lastSeq: number
  lastRevision: number
}

/** One thread as one participant sees it. */
export interface ThreadSummary extends Thread {
  readSeq: number
  deliveredSeq: number
  unread: number
  lastMessage: Message | null
}

/** Who is looking: a signed-in user. Patients own every patient-role message in their thread. */
export interface Viewer {
  userId: string
  role: 'patient' | 'provider' | 'admin'
}

/** Who sends: a signed-in user, or a device (a hub speaking for its patient, or a measuring device). */
export type Sender =
  | { type: 'user'; userId: string; role: 'patient' | 'provider' | 'admin' }
  | { type: 'device'; deviceId: string; role: SenderRole }
  /** The gateway itself: alerts, reminders. */
  | { type: 'system'; role: 'system' }

export interface MessageVersion {
  version: number
  text: string
  writtenAt: string
  replacedAt: string
}

export interface Receipt {
  threadId: string
  readSeq: number
  deliveredSeq: number
  unread: number
}
