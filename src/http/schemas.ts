/** JSON schemas shared by the routes; they also make the OpenAPI document at /docs. */
export const errorSchema = {
  type: 'object',
  required: ['code', 'message'],
  properties: {
    code: { type: 'string', description: 'An RPM_ERR_* code' },
    message: { type: 'string' },
    details: { type: 'object', additionalProperties: true },
  },
} as const

export const errorResponses = {
  400: errorSchema,
  401: errorSchema,
  403: errorSchema,
  404: errorSchema,
  409: errorSchema,
  413: errorSchema,
  423: errorSchema,
  429: errorSchema,
} as const

/** Route security for the OpenAPI document: a bearer access token. */
export const bearer = [{ bearerAuth: [] as string[] }]

export const idPattern = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'

export const userSchema = {
  type: 'object',
  required: ['id', 'username', 'role', 'name', 'patientId', 'status', 'createdAt'],
  properties: {
    id: { type: 'string' },
    username: { type: 'string' },
    role: { type: 'string', enum: ['patient', 'provider', 'admin'] },
    name: { type: 'string' },
    patientId: { type: ['string', 'null'] },
    status: { type: 'string', enum: ['active', 'disabled'] },
    createdAt: { type: 'string', format: 'date-time' },
  },
} as const

export const tokenSchema = {
  type: 'object',
  required: ['accessToken', 'refreshToken', 'expiresIn', 'tokenType'],
  properties: {
    accessToken: { type: 'string' },
    refreshToken: { type: 'string' },
    expiresIn: { type: 'integer', description: 'Seconds until the access token expires' },
    tokenType: { type: 'string', enum: ['Bearer'] },
  },
} as const

export const patientSchema = {
  type: 'object',
  required: ['id', 'name', 'timezone', 'createdAt'],
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    timezone: { type: 'string' },
    createdAt: { type: 'string', format: 'date-time' },
  },
} as const

export const deviceSchema = {
  type: 'object',
  required: ['id', 'patientId', 'kind', 'status', 'online'],
  properties: {
    id: { type: 'string' },
    patientId: { type: 'string' },
    kind: { type: 'string' },
    status: { type: 'string', enum: ['active', 'disabled'] },
    online: { type: 'boolean' },
    lastSeenAt: { type: ['string', 'null'] },
    lastConnectedAt: { type: ['string', 'null'] },
    createdAt: { type: 'string' },
    disabledAt: { type: ['string', 'null'] },
    secret: { type: 'string', description: 'Only in the response that provisions the device; never shown again' },
  },
} as const

export const readingSchema = {
  type: 'object',
  required: ['id', 'deviceId', 'patientId', 'type', 'measuredAt', 'receivedAt', 'values', 'original'],
  properties: {
    id: { type: 'integer' },
    deviceId: { type: 'string' },
    patientId: { type: 'string' },
    type: { type: 'string' },
    seq: { type: ['integer', 'null'] },
    measuredAt: { type: 'string' },
    receivedAt: { type: 'string' },
    values: { type: 'object', additionalProperties: true, description: 'Canonical units: mmHg, mg/dL, %, bpm, kg, °C' },
    original: { type: 'object', additionalProperties: true, description: 'The reading as the device sent it' },
  },
} as const

export const auditEntrySchema = {
  type: 'object',
  properties: {
    id: { type: 'integer' },
    at: { type: 'string' },
    actorType: { type: 'string' },
    actorId: { type: 'string' },
    action: { type: 'string' },
    target: { type: ['string', 'null'] },
    outcome: { type: 'string' },
    address: { type: ['string', 'null'] },
    details: { type: ['object', 'null'], additionalProperties: true },
  },
} as const
