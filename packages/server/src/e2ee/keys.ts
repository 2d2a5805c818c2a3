import { sql } from "kysely";
import { MatrixError, parseUserId } from "@revier/protocol";
import type { Db, Tx } from "../storage/database.js";
import type { Dialect } from "../storage/schema.js";
import type { StreamWriter } from "../storage/stream.js";
import { verifyJsonSignature } from "../rooms/event-crypto.js";
import { recordDeviceListChange } from "./device-lists.js";
import { chunks } from "../lib/chunks.js";
import { prepared } from "../storage/prepared.js";
import {
  LIMITS,
  checkCrossSigningKey,
  checkDeviceKeys,
  checkKeyMap,
  isObject,
  signedPart,
  type CheckedKey,
  type CrossSigningUsage,
  type DeviceKeys,
  type Json,
  type Signatures,
} from "./validate.js";

export interface UploadKeysRequest {
  device_keys?: unknown;
  one_time_keys?: unknown;
  fallback_keys?: unknown;
}

export interface QueryKeysResult {
  device_keys: Record<string, Record<string, Json>>;
  master_keys: Record<string, Json>;
  self_signing_keys: Record<string, Json>;
  user_signing_keys: Record<string, Json>;
  failures: Record<string, Json>;
}

export interface ClaimKeysResult {
  one_time_keys: Record<string, Record<string, Record<string, unknown>>>;
  failures: Record<string, Json>;
}

export interface CrossSigningUpload {
  master_key?: unknown;
  self_signing_key?: unknown;
  user_signing_key?: unknown;
}

interface CheckedCrossSigning {
  keys: Array<{ type: CrossSigningUsage; key: Json; publicKey: string }>;
}

const USAGES: Array<[CrossSigningUsage, keyof CrossSigningUpload]> = [
  ["master", "master_key"],
  ["self_signing", "self_signing_key"],
  ["user_signing", "user_signing_key"],
];

/** Most users and devices one /keys/query or /keys/claim may name. */
export const MAX_QUERY_USERS = 10_000;
export const MAX_CLAIM_DEVICES = 20_000;

// Every /keys/upload answer reports them (/sync reads them with deviceSyncState): compiled once.
const selectKeyCounts = prepared((db, userId: string, deviceId: string) =>
  db
    .selectFrom("e2e_one_time_keys")
    .select(["algorithm", (eb) => eb.fn.countAll<number>().as("n")])
    .where("user_id", "=", userId)
    .where("device_id", "=", deviceId)
    .groupBy("algorithm"),
);

// Every /sync answer runs it (deviceSyncState): compiled once.
const selectDeviceSyncState = prepared(
  (_db, userId: string, deviceId: string, acknowledged: number) => sql<{ kind: string; algorithm: string; n: number | string }>`
      select 'otk' as kind, algorithm, count(*) as n from e2e_one_time_keys where user_id = ${userId} and device_id = ${deviceId} group by algorithm
      union all
      select 'fallback' as kind, algorithm, 0 as n from e2e_fallback_keys where user_id = ${userId} and device_id = ${deviceId} and used = 0
      union all
      select 'delivered' as kind, '' as algorithm, 1 as n where exists (select 1 from device_inbox where user_id = ${userId} and device_id = ${deviceId} and stream_pos <= ${acknowledged})`,
);

/**
 * Device keys, one-time and fallback keys, cross-signing keys and signatures. Key material is
 * stored as uploaded; the server never holds a private key.
 */
export class E2eeKeys {
  constructor(
    private readonly db: Db,
    private readonly dialect: Dialect,
    private readonly stream: StreamWriter,
    private readonly serverName: string,
  ) {}

  // ---- /keys/upload ------------------------------------------------------------------------

