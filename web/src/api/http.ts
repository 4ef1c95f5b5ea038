// REST client: JSON over /api/v1 with the in-memory access token (docs/api.md). A 401 is met
// with one refresh and one retry; a second 401 ends the session (the caller signs out).
import type { ApiErrorBody } from './types.ts'

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message)
    this.name = 'ApiError'
  }

  /** The field the gateway named, if any (details.field). */
  get field(): string | undefined {
    const f = this.details?.['field']
    return typeof f === 'string' ? f : undefined
  }
}

/** What the client needs from the session. */
export interface TokenSource {
  token(): string | null
  /** After a 401: refresh once (shared by concurrent callers); false when the session is over. */
  recover(): Promise<boolean>
  /** A request reached the gateway (it counts toward the server's idle timeout). */
  requested(): void
}

export type Query = Record<string, string | number | boolean | null | undefined>

export function withQuery(path: string, query?: Query): string {
  if (!query) return path
  const qs = new URLSearchParams()
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') qs.set(k, String(v))
  const s = qs.toString()
  return s ? `${path}?${s}` : path
}

export class Api {
  constructor(private readonly auth: TokenSource) {}

  get<T>(path: string, query?: Query, signal?: AbortSignal): Promise<T> {
    return this.request<T>('GET', withQuery(path, query), undefined, signal)
  }
  post<T>(path: string, body?: unknown): Promise<T> {
    return this.request<T>('POST', path, body ?? {})
  }
  put<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>('PUT', path, body)
  }
  patch<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>('PATCH', path, body)
  }
  delete<T>(path: string, body?: unknown): Promise<T> {
    return this.request<T>('DELETE', path, body)
  }

  async request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    let res = await this.#send(method, path, body, signal)
    if (res.status === 401 && (await this.auth.recover())) res = await this.#send(method, path, body, signal)
    return readAnswer<T>(res)
  }

  #send(method: string, path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
    const headers: Record<string, string> = { accept: 'application/json' }
    const token = this.auth.token()
    if (token) headers['authorization'] = `Bearer ${token}`
    if (body !== undefined) headers['content-type'] = 'application/json'
    this.auth.requested()
    return fetch(`/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? null : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
      ...(signal ? { signal } : {}),
    })
  }
}

/** Calls that are not made with the access token: sign-in and refresh, which use the cookie. */
export async function postPublic<T>(path: string, body: unknown, token?: string): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json', 'content-type': 'application/json' }
  if (token) headers['authorization'] = `Bearer ${token}`
  const res = await fetch(`/api/v1${path}`, { method: 'POST', headers, body: JSON.stringify(body), credentials: 'same-origin', cache: 'no-store' })
  return readAnswer<T>(res)
}

async function readAnswer<T>(res: Response): Promise<T> {
  if (res.status === 204) return undefined as T
  const text = await res.text()
  let json: unknown = undefined
  try {
    json = text ? JSON.parse(text) : undefined
  } catch {
    // Not JSON: a proxy's error page, say.
  }
  if (!res.ok) {
    const e = (json ?? {}) as Partial<ApiErrorBody>
    throw new ApiError(res.status, e.code ?? `HTTP_${res.status}`, e.message ?? (res.statusText || 'The request failed'), e.details)
  }
  return json as T
}

/** A short sentence for people, from any error. */
export function describeError(err: unknown): string {
  if (err instanceof ApiError) {
    if (err.status === 0 || err.code === 'HTTP_502' || err.code === 'HTTP_503' || err.code === 'HTTP_504') return 'The gateway cannot be reached. Please try again.'
    if (err.code === 'RPM_ERR_RATE_LIMITED') return 'Too many requests. Please wait a moment and try again.'
    return err.message
  }
  if (err instanceof TypeError) return 'The gateway cannot be reached. Check the connection and try again.'
  return err instanceof Error ? err.message : String(err)
}
