import { sql, type Kysely } from "kysely";
import type { Dialect } from "../schema.js";

/**
 * Channels and retention: the owner and closure of each channel (public room), retention's
 * progress through the stream, and the expired events it had to keep as content-less stubs.
 */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  const big = dialect === "postgres" ? "bigint" : "integer";

  await db.schema
    .createTable("channels")
    .addColumn("room_id", "text", (c) => c.primaryKey())
    .addColumn("owner", "text", (c) => c.notNull())
    .addColumn("created_ts", big, (c) => c.notNull())
    // Kept up to date with the room's m.room.join_rules by the event write path, so listing
    // channels needs no JSON parsing; directory publication is rooms.visibility.
    .addColumn("join_public", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("closed_ts", big)
    .addColumn("closed_by", "text")
    .addColumn("close_reason", "text")
    .execute();

  await db.schema
    .createTable("retention_progress")
    .addColumn("name", "text", (c) => c.primaryKey())
    .addColumn("position", big, (c) => c.notNull())
    .execute();

  await db.schema
    .createTable("retention_stubs")
    .addColumn("event_id", "text", (c) => c.primaryKey())
    .addColumn("room_id", "text", (c) => c.notNull())
    .execute();

  // Rooms that are public already become channels owned by their creator.
  const rooms = await sql<{ room_id: string; creator: string; created_ts: number | string; visibility: string; join_rules: string | null }>`
    select r.room_id, r.creator, r.created_ts, r.visibility, e.json as join_rules
    from rooms r
    left join room_state s on s.room_id = r.room_id and s.type = 'm.room.join_rules' and s.state_key = ''
    left join events e on e.event_id = s.event_id`.execute(db);
  for (const r of rooms.rows) {
    let joinPublic = false;
    try {
      joinPublic = r.join_rules !== null && (JSON.parse(r.join_rules) as { content?: { join_rule?: unknown } }).content?.join_rule === "public";
    } catch {
      // An unreadable event is no evidence of a public room.
    }
    if (r.visibility !== "public" && !joinPublic) continue;
    await sql`insert into channels (room_id, owner, created_ts, join_public) values (${r.room_id}, ${r.creator}, ${Number(r.created_ts)}, ${joinPublic ? 1 : 0})`.execute(db);
  }
}