  /**
   * Stores device keys, one-time keys and fallback keys in one transaction: everything is checked
   * first, so a refused upload stores nothing.
   */
  async upload(userId: string, deviceId: string, req: UploadKeysRequest): Promise<Record<string, number>> {
    const stored = await this.deviceEd25519(this.db, userId, deviceId);
    const device = req.device_keys !== undefined && req.device_keys !== null ? checkDeviceKeys(req.device_keys, userId, deviceId) : undefined;
    const ed25519 = device?.ed25519 ?? stored;
    const otks = req.one_time_keys !== undefined && req.one_time_keys !== null ? checkKeyMap(req.one_time_keys, "one_time_keys", { userId, deviceId, ed25519, max: LIMITS.oneTimeKeysPerUpload }) : [];
    const fallbacks = req.fallback_keys !== undefined && req.fallback_keys !== null ? checkKeyMap(req.fallback_keys, "fallback_keys", { userId, deviceId, ed25519, max: LIMITS.fallbackKeysPerUpload }) : [];
    const fallbackAlgorithms = new Set<string>();
    for (const k of fallbacks) {
      if (fallbackAlgorithms.has(k.algorithm)) throw new MatrixError("M_BAD_JSON", `fallback_keys holds more than one ${k.algorithm} key`);
      fallbackAlgorithms.add(k.algorithm);
    }

    if (device || otks.length > 0 || fallbacks.length > 0) {
      await this.stream.write(async (w) => {
        const tx = w.tx;
        if (device) {
          const existing = await tx.selectFrom("e2e_device_keys").select("key_json").where("user_id", "=", userId).where("device_id", "=", deviceId).executeTakeFirst();
          const next = JSON.stringify(device.keys);
          if (!existing) {
            await tx.insertInto("e2e_device_keys").values({ user_id: userId, device_id: deviceId, key_json: next, ed25519: device.ed25519 }).execute();
            await recordDeviceListChange(w, userId);
          } else if (existing.key_json !== next) {
            const old = JSON.parse(existing.key_json) as DeviceKeys;
            // A device's identity keys never change: different keys under a known device id are
            // either a client that lost its state or an impersonation attempt.
            if (!sameKeys(old.keys, device.keys.keys)) {
              throw new MatrixError("M_INVALID_PARAM", "This device already has different identity keys; log in again as a new device");
            }
            await tx.updateTable("e2e_device_keys").set({ key_json: next }).where("user_id", "=", userId).where("device_id", "=", deviceId).execute();
            await recordDeviceListChange(w, userId);
          }
        }
        await this.storeOneTimeKeys(tx, userId, deviceId, otks);
        for (const k of fallbacks) await this.storeFallbackKey(tx, userId, deviceId, k);
        if (otks.length > 0 || fallbacks.length > 0) {
          w.next();
          w.keysChanged([userId]);
        }
        // Replayable (storage/stream.ts): only the transaction's rows; the keys were checked before.
      }, { replayable: true });
    }
    return this.oneTimeKeyCounts(userId, deviceId);
  }

  private async storeOneTimeKeys(tx: Tx, userId: string, deviceId: string, keys: CheckedKey[]): Promise<void> {
    if (keys.length === 0) return;
    const existing = new Map<string, string>();
    for (const batch of chunks(keys.map((k) => k.name))) {
      const rows = await tx
        .selectFrom("e2e_one_time_keys")
        .select(["algorithm", "key_id", "key_json"])
        .where("user_id", "=", userId)
        .where("device_id", "=", deviceId)
        .where(sql<string>`algorithm || ':' || key_id`, "in", batch)
        .execute();
      for (const r of rows) existing.set(`${r.algorithm}:${r.key_id}`, r.key_json);
    }
    const fresh: CheckedKey[] = [];
    for (const k of keys) {
      const old = existing.get(k.name);
      if (old === undefined) fresh.push(k);
      // Re-sending a key after a lost response is fine; reusing its id for another key is not.
      else if (old !== JSON.stringify(k.value)) throw new MatrixError("M_INVALID_PARAM", `One-time key ${k.name} already exists with different content`);
    }
    if (fresh.length === 0) return;
    const count = await tx.selectFrom("e2e_one_time_keys").select((eb) => eb.fn.countAll<number>().as("n")).where("user_id", "=", userId).where("device_id", "=", deviceId).executeTakeFirst();
    if (Number(count?.n ?? 0) + fresh.length > LIMITS.oneTimeKeysPerDevice) {
      throw new MatrixError("M_BAD_JSON", `A device may hold at most ${LIMITS.oneTimeKeysPerDevice} unclaimed one-time keys`);
    }
    for (const batch of chunks(fresh, 100)) {
      await tx
        .insertInto("e2e_one_time_keys")
        .values(batch.map((k) => ({ user_id: userId, device_id: deviceId, algorithm: k.algorithm, key_id: k.keyId, key_json: JSON.stringify(k.value) })))
        .execute();
    }
  }

