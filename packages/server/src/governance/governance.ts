import { sql } from "kysely";
import { MatrixError, type AdminUser, type ImportResponse, type StatsResponse } from "@revier/protocol";
import type { Db } from "../storage/database.js";
import type { Accounts, Role, UserRow } from "../users/accounts.js";
import type { Devices } from "../users/devices.js";
import { randomInt } from "node:crypto";
import { sha256Hex } from "../lib/random.js";
import type { AuditLog } from "./audit.js";
import type { Actor } from "./policy.js";
import { isRole } from "./roles.js";
import { parseCsv } from "./csv.js";

export const ENROLLMENT_CODE_LIFETIME_MS = 15 * 60_000;
const DAY_MS = 86_400_000;
// No 0/O, 1/I/L: codes are read off one screen and typed on another.
const CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789";

export function toAdminUser(u: UserRow): AdminUser {
  return {
    user_id: u.user_id,
    localpart: u.localpart,
    displayname: u.displayname,
    role: isRole(u.role) ? u.role : "user",
    locked: Boolean(u.locked),
    deactivated: Boolean(u.deactivated),
    created_ts: Number(u.created_ts),
  };
}

/** Codes are compared after dropping separators and case, so `abcd-efgh` and `ABCDEFGH` match. */
export function normaliseCode(code: string): string {
  return code.replace(/[\s-]/g, "").toUpperCase();
}

/**
 * The privileged operations behind the admin API and the CLI. Each one changes state and writes
 * exactly one audit entry; callers (HTTP or CLI) decide who the actor is and check permissions.
 */
export class Governance {
  constructor(
    private readonly db: Db,
    private readonly accounts: Accounts,
    private readonly devices: Devices,
    private readonly audit: AuditLog,
  ) {}

  async requireUser(userId: string): Promise<UserRow> {
    const resolved = this.accounts.resolveUserId(userId);
    const user = resolved ? await this.accounts.get(resolved) : undefined;
    if (!user) throw new MatrixError("M_NOT_FOUND", "No such user");
    return user;
  }

  /**
   * Helpdesk may act on ordinary users only. Without this, resetting an administrator's password or
   * enrolling a device for them would let helpdesk sign in as an administrator.
   */
  private requireAuthorityOver(by: Actor, target: UserRow): void {
    if (by.actorRole === "admin" || by.actorRole === "cli" || by.actor === target.user_id) return;
    if (target.role !== "user") throw new MatrixError("M_FORBIDDEN", `Your role (${by.actorRole}) cannot act on an account with the role ${target.role}; ask an administrator`);
  }

  async createUser(by: Actor, req: { localpart: string; displayname?: string | undefined; password?: string | undefined; role?: Role | undefined }): Promise<AdminUser> {
    const row = await this.accounts.create(req.localpart.toLowerCase(), {
      password: req.password ?? null,
      role: req.role ?? "user",
      ...(req.displayname !== undefined ? { displayname: req.displayname } : {}),
    });
    await this.audit.record({ ...by, action: "user.create", target: row.user_id, details: { role: row.role, with_password: req.password !== undefined } });
    return toAdminUser(row);
  }

  /** A locked user keeps their sessions but every request is refused until unlocked. */
  async setLocked(by: Actor, userId: string, locked: boolean): Promise<void> {
    const user = await this.requireUser(userId);
    this.requireAuthorityOver(by, user);
    await this.accounts.setLocked(user.user_id, locked);
    await this.audit.record({ ...by, action: locked ? "user.lock" : "user.unlock", target: user.user_id, details: { was_locked: Boolean(user.locked) } });
  }

  async resetPassword(by: Actor, userId: string, password: string, logoutDevices = true): Promise<void> {
    const user = await this.requireUser(userId);
    this.requireAuthorityOver(by, user);
    await this.accounts.setPassword(user.user_id, password);
    // Removing the devices (not only their tokens) takes their keys out of everyone's device lists,
    // so no client keeps encrypting to a phone that was signed out, and frees the device slots.
    if (logoutDevices) await this.devices.removeAll(user.user_id);
    await this.audit.record({ ...by, action: "user.password_reset", target: user.user_id, details: { logout_devices: logoutDevices } });
  }

  async setRole(by: Actor, userId: string, role: Role): Promise<void> {
    const user = await this.requireUser(userId);
    if (user.role === "admin" && role !== "admin") {
      const admins = await this.db.selectFrom("users").select((eb) => eb.fn.countAll<number>().as("n")).where("role", "=", "admin").where("deactivated", "=", 0).executeTakeFirst();
      // Without an admin only the host's CLI could manage the organisation again.
      if (Number(admins?.n ?? 0) <= 1) throw new MatrixError("M_FORBIDDEN", "This is the last administrator; appoint another one first");
    }
    await this.accounts.setRole(user.user_id, role);
    await this.audit.record({ ...by, action: "user.role", target: user.user_id, details: { old: user.role, new: role } });
  }

