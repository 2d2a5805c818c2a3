import type { Kysely } from "kysely";

/**
 * /sync asks, once per short stream window and for everybody at once, who has account data,
 * to-device messages or signature notices in it (sync/window-news.ts). Without an index on the
 * position alone those questions would scan the tables.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.createIndex("account_data_pos").on("account_data").column("stream_pos").execute();
  await db.schema.createIndex("device_inbox_pos").on("device_inbox").column("stream_pos").execute();
  await db.schema.createIndex("e2e_signature_notices_pos").on("e2e_signature_notices").column("stream_pos").execute();
}