  private async storeFallbackKey(tx: Tx, userId: string, deviceId: string, k: CheckedKey): Promise<void> {
    const json = JSON.stringify(k.value);
    const old = await tx
      .selectFrom("e2e_fallback_keys")
      .select(["key_id", "key_json"])
      .where("user_id", "=", userId)
      .where("device_id", "=", deviceId)
      .where("algorithm", "=", k.algorithm)
      .executeTakeFirst();
    // The same key sent again keeps its used flag; a new key starts unused.
    if (old && old.key_id === k.keyId && old.key_json === json) return;
    await tx
      .insertInto("e2e_fallback_keys")
      .values({ user_id: userId, device_id: deviceId, algorithm: k.algorithm, key_id: k.keyId, key_json: json, used: 0 })
      .onConflict((oc) => oc.columns(["user_id", "device_id", "algorithm"]).doUpdateSet({ key_id: k.keyId, key_json: json, used: 0 }))
      .execute();
  }

  /** Unclaimed one-time keys per algorithm; signed_curve25519 is always present so clients see a zero. */
  /**
   * What every /sync reports or does for one device, in one statement instead of three: its
   * one-time key counts, its unused fallback key types, and whether to-device messages up to
   * `acknowledged` wait to be deleted (see ToDevice.deliver).
   */
  async deviceSyncState(userId: string, deviceId: string, acknowledged: number): Promise<{ counts: Record<string, number>; fallbacks: string[]; delivered: boolean }> {
    const rows = await selectDeviceSyncState(this.db, userId, deviceId, acknowledged);
    const counts: Record<string, number> = { signed_curve25519: 0 };
    const fallbacks: string[] = [];
    let delivered = false;
    for (const r of rows) {
      if (r.kind === "otk") counts[r.algorithm] = Number(r.n);
      else if (r.kind === "fallback") fallbacks.push(r.algorithm);
      else delivered = true;
    }
    return { counts, fallbacks: fallbacks.sort(), delivered };
  }

  async oneTimeKeyCounts(userId: string, deviceId: string): Promise<Record<string, number>> {
    const rows = await selectKeyCounts(this.db, userId, deviceId);
    const out: Record<string, number> = { signed_curve25519: 0 };
    for (const r of rows) out[r.algorithm] = Number(r.n);
    return out;
  }

  private async deviceEd25519(db: Db | Tx, userId: string, deviceId: string): Promise<string | undefined> {
    const row = await db.selectFrom("e2e_device_keys").select("ed25519").where("user_id", "=", userId).where("device_id", "=", deviceId).executeTakeFirst();
    return row?.ed25519;
  }

  // ---- /keys/query -------------------------------------------------------------------------

