import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/** One registry per gateway (two gateways in one process keep separate figures). */
export function createMetrics() {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'rpm_' })
  return {
    registry,
    connections: new Gauge({ name: 'rpm_mqtt_connections', help: 'Open MQTT connections (authenticated devices)', registers: [registry] }),
    connectRefused: new Counter({
      name: 'rpm_mqtt_connect_refused_total',
      help: 'Connections refused, by reason',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    aclDenied: new Counter({
      name: 'rpm_mqtt_acl_denied_total',
      help: 'Publishes and subscriptions refused by the topic ACL',
      labelNames: ['action'] as const,
      registers: [registry],
    }),
    wsConnections: new Gauge({ name: 'rpm_ws_connections', help: 'Open WebSockets at /api/v1/ws (signed in or not yet)', registers: [registry] }),
    wsClosed: new Counter({
      name: 'rpm_ws_closed_total',
      help: 'WebSockets at /api/v1/ws closed by the gateway, by reason',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    packetsTooLarge: new Counter({ name: 'rpm_mqtt_packets_too_large_total', help: 'Connections closed for an oversized packet', registers: [registry] }),
    readingsAccepted: new Counter({
      name: 'rpm_readings_accepted_total',
      help: 'Readings committed to the journal, by type',
      labelNames: ['type'] as const,
      registers: [registry],
    }),
    readingsDuplicate: new Counter({ name: 'rpm_readings_duplicate_total', help: 'Redelivered readings already in the journal', registers: [registry] }),
    readingsQuarantined: new Counter({
      name: 'rpm_readings_quarantined_total',
      help: 'Readings or payloads set aside, by reading type and error code',
      labelNames: ['type', 'code'] as const,
      registers: [registry],
    }),
    pubackLatency: new Histogram({
      name: 'rpm_puback_latency_seconds',
      help: 'From PUBLISH received to PUBACK released (journal committed)',
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
    commitSize: new Histogram({
      name: 'rpm_journal_commit_readings',
      help: 'Readings and quarantine records written per journal commit',
      buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000],
      registers: [registry],
    }),
    commitDuration: new Histogram({
      name: 'rpm_journal_commit_seconds',
      help: 'Time to write and sync one journal commit',
      buckets: [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1],
      registers: [registry],
    }),
    commitFailures: new Counter({ name: 'rpm_journal_commit_failures_total', help: 'Journal commits that failed (nothing acknowledged)', registers: [registry] }),
    alertChanges: new Counter({
      name: 'rpm_alert_changes_total',
      help: 'Changes to alerts, by change (raised, repeated, severity_raised, acknowledged, snoozed, escalated, resolved) and severity',
      labelNames: ['change', 'severity'] as const,
      registers: [registry],
    }),
    alertsUnresolved: new Gauge({ name: 'rpm_alerts_unresolved', help: 'Alerts open or acknowledged', registers: [registry] }),
    rulesReloads: new Counter({
      name: 'rpm_rules_reloads_total',
      help: 'Changes to the rule files, applied or refused',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    timeseriesBacklog: new Gauge({ name: 'rpm_timeseries_backlog_readings', help: 'Readings in the journal not yet confirmed by InfluxDB', registers: [registry] }),
    timeseriesOldestPending: new Gauge({ name: 'rpm_timeseries_oldest_pending_seconds', help: 'Age of the oldest reading not yet confirmed by InfluxDB (0 when none)', registers: [registry] }),
    timeseriesPointsWritten: new Counter({ name: 'rpm_timeseries_points_written_total', help: 'Points InfluxDB confirmed', registers: [registry] }),
    timeseriesPointsRejected: new Counter({ name: 'rpm_timeseries_points_rejected_total', help: 'Points InfluxDB refused as invalid, set aside with the reason', registers: [registry] }),
    timeseriesBatchesFailed: new Counter({
      name: 'rpm_timeseries_batches_failed_total',
      help: 'Write requests that failed, by reason: unavailable (retried) or rejected (split, then set aside)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    rulesEvaluationFailures: new Counter({
      name: 'rpm_rules_evaluation_failures_total',
      help: 'Patients whose readings could not be evaluated in a journal commit (the readings are stored; their alerts were not raised)',
      registers: [registry],
    }),
    rulesRefused: new Gauge({ name: 'rpm_rules_change_refused', help: '1 while the rule files on disk hold a refused change (the previous rules are in force)', registers: [registry] }),
    notificationsSent: new Counter({ name: 'rpm_notifications_sent_total', help: 'Notifications the push service or Twilio accepted, by channel', labelNames: ['channel'] as const, registers: [registry] }),
    notificationsRetried: new Counter({
      name: 'rpm_notifications_retried_total',
      help: 'Sends that failed for now and will be tried again, by channel and reason',
      labelNames: ['channel', 'reason'] as const,
      registers: [registry],
    }),
    notificationsFailed: new Counter({
      name: 'rpm_notifications_failed_total',
      help: 'Notifications given up: refused for good, or still failing after notify.maxAttempts, by channel and reason',
      labelNames: ['channel', 'reason'] as const,
      registers: [registry],
    }),
    notificationsDropped: new Counter({
      name: 'rpm_notifications_dropped_total',
      help: 'Notifications not sent because there was no longer cause (read, acknowledged, endpoint gone, opted out, expired, preference), by channel and reason',
      labelNames: ['channel', 'reason'] as const,
      registers: [registry],
    }),
    notificationsPending: new Gauge({ name: 'rpm_notifications_pending', help: 'Notifications waiting to be sent (retries and quiet hours included), by channel', labelNames: ['channel'] as const, registers: [registry] }),
    notificationSendSeconds: new Histogram({
      name: 'rpm_notification_send_seconds',
      help: 'Time for one send to be answered by the push service or Twilio',
      labelNames: ['channel'] as const,
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    smsDeliveryStatus: new Counter({ name: 'rpm_sms_delivery_status_total', help: 'SMS delivery status callbacks from Twilio, by status', labelNames: ['status'] as const, registers: [registry] }),
  }
}

export type Metrics = ReturnType<typeof createMetrics>
