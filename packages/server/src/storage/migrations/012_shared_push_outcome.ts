import { sql, type Kysely } from "kysely";
import type { Dialect } from "../schema.js";

/**
 * A message into a channel of 5,000 members wrote 5,000 `event_push_actions` rows under the stream
 * lock, though almost every member gets the same outcome: the server's default rules, which
 * differ between users only where they name the user (push/evaluate-many.ts).
 *
 * - `event_push_shared`: one row per event whose most common outcome notifies — the outcome of
 *   every member joined at its position who has no row of their own for it (the sender excepted).
 * - `event_push_actions` keeps rows only for members whose outcome differs: named, own rules, a
 *   muted room (`notify` 0 now means "not notified, though the shared row says otherwise").
 * - `room_members.joined_at`: the position of the join that began the member's current stretch
 *   in the room, so readers know which shared rows concern them. Existing members start at their
 *   current member event; no shared row predates this migration, so nothing is miscounted.
 *
 * Readers count a room's rows from a position on, so the key is (room, position); on SQLite the
 * table is WITHOUT ROWID and the rows live in that key's B-tree. (With the position alone as an
 * INTEGER PRIMARY KEY, SQLite preferred ranging over the rowid, every room's rows since the read
 * receipt, to the room index.) Push delivery and the unread tracker read by position.
 */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  const big = dialect === "postgres" ? sql.raw("bigint") : sql.raw("integer");
  await sql`create table event_push_shared (
    room_id text not null,
    stream_ordering ${big} not null,
    event_id text not null,
    sender text not null,
    thread_id text not null,
    highlight integer not null,
    constraint event_push_shared_pk primary key (room_id, stream_ordering)
  )${dialect === "sqlite" ? sql.raw(" without rowid") : sql.raw("")}`.execute(db);
  await db.schema.createIndex("event_push_shared_stream").on("event_push_shared").column("stream_ordering").execute();
  await db.schema.alterTable("room_members").addColumn("joined_at", dialect === "postgres" ? "bigint" : "integer").execute();
  await sql`update room_members set joined_at = stream_ordering where membership = 'join'`.execute(db);
}