  /**
   * Device keys and cross-signing keys of the named users. Signatures added later are merged in
   * when the key's owner or the requester made them; a user-signing key is only returned to its
   * owner. Local users that do not exist are left out; remote servers are listed as failures.
   */
  async query(requester: string, request: Record<string, string[]>): Promise<QueryKeysResult> {
    const result: QueryKeysResult = { device_keys: {}, master_keys: {}, self_signing_keys: {}, user_signing_keys: {}, failures: {} };
    const local: string[] = [];
    for (const userId of Object.keys(request)) {
      const parsed = parseUserId(userId);
      if (!parsed) continue;
      if (parsed.server !== this.serverName) {
        result.failures[parsed.server] = { status: 503, message: "Federation is not available on this server" };
        continue;
      }
      local.push(userId);
    }
    if (local.length === 0) return result;

    const existing = new Set<string>();
    for (const batch of chunks(local)) {
      for (const r of await this.db.selectFrom("users").select("user_id").where("user_id", "in", batch).execute()) existing.add(r.user_id);
    }
    const users = local.filter((u) => existing.has(u));
    for (const u of users) result.device_keys[u] = {};

    const extra = await this.extraSignatures(users, requester);
    for (const batch of chunks(users)) {
      const rows = await this.db
        .selectFrom("e2e_device_keys as k")
        .innerJoin("devices as d", (j) => j.onRef("d.user_id", "=", "k.user_id").onRef("d.device_id", "=", "k.device_id"))
        .select(["k.user_id", "k.device_id", "k.key_json", "d.display_name"])
        .where("k.user_id", "in", batch)
        .execute();
      for (const r of rows) {
        const wanted = request[r.user_id] ?? [];
        if (wanted.length > 0 && !wanted.includes(r.device_id)) continue;
        const keys = JSON.parse(r.key_json) as Json;
        mergeSignatures(keys, extra.get(`${r.user_id}\u0000${r.device_id}`));
        keys.unsigned = r.display_name !== null ? { device_display_name: r.display_name } : {};
        result.device_keys[r.user_id]![r.device_id] = keys;
      }
      const cs = await this.db.selectFrom("e2e_cross_signing_keys").select(["user_id", "key_type", "public_key", "key_json"]).where("user_id", "in", batch).execute();
      for (const r of cs) {
        const key = JSON.parse(r.key_json) as Json;
        mergeSignatures(key, extra.get(`${r.user_id}\u0000${r.public_key}`));
        if (r.key_type === "master") result.master_keys[r.user_id] = key;
        else if (r.key_type === "self_signing") result.self_signing_keys[r.user_id] = key;
        else if (r.key_type === "user_signing" && r.user_id === requester) result.user_signing_keys[r.user_id] = key;
      }
    }
    return result;
  }

  /** Signatures from /keys/signatures/upload on these users' keys that `requester` may see. */
  private async extraSignatures(users: string[], requester: string): Promise<Map<string, Signatures>> {
    const out = new Map<string, Signatures>();
    for (const batch of chunks(users)) {
      const rows = await this.db
        .selectFrom("e2e_signatures")
        .selectAll()
        .where("target_user_id", "in", batch)
        .where((eb) => eb.or([eb("signer_user_id", "=", eb.ref("target_user_id")), eb("signer_user_id", "=", requester)]))
        .execute();
      for (const r of rows) {
        const k = `${r.target_user_id}\u0000${r.target_key_id}`;
        let sigs = out.get(k);
        if (!sigs) out.set(k, (sigs = {}));
        (sigs[r.signer_user_id] ??= {})[r.signer_key_id] = r.signature;
      }
    }
    return out;
  }

  // ---- /keys/claim -------------------------------------------------------------------------

  /**
   * Hands out one one-time key per requested device, oldest first, or the device's fallback key
   * when none is left. A one-time key is deleted in the statement that returns it, so no two
   * claims can ever get the same key.
   */
  async claim(request: Record<string, Record<string, string>>): Promise<ClaimKeysResult> {
    const result: ClaimKeysResult = { one_time_keys: {}, failures: {} };
    const wanted: Array<{ userId: string; deviceId: string; algorithm: string }> = [];
    for (const [userId, byDevice] of Object.entries(request)) {
      const parsed = parseUserId(userId);
      if (!parsed) continue;
      if (parsed.server !== this.serverName) {
        result.failures[parsed.server] = { status: 503, message: "Federation is not available on this server" };
        continue;
      }
      for (const [deviceId, algorithm] of Object.entries(byDevice)) wanted.push({ userId, deviceId, algorithm });
    }
    // One transaction for the whole request: a room's first message claims for every member's
    // devices at once, and one commit is far cheaper than thousands. Not a stream write: that
    // would hold every process's writers behind a thousand statements.
    for (const batch of chunks(wanted, 1000)) {
      const claimed = new Set<string>();
      await this.db.transaction().execute(async (tx) => {
        for (const w of batch) {
          const key = (await this.takeOneTimeKey(tx, w.userId, w.deviceId, w.algorithm)) ?? (await this.useFallbackKey(tx, w.userId, w.deviceId, w.algorithm));
          if (!key) continue;
          claimed.add(w.userId);
          ((result.one_time_keys[w.userId] ??= {})[w.deviceId] ??= {})[`${w.algorithm}:${key.key_id}`] = JSON.parse(key.key_json) as unknown;
        }
      });
      // Their owners' next /sync must show the lower counts, whichever process answers it.
      await this.stream.announceKeyChanges(claimed);
    }
    return result;
  }

