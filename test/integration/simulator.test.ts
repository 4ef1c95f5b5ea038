import { EventEmitter } from 'node:events'
import { readFileSync, statSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { main } from '../../device-simulator/cli.ts'
import { devicesFile } from '../../device-simulator/credentials.ts'
import type { Summary } from '../../device-simulator/summary.ts'
import { startGateway, type TestGateway } from '../helpers.ts'

/** Runs the simulator's CLI in this process, as `npm run simulate -- ...args` would. */
async function simulate(t: TestGateway, args: string[]): Promise<{ code: number; summary: Summary; stderr: string }> {
  let stdout = ''
  let stderr = ''
  const code = await main(['--url', t.urls.mqtts, '--data-dir', t.dataDir, '--json', '--quiet', ...args], {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s) },
    signals: new EventEmitter() as unknown as NodeJS.Process,
  })
  // stdout carries the summary and nothing else.
  return { code, summary: JSON.parse(stdout) as Summary, stderr }
}

const count = (t: TestGateway, sql: string) => (t.gateway.store.sqlite.prepare(sql).get() as { n: number }).n

describe('device simulator', () => {
  let t: TestGateway | undefined
  afterEach(async () => {
    await t?.stop()
    t = undefined
  })

  it('provisions its devices, and the gateway stored and quarantined exactly what the summary reports', async () => {
    t = await startGateway()

    const normal = await simulate(t, ['--devices', '5', '--rate', '50', '--count', '40', '--scenario', 'normal', '--seed', '1'])
    expect(normal.code).toBe(0)
    expect(normal.stderr).toBe('')
    expect(normal.summary).toMatchObject({ devices: 5, connected: 5, sent: 40, acknowledged: 40, unacknowledged: 0, quarantined: 0, stoppedBy: 'count' })
    expect(count(t, "SELECT count(*) AS n FROM readings WHERE device_id LIKE 'sim-%'")).toBe(40)
    expect(count(t, 'SELECT count(*) AS n FROM quarantine')).toBe(0)
    // Every PUBACK was timed, and the percentiles are in order.
    const ms = normal.summary.pubackMs
    expect(ms.count).toBe(40)
    expect(ms.p50!).toBeLessThanOrEqual(ms.p99!)
    expect(ms.p99!).toBeLessThanOrEqual(ms.max!)

    // The secrets exist only in the simulator's file, readable by its owner alone.
    const file = devicesFile(t.dataDir)
    expect(statSync(file).mode & 0o777).toBe(0o600)
    const saved = (JSON.parse(readFileSync(file, 'utf8')) as { devices: Array<{ deviceId: string; nextSeq: number }> }).devices
    expect(saved.map((d) => d.deviceId)).toEqual(['sim-bp-0001', 'sim-glu-0001', 'sim-ox-0001', 'sim-scale-0001', 'sim-temp-0001'])
    expect(saved.every((d) => d.nextSeq === 9)).toBe(true)

    // Same devices again, every payload invalid: each one answered on the error topic and quarantined.
    const invalid = await simulate(t, ['--devices', '5', '--rate', '50', '--count', '30', '--scenario', 'invalid'])
    expect(invalid.code).toBe(0)
    expect(invalid.summary).toMatchObject({
      sent: 30,
      acknowledged: 30,
      quarantined: 30,
      expectedQuarantine: 30,
      unexpectedQuarantine: 0,
      missingErrors: 0,
    })
    expect(count(t, "SELECT count(*) AS n FROM devices WHERE id LIKE 'sim-%'")).toBe(5)
    expect(count(t, "SELECT count(*) AS n FROM readings WHERE device_id LIKE 'sim-%'")).toBe(40)
    const stored = t.gateway.store.sqlite.prepare('SELECT code, count(*) AS n FROM quarantine GROUP BY code').all() as Array<{ code: string; n: number }>
    expect(Object.fromEntries(stored.map((r) => [r.code, r.n]))).toEqual(invalid.summary.quarantinedByCode)
    expect(Object.keys(invalid.summary.quarantinedByCode).sort()).toEqual([
      'RPM_ERR_BATCH_TOO_LARGE',
      'RPM_ERR_PAYLOAD_JSON',
      'RPM_ERR_PAYLOAD_SHAPE',
      'RPM_ERR_READING_IMPLAUSIBLE',
      'RPM_ERR_READING_INVALID',
      'RPM_ERR_READING_TIME',
      'RPM_ERR_READING_TYPE',
      'RPM_ERR_READING_UNIT',
    ])
    // The seq carried on from the first run, so nothing looks like a redelivery.
    expect(count(t, 'SELECT min(seq) AS n FROM quarantine WHERE seq IS NOT NULL')).toBeGreaterThanOrEqual(9)
  })

  it('devices that drop off the network deliver what they queued: every reading acknowledged and stored once', async () => {
    t = await startGateway()
    const run = await simulate(t, ['--devices', '5', '--rate', '50', '--duration', '3', '--scenario', 'offline', '--seed', '7'])
    expect(run.code).toBe(0)
    const s = run.summary
    expect(s.offline.drops).toBeGreaterThan(0)
    expect(s.offline.queuedWhileOffline).toBeGreaterThan(0)
    expect(s.sent).toBe(150)
    expect(s.acknowledged).toBe(s.sent)
    expect(count(t, "SELECT count(*) AS n FROM readings WHERE device_id LIKE 'sim-%'")).toBe(s.acknowledged)
  })

  it('says so, with a non-zero exit, when it cannot connect', async () => {
    t = await startGateway()
    // Nothing listens on port 1.
    const run = await simulate(t, ['--url', 'mqtts://127.0.0.1:1', '--devices', '2', '--count', '2', '--connect-timeout', '1'])
    expect(run.code).toBe(2)
    expect(run.summary).toMatchObject({ connected: 0, acknowledged: 0, stoppedBy: 'no-connection' })
    expect(run.summary.connectFailures.reduce((n, f) => n + f.devices, 0)).toBe(2)
  })
})