  /**
   * Creates accounts from CSV rows `localpart,displayname,role,password` (password optional; a
   * header row starting with `localpart` is skipped). Rows fail independently; one audit entry
   * records the import with what it created.
   */
  async importCsv(by: Actor, text: string): Promise<ImportResponse> {
    const rows: ImportResponse["rows"] = [];
    const created: string[] = [];
    for (const { line, fields } of parseCsv(text)) {
      const [localpartRaw = "", displayname = "", roleRaw = "", password = ""] = fields.map((f) => f.trim());
      if (rows.length === 0 && created.length === 0 && localpartRaw.toLowerCase() === "localpart") continue;
      const localpart = localpartRaw.toLowerCase();
      const fail = (errcode: string, error: string) => rows.push({ line, localpart, errcode, error });
      if (fields.length > 4) {
        fail("M_BAD_JSON", `expected at most 4 columns (localpart,displayname,role,password), got ${fields.length}`);
        continue;
      }
      const role = roleRaw === "" ? "user" : roleRaw.toLowerCase();
      if (!isRole(role)) {
        fail("M_INVALID_PARAM", `unknown role '${roleRaw}' (admin, helpdesk, dpo or user)`);
        continue;
      }
      try {
        const row = await this.accounts.create(localpart, { password: password === "" ? null : password, role, ...(displayname ? { displayname } : {}) });
        created.push(row.user_id);
        rows.push({ line, localpart, user_id: row.user_id });
      } catch (err) {
        if (err instanceof MatrixError) fail(err.toJSON().errcode as string, err.message);
        else throw err;
      }
    }
    const failed = rows.length - created.length;
    await this.audit.record({ ...by, action: "user.import", target: null, details: { created, failed } });
    return { created: created.length, failed, rows };
  }

  async blockedDevices(userId: string): Promise<string[]> {
    const rows = await this.db.selectFrom("blocked_devices").select("device_id").where("user_id", "=", userId).orderBy("device_id").execute();
    return rows.map((r) => r.device_id);
  }

  async isBlocked(userId: string, deviceId: string): Promise<boolean> {
    const row = await this.db.selectFrom("blocked_devices").select("device_id").where("user_id", "=", userId).where("device_id", "=", deviceId).executeTakeFirst();
    return row !== undefined;
  }

  /**
   * Remote wipe: the device's tokens die and its keys go (`Devices.remove`), so its next request
   * gets M_UNKNOWN_TOKEN with soft_logout false and the client erases its local data. With
   * `block` the device id is refused at every future login; a device that is already gone can
   * still be blocked (the phone was lost after its owner logged it out).
   */
  async wipeDevice(by: Actor, userId: string, deviceId: string, block: boolean): Promise<void> {
    const user = await this.requireUser(userId);
    this.requireAuthorityOver(by, user);
    const existed = (await this.devices.get(user.user_id, deviceId)) !== undefined;
    if (!existed && !block) throw new MatrixError("M_NOT_FOUND", "Device not found");
    if (block) {
      await this.db
        .insertInto("blocked_devices")
        .values({ user_id: user.user_id, device_id: deviceId, blocked_ts: Date.now(), blocked_by: by.actor })
        .onConflict((oc) => oc.columns(["user_id", "device_id"]).doNothing())
        .execute();
    }
    if (existed) await this.devices.remove(user.user_id, deviceId);
    await this.audit.record({ ...by, action: block ? "device.block" : "device.wipe", target: user.user_id, details: { device_id: deviceId, wiped: existed } });
  }

  /** A one-time code for enrolling a new device of `userId`; only its digest is stored. */
  async issueEnrollmentCode(by: Actor, userId: string, details: Record<string, unknown> = {}): Promise<{ code: string; expires_ts: number }> {
    const user = await this.requireUser(userId);
    this.requireAuthorityOver(by, user);
    let raw = "";
    for (let i = 0; i < 12; i++) raw += CODE_ALPHABET[randomInt(CODE_ALPHABET.length)];
    const code = `${raw.slice(0, 4)}-${raw.slice(4, 8)}-${raw.slice(8)}`;
    const now = Date.now();
    const expires = now + ENROLLMENT_CODE_LIFETIME_MS;
    await this.db.deleteFrom("enrollment_codes").where("expires_ts", "<", now - DAY_MS).execute();
    await this.db
      .insertInto("enrollment_codes")
      .values({ code_hash: sha256Hex(normaliseCode(code)), user_id: user.user_id, issued_by: by.actor, created_ts: now, expires_ts: expires, used_ts: null })
      .execute();
    await this.audit.record({ ...by, action: "enrollment_code.issue", target: user.user_id, details: { expires_ts: expires, ...details } });
    return { code, expires_ts: expires };
  }

