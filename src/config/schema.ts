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
    /** A built web console to serve at `/`; empty: the one built into web/dist (npm run build:web). */
    webRoot: string
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
  rules: {
    /** Directory of rule files (*.yaml); empty means the rules/ folder shipped with the gateway. */
    dir: string
    /** Watch the directory and apply valid changes without a restart. */
    watch: boolean
    /** How often missing-data and device-offline rules are checked. */
    checkIntervalSeconds: number
  }
  alerts: {
    /** How often due escalations and snooze ends are looked for. */
    tickMs: number
    /** The longest snooze per severity, in minutes. */
    maxSnoozeMinutes: Record<'info' | 'warning' | 'urgent' | 'critical', number>
    /**
     * Escalation per severity while an alert is unacknowledged: `tierMinutes` are the minutes
     * after it opened at which it reaches the on-call provider (tier 1), then admins (tier 2);
     * `repeatMinutes` repeats it to every tier reached until someone acknowledges (0: no repeats).
     */
    escalation: Record<'info' | 'warning' | 'urgent' | 'critical', { tierMinutes: number[]; repeatMinutes: number }>
  }
  /** InfluxDB 2.x (or anything that speaks its /api/v2/write): off while url is empty. */
  influx: {
    url: string
    token: string
    org: string
    bucket: string
    /** Points per write request. */
    batchSize: number
    /** How long the writer waits for more readings before sending a partial batch. */
    flushIntervalMs: number
    /** A write request that takes longer is abandoned and retried. */
    timeoutMs: number
    /** Longest wait between retries while InfluxDB is down (the wait doubles from 1 s up to this). */
    maxRetryDelayMs: number
    /** /readyz says degraded when the oldest reading not yet written is older than this. */
    degradedAfterSeconds: number
  }
  reminders: {
    /** When the reminder clock runs (node-cron syntax; six fields for seconds). */
    cron: string
    /** A dose not confirmed this long after it was due counts as missed. */
    graceMinutes: number
    /** A confirmation this long before a dose is due counts for that dose. */
    earlyMinutes: number
  }
  /** Push (Web Push, FCM) and SMS (Twilio). Notifications carry no patient data. */
  notify: {
    /** Extra CA certificates (a PEM file) trusted for push services and Twilio: a TLS-inspecting egress proxy, a local test double. */
    caFile: string
    /** How often due notifications are looked for (a new one is sent at once). */
    tickMs: number
    /** A new message waits this long for a connected recipient to read it before it is pushed. */
    messageDelaySeconds: number
    /** Sends tried before a notification is given up and reported. */
    maxAttempts: number
    /** The first retry waits this long, each further one twice as long, up to maxRetryDelayMs. */
    retryDelayMs: number
    maxRetryDelayMs: number
    /** A send that takes longer counts as a temporary failure. */
    timeoutMs: number
    /** Where the console is, for the link in an SMS (no patient data in it). Empty: no link. */
    consoleUrl: string
    /** Sent, failed and dropped notifications are deleted this long after they settled. */
    retentionDays: number
    webpush: {
      /** The VAPID subject push services may contact: a mailto: or https: URL. */
      subject: string
      /** Hosts a browser subscription may point at (a leading dot matches subdomains): the known push services. */
      allowedHosts: string[]
    }
    fcm: {
      /** A Firebase service-account JSON file; empty: FCM off. */
      serviceAccountFile: string
    }
    sms: {
      /** Twilio credentials and sender (a number in E.164 or a Messaging Service SID MG...); all three set: SMS on. */
      accountSid: string
      authToken: string
      from: string
      /** The gateway's public https URL as Twilio reaches it, for delivery-status and STOP callbacks. Empty: no callbacks. */
      publicUrl: string
      /** Another API origin for Twilio (a regional edge, an egress proxy, a local test double). */
      apiBaseUrl: string
      /** A send left without its outcome by a crash waits this long for Twilio's status callback before it is sent again. */
      inDoubtWaitSeconds: number
    }
  }
}

