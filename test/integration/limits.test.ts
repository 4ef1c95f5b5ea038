import { execFile } from 'node:child_process'
import { appendFileSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import tls from 'node:tls'
import mqttPacket from 'mqtt-packet'
import type { MqttClient } from 'mqtt'
import mqtt from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { build } from '../../device-simulator/readings.ts'
import { connectDevice, provision, readingsOf, startGateway, tempDir, type TestGateway } from '../helpers.ts'

let t: TestGateway
let clients: MqttClient[] = []

afterEach(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)))
  clients = []
  await t?.stop()
})

function run(cmd: string, args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 20_000 }, (err, _stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr })
    })
  })
}

const port = (url: string) => new URL(url).port

describe('packet size limit', () => {
  it('refuses a 20 MiB PUBLISH before buffering it, and the device can reconnect', async () => {
    t = await startGateway()
    const dev = await provision(t.gateway)
    const file = path.join(tempDir(), 'big.json')
    // Written in 1 MiB pieces so that this process never holds 20 MiB itself.
    const piece = Buffer.alloc(1024 * 1024, 0x20)
    writeFileSync(file, '')
    for (let i = 0; i < 20; i++) appendFileSync(file, piece)

    const before = process.memoryUsage()
    let peak = 0
    const sampler = setInterval(() => {
      const m = process.memoryUsage()
      // Buffers (where a buffered packet would live) count in arrayBuffers. RSS is not used: the
      // scrypt check of the device secret alone takes 16 MiB of native memory for a moment.
      peak = Math.max(peak, m.arrayBuffers - before.arrayBuffers)
    }, 5)
    const result = await run('mosquitto_pub', [
      '-h', '127.0.0.1', '-p', port(t.urls.mqtts), '--cafile', t.urls.caFile,
      '-i', dev.deviceId, '-u', dev.deviceId, '-P', dev.secret, '-q', '1',
      '-t', `devices/${dev.deviceId}/readings`, '-f', file,
    ])
    clearInterval(sampler)

    expect(result.code).not.toBe(0)
    expect((await t.gateway.metrics.packetsTooLarge.get()).values[0]!.value).toBe(1)
    // The gateway (this process) never held the 20 MiB payload.
    expect(peak).toBeLessThan(8 * 1024 * 1024)
    expect(readingsOf(t, dev.deviceId)).toHaveLength(0)

    const client = await connectDevice(t, dev)
    clients.push(client)
    await client.publishAsync(`devices/${dev.deviceId}/readings`, JSON.stringify(build.heartRate(70, { seq: 1 })), { qos: 1 })
    expect(readingsOf(t, dev.deviceId)).toHaveLength(1)
  })

  it('applies the configured limit to every packet, including CONNECT and over WebSocket', async () => {
    t = await startGateway({ 'mqtt.maxPacketBytes': 2048 })
    const dev = await provision(t.gateway)
    const client = await connectDevice(t, dev)
    clients.push(client)
    const closed = new Promise<void>((resolve) => client.once('close', () => resolve()))
    client.publish(`devices/${dev.deviceId}/readings`, Buffer.alloc(4096, 0x20), { qos: 1 })
    await closed

    // A CONNECT with a huge password never reaches authentication.
    const raw = tls.connect({ host: '127.0.0.1', port: Number(port(t.urls.mqtts)), ca: t.ca, servername: 'localhost' })
    await new Promise((resolve) => raw.once('secureConnect', resolve))
    raw.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: dev.deviceId, keepalive: 30, username: dev.deviceId, password: Buffer.alloc(4000) }))
    await new Promise((resolve) => raw.once('close', resolve))

    const ws = await mqtt.connectAsync(t.urls.ws!, { clientId: dev.deviceId, username: dev.deviceId, password: dev.secret, protocolVersion: 4, reconnectPeriod: 0 })
    clients.push(ws)
    const wsClosed = new Promise<void>((resolve) => ws.once('close', () => resolve()))
    ws.publish(`devices/${dev.deviceId}/readings`, Buffer.alloc(4096, 0x20), { qos: 1 })
    await wsClosed
    expect((await t.gateway.metrics.packetsTooLarge.get()).values[0]!.value).toBe(3)
  })
})

describe('connection limits', () => {
  it('refuses connections over the maximum and keeps serving the ones it has', async () => {
    t = await startGateway({ 'mqtt.maxConnections': 2 })
    const devs = await Promise.all([1, 2, 3].map(() => provision(t.gateway)))
    clients.push(await connectDevice(t, devs[0]!), await connectDevice(t, devs[1]!))
    await expect(connectDevice(t, devs[2]!)).rejects.toThrow()
    await clients[0]!.publishAsync(`devices/${devs[0]!.deviceId}/readings`, JSON.stringify(build.heartRate(70, { seq: 1 })), { qos: 1 })
    expect(readingsOf(t, devs[0]!.deviceId)).toHaveLength(1)
  })

  it('rate-limits new connections per address, before the TLS handshake', async () => {
    t = await startGateway({ 'mqtt.connectRatePerMinute': 3 })
    const dev = await provision(t.gateway)
    for (let i = 0; i < 3; i++) {
      const c = await connectDevice(t, dev)
      await c.endAsync()
    }
    await expect(connectDevice(t, dev)).rejects.toThrow()
    const refused = (await t.gateway.metrics.connectRefused.get()).values.find((v) => v.labels.reason === 'rate_limited')
    expect(refused?.value).toBeGreaterThanOrEqual(1)
  })

  it('counts sockets that never send CONNECT against the limit, and frees their slots when they close', async () => {
    t = await startGateway({ 'mqtt.maxConnections': 3 })
    const idle = await Promise.all([1, 2, 3].map(() => new Promise<net.Socket>((resolve) => {
      const s = net.connect(Number(port(t.urls.mqtts)), '127.0.0.1', () => resolve(s))
    })))
    await new Promise((r) => setTimeout(r, 100))
    const dev = await provision(t.gateway)
    await expect(connectDevice(t, dev)).rejects.toThrow()
    for (const s of idle) s.destroy()
    await new Promise((r) => setTimeout(r, 100))
    clients.push(await connectDevice(t, dev))
  })
})
