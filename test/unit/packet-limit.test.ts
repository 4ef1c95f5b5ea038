import mqttPacket from 'mqtt-packet'
import { describe, expect, it } from 'vitest'
import { MalformedLengthError, PacketSizeScanner, PacketTooLargeError } from '../../src/broker/packet-limit.ts'

const publish = (bytes: number) =>
  mqttPacket.generate({ cmd: 'publish', topic: 'devices/d1/readings', payload: Buffer.alloc(bytes, 0x61), qos: 1, messageId: 1, retain: false, dup: false })
const pingreq = mqttPacket.generate({ cmd: 'pingreq' })

describe('PacketSizeScanner', () => {
  it('passes packets within the limit, whole or split at every byte', () => {
    const stream = Buffer.concat([publish(100), pingreq, publish(1000), pingreq])
    expect(new PacketSizeScanner(2048).scan(stream)).toBeNull()
    const scanner = new PacketSizeScanner(2048)
    for (let i = 0; i < stream.length; i++) expect(scanner.scan(stream.subarray(i, i + 1))).toBeNull()
  })

  it('reports an oversized packet from its fixed header alone, before the body arrives', () => {
    const big = publish(20 * 1024 * 1024)
    const scanner = new PacketSizeScanner(65536)
    expect(scanner.scan(publish(10))).toBeNull()
    const err = scanner.scan(big.subarray(0, 5)) // type byte + 4 length bytes
    expect(err).toBeInstanceOf(PacketTooLargeError)
    expect((err as PacketTooLargeError).packetBytes).toBe(big.length)
  })

  it('counts the fixed header: a packet of exactly the limit passes, one byte more does not', () => {
    const p = publish(500)
    expect(new PacketSizeScanner(p.length).scan(p)).toBeNull()
    expect(new PacketSizeScanner(p.length - 1).scan(p)).toBeInstanceOf(PacketTooLargeError)
  })

  it('rejects a remaining length longer than four bytes', () => {
    expect(new PacketSizeScanner(Number.MAX_SAFE_INTEGER).scan(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]))).toBeInstanceOf(MalformedLengthError)
  })
})
