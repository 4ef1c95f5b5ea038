// http_ece (dev dependency, used by the fake push service to decrypt RFC 8291 payloads) ships
// no types. Only the parts the fakes use are declared.
declare module 'http_ece' {
  import type { ECDH } from 'node:crypto'

  export interface EceParams {
    version?: 'aes128gcm' | 'aesgcm' | 'aesgcm128'
    /** The receiver's ECDH key (the subscription's private key). */
    privateKey?: ECDH
    /** The subscription's 16-byte auth secret, raw or base64url. */
    authSecret?: Buffer | string
    /** The sender's public key; aes128gcm carries it in the record header instead. */
    dh?: Buffer | string
    keyid?: string
    salt?: Buffer | string
    rs?: number
  }

  export function decrypt(buffer: Buffer, params: EceParams): Buffer
  export function encrypt(buffer: Buffer, params: EceParams): Buffer

  const ece: { decrypt: typeof decrypt; encrypt: typeof encrypt }
  export default ece
}
