/**
 * The gateway side of bench/chat.ts, in its own process: the real gateway (buildGateway) on a
 * temporary data directory, seeded with patients, their patient users and providers on their
 * care teams, one thread per patient. Driven over IPC.
 */
import { performance } from 'node:perf_hooks'
import { buildGateway, type Gateway } from '../src/app.ts'
import { loadConfig } from '../src/config/load.ts'
import { cpuSnapshot } from './process-stats.ts'
import type { ChatAccount, ChatServerStart, ChatThread, FromChatServer, ToChatServer } from './protocol.ts'

const send = (m: FromChatServer) => process.send!(m)

let stop: () => Promise<FromChatServer> = async () => ({ type: 'stopped', storedMessages: 0, auditRows: 0 })

/** Runs `work` for 0..n-1, `lanes` at a time (scrypt runs on libuv's thread pool). */
async function inLanes(n: number, lanes: number, work: (i: number) => Promise<void>): Promise<void> {
  let next = 0
  const lane = async () => {
    while (next < n) await work(next++)
  }
  await Promise.all(Array.from({ length: Math.min(lanes, n) }, lane))
}

async function start(m: ChatServerStart): Promise<FromChatServer> {
  const t0 = performance.now()
  const config = loadConfig({
    env: {},
    overrides: {
      dataDir: m.dataDir,
      'log.level': 'silent',
      'http.host': '127.0.0.1',
      'http.port': 0,
      'mqtt.port': 0,
      'mqtt.host': '127.0.0.1',
      ...m.settings,
    },
  })
  const gateway: Gateway = await buildGateway(config)
  const urls = await gateway.start()
  const startupMs = performance.now() - t0

  // Providers first, then one patient record, patient user and thread per thread.
  const t1 = performance.now()
  const accounts: ChatAccount[] = []
  const providerNames = Array.from({ length: m.providers }, (_, i) => `bench-dr-${String(i + 1).padStart(3, '0')}`)
  const password = (username: string) => `${username}-password`
  await inLanes(m.providers, 8, async (i) => {
    const username = providerNames[i]!
    await gateway.users.add({ username, password: password(username), role: 'provider', name: `Bench Provider ${i + 1}` })
  })
  for (const username of providerNames) accounts.push({ username, password: password(username), role: 'provider' })

  const threads: ChatThread[] = new Array(m.threads)
  await inLanes(m.threads, 8, async (t) => {
    const patient = await gateway.registry.addPatient({ name: `Bench Patient ${t + 1}`, timezone: 'UTC' })
    const username = `bench-pat-${String(t + 1).padStart(4, '0')}`
    await gateway.users.add({ username, password: password(username), role: 'patient', patientId: patient.id })
    // Consecutive providers, wrapping: each thread's are distinct while providersPerThread <= providers.
    const team = Array.from({ length: m.providersPerThread }, (_, k) => providerNames[(t * m.providersPerThread + k) % m.providers]!)
    for (const p of team) await gateway.users.addToCareTeam(patient.id, p)
    const thread = gateway.threads.ensure(patient.id)
    threads[t] = { threadId: thread.id, patientId: patient.id, members: [username, ...team] }
  })
  for (const t of threads) accounts.push({ username: t.members[0]!, password: password(t.members[0]!), role: 'patient' })

  stop = async () => {
    const sqlite = gateway.store.sqlite
    const storedMessages = (sqlite.prepare('SELECT count(*) AS n FROM messages').get() as { n: number }).n
    const auditRows = (sqlite.prepare('SELECT count(*) AS n FROM audit').get() as { n: number }).n
    await gateway.stop()
    return { type: 'stopped', storedMessages, auditRows }
  }
  return { type: 'ready', httpUrl: urls.http, accounts, threads, startupMs, seedMs: performance.now() - t1 }
}

process.on('message', (raw) => {
  const m = raw as ToChatServer
  const fail = (err: unknown) => send({ type: 'error', message: (err as Error).stack ?? String(err) })
  switch (m.cmd) {
    case 'start':
      start(m).then(send, fail)
      break
    case 'stats': {
      const mem = process.memoryUsage()
      send({ type: 'stats', cpu: cpuSnapshot(), rssBytes: mem.rss, heapUsedBytes: mem.heapUsed })
      break
    }
    case 'stop':
      stop().then(
        (reply) => {
          send(reply)
          // A normal exit, so --cpu-prof writes its profile.
          process.disconnect?.()
          setImmediate(() => process.exit(0))
        },
        fail,
      )
      break
  }
})
