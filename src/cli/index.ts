import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Command, CommanderError, Option } from 'commander'
import pino from 'pino'
import { AuditLog } from '../audit/audit.ts'
import type { GatewayUrls } from '../app.ts'
import { issueCertificate, pkiFiles } from '../broker/pki.ts'
import { systemClock } from '../clock.ts'
import { type GatewayConfig, loadConfig, unknownEnvNames } from '../config/load.ts'
import { RpmError, isRpmError } from '../errors.ts'
import { Users } from '../identity/users.ts'
import { listQuarantine, listReadings } from '../ingest/queries.ts'
import { createLogger } from '../log.ts'
import { DEVICE_KINDS, Registry } from '../registry/registry.ts'
import { ReminderRecords } from '../reminders/records.ts'
import { DAY_NAMES, parseDays } from '../reminders/schedule.ts'
import type { AdherencePeriod } from '../reminders/types.ts'
import { READING_TYPES } from '../ingest/types.ts'
import { ReadingValidator } from '../ingest/readings.ts'
import type { NormalisedReading } from '../ingest/types.ts'
import { addOnCall } from '../rules/on-call.ts'
import { RuleLoadError, loadRuleDir, rulesDir } from '../rules/load.ts'
import { rulesForPatient, simulate } from '../rules/simulate.ts'
import { backfill, progressLine } from '../timeseries/backfill.ts'
import { isConfigured, targetOf } from '../timeseries/writer.ts'
import type { RuleOverride } from '../rules/spec.ts'
import { openStore, type Store } from '../store/db.ts'
import type { DeviceKind, Role } from '../store/schema.ts'

interface GlobalOptions {
  dataDir?: string
  json?: boolean
  config?: string
}

type Out = { json: boolean; print(human: string, doc: unknown): void }

function output(opts: GlobalOptions): Out {
  const json = Boolean(opts.json)
  return {
    json,
    print(human, doc) {
      process.stdout.write(json ? JSON.stringify(doc, null, 2) + '\n' : human + '\n')
    },
  }
}

function config(opts: GlobalOptions): Readonly<GatewayConfig> {
  return loadConfig({ file: opts.config, overrides: opts.dataDir ? { dataDir: opts.dataDir } : {} })
}

/** Runs `fn` with the data directory's database open, closing it afterwards. */
async function withStore<T>(opts: GlobalOptions, fn: (store: Store, registry: Registry, audit: AuditLog) => Promise<T>): Promise<T> {
  const store = await openStore(config(opts).dataDir)
  try {
    return await fn(store, new Registry(store.db, systemClock), new AuditLog(store.sqlite, systemClock))
  } finally {
    await store.close()
  }
}

const operator = () => os.userInfo().username

function table(rows: Array<Record<string, unknown>>, columns: string[]): string {
  if (rows.length === 0) return '(none)'
  const cells = rows.map((r) => columns.map((c) => (r[c] === null || r[c] === undefined ? '' : typeof r[c] === 'object' ? JSON.stringify(r[c]) : String(r[c]))))
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i]!.length)))
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd()
  return [line(columns), ...cells.map(line)].join('\n')
}

function intOption(value: string, name: string): number {
  const n = Number(value)
  if (!Number.isInteger(n)) throw new RpmError('RPM_ERR_BAD_REQUEST', `${name} must be an integer`, { details: { field: name } })
  return n
}

