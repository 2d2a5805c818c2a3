import { MatrixError } from "@revier/protocol";
import type { Db, Tx } from "../storage/database.js";
import { canonicalJson } from "../lib/canonical-json.js";
import { isObject, type Json } from "./validate.js";

export interface BackupVersionInfo {
  algorithm: string;
  auth_data: Json;
  count: number;
  etag: string;
  version: string;
}

export interface KeyBackupData {
  first_message_index: number;
  forwarded_count: number;
  is_verified: boolean;
  session_data: Json;
}

export interface BackupUpdateResult {
  etag: string;
  count: number;
}

/** Bounds on what one backed-up session and one backup's metadata may weigh. */
export const BACKUP_LIMITS = { sessionDataBytes: 64 * 1024, authDataBytes: 64 * 1024, idLength: 255 } as const;

type Rooms = Record<string, { sessions: Record<string, KeyBackupData> }>;

/**
 * Server-side key backup: encrypted room keys the server stores for the user without being able
 * to read them. Versions are numbered per user and never reused; only the newest version accepts
 * new keys.
 */
export class KeyBackup {
  constructor(private readonly db: Db) {}

  async create(userId: string, algorithm: string, authData: Json): Promise<string> {
    checkAuthData(authData);
    // Two devices creating a backup at the same moment pick the same number; the loser retries.
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.db.transaction().execute(async (tx) => {
          const row = await tx.selectFrom("e2e_room_keys_versions").select((eb) => eb.fn.max("version").as("v")).where("user_id", "=", userId).executeTakeFirst();
          const version = Number(row?.v ?? 0) + 1;
          await tx.insertInto("e2e_room_keys_versions").values({ user_id: userId, version, algorithm, auth_data: JSON.stringify(authData), etag: 0, deleted: 0 }).execute();
          return String(version);
        });
      } catch (err) {
        if (attempt >= 3) throw err;
      }
    }
  }

  /** The newest backup, or the given version; undefined when there is none (or it was deleted). */
  async info(userId: string, version?: string): Promise<BackupVersionInfo | undefined> {
    const row = await this.versionRow(this.db, userId, version);
    if (!row) return undefined;
    return { algorithm: row.algorithm, auth_data: JSON.parse(row.auth_data) as Json, count: await this.count(this.db, userId, row.version), etag: String(row.etag), version: String(row.version) };
  }

  async update(userId: string, version: string, body: { algorithm: string; auth_data: Json; version?: string }): Promise<void> {
    if (body.version !== undefined && body.version !== version) throw new MatrixError("M_INVALID_PARAM", "The version in the body does not match the version in the path");
    checkAuthData(body.auth_data);
    const row = await this.versionRow(this.db, userId, version);
    if (!row) throw new MatrixError("M_NOT_FOUND", "Unknown backup version");
    if (row.algorithm !== body.algorithm) throw new MatrixError("M_INVALID_PARAM", "Algorithm does not match the backup's algorithm");
    await this.db.updateTable("e2e_room_keys_versions").set({ auth_data: JSON.stringify(body.auth_data) }).where("user_id", "=", userId).where("version", "=", row.version).execute();
  }

  /** Deletes a version and its keys; deleting an already deleted version succeeds. */
  async deleteVersion(userId: string, version: string): Promise<void> {
    const v = parseVersion(version);
    if (v === undefined) throw new MatrixError("M_NOT_FOUND", "Unknown backup version");
    await this.db.transaction().execute(async (tx) => {
      const row = await tx.selectFrom("e2e_room_keys_versions").select("deleted").where("user_id", "=", userId).where("version", "=", v).executeTakeFirst();
      if (!row) throw new MatrixError("M_NOT_FOUND", "Unknown backup version");
      await tx.deleteFrom("e2e_room_keys").where("user_id", "=", userId).where("version", "=", v).execute();
      await tx.updateTable("e2e_room_keys_versions").set({ deleted: 1 }).where("user_id", "=", userId).where("version", "=", v).execute();
    });
  }

  /**
   * Stores keys into the current backup. An existing session is replaced only by a better copy:
   * verified beats unverified, then a lower first message index (it decrypts more), then a lower
   * forwarded count (fewer hops).
   */
  async put(userId: string, version: string, rooms: Rooms): Promise<BackupUpdateResult> {
    for (const [roomId, room] of Object.entries(rooms)) {
      checkId(roomId, "room id");
      for (const [sessionId, data] of Object.entries(room.sessions)) {
        checkId(sessionId, "session id");
        checkSessionData(data);
      }
    }
    return this.db.transaction().execute(async (tx) => {
      const current = await this.versionRow(tx, userId);
      if (!current) throw new MatrixError("M_NOT_FOUND", "No backup exists");
      if (String(current.version) !== version) {
        throw new MatrixError("M_WRONG_ROOM_KEYS_VERSION", "Wrong backup version", { extra: { current_version: String(current.version) } });
      }
      let changed = false;
      for (const [roomId, room] of Object.entries(rooms)) {
        for (const [sessionId, data] of Object.entries(room.sessions)) {
          const old = await tx
            .selectFrom("e2e_room_keys")
            .select(["first_message_index", "forwarded_count", "is_verified"])
            .where("user_id", "=", userId)
            .where("version", "=", current.version)
            .where("room_id", "=", roomId)
            .where("session_id", "=", sessionId)
            .executeTakeFirst();
          if (old && !isBetter(data, { first_message_index: Number(old.first_message_index), forwarded_count: Number(old.forwarded_count), is_verified: old.is_verified === 1 })) continue;
          const values = {
            first_message_index: data.first_message_index,
            forwarded_count: data.forwarded_count,
            is_verified: data.is_verified ? 1 : 0,
            session_data: JSON.stringify(data.session_data),
          };
          await tx
            .insertInto("e2e_room_keys")
            .values({ user_id: userId, version: current.version, room_id: roomId, session_id: sessionId, ...values })
            .onConflict((oc) => oc.columns(["user_id", "version", "room_id", "session_id"]).doUpdateSet(values))
            .execute();
          changed = true;
        }
      }
      return this.bumpEtag(tx, userId, current.version, changed);
    });
  }

  async get(userId: string, version: string, roomId?: string, sessionId?: string): Promise<Rooms> {
    const row = await this.versionRow(this.db, userId, version);
    if (!row) throw new MatrixError("M_NOT_FOUND", "Unknown backup version");
    let q = this.db
      .selectFrom("e2e_room_keys")
      .select(["room_id", "session_id", "first_message_index", "forwarded_count", "is_verified", "session_data"])
      .where("user_id", "=", userId)
      .where("version", "=", row.version);
    if (roomId !== undefined) q = q.where("room_id", "=", roomId);
    if (sessionId !== undefined) q = q.where("session_id", "=", sessionId);
    // Room and session ids are whatever clients chose: prototype-less maps, so `__proto__` is a key.
    const rooms = Object.create(null) as Rooms;
    for (const r of await q.execute()) {
      (rooms[r.room_id] ??= { sessions: Object.create(null) as Rooms[string]["sessions"] }).sessions[r.session_id] = {
        first_message_index: Number(r.first_message_index),
        forwarded_count: Number(r.forwarded_count),
        is_verified: r.is_verified === 1,
        session_data: JSON.parse(r.session_data) as Json,
      };
    }
    return rooms;
  }

  async delete(userId: string, version: string, roomId?: string, sessionId?: string): Promise<BackupUpdateResult> {
    return this.db.transaction().execute(async (tx) => {
      const row = await this.versionRow(tx, userId, version);
      if (!row) throw new MatrixError("M_NOT_FOUND", "Unknown backup version");
      let q = tx.deleteFrom("e2e_room_keys").where("user_id", "=", userId).where("version", "=", row.version);
      if (roomId !== undefined) q = q.where("room_id", "=", roomId);
      if (sessionId !== undefined) q = q.where("session_id", "=", sessionId);
      const res = await q.executeTakeFirst();
      return this.bumpEtag(tx, userId, row.version, Number(res.numDeletedRows) > 0);
    });
  }

  private async bumpEtag(tx: Tx, userId: string, version: number, changed: boolean): Promise<BackupUpdateResult> {
    const where = tx.updateTable("e2e_room_keys_versions").where("user_id", "=", userId).where("version", "=", version);
    // Incremented in SQL, not from the value read earlier, so concurrent writers cannot reuse an etag.
    if (changed) await where.set((eb) => ({ etag: eb("etag", "+", 1) })).execute();
    const row = await tx.selectFrom("e2e_room_keys_versions").select("etag").where("user_id", "=", userId).where("version", "=", version).executeTakeFirst();
    return { etag: String(row?.etag ?? 0), count: await this.count(tx, userId, version) };
  }

  private async count(db: Db | Tx, userId: string, version: number): Promise<number> {
    const row = await db.selectFrom("e2e_room_keys").select((eb) => eb.fn.countAll<number>().as("n")).where("user_id", "=", userId).where("version", "=", version).executeTakeFirst();
    return Number(row?.n ?? 0);
  }

  /** A live version row: the given one, or the newest when `version` is undefined. */
  private async versionRow(db: Db | Tx, userId: string, version?: string) {
    let q = db.selectFrom("e2e_room_keys_versions").selectAll().where("user_id", "=", userId).where("deleted", "=", 0);
    if (version !== undefined) {
      const v = parseVersion(version);
      if (v === undefined) return undefined;
      q = q.where("version", "=", v);
    } else {
      q = q.orderBy("version", "desc").limit(1);
    }
    return q.executeTakeFirst();
  }
}

