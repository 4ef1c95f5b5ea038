// The live protocol's events (docs/websocket.md "Client events" and "Server events").
import type { Alert, AlertChange, Message, Role } from '../api/types.ts'

export interface ReadyThread {
  threadId: string
  patientId: string
  lastSeq: number
  readSeq: number
  deliveredSeq: number
  unread: number
}

export type ServerEvent =
  | { type: 'ready'; user: { id: string; username: string; role: Role; patientId: string | null }; expiresAt: string; threads: ReadyThread[]; limits: { heartbeatSeconds: number; maxReplayMessages: number } }
  | { type: 'authenticated'; expiresAt: string }
  | { type: 'subscribed'; threadId: string; lastSeq: number; replayedTo: number; live: boolean; ref?: string }
  | { type: 'message'; threadId: string; message: Message }
  | { type: 'message.updated'; threadId: string; change: 'edited' | 'deleted'; message: Message }
  | { type: 'sent'; clientMessageId: string; created: boolean; message: Message }
  | { type: 'receipt'; threadId: string; userId: string; readSeq: number; deliveredSeq: number }
  | { type: 'unread'; threadId: string; count: number }
  | { type: 'typing'; threadId: string; userId: string; role: string; until: string }
  | { type: 'presence'; userId: string; status: 'online' | 'away' | 'offline'; lastActiveAt: string | null }
  | { type: 'reading'; patientId: string; reading: { id: number | string; deviceId: string; type: string; seq?: number | null; measuredAt: string; receivedAt: string; values: Record<string, number> } }
  | { type: 'alert'; change: AlertChange; alert: Alert }
  | { type: 'pong'; ref?: string }
  | { type: 'error'; code: string; message: string; ref?: string }

export type ClientEvent =
  | { type: 'auth'; token: string }
  | { type: 'subscribe'; threads: Array<{ threadId: string; after: number }>; ref?: string }
  | { type: 'unsubscribe'; threads: string[] }
  | { type: 'send'; threadId: string; clientMessageId: string; text: string; replyTo?: string }
  | { type: 'typing'; threadId: string }
  | { type: 'read'; threadId: string; seq: number }
  | { type: 'delivered'; threadId: string; seq: number }
  | { type: 'ping'; ref?: string }

export type EventOf<T extends ServerEvent['type']> = Extract<ServerEvent, { type: T }>

export type LiveEvents = { [K in ServerEvent['type']]: [EventOf<K>] }
