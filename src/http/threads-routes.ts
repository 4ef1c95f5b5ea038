import type {} from '@fastify/swagger' // adds tags, summary and security to route schemas
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { AuditLog } from '../audit/audit.ts'
import type { Clock } from '../clock.ts'
import { RpmError } from '../errors.ts'
import type { AccessBasis, AccessPolicy } from '../identity/access.ts'
import type { Auth, Principal } from '../identity/auth.ts'
import type { Store } from '../store/db.ts'
import type { Threads } from '../threads/threads.ts'
import { MAX_TEXT_LENGTH, type Thread, type Viewer } from '../threads/types.ts'
import { makeGuards } from './guards.ts'
import { bearer, errorResponses, idPattern } from './schemas.ts'

export interface ThreadRouteDeps {
  threads: Threads
  store: Store
  auth: Auth
  access: AccessPolicy
  audit: AuditLog
  clock: Clock
}

const clientIdPattern = '^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$'

export const messageSchema = {
  type: 'object',
  required: ['id', 'threadId', 'seq', 'revision', 'kind', 'from', 'text', 'data', 'replyTo', 'clientMessageId', 'createdAt', 'editedAt', 'deletedAt'],
  properties: {
    id: { type: 'string' },
    threadId: { type: 'string' },
    seq: { type: 'integer', description: 'Position in the thread (1, 2, 3, ... without gaps); resume with after=seq' },
    revision: { type: 'integer', description: 'The thread revision of this message\'s last change; resume edits and deletes with changedAfter=revision' },
    kind: { type: 'string', enum: ['text', 'reading', 'device_event', 'alert', 'reminder'] },
    from: {
      type: 'object',
      required: ['role', 'userId', 'deviceId'],
      properties: {
        role: { type: 'string', enum: ['patient', 'provider', 'admin', 'device', 'system'], description: 'system: the gateway itself (alerts, reminders)' },
        userId: { type: ['string', 'null'] },
        deviceId: { type: ['string', 'null'], description: 'The device that posted it: a measuring device, or a hub speaking for the patient' },
      },
    },
    text: { type: ['string', 'null'], description: 'Null for structured messages and tombstones' },
    data: {
      type: ['object', 'null'],
      additionalProperties: true,
      description: 'Structured content: {readingId, type, values, measuredAt, deviceId} for a reading; {deviceId, deviceKind, event} for a device event; {event, alert} for an alert; {event, reminder} for a reminder (see docs/rules.md)',
    },
    replyTo: { type: ['string', 'null'] },
    clientMessageId: { type: ['string', 'null'] },
    createdAt: { type: 'string', format: 'date-time' },
    editedAt: { type: ['string', 'null'] },
    deletedAt: { type: ['string', 'null'], description: 'Set on a tombstone: the text is gone, the seq stays' },
  },
} as const

const threadSchema = {
  type: 'object',
  required: ['id', 'patientId', 'createdAt', 'lastSeq', 'lastRevision', 'readSeq', 'deliveredSeq', 'unread', 'lastMessage'],
  properties: {
    id: { type: 'string' },
    patientId: { type: 'string' },
    createdAt: { type: 'string', format: 'date-time' },
    lastSeq: { type: 'integer' },
    lastRevision: { type: 'integer' },
    readSeq: { type: 'integer', description: 'Your read horizon: messages up to this seq are read' },
    deliveredSeq: { type: 'integer', description: 'Your delivered horizon: messages up to this seq reached you' },
    unread: { type: 'integer', description: 'Messages after your read horizon, not your own, not deleted' },
    lastMessage: { anyOf: [messageSchema, { type: 'null' }] },
  },
} as const

const receiptSchema = {
  type: 'object',
  required: ['threadId', 'readSeq', 'deliveredSeq', 'unread'],
  properties: { threadId: { type: 'string' }, readSeq: { type: 'integer' }, deliveredSeq: { type: 'integer' }, unread: { type: 'integer' } },
} as const

const threadParams = {
  type: 'object',
  required: ['threadId'],
  additionalProperties: false,
  properties: { threadId: { type: 'string', pattern: idPattern } },
} as const

const messageParams = {
  type: 'object',
  required: ['threadId', 'messageId'],
  additionalProperties: false,
  properties: { threadId: { type: 'string', pattern: idPattern }, messageId: { type: 'string', pattern: idPattern } },
} as const

