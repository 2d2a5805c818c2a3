import type { Kysely } from "kysely";
import type { Dialect } from "../schema.js";

/**
 * End-to-end encryption: device identity keys, one-time and fallback keys, cross-signing keys and
 * the signatures users add to them, and server-side key backups. Key material is stored as the
 * client uploaded it (JSON text): signatures cover it byte for byte after canonicalisation.
 */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  const big = dialect === "postgres" ? "bigint" : "integer";
  const autoId = dialect === "postgres" ? "bigserial" : "integer";

  await db.schema
    .createTable("e2e_device_keys")
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("device_id", "text", (c) => c.notNull())
    .addColumn("key_json", "text", (c) => c.notNull())
    .addColumn("ed25519", "text", (c) => c.notNull())
    .addPrimaryKeyConstraint("e2e_device_keys_pk", ["user_id", "device_id"])
    .execute();

  // `id` records upload order: the spec hands one-time keys out oldest first.
  await db.schema
    .createTable("e2e_one_time_keys")
    .addColumn("id", autoId, (c) => (dialect === "postgres" ? c.primaryKey() : c.primaryKey().autoIncrement()))
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("device_id", "text", (c) => c.notNull())
    .addColumn("algorithm", "text", (c) => c.notNull())
    .addColumn("key_id", "text", (c) => c.notNull())
    .addColumn("key_json", "text", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("e2e_one_time_keys_key").on("e2e_one_time_keys").columns(["user_id", "device_id", "algorithm", "key_id"]).unique().execute();
  await db.schema.createIndex("e2e_one_time_keys_claim").on("e2e_one_time_keys").columns(["user_id", "device_id", "algorithm", "id"]).execute();

  await db.schema
    .createTable("e2e_fallback_keys")
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("device_id", "text", (c) => c.notNull())
    .addColumn("algorithm", "text", (c) => c.notNull())
    .addColumn("key_id", "text", (c) => c.notNull())
    .addColumn("key_json", "text", (c) => c.notNull())
    .addColumn("used", "integer", (c) => c.notNull().defaultTo(0))
    .addPrimaryKeyConstraint("e2e_fallback_keys_pk", ["user_id", "device_id", "algorithm"])
    .execute();

  await db.schema
    .createTable("e2e_cross_signing_keys")
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("key_type", "text", (c) => c.notNull())
    .addColumn("public_key", "text", (c) => c.notNull())
    .addColumn("key_json", "text", (c) => c.notNull())
    .addPrimaryKeyConstraint("e2e_cross_signing_keys_pk", ["user_id", "key_type"])
    .execute();

  // Signatures added later through /keys/signatures/upload: a self-signing key signing a device,
  // a device signing the master key, or another user's user-signing key signing a master key.
  await db.schema
    .createTable("e2e_signatures")
    .addColumn("target_user_id", "text", (c) => c.notNull())
    .addColumn("target_key_id", "text", (c) => c.notNull())
    .addColumn("signer_user_id", "text", (c) => c.notNull())
    .addColumn("signer_key_id", "text", (c) => c.notNull())
    .addColumn("signature", "text", (c) => c.notNull())
    .addPrimaryKeyConstraint("e2e_signatures_pk", ["target_user_id", "target_key_id", "signer_user_id", "signer_key_id"])
    .execute();

  // Only the signer may see a signature on another user's master key, so only the signer's own
  // devices are told to look again; this records that per signer, at a stream position.
  await db.schema
    .createTable("e2e_signature_notices")
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("target_user_id", "text", (c) => c.notNull())
    .addColumn("stream_pos", big, (c) => c.notNull())
    .addPrimaryKeyConstraint("e2e_signature_notices_pk", ["user_id", "target_user_id"])
    .execute();

  // Deleted versions stay as rows so a version number is never handed out twice.
  await db.schema
    .createTable("e2e_room_keys_versions")
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("version", big, (c) => c.notNull())
    .addColumn("algorithm", "text", (c) => c.notNull())
    .addColumn("auth_data", "text", (c) => c.notNull())
    .addColumn("etag", big, (c) => c.notNull().defaultTo(0))
    .addColumn("deleted", "integer", (c) => c.notNull().defaultTo(0))
    .addPrimaryKeyConstraint("e2e_room_keys_versions_pk", ["user_id", "version"])
    .execute();

  await db.schema
    .createTable("e2e_room_keys")
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("version", big, (c) => c.notNull())
    .addColumn("room_id", "text", (c) => c.notNull())
    .addColumn("session_id", "text", (c) => c.notNull())
    .addColumn("first_message_index", big, (c) => c.notNull())
    .addColumn("forwarded_count", big, (c) => c.notNull())
    .addColumn("is_verified", "integer", (c) => c.notNull())
    .addColumn("session_data", "text", (c) => c.notNull())
    .addPrimaryKeyConstraint("e2e_room_keys_pk", ["user_id", "version", "room_id", "session_id"])
    .execute();
}
