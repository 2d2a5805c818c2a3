import type { Kysely } from "kysely";

/**
 * Each pusher remembers the device that set it, so signing a device out or wiping it also stops
 * its notifications. Pushers from before this migration have no device and stay until their
 * owner or the gateway removes them.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable("pushers").addColumn("device_id", "text").execute();
  await db.schema.createIndex("pushers_device").on("pushers").columns(["user_id", "device_id"]).execute();
}
