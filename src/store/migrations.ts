import { type Kysely, type Migration, type MigrationProvider, sql } from 'kysely'

/**
 * Schema migrations, in order. Written with the query builder so they run on SQLite and on
 * PostgreSQL alike; never edit a released migration, add a new one.
 */
const migrations: Record<string, Migration> = {
  '0001-core': {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('patients')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('timezone', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute()

      await db.schema
        .createTable('devices')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('patient_id', 'text', (c) => c.notNull().references('patients.id'))
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('secret_hash', 'text')
        .addColumn('status', 'text', (c) => c.notNull().defaultTo('active'))
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('disabled_at', 'text')
        .addColumn('online', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('last_seen_at', 'text')
        .addColumn('last_connected_at', 'text')
        .execute()
      await db.schema.createIndex('devices_patient').on('devices').column('patient_id').execute()

      await db.schema
        .createTable('readings')
        .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
        .addColumn('device_id', 'text', (c) => c.notNull())
        .addColumn('patient_id', 'text', (c) => c.notNull())
        .addColumn('type', 'text', (c) => c.notNull())
        .addColumn('seq', 'integer')
        .addColumn('measured_at', 'text', (c) => c.notNull())
        .addColumn('received_at', 'text', (c) => c.notNull())
        .addColumn('values_json', 'text', (c) => c.notNull())
        .addColumn('original_json', 'text', (c) => c.notNull())
        .addColumn('dedupe_key', 'text', (c) => c.notNull().unique())
        .execute()
      await db.schema
        .createIndex('readings_patient_type_time')
        .on('readings')
        .columns(['patient_id', 'type', 'measured_at'])
        .execute()
      // One index per patient only: each one costs a scattered page write per reading at ingest.

      await db.schema
        .createTable('quarantine')
        .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
        .addColumn('device_id', 'text', (c) => c.notNull())
        .addColumn('received_at', 'text', (c) => c.notNull())
        .addColumn('code', 'text', (c) => c.notNull())
        .addColumn('message', 'text', (c) => c.notNull())
        .addColumn('path', 'text')
        .addColumn('seq', 'integer')
        .addColumn('batch_index', 'integer')
        .addColumn('raw', 'text', (c) => c.notNull())
        .execute()
      await db.schema.createIndex('quarantine_device').on('quarantine').columns(['device_id', 'id']).execute()

      await db.schema
        .createTable('audit')
        .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
        .addColumn('at', 'text', (c) => c.notNull())
        .addColumn('actor_type', 'text', (c) => c.notNull())
        .addColumn('actor_id', 'text', (c) => c.notNull())
        .addColumn('action', 'text', (c) => c.notNull())
        .addColumn('target', 'text')
        .addColumn('outcome', 'text', (c) => c.notNull())
        .addColumn('address', 'text')
        .addColumn('details_json', 'text')
        .addColumn('prev_hash', 'text', (c) => c.notNull())
        .addColumn('hash', 'text', (c) => c.notNull())
        .execute()
      // Append-only: the database itself refuses to change or delete audit rows.
      await sql`CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END`.execute(db)
      await sql`CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END`.execute(db)
    },
  },
}

migrations['0002-identity'] = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('users')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('username', 'text', (c) => c.notNull().unique())
      .addColumn('role', 'text', (c) => c.notNull())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('patient_id', 'text', (c) => c.references('patients.id'))
      .addColumn('password_hash', 'text', (c) => c.notNull())
      .addColumn('status', 'text', (c) => c.notNull().defaultTo('active'))
      .addColumn('failed_logins', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('locked_until', 'text')
      .addColumn('created_at', 'text', (c) => c.notNull())
      .execute()

    await db.schema
      .createTable('care_team')
      .addColumn('patient_id', 'text', (c) => c.notNull().references('patients.id'))
      .addColumn('user_id', 'text', (c) => c.notNull().references('users.id'))
      .addColumn('added_at', 'text', (c) => c.notNull())
      .addPrimaryKeyConstraint('care_team_pk', ['patient_id', 'user_id'])
      .execute()
    await db.schema.createIndex('care_team_user').on('care_team').column('user_id').execute()

    // A session is one sign-in: the family of refresh tokens that rotate from it.
    await db.schema
      .createTable('sessions')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('user_id', 'text', (c) => c.notNull().references('users.id'))
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('last_active_at', 'text', (c) => c.notNull())
      .addColumn('expires_at', 'text', (c) => c.notNull())
      .addColumn('revoked_at', 'text')
      .addColumn('revoked_reason', 'text')
      .addColumn('address', 'text')
      .execute()

    await db.schema
      .createTable('refresh_tokens')
      .addColumn('token_hash', 'text', (c) => c.primaryKey())
      .addColumn('session_id', 'text', (c) => c.notNull().references('sessions.id'))
      .addColumn('issued_at', 'text', (c) => c.notNull())
      .addColumn('used_at', 'text')
      .execute()

    await db.schema
      .createTable('break_glass')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('user_id', 'text', (c) => c.notNull().references('users.id'))
      .addColumn('patient_id', 'text', (c) => c.notNull().references('patients.id'))
      .addColumn('reason', 'text', (c) => c.notNull())
      .addColumn('granted_at', 'text', (c) => c.notNull())
      .addColumn('expires_at', 'text', (c) => c.notNull())
      .execute()
    await db.schema.createIndex('break_glass_user_patient').on('break_glass').columns(['user_id', 'patient_id']).execute()
  },
}

