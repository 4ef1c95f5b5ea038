import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto'
import { promisify } from 'node:util'

const scryptAsync = promisify(scrypt) as (pw: string, salt: Buffer, len: number, opts: object) => Promise<Buffer>

// Device secrets are 256-bit random tokens, so a moderate cost suffices; people's passwords get
// twice the work. The parameters are stored with each hash so they can be raised later.
const DEVICE_N = 16384
const PASSWORD_N = 32768
const R = 8
const P = 1
const KEY_LEN = 32

export function generateSecret(): string {
  return randomBytes(32).toString('base64url')
}

/** `scrypt$N$r$p$salt$hash`, base64url. */
export async function hashSecret(secret: string, N = DEVICE_N): Promise<string> {
  const salt = randomBytes(16)
  const hash = await scryptAsync(secret, salt, KEY_LEN, { N, r: R, p: P, maxmem: 64 * 1024 * 1024 })
  return ['scrypt', N, R, P, salt.toString('base64url'), hash.toString('base64url')].join('$')
}

export function hashPassword(password: string): Promise<string> {
  return hashSecret(password, PASSWORD_N)
}

/** Constant-time check of a secret against its stored hash; false for anything malformed. */
export async function verifySecret(secret: string, stored: string): Promise<boolean> {
  const parts = stored.split('$')
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false
  const [, n, r, p, saltB64, hashB64] = parts as [string, string, string, string, string, string]
  const expected = Buffer.from(hashB64, 'base64url')
  const actual = await scryptAsync(secret, Buffer.from(saltB64, 'base64url'), expected.length, {
    N: Number(n),
    r: Number(r),
    p: Number(p),
    maxmem: 64 * 1024 * 1024,
  })
  return actual.length === expected.length && timingSafeEqual(actual, expected)
}