const str = { type: 'string' } as const

// Nested defaults ({}) are filled in by ajv, which the typed schema form cannot express.
export const configSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['dataDir', 'log', 'http', 'mqtt', 'auth', 'ingest', 'threads', 'websocket', 'rules', 'alerts', 'influx', 'reminders', 'notify'],
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
      required: ['host', 'port', 'mqttWebSocket', 'webRoot'],
      default: {},
      properties: {
        host: { ...str, minLength: 1, default: '127.0.0.1' },
        port: { type: 'integer', minimum: 0, maximum: 65535, default: 8080 },
        mqttWebSocket: { type: 'boolean', default: true },
        webRoot: { ...str, default: '' },
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
    rules: {
      type: 'object',
      additionalProperties: false,
      required: ['dir', 'watch', 'checkIntervalSeconds'],
      default: {},
      properties: {
        dir: { ...str, default: '' },
        watch: { type: 'boolean', default: true },
        checkIntervalSeconds: { type: 'integer', minimum: 1, maximum: 3600, default: 60 },
      },
    },
    alerts: {
      type: 'object',
      additionalProperties: false,
      required: ['tickMs', 'maxSnoozeMinutes', 'escalation'],
      default: {},
      properties: {
        tickMs: { type: 'integer', minimum: 10, maximum: 60000, default: 1000 },
        maxSnoozeMinutes: {
          type: 'object',
          additionalProperties: false,
          required: ['info', 'warning', 'urgent', 'critical'],
          default: {},
          properties: {
            info: { type: 'integer', minimum: 1, default: 1440 },
            warning: { type: 'integer', minimum: 1, default: 720 },
            urgent: { type: 'integer', minimum: 1, default: 120 },
            critical: { type: 'integer', minimum: 1, default: 30 },
          },
        },
        escalation: {
          type: 'object',
          additionalProperties: false,
          required: ['info', 'warning', 'urgent', 'critical'],
          default: {},
          properties: {
            info: {
              type: 'object',
              additionalProperties: false,
              required: ['tierMinutes', 'repeatMinutes'],
              default: {},
              properties: {
                tierMinutes: { type: 'array', maxItems: 2, items: { type: 'integer', minimum: 0 }, default: [] },
                repeatMinutes: { type: 'integer', minimum: 0, default: 0 },
              },
            },
            warning: {
              type: 'object',
              additionalProperties: false,
              required: ['tierMinutes', 'repeatMinutes'],
              default: {},
              properties: {
                tierMinutes: { type: 'array', maxItems: 2, items: { type: 'integer', minimum: 0 }, default: [240] },
                repeatMinutes: { type: 'integer', minimum: 0, default: 120 },
              },
            },
            urgent: {
              type: 'object',
              additionalProperties: false,
              required: ['tierMinutes', 'repeatMinutes'],
              default: {},
              properties: {
                tierMinutes: { type: 'array', maxItems: 2, items: { type: 'integer', minimum: 0 }, default: [15, 30] },
                repeatMinutes: { type: 'integer', minimum: 0, default: 10 },
              },
            },
            critical: {
              type: 'object',
              additionalProperties: false,
              required: ['tierMinutes', 'repeatMinutes'],
              default: {},
              properties: {
                tierMinutes: { type: 'array', maxItems: 2, items: { type: 'integer', minimum: 0 }, default: [5, 10] },
                repeatMinutes: { type: 'integer', minimum: 0, default: 5 },
              },
            },
          },
        },
      },
    },
    influx: {
      type: 'object',
      additionalProperties: false,
      required: ['url', 'token', 'org', 'bucket', 'batchSize', 'flushIntervalMs', 'timeoutMs', 'maxRetryDelayMs', 'degradedAfterSeconds'],
      default: {},
      properties: {
        url: { ...str, default: '', pattern: '^(https?://.+)?$' },
        token: { ...str, default: '' },
        org: { ...str, default: '' },
        bucket: { ...str, default: '' },
        batchSize: { type: 'integer', minimum: 1, maximum: 50000, default: 5000 },
        flushIntervalMs: { type: 'integer', minimum: 10, maximum: 60000, default: 1000 },
        timeoutMs: { type: 'integer', minimum: 100, maximum: 300000, default: 10000 },
        maxRetryDelayMs: { type: 'integer', minimum: 100, maximum: 600000, default: 30000 },
        degradedAfterSeconds: { type: 'integer', minimum: 1, default: 60 },
      },
    },
    reminders: {
      type: 'object',
      additionalProperties: false,
      required: ['cron', 'graceMinutes', 'earlyMinutes'],
      default: {},
      properties: {
        cron: { ...str, minLength: 9, default: '* * * * *' },
        graceMinutes: { type: 'integer', minimum: 1, maximum: 1440, default: 60 },
        earlyMinutes: { type: 'integer', minimum: 0, maximum: 720, default: 60 },
      },
    },
    notify: {
      type: 'object',
      additionalProperties: false,
      required: ['caFile', 'tickMs', 'messageDelaySeconds', 'maxAttempts', 'retryDelayMs', 'maxRetryDelayMs', 'timeoutMs', 'consoleUrl', 'retentionDays', 'webpush', 'fcm', 'sms'],
      default: {},
      properties: {
        caFile: { ...str, default: '' },
        tickMs: { type: 'integer', minimum: 10, maximum: 60000, default: 1000 },
        messageDelaySeconds: { type: 'integer', minimum: 0, maximum: 3600, default: 60 },
        maxAttempts: { type: 'integer', minimum: 1, maximum: 100, default: 8 },
        retryDelayMs: { type: 'integer', minimum: 10, maximum: 600000, default: 2000 },
        maxRetryDelayMs: { type: 'integer', minimum: 10, maximum: 3600000, default: 300000 },
        timeoutMs: { type: 'integer', minimum: 100, maximum: 300000, default: 15000 },
        consoleUrl: { ...str, default: '', pattern: '^(https?://.+)?$' },
        retentionDays: { type: 'integer', minimum: 1, maximum: 3650, default: 90 },
        webpush: {
          type: 'object',
          additionalProperties: false,
          required: ['subject', 'allowedHosts'],
          default: {},
          properties: {
            subject: { ...str, default: 'mailto:admin@example.org', pattern: '^(mailto:.+@.+|https://.+)$' },
            allowedHosts: {
              type: 'array',
              items: { ...str, minLength: 1 },
              // Chrome/Edge (FCM), Firefox (Mozilla autopush), Windows (WNS), Safari (Apple).
              default: ['fcm.googleapis.com', '.push.services.mozilla.com', '.notify.windows.com', '.push.apple.com'],
            },
          },
        },
        fcm: {
          type: 'object',
          additionalProperties: false,
          required: ['serviceAccountFile'],
          default: {},
          properties: {
            serviceAccountFile: { ...str, default: '' },
          },
        },
        sms: {
          type: 'object',
          additionalProperties: false,
          required: ['accountSid', 'authToken', 'from', 'publicUrl', 'apiBaseUrl', 'inDoubtWaitSeconds'],
          default: {},
          properties: {
            accountSid: { ...str, default: '', pattern: '^(AC[0-9a-fA-F]{32})?$' },
            authToken: { ...str, default: '' },
            from: { ...str, default: '', pattern: '^(\\+[1-9][0-9]{6,14}|MG[0-9a-fA-F]{32})?$' },
            publicUrl: { ...str, default: '', pattern: '^(https?://[^?#]+)?$' },
            apiBaseUrl: { ...str, default: '', pattern: '^(https?://[^/?#]+)?$' },
            inDoubtWaitSeconds: { type: 'integer', minimum: 0, maximum: 3600, default: 120 },
          },
        },
      },
    },
  },
} as const
