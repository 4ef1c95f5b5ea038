import pino, { type DestinationStream, type Logger } from 'pino'

/**
 * Logs carry ids only. Redaction is the safety net for anything that slips through: secrets,
 * tokens, names, message text, contact details, payloads.
 */
export const REDACT_PATHS = [
  'password', '*.password', 'secret', '*.secret', 'token', '*.token', 'accessToken', 'refreshToken',
  'name', '*.name', 'text', '*.text', 'phone', '*.phone', 'email', '*.email', 'payload', '*.payload',
  'req.headers.authorization', 'req.headers.cookie',
]

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino({ level, redact: { paths: REDACT_PATHS, censor: '[redacted]' }, base: { service: 'rpm-gateway' } }, destination)
}
