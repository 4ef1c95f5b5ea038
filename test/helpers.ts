import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { buildGateway, type Gateway, type GatewayUrls } from '../src/app.ts'
import type { AuditRow } from '../src/audit/audit.ts'
import { issueCertificate, pkiFiles } from '../src/broker/pki.ts'
import type { Clock } from '../src/clock.ts'
import { loadConfig } from '../src/config/load.ts'
import type { DeviceKind } from '../src/store/schema.ts'
import type { FcmTransport } from '../src/notify/fcm.ts'

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

/** A clock the test moves by hand; it starts at the real time so readings built now are current. */
export class TestClock implements Clock {
  #now: number

  constructor(start = Date.now()) {
    this.#now = start
  }

  now(): number {
    return this.#now
  }

  advanceSeconds(seconds: number): void {
    this.#now += seconds * 1000
  }
}

/**
 * A real gateway on free ports in a temp data directory. `settings` are config key paths,
 * e.g. { 'mqtt.maxPacketBytes': 4096 }; `options.clock` replaces the system clock; `options.fcm`
 * sends FCM through a test double.
 */
export async function startGateway(settings: Record<string, unknown> = {}, dataDir = tempDir(), options: { clock?: Clock; fcm?: FcmTransport } = {}): Promise<TestGateway> {
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
  const gateway = await buildGateway(config, { ...(options.clock ? { clock: options.clock } : {}), ...(options.fcm ? { fcm: options.fcm } : {}) })
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

export interface ProcessResult {
  /** The exit code (null when a signal or the timeout ended the process). */
  code: number | null
  stdout: string
  stderr: string
}

/** Runs a program to completion; a non-zero exit is a result, not an exception. */
export function runProcess(
  file: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number; input?: string } = {},
): Promise<ProcessResult> {
  return new Promise((resolve) => {
    const child = execFile(
      file,
      [...args],
      { env: options.env ?? process.env, cwd: options.cwd, timeout: options.timeoutMs ?? 15_000, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null) : 0
        resolve({ code, stdout, stderr })
      },
    )
    if (options.input !== undefined) child.stdin?.end(options.input)
  })
}

/**
 * Arguments that point mosquitto_pub / mosquitto_sub at the gateway over TLS, logged in as the
 * device: with its secret, or with `cert` and `key` files for mutual TLS.
 */
export function mosquittoArgs(
  t: TestGateway,
  login: { clientId: string; username?: string; password?: string; cert?: string; key?: string; cafile?: string },
): string[] {
  const args = ['-h', '127.0.0.1', '-p', String(t.gateway.broker.ports.tls), '--cafile', login.cafile ?? t.urls.caFile, '-i', login.clientId]
  if (login.username !== undefined) args.push('-u', login.username)
  if (login.password !== undefined) args.push('-P', login.password)
  if (login.cert !== undefined) args.push('--cert', login.cert)
  if (login.key !== undefined) args.push('--key', login.key)
  return args
}

/** The CONNACK return code of a refused mqtt.js connection attempt (0 when it was accepted). */
export async function connackCode(attempt: Promise<MqttClient>): Promise<number> {
  try {
    const client = await attempt
    await client.endAsync(true)
    return 0
  } catch (err) {
    const code = (err as { code?: unknown }).code
    if (typeof code !== 'number') throw err
    return code
  }
}

/** Rows of the audit trail, oldest first, optionally only one action. */
export function auditOf(t: TestGateway, action?: string): AuditRow[] {
  const sqlite = t.gateway.store.sqlite
  return (action
    ? sqlite.prepare('SELECT * FROM audit WHERE action = ? ORDER BY id').all(action)
    : sqlite.prepare('SELECT * FROM audit ORDER BY id').all()) as AuditRow[]
}

/** A client certificate (CN = device id) from the gateway's development CA, as PEM strings. */
export async function deviceCertificate(t: TestGateway, deviceId: string): Promise<{ cert: string; key: string }> {
  const pki = pkiFiles(t.dataDir)
  return issueCertificate({
    caCertPem: readFileSync(pki.caCertPath, 'utf8'),
    caKeyPem: readFileSync(pki.caKeyPath, 'utf8'),
    commonName: deviceId,
    validDays: 30,
  })
}

/** Resolves when the client's connection closes, or rejects after `ms`. */
export function closed(client: MqttClient, ms = 5000): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!client.connected) return resolve()
    const timer = setTimeout(() => reject(new Error(`connection still open after ${ms} ms`)), ms)
    client.once('close', () => {
      clearTimeout(timer)
      resolve()
    })
  })
}

/** Polls `check` until it returns a truthy value, or rejects after `ms`. */
export async function waitFor<T>(check: () => T | Promise<T>, ms = 5000, what = 'condition'): Promise<NonNullable<T>> {
  const until = Date.now() + ms
  for (;;) {
    const value = await check()
    if (value) return value as NonNullable<T>
    if (Date.now() > until) throw new Error(`${what} not met within ${ms} ms`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

export interface ApiResponse {
  status: number
  headers: Headers
  text: string
  /** The parsed JSON body, or null when the body is empty or not JSON. */
  body: any
}

/**
 * One HTTP request to the gateway. `body` is sent as JSON; `raw` is sent as is (with
 * `contentType`, application/json unless told otherwise).
 */
export async function api(
  t: TestGateway,
  method: string,
  path: string,
  options: { token?: string; body?: unknown; raw?: string | Buffer; contentType?: string } = {},
): Promise<ApiResponse> {
  const headers: Record<string, string> = {}
  if (options.token) headers.authorization = `Bearer ${options.token}`
  let payload: string | Buffer | undefined
  if (options.raw !== undefined) payload = options.raw
  else if (options.body !== undefined) payload = JSON.stringify(options.body)
  if (payload !== undefined || options.contentType) headers['content-type'] = options.contentType ?? 'application/json'
  const res = await fetch(`${t.urls.http}${path}`, { method, headers, ...(payload !== undefined ? { body: payload } : {}) })
  const text = await res.text()
  let body: unknown = null
  try {
    body = text ? JSON.parse(text) : null
  } catch {
    body = null
  }
  return { status: res.status, headers: res.headers, text, body }
}

export interface SignedIn {
  accessToken: string
  refreshToken: string
  expiresIn: number
  tokenType: string
  user: { id: string; username: string; role: string; patientId: string | null }
}

/** Signs in over HTTP; a refusal fails the test with the gateway's answer. */
export async function login(t: TestGateway, username: string, password: string): Promise<SignedIn> {
  const res = await api(t, 'POST', '/api/v1/auth/login', { body: { username, password } })
  if (res.status !== 200) throw new Error(`login as ${username}: ${res.status} ${res.text}`)
  return res.body as SignedIn
}

/** A signed-in user as tests hold one: the access token and the user id. */
export interface Caller {
  token: string
  userId: string
}

/** Signs in over HTTP (failing the test on a refusal). */
export async function signInAs(t: TestGateway, username: string, password: string): Promise<Caller> {
  const s = await login(t, username, password)
  return { token: s.accessToken, userId: s.user.id }
}

/** A JSON request with the caller's access token (or none); answers the status and parsed body. */
export async function call(t: TestGateway, who: Caller | undefined, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await api(t, method, path, { ...(who ? { token: who.token } : {}), ...(body !== undefined ? { body } : {}) })
  return { status: res.status, body: res.body ?? undefined }
}
