import { Ajv, type ErrorObject } from 'ajv'
import type { Logger } from 'pino'
import type { AuditLog } from '../audit/audit.ts'
import type { GatewayConfig } from '../config/load.ts'
import type { EventBus, GatewayEvents } from '../events.ts'
import type { AcceptedReading } from '../ingest/types.ts'
import type { Threads } from './threads.ts'
import { MAX_TEXT_LENGTH, type Message } from './types.ts'

/** A structured device event larger than this (as JSON) is refused rather than posted. */
const MAX_EVENT_BYTES = 2048

const clientIdPattern = '^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$'

/** `{"type":"message","text":...}` from a hub: the patient speaking through it. */
const hubMessageSchema = {
  type: 'object',
  required: ['type', 'text'],
  additionalProperties: false,
  properties: {
    type: { const: 'message' },
    text: { type: 'string', minLength: 1, maxLength: MAX_TEXT_LENGTH, pattern: '\\S' },
    /** Optional: the hub's id for this message, so a QoS1 redelivery posts it once. */
    id: { type: 'string', pattern: clientIdPattern },
  },
} as const

/** Any other device event: an object with a snake_case type. */
const deviceEventSchema = {
  type: 'object',
  required: ['type'],
  properties: { type: { type: 'string', pattern: '^[a-z][a-z0-9_]{0,63}$' } },
} as const

function firstProblem(errors: ErrorObject[] | null | undefined): { message: string; path?: string } {
  const e = errors?.[0]
  if (!e) return { message: 'the event is invalid' }
  const field = (e.params as { additionalProperty?: string; missingProperty?: string }).additionalProperty ?? (e.params as { missingProperty?: string }).missingProperty
  const path = field ? `${e.instancePath}/${field}` : e.instancePath || undefined
  const what = e.keyword === 'additionalProperties' ? `unknown field ${field}` : e.keyword === 'required' ? `missing field ${field}` : `${e.instancePath.slice(1) || 'event'} ${e.message ?? 'is invalid'}`
  return path ? { message: what, path } : { message: what }
}

export interface BridgeDeps {
  threads: Threads
  bus: EventBus
  config: GatewayConfig['threads']
  audit: AuditLog
  log: Logger
  /** Registers work that runs inside each journal commit (see Ingest.addCommitHook). */
  onJournalCommit: (hook: (accepted: AcceptedReading[]) => (() => void) | void) => void
}

/**
 * Where threads meet the rest of the gateway, through the bus (and one journal commit hook):
 * - accepted readings from spot-check devices become structured messages;
 * - device events become structured messages, and a hub's `message` event a patient message;
 * - text messages go out to the patient's hubs as commands.
 * Logs carry ids only: never text, values or payloads.
 */
export function startThreadBridge(deps: BridgeDeps): () => void {
  const { threads, bus, config, audit, log } = deps
  const ajv = new Ajv({ allErrors: false, strict: true })
  const validHubMessage = ajv.compile<{ type: 'message'; text: string; id?: string }>(hubMessageSchema)
  const validDeviceEvent = ajv.compile<{ type: string }>(deviceEventSchema)
  const readingKinds = new Set<string>(config.readingKinds)

  // Thread messages for readings are written inside the journal's commit: stored with their
  // readings or not at all, and announced after the commit.
  deps.onJournalCommit((accepted) => {
    const shown = accepted.filter((r) => readingKinds.has(r.deviceKind))
    if (shown.length === 0) return
    const posted = threads.appendReadings(shown)
    return () => {
      for (const p of posted) bus.emit('message.posted', p)
    }
  })

  const refuse = (deviceId: string, code: string, problem: { message: string; path?: string }) => {
    bus.emit('device.error', { deviceId, code, ...problem })
  }

  const onDeviceEvent = (e: GatewayEvents['device.event'][0]) => {
    let body: unknown
    try {
      body = JSON.parse(e.payload.toString('utf8'))
    } catch {
      return refuse(e.deviceId, 'RPM_ERR_PAYLOAD_JSON', { message: 'the event is not valid JSON' })
    }
    if (!validDeviceEvent(body)) return refuse(e.deviceId, 'RPM_ERR_EVENT_INVALID', firstProblem(validDeviceEvent.errors))
    try {
      const thread = threads.ensure(e.patientId)
      if (body.type === 'message') {
        if (e.kind !== 'hub') {
          audit.record({ actorType: 'device', actorId: e.deviceId, action: 'message.post', target: thread.id, outcome: 'denied', details: { code: 'RPM_ERR_EVENT_INVALID', reason: 'not a hub' } })
          return refuse(e.deviceId, 'RPM_ERR_EVENT_INVALID', { message: 'only a hub may post messages', path: '/type' })
        }
        if (!validHubMessage(body)) return refuse(e.deviceId, 'RPM_ERR_EVENT_INVALID', firstProblem(validHubMessage.errors))
        const { message, created } = threads.post({
          threadId: thread.id,
          sender: { type: 'device', deviceId: e.deviceId, role: 'patient' },
          kind: 'text',
          text: body.text,
          ...(body.id !== undefined ? { clientMessageId: body.id } : {}),
        })
        audit.record({
          actorType: 'device', actorId: e.deviceId, action: 'message.post', target: thread.id, outcome: 'allowed',
          details: { patientId: e.patientId, messageId: message.id, seq: message.seq, retry: !created },
        })
        return
      }
      const json = JSON.stringify(body)
      if (Buffer.byteLength(json) > MAX_EVENT_BYTES) {
        return refuse(e.deviceId, 'RPM_ERR_EVENT_INVALID', { message: `the event is larger than ${MAX_EVENT_BYTES} bytes` })
      }
      // An event's own `id` makes a redelivery (QoS1 resend after a reconnect) post once.
      const eventId = (body as { id?: unknown }).id
      threads.post({
        threadId: thread.id,
        sender: { type: 'device', deviceId: e.deviceId, role: 'device' },
        kind: 'device_event',
        data: { deviceId: e.deviceId, deviceKind: e.kind, event: body },
        ...(typeof eventId === 'string' && new RegExp(clientIdPattern).test(eventId) ? { clientMessageId: `event:${eventId}` } : {}),
      })
    } catch (err) {
      log.error({ patientId: e.patientId, deviceId: e.deviceId, err: (err as Error).message }, 'posting a device event to the thread failed')
    }
  }

  // Hubs show the conversation: text only, to every hub of the patient but the one it came from.
  const onPosted = ({ patientId, message }: { patientId: string; message: Message }) => {
    if (message.kind !== 'text' || message.text === null) return
    let hubs: string[]
    try {
      hubs = threads.hubsOf(patientId)
    } catch (err) {
      log.error({ patientId, err: (err as Error).message }, 'finding the patient\'s hubs failed')
      return
    }
    const payload = JSON.stringify({ type: 'message', threadId: message.threadId, seq: message.seq, from: { role: message.from.role }, text: message.text })
    for (const hubId of hubs) {
      if (hubId === message.from.deviceId) continue
      bus.emit('device.command', { deviceId: hubId, payload })
    }
  }

  bus.on('device.event', onDeviceEvent)
  bus.on('message.posted', onPosted)
  return () => {
    bus.off('device.event', onDeviceEvent)
    bus.off('message.posted', onPosted)
  }
}