migrations['0003-threads'] = {
  async up(db: Kysely<any>) {
    // One thread per patient with their care team. last_seq numbers messages; last_revision
    // numbers every change (post, edit, tombstone) so a client can resume edits too.
    await db.schema
      .createTable('threads')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('patient_id', 'text', (c) => c.notNull().unique().references('patients.id'))
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('last_seq', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('last_revision', 'integer', (c) => c.notNull().defaultTo(0))
      .execute()

    await db.schema
      .createTable('messages')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('thread_id', 'text', (c) => c.notNull().references('threads.id'))
      .addColumn('seq', 'integer', (c) => c.notNull())
      .addColumn('revision', 'integer', (c) => c.notNull())
      .addColumn('kind', 'text', (c) => c.notNull())
      .addColumn('sender_role', 'text', (c) => c.notNull())
      .addColumn('sender_user_id', 'text')
      .addColumn('sender_device_id', 'text')
      // Who the client message id belongs to: a user id, or 'device:' + a device id.
      .addColumn('sender_key', 'text', (c) => c.notNull())
      .addColumn('client_message_id', 'text')
      .addColumn('text', 'text')
      .addColumn('data_json', 'text')
      .addColumn('reply_to', 'text')
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('edited_at', 'text')
      .addColumn('deleted_at', 'text')
      .addUniqueConstraint('messages_thread_seq', ['thread_id', 'seq'])
      .execute()
    // A retried send finds its first attempt here. Partial: messages without a client id (the
    // gateway's own, such as readings) cost no entry. Revisions are found through
    // (thread_id, seq): edits are rare, and every index is a write per message at ingest.
    await db.schema
      .createIndex('messages_client_id')
      .on('messages')
      .columns(['thread_id', 'sender_key', 'client_message_id'])
      .unique()
      .where(sql.ref('client_message_id'), 'is not', null)
      .execute()

    // Earlier texts of edited messages; a message row holds only the current one.
    await db.schema
      .createTable('message_versions')
      .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
      .addColumn('message_id', 'text', (c) => c.notNull().references('messages.id'))
      .addColumn('version', 'integer', (c) => c.notNull())
      .addColumn('text', 'text', (c) => c.notNull())
      .addColumn('written_at', 'text', (c) => c.notNull())
      .addColumn('replaced_at', 'text', (c) => c.notNull())
      .addColumn('replaced_by', 'text', (c) => c.notNull())
      .addUniqueConstraint('message_versions_message_version', ['message_id', 'version'])
      .execute()

    // Read and delivered horizons, per participant per thread: only ever move forward.
    await db.schema
      .createTable('thread_receipts')
      .addColumn('thread_id', 'text', (c) => c.notNull().references('threads.id'))
      .addColumn('user_id', 'text', (c) => c.notNull().references('users.id'))
      .addColumn('read_seq', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('delivered_seq', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('updated_at', 'text', (c) => c.notNull())
      .addPrimaryKeyConstraint('thread_receipts_pk', ['thread_id', 'user_id'])
      .execute()
  },
}

migrations['0004-alerts'] = {
  async up(db: Kysely<any>) {
    // Per-patient rule overrides: every change is a new version (who, when, why); the newest
    // version is in force, and a version with spec_json NULL returns the patient to the default.
    await db.schema
      .createTable('rule_overrides')
      .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
      .addColumn('patient_id', 'text', (c) => c.notNull().references('patients.id'))
      .addColumn('rule_id', 'text', (c) => c.notNull())
      .addColumn('version', 'integer', (c) => c.notNull())
      .addColumn('spec_json', 'text')
      .addColumn('reason', 'text', (c) => c.notNull())
      .addColumn('changed_by', 'text', (c) => c.notNull())
      .addColumn('changed_at', 'text', (c) => c.notNull())
      .addUniqueConstraint('rule_overrides_version', ['patient_id', 'rule_id', 'version'])
      .execute()

    await db.schema
      .createTable('alerts')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('patient_id', 'text', (c) => c.notNull().references('patients.id'))
      .addColumn('rule_id', 'text', (c) => c.notNull())
      .addColumn('rule_kind', 'text', (c) => c.notNull())
      .addColumn('title', 'text', (c) => c.notNull())
      .addColumn('reading_type', 'text')
      .addColumn('severity', 'text', (c) => c.notNull())
      .addColumn('status', 'text', (c) => c.notNull())
      .addColumn('opened_at', 'text', (c) => c.notNull())
      .addColumn('updated_at', 'text', (c) => c.notNull())
      .addColumn('count', 'integer', (c) => c.notNull().defaultTo(1))
      .addColumn('first_reading_id', 'integer')
      .addColumn('last_reading_id', 'integer')
      .addColumn('last_measured_at', 'text')
      .addColumn('last_values_json', 'text')
      .addColumn('acknowledged_at', 'text')
      .addColumn('acknowledged_by', 'text')
      .addColumn('resolved_at', 'text')
      .addColumn('resolved_by', 'text')
      .addColumn('resolution', 'text')
      .addColumn('note', 'text')
      .addColumn('snoozed_until', 'text')
      .addColumn('snoozed_by', 'text')
      .addColumn('snooze_severity', 'text')
      // Escalation: the tier reached, when the next step is due, reminders sent at this tier.
      .addColumn('tier', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('escalation_started_at', 'text', (c) => c.notNull())
      .addColumn('last_notified_at', 'text', (c) => c.notNull())
      .addColumn('next_escalation_at', 'text')
      .addColumn('reminders', 'integer', (c) => c.notNull().defaultTo(0))
      .execute()
    // One alert per patient and rule that is not resolved: a repeat updates it.
    await db.schema
      .createIndex('alerts_one_open')
      .on('alerts')
      .columns(['patient_id', 'rule_id'])
      .unique()
      .where(sql.ref('status'), '<>', 'resolved')
      .execute()
    await db.schema.createIndex('alerts_patient_opened').on('alerts').columns(['patient_id', 'opened_at']).execute()
    await db.schema.createIndex('alerts_status_opened').on('alerts').columns(['status', 'opened_at']).execute()
    await db.schema
      .createIndex('alerts_escalation_due')
      .on('alerts')
      .column('next_escalation_at')
      .where(sql.ref('next_escalation_at'), 'is not', null)
      .execute()

    // The alert's history: raised, repeated, severity changes, suppressions with their reason,
    // escalations, acknowledgement, snoozes, resolution.
    await db.schema
      .createTable('alert_events')
      .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
      .addColumn('alert_id', 'text', (c) => c.notNull().references('alerts.id'))
      .addColumn('at', 'text', (c) => c.notNull())
      .addColumn('type', 'text', (c) => c.notNull())
      .addColumn('actor', 'text')
      .addColumn('details_json', 'text')
      .execute()
    await db.schema.createIndex('alert_events_alert').on('alert_events').columns(['alert_id', 'id']).execute()

    // Who an alert has reached by escalation: an on-call provider outside the care team may
    // see the patient while the alert is not resolved.
    await db.schema
      .createTable('alert_recipients')
      .addColumn('alert_id', 'text', (c) => c.notNull().references('alerts.id'))
      .addColumn('user_id', 'text', (c) => c.notNull().references('users.id'))
      .addColumn('patient_id', 'text', (c) => c.notNull().references('patients.id'))
      .addColumn('tier', 'integer', (c) => c.notNull())
      .addColumn('added_at', 'text', (c) => c.notNull())
      .addPrimaryKeyConstraint('alert_recipients_pk', ['alert_id', 'user_id'])
      .execute()
    await db.schema.createIndex('alert_recipients_user').on('alert_recipients').columns(['user_id', 'patient_id']).execute()

    // On-call providers: the second escalation tier.
    await db.schema
      .createTable('on_call')
      .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
      .addColumn('user_id', 'text', (c) => c.notNull().references('users.id'))
      .addColumn('starts_at', 'text', (c) => c.notNull())
      .addColumn('ends_at', 'text', (c) => c.notNull())
      .addColumn('created_by', 'text', (c) => c.notNull())
      .addColumn('created_at', 'text', (c) => c.notNull())
      .execute()
    await db.schema.createIndex('on_call_ends').on('on_call').column('ends_at').execute()
  },
}

migrations['0005-reminders'] = {
  async up(db: Kysely<any>) {
    // Medication and measurement schedules: times of day in the patient's time zone.
    await db.schema
      .createTable('reminder_schedules')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('patient_id', 'text', (c) => c.notNull().references('patients.id'))
      .addColumn('kind', 'text', (c) => c.notNull()) // 'medication' | 'measurement'
      .addColumn('medication', 'text')
      .addColumn('dose', 'text')
      .addColumn('reading_type', 'text')
      .addColumn('instructions', 'text')
      // The schedule's own IANA zone; NULL follows the patient's time zone (also when it changes).
      .addColumn('timezone', 'text')
      .addColumn('times_json', 'text', (c) => c.notNull()) // ["08:00","20:00"]
      .addColumn('days_json', 'text', (c) => c.notNull()) // ISO weekdays [1..7], Monday = 1
      .addColumn('starts_on', 'text', (c) => c.notNull()) // local date YYYY-MM-DD
      .addColumn('ends_on', 'text')
      .addColumn('active', 'integer', (c) => c.notNull().defaultTo(1))
      .addColumn('created_by', 'text', (c) => c.notNull())
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('updated_at', 'text', (c) => c.notNull())
      // The next instant the reminder clock has to look at this schedule (UTC; NULL: inactive or
      // ended), kept so a tick reads only the schedules that came due instead of computing all.
      .addColumn('next_due_at', 'text')
      // The creating client's id for the request (POST retries): one schedule per patient, creator and id.
      .addColumn('client_request_id', 'text')
      .execute()
    await db.schema.createIndex('reminder_schedules_patient').on('reminder_schedules').column('patient_id').execute()
    await db.schema
      .createIndex('reminder_schedules_next_due')
      .on('reminder_schedules')
      .column('next_due_at')
      .where(sql.ref('active'), '=', 1)
      .execute()
    await db.schema
      .createIndex('reminder_schedules_client_request')
      .on('reminder_schedules')
      .columns(['patient_id', 'created_by', 'client_request_id'])
      .unique()
      .where(sql.ref('client_request_id'), 'is not', null)
      .execute()

    // One row per reminder that came due: the unique key makes posting it idempotent across
    // restarts, and its status is the adherence record.
    await db.schema
      .createTable('reminder_occurrences')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('schedule_id', 'text', (c) => c.notNull().references('reminder_schedules.id'))
      .addColumn('patient_id', 'text', (c) => c.notNull().references('patients.id'))
      .addColumn('due_at', 'text', (c) => c.notNull()) // UTC instant
      .addColumn('local_date', 'text', (c) => c.notNull())
      .addColumn('local_time', 'text', (c) => c.notNull())
      .addColumn('status', 'text', (c) => c.notNull()) // 'pending' | 'taken' | 'missed' | 'done'
      // 0: a dose taken when none was due (a device event outside every window), kept for the record.
      .addColumn('scheduled', 'integer', (c) => c.notNull().defaultTo(1))
      // NULL when no reminder was sent: confirmed before it came due, or the gateway was down.
      .addColumn('posted_at', 'text')
      .addColumn('message_id', 'text')
      .addColumn('confirmed_at', 'text')
      .addColumn('taken_at', 'text') // when the dose was taken (or the reading measured), as reported
      .addColumn('confirmed_by', 'text')
      .addColumn('source', 'text')
      .addColumn('missed_at', 'text')
      .addUniqueConstraint('reminder_occurrences_due', ['schedule_id', 'due_at'])
      .execute()
    await db.schema.createIndex('reminder_occurrences_patient_due').on('reminder_occurrences').columns(['patient_id', 'due_at']).execute()
    await db.schema.createIndex('reminder_occurrences_status_due').on('reminder_occurrences').columns(['status', 'due_at']).execute()
    // A patient's reply to a reminder message finds its occurrence.
    await db.schema
      .createIndex('reminder_occurrences_message')
      .on('reminder_occurrences')
      .column('message_id')
      .where(sql.ref('message_id'), 'is not', null)
      .execute()

    // Small durable state: how far the reminder clock has been processed.
    await db.schema
      .createTable('gateway_state')
      .addColumn('key', 'text', (c) => c.primaryKey())
      .addColumn('value', 'text', (c) => c.notNull())
      .execute()
  },
}

migrations['0006-timeseries'] = {
  async up(db: Kysely<any>) {
    // Readings InfluxDB refused as invalid (a 4xx for that point alone): set aside with the
    // reason so the ones behind them are not held up. The readings themselves stay in the journal.
    await db.schema
      .createTable('timeseries_rejected')
      .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
      .addColumn('reading_id', 'integer', (c) => c.notNull().references('readings.id'))
      .addColumn('target', 'text', (c) => c.notNull())
      .addColumn('status', 'integer', (c) => c.notNull())
      .addColumn('reason', 'text', (c) => c.notNull())
      .addColumn('rejected_at', 'text', (c) => c.notNull())
      .execute()
  },
}

migrations['0007-notify'] = {
  async up(db: Kysely<any>) {
    // Where a user is reached by push: a browser's Web Push subscription or an app's FCM token.
    await db.schema
      .createTable('push_targets')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('user_id', 'text', (c) => c.notNull().references('users.id'))
      .addColumn('channel', 'text', (c) => c.notNull().check(sql`channel IN ('webpush', 'fcm')`))
      // The Web Push endpoint URL or the FCM registration token.
      .addColumn('address', 'text', (c) => c.notNull())
      .addColumn('p256dh', 'text')
      .addColumn('auth', 'text')
      .addColumn('platform', 'text', (c) => c.notNull())
      .addColumn('label', 'text')
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('last_success_at', 'text')
      .addUniqueConstraint('push_targets_address', ['channel', 'address'])
      .execute()
    await db.schema.createIndex('push_targets_user').on('push_targets').columns(['user_id']).execute()

    // A user's mobile number for SMS with the consent that allows texting it: when and how it was
    // given, and when and how it was withdrawn (STOP, Twilio error 21610, the user, an operator).
    await db.schema
      .createTable('sms_contacts')
      .addColumn('user_id', 'text', (c) => c.primaryKey().references('users.id'))
      .addColumn('phone', 'text', (c) => c.notNull())
      .addColumn('consented_at', 'text')
      .addColumn('consent_source', 'text')
      .addColumn('opted_out_at', 'text')
      .addColumn('opt_out_source', 'text')
      // The number is the user's: a code texted to it was entered back (hash, expiry, tries).
      .addColumn('verified_at', 'text')
      .addColumn('code_hash', 'text')
      .addColumn('code_expires_at', 'text')
      .addColumn('code_attempts', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('updated_at', 'text', (c) => c.notNull())
      .execute()
    await db.schema.createIndex('sms_contacts_phone').on('sms_contacts').columns(['phone']).execute()

    await db.schema
      .createTable('notification_prefs')
      .addColumn('user_id', 'text', (c) => c.primaryKey().references('users.id'))
      .addColumn('webpush', 'integer', (c) => c.notNull().defaultTo(1))
      .addColumn('fcm', 'integer', (c) => c.notNull().defaultTo(1))
      .addColumn('sms', 'integer', (c) => c.notNull().defaultTo(1))
      .addColumn('messages', 'integer', (c) => c.notNull().defaultTo(1))
      .addColumn('quiet_start', 'text')
      .addColumn('quiet_end', 'text')
      .addColumn('timezone', 'text')
      .addColumn('updated_at', 'text', (c) => c.notNull())
      .execute()

    // The outbox: every notification is a row before it is sent. Only ids are stored; the words
    // are chosen at send time from the kind and carry no patient data.
    await db.schema
      .createTable('notifications')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('user_id', 'text', (c) => c.notNull())
      .addColumn('channel', 'text', (c) => c.notNull().check(sql`channel IN ('webpush', 'fcm', 'sms')`))
      .addColumn('target_id', 'text')
      .addColumn('kind', 'text', (c) => c.notNull())
      .addColumn('ref_id', 'text')
      .addColumn('ref_seq', 'integer')
      .addColumn('severity', 'text')
      .addColumn('urgent', 'integer', (c) => c.notNull())
      .addColumn('collapse_key', 'text', (c) => c.notNull())
      .addColumn('dedupe_key', 'text', (c) => c.notNull().unique())
      .addColumn('status', 'text', (c) => c.notNull().check(sql`status IN ('pending', 'sending', 'sent', 'failed', 'dropped')`))
      .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
      // 1 when a crash left a send without its outcome: it is sent again (once).
      .addColumn('in_doubt', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('not_before', 'integer', (c) => c.notNull())
      .addColumn('expires_at', 'integer', (c) => c.notNull())
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('updated_at', 'text', (c) => c.notNull())
      .addColumn('sent_at', 'text')
      .addColumn('reason', 'text')
      .addColumn('provider_ref', 'text')
      .addColumn('delivery_status', 'text')
      .execute()
    // The lanes' "next due" query, by channel, urgent first, then oldest.
    await sql`CREATE INDEX notifications_due ON notifications (channel, urgent DESC, not_before) WHERE status = 'pending'`.execute(db)
    await db.schema.createIndex('notifications_sending').on('notifications').column('id').where(sql.ref('status'), '=', 'sending').execute()
    // A newer message joins the notification already waiting for that user and thread.
    await db.schema
      .createIndex('notifications_waiting_message')
      .on('notifications')
      .columns(['user_id', 'collapse_key'])
      .where(sql<boolean>`status = 'pending' AND kind = 'message'`)
      .execute()
    await db.schema.createIndex('notifications_target').on('notifications').columns(['target_id']).where(sql.ref('status'), '=', 'pending').execute()
    await db.schema.createIndex('notifications_provider_ref').on('notifications').columns(['provider_ref']).execute()
    await db.schema.createIndex('notifications_user').on('notifications').columns(['user_id', 'id']).execute()
    await db.schema.createIndex('notifications_status').on('notifications').columns(['status', 'id']).execute()
    await db.schema.createIndex('notifications_updated').on('notifications').columns(['updated_at']).execute()
  },
}

export const migrationProvider: MigrationProvider = {
  async getMigrations() {
    return migrations
  },
}
