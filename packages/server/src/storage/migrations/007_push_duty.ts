import { sql, type Kysely } from "kysely";
import type { Dialect } from "../schema.js";

/**
 * Push delivery and duty hours.
 *
 * - `counters.push_delivery`: the stream position up to which notifications (event_push_actions)
 *   have been moved into the delivery queue. It starts at the current stream position, so
 *   upgrading a server does not push its whole history.
 * - `push_queue`: one row per (pusher, notification) still to be delivered; rows are claimed with
 *   a token and a lease, so several processes never send the same one twice and a crashed
 *   process's claims run out.
 * - `duty_settings`: each user's duty mode, time zone and weekly schedule; `off_duty` is the state
 *   last applied to their presence, so a schedule change is announced once.
 */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  const big = dialect === "postgres" ? "bigint" : "integer";
  const autoId = dialect === "postgres" ? "bigserial" : "integer";

  await sql`insert into counters (name, value) select 'push_delivery', value from counters where name = 'stream'`.execute(db);
  // The enqueuer reads new notifications by position.
  await db.schema.createIndex("event_push_actions_stream").on("event_push_actions").column("stream_ordering").execute();

  await db.schema
    .createTable("push_queue")
    .addColumn("id", autoId, (c) => (dialect === "postgres" ? c.primaryKey() : c.primaryKey().autoIncrement()))
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("app_id", "text", (c) => c.notNull())
    .addColumn("pushkey", "text", (c) => c.notNull())
    .addColumn("room_id", "text", (c) => c.notNull())
    .addColumn("event_id", "text", (c) => c.notNull())
    .addColumn("stream_ordering", big, (c) => c.notNull())
    .addColumn("highlight", "integer", (c) => c.notNull())
    .addColumn("attempts", "integer", (c) => c.notNull())
    .addColumn("next_attempt_ts", big, (c) => c.notNull())
    .addColumn("created_ts", big, (c) => c.notNull())
    .addColumn("claim", "text")
    .execute();
  await db.schema.createIndex("push_queue_unique").on("push_queue").columns(["user_id", "app_id", "pushkey", "event_id"]).unique().execute();
  await db.schema.createIndex("push_queue_due").on("push_queue").columns(["next_attempt_ts"]).execute();
  await db.schema.createIndex("push_queue_claim").on("push_queue").columns(["claim"]).execute();

  await db.schema
    .createTable("duty_settings")
    .addColumn("user_id", "text", (c) => c.primaryKey())
    .addColumn("mode", "text", (c) => c.notNull())
    .addColumn("json", "text", (c) => c.notNull())
    .addColumn("off_duty", "integer", (c) => c.notNull())
    .addColumn("updated_ts", big, (c) => c.notNull())
    .execute();
}
