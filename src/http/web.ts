import { existsSync } from 'node:fs'
import path from 'node:path'
import fastifyStatic from '@fastify/static'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'

/** The built web console (npm run build:web). */
export const WEB_ROOT = path.resolve(import.meta.dirname, '..', '..', 'web', 'dist')

/** Paths that belong to the API and the operators' endpoints, never to the console. */
const SERVER_PATHS = /^\/(api|docs|mqtt|metrics|healthz|readyz)(\/|$)/

// The console loads only its own files and talks only to this origin (REST and the WebSocket).
const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "worker-src 'self'",
  "manifest-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
  "form-action 'self'",
].join('; ')

function pageHeaders(reply: FastifyReply): void {
  reply.header('content-security-policy', CSP)
  reply.header('x-frame-options', 'DENY')
  reply.header('x-content-type-options', 'nosniff')
  reply.header('referrer-policy', 'no-referrer')
  reply.header('permissions-policy', 'camera=(), microphone=(), geolocation=()')
}

/**
 * Serves the web console at `/`: its files, and index.html for its client-side routes
 * (/alerts, /patients/pat-1, ...) so a reload or a link opens the right page. Returns whether
 * it is built; without it, `/` says how to build it.
 */
export async function webConsole(app: FastifyInstance, root = WEB_ROOT): Promise<boolean> {
  const built = existsSync(path.join(root, 'index.html'))
  if (!built) {
    app.get('/', { schema: { hide: true } }, async (_req, reply) => {
      pageHeaders(reply)
      return reply.type('text/html').send('<!doctype html><html lang="en"><title>rpm-gateway</title><main><h1>rpm-gateway</h1><p>The web console is not built. Run <code>npm run build:web</code> and reload. The API is at <a href="/docs">/docs</a>.</p></main></html>')
    })
    return false
  }
  await app.register(fastifyStatic, {
    root,
    prefix: '/',
    wildcard: true,
    index: ['index.html'],
    // Hashed assets never change; index.html and the service worker must be fetched fresh.
    setHeaders: (res, file) => {
      const long = file.includes(`${path.sep}assets${path.sep}`)
      res.header('cache-control', long ? 'public, max-age=31536000, immutable' : 'no-cache')
      if (file.endsWith('.html')) {
        res.header('content-security-policy', CSP)
        res.header('x-frame-options', 'DENY')
        res.header('referrer-policy', 'no-referrer')
      }
      res.header('x-content-type-options', 'nosniff')
    },
  })
  return true
}

/** For an unknown GET a browser navigates to outside the API: the console's index.html. */
export function isConsoleRoute(req: FastifyRequest): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false
  const url = req.url.split('?')[0] ?? '/'
  if (SERVER_PATHS.test(url) || path.extname(url) !== '') return false
  return (req.headers.accept ?? '').includes('text/html')
}

export function sendConsole(reply: FastifyReply): FastifyReply {
  pageHeaders(reply)
  reply.header('cache-control', 'no-cache')
  return reply.sendFile('index.html')
}
