// The docker-compose deployment (Dockerfile, docker-compose.yml, .env.example, deploy/grafana):
// no Docker engine here, so these check the files against the gateway's own configuration
// loader, its InfluxDB schema, and each other.
import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import YAML from 'yaml'
import { ensureDevelopmentPki } from '../../src/broker/pki.ts'
import { loadConfig, unknownEnvNames } from '../../src/config/load.ts'
import { MEASUREMENTS } from '../../src/timeseries/lines.ts'
import { tempDir } from '../helpers.ts'

const ROOT = path.resolve(import.meta.dirname, '../..')
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8')

/** The InfluxDB schema the gateway writes (docs/timeseries.md): measurement -> fields. */
const SCHEMA: Record<string, string[]> = {
  blood_pressure: ['systolic', 'diastolic', 'pulse'],
  glucose: ['mg_dl'],
  spo2: ['spo2', 'pulse'],
  heart_rate: ['heart_rate'],
  weight: ['weight_kg'],
  temperature: ['temperature_c'],
}

interface ComposeService {
  build?: string
  image?: string
  ports?: string[]
  volumes?: string[]
  environment?: Record<string, string>
  depends_on?: Record<string, { condition: string }>
  healthcheck?: { test: string[] }
}
interface Compose {
  services: Record<string, ComposeService>
  volumes: Record<string, unknown>
}

const compose = YAML.parse(read('docker-compose.yml')) as Compose
const service = (name: string): ComposeService => {
  const s = compose.services[name]
  if (!s) throw new Error(`docker-compose.yml has no service ${name}`)
  return s
}
const env = (name: string): Record<string, string> => service(name).environment ?? {}

/** .env.example as a map. */
const envExample: Record<string, string> = Object.fromEntries(
  read('.env.example')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'))
    .map((line) => {
      const eq = line.indexOf('=')
      return [line.slice(0, eq), line.slice(eq + 1)]
    }),
)

const VARIABLE = /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g

/** Compose variable substitution: ${VAR}, ${VAR:-default}, ${VAR-default}, $VAR, $$. */
function interpolate(value: string, vars: Record<string, string>): string {
  return value.replace(VARIABLE, (match, name: string | undefined, op: string | undefined, fallback: string | undefined, bare: string | undefined) => {
    if (match === '$$') return '$'
    const key = (name ?? bare)!
    const set = vars[key]
    if (op === ':-') return set ? set : fallback!
    if (op === '-') return set !== undefined ? set : fallback!
    if (set === undefined) throw new Error(`${key} is not set and has no default`)
    return set
  })
}

const interpolated = (name: string, vars: Record<string, string>) =>
  Object.fromEntries(Object.entries(env(name)).map(([k, v]) => [k, interpolate(String(v), vars)]))

/** `[ip:]host:container` -> parts. */
function port(spec: string): { ip?: string; host: number; container: number } {
  const parts = spec.split(':')
  const container = Number(parts.pop())
  const host = Number(parts.pop())
  return { ...(parts.length > 0 ? { ip: parts.join(':') } : {}), host, container }
}

interface Instruction {
  stage: number
  cmd: string
  args: string
}