const textField = { type: 'string', minLength: 1, maxLength: MAX_TEXT_LENGTH } as const

/** Patients whose thread `p` may see: self, care team, or live break-glass grants. */
export async function visiblePatientIds(deps: { store: Store; access: AccessPolicy; clock: Clock }, p: Principal): Promise<string[]> {
  const { store, access, clock } = deps
  let candidates: string[]
  if (p.role === 'admin') {
    const grants = await store.db
      .selectFrom('break_glass')
      .select('patient_id')
      .distinct()
      .where('user_id', '=', p.userId)
      .where('expires_at', '>', new Date(clock.now()).toISOString())
      .execute()
    candidates = grants.map((g) => g.patient_id)
  } else {
    const listable = await access.listable(p)
    candidates = listable === 'all' ? [] : listable
  }
  // Patients of unresolved alerts escalated to this user (an on-call provider, an admin).
  const escalated = await store.db
    .selectFrom('alert_recipients as r')
    .innerJoin('alerts as a', 'a.id', 'r.alert_id')
    .select('r.patient_id')
    .distinct()
    .where('r.user_id', '=', p.userId)
    .where('a.status', '<>', 'resolved')
    .execute()
  candidates = [...new Set([...candidates, ...escalated.map((e) => e.patient_id)])]
  // The access policy has the last word on each one.
  const visible: string[] = []
  for (const patientId of candidates) if (await access.clinical(p, patientId)) visible.push(patientId)
  return visible
}

