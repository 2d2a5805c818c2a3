import type { Kysely } from "kysely";
import type { Dialect } from "../schema.js";

/** Media: content-addressed blobs with reference counts, mxc ids pointing at them, cached thumbnails. */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  const big = dialect === "postgres" ? "bigint" : "integer";

  await db.schema
    .createTable("media_blobs")
    .addColumn("sha256", "text", (c) => c.primaryKey())
    .addColumn("size", big, (c) => c.notNull())
    .addColumn("refcount", "integer", (c) => c.notNull())
    .addColumn("created_ts", big, (c) => c.notNull())
    .execute();

  await db.schema
    .createTable("media")
    .addColumn("media_id", "text", (c) => c.primaryKey())
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("sha256", "text")
    .addColumn("size", big)
    .addColumn("content_type", "text")
    .addColumn("filename", "text")
    .addColumn("created_ts", big, (c) => c.notNull())
    .addColumn("uploaded_ts", big)
    .addColumn("unused_expires_ts", big)
    .execute();
  await db.schema.createIndex("media_user").on("media").columns(["user_id", "created_ts"]).execute();
  await db.schema.createIndex("media_sha256").on("media").column("sha256").execute();

  await db.schema
    .createTable("media_thumbnails")
    .addColumn("source_sha256", "text", (c) => c.notNull())
    .addColumn("width", "integer", (c) => c.notNull())
    .addColumn("height", "integer", (c) => c.notNull())
    .addColumn("method", "text", (c) => c.notNull())
    .addColumn("sha256", "text", (c) => c.notNull())
    .addColumn("content_type", "text", (c) => c.notNull())
    .addColumn("size", big, (c) => c.notNull())
    .addColumn("created_ts", big, (c) => c.notNull())
    .addPrimaryKeyConstraint("media_thumbnails_pk", ["source_sha256", "width", "height", "method"])
    .execute();
}
