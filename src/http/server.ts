import Fastify, { type FastifyInstance, LogController } from 'fastify'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import websocket from '@fastify/websocket'
import { createWebSocketStream } from 'ws'
import type { Logger } from 'pino'
import type { GatewayConfig } from '../config/load.ts'
import { RpmError, isRpmError } from '../errors.ts'
import type { Metrics } from '../metrics.ts'
import type { DeviceBroker } from '../broker/broker.ts'
import type { TlsMaterial } from '../broker/pki.ts'
import { type AlertRouteDeps, alertRoutes } from './alerts-routes.ts'
import { type NotifyRouteDeps, notifyRoutes } from './notify-routes.ts'
import { isConsoleRoute, sendConsole, webConsole } from './web.ts'
import { type ApiDeps, apiRoutes } from './api.ts'
import { buildRequestValidator } from './validation.ts'
import { type ThreadRouteDeps, threadRoutes } from './threads-routes.ts'
import { type ReminderRouteDeps, reminderRoutes } from './reminders-routes.ts'
import { WS_PATH, type WebSocketDeps, liveSocketRoutes, selectLiveProtocol } from './ws.ts'

export interface HttpDeps {
  config: GatewayConfig['http']
  maxPacketBytes: number
  broker: DeviceBroker
  metrics: Metrics
  log: Logger
  tls: TlsMaterial
  api: Omit<ApiDeps, 'sessionCookie'>
  threads: ThreadRouteDeps
  reminders: ReminderRouteDeps
  alerts: AlertRouteDeps
  notify: NotifyRouteDeps
  /** How long a sign-in may last (auth.sessionTtlSeconds): the session cookie's lifetime. */
  sessionTtlSeconds: number
  /** The live WebSocket at /api/v1/ws. */
  live: WebSocketDeps
  /** Checks behind /readyz: true (up), false (down: not ready) or 'degraded' (working, but behind; still ready); 'off' is left out. */
  readiness: Record<string, () => boolean | 'degraded' | 'off'>
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost'])

/**
 * The HTTP server: health, readiness, Prometheus metrics and MQTT over WebSocket at /mqtt.
 * Off loopback it serves HTTPS with the gateway's certificate.
 */
export async function buildHttpServer(deps: HttpDeps): Promise<FastifyInstance> {
  const secure = !LOOPBACK.has(deps.config.host)
  const app = Fastify({
    loggerInstance: deps.log,
    logController: new LogController({ disableRequestLogging: true }),
    trustProxy: false,
    bodyLimit: 64 * 1024,
    // The router's own refusals (a malformed URL, a path parameter too long) in the API's error shape.
    frameworkErrors: (err, _req, reply) => {
      const status = (err as { statusCode?: number }).statusCode ?? 400
      ;(reply as unknown as { status(n: number): { send(b: unknown): void } }).status(status).send({ code: 'RPM_ERR_BAD_REQUEST', message: status === 414 ? 'a path parameter is too long' : 'the URL is malformed' })
    },
    // Refusals before a request exists (headers too large, a malformed request line): the same shape.
    clientErrorHandler: (err, socket) => {
      if (!socket.writable) return socket.destroy()
      const status = (err as { code?: string }).code === 'HPE_HEADER_OVERFLOW' ? 431 : 400
      const body = JSON.stringify({ code: 'RPM_ERR_BAD_REQUEST', message: status === 431 ? 'the request headers are too large' : 'the request is malformed' })
      socket.end(`HTTP/1.1 ${status} ${status === 431 ? 'Request Header Fields Too Large' : 'Bad Request'}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
    },
    // Unknown fields are refused, not silently dropped; query strings are coerced to their types,
    // JSON bodies are not.
    schemaController: { compilersFactory: { buildValidator: buildRequestValidator as never } },
    ...(secure ? { https: { key: deps.tls.key, cert: deps.tls.cert } } : {}),
  }) as unknown as FastifyInstance

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string; validation?: Array<{ instancePath: string; message?: string; params: Record<string, unknown> }>; validationContext?: string }, _req, reply) => {
    if (isRpmError(err)) return reply.status(err.status).send(err.toJSON())
    if (err.validation) {
      const first = err.validation[0]
      const location = err.validationContext ?? 'body'
      const field =
        (first?.params.missingProperty as string | undefined) ??
        (first?.params.additionalProperty as string | undefined) ??
        (first?.instancePath.slice(1).replaceAll('/', '.') || undefined)
      const what =
        first?.params.additionalProperty !== undefined ? `unknown field ${String(first.params.additionalProperty)}`
          : first?.params.missingProperty !== undefined ? `missing field ${String(first.params.missingProperty)}`
          : `${field ?? location} ${first?.message ?? 'is invalid'}`
      return reply.status(400).send({ code: 'RPM_ERR_BAD_REQUEST', message: `${location}: ${what}`, details: { location, ...(field ? { field } : {}) } })
    }
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return reply.status(413).send(new RpmError('RPM_ERR_PAYLOAD_TOO_LARGE').toJSON())
    const status = (err as { statusCode?: number }).statusCode
    if (status && status < 500) {
      return reply.status(status).send({ code: 'RPM_ERR_BAD_REQUEST', message: err.message })
    }
    deps.log.error({ err: err.message }, 'request failed')
    return reply.status(500).send(new RpmError('RPM_ERR_INTERNAL').toJSON())
  })
  // An empty body sent as application/json (fetch with a default content type, on a route that
  // takes no body) is no body, not a parse error; a route that needs a body still says so.
  const parseJson = app.getDefaultJsonParser('error', 'error')
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if (body === '') return done(null, undefined)
    return parseJson(req, body as string, done)
  })
  let consoleBuilt = false
  app.setNotFoundHandler((req, reply) => {
    if (consoleBuilt && isConsoleRoute(req)) return sendConsole(reply)
    reply.status(404).send(new RpmError('RPM_ERR_NOT_FOUND', 'no such route').toJSON())
  })

  await app.register(websocket, {
    options: {
      // A WebSocket frame can hold at most one full MQTT packet plus framing.
      maxPayload: deps.maxPacketBytes + 16,
      handleProtocols: (protocols: Set<string>, req: { url?: string }) => {
        if (req.url?.split('?')[0] === WS_PATH) return selectLiveProtocol(protocols)
        return protocols.has('mqtt') ? 'mqtt' : protocols.has('mqttv3.1') ? 'mqttv3.1' : false
      },
    },
  })

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'rpm-gateway API', version: '1', description: 'Remote patient monitoring gateway. Errors: {code, message, details} with an RPM_ERR_* code.' },
      components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } } },
    },
  })
  await app.register(swaggerUi, { routePrefix: '/docs' })
  await app.register(async (api) => apiRoutes(api, { ...deps.api, sessionCookie: { secure, maxAgeSeconds: deps.sessionTtlSeconds } }))
  await app.register(async (api) => threadRoutes(api, deps.threads))
  await app.register(async (api) => reminderRoutes(api, deps.reminders))
  await app.register(async (api) => alertRoutes(api, deps.alerts))
  await app.register(async (api) => notifyRoutes(api, deps.notify))
  liveSocketRoutes(app, deps.live)

  consoleBuilt = await webConsole(app, deps.config.webRoot || undefined)

  app.get('/healthz', { schema: { hide: true } }, async () => ({ status: 'ok' }))

  app.get('/readyz', { schema: { hide: true } }, async (_req, reply) => {
    const checks: Record<string, string> = {}
    for (const [name, check] of Object.entries(deps.readiness)) {
      const v = check()
      if (v !== 'off') checks[name] = v === 'degraded' ? 'degraded' : v ? 'up' : 'down'
    }
    const ready = Object.values(checks).every((v) => v !== 'down')
    return reply.status(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not_ready', checks })
  })

  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    reply.header('content-type', deps.metrics.registry.contentType)
    return deps.metrics.registry.metrics()
  })

  if (deps.config.mqttWebSocket) {
    app.get('/mqtt', { websocket: true }, (socket, req) => {
      const stream = createWebSocketStream(socket)
      stream.on('error', () => stream.destroy())
      if (!deps.broker.admit(stream, req.ip)) return
      deps.broker.attach(stream, { address: req.ip, transport: 'ws' })
    })
  }

  return app
}
