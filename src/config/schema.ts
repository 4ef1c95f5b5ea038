import type { DeviceKind } from '../store/schema.ts'

export interface GatewayConfig {
  /** Where the database, keys and generated certificates live. */
  dataDir: string
  log: { level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent' }
  http: {
    host: string
    port: number
    /** Serve MQTT over WebSocket at /mqtt on the HTTP server. */
    mqttWebSocket: boolean
  }
  mqtt: {
    host: string
    port: number
    /** PEM files; when all are empty the gateway uses its generated development CA. */
    tls: { cert: string; key: string; ca: string }
    /** Extra DNS names or IP addresses for the generated development server certificate. */
    serverNames: string[]
    /** Plain TCP (no TLS) listener: -1 (the default) disables it; 0 picks a free port. Bound to tcpHost, loopback by default. */
    tcpPort: number
    tcpHost: string
    maxPacketBytes: number
    maxConnections: number
    /** New connections accepted per address per minute (token bucket). */
    connectRatePerMinute: number
    /** Failed logins from one address before each further attempt is delayed. */
    authFailuresBeforeDelay: number
    authFailureDelayMs: number
  }
  auth: {
    /** File holding the key that signs access tokens; generated into the data directory when empty. */
    tokenKeyFile: string
    accessTokenTtlSeconds: number
    /** A session (sign-in) ends after this long whatever happens. */
    sessionTtlSeconds: number
    /** Automatic logoff: a session with no activity for this long ends. */
    idleTimeoutSeconds: number
    /** Failed sign-ins before an account is locked for lockoutSeconds. */
    maxFailedLogins: number
    lockoutSeconds: number
    /** Break-glass access for admins: the longest grant. */
    breakGlassMaxMinutes: number
  }
  ingest: {
    maxBatchSize: number
    /** Readings measured further than this in the future are quarantined (device clock skew). */
    maxFutureSkewSeconds: number
    /** Readings older than this are quarantined. */
    maxAgeDays: number
    /** How long a commit waits to gather readings from many devices into one disk sync. */
    commitIntervalMs: number
    /** A commit starts at once when this many readings are waiting. */
    commitMaxReadings: number
  }
  threads: {
    /** Device kinds whose readings are posted to the patient's thread as structured messages. */
    readingKinds: DeviceKind[]
  }
  /** The live WebSocket at /api/v1/ws. */
  websocket: {
    /** Largest client frame; a larger one closes the socket (1009). */
    maxMessageBytes: number
    /** Client events per second per socket (token bucket; bursts up to twice this). */
    messagesPerSecond: number
    /** Outgoing bytes queued for one socket before it is closed as a slow consumer (1013). */
    maxBufferedBytes: number
    /** Protocol pings to each socket; one left unanswered until the next closes it. */
    heartbeatSeconds: number
    /** How often an open socket's session is checked again (revoked, idle, ended). */
    sessionCheckSeconds: number
    /** The first message must authenticate within this long. */
    authTimeoutSeconds: number
    /** Presence turns from online to away after this long without client activity. */
    awaySeconds: number
    /** Messages replayed per thread for one subscribe; the rest comes with the next subscribe. */
    maxReplayMessages: number
  }
}

const str = { type: 'string' } as const

// Nested defaults ({}) are filled in by ajv, which the typed schema form cannot express.
export const configSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['dataDir', 'log', 'http', 'mqtt', 'auth', 'ingest', 'threads', 'websocket'],
  properties: {
    dataDir: { type: 'string', minLength: 1, default: './data' },
    log: {
      type: 'object',
      additionalProperties: false,
      required: ['level'],
      default: {},
      properties: {
        level: { type: 'string', enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' },
      },
    },
    http: {
      type: 'object',
      additionalProperties: false,
      required: ['host', 'port', 'mqttWebSocket'],
      default: {},
      properties: {
        host: { ...str, minLength: 1, default: '127.0.0.1' },
        port: { type: 'integer', minimum: 0, maximum: 65535, default: 8080 },
        mqttWebSocket: { type: 'boolean', default: true },
      },
    },
    mqtt: {
      type: 'object',
      additionalProperties: false,
      required: [
        'host', 'port', 'tls', 'serverNames', 'tcpPort', 'tcpHost', 'maxPacketBytes', 'maxConnections',
        'connectRatePerMinute', 'authFailuresBeforeDelay', 'authFailureDelayMs',
      ],
      default: {},
      properties: {
        host: { ...str, minLength: 1, default: '0.0.0.0' },
        port: { type: 'integer', minimum: 0, maximum: 65535, default: 8883 },
        tls: {
          type: 'object',
          additionalProperties: false,
          required: ['cert', 'key', 'ca'],
          default: {},
          properties: {
            cert: { ...str, default: '' },
            key: { ...str, default: '' },
            ca: { ...str, default: '' },
          },
        },
        serverNames: { type: 'array', items: { type: 'string', minLength: 1 }, default: [] },
        tcpPort: { type: 'integer', minimum: -1, maximum: 65535, default: -1 },
        tcpHost: { ...str, minLength: 1, default: '127.0.0.1' },
        maxPacketBytes: { type: 'integer', minimum: 1024, maximum: 268435455, default: 65536 },
        maxConnections: { type: 'integer', minimum: 1, default: 20000 },
        connectRatePerMinute: { type: 'integer', minimum: 1, default: 600 },
        authFailuresBeforeDelay: { type: 'integer', minimum: 0, default: 5 },
        authFailureDelayMs: { type: 'integer', minimum: 0, maximum: 60000, default: 1000 },
      },
    },
    auth: {
      type: 'object',
      additionalProperties: false,
      required: ['tokenKeyFile', 'accessTokenTtlSeconds', 'sessionTtlSeconds', 'idleTimeoutSeconds', 'maxFailedLogins', 'lockoutSeconds', 'breakGlassMaxMinutes'],
      default: {},
      properties: {
        tokenKeyFile: { ...str, default: '' },
        accessTokenTtlSeconds: { type: 'integer', minimum: 30, maximum: 3600, default: 900 },
        sessionTtlSeconds: { type: 'integer', minimum: 300, default: 43200 },
        idleTimeoutSeconds: { type: 'integer', minimum: 60, default: 900 },
        maxFailedLogins: { type: 'integer', minimum: 1, default: 5 },
        lockoutSeconds: { type: 'integer', minimum: 1, default: 900 },
        breakGlassMaxMinutes: { type: 'integer', minimum: 1, maximum: 1440, default: 60 },
      },
    },
    ingest: {
      type: 'object',
      additionalProperties: false,
      required: ['maxBatchSize', 'maxFutureSkewSeconds', 'maxAgeDays', 'commitIntervalMs', 'commitMaxReadings'],
      default: {},
      properties: {
        // 200 readings of ~140 bytes fit well inside the default 64 KiB packet limit.
        maxBatchSize: { type: 'integer', minimum: 1, maximum: 10000, default: 200 },
        maxFutureSkewSeconds: { type: 'integer', minimum: 0, default: 300 },
        maxAgeDays: { type: 'integer', minimum: 1, default: 365 },
        commitIntervalMs: { type: 'integer', minimum: 0, maximum: 1000, default: 2 },
        commitMaxReadings: { type: 'integer', minimum: 1, default: 2000 },
      },
    },
    threads: {
      type: 'object',
      additionalProperties: false,
      required: ['readingKinds'],
      default: {},
      properties: {
        // Spot-check devices: one measurement at a time, worth a line in the conversation.
        readingKinds: {
          type: 'array',
          uniqueItems: true,
          items: { type: 'string', enum: ['bp_cuff', 'glucometer', 'oximeter', 'scale', 'thermometer', 'hub'] },
          default: ['bp_cuff', 'glucometer', 'oximeter', 'scale', 'thermometer'],
        },
      },
    },
    websocket: {
      type: 'object',
      additionalProperties: false,
      required: ['maxMessageBytes', 'messagesPerSecond', 'maxBufferedBytes', 'heartbeatSeconds', 'sessionCheckSeconds', 'authTimeoutSeconds', 'awaySeconds', 'maxReplayMessages'],
      default: {},
      properties: {
        // A 4000-character message in UTF-8 with its JSON envelope fits in 16 KiB.
        maxMessageBytes: { type: 'integer', minimum: 1024, maximum: 1048576, default: 16384 },
        messagesPerSecond: { type: 'integer', minimum: 1, default: 20 },
        maxBufferedBytes: { type: 'integer', minimum: 65536, default: 1048576 },
        heartbeatSeconds: { type: 'integer', minimum: 1, maximum: 300, default: 25 },
        sessionCheckSeconds: { type: 'integer', minimum: 1, maximum: 300, default: 30 },
        authTimeoutSeconds: { type: 'integer', minimum: 1, maximum: 60, default: 10 },
        awaySeconds: { type: 'integer', minimum: 10, default: 300 },
        maxReplayMessages: { type: 'integer', minimum: 1, maximum: 5000, default: 500 },
      },
    },
  },
} as const
