import { sql, type Kysely } from "kysely";
import type { Dialect } from "../schema.js";

/** The initial schema. Column types are chosen so both dialects read back plain numbers and strings. */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  const big = dialect === "postgres" ? "bigint" : "integer";
  const autoId = dialect === "postgres" ? "bigserial" : "integer";

  await db.schema.createTable("counters").addColumn("name", "text", (c) => c.primaryKey()).addColumn("value", big, (c) => c.notNull()).execute();
  await sql`insert into counters (name, value) values ('stream', 0)`.execute(db);

  await db.schema
    .createTable("users")
    .addColumn("user_id", "text", (c) => c.primaryKey())
    .addColumn("localpart", "text", (c) => c.notNull().unique())
    .addColumn("password_hash", "text")
    .addColumn("role", "text", (c) => c.notNull().defaultTo("user"))
    .addColumn("deactivated", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("locked", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("created_ts", big, (c) => c.notNull())
    .addColumn("displayname", "text")
    .addColumn("avatar_url", "text")
    .execute();

  await db.schema
    .createTable("devices")
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("device_id", "text", (c) => c.notNull())
    .addColumn("display_name", "text")
    .addColumn("created_ts", big, (c) => c.notNull())
    .addColumn("last_seen_ts", big)
    .addColumn("last_seen_ip", "text")
    .addColumn("user_agent", "text")
    .addPrimaryKeyConstraint("devices_pk", ["user_id", "device_id"])
    .execute();

  await db.schema
    .createTable("access_tokens")
    .addColumn("token_hash", "text", (c) => c.primaryKey())
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("device_id", "text", (c) => c.notNull())
    .addColumn("created_ts", big, (c) => c.notNull())
    .addColumn("expires_ts", big)
    .addColumn("refresh_token_hash", "text")
    .execute();
  await db.schema.createIndex("access_tokens_device").on("access_tokens").columns(["user_id", "device_id"]).execute();

  await db.schema
    .createTable("refresh_tokens")
    .addColumn("token_hash", "text", (c) => c.primaryKey())
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("device_id", "text", (c) => c.notNull())
    .addColumn("created_ts", big, (c) => c.notNull())
    .addColumn("next_token_hash", "text")
    .execute();
  await db.schema.createIndex("refresh_tokens_device").on("refresh_tokens").columns(["user_id", "device_id"]).execute();

  await db.schema
    .createTable("uia_sessions")
    .addColumn("session_id", "text", (c) => c.primaryKey())
    .addColumn("user_id", "text")
    .addColumn("request_hash", "text", (c) => c.notNull())
    .addColumn("completed", "text", (c) => c.notNull())
    .addColumn("created_ts", big, (c) => c.notNull())
    .execute();

  await db.schema
    .createTable("registration_tokens")
    .addColumn("token_hash", "text", (c) => c.primaryKey())
    .addColumn("uses_allowed", "integer")
    .addColumn("completed", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("expiry_ts", big)
    .addColumn("created_ts", big, (c) => c.notNull())
    .execute();

  await db.schema
    .createTable("rooms")
    .addColumn("room_id", "text", (c) => c.primaryKey())
    .addColumn("room_version", "text", (c) => c.notNull())
    .addColumn("creator", "text", (c) => c.notNull())
    .addColumn("created_ts", big, (c) => c.notNull())
    .addColumn("visibility", "text", (c) => c.notNull().defaultTo("private"))
    .addColumn("last_event_id", "text")
    .addColumn("last_depth", big, (c) => c.notNull().defaultTo(0))
    .addColumn("last_stream", big, (c) => c.notNull().defaultTo(0))
    .execute();

  await db.schema
    .createTable("events")
    .addColumn("stream_ordering", big, (c) => c.primaryKey())
    .addColumn("event_id", "text", (c) => c.notNull().unique())
    .addColumn("room_id", "text", (c) => c.notNull())
    .addColumn("type", "text", (c) => c.notNull())
    .addColumn("state_key", "text")
    .addColumn("sender", "text", (c) => c.notNull())
    .addColumn("origin_server_ts", big, (c) => c.notNull())
    .addColumn("depth", big, (c) => c.notNull())
    .addColumn("json", "text", (c) => c.notNull())
    .addColumn("redacted_by", "text")
    .addColumn("relates_to", "text")
    .addColumn("rel_type", "text")
    .addColumn("thread_id", "text")
    .addColumn("membership", "text")
    .addColumn("txn_device", "text")
    .addColumn("txn_id", "text")
    .execute();
  await db.schema.createIndex("events_room_stream").on("events").columns(["room_id", "stream_ordering"]).execute();
  await db.schema.createIndex("events_room_state").on("events").columns(["room_id", "type", "state_key", "stream_ordering"]).execute();
  await db.schema.createIndex("events_relates").on("events").columns(["relates_to", "rel_type"]).execute();
  await db.schema.createIndex("events_member").on("events").columns(["state_key", "membership", "stream_ordering"]).execute();

  await db.schema
    .createTable("event_txns")
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("device_id", "text", (c) => c.notNull())
    .addColumn("scope", "text", (c) => c.notNull())
    .addColumn("txn_id", "text", (c) => c.notNull())
    .addColumn("result", "text", (c) => c.notNull())
    .addColumn("created_ts", big, (c) => c.notNull())
    .addPrimaryKeyConstraint("event_txns_pk", ["user_id", "device_id", "scope", "txn_id"])
    .execute();

  await db.schema
    .createTable("room_state")
    .addColumn("room_id", "text", (c) => c.notNull())
    .addColumn("type", "text", (c) => c.notNull())
    .addColumn("state_key", "text", (c) => c.notNull())
    .addColumn("event_id", "text", (c) => c.notNull())
    .addColumn("stream_ordering", big, (c) => c.notNull())
    .addPrimaryKeyConstraint("room_state_pk", ["room_id", "type", "state_key"])
    .execute();

  await db.schema
    .createTable("room_members")
    .addColumn("room_id", "text", (c) => c.notNull())
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("membership", "text", (c) => c.notNull())
    .addColumn("event_id", "text", (c) => c.notNull())
    .addColumn("stream_ordering", big, (c) => c.notNull())
    .addColumn("sender", "text", (c) => c.notNull())
    .addColumn("displayname", "text")
    .addColumn("avatar_url", "text")
    .addColumn("forgotten", "integer", (c) => c.notNull().defaultTo(0))
    .addPrimaryKeyConstraint("room_members_pk", ["room_id", "user_id"])
    .execute();
  await db.schema.createIndex("room_members_user").on("room_members").columns(["user_id", "membership"]).execute();

  await db.schema
    .createTable("room_aliases")
    .addColumn("alias", "text", (c) => c.primaryKey())
    .addColumn("room_id", "text", (c) => c.notNull())
    .addColumn("creator", "text", (c) => c.notNull())
    .addColumn("created_ts", big, (c) => c.notNull())
    .execute();
  await db.schema.createIndex("room_aliases_room").on("room_aliases").column("room_id").execute();

  await db.schema
    .createTable("receipts")
    .addColumn("room_id", "text", (c) => c.notNull())
    .addColumn("receipt_type", "text", (c) => c.notNull())
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("thread_id", "text", (c) => c.notNull())
    .addColumn("event_id", "text", (c) => c.notNull())
    .addColumn("ts", big, (c) => c.notNull())
    .addColumn("stream_pos", big, (c) => c.notNull())
    .addPrimaryKeyConstraint("receipts_pk", ["room_id", "receipt_type", "user_id", "thread_id"])
    .execute();
  await db.schema.createIndex("receipts_stream").on("receipts").columns(["stream_pos"]).execute();

  await db.schema
    .createTable("account_data")
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("room_id", "text", (c) => c.notNull())
    .addColumn("type", "text", (c) => c.notNull())
    .addColumn("content", "text", (c) => c.notNull())
    .addColumn("stream_pos", big, (c) => c.notNull())
    .addPrimaryKeyConstraint("account_data_pk", ["user_id", "room_id", "type"])
    .execute();
  await db.schema.createIndex("account_data_stream").on("account_data").columns(["user_id", "stream_pos"]).execute();

  await db.schema
    .createTable("filters")
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("filter_id", "text", (c) => c.notNull())
    .addColumn("json", "text", (c) => c.notNull())
    .addPrimaryKeyConstraint("filters_pk", ["user_id", "filter_id"])
    .execute();

  await db.schema.createTable("push_rules").addColumn("user_id", "text", (c) => c.primaryKey()).addColumn("json", "text", (c) => c.notNull()).execute();

  await db.schema
    .createTable("pushers")
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("app_id", "text", (c) => c.notNull())
    .addColumn("pushkey", "text", (c) => c.notNull())
    .addColumn("kind", "text", (c) => c.notNull())
    .addColumn("json", "text", (c) => c.notNull())
    .addColumn("created_ts", big, (c) => c.notNull())
    .addPrimaryKeyConstraint("pushers_pk", ["user_id", "app_id", "pushkey"])
    .execute();

  await db.schema
    .createTable("event_push_actions")
    .addColumn("room_id", "text", (c) => c.notNull())
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("event_id", "text", (c) => c.notNull())
    .addColumn("stream_ordering", big, (c) => c.notNull())
    .addColumn("thread_id", "text", (c) => c.notNull())
    .addColumn("notify", "integer", (c) => c.notNull())
    .addColumn("highlight", "integer", (c) => c.notNull())
    .addPrimaryKeyConstraint("event_push_actions_pk", ["user_id", "event_id"])
    .execute();
  await db.schema.createIndex("event_push_actions_room").on("event_push_actions").columns(["user_id", "room_id", "stream_ordering"]).execute();

  await db.schema
    .createTable("presence")
    .addColumn("user_id", "text", (c) => c.primaryKey())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("status_msg", "text")
    .addColumn("last_active_ts", big, (c) => c.notNull())
    .addColumn("currently_active", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("stream_pos", big, (c) => c.notNull())
    .execute();
  await db.schema.createIndex("presence_stream").on("presence").column("stream_pos").execute();

  await db.schema
    .createTable("typing")
    .addColumn("room_id", "text", (c) => c.notNull())
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("expires_ts", big, (c) => c.notNull())
    .addColumn("stream_pos", big, (c) => c.notNull())
    .addPrimaryKeyConstraint("typing_pk", ["room_id", "user_id"])
    .execute();
  await db.schema.createIndex("typing_stream").on("typing").column("stream_pos").execute();

  await db.schema
    .createTable("device_inbox")
    .addColumn("id", autoId, (c) => (dialect === "postgres" ? c.primaryKey() : c.primaryKey().autoIncrement()))
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("device_id", "text", (c) => c.notNull())
    .addColumn("stream_pos", big, (c) => c.notNull())
    .addColumn("sender", "text", (c) => c.notNull())
    .addColumn("type", "text", (c) => c.notNull())
    .addColumn("content", "text", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("device_inbox_device").on("device_inbox").columns(["user_id", "device_id", "stream_pos"]).execute();

  await db.schema
    .createTable("device_list_changes")
    .addColumn("user_id", "text", (c) => c.primaryKey())
    .addColumn("stream_pos", big, (c) => c.notNull())
    .execute();
  await db.schema.createIndex("device_list_changes_stream").on("device_list_changes").column("stream_pos").execute();
}
