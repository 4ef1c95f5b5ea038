import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import webpush from 'web-push'
import { RpmError } from '../errors.ts'

export interface VapidKeys {
  publicKey: string
  privateKey: string
}

/**
 * The gateway's VAPID key pair (RFC 8292), made on first start into the data directory and kept:
 * browsers subscribed with its public key, so a new pair would orphan every subscription.
 */
export function ensureVapidKeys(dataDir: string): VapidKeys {
  const file = path.join(dataDir, 'keys', 'vapid.json')
  if (!existsSync(file)) {
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 })
    const keys = webpush.generateVAPIDKeys()
    try {
      // 'wx': a second process starting at the same moment keeps the first one's keys.
      writeFileSync(file, JSON.stringify(keys) + '\n', { mode: 0o600, flag: 'wx' })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
  }
  let keys: VapidKeys
  try {
    keys = JSON.parse(readFileSync(file, 'utf8')) as VapidKeys
    // An uncompressed P-256 point and a P-256 private scalar.
    if (Buffer.from(keys.publicKey, 'base64url').length !== 65) throw new Error('publicKey must be 65 bytes, base64url')
    if (Buffer.from(keys.privateKey, 'base64url').length !== 32) throw new Error('privateKey must be 32 bytes, base64url')
  } catch (err) {
    throw new RpmError('RPM_ERR_CONFIG_INVALID', `invalid VAPID keys in ${file}: ${(err as Error).message}`, { cause: err })
  }
  return { publicKey: keys.publicKey, privateKey: keys.privateKey }
}