  /**
   * Spends a code (true only for an unexpired, unused code of this user; the update is the check, so
   * it works once even under races) and, in the same transaction, writes one audit entry
   * naming the device it enrolled and who issued the code, so every enrolled device is traceable.
   */
  async spendEnrollmentCode(userId: string, code: string, deviceId: string, via: "login_parameter" | "uia"): Promise<boolean> {
    const role = (await this.accounts.get(userId))?.role ?? "user";
    return this.audit.transact(async (tx, record) => {
      const now = Date.now();
      const spent = await tx
        .updateTable("enrollment_codes")
        .set({ used_ts: now })
        .where("code_hash", "=", sha256Hex(normaliseCode(code)))
        .where("user_id", "=", userId)
        .where("used_ts", "is", null)
        .where("expires_ts", ">", now)
        .returning(["issued_by"])
        .executeTakeFirst();
      if (!spent) return false;
      await record({ actor: userId, actorRole: role, action: "enrollment_code.use", target: userId, details: { device_id: deviceId, issued_by: spent.issued_by, via } });
      return true;
    });
  }

  /**
   * Gives back a code that a login spent before it was refused anyway (the device limit, reached
   * through another process in between), so the user need not ask for a new one. Only while the
   * code is still valid, and audited: the chain shows the use and its return.
   */
  async returnEnrollmentCode(userId: string, code: string, deviceId: string): Promise<void> {
    const role = (await this.accounts.get(userId))?.role ?? "user";
    await this.audit.transact(async (tx, record) => {
      const returned = await tx
        .updateTable("enrollment_codes")
        .set({ used_ts: null })
        .where("code_hash", "=", sha256Hex(normaliseCode(code)))
        .where("user_id", "=", userId)
        .where("used_ts", "is not", null)
        .where("expires_ts", ">", Date.now())
        .returning(["issued_by"])
        .executeTakeFirst();
      if (returned) await record({ actor: userId, actorRole: role, action: "enrollment_code.return", target: userId, details: { device_id: deviceId, issued_by: returned.issued_by, reason: "login_refused" } });
    });
  }

  /** Lifts a lost-device block so the device id may log in again (a found phone). */
  async unblockDevice(by: Actor, userId: string, deviceId: string): Promise<void> {
    const user = await this.requireUser(userId);
    this.requireAuthorityOver(by, user);
    await this.audit.transact(async (tx, record) => {
      const row = await tx.selectFrom("blocked_devices").selectAll().where("user_id", "=", user.user_id).where("device_id", "=", deviceId).executeTakeFirst();
      if (!row) throw new MatrixError("M_NOT_FOUND", "This device id is not blocked");
      await tx.deleteFrom("blocked_devices").where("user_id", "=", user.user_id).where("device_id", "=", deviceId).execute();
      await record({ ...by, action: "device.unblock", target: user.user_id, details: { device_id: deviceId, blocked_ts: Number(row.blocked_ts), blocked_by: row.blocked_by } });
    });
  }

  /** Aggregates only: no room is named and private chats are not counted one by one. */
  async stats(now = Date.now()): Promise<StatsResponse> {
    const db = this.db;
    const count = async (q: Promise<{ n: number } | undefined>) => Number((await q)?.n ?? 0);
    const users = db.selectFrom("users").select((eb) => eb.fn.countAll<number>().as("n"));
    const since = now - 30 * DAY_MS;
    // A literal, not a parameter: PostgreSQL only matches the GROUP BY expression if both are identical.
    const dayExpr = sql<number>`cast(origin_server_ts / ${sql.lit(DAY_MS)} as integer)`;
    const perDay = await db
      .selectFrom("events")
      .select([dayExpr.as("day"), (eb) => eb.fn.countAll<number>().as("n")])
      .where("type", "in", ["m.room.message", "m.room.encrypted"])
      .where("origin_server_ts", ">=", since)
      .groupBy(dayExpr)
      .orderBy(dayExpr)
      .execute();
    return {
      users: {
        total: await count(users.executeTakeFirst()),
        active: await count(users.where("deactivated", "=", 0).where("locked", "=", 0).executeTakeFirst()),
        locked: await count(users.where("locked", "=", 1).where("deactivated", "=", 0).executeTakeFirst()),
        deactivated: await count(users.where("deactivated", "=", 1).executeTakeFirst()),
      },
      devices: {
        total: await count(db.selectFrom("devices").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirst()),
        active_30d: await count(db.selectFrom("devices").select((eb) => eb.fn.countAll<number>().as("n")).where("last_seen_ts", ">=", since).executeTakeFirst()),
      },
      public_channels: await count(db.selectFrom("rooms").select((eb) => eb.fn.countAll<number>().as("n")).where("visibility", "=", "public").executeTakeFirst()),
      messages_per_day: perDay.map((r) => ({ day: new Date(Number(r.day) * DAY_MS).toISOString().slice(0, 10), count: Number(r.n) })),
    };
  }
}
