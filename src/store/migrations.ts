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

export const migrationProvider: MigrationProvider = {
  async getMigrations() {
    return migrations
  },
}
