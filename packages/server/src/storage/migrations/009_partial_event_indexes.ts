import type { Kysely } from "kysely";

/**
 * Three indexes on `events` lead with or select on columns only some events fill: state keys
 * (state events) and relations (replies, edits, threads, reactions). Every message still wrote an
 * entry into each, with NULLs — about a third of the cost of inserting the event row, under the
 * stream lock. As partial indexes they hold only the rows that have a value.
 *
 * The condition is on the column the queries constrain (`state_key = …`, `state_key is not null`,
 * `relates_to = …`), which SQLite and PostgreSQL both accept as implying it, so the same plans
 * stay available: `events_member` is also asked by state key alone, without a membership, and
 * therefore keeps every state event rather than only those with a membership. Timeline reads by
 * room and position use `events_room_stream`, which stays complete.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropIndex("events_room_state").execute();
  await db.schema.createIndex("events_room_state").on("events").columns(["room_id", "type", "state_key", "stream_ordering"]).where("state_key", "is not", null).execute();
  await db.schema.dropIndex("events_relates").execute();
  await db.schema.createIndex("events_relates").on("events").columns(["relates_to", "rel_type"]).where("relates_to", "is not", null).execute();
  await db.schema.dropIndex("events_member").execute();
  await db.schema.createIndex("events_member").on("events").columns(["state_key", "membership", "stream_ordering"]).where("state_key", "is not", null).execute();
}