export function buildProgram(): Command {
  const program = new Command('rpm-gateway')
    .description('Remote patient monitoring gateway: devices, readings and the services around them')
    .option('--data-dir <dir>', 'data directory (default: $RPM_DATA_DIR or ./data)')
    .option('--json', 'print one JSON document on stdout')
    .option('--config <file>', 'configuration file (YAML or JSON); RPM_* environment variables override it')
    .showHelpAfterError()
    .exitOverride()

  const g = (cmd: Command) => cmd.optsWithGlobals() as GlobalOptions & Record<string, string | undefined>

  program
    .command('start')
    .description('start the gateway (MQTT over TLS, MQTT over WebSocket, HTTP)')
    .action(async (_o, cmd: Command) => {
      const opts = g(cmd)
      const out = output(opts)
      const cfg = config(opts)
      // Loaded here rather than at the top: the other subcommands start faster without the servers' modules.
      const { buildGateway } = await import('../app.ts')
      // With --json, stdout carries only the JSON document; logs go to stderr.
      const gateway = await buildGateway(cfg, { log: createLogger(cfg.log.level, out.json ? pino.destination(2) : undefined) })
      for (const name of unknownEnvNames()) process.stderr.write(`warning: ${name} names no configuration key; ignored\n`)
      const urls = await gateway.start()
      if (out.json) process.stdout.write(JSON.stringify(urls) + '\n')
      else process.stdout.write(banner(urls, gateway.rules.status(), gateway.config.influx, gateway.notifier.channels()) + '\n')
      await new Promise<void>((resolve) => {
        let stopping = false
        const stop = (signal: string) => {
          if (stopping) return
          stopping = true
          process.stderr.write(`${signal}: stopping\n`)
          gateway.stop().then(resolve, (err: unknown) => {
            process.stderr.write(`error while stopping: ${(err as Error).message}\n`)
            resolve()
          })
        }
        process.once('SIGINT', () => stop('SIGINT'))
        process.once('SIGTERM', () => stop('SIGTERM'))
      })
    })

  const patient = program.command('patient').description('manage patients')
  patient
    .command('add')
    .description('add a patient')
    .requiredOption('--name <name>', 'the patient\'s name')
    .option('--id <id>', 'patient id (default: generated)')
    .option('--timezone <tz>', 'IANA time zone, e.g. America/Chicago (default: this machine\'s)')
    .action(async (o: { name: string; id?: string; timezone?: string }, cmd: Command) => {
      const out = output(g(cmd))
      const p = await withStore(g(cmd), async (_s, registry, audit) => {
        const created = await registry.addPatient(o)
        audit.record({ actorType: 'operator', actorId: operator(), action: 'patient.add', target: created.id, outcome: 'allowed' })
        return created
      })
      out.print(`patient ${p.id} added (time zone ${p.timezone})\nnext: rpm-gateway device add --patient ${p.id} --kind bp_cuff`, p)
    })
  patient
    .command('list')
    .description('list patients')
    .action(async (_o, cmd: Command) => {
      const out = output(g(cmd))
      const items = await withStore(g(cmd), async (store, _r, audit) => {
        const rows = await store.db.selectFrom('patients').selectAll().orderBy('id').execute()
        audit.record({ actorType: 'operator', actorId: operator(), action: 'patients.list', outcome: 'allowed' })
        return rows.map((r) => ({ id: r.id, name: r.name, timezone: r.timezone, createdAt: r.created_at }))
      })
      out.print(table(items, ['id', 'name', 'timezone', 'createdAt']), { items })
    })

  const device = program.command('device').description('manage devices')
  device
    .command('add')
    .description('provision a device for a patient; prints its secret once')
    .requiredOption('--patient <id>', 'patient id')
    .option('--id <id>', 'device id (default: generated); also the MQTT client id and username')
    .addOption(new Option('--kind <kind>', 'device kind').choices(DEVICE_KINDS as string[]).default('bp_cuff'))
    .action(async (o: { patient: string; id?: string; kind: DeviceKind }, cmd: Command) => {
      const opts = g(cmd)
      const out = output(opts)
      const d = await withStore(opts, async (_s, registry, audit) => {
        const created = await registry.addDevice({ patientId: o.patient, kind: o.kind, ...(o.id ? { id: o.id } : {}) })
        audit.record({ actorType: 'operator', actorId: operator(), action: 'device.add', target: created.id, outcome: 'allowed' })
        return created
      })
      const cfg = config(opts)
      const ca = pkiFiles(cfg.dataDir).caCertPath
      out.print(
        [
          `device ${d.id} (${d.kind}) provisioned for patient ${d.patientId}`,
          ``,
          `  MQTT client id and username: ${d.id}`,
          `  secret (shown once; only a hash is kept): ${d.secret}`,
          ``,
          `Publish a reading:`,
          `  mosquitto_pub -h localhost -p ${cfg.mqtt.port} --cafile ${cfg.mqtt.tls.ca || ca} -i ${d.id} -u ${d.id} -P '${d.secret}' -q 1 \\`,
          `    -t devices/${d.id}/readings -m '{"type":"blood_pressure","systolic":128,"diastolic":82,"pulse":70,"unit":"mmHg","measuredAt":"${new Date().toISOString().slice(0, 19)}Z","seq":1}'`,
        ].join('\n'),
        d,
      )
    })
  device
    .command('cert')
    .description('issue a client certificate (CN = device id) from the gateway CA, for mutual TLS')
    .requiredOption('--device <id>', 'device id')
    .requiredOption('--out <dir>', 'directory to write <id>.pem, <id>-key.pem and ca.pem')
    .option('--days <n>', 'validity in days', '825')
    .action(async (o: { device: string; out: string; days: string }, cmd: Command) => {
      const opts = g(cmd)
      const out = output(opts)
      const cfg = config(opts)
      const pki = pkiFiles(cfg.dataDir)
      if (cfg.mqtt.tls.ca || !existsSync(pki.caKeyPath)) {
        throw new RpmError(
          'RPM_ERR_BAD_REQUEST',
          cfg.mqtt.tls.ca
            ? 'the gateway uses your own CA (mqtt.tls.ca): issue device certificates from it'
            : `no development CA in ${path.dirname(pki.caKeyPath)}: start the gateway once to create it`,
        )
      }
      const result = await withStore(opts, async (_s, registry, audit) => {
        const d = await registry.getDevice(o.device)
        if (d.status !== 'active') throw new RpmError('RPM_ERR_BAD_REQUEST', `device ${d.id} is disabled`, { details: { field: 'device' } })
        const { cert, key } = await issueCertificate({
          caCertPem: readFileSync(pki.caCertPath, 'utf8'),
          caKeyPem: readFileSync(pki.caKeyPath, 'utf8'),
          commonName: d.id,
          validDays: intOption(o.days, 'days'),
        })
        mkdirSync(o.out, { recursive: true })
        const files = { cert: path.resolve(o.out, `${d.id}.pem`), key: path.resolve(o.out, `${d.id}-key.pem`), ca: path.resolve(o.out, 'ca.pem') }
        writeFileSync(files.cert, cert)
        writeFileSync(files.key, key, { mode: 0o600 })
        writeFileSync(files.ca, readFileSync(pki.caCertPath))
        audit.record({ actorType: 'operator', actorId: operator(), action: 'device.cert', target: d.id, outcome: 'allowed' })
        return { deviceId: d.id, ...files }
      })
      out.print(
        `certificate for ${result.deviceId} written:\n  ${result.cert}\n  ${result.key}\n  ${result.ca}\nConnect with client id ${result.deviceId}; no username or password is needed.`,
        result,
      )
    })
  device
    .command('disable')
    .description('disable a device: it can no longer connect, and an open connection is closed')
    .requiredOption('--device <id>', 'device id')
    .action(async (o: { device: string }, cmd: Command) => {
      const out = output(g(cmd))
      const d = await withStore(g(cmd), async (_s, registry, audit) => {
        const disabled = await registry.disableDevice(o.device)
        audit.record({ actorType: 'operator', actorId: operator(), action: 'device.disable', target: disabled.id, outcome: 'allowed' })
        return disabled
      })
      out.print(`device ${d.id} disabled`, d)
    })
  device
    .command('list')
    .description('list devices with their status and presence')
    .option('--patient <id>', 'only this patient\'s devices')
    .action(async (o: { patient?: string }, cmd: Command) => {
      const out = output(g(cmd))
      const items = await withStore(g(cmd), (_s, registry) => registry.listDevices(o.patient))
      out.print(table(items as unknown as Array<Record<string, unknown>>, ['id', 'patientId', 'kind', 'status', 'online', 'lastSeenAt']), { items })
    })

  const user = program.command('user').description('manage the people who sign in')
  user
    .command('add')
    .description('add a user: a patient (linked to a patient record), a provider or an admin')
    .addOption(new Option('--role <role>', 'role').choices(['patient', 'provider', 'admin']).makeOptionMandatory())
    .requiredOption('--username <name>', 'sign-in name')
    .option('--password <password>', 'password (at least 12 characters); prefer --password-stdin')
    .option('--password-stdin', 'read the password from standard input')
    .option('--patient <id>', 'the patient record a patient user is linked to')
    .option('--name <name>', 'display name')
    .action(async (o: { role: Role; username: string; password?: string; passwordStdin?: boolean; patient?: string; name?: string }, cmd: Command) => {
      const out = output(g(cmd))
      let password = o.password
      if (o.passwordStdin) {
        const chunks: Buffer[] = []
        for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
        password = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '')
      }
      if (!password) throw new RpmError('RPM_ERR_BAD_REQUEST', 'give the password with --password-stdin (or --password)', { details: { field: 'password' } })
      const created = await withStore(g(cmd), async (store, _r, audit) => {
        const u = await new Users(store.db, systemClock).add({ username: o.username, password, role: o.role, ...(o.patient ? { patientId: o.patient } : {}), ...(o.name ? { name: o.name } : {}) })
        audit.record({ actorType: 'operator', actorId: operator(), action: 'user.add', target: u.id, outcome: 'allowed', details: { role: u.role } })
        return u
      })
      out.print(`user ${created.username} (${created.role}) added as ${created.id}`, created)
    })
  user
    .command('list')
    .description('list users')
    .action(async (_o, cmd: Command) => {
      const out = output(g(cmd))
      const items = await withStore(g(cmd), (store) => new Users(store.db, systemClock).list())
      out.print(table(items as unknown as Array<Record<string, unknown>>, ['id', 'username', 'role', 'patientId', 'status']), { items })
    })

  program
    .command('careteam')
    .description('manage care teams')
    .command('add')
    .description('put a provider on a patient\'s care team')
    .requiredOption('--patient <id>', 'patient id')
    .requiredOption('--provider <username>', 'the provider\'s username')
    .action(async (o: { patient: string; provider: string }, cmd: Command) => {
      const out = output(g(cmd))
      const member = await withStore(g(cmd), async (store, _r, audit) => {
        const m = await new Users(store.db, systemClock).addToCareTeam(o.patient, o.provider)
        audit.record({ actorType: 'operator', actorId: operator(), action: 'careteam.add', target: o.patient, outcome: 'allowed', details: { userId: m.userId } })
        return m
      })
      out.print(`${member.username} is on the care team of patient ${member.patientId}`, member)
    })

  program
    .command('readings')
    .description('a patient\'s readings, newest first')
    .requiredOption('--patient <id>', 'patient id')
    .option('--type <type>', 'blood_pressure, glucose, spo2, heart_rate, weight or temperature')
    .option('--since <iso>', 'measured at or after this time')
    .option('--limit <n>', 'at most this many', '100')
    .action(async (o: { patient: string; type?: string; since?: string; limit: string }, cmd: Command) => {
      const out = output(g(cmd))
      const result = await withStore(g(cmd), async (store, registry, audit) => {
        await registry.getPatient(o.patient)
        const page = await listReadings(store.db, {
          patientId: o.patient,
          limit: intOption(o.limit, 'limit'),
          ...(o.type ? { type: o.type } : {}),
          ...(o.since ? { since: o.since } : {}),
        })
        audit.record({ actorType: 'operator', actorId: operator(), action: 'readings.read', target: o.patient, outcome: 'allowed' })
        return page
      })
      const rows = result.items.map((r) => ({ measuredAt: r.measuredAt, type: r.type, values: r.values, deviceId: r.deviceId, seq: r.seq }))
      out.print(table(rows, ['measuredAt', 'type', 'values', 'deviceId', 'seq']), { items: result.items, nextCursor: result.nextCursor })
    })

  program
    .command('quarantine')
    .description('payloads from a device that were set aside, with the reason')
    .requiredOption('--device <id>', 'device id')
    .option('--limit <n>', 'at most this many', '100')
    .action(async (o: { device: string; limit: string }, cmd: Command) => {
      const out = output(g(cmd))
      const limit = intOption(o.limit, 'limit')
      if (limit < 1 || limit > 10000) throw new RpmError('RPM_ERR_BAD_REQUEST', 'limit must be an integer from 1 to 10000', { details: { field: 'limit' } })
      const result = await withStore(g(cmd), async (store, registry, audit) => {
        await registry.getDevice(o.device)
        const page = await listQuarantine(store.db, o.device, limit)
        // Quarantined payloads hold measured values: reading them is PHI access.
        audit.record({ actorType: 'operator', actorId: operator(), action: 'quarantine.read', target: o.device, outcome: 'allowed' })
        return page
      })
      out.print(table(result.items as unknown as Array<Record<string, unknown>>, ['receivedAt', 'code', 'path', 'seq', 'message']), result)
    })

  // --- reminders -----------------------------------------------------------------------------

  const reminder = program.command('reminder').description('medication and measurement reminders')
  reminder
    .command('add')
    .description('add a medication reminder (--medication) or a measurement reminder (--measure)')
    .requiredOption('--patient <id>', 'patient id')
    .option('--medication <name>', 'the medication, e.g. Metformin')
    .option('--dose <dose>', 'the dose, e.g. "500 mg"')
    .addOption(new Option('--measure <type>', 'the reading to take').choices([...READING_TYPES]))
    .requiredOption('--times <list>', 'local times HH:MM (24-hour), comma-separated, e.g. 08:00,20:00')
    .option('--days <list>', 'mon,tue,... or 1..7 (Monday = 1); default every day')
    .option('--instructions <text>', 'shown with the reminder, e.g. "with food"')
    .option('--starts-on <date>', 'first local date YYYY-MM-DD (default: today in the patient\'s zone)')
    .option('--ends-on <date>', 'last local date YYYY-MM-DD, inclusive')
    .option('--timezone <tz>', 'IANA time zone of the times (default: the patient\'s)')
    .action(async (o: { patient: string; medication?: string; dose?: string; measure?: string; times: string; days?: string; instructions?: string; startsOn?: string; endsOn?: string; timezone?: string }, cmd: Command) => {
      const out = output(g(cmd))
      if ((o.medication === undefined) === (o.measure === undefined)) {
        throw new RpmError('RPM_ERR_BAD_REQUEST', 'give either --medication NAME or --measure TYPE', { details: { field: 'medication' } })
      }
      let days: number[] | undefined
      try {
        days = o.days === undefined ? undefined : parseDays(o.days)
      } catch (err) {
        throw new RpmError('RPM_ERR_BAD_REQUEST', (err as Error).message, { details: { field: 'days' } })
      }
      const created = await withStore(g(cmd), async (store, _r, audit) => {
        const s = new ReminderRecords(store.sqlite, systemClock).createSchedule(o.patient, {
          kind: o.medication !== undefined ? 'medication' : 'measurement',
          times: o.times.split(',').map((t) => t.trim()),
          ...(o.medication !== undefined ? { medication: o.medication } : {}),
          ...(o.dose !== undefined ? { dose: o.dose } : {}),
          ...(o.measure !== undefined ? { readingType: o.measure } : {}),
          ...(days !== undefined ? { days } : {}),
          ...(o.instructions !== undefined ? { instructions: o.instructions } : {}),
          ...(o.startsOn !== undefined ? { startsOn: o.startsOn } : {}),
          ...(o.endsOn !== undefined ? { endsOn: o.endsOn } : {}),
          ...(o.timezone !== undefined ? { timezone: o.timezone } : {}),
        }, `operator:${operator()}`)
        audit.record({ actorType: 'operator', actorId: operator(), action: 'reminder.create', target: o.patient, outcome: 'allowed', details: { scheduleId: s.id, kind: s.kind } })
        return s
      })
      out.print(`reminder ${created.id} added for patient ${created.patientId} at ${created.times.join(', ')}${created.nextDueAt ? ` (next ${created.nextDueAt})` : ''}`, created)
    })
  reminder
    .command('list')
    .description('a patient\'s reminder schedules')
    .requiredOption('--patient <id>', 'patient id')
    .action(async (o: { patient: string }, cmd: Command) => {
      const out = output(g(cmd))
      const items = await withStore(g(cmd), async (store, _r, audit) => {
        const list = new ReminderRecords(store.sqlite, systemClock).schedules(o.patient)
        audit.record({ actorType: 'operator', actorId: operator(), action: 'reminders.read', target: o.patient, outcome: 'allowed' })
        return list
      })
      const rows = items.map((s) => ({
        id: s.id,
        what: s.kind === 'medication' ? [s.medication, s.dose].filter(Boolean).join(' ') : `measure ${s.readingType}`,
        times: s.times.join(','),
        days: s.days.length === 7 ? 'every day' : s.days.map((d) => DAY_NAMES[d - 1]).join(','),
        active: s.active,
        nextDueAt: s.nextDueAt,
      }))
      out.print(table(rows, ['id', 'what', 'times', 'days', 'active', 'nextDueAt']), { items })
    })

  program
    .command('adherence')
    .description('a patient\'s medication and measurement adherence over the last 7 and 30 days')
    .requiredOption('--patient <id>', 'patient id')
    .action(async (o: { patient: string }, cmd: Command) => {
      const out = output(g(cmd))
      const result = await withStore(g(cmd), async (store, _r, audit) => {
        const a = new ReminderRecords(store.sqlite, systemClock).adherence(o.patient)
        audit.record({ actorType: 'operator', actorId: operator(), action: 'adherence.read', target: o.patient, outcome: 'allowed' })
        return a
      })
      const pct = (r: number | null) => (r === null ? 'n/a' : `${Math.round(r * 100)}%`)
      const period = (name: string, p: AdherencePeriod) => [
        `${name}: medication ${p.taken} taken, ${p.missed} missed, ${p.pending} pending, adherence ${pct(p.rate)}` +
          (p.unsent ? `, ${p.unsent} not sent (gateway down)` : '') + (p.unscheduled ? `, ${p.unscheduled} unscheduled` : ''),
        `  measurements ${p.measurements.done} done, ${p.measurements.missed} missed, ${p.measurements.pending} pending, ${pct(p.measurements.rate)}`,
        ...p.schedules.map((s) => `  ${s.scheduleId}  ${s.kind === 'medication' ? [s.medication, s.dose].filter(Boolean).join(' ') : `measure ${s.readingType}`}: ${pct(s.rate)} (${s.taken + s.done} of ${s.taken + s.done + s.missed})`),
      ]
      out.print([...period('last 7 days', result.last7Days), ...period('last 30 days', result.last30Days)].join('\n'), result)
    })

  // --- rules and on call -----------------------------------------------------------------------

  const rules = program.command('rules').description('clinical rule files')
  rules
    .command('check [dir]')
    .description('validate a directory of rule files (default: the configured rules directory)')
    .action(async (dir: string | undefined, _o: unknown, cmd: Command) => {
      const opts = g(cmd)
      const out = output(opts)
      const target = dir ? path.resolve(dir) : rulesDir(config(opts).rules.dir)
      try {
        const set = loadRuleDir(target)
        const items = [...set.rules.values()].map(({ rule }) => ({ id: rule.id, kind: rule.kind, file: rule.file, line: rule.line }))
        out.print(`${target}: ${set.rules.size} rules in ${set.files.length} files, all valid`, { dir: target, valid: true, files: set.files, rules: items })
      } catch (err) {
        if (!(err instanceof RuleLoadError)) throw err
        throw new RpmError('RPM_ERR_CONFIG_INVALID', `${target}: ${err.problems.length} problem(s)\n${err.message}`, { details: { problems: err.problems } })
      }
    })
  rules
    .command('test')
    .description('show which alerts a set of readings would raise for a patient (with their thresholds)')
    .requiredOption('--patient <id>', 'patient id')
    .requiredOption('--readings <file>', 'JSON file: an array of readings as devices send them (or one per line)')
    .option('--rules <dir>', 'rules directory (default: the configured one)')
    .action(async (o: { patient: string; readings: string; rules?: string }, cmd: Command) => {
      const opts = g(cmd)
      const out = output(opts)
      const set = loadRuleDir(o.rules ? path.resolve(o.rules) : rulesDir(config(opts).rules.dir))
      let text: string
      try {
        text = readFileSync(o.readings, 'utf8')
      } catch (err) {
        throw new RpmError('RPM_ERR_BAD_REQUEST', `cannot read ${o.readings}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { details: { field: 'readings' } })
      }
      let input: unknown[]
      try {
        const trimmed = text.trim()
        const parsed: unknown = trimmed.startsWith('[') ? JSON.parse(trimmed) : trimmed.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as unknown)
        input = Array.isArray(parsed) ? parsed : [parsed]
      } catch (err) {
        throw new RpmError('RPM_ERR_BAD_REQUEST', `${o.readings} is not JSON (an array of readings, or one reading per line): ${(err as Error).message}`, { details: { field: 'readings' } })
      }
      const validator = new ReadingValidator({ maxFutureSkewMs: Number.POSITIVE_INFINITY, maxAgeMs: Number.POSITIVE_INFINITY })
      const readings: NormalisedReading[] = []
      const refused: Array<{ index: number; code: string; message: string; path?: string }> = []
      input.forEach((raw, index) => {
        const checked = validator.check(raw, Date.now())
        if (checked.ok) readings.push(checked.reading)
        else refused.push({ index, code: checked.code, message: checked.message, ...(checked.path !== undefined ? { path: checked.path } : {}) })
      })
      const overrides = await withStore(opts, async (store, registry, audit) => {
        await registry.getPatient(o.patient)
        const rows = await store.db.selectFrom('rule_overrides as r').selectAll()
          .where('r.patient_id', '=', o.patient)
          .where('r.version', '=', (eb) => eb.selectFrom('rule_overrides as x').select((x) => x.fn.max('x.version').as('v')).whereRef('x.patient_id', '=', 'r.patient_id').whereRef('x.rule_id', '=', 'r.rule_id'))
          .execute()
        audit.record({ actorType: 'operator', actorId: operator(), action: 'thresholds.read', target: o.patient, outcome: 'allowed', details: { via: 'rules test' } })
        return new Map(rows.filter((r) => r.spec_json !== null).map((r) => [r.rule_id, JSON.parse(r.spec_json!) as RuleOverride]))
      })
      const { rules: effective, problems } = rulesForPatient(set, overrides)
      const outcomes = simulate(effective, readings)
      const lines = [
        `${readings.length} reading(s) evaluated for patient ${o.patient}${overrides.size ? ` with ${overrides.size} override(s): ${[...overrides.keys()].join(', ')}` : ''}, starting with no history`,
        ...problems.map((p) => `warning: ${p}`),
        ...refused.map((r) => `reading ${r.index + 1} refused: ${r.code} ${r.path ? `${r.path} ` : ''}${r.message}`),
        ...outcomes.map((x) => `reading ${x.index + 1} (${x.measuredAt}): ${x.action.replace('_', ' ')} ${x.ruleId}${x.severity ? ` [${x.severity}]` : ''} - ${x.title}: ${x.what}`),
        outcomes.some((x) => x.action !== 'all_clear') ? '' : 'no alert would be raised',
      ].filter((l) => l !== '')
      out.print(lines.join('\n'), { patientId: o.patient, evaluated: readings.length, overrides: [...overrides.keys()], refused, outcomes, problems })
    })

  const oncall = program.command('oncall').description('on-call providers: the second escalation tier')
  oncall
    .command('add')
    .description('put a provider on call')
    .requiredOption('--provider <username>', 'the provider\'s username')
    .requiredOption('--until <iso>', 'end of the shift (ISO-8601)')
    .option('--from <iso>', 'start of the shift (default: now)')
    .action(async (o: { provider: string; until: string; from?: string }, cmd: Command) => {
      const out = output(g(cmd))
      const shift = await withStore(g(cmd), async (store, _r, audit) => {
        const s = await addOnCall(store, systemClock, { username: o.provider, endsAt: o.until, ...(o.from ? { startsAt: o.from } : {}) }, `operator:${operator()}`)
        audit.record({ actorType: 'operator', actorId: operator(), action: 'oncall.add', target: s.userId, outcome: 'allowed', details: { shiftId: s.id } })
        return s
      })
      out.print(`${shift.username} is on call from ${shift.startsAt} to ${shift.endsAt}`, shift)
    })
  oncall
    .command('list')
    .description('on-call shifts now and ahead')
    .action(async (_o: unknown, cmd: Command) => {
      const out = output(g(cmd))
      const items = await withStore(g(cmd), async (store) =>
        store.db.selectFrom('on_call as o').innerJoin('users as u', 'u.id', 'o.user_id')
          .select(['o.id', 'u.username', 'o.starts_at as startsAt', 'o.ends_at as endsAt'])
          .where('o.ends_at', '>', new Date().toISOString()).orderBy('o.starts_at').execute())
      out.print(table(items, ['id', 'username', 'startsAt', 'endsAt']), { items })
    })

  // --- time series --------------------------------------------------------------------------

  const timeseries = program.command('timeseries').description('the InfluxDB time series')
  timeseries
    .command('backfill')
    .description('replay the readings journal into InfluxDB (a new bucket, a restored server); safe to run twice')
    .option('--since <iso>', 'only readings measured at or after this time')
    .option('--batch-size <n>', 'points per write request (default: influx.batchSize)')
    .action(async (o: { since?: string; batchSize?: string }, cmd: Command) => {
      const opts = g(cmd)
      const out = output(opts)
      const cfg = config(opts)
      if (!isConfigured(cfg.influx)) {
        throw new RpmError('RPM_ERR_CONFIG_INVALID', 'no InfluxDB configured: set influx.url, influx.token, influx.org and influx.bucket (RPM_INFLUX_URL, ...)', { details: { field: 'influx.url' } })
      }
      const since = o.since === undefined ? undefined : Date.parse(o.since)
      if (since !== undefined && Number.isNaN(since)) throw new RpmError('RPM_ERR_BAD_REQUEST', '--since must be an ISO-8601 time, e.g. 2026-11-01T00:00:00Z', { details: { field: 'since' } })
      const batchSize = o.batchSize === undefined ? cfg.influx.batchSize : intOption(o.batchSize, 'batch-size')
      const result = await withStore(opts, async (store, _r, audit) => {
        const r = await backfill(store, cfg.influx, {
          batchSize,
          ...(since !== undefined ? { since: new Date(since).toISOString() } : {}),
          progress: out.json || !process.stderr.isTTY ? undefined : (p) => process.stderr.write(`\r${progressLine(p)}   `),
        })
        audit.record({ actorType: 'operator', actorId: operator(), action: 'timeseries.backfill', target: targetOf(cfg.influx), outcome: 'allowed', details: { points: r.sent, refused: r.refused.length, since: o.since ?? null } })
        return r
      })
      if (!out.json && process.stderr.isTTY) process.stderr.write('\n')
      out.print(
        `sent ${result.sent.toLocaleString('en-US')} points in ${(result.elapsedMs / 1000).toFixed(1)} s (${Math.round(result.sent / Math.max(result.elapsedMs / 1000, 0.001)).toLocaleString('en-US')}/s)` +
          (result.refused.length ? `; InfluxDB refused ${result.refused.length} (reading ids ${result.refused.slice(0, 10).map((r) => r.id).join(', ')}${result.refused.length > 10 ? ', ...' : ''}): ${result.refused[0]!.reason}` : ''),
        result,
      )
      if (result.refused.length > 0) process.exitCode = 1
    })
  timeseries
    .command('status')
    .description('how far InfluxDB is behind the journal (from the database; the gateway need not run)')
    .action(async (_o: unknown, cmd: Command) => {
      const opts = g(cmd)
      const out = output(opts)
      const cfg = config(opts)
      if (!isConfigured(cfg.influx)) return out.print('no InfluxDB configured (influx.url is empty)', { configured: false })
      const s = await withStore(opts, async (store) => {
        const key = `timeseries.cursor:${targetOf(cfg.influx)}`
        const cursor = Number((store.sqlite.prepare('SELECT value FROM gateway_state WHERE key = ?').get(key) as { value: string } | undefined)?.value ?? 0)
        const max = (store.sqlite.prepare('SELECT COALESCE(MAX(id), 0) AS id FROM readings').get() as { id: number }).id
        const oldest = (store.sqlite.prepare('SELECT received_at FROM readings WHERE id > ? ORDER BY id LIMIT 1').get(cursor) as { received_at: string } | undefined)?.received_at ?? null
        const refused = (store.sqlite.prepare('SELECT COUNT(*) AS n FROM timeseries_rejected WHERE target = ?').get(targetOf(cfg.influx)) as { n: number }).n
        return { configured: true, target: targetOf(cfg.influx), writtenUpTo: cursor, backlog: Math.max(0, max - cursor), oldestPendingAt: oldest, refused }
      })
      out.print(`${s.target}: ${s.backlog.toLocaleString('en-US')} readings not yet written${s.oldestPendingAt ? ` (oldest received ${s.oldestPendingAt})` : ''}; ${s.refused} refused as invalid`, s)
    })

  // --- notifications ------------------------------------------------------------------------

  const notify = program.command('notify').description('push and SMS notifications')
  notify
    .command('status')
    .description('the notification outbox by channel and status (from the database; the gateway need not run)')
    .action(async (_o: unknown, cmd: Command) => {
      const opts = g(cmd)
      const out = output(opts)
      const cfg = config(opts)
      const s = await withStore(opts, async (store) => {
        const rows = store.sqlite.prepare('SELECT channel, status, COUNT(*) AS n FROM notifications GROUP BY channel, status ORDER BY channel, status').all() as Array<{ channel: string; status: string; n: number }>
        const failed = store.sqlite.prepare("SELECT id, channel, kind, reason, updated_at AS at FROM notifications WHERE status = 'failed' ORDER BY id DESC LIMIT 10").all() as Array<{ id: string; channel: string; kind: string; reason: string | null; at: string }>
        const byChannel: Record<string, Record<string, number>> = {}
        for (const r of rows) (byChannel[r.channel] ??= {})[r.status] = r.n
        return {
          channels: {
            webpush: 'on',
            fcm: cfg.notify.fcm.serviceAccountFile ? 'on' : 'off',
            sms: cfg.notify.sms.accountSid && cfg.notify.sms.authToken && cfg.notify.sms.from ? 'on' : 'off',
          },
          counts: byChannel,
          recentFailures: failed,
        }
      })
      const lines = Object.entries(s.channels).map(([c, on]) => {
        const counts = s.counts[c] ?? {}
        const parts = ['pending', 'sending', 'sent', 'failed', 'dropped'].map((k) => `${counts[k] ?? 0} ${k}`).join(', ')
        return `${c.padEnd(8)} ${on.padEnd(4)} ${parts}`
      })
      for (const f of s.recentFailures) lines.push(`failed: ${f.id} ${f.channel} ${f.kind} (${f.reason ?? 'unknown'}) at ${f.at}`)
      out.print(lines.join('\n'), s)
    })

  const audit = program.command('audit').description('the audit trail')
  audit
    .command('verify')
    .description('check that the audit trail has not been altered')
    .action(async (_o, cmd: Command) => {
      const out = output(g(cmd))
      const result = await withStore(g(cmd), async (_s, _r, log) => log.verify())
      out.print(result.ok ? `audit trail intact (${result.rows} entries)` : `audit trail ALTERED at entry ${result.brokenAt}: ${result.reason}`, result)
      if (!result.ok) process.exitCode = 2
    })

  return program
}

function banner(u: GatewayUrls, rules: { dir: string; count: number; files: string[] }, influx: GatewayConfig['influx'], channels: Record<'webpush' | 'fcm' | 'sms', string>): string {
  const rel = (p: string) => path.relative(process.cwd(), p) || p
  // No flag when the CLI finds the same directory by itself (the default, or RPM_DATA_DIR).
  const found = path.resolve(process.env.RPM_DATA_DIR ?? 'data')
  const shown = rel(u.dataDir).startsWith('..') ? u.dataDir : rel(u.dataDir)
  const dataFlag = u.dataDir === found ? '' : ` --data-dir ${shown}`
  return [
    'rpm-gateway is running',
    `  data directory  ${u.dataDir}`,
    `  database        ${u.database}`,
    `  MQTT over TLS   ${u.mqtts}    (CA certificate: ${u.caFile})`,
    ...(u.mqtt ? [`  MQTT (plain)    ${u.mqtt}`] : []),
    ...(u.ws ? [`  MQTT over WS    ${u.ws}`] : []),
    `  Web console     ${u.http}/    (providers and patients sign in here; npm run demo shows it with a made-up clinic)`,
    `  HTTP            ${u.http}    (/healthz, /readyz, /metrics)`,
    `  REST API        ${u.http}/api/v1    (OpenAPI and a UI to try it: ${u.http}/docs)`,
    `  WebSocket       ${u.http.replace(/^http/, 'ws')}/api/v1/ws    (docs/websocket.md)`,
    `  Clinical rules  ${rules.count} rules in ${rules.files.length} files from ${rules.dir}    (docs/rules.md; edits apply without a restart)`,
    `  Time series     ${isConfigured(influx) ? `InfluxDB ${influx.url} (org ${influx.org}, bucket ${influx.bucket})` : 'off: no InfluxDB configured (RPM_INFLUX_URL); readings stay in the journal'}    (docs/timeseries.md)`,
    `  Notifications   Web Push on; FCM ${channels.fcm === 'off' ? 'off (notify.fcm.serviceAccountFile)' : 'on'}; SMS ${channels.sms === 'off' ? 'off (notify.sms.*: Twilio)' : 'on'}    (docs/notifications.md)`,
    '',
    'Provision a device:',
    `  npx rpm-gateway${dataFlag} patient add --name "Jane Doe"`,
    `  npx rpm-gateway${dataFlag} device add --patient <patient id> --kind bp_cuff`,
    'then connect with the device id as client id and username, and its secret as password',
    '(docs/devices.md). Add people who sign in to the API:',
    `  npx rpm-gateway${dataFlag} user add --role provider --username nurse1 --password-stdin`,
    `  npx rpm-gateway${dataFlag} careteam add --patient <patient id> --provider nurse1`,
    'Try it with simulated devices: npm run simulate -- --help',
    '',
  ].join('\n')
}

/** Runs the CLI; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram()
  try {
    await program.parseAsync(argv, { from: 'user' })
    return typeof process.exitCode === 'number' ? process.exitCode : 0
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode
    const json = argv.includes('--json')
    const e = isRpmError(err) ? err : new RpmError('RPM_ERR_INTERNAL', (err as Error).message)
    if (json) process.stdout.write(JSON.stringify({ error: e.toJSON() }, null, 2) + '\n')
    else process.stderr.write(`error: ${e.message} (${e.code})\n`)
    return 1
  }
}