  private async takeOneTimeKey(tx: Tx, userId: string, deviceId: string, algorithm: string): Promise<{ key_id: string; key_json: string } | undefined> {
    // PostgreSQL: a concurrent claim that locked the oldest key makes this one skip to the next
    // key instead of waiting and then finding its choice gone. SQLite runs one writer at a time.
    const lock = this.dialect === "postgres" ? sql`for update skip locked` : sql``;
    const rows = await sql<{ key_id: string; key_json: string }>`
      delete from e2e_one_time_keys
      where id = (
        select id from e2e_one_time_keys
        where user_id = ${userId} and device_id = ${deviceId} and algorithm = ${algorithm}
        order by id
        limit 1
        ${lock}
      )
      returning key_id, key_json`.execute(tx);
    return rows.rows[0];
  }

  private async useFallbackKey(tx: Tx, userId: string, deviceId: string, algorithm: string): Promise<{ key_id: string; key_json: string } | undefined> {
    return tx
      .updateTable("e2e_fallback_keys")
      .set({ used: 1 })
      .where("user_id", "=", userId)
      .where("device_id", "=", deviceId)
      .where("algorithm", "=", algorithm)
      .returning(["key_id", "key_json"])
      .executeTakeFirst();
  }

  // ---- cross-signing -----------------------------------------------------------------------

  /**
   * Checks an upload of cross-signing keys and tells whether it needs user-interactive auth: the
   * spec lets a user publish a first master key, or repeat exactly the keys already published,
   * without it; replacing keys requires it.
   */
  async checkCrossSigningUpload(userId: string, body: CrossSigningUpload): Promise<{ checked: CheckedCrossSigning; needsAuth: boolean }> {
    const current = await this.crossSigningKeys(this.db, userId);
    const keys: CheckedCrossSigning["keys"] = [];
    for (const [type, field] of USAGES) {
      const v = body[field];
      if (v === undefined || v === null) continue;
      const { key, publicKey } = checkCrossSigningKey(v, field, userId, type);
      keys.push({ type, key, publicKey });
    }
    if (keys.length === 0) throw new MatrixError("M_MISSING_PARAM", "No cross-signing keys given");
    const master = keys.find((k) => k.type === "master")?.publicKey ?? current.get("master")?.publicKey;
    if (master === undefined) throw new MatrixError("M_MISSING_PARAM", "No master signing key is available");
    for (const k of keys) {
      if (k.type === "master") continue;
      if (!verifyJsonSignature(k.key, userId, `ed25519:${master}`, master)) {
        throw new MatrixError("M_INVALID_SIGNATURE", `The ${k.type.replace("_", "-")} key is not signed by the master key`);
      }
    }
    const clashes = await this.db
      .selectFrom("devices")
      .select("device_id")
      .where("user_id", "=", userId)
      .where(
        "device_id",
        "in",
        keys.map((k) => k.publicKey),
      )
      .execute();
    if (clashes.length > 0) throw new MatrixError("M_FORBIDDEN", "Key ID in use: a cross-signing public key equals one of your device ids");
    const hasMaster = current.has("master");
    const unchanged = keys.every((k) => current.get(k.type)?.json === JSON.stringify(k.key));
    return { checked: { keys }, needsAuth: hasMaster && !unchanged };
  }

  async storeCrossSigning(userId: string, checked: CheckedCrossSigning): Promise<void> {
    await this.stream.write(async (w) => {
      let changed = false;
      for (const k of checked.keys) {
        const json = JSON.stringify(k.key);
        const old = await w.tx.selectFrom("e2e_cross_signing_keys").select("key_json").where("user_id", "=", userId).where("key_type", "=", k.type).executeTakeFirst();
        if (old?.key_json === json) continue;
        await w.tx
          .insertInto("e2e_cross_signing_keys")
          .values({ user_id: userId, key_type: k.type, public_key: k.publicKey, key_json: json })
          .onConflict((oc) => oc.columns(["user_id", "key_type"]).doUpdateSet({ public_key: k.publicKey, key_json: json }))
          .execute();
        changed = true;
      }
      if (changed) await recordDeviceListChange(w, userId);
    });
  }

