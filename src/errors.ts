/**
 * Every error the gateway reports, made once. `status` is the HTTP status; `connack` is the
 * MQTT 3.1.1 CONNACK return code for refusals at CONNECT; `device` marks codes a device may
 * receive on `devices/{id}/errors` for a quarantined reading.
 */
export interface ErrorDefinition {
  readonly status: number
  readonly summary: string
  readonly connack?: 1 | 2 | 3 | 4 | 5
  readonly device?: true
}

export const ERRORS = {
  RPM_ERR_CONFIG_INVALID: { status: 500, summary: 'The configuration is invalid' },
  RPM_ERR_BAD_REQUEST: { status: 400, summary: 'The request is malformed' },
  RPM_ERR_NOT_FOUND: { status: 404, summary: 'No such record' },
  RPM_ERR_CONFLICT: { status: 409, summary: 'The record already exists' },
  RPM_ERR_INTERNAL: { status: 500, summary: 'Internal error' },
  RPM_ERR_UNAVAILABLE: { status: 503, summary: 'A required service is unavailable' },
  RPM_ERR_PAYLOAD_TOO_LARGE: { status: 413, summary: 'The request body is too large' },

  // People: sign-in, tokens, access.
  RPM_ERR_UNAUTHENTICATED: { status: 401, summary: 'Sign in first: the access token is missing, expired or revoked' },
  RPM_ERR_BAD_CREDENTIALS: { status: 401, summary: 'Wrong username or password' },
  RPM_ERR_ACCOUNT_LOCKED: { status: 423, summary: 'Too many failed sign-ins: the account is locked for a while' },
  RPM_ERR_SESSION_ENDED: { status: 401, summary: 'The session has ended: sign in again' },
  RPM_ERR_FORBIDDEN: { status: 403, summary: 'Your role may not do this' },
  // A callback that says it comes from a provider (Twilio) but is not signed with its key.
  RPM_ERR_WEBHOOK_SIGNATURE: { status: 403, summary: 'The webhook signature is missing or does not match' },
  RPM_ERR_TOO_FREQUENT: { status: 429, summary: 'Asked for too often: wait and try again' },
  // The channel is not configured on this gateway (no credentials for it).
  RPM_ERR_CHANNEL_OFF: { status: 409, summary: 'This notification channel is not configured' },

  // Refusals at MQTT CONNECT ([MQTT-3.2.2-3] return codes).
  RPM_ERR_DEVICE_AUTH: { status: 401, summary: 'Bad device credentials', connack: 4 },
  RPM_ERR_DEVICE_UNKNOWN: { status: 403, summary: 'Unknown device', connack: 5 },
  RPM_ERR_DEVICE_DISABLED: { status: 403, summary: 'The device is disabled', connack: 5 },
  RPM_ERR_CLIENT_ID_MISMATCH: { status: 403, summary: 'The MQTT client id must equal the device id', connack: 2 },
  // Refused before the TLS handshake (the socket is closed; no CONNACK is spent on a flood).
  RPM_ERR_RATE_LIMITED: { status: 429, summary: 'Too many new connections from this address' },
  RPM_ERR_TOO_MANY_CONNECTIONS: { status: 503, summary: 'The connection limit is reached' },

  // Refusals after CONNECT: the connection is closed.
  RPM_ERR_TOPIC_FORBIDDEN: { status: 403, summary: 'The device may not use this topic' },
  RPM_ERR_PACKET_TOO_LARGE: { status: 413, summary: 'The MQTT packet exceeds the size limit' },
  RPM_ERR_JOURNAL_UNAVAILABLE: { status: 503, summary: 'Readings cannot be stored right now' },

  // Quarantine reasons, sent to the device on devices/{id}/errors.
  RPM_ERR_PAYLOAD_JSON: { status: 400, summary: 'The payload is not valid JSON', device: true },
  RPM_ERR_PAYLOAD_SHAPE: { status: 400, summary: 'The payload must be a reading object or an array of them', device: true },
  RPM_ERR_BATCH_TOO_LARGE: { status: 413, summary: 'The batch holds more readings than allowed', device: true },
  RPM_ERR_READING_TYPE: { status: 400, summary: 'Unknown reading type', device: true },
  RPM_ERR_READING_INVALID: { status: 400, summary: 'A field is missing or has the wrong type', device: true },
  RPM_ERR_READING_UNIT: { status: 400, summary: 'Unsupported unit for this reading type', device: true },
  RPM_ERR_READING_IMPLAUSIBLE: { status: 422, summary: 'The value is outside physiological plausibility', device: true },
  RPM_ERR_READING_TIME: { status: 422, summary: 'measuredAt is too far in the future or too old', device: true },
  // Answers to devices/{id}/events payloads the gateway cannot use.
  RPM_ERR_EVENT_INVALID: { status: 400, summary: 'The event is not one this device may send, or a field is missing or wrong', device: true },
} as const satisfies Record<string, ErrorDefinition>

export type ErrorCode = keyof typeof ERRORS

export class RpmError extends Error {
  readonly code: ErrorCode
  readonly status: number
  readonly details: unknown

  constructor(code: ErrorCode, message?: string, options?: { details?: unknown; cause?: unknown }) {
    super(message ?? ERRORS[code].summary, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'RpmError'
    this.code = code
    this.status = ERRORS[code].status
    this.details = options?.details
  }

  toJSON(): { code: ErrorCode; message: string; details?: unknown } {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details }
  }
}

export function isRpmError(err: unknown): err is RpmError {
  return err instanceof RpmError
}
