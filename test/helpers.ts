import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { buildGateway, type Gateway, type GatewayUrls } from '../src/app.ts'
import { loadConfig } from '../src/config/load.ts'
import type { DeviceKind } from '../src/store/schema.ts'

export function tempDir(prefix = 'rpm-test-'): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix))
}

export interface TestGateway {
  gateway: Gateway
  urls: GatewayUrls
  dataDir: string
  ca: Buffer
  stop(): Promise<void>
}

/**
 * A real gateway on free ports in a temp data directory. `settings` are config key paths,
 * e.g. { 'mqtt.maxPacketBytes': 4096 }.
 */
export async function startGateway(settings: Record<string, unknown> = {}, dataDir = tempDir()): Promise<TestGateway> {
  const config = loadConfig({
    env: {},
    overrides: {
      dataDir,
      'log.level': 'silent',
      'http.port': 0,
      'mqtt.port': 0,
      'mqtt.host': '127.0.0.1',
      ...settings,
    } as unknown as Record<string, never>,
  })
  const gateway = await buildGateway(config)
  const urls = await gateway.start()
  let stopped = false
  return {
    gateway,
    urls,
    dataDir,
    ca: readFileSync(urls.caFile),
    async stop() {
      if (stopped) return
      stopped = true
      await gateway.stop()
      rmSync(dataDir, { recursive: true, force: true })
    },
  }
}

export interface TestDevice {
  patientId: string
  deviceId: string
  secret: string
}

export async function provision(gateway: Gateway, kind: DeviceKind = 'bp_cuff', deviceId?: string): Promise<TestDevice> {
  const patient = await gateway.registry.addPatient({ name: 'Test Patient', timezone: 'UTC' })
  const device = await gateway.registry.addDevice({ patientId: patient.id, kind, ...(deviceId ? { id: deviceId } : {}) })
  return { patientId: patient.id, deviceId: device.id, secret: device.secret }
}

/** Connects over TLS as the device (secret login unless options say otherwise). */
export function connectDevice(t: TestGateway, device: TestDevice, options: IClientOptions = {}): Promise<MqttClient> {
  return mqtt.connectAsync(t.urls.mqtts.replace('localhost', '127.0.0.1'), {
    clientId: device.deviceId,
    username: device.deviceId,
    password: device.secret,
    ca: t.ca,
    servername: 'localhost',
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 5000,
    ...options,
  })
}

/** Resolves with the first message on `topic`, or rejects after `ms`. */
export function nextMessage(client: MqttClient, topic: string, ms = 5000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no message on ${topic} within ${ms} ms`)), ms)
    const onMessage = (t: string, payload: Buffer) => {
      if (t !== topic) return
      clearTimeout(timer)
      client.off('message', onMessage)
      resolve(payload)
    }
    client.on('message', onMessage)
  })
}

export function readingsOf(t: TestGateway, deviceId: string): Array<{ type: string; seq: number | null; values_json: string; original_json: string; measured_at: string }> {
  return t.gateway.store.sqlite.prepare('SELECT * FROM readings WHERE device_id = ? ORDER BY id').all(deviceId) as never
}

export function quarantineOf(t: TestGateway, deviceId: string): Array<{ code: string; message: string; path: string | null; seq: number | null; raw: string }> {
  return t.gateway.store.sqlite.prepare('SELECT * FROM quarantine WHERE device_id = ? ORDER BY id').all(deviceId) as never
}
