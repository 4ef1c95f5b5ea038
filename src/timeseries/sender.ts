import { HttpError, InfluxDB, type WriteApi } from '@influxdata/influxdb-client'
import type { GatewayConfig } from '../config/load.ts'

const REFUSED = new Set([400, 413, 422])

/** Why a write did not land: the server is away (retry the same batch later) or it refused the lines (4xx). */
export class WriteRefused extends Error {
  constructor(readonly status: number, message: string) {
    super(message)
  }
}

/**
 * Sends line-protocol batches to InfluxDB's /api/v2/write with the official client (gzip for
 * larger bodies), one batch at a time, and says plainly how each one ended. The client's own
 * retry buffer is off: a batch is either confirmed (resolves), refused as invalid
 * (WriteRefused), or not written (any other error), and the caller keeps it on disk until it is
 * confirmed.
 */
export class LineSender {
  readonly #api: WriteApi

  constructor(config: Pick<GatewayConfig['influx'], 'url' | 'token' | 'org' | 'bucket' | 'timeoutMs' | 'batchSize'>) {
    const influx = new InfluxDB({ url: config.url, token: config.token, timeout: config.timeoutMs })
    this.#api = influx.getWriteApi(config.org, config.bucket, 'ms', {
      // Never send on its own: the caller decides what a batch is and when it goes (the client
      // sends when its buffer fills, so the buffer is one line larger than any batch).
      batchSize: config.batchSize + 1,
      flushInterval: 0,
      maxBatchBytes: 1 << 30,
      maxRetries: 0,
      maxBufferLines: 0,
      gzipThreshold: 1000,
      // Answer the flush with the error itself: no retry buffer, no console output.
      writeFailed: (error: Error) => Promise.reject(error),
    })
  }

  async send(lines: readonly string[]): Promise<void> {
    if (lines.length === 0) return
    this.#api.writeRecords(lines as string[])
    try {
      await this.#api.flush()
    } catch (err) {
      // 400 (a line it cannot parse), 413 (too large) and 422 (e.g. a field type conflict or
      // a point outside retention) refuse the lines themselves. Everything else (401/403/404: a
      // token, org or bucket to fix; 408, 429, 5xx, no answer) is the server not taking writes
      // now, and the same batch is tried again.
      if (err instanceof HttpError && REFUSED.has(err.statusCode)) {
        throw new WriteRefused(err.statusCode, `${err.statusCode} ${(err.body ?? err.message).toString().slice(0, 300)}`)
      }
      throw err
    }
  }

  async close(): Promise<void> {
    await this.#api.close().catch(() => undefined)
  }
}

/** "Unavailable" text for a failed write without its URL's secrets. */
export function describeFailure(err: unknown): string {
  if (err instanceof HttpError) return `HTTP ${err.statusCode}`
  const code = (err as NodeJS.ErrnoException).code
  return code ?? (err as Error).message?.slice(0, 200) ?? 'unknown error'
}
