import 'reflect-metadata' // @peculiar/x509 needs it loaded first
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { X509Certificate as NodeX509, webcrypto } from 'node:crypto'
import os from 'node:os'
import path from 'node:path'
import * as x509 from '@peculiar/x509'

x509.cryptoProvider.set(webcrypto as never)

type CryptoKey = webcrypto.CryptoKey
type CryptoKeyPair = webcrypto.CryptoKeyPair

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const
const DAY = 86_400_000

export interface TlsFiles {
  caCertPath: string
  caKeyPath: string
  certPath: string
  keyPath: string
}

export interface TlsMaterial {
  ca: string
  cert: string
  key: string
}

export function pkiFiles(dataDir: string): TlsFiles {
  const dir = path.join(dataDir, 'tls')
  return {
    caCertPath: path.join(dir, 'ca.pem'),
    caKeyPath: path.join(dir, 'ca-key.pem'),
    certPath: path.join(dir, 'server.pem'),
    keyPath: path.join(dir, 'server-key.pem'),
  }
}

/** Names the development server certificate covers: loopback, this host, and configured names. */
export function serverNames(extra: readonly string[] = []): string[] {
  return [...new Set(['localhost', '127.0.0.1', '::1', os.hostname(), ...extra])]
}

function toPem(der: ArrayBuffer, label: string): string {
  const b64 = Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n')
  return `-----BEGIN ${label}-----\n${b64}${b64.endsWith('\n') ? '' : '\n'}-----END ${label}-----\n`
}

async function exportKey(key: CryptoKey): Promise<string> {
  return toPem(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY')
}

async function importKey(pem: string): Promise<CryptoKey> {
  const der = Buffer.from(pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64')
  return webcrypto.subtle.importKey('pkcs8', der, ALG, false, ['sign'])
}

async function generateKeys(): Promise<CryptoKeyPair> {
  return webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])
}

function serial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16))
  bytes[0]! &= 0x7f // positive
  return Buffer.from(bytes).toString('hex')
}

const isIp = (name: string) => /^[\d.]+$/.test(name) || name.includes(':')

function writePrivate(file: string, pem: string): void {
  writeFileSync(file, pem, { mode: 0o600 })
}

/** Does the certificate at `certPath` cover every name and stay valid for 30 more days? */
function serverCertCovers(certPath: string, names: readonly string[], now: number): boolean {
  try {
    const cert = new NodeX509(readFileSync(certPath))
    if (Date.parse(cert.validTo) - now < 30 * DAY) return false
    return names.every((n) => (isIp(n) ? cert.checkIP(n) !== undefined : cert.checkHost(n) !== undefined))
  } catch {
    return false
  }
}

/**
 * The development PKI under `<dataDir>/tls`: an ECDSA P-256 CA and a server certificate signed
 * by it, created on first start and reused afterwards. The server certificate is reissued when
 * a configured name is missing from it or it nears expiry; the CA (which devices trust) is kept.
 */
export async function ensureDevelopmentPki(
  dataDir: string,
  names: readonly string[],
  now = Date.now(),
): Promise<TlsFiles & { created: string[] }> {
  const files = pkiFiles(dataDir)
  mkdirSync(path.dirname(files.caCertPath), { recursive: true, mode: 0o700 })
  const created: string[] = []

  if (!existsSync(files.caCertPath) || !existsSync(files.caKeyPath)) {
    const keys = await generateKeys()
    const ca = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serial(),
      name: 'CN=rpm-gateway development CA, O=rpm-gateway',
      notBefore: new Date(now - DAY),
      notAfter: new Date(now + 10 * 365 * DAY),
      signingAlgorithm: ALG,
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    })
    writePrivate(files.caKeyPath, await exportKey(keys.privateKey))
    writeFileSync(files.caCertPath, ca.toString('pem') + '\n')
    created.push(files.caCertPath)
  }

  if (created.length > 0 || !existsSync(files.keyPath) || !serverCertCovers(files.certPath, names, now)) {
    const { cert, key } = await issueCertificate({
      caCertPem: readFileSync(files.caCertPath, 'utf8'),
      caKeyPem: readFileSync(files.caKeyPath, 'utf8'),
      commonName: names[0] ?? 'localhost',
      server: names,
      validDays: 825,
      now,
    })
    writePrivate(files.keyPath, key)
    writeFileSync(files.certPath, cert)
    created.push(files.certPath)
  }
  return { ...files, created }
}

/**
 * Issues a certificate from the CA: a server certificate when `server` lists names, else a
 * client certificate whose CN is the device id.
 */
export async function issueCertificate(opts: {
  caCertPem: string
  caKeyPem: string
  commonName: string
  server?: readonly string[]
  validDays: number
  now?: number
}): Promise<{ cert: string; key: string }> {
  const now = opts.now ?? Date.now()
  const ca = new x509.X509Certificate(opts.caCertPem)
  const caKey = await importKey(opts.caKeyPem)
  const keys = await generateKeys()
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
    new x509.ExtendedKeyUsageExtension([opts.server ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth]),
    await x509.AuthorityKeyIdentifierExtension.create(ca),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ]
  if (opts.server) {
    extensions.push(
      new x509.SubjectAlternativeNameExtension(opts.server.map((n) => ({ type: isIp(n) ? 'ip' : 'dns', value: n }))),
    )
  }
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${opts.commonName.replace(/[,=+<>#;\\"]/g, '')}`,
    issuer: ca.subject,
    notBefore: new Date(now - 5 * 60_000),
    notAfter: new Date(now + opts.validDays * DAY),
    signingAlgorithm: ALG,
    publicKey: keys.publicKey,
    signingKey: caKey,
    extensions,
  })
  return { cert: cert.toString('pem') + '\n', key: await exportKey(keys.privateKey) }
}

/** Loads the TLS material from configured files, else from the development PKI. */
export function readTlsMaterial(paths: { cert: string; key: string; ca: string }): TlsMaterial {
  return { cert: readFileSync(paths.cert, 'utf8'), key: readFileSync(paths.key, 'utf8'), ca: readFileSync(paths.ca, 'utf8') }
}