  private async crossSigningKeys(db: Db | Tx, userId: string): Promise<Map<string, { publicKey: string; json: string }>> {
    const rows = await db.selectFrom("e2e_cross_signing_keys").select(["key_type", "public_key", "key_json"]).where("user_id", "=", userId).execute();
    return new Map(rows.map((r) => [r.key_type, { publicKey: r.public_key, json: r.key_json }]));
  }

  /**
   * Stores signatures a user made: its self-signing key on its own devices, its devices on its own
   * master key, its user-signing key on other users' master keys. Each signature is verified
   * against the stored key it covers; failures are reported per key and the rest are kept.
   */
  async uploadSignatures(signer: string, body: Record<string, unknown>): Promise<Record<string, Record<string, Json>>> {
    // Keyed by what the client sent: prototype-less, so a user id of `__proto__` is just a key.
    const failures = Object.create(null) as Record<string, Record<string, Json>>;
    const fail = (userId: string, keyId: string, errcode: string, error: string) => {
      (failures[userId] ??= Object.create(null) as Record<string, Json>)[keyId] = { errcode, error };
    };
    const own = await this.crossSigningKeys(this.db, signer);
    const accepted: Array<{ targetUser: string; targetKey: string; signerKey: string; signature: string }> = [];

    for (const [targetUser, byKey] of Object.entries(body)) {
      if (!isObject(byKey)) {
        fail(targetUser, "*", "M_BAD_JSON", "Expected a map of key ids to signed objects");
        continue;
      }
      for (const [keyId, signed] of Object.entries(byKey)) {
        if (!isObject(signed) || !isObject(signed.signatures) || !isObject(signed.signatures[signer])) {
          fail(targetUser, keyId, "M_BAD_JSON", "The signed object carries no signatures by you");
          continue;
        }
        const target = await this.signatureTarget(signer, targetUser, keyId, own);
        if ("error" in target) {
          fail(targetUser, keyId, target.errcode, target.error);
          continue;
        }
        let stored: string;
        try {
          stored = signedPart(target.json);
          if (signedPart(signed) !== stored) {
            fail(targetUser, keyId, "M_INVALID_SIGNATURE", "The signed object does not match the stored key");
            continue;
          }
        } catch {
          fail(targetUser, keyId, "M_BAD_JSON", "The signed object is not valid canonical JSON");
          continue;
        }
        const sigs = signed.signatures[signer] as Record<string, unknown>;
        let good = 0;
        let badSig = false;
        for (const [signerKey, signature] of Object.entries(sigs)) {
          const publicKey = target.signers.get(signerKey);
          if (publicKey === undefined) continue;
          if (typeof signature !== "string" || signature.length > LIMITS.valueLength || !verifyJsonSignature({ ...target.json, signatures: { [signer]: { [signerKey]: signature } } }, signer, signerKey, publicKey)) {
            badSig = true;
            continue;
          }
          accepted.push({ targetUser, targetKey: target.keyId, signerKey, signature });
          good++;
        }
        if (badSig || good === 0) fail(targetUser, keyId, "M_INVALID_SIGNATURE", good === 0 && !badSig ? "No signature by a key that may sign this key" : "Invalid signature");
      }
    }

    if (accepted.length > 0) {
      await this.stream.write(async (w) => {
        for (const a of accepted) {
          await w.tx
            .insertInto("e2e_signatures")
            .values({ target_user_id: a.targetUser, target_key_id: a.targetKey, signer_user_id: signer, signer_key_id: a.signerKey, signature: a.signature })
            .onConflict((oc) => oc.columns(["target_user_id", "target_key_id", "signer_user_id", "signer_key_id"]).doUpdateSet({ signature: a.signature }))
            .execute();
        }
        if (accepted.some((a) => a.targetUser === signer)) await recordDeviceListChange(w, signer);
        const others = [...new Set(accepted.filter((a) => a.targetUser !== signer).map((a) => a.targetUser))];
        if (others.length > 0) {
          const pos = w.next();
          for (const t of others) {
            await w.tx
              .insertInto("e2e_signature_notices")
              .values({ user_id: signer, target_user_id: t, stream_pos: pos })
              .onConflict((oc) => oc.columns(["user_id", "target_user_id"]).doUpdateSet({ stream_pos: pos }))
              .execute();
          }
          w.touch({ users: [signer] });
        }
      });
    }
    return failures;
  }