/** Versions are decimal numbers we handed out; anything else names no backup. */
function parseVersion(version: string): number | undefined {
  return /^[1-9][0-9]{0,14}$/.test(version) ? Number(version) : undefined;
}

export function isBetter(next: Omit<KeyBackupData, "session_data">, old: Omit<KeyBackupData, "session_data">): boolean {
  if (next.is_verified !== old.is_verified) return next.is_verified;
  if (next.first_message_index !== old.first_message_index) return next.first_message_index < old.first_message_index;
  return next.forwarded_count < old.forwarded_count;
}

function checkId(id: string, what: string): void {
  if (id.length === 0 || id.length > BACKUP_LIMITS.idLength) throw new MatrixError("M_INVALID_PARAM", `Invalid ${what}`);
}

function sizeOf(v: unknown, what: string): number {
  try {
    return Buffer.byteLength(canonicalJson(v), "utf8");
  } catch {
    throw new MatrixError("M_BAD_JSON", `${what} is not valid canonical JSON`);
  }
}

function checkAuthData(authData: Json): void {
  if (sizeOf(authData, "auth_data") > BACKUP_LIMITS.authDataBytes) throw new MatrixError("M_BAD_JSON", `auth_data is larger than ${BACKUP_LIMITS.authDataBytes} bytes`);
}

function checkSessionData(data: KeyBackupData): void {
  if (!isObject(data.session_data)) throw new MatrixError("M_BAD_JSON", "session_data must be an object");
  if (sizeOf(data.session_data, "session_data") > BACKUP_LIMITS.sessionDataBytes) throw new MatrixError("M_BAD_JSON", `session_data is larger than ${BACKUP_LIMITS.sessionDataBytes} bytes`);
}