/** Threads and messages under /api/v1: one thread per patient with their care team. */
export async function threadRoutes(app: FastifyInstance, deps: ThreadRouteDeps): Promise<void> {
  const { threads, access, store, clock } = deps
  const guards = makeGuards(deps)
  const { record, signedIn, clinical, audited } = guards
  guards.auditFailures(app)
  if (!app.hasRequestDecorator('principal')) app.decorateRequest('principal', null)

  const viewerOf = (req: FastifyRequest): Viewer => ({ userId: req.principal!.userId, role: req.principal!.role })
  const noThread = (threadId: string) => new RpmError('RPM_ERR_NOT_FOUND', `no thread ${threadId}`, { details: { field: 'threadId' } })

  /** The thread if the caller may see its patient; otherwise 404, as for a thread that does not exist. */
  const visibleThread = async (req: FastifyRequest, threadId: string, action: string): Promise<{ thread: Thread; basis: AccessBasis }> => {
    const thread = threads.byId(threadId)
    if (!thread) {
      record(req, action, 'denied', threadId, { code: 'RPM_ERR_NOT_FOUND' })
      throw noThread(threadId)
    }
    const basis = await clinical(req, thread.patientId, action, { target: threadId, error: noThread(threadId) })
    return { thread, basis }
  }

  const visiblePatients = (req: FastifyRequest): Promise<string[]> => visiblePatientIds({ store, access, clock }, req.principal!)

  app.get('/api/v1/threads', {
    onRequest: signedIn(),
    schema: {
      tags: ['threads'],
      summary: 'Your threads: your own (patient), your care teams\' patients\' (provider), break-glass grants (admin); with unread counts and the last message',
      security: bearer,
      response: { 200: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: threadSchema } } }, ...errorResponses },
    },
  }, async (req) => {
    const patientIds = await visiblePatients(req)
    // A patient's own thread exists from their first look; others' appear with their first message.
    if (req.principal!.role === 'patient') for (const id of patientIds) threads.ensure(id)
    const items = threads.summaries(patientIds, viewerOf(req))
    record(req, 'threads.list', 'allowed', undefined, { count: items.length })
    return { items }
  })

  app.get<{ Params: { patientId: string } }>('/api/v1/patients/:patientId/thread', {
    onRequest: signedIn(),
    schema: {
      tags: ['threads'],
      summary: 'A patient\'s thread with their care team (created on first use)',
      security: bearer,
      params: { type: 'object', required: ['patientId'], additionalProperties: false, properties: { patientId: { type: 'string', pattern: idPattern } } },
      response: { 200: threadSchema, ...errorResponses },
    },
  }, async (req) => {
    const { patientId } = req.params
    const basis = await clinical(req, patientId, 'thread.read', {
      target: patientId,
      error: new RpmError('RPM_ERR_NOT_FOUND', `no patient ${patientId}`, { details: { field: 'patientId' } }),
    })
    const thread = audited(req, 'thread.read', patientId, () => threads.ensure(patientId))
    const [summary] = threads.summaries([patientId], viewerOf(req))
    record(req, 'thread.read', 'allowed', thread.id, { patientId, basis })
    return summary
  })

  app.get<{ Params: { threadId: string }; Querystring: { after?: number; before?: number; changedAfter?: number; limit?: number } }>('/api/v1/threads/:threadId/messages', {
    onRequest: signedIn(),
    schema: {
      tags: ['threads'],
      summary: 'Messages by seq: after=SEQ (oldest first) to catch up, before=SEQ for the page before it; changedAfter=REVISION for edits and deletes too',
      security: bearer,
      params: threadParams,
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: {
          after: { type: 'integer', minimum: 0, description: 'Messages with a larger seq, oldest first (the default, from 0)' },
          before: { type: 'integer', minimum: 1, description: 'Messages with a smaller seq; without after, the newest `limit` of them' },
          changedAfter: { type: 'integer', minimum: 0, description: 'Messages posted, edited or deleted after this thread revision, in revision order' },
          limit: { type: 'integer', minimum: 1, maximum: 500, default: 100 },
        },
      },
      response: {
        200: {
          type: 'object',
          required: ['items', 'hasMore', 'lastSeq', 'lastRevision'],
          properties: {
            items: { type: 'array', items: messageSchema },
            hasMore: { type: 'boolean', description: 'The page stopped at the limit: ask again from its last (or, with before, its first) message' },
            lastSeq: { type: 'integer' },
            lastRevision: { type: 'integer' },
          },
        },
        ...errorResponses,
      },
    },
  }, async (req) => {
    const { threadId } = req.params
    const { after, before, changedAfter, limit = 100 } = req.query
    const { thread, basis } = await visibleThread(req, threadId, 'messages.read')
    if (changedAfter !== undefined && (after !== undefined || before !== undefined)) {
      record(req, 'messages.read', 'denied', threadId, { code: 'RPM_ERR_BAD_REQUEST' })
      throw new RpmError('RPM_ERR_BAD_REQUEST', 'changedAfter goes alone, without after or before', { details: { field: 'changedAfter' } })
    }
    const page = threads.history(threadId, {
      limit,
      ...(after !== undefined ? { after } : {}),
      ...(before !== undefined ? { before } : {}),
      ...(changedAfter !== undefined ? { changedAfter } : {}),
    })
    // What the caller has fetched has reached them: the delivered horizon follows.
    const newest = page.items.reduce((max, m) => Math.max(max, m.seq), 0)
    if (newest > 0) threads.delivered(threadId, viewerOf(req), newest)
    record(req, 'messages.read', 'allowed', threadId, { patientId: thread.patientId, basis, count: page.items.length })
    const current = threads.byId(threadId)!
    return { ...page, lastSeq: current.lastSeq, lastRevision: current.lastRevision }
  })

  app.post<{ Params: { threadId: string }; Body: { clientMessageId: string; text: string; replyTo?: string } }>('/api/v1/threads/:threadId/messages', {
    onRequest: signedIn(),
    schema: {
      tags: ['threads'],
      summary: 'Send a message: 201 the first time, 200 with the same message when the clientMessageId was already sent (a retry)',
      security: bearer,
      params: threadParams,
      body: {
        type: 'object',
        required: ['clientMessageId', 'text'],
        additionalProperties: false,
        properties: {
          clientMessageId: { type: 'string', pattern: clientIdPattern, description: 'Your id for this send; reuse it when you retry' },
          text: { ...textField, pattern: '\\S' },
          replyTo: { type: 'string', pattern: idPattern, description: 'A message id in the same thread' },
        },
      },
      response: { 200: messageSchema, 201: messageSchema, ...errorResponses },
    },
  }, async (req, reply) => {
    const { threadId } = req.params
    const { thread, basis } = await visibleThread(req, threadId, 'message.post')
    const p = req.principal!
    const { message, created } = audited(req, 'message.post', threadId, () =>
      threads.post({
        threadId,
        sender: { type: 'user', userId: p.userId, role: p.role },
        kind: 'text',
        text: req.body.text,
        clientMessageId: req.body.clientMessageId,
        ...(req.body.replyTo !== undefined ? { replyTo: req.body.replyTo } : {}),
      }),
    )
    record(req, 'message.post', 'allowed', threadId, { patientId: thread.patientId, basis, messageId: message.id, seq: message.seq, retry: !created })
    return reply.status(created ? 201 : 200).send(message)
  })

  app.patch<{ Params: { threadId: string; messageId: string }; Body: { text: string } }>('/api/v1/threads/:threadId/messages/:messageId', {
    onRequest: signedIn(),
    schema: {
      tags: ['threads'],
      summary: 'Edit your text message; the earlier text is kept as a version',
      security: bearer,
      params: messageParams,
      body: { type: 'object', required: ['text'], additionalProperties: false, properties: { text: { ...textField, pattern: '\\S' } } },
      response: { 200: messageSchema, ...errorResponses },
    },
  }, async (req) => {
    const { threadId, messageId } = req.params
    const { thread, basis } = await visibleThread(req, threadId, 'message.edit')
    const message = audited(req, 'message.edit', threadId, () => threads.edit(threadId, messageId, viewerOf(req), req.body.text))
    record(req, 'message.edit', 'allowed', threadId, { patientId: thread.patientId, basis, messageId, seq: message.seq })
    return message
  })

  app.delete<{ Params: { threadId: string; messageId: string } }>('/api/v1/threads/:threadId/messages/:messageId', {
    onRequest: signedIn(),
    schema: {
      tags: ['threads'],
      summary: 'Delete your text message: it stays as a tombstone (no text, deletedAt set, same seq)',
      security: bearer,
      params: messageParams,
      response: { 200: messageSchema, ...errorResponses },
    },
  }, async (req) => {
    const { threadId, messageId } = req.params
    const { thread, basis } = await visibleThread(req, threadId, 'message.delete')
    const message = audited(req, 'message.delete', threadId, () => threads.remove(threadId, messageId, viewerOf(req)))
    record(req, 'message.delete', 'allowed', threadId, { patientId: thread.patientId, basis, messageId, seq: message.seq })
    return message
  })

  app.get<{ Params: { threadId: string; messageId: string } }>('/api/v1/threads/:threadId/messages/:messageId/versions', {
    onRequest: signedIn(),
    schema: {
      tags: ['threads'],
      summary: 'Earlier texts of an edited message, oldest first (none for a tombstone)',
      security: bearer,
      params: messageParams,
      response: {
        200: {
          type: 'object',
          required: ['items'],
          properties: {
            items: {
              type: 'array',
              items: {
                type: 'object',
                required: ['version', 'text', 'writtenAt', 'replacedAt'],
                properties: { version: { type: 'integer' }, text: { type: 'string' }, writtenAt: { type: 'string' }, replacedAt: { type: 'string' } },
              },
            },
          },
        },
        ...errorResponses,
      },
    },
  }, async (req) => {
    const { threadId, messageId } = req.params
    const { thread, basis } = await visibleThread(req, threadId, 'message.versions.read')
    const items = audited(req, 'message.versions.read', threadId, () => threads.versions(threadId, messageId))
    record(req, 'message.versions.read', 'allowed', threadId, { patientId: thread.patientId, basis, messageId, count: items.length })
    return { items }
  })

  app.post<{ Params: { threadId: string }; Body: { seq: number } }>('/api/v1/threads/:threadId/read', {
    onRequest: signedIn(),
    schema: {
      tags: ['threads'],
      summary: 'Move your read horizon forward to seq (a smaller seq changes nothing)',
      security: bearer,
      params: threadParams,
      body: { type: 'object', required: ['seq'], additionalProperties: false, properties: { seq: { type: 'integer', minimum: 0 } } },
      response: { 200: receiptSchema, ...errorResponses },
    },
  }, async (req) => {
    const { threadId } = req.params
    const { thread, basis } = await visibleThread(req, threadId, 'thread.mark_read')
    const receipt = audited(req, 'thread.mark_read', threadId, () => threads.markRead(threadId, viewerOf(req), req.body.seq))
    record(req, 'thread.mark_read', 'allowed', threadId, { patientId: thread.patientId, basis, seq: receipt.readSeq })
    return receipt
  })
}