  /** The stored key a signature upload refers to, and which of the signer's keys may sign it. */
  private async signatureTarget(
    signer: string,
    targetUser: string,
    keyId: string,
    own: Map<string, { publicKey: string; json: string }>,
  ): Promise<{ json: Json; keyId: string; signers: Map<string, string> } | { errcode: string; error: string }> {
    if (targetUser === signer) {
      const device = await this.db.selectFrom("e2e_device_keys").select("key_json").where("user_id", "=", signer).where("device_id", "=", keyId).executeTakeFirst();
      if (device) {
        const ssk = own.get("self_signing");
        if (!ssk) return { errcode: "M_MISSING_PARAM", error: "You have no self-signing key to sign devices with" };
        return { json: JSON.parse(device.key_json) as Json, keyId, signers: new Map([[`ed25519:${ssk.publicKey}`, ssk.publicKey]]) };
      }
      const master = own.get("master");
      if (master && master.publicKey === keyId) {
        const devices = await this.db.selectFrom("e2e_device_keys").select(["device_id", "ed25519"]).where("user_id", "=", signer).execute();
        return { json: JSON.parse(master.json) as Json, keyId, signers: new Map(devices.map((d) => [`ed25519:${d.device_id}`, d.ed25519])) };
      }
      return { errcode: "M_NOT_FOUND", error: "No such device or key" };
    }
    const usk = own.get("user_signing");
    if (!usk) return { errcode: "M_MISSING_PARAM", error: "You have no user-signing key to sign other users with" };
    const theirs = await this.db.selectFrom("e2e_cross_signing_keys").select(["public_key", "key_json"]).where("user_id", "=", targetUser).where("key_type", "=", "master").executeTakeFirst();
    if (!theirs || theirs.public_key !== keyId) return { errcode: "M_NOT_FOUND", error: "Other users' keys can only be signed through their master key" };
    return { json: JSON.parse(theirs.key_json) as Json, keyId, signers: new Map([[`ed25519:${usk.publicKey}`, usk.publicKey]]) };
  }

  // ---- device removal ----------------------------------------------------------------------

  /**
   * Forgets every key of a removed device and the signatures on it. A stream write so that a
   * device logging in again under the same id is not shown the old device's key counts.
   */
  async removeDevice(userId: string, deviceId: string): Promise<void> {
    await this.stream.write(async (w) => {
      const tx = w.tx;
      w.next();
      w.keysChanged([userId]);
      await tx.deleteFrom("e2e_device_keys").where("user_id", "=", userId).where("device_id", "=", deviceId).execute();
      await tx.deleteFrom("e2e_one_time_keys").where("user_id", "=", userId).where("device_id", "=", deviceId).execute();
      await tx.deleteFrom("e2e_fallback_keys").where("user_id", "=", userId).where("device_id", "=", deviceId).execute();
      await tx.deleteFrom("e2e_signatures").where("target_user_id", "=", userId).where("target_key_id", "=", deviceId).execute();
      await tx.deleteFrom("e2e_signatures").where("signer_user_id", "=", userId).where("signer_key_id", "=", `ed25519:${deviceId}`).execute();
    });
  }
}

function sameKeys(a: unknown, b: unknown): boolean {
  if (!isObject(a) || !isObject(b)) return false;
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
}

function mergeSignatures(obj: Json, extra: Signatures | undefined): void {
  if (!extra) return;
  const sigs: Signatures = isObject(obj.signatures) ? { ...(obj.signatures as Signatures) } : {};
  for (const [user, byKey] of Object.entries(extra)) sigs[user] = { ...(sigs[user] ?? {}), ...byKey };
  obj.signatures = sigs;
}