/** The Dockerfile's instructions (line continuations joined, comments dropped), numbered by stage. */
function dockerfile(): Instruction[] {
  const lines: string[] = []
  let pending = ''
  for (const raw of read('Dockerfile').split('\n')) {
    if (/^\s*#/.test(raw)) continue
    if (raw.endsWith('\\')) {
      pending += raw.slice(0, -1) + ' '
      continue
    }
    lines.push(pending + raw)
    pending = ''
  }
  let stage = -1
  const out: Instruction[] = []
  for (const line of lines.map((l) => l.trim()).filter(Boolean)) {
    const cmd = line.split(/\s/, 1)[0]!.toUpperCase()
    if (cmd === 'FROM') stage++
    out.push({ stage, cmd, args: line.slice(cmd.length).trim() })
  }
  return out
}

const instructions = dockerfile()
const lastStage = Math.max(...instructions.map((i) => i.stage))
const runtime = instructions.filter((i) => i.stage === lastStage)
const runtimeOf = (cmd: string) => runtime.filter((i) => i.cmd === cmd)

/** ENV of the runtime stage (KEY=value pairs, values without spaces). */
const imageEnv: Record<string, string> = Object.fromEntries(
  runtimeOf('ENV').flatMap((i) =>
    i.args.split(/\s+/).map((pair) => {
      const eq = pair.indexOf('=')
      if (eq < 1) throw new Error(`ENV ${i.args}: write KEY=value`)
      return [pair.slice(0, eq), pair.slice(eq + 1)]
    }),
  ),
)

/** What the gateway container runs with: the image's ENV, then compose's environment. */
function containerEnv(vars: Record<string, string>): Record<string, string> {
  return { ...imageEnv, ...interpolated('gateway', vars) }
}

describe('docker-compose.yml', () => {
  it('runs the gateway, InfluxDB and Grafana', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['gateway', 'grafana', 'influxdb'])
    expect(service('gateway').build).toBe('.')
    expect(service('influxdb').image).toMatch(/^influxdb:2\.7(\.\d+)?$/)
    expect(service('grafana').image).toMatch(/^grafana\/grafana:11\.\d+\.\d+$/)
    expect(service('gateway').depends_on).toEqual({ influxdb: { condition: 'service_healthy' } })
    expect(service('influxdb').healthcheck?.test).toEqual(['CMD', 'influx', 'ping'])
    for (const s of Object.values(compose.services)) {
      for (const v of s.volumes ?? []) {
        const source = v.split(':')[0]!
        if (source.startsWith('.')) expect(existsSync(path.join(ROOT, source)), v).toBe(true)
        else expect(Object.keys(compose.volumes), v).toContain(source)
      }
    }
  })

  it('gives every variable one default, the one in .env.example, and documents every variable there', () => {
    const strings = (node: unknown): string[] =>
      typeof node === 'string' ? [node] : node && typeof node === 'object' ? Object.values(node).flatMap(strings) : []
    const defaults = new Map<string, Set<string>>()
    for (const m of strings(compose).flatMap((s) => [...s.matchAll(VARIABLE)])) {
      if (m[0] === '$$') continue
      const name = (m[1] ?? m[4])!
      expect(m[2], `${m[0]} needs a default (:-)`).toBe(':-')
      defaults.set(name, (defaults.get(name) ?? new Set()).add(m[3]!))
    }
    expect([...defaults.keys()].sort()).toEqual(Object.keys(envExample).sort())
    for (const [name, values] of defaults) {
      expect([...values], name).toEqual([envExample[name]])
    }
    // InfluxDB refuses a password shorter than 8 characters at setup.
    expect(envExample.INFLUXDB_ADMIN_PASSWORD!.length).toBeGreaterThanOrEqual(8)
  })

  it('publishes the gateway on the ports of its configuration', () => {
    const defaults = loadConfig({ env: {} })
    expect([defaults.mqtt.port, defaults.http.port]).toEqual([8883, 8080])
    const config = loadConfig({ env: containerEnv(envExample) })
    const ports = (service('gateway').ports ?? []).map(port)
    expect(ports.map((p) => p.container).sort()).toEqual([config.mqtt.port, config.http.port].sort())
    expect(ports.map((p) => p.container).sort()).toEqual([defaults.mqtt.port, defaults.http.port].sort())
    for (const p of ports) expect(p.host).toBe(p.container)
  })

  it("sets only RPM_* variables that name configuration keys, and the gateway's configuration loads from them", () => {
    for (const vars of [envExample, {}]) {
      const e = containerEnv(vars)
      const rpm = Object.keys(e).filter((k) => k.startsWith('RPM_')).sort()
      expect(rpm).toEqual([
        'RPM_DATA_DIR', 'RPM_HTTP_HOST', 'RPM_INFLUX_BUCKET', 'RPM_INFLUX_ORG', 'RPM_INFLUX_TOKEN', 'RPM_INFLUX_URL', 'RPM_MQTT_SERVER_NAMES',
      ])
      expect(unknownEnvNames(e)).toEqual([])
      const config = loadConfig({ env: e })
      expect(config.dataDir).toBe('/data')
      expect(config.http.host).toBe('0.0.0.0')
      expect(config.mqtt.host).toBe('0.0.0.0')
      expect(config.mqtt.serverNames).toContain('gateway')
      expect(config.influx).toMatchObject({ url: 'http://influxdb:8086', org: 'clinic', bucket: 'rpm', token: 'change-me-influxdb-admin-token' })
    }
    const custom = { ...envExample, RPM_INFLUX_ORG: 'north-clinic', RPM_INFLUX_TOKEN: 's3cret', RPM_MQTT_SERVER_NAMES: 'gateway,rpm.example.org' }
    const config = loadConfig({ env: containerEnv(custom) })
    expect(config.influx).toMatchObject({ org: 'north-clinic', token: 's3cret', bucket: 'rpm' })
    expect(config.mqtt.serverNames).toEqual(['gateway', 'rpm.example.org'])
  })

  it('points the gateway at the influxdb service, which InfluxDB sets up with the same org, bucket and token', () => {
    const url = new URL(env('gateway').RPM_INFLUX_URL!)
    expect(url.protocol).toBe('http:')
    expect(compose.services).toHaveProperty(url.hostname)
    expect(url.hostname).toBe('influxdb')
    const influxPorts = (service('influxdb').ports ?? []).map(port)
    expect(influxPorts).toEqual([{ ip: '127.0.0.1', host: 8086, container: 8086 }])
    expect(Number(url.port)).toBe(influxPorts[0]!.container)

    const influx = env('influxdb')
    expect(influx.DOCKER_INFLUXDB_INIT_MODE).toBe('setup')
    expect(influx.DOCKER_INFLUXDB_INIT_ORG).toBe(env('gateway').RPM_INFLUX_ORG)
    expect(influx.DOCKER_INFLUXDB_INIT_BUCKET).toBe(env('gateway').RPM_INFLUX_BUCKET)
    expect(influx.DOCKER_INFLUXDB_INIT_ADMIN_TOKEN).toBe(env('gateway').RPM_INFLUX_TOKEN)
    expect(influx.DOCKER_INFLUXDB_INIT_ORG).toBe('${RPM_INFLUX_ORG:-clinic}')
    expect(influx).not.toHaveProperty('DOCKER_INFLUXDB_INIT_RETENTION') // keep data forever
    expect(influx.DOCKER_INFLUXDB_INIT_USERNAME).toBeTruthy()
    expect(influx.DOCKER_INFLUXDB_INIT_PASSWORD).toBeTruthy()
  })

  it('mounts the data volume on the data directory', () => {
    const config = loadConfig({ env: containerEnv(envExample) })
    expect(service('gateway').volumes).toEqual([`gateway-data:${config.dataDir}`])
  })
})

