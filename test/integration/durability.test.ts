import { type ChildProcess, spawn } from 'node:child_process'
import { readFileSync, rmSync } from 'node:fs'
import path from 'node:path'
import { createInterface } from 'node:readline'
import mqtt, { type MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { build } from '../../device-simulator/readings.ts'
import { systemClock } from '../../src/clock.ts'
import { Registry } from '../../src/registry/registry.ts'
import { openStore } from '../../src/store/db.ts'
import { tempDir } from '../helpers.ts'

const BIN = path.resolve('bin/rpm-gateway.js')
let children: ChildProcess[] = []
let clients: MqttClient[] = []
let dataDir: string

afterEach(async () => {
  for (const c of clients) c.end(true)
  clients = []
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL')
  children = []
  rmSync(dataDir, { recursive: true, force: true })
})

/** Starts the real gateway command on free ports and resolves with its URLs once it is listening. */
function startChild(): Promise<{ child: ChildProcess; mqtts: string }> {
  const child = spawn(process.execPath, [BIN, 'start', '--json', '--data-dir', dataDir], {
    env: { ...process.env, RPM_MQTT_PORT: '0', RPM_HTTP_PORT: '0', RPM_MQTT_HOST: '127.0.0.1', RPM_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  children.push(child)
  let stderr = ''
  child.stderr!.on('data', (d) => (stderr += d))
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! })
    lines.once('line', (line) => resolve({ child, mqtts: JSON.parse(line).mqtts }))
    child.once('exit', (code) => reject(new Error(`gateway exited with ${code}: ${stderr}`)))
  })
}

const killed = (child: ChildProcess) => new Promise((resolve) => child.once('exit', resolve))

describe('acknowledged means stored', () => {
  it('keeps every acknowledged reading, exactly once, across SIGKILL during sustained ingest', async () => {
    dataDir = tempDir()
    const store = await openStore(dataDir)
    const registry = new Registry(store.db, systemClock)
    const patient = await registry.addPatient({ name: 'Test Patient', timezone: 'UTC' })
    const devices = await Promise.all([1, 2, 3, 4].map((i) => registry.addDevice({ patientId: patient.id, id: `dur-${i}` })))
    await store.close()

    const { child, mqtts } = await startChild()
    const ca = readFileSync(path.join(dataDir, 'tls', 'ca.pem'))
    const acked = new Map<string, Set<number>>()
    let stop = false
    let total = 0

    await Promise.all(
      devices.map(async (d) => {
        const client = await mqtt.connectAsync(mqtts.replace('localhost', '127.0.0.1'), {
          clientId: d.id, username: d.id, password: d.secret, ca, servername: 'localhost', protocolVersion: 4, reconnectPeriod: 0,
        })
        clients.push(client)
        acked.set(d.id, new Set())
        let seq = 0
        // Five in flight per device, each a batch of two readings, until the gateway dies.
        const worker = async () => {
          while (!stop) {
            const s = ++seq * 2
            const batch = [build.bloodPressure(120, 80, 60, { seq: s }), build.heartRate(60, { seq: s + 1 })]
            try {
              await client.publishAsync(`devices/${d.id}/readings`, JSON.stringify(batch), { qos: 1 })
            } catch {
              return
            }
            if (stop) return // acknowledged after we decided to kill: still counts below
            acked.get(d.id)!.add(s).add(s + 1)
            total += 2
          }
        }
        void Promise.all([worker(), worker(), worker(), worker(), worker()])
      }),
    )
    while (total < 600) await new Promise((r) => setTimeout(r, 10))
    // Kill in the middle of the stream: everything acknowledged until now must survive.
    const snapshot = new Map([...acked].map(([id, seqs]) => [id, new Set(seqs)]))
    stop = true
    child.kill('SIGKILL')
    await killed(child)
    for (const c of clients) c.end(true)
    clients = []

    // Restart on the same data directory.
    const restarted = await startChild()
    const check = await openStore(dataDir)
    const rows = check.sqlite.prepare('SELECT device_id, seq, COUNT(*) AS n FROM readings GROUP BY device_id, seq').all() as Array<{ device_id: string; seq: number; n: number }>
    await check.close()
    const stored = new Map<string, number>(rows.map((r) => [`${r.device_id}#${r.seq}`, r.n]))
    let checked = 0
    for (const [deviceId, seqs] of snapshot) {
      for (const seq of seqs) {
        expect(stored.get(`${deviceId}#${seq}`), `${deviceId} seq ${seq}`).toBe(1)
        checked++
      }
    }
    expect(checked).toBeGreaterThanOrEqual(600)
    expect(rows.every((r) => r.n === 1)).toBe(true)

    // The restarted gateway takes readings again, and stops cleanly on SIGTERM.
    const d = devices[0]!
    const client = await mqtt.connectAsync(restarted.mqtts.replace('localhost', '127.0.0.1'), {
      clientId: d.id, username: d.id, password: d.secret, ca, servername: 'localhost', protocolVersion: 4, reconnectPeriod: 0,
    })
    await client.publishAsync(`devices/${d.id}/readings`, JSON.stringify(build.weight(80, 'kg', { seq: 1_000_000 })), { qos: 1 })
    await client.endAsync()
    restarted.child.kill('SIGTERM')
    expect(await killed(restarted.child)).toBe(0)
  })
})
