/**
 * One load process for bench/connections.ts: opens its share of a reconnect storm on plain
 * node:tls sockets (no MQTT library, so the client side costs as little as it can), with a
 * bounded number of connects in flight, and either closes each socket after its TLS handshake
 * or sends an MQTT 3.1.1 CONNECT (device id and secret, or a client certificate) and keeps the
 * connection open and idle after its CONNACK. Driven over IPC; answers with counts, latency
 * histograms and its own CPU.
 */
import { performance } from 'node:perf_hooks'
import tls from 'node:tls'
import mqttPacket from 'mqtt-packet'
import { LatencyHistogram } from './histogram.ts'
import { cpuSnapshot } from './process-stats.ts'
import type { ConnDevice, FromConnWorker, ToConnWorker } from './protocol.ts'

const send = (m: FromConnWorker) => process.send!(m)

/** Connections held open after their CONNACK. */
const held: tls.TLSSocket[] = []
/** Wall-clock ms, the same clock in every process. */
const now = () => performance.timeOrigin + performance.now()

function errorKey(err: unknown): string {
  const e = err as NodeJS.ErrnoException
  return (e.code ?? e.message ?? String(err)).slice(0, 60)
}

/** One connection: resolves when it is done (handshake, or CONNACK), rejects on an error or a refusal. */
function connectOne(
  d: ConnDevice,
  m: Extract<ToConnWorker, { cmd: 'storm' }>,
  context: tls.SecureContext,
  latency: LatencyHistogram,
  handshake: LatencyHistogram,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const socket = tls.connect({
      host: m.host,
      port: m.port,
      // Made before the storm: passing `ca` (or `cert`) here would build a context, and parse the
      // PEM, for every connection, which costs the client more than the handshake itself.
      secureContext: context,
      servername: m.servername,
      ...(m.localAddress ? { localAddress: m.localAddress } : {}),
      // No session to resume: a storm after a restart has nothing to resume.
    })
    socket.setNoDelay(true)
    let settled = false
    const fail = (err: unknown) => {
      if (settled) return
      settled = true
      socket.destroy()
      reject(err)
    }
    const timer = setTimeout(() => fail(new Error('timeout')), m.timeoutMs)
    socket.once('error', fail)
    socket.once('close', () => fail(new Error('closed')))
    socket.once('secureConnect', () => {
      handshake.record(performance.now() - t0)
      if (m.mode === 'tls') {
        settled = true
        clearTimeout(timer)
        latency.record(performance.now() - t0)
        socket.destroy()
        resolve()
        return
      }
      const packet = mqttPacket.generate({
        cmd: 'connect',
        protocolId: 'MQTT',
        protocolVersion: 4,
        clean: true,
        clientId: d.deviceId,
        keepalive: m.keepaliveS,
        ...(m.mode === 'mqtt' ? { username: d.deviceId, password: Buffer.from(d.secret) } : {}),
      })
      let buf: Buffer = Buffer.alloc(0)
      const onData = (chunk: Buffer) => {
        buf = buf.length ? Buffer.concat([buf, chunk]) : chunk
        if (buf.length < 4) return
        socket.off('data', onData)
        clearTimeout(timer)
        if (buf[0] !== 0x20 || buf[3] !== 0) return fail(new Error(buf[0] === 0x20 ? `connack ${buf[3]}` : `unexpected packet 0x${buf[0]!.toString(16)}`))
        settled = true
        latency.record(performance.now() - t0)
        socket.removeAllListeners('close')
        socket.removeAllListeners('error')
        socket.on('error', () => undefined)
        // Idle from here on: anything the broker sends is read and dropped.
        socket.on('data', () => undefined)
        held.push(socket)
        resolve()
      }
      socket.on('data', onData)
      socket.write(packet)
    })
  })
}

async function storm(m: Extract<ToConnWorker, { cmd: 'storm' }>): Promise<void> {
  const latency = new LatencyHistogram()
  const handshake = new LatencyHistogram()
  const errors: Record<string, number> = {}
  let ok = 0
  let failed = 0
  const shared = tls.createSecureContext({ ca: m.ca })
  const contexts = new Map<string, tls.SecureContext>()
  if (m.mode === 'mqtt-cert') {
    for (const d of m.devices) contexts.set(d.deviceId, tls.createSecureContext({ ca: m.ca, cert: d.cert, key: m.clientKey }))
  }
  const wait = m.startAt - now()
  if (wait > 0) await new Promise((r) => setTimeout(r, wait))
  const cpuFrom = cpuSnapshot()
  const startedAt = now()
  let next = 0
  const lane = async () => {
    while (next < m.devices.length) {
      const d = m.devices[next++]!
      try {
        await connectOne(d, m, contexts.get(d.deviceId) ?? shared, latency, handshake)
        ok++
      } catch (err) {
        failed++
        const k = errorKey(err)
        errors[k] = (errors[k] ?? 0) + 1
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, m.concurrency) }, lane))
  const endedAt = now()
  send({
    type: 'storm',
    ok,
    failed,
    errors,
    startedAt,
    endedAt,
    latency: latency.snapshot(),
    handshake: handshake.snapshot(),
    cpuFrom,
    cpuTo: cpuSnapshot(),
    held: held.length,
  })
}

async function closeAll(): Promise<void> {
  const disconnect = mqttPacket.generate({ cmd: 'disconnect' })
  const sockets = held.splice(0)
  await Promise.all(
    sockets.map(
      (s) =>
        new Promise<void>((resolve) => {
          const t = setTimeout(() => {
            s.destroy()
            resolve()
          }, 5000)
          s.once('close', () => {
            clearTimeout(t)
            resolve()
          })
          s.end(disconnect)
        }),
    ),
  )
  send({ type: 'closed', count: sockets.length })
}

process.on('message', (raw) => {
  const m = raw as ToConnWorker
  const fail = (err: unknown) => send({ type: 'error', message: (err as Error).stack ?? String(err) })
  switch (m.cmd) {
    case 'storm':
      storm(m).catch(fail)
      break
    case 'close':
      closeAll().catch(fail)
      break
    case 'stats': {
      const mem = process.memoryUsage()
      send({ type: 'stats', rssBytes: mem.rss, held: held.length, cpu: cpuSnapshot() })
      break
    }
    case 'exit':
      for (const s of held.splice(0)) s.destroy()
      process.disconnect?.()
      break
  }
})