describe('Dockerfile', () => {
  it('builds on Node 20 with npm 11 and keeps tsx, which runs the gateway, in the image', () => {
    const froms = instructions.filter((i) => i.cmd === 'FROM').map((i) => i.args)
    expect(froms).toEqual(['node:20-bookworm-slim AS build', 'node:20-bookworm-slim'])
    const build = instructions.filter((i) => i.stage === 0 && i.cmd === 'RUN').map((i) => i.args)
    expect(build.join('\n')).toMatch(/python3 make g\+\+/)
    const npm11 = build.findIndex((r) => /npm install -g npm@11\b/.test(r))
    const ci = build.findIndex((r) => /^npm ci\b/.test(r))
    expect(npm11).toBeGreaterThanOrEqual(0)
    expect(ci).toBeGreaterThan(npm11)

    // bin/rpm-gateway.js loads tsx at runtime: it must survive `npm prune --omit=dev`.
    const pkg = JSON.parse(read('package.json')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> }
    expect(read('bin/rpm-gateway.js')).toContain("from 'tsx/esm/api'")
    expect(pkg.dependencies).toHaveProperty('tsx')
    expect(pkg.devDependencies).not.toHaveProperty('tsx')
    expect(build.some((r) => /npm prune --omit=dev/.test(r))).toBe(true)

    const copies = runtimeOf('COPY').map((i) => i.args)
    expect(copies).toContain('--from=build /app/node_modules ./node_modules')
    for (const dir of ['bin', 'src', 'rules']) expect(copies).toContain(`${dir} ./${dir}`)
  })

  it('runs as a non-root user with a volume on the data directory and exposes the configured ports', () => {
    const users = runtimeOf('USER').map((i) => i.args)
    expect(users).toEqual(['node'])
    const config = loadConfig({ env: imageEnv })
    expect(imageEnv.RPM_DATA_DIR).toBe('/data')
    expect(runtimeOf('VOLUME').map((i) => i.args)).toEqual([config.dataDir])
    expect(runtimeOf('RUN').map((i) => i.args)).toContain(`mkdir -p ${config.dataDir} && chown node:node ${config.dataDir} && chmod 700 ${config.dataDir}`)
    // Off loopback, so the HTTP server serves HTTPS (src/http/server.ts).
    expect(config.http.host).toBe('0.0.0.0')
    expect(unknownEnvNames(imageEnv)).toEqual([])
    const exposed = runtimeOf('EXPOSE').flatMap((i) => i.args.split(/\s+/)).map(Number).sort()
    expect(exposed).toEqual([config.mqtt.port, config.http.port].sort())
    expect(runtimeOf('CMD').map((i) => JSON.parse(i.args) as string[])).toEqual([['node', 'bin/rpm-gateway.js', 'start']])
  })

  it('keeps local state and secrets out of the build context', () => {
    const ignored = read('.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))
    for (const entry of ['node_modules', 'data', '.env', '.git', 'coverage', 'test']) expect(ignored).toContain(entry)
    for (const needed of ['bin', 'src', 'rules', 'package.json', 'package-lock.json']) expect(ignored).not.toContain(needed)
  })

  describe('HEALTHCHECK', () => {
    const healthcheck = runtimeOf('HEALTHCHECK')
    const servers: Server[] = []
    afterEach(async () => {
      await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))))
    })

    /** Runs the HEALTHCHECK command with the image's environment (plus `extra`); resolves to its exit code. */
    function runHealthcheck(extra: Record<string, string>): Promise<number | null> {
      const [node, ...args] = JSON.parse(healthcheck[0]!.args.replace(/^.*?CMD\s+/, '')) as string[]
      expect(node).toBe('node')
      return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, args, { env: { PATH: process.env.PATH, ...imageEnv, ...extra }, cwd: tempDir(), stdio: 'ignore' })
        child.on('error', reject)
        child.on('exit', (code) => resolve(code))
      })
    }

    const handler = (status: number) => (req: IncomingMessage, res: ServerResponse) => {
      res.writeHead(req.url === '/healthz' ? status : 404, { 'content-type': 'application/json' }).end('{"status":"ok"}')
    }
    async function listen(server: Server): Promise<number> {
      servers.push(server)
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
      return (server.address() as AddressInfo).port
    }
    async function https(status: number): Promise<number> {
      const pki = await ensureDevelopmentPki(tempDir(), ['localhost'])
      return listen(createHttpsServer({ key: readFileSync(pki.keyPath), cert: readFileSync(pki.certPath) }, handler(status)))
    }

    it('is declared once, in the runtime stage', () => {
      expect(healthcheck).toHaveLength(1)
      expect(healthcheck[0]!.args).toMatch(/--interval=\d+s .*CMD \["node", "-e", /)
    })

    it("passes when /healthz answers 200 over HTTPS with the gateway's own certificate", async () => {
      expect(await runHealthcheck({ RPM_HTTP_PORT: String(await https(200)) })).toBe(0)
    })

    it('fails when /healthz answers an error, or nothing listens', async () => {
      expect(await runHealthcheck({ RPM_HTTP_PORT: String(await https(503)) })).toBe(1)
      const closed = await listen(createHttpServer())
      await new Promise((resolve) => servers.pop()!.close(resolve))
      expect(await runHealthcheck({ RPM_HTTP_PORT: String(closed) })).toBe(1)
    })

    it('speaks plain HTTP when the gateway is configured on loopback', async () => {
      const port = String(await listen(createHttpServer(handler(200))))
      expect(await runHealthcheck({ RPM_HTTP_HOST: '127.0.0.1', RPM_HTTP_PORT: port })).toBe(0)
      // Plain HTTP is not what the image's HTTPS check talks to.
      expect(await runHealthcheck({ RPM_HTTP_PORT: port })).toBe(1)
    })
  })
})

