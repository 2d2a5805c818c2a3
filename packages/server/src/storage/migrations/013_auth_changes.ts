import type { Kysely } from "kysely";
import type { Dialect } from "../schema.js";

/**
 * A log of changes that can make a cached session invalid: a token revoked or replaced, a user
 * locked, deactivated or given another role. Every process keeps the sessions its requests
 * presented in memory (users/session-cache.ts) and reads this log a few times a second to forget
 * the users named in it, so a revocation through another process or the CLI takes effect there
 * within that interval, bus or no bus. Rows are kept for a day (the sweeper removes older ones).
 */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await db.schema
    .createTable("auth_changes")
    .addColumn("pos", dialect === "postgres" ? "bigserial" : "integer", (c) => c.primaryKey())
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("ts", dialect === "postgres" ? "bigint" : "integer", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("auth_changes_ts").on("auth_changes").column("ts").execute();
}
