import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { envName, loadConfig, unknownEnvNames } from '../../src/config/load.ts'
import { tempDir } from '../helpers.ts'

describe('configuration', () => {
  it('has embedded defaults', () => {
    const c = loadConfig({ env: {} })
    expect(c.http).toEqual({ host: '127.0.0.1', port: 8080, mqttWebSocket: true, webRoot: '' })
    expect(c.mqtt.port).toBe(8883)
    expect(c.mqtt.maxPacketBytes).toBe(65536)
    expect(c.dataDir).toBe(path.resolve('data'))
    expect(Object.isFrozen(c.mqtt)).toBe(true)
  })

  it('maps key paths to RPM_* names', () => {
    expect(envName('http.port')).toBe('RPM_HTTP_PORT')
    expect(envName('mqtt.maxPacketBytes')).toBe('RPM_MQTT_MAX_PACKET_BYTES')
    expect(envName('dataDir')).toBe('RPM_DATA_DIR')
  })

  it('reads a YAML file, and environment variables override it', () => {
    const file = path.join(tempDir(), 'gateway.yaml')
    writeFileSync(file, 'http:\n  port: 9000\nmqtt:\n  serverNames: [gw.example.org]\n  maxPacketBytes: 4096\n')
    const c = loadConfig({ file, env: { RPM_HTTP_PORT: '9100', RPM_MQTT_SERVER_NAMES: 'a.example,b.example', RPM_HTTP_MQTT_WEB_SOCKET: 'false' } })
    expect(c.http.port).toBe(9100)
    expect(c.http.mqttWebSocket).toBe(false)
    expect(c.mqtt.maxPacketBytes).toBe(4096)
    expect(c.mqtt.serverNames).toEqual(['a.example', 'b.example'])
  })

  it('names the key and the expectation for a wrong type', () => {
    expect(() => loadConfig({ env: { RPM_HTTP_PORT: 'abc' } })).toThrow(/RPM_HTTP_PORT: expected a number/)
    expect(() => loadConfig({ env: { RPM_HTTP_PORT: '70000' } })).toThrow(/http\.port \(from RPM_HTTP_PORT\): must be <= 65535/)
    expect(() => loadConfig({ env: { RPM_LOG_LEVEL: 'loud' } })).toThrow(/log\.level.*expected one of fatal, error/)
  })

  it('posts readings of the spot-check device kinds to threads unless told otherwise', () => {
    expect(loadConfig({ env: {} }).threads.readingKinds).toEqual(['bp_cuff', 'glucometer', 'oximeter', 'scale', 'thermometer'])
    expect(loadConfig({ env: { RPM_THREADS_READING_KINDS: 'bp_cuff,scale' } }).threads.readingKinds).toEqual(['bp_cuff', 'scale'])
    expect(() => loadConfig({ env: { RPM_THREADS_READING_KINDS: 'bp_cuff,toaster' } })).toThrow(/threads\.readingKinds\.1.*expected one of bp_cuff/)
  })

  it('refuses an unknown key in the file', () => {
    const file = path.join(tempDir(), 'gateway.yaml')
    writeFileSync(file, 'mqtt:\n  prot: 1883\n')
    expect(() => loadConfig({ file, env: {} })).toThrow(/unknown key "mqtt\.prot"/)
  })

  it('reports an unreadable or malformed file', () => {
    expect(() => loadConfig({ file: '/nonexistent/gateway.yaml', env: {} })).toThrow(/cannot read/)
    const file = path.join(tempDir(), 'gateway.json')
    writeFileSync(file, '{"http": ')
    expect(() => loadConfig({ file, env: {} })).toThrow(/gateway\.json/)
  })

  it('lists RPM_* variables that name no key', () => {
    expect(unknownEnvNames({ RPM_HTTP_PORT: '1', RPM_HTTP_PROT: '2', RPM_BUILD_ROOT: '/x', HOME: '/' })).toEqual(['RPM_HTTP_PROT'])
  })
})
