import type { Kysely } from "kysely";
import type { Dialect } from "../schema.js";

/** Terms of use: published versions, who accepted which version when, and one-time consent-page tokens. */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  const big = dialect === "postgres" ? "bigint" : "integer";

  // seq orders the versions (the highest is current); it is assigned inside the audited write, so
  // publishing is serialised like every other audited change.
  await db.schema
    .createTable("terms_versions")
    .addColumn("seq", big, (c) => c.primaryKey())
    .addColumn("version", "text", (c) => c.notNull().unique())
    .addColumn("text", "text", (c) => c.notNull())
    .addColumn("published_ts", big, (c) => c.notNull())
    .addColumn("published_by", "text", (c) => c.notNull())
    .execute();

  await db.schema
    .createTable("terms_acceptances")
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("version", "text", (c) => c.notNull())
    .addColumn("accepted_ts", big, (c) => c.notNull())
    .addColumn("device_id", "text")
    .addColumn("via", "text", (c) => c.notNull())
    .addPrimaryKeyConstraint("terms_acceptances_pk", ["user_id", "version"])
    .execute();
  await db.schema.createIndex("terms_acceptances_version").on("terms_acceptances").column("version").execute();

  // Only the SHA-256 digest of a consent token is stored, like access tokens.
  await db.schema
    .createTable("consent_tokens")
    .addColumn("token_hash", "text", (c) => c.primaryKey())
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("device_id", "text", (c) => c.notNull())
    .addColumn("created_ts", big, (c) => c.notNull())
    .addColumn("expires_ts", big, (c) => c.notNull())
    .addColumn("used_ts", big)
    .execute();
  await db.schema.createIndex("consent_tokens_expires").on("consent_tokens").column("expires_ts").execute();
}