describe('Grafana provisioning', () => {
  const grafanaEnv = interpolated('grafana', envExample)
  /** Grafana's expansion of ${VAR} and $VAR in provisioning files, from its container environment. */
  const expand = (value: string) =>
    value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (_m, a: string | undefined, b: string | undefined) => {
      const v = grafanaEnv[(a ?? b)!]
      if (v === undefined) throw new Error(`${a ?? b} is not in the grafana service's environment`)
      return v
    })

  /** Container path -> host path, for the grafana service's bind mounts. */
  const mounts = new Map(
    (service('grafana').volumes ?? [])
      .filter((v) => v.startsWith('./'))
      .map((v) => {
        const [host, container, mode] = v.split(':')
        if (mode !== 'ro') throw new Error(`${v}: mount provisioning read-only`)
        return [container!, path.join(ROOT, host!)]
      }),
  )
  /** The host file behind a path inside the grafana container. */
  const hostFile = (containerPath: string): string => {
    for (const [container, host] of mounts) {
      if (containerPath === container || containerPath.startsWith(container + '/')) return path.join(host, containerPath.slice(container.length))
    }
    throw new Error(`${containerPath} is not mounted into the grafana container`)
  }

  interface Datasource {
    name: string
    uid: string
    type: string
    url: string
    jsonData: { version: string; organization: string; defaultBucket: string }
    secureJsonData: { token: string }
  }
  const datasources = (YAML.parse(readFileSync(hostFile('/etc/grafana/provisioning/datasources/influxdb.yaml'), 'utf8')) as { datasources: Datasource[] }).datasources

  it('reads the InfluxDB the gateway writes to, with Flux, the same org, bucket and token', () => {
    expect(datasources).toHaveLength(1)
    const ds = datasources[0]!
    expect(ds.type).toBe('influxdb')
    expect(ds.jsonData.version).toBe('Flux')
    expect(ds.url).toBe(env('gateway').RPM_INFLUX_URL)
    const gateway = loadConfig({ env: containerEnv(envExample) }).influx
    expect(expand(ds.jsonData.organization)).toBe(gateway.org)
    expect(expand(ds.jsonData.defaultBucket)).toBe(gateway.bucket)
    expect(expand(ds.secureJsonData.token)).toBe(gateway.token)
    expect(ds.secureJsonData.token).toMatch(/^\$\{?[A-Z_]+\}?$/) // never the token itself
    expect(grafanaEnv.INFLUX_TOKEN).toBe('change-me-influxdb-admin-token')
    expect(env('grafana').INFLUX_TOKEN).toBe(env('gateway').RPM_INFLUX_TOKEN)
  })

  it('loads the dashboards folder that is mounted, and opens on the RPM dashboard', () => {
    const doc = YAML.parse(readFileSync(hostFile('/etc/grafana/provisioning/dashboards/rpm.yaml'), 'utf8')) as {
      providers: Array<{ type: string; options: { path: string } }>
    }
    expect(doc.providers).toHaveLength(1)
    expect(doc.providers[0]!.type).toBe('file')
    const dir = hostFile(doc.providers[0]!.options.path)
    expect(existsSync(path.join(dir, 'rpm.json'))).toBe(true)
    expect(existsSync(hostFile(env('grafana').GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH!))).toBe(true)
    expect(env('grafana').GF_SECURITY_ADMIN_PASSWORD).toBe('${GRAFANA_ADMIN_PASSWORD:-change-me-grafana-password}')
  })

  interface Target {
    refId: string
    datasource: { type: string; uid: string }
    query: string
  }
  interface Panel {
    id: number
    type: string
    title: string
    datasource: { type: string; uid: string }
    gridPos: { h: number; w: number; x: number; y: number }
    targets: Target[]
  }
  const dashboard = JSON.parse(read('deploy/grafana/dashboards/rpm.json')) as {
    uid: string
    title: string
    schemaVersion: number
    templating: { list: Array<{ name: string; type: string; query: string; datasource: { uid: string } }> }
    panels: Panel[]
  }

  it("has the test's schema table the same as the gateway's writer", () => {
    const writer = Object.fromEntries(Object.values(MEASUREMENTS).map((m) => [m.measurement, Object.values(m.fields).sort()]))
    expect(writer).toEqual(Object.fromEntries(Object.entries(SCHEMA).map(([m, f]) => [m, [...f].sort()])))
  })

  it('is a dashboard with a patient variable of patient_id tag values', () => {
    expect(dashboard.uid).toBe('rpm')
    expect(dashboard.title).toBe('RPM')
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36)
    const variables = dashboard.templating.list
    expect(variables.map((v) => v.name)).toEqual(['patient'])
    const patient = variables[0]!
    expect(patient.type).toBe('query')
    expect(patient.datasource.uid).toBe(datasources[0]!.uid)
    expect(patient.query).toContain('import "influxdata/influxdb/schema"')
    expect(patient.query).toMatch(/schema\.tagValues\(bucket: v\.defaultBucket, tag: "patient_id"/)
  })

  it("charts every measurement, each query with the schema's fields of one patient", () => {
    const seen = new Set<string>()
    expect(new Set(dashboard.panels.map((p) => p.id)).size).toBe(dashboard.panels.length)
    for (const panel of dashboard.panels) {
      expect(panel.type, panel.title).toBe('timeseries')
      expect(panel.datasource.uid, panel.title).toBe(datasources[0]!.uid)
      expect(panel.targets.length, panel.title).toBeGreaterThan(0)
      for (const target of panel.targets) {
        const where = `${panel.title} ${target.refId}`
        expect(target.datasource.uid, where).toBe(datasources[0]!.uid)
        const q = target.query
        const measurements = [...q.matchAll(/r\._measurement\s*==\s*"([^"]*)"/g)].map((m) => m[1]!)
        expect(measurements, where).toHaveLength(1)
        const measurement = measurements[0]!
        expect(Object.keys(SCHEMA), where).toContain(measurement)
        const fields = [...q.matchAll(/r\._field\s*==\s*"([^"]*)"/g)].map((m) => m[1]!)
        expect(fields.length, where).toBeGreaterThan(0)
        for (const field of fields) expect(SCHEMA[measurement], `${where}: ${field}`).toContain(field)
        expect(q, where).toContain('r.patient_id == "${patient}"')
        expect(q, where).toMatch(/range\(start: v\.timeRangeStart, stop: v\.timeRangeStop\)/)
        expect(q, where).toMatch(/aggregateWindow\(every: v\.windowPeriod/)
        expect(q, where).toContain('from(bucket: v.defaultBucket)')
        seen.add(measurement)
      }
    }
    expect([...seen].sort()).toEqual(Object.keys(SCHEMA).sort())
  })

  it('lays the panels out on the 24-column grid without overlaps', () => {
    const cells = new Set<string>()
    for (const { title, gridPos: g } of dashboard.panels) {
      expect(g.x + g.w, title).toBeLessThanOrEqual(24)
      for (let x = g.x; x < g.x + g.w; x++) {
        for (let y = g.y; y < g.y + g.h; y++) {
          expect(cells.has(`${x},${y}`), `${title} overlaps at ${x},${y}`).toBe(false)
          cells.add(`${x},${y}`)
        }
      }
    }
  })
})

describe('README', () => {
  it('says how to run the stack, and names every published port', () => {
    const readme = read('README.md')
    const start = readme.indexOf('## Run the whole stack with Docker')
    expect(start).toBeGreaterThan(readme.indexOf('## Two commands'))
    const section = readme.slice(start, readme.indexOf('\n## ', start + 1))
    expect(section).toContain('cp .env.example .env')
    expect(section).toContain('docker compose up --build')
    expect(section).toContain('docker compose cp gateway:/data/tls/ca.pem .')
    for (const s of Object.values(compose.services)) {
      for (const p of (s.ports ?? []).map(port)) expect(section).toContain(String(p.host))
    }
  })
})
