import { Duplex } from 'node:stream'

/** Why a connection's byte stream was cut. */
export class PacketTooLargeError extends Error {
  readonly code = 'RPM_ERR_PACKET_TOO_LARGE'
  constructor(readonly packetBytes: number, readonly maxBytes: number) {
    super(`MQTT packet of ${packetBytes} bytes exceeds the ${maxBytes}-byte limit`)
  }
}

export class MalformedLengthError extends Error {
  readonly code = 'RPM_ERR_BAD_REQUEST'
  constructor() {
    super('malformed MQTT remaining length') // [MQTT-2.2.3]: at most four bytes
  }
}

const HEADER = 0
const LENGTH = 1
const BODY = 2

/**
 * Reads MQTT fixed headers as bytes pass and reports the first packet whose declared size
 * exceeds the limit, before its body is buffered anywhere (the MQTT parser buffers a whole
 * packet before the broker sees it, so the limit has to sit in front of it).
 */
export class PacketSizeScanner {
  #state = HEADER
  #length = 0
  #multiplier = 1
  #lengthBytes = 0
  #remaining = 0

  constructor(private readonly maxBytes: number) {}

  /** Returns an error for the first violation in this chunk, else null. */
  scan(chunk: Uint8Array): PacketTooLargeError | MalformedLengthError | null {
    let i = 0
    const n = chunk.length
    while (i < n) {
      if (this.#state === BODY) {
        const take = Math.min(this.#remaining, n - i)
        i += take
        this.#remaining -= take
        if (this.#remaining === 0) this.#state = HEADER
      } else if (this.#state === HEADER) {
        i++
        this.#state = LENGTH
        this.#length = 0
        this.#multiplier = 1
        this.#lengthBytes = 0
      } else {
        const byte = chunk[i++]!
        this.#length += (byte & 0x7f) * this.#multiplier
        this.#multiplier *= 128
        this.#lengthBytes++
        const total = 1 + this.#lengthBytes + this.#length
        if (total > this.maxBytes) return new PacketTooLargeError(total, this.maxBytes)
        if (byte & 0x80) {
          if (this.#lengthBytes === 4) return new MalformedLengthError()
        } else {
          this.#remaining = this.#length
          this.#state = this.#remaining === 0 ? HEADER : BODY
        }
      }
    }
    return null
  }
}

/**
 * A connection stream for the broker that passes bytes through from `inner` and destroys the
 * connection at the first oversized packet. Writes go straight to `inner`.
 */
export class LimitedConnection extends Duplex {
  readonly #inner: Duplex
  readonly #scanner: PacketSizeScanner

  constructor(inner: Duplex, maxBytes: number, onViolation: (err: Error) => void) {
    super({ allowHalfOpen: false, readableHighWaterMark: 64 * 1024 })
    this.#inner = inner
    this.#scanner = new PacketSizeScanner(maxBytes)
    inner.on('data', (chunk: Buffer) => {
      const violation = this.#scanner.scan(chunk)
      if (violation) {
        inner.removeAllListeners('data')
        onViolation(violation)
        inner.destroy()
        this.destroy()
        return
      }
      if (!this.push(chunk)) inner.pause()
    })
    inner.on('end', () => this.push(null))
    inner.on('close', () => this.destroy())
    inner.on('error', (err) => this.destroy(err))
  }

  override _read(): void {
    this.#inner.resume()
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.#inner.write(chunk)) callback()
    else this.#inner.once('drain', () => callback())
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (err?: Error | null) => void): void {
    const inner = this.#inner as Duplex & { cork?: () => void; uncork?: () => void }
    inner.cork()
    let ok = true
    for (const { chunk } of chunks) ok = inner.write(chunk)
    inner.uncork()
    if (ok) callback()
    else inner.once('drain', () => callback())
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.#inner.end(callback)
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.#inner.destroy()
    callback(err)
  }
}
