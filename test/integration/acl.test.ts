import { spawn, type ChildProcess } from 'node:child_process'
import type { MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { build } from '../../device-simulator/readings.ts'
import {
  auditOf,
  closed,
  connectDevice,
  mosquittoArgs,
  nextMessage,
  provision,
  readingsOf,
  startGateway,
  waitFor,
  type TestDevice,
  type TestGateway,
} from '../helpers.ts'

let t: TestGateway | undefined
let clients: MqttClient[] = []
let children: ChildProcess[] = []

afterEach(async () => {
  for (const child of children) if (child.exitCode === null) child.kill()
  children = []
  await Promise.all(clients.map((c) => c.endAsync(true)))
  clients = []
  await t?.stop()
  t = undefined
})

async function twoDevices(): Promise<{ t: TestGateway; a: TestDevice; b: TestDevice; client: MqttClient }> {
  t = await startGateway()
  const a = await provision(t.gateway)
  const b = await provision(t.gateway)
  const client = await connectDevice(t, a)
  clients.push(client)
  return { t, a, b, client }
}

/** The SUBACK return codes for `topics`, one per filter; 0x80 is a refusal [MQTT-3.9.3]. */
function suback(client: MqttClient, topics: string[]): Promise<number[]> {
  return new Promise((resolve, reject) => {
    // mqtt.js reports a refused filter as an error but still hands over the SUBACK packet.
    client.subscribe(topics, { qos: 1 }, (err, _granted, packet) => {
      if (packet && 'granted' in packet) return resolve(packet.granted as number[])
      reject(err ?? new Error('no SUBACK'))
    })
  })
}

describe('topic ACL: publishing', () => {
  it('disconnects a device that publishes to another device\'s topic, stores nothing and audits the attempt', async () => {
    const { t, a, b, client } = await twoDevices()
    const victim = await connectDevice(t, b)
    clients.push(victim)
    const topic = `devices/${b.deviceId}/readings`
    // MQTT 3.1.1 has no negative PUBACK: the broker closes the connection instead.
    client.publish(topic, JSON.stringify(build.bloodPressure(200, 120, 90, { seq: 1 })), { qos: 1 })
    await closed(client)

    expect(readingsOf(t, b.deviceId)).toEqual([])
    expect(auditOf(t, 'mqtt.publish')).toEqual([
      expect.objectContaining({ actor_type: 'device', actor_id: a.deviceId, target: topic, outcome: 'denied', address: '127.0.0.1' }),
    ])
    // The device whose topic it was is untouched.
    expect(victim.connected).toBe(true)
    await victim.publishAsync(topic, JSON.stringify(build.bloodPressure(121, 79, 64, { seq: 1 })), { qos: 1 })
    expect(readingsOf(t, b.deviceId)).toHaveLength(1)
  })

  it('does not publish a last will aimed at another device\'s topic', async () => {
    const gw = (t = await startGateway())
    const a = await provision(gw.gateway)
    const b = await provision(gw.gateway)
    const topic = `devices/${b.deviceId}/readings`
    const client = await connectDevice(gw, a, {
      will: { topic, payload: Buffer.from(JSON.stringify(build.bloodPressure(210, 130, 99, { seq: 1 }))), qos: 1, retain: false },
    })
    clients.push(client)
    client.stream.destroy() // an unclean disconnect: the broker would send the will now
    await waitFor(() => auditOf(gw, 'mqtt.publish').length > 0, 5000, 'audited will')

    expect(auditOf(gw, 'mqtt.publish')).toEqual([expect.objectContaining({ actor_id: a.deviceId, target: topic, outcome: 'denied' })])
    expect(readingsOf(gw, b.deviceId)).toEqual([])
  })
})

describe('topic ACL: subscribing', () => {
  it('refuses wildcards and other devices\' topics with SUBACK 0x80, audits each, and keeps the connection', async () => {
    const { t, a, b, client } = await twoDevices()
    const refused = ['#', 'devices/+/readings', `devices/${b.deviceId}/commands`, `devices/${b.deviceId}/errors`]
    expect(await suback(client, refused)).toEqual([0x80, 0x80, 0x80, 0x80])

    expect(auditOf(t, 'mqtt.subscribe').map((r) => [r.actor_id, r.target, r.outcome])).toEqual(
      refused.map((topic) => [a.deviceId, topic, 'denied']),
    )
    // Still connected and still able to deliver readings.
    expect(client.connected).toBe(true)
    await client.publishAsync(`devices/${a.deviceId}/readings`, JSON.stringify(build.bloodPressure(130, 85, 70, { seq: 3 })), { qos: 1 })
    expect(readingsOf(t, a.deviceId)).toHaveLength(1)
  })

  it('grants a device its own commands and errors topics', async () => {
    const { t, a, client } = await twoDevices()
    expect(await suback(client, [`devices/${a.deviceId}/commands`, `devices/${a.deviceId}/errors`])).toEqual([1, 1])
    expect(auditOf(t, 'mqtt.subscribe')).toEqual([])
  })

  it('delivers what the gateway publishes on the device\'s commands topic, and not other devices\' commands', async () => {
    const { t, a, b, client } = await twoDevices()
    await client.subscribeAsync(`devices/${a.deviceId}/commands`, { qos: 1 })
    const received: Array<[string, string]> = []
    client.on('message', (topic, payload) => received.push([topic, payload.toString()]))

    const own = nextMessage(client, `devices/${a.deviceId}/commands`)
    // Published first, so it would arrive first if it leaked.
    t.gateway.broker.publish(`devices/${b.deviceId}/commands`, JSON.stringify({ type: 'display', text: 'for b' }), { qos: 1, retain: false })
    t.gateway.broker.publish(`devices/${a.deviceId}/commands`, JSON.stringify({ type: 'display', text: 'for a' }), { qos: 1, retain: false })
    expect(JSON.parse((await own).toString())).toEqual({ type: 'display', text: 'for a' })
    expect(received).toEqual([[`devices/${a.deviceId}/commands`, JSON.stringify({ type: 'display', text: 'for a' })]])
  })

  it('refuses another device\'s commands topic to mosquitto_sub while granting its own on the same connection', async () => {
    const gw = (t = await startGateway())
    const a = await provision(gw.gateway)
    const b = await provision(gw.gateway)
    const sub = spawn('mosquitto_sub', [
      ...mosquittoArgs(gw, { clientId: a.deviceId, username: a.deviceId, password: a.secret }),
      '-q', '1', '-d', '-v', '-C', '1', '-W', '10',
      '-t', `devices/${b.deviceId}/commands`,
      '-t', `devices/${a.deviceId}/commands`,
    ])
    children.push(sub)
    let stdout = ''
    sub.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
    const exited = new Promise<number | null>((resolve) => sub.once('close', (code) => resolve(code)))

    // mosquitto_sub's stdout is block-buffered on a pipe, so watch the broker side instead: the
    // refusal is audited while the SUBSCRIBE is handled; then publish until the message lands.
    await waitFor(() => auditOf(gw, 'mqtt.subscribe').length > 0, 5000, 'refused subscription')
    let exitCode: number | null | undefined
    void exited.then((code) => (exitCode = code))
    await waitFor(() => {
      gw.gateway.broker.publish(`devices/${b.deviceId}/commands`, 'for b', { qos: 1, retain: false })
      gw.gateway.broker.publish(`devices/${a.deviceId}/commands`, 'for a', { qos: 1, retain: false })
      return exitCode !== undefined
    }, 5000, 'mosquitto_sub exit')
    expect(exitCode).toBe(0) // -C 1: exits after the first message

    // -d prints the SUBACK's return codes, one per filter in order.
    const granted = /Subscribed \(mid: \d+\): ([\d, ]+)/.exec(stdout)?.[1]
    expect(granted?.split(',').map((s) => Number(s.trim()))).toEqual([0x80, 1])
    const messages = stdout.split('\n').filter((line) => line.startsWith('devices/'))
    expect(messages).toEqual([`devices/${a.deviceId}/commands for a`])
    expect(auditOf(gw, 'mqtt.subscribe')).toEqual([
      expect.objectContaining({ actor_id: a.deviceId, target: `devices/${b.deviceId}/commands`, outcome: 'denied', address: '127.0.0.1' }),
    ])
  })
})
