import { sql, type Kysely } from "kysely";
import type { Dialect } from "../schema.js";

/**
 * A message into a channel of thousands writes one `event_push_actions` row per member, under the
 * stream lock. Each row went into the table and into two indexes that lead with the user — the
 * primary key (user_id, event_id) and (user_id, room_id, stream_ordering) — so every row dirtied
 * two pages in different places of the file: at 5,000 members about 10,000 pages per message,
 * written to the WAL and synced at commit (about 150 ms per message in the fanout benchmark).
 *
 * (user_id, room_id, stream_ordering) identifies a row as well (one position per event) and is
 * the order every reader wants (unread counts per user and room, the badge per user), so it
 * becomes the primary key and the second user-leading index goes. On SQLite the table is
 * WITHOUT ROWID: the rows live in that key's B-tree, one page per row touched instead of three.
 * The position index for push delivery stays; its entries are appended at the end.
 */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  const big = dialect === "postgres" ? sql.raw("bigint") : sql.raw("integer");
  await sql`create table event_push_actions_011 (
    user_id text not null,
    room_id text not null,
    stream_ordering ${big} not null,
    event_id text not null,
    thread_id text not null,
    notify integer not null,
    highlight integer not null,
    constraint event_push_actions_011_pk primary key (user_id, room_id, stream_ordering)
  )${dialect === "sqlite" ? sql.raw(" without rowid") : sql.raw("")}`.execute(db);
  await sql`insert into event_push_actions_011 (user_id, room_id, stream_ordering, event_id, thread_id, notify, highlight)
    select user_id, room_id, stream_ordering, event_id, thread_id, notify, highlight from event_push_actions`.execute(db);
  await db.schema.dropTable("event_push_actions").execute();
  await sql`alter table event_push_actions_011 rename to event_push_actions`.execute(db);
  await db.schema.createIndex("event_push_actions_stream").on("event_push_actions").column("stream_ordering").execute();
}
