import type { Kysely } from "kysely";
import type { Dialect } from "../schema.js";

/** Governance: the hash-chained audit log, the organisation policy, blocked device ids, enrollment codes. */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  const big = dialect === "postgres" ? "bigint" : "integer";

  // seq is assigned by the writer (not autoincrement) inside the serialised write, so the primary
  // key also refuses a forked chain should two writers ever race.
  await db.schema
    .createTable("audit_log")
    .addColumn("seq", big, (c) => c.primaryKey())
    .addColumn("ts", big, (c) => c.notNull())
    .addColumn("actor", "text", (c) => c.notNull())
    .addColumn("actor_role", "text", (c) => c.notNull())
    .addColumn("action", "text", (c) => c.notNull())
    .addColumn("target", "text")
    .addColumn("details", "text", (c) => c.notNull())
    .addColumn("prev_hash", "text", (c) => c.notNull())
    .addColumn("hash", "text", (c) => c.notNull())
    .execute();

  await db.schema
    .createTable("governance_policy")
    .addColumn("name", "text", (c) => c.primaryKey())
    .addColumn("json", "text", (c) => c.notNull())
    .addColumn("updated_ts", big, (c) => c.notNull())
    .execute();

  await db.schema
    .createTable("blocked_devices")
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("device_id", "text", (c) => c.notNull())
    .addColumn("blocked_ts", big, (c) => c.notNull())
    .addColumn("blocked_by", "text", (c) => c.notNull())
    .addPrimaryKeyConstraint("blocked_devices_pk", ["user_id", "device_id"])
    .execute();

  await db.schema
    .createTable("enrollment_codes")
    .addColumn("code_hash", "text", (c) => c.primaryKey())
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("issued_by", "text", (c) => c.notNull())
    .addColumn("created_ts", big, (c) => c.notNull())
    .addColumn("expires_ts", big, (c) => c.notNull())
    .addColumn("used_ts", big)
    .execute();
  await db.schema.createIndex("enrollment_codes_user").on("enrollment_codes").column("user_id").execute();
}
