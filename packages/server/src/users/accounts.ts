import { MatrixError, isValidLocalpart, parseUserId } from "@revier/protocol";
import type { Db } from "../storage/database.js";
import type { Database } from "../storage/schema.js";
import { containsIgnoringCase } from "../storage/sql-helpers.js";
import { hashPassword, passwordProblem } from "./passwords.js";
import type { SessionCache } from "./session-cache.js";

export type Role = "admin" | "helpdesk" | "dpo" | "user";
export const ROLES: readonly Role[] = ["admin", "helpdesk", "dpo", "user"];
export type UserRow = Database["users"];

/** Accounts: creation, lookup, passwords, deactivation. Token and device state live in tokens.ts/devices.ts. */
export class Accounts {
  constructor(
    private readonly db: Db,
    readonly serverName: string,
    /** Role, lock and deactivation are part of every cached session (see SessionCache). */
    private readonly sessions: SessionCache,
  ) {}

  userIdFor(localpart: string): string {
    return `@${localpart}:${this.serverName}`;
  }

  /** Accepts a localpart or a full user id of this server; returns the canonical user id or null. */
  resolveUserId(input: string): string | null {
    const trimmed = input.trim();
    if (trimmed.startsWith("@")) {
      const parsed = parseUserId(trimmed);
      if (!parsed || parsed.server !== this.serverName) return null;
      return `@${parsed.localpart.toLowerCase()}:${parsed.server}`;
    }
    const local = trimmed.toLowerCase();
    return isValidLocalpart(local) ? this.userIdFor(local) : null;
  }

  isLocal(userId: string): boolean {
    return parseUserId(userId)?.server === this.serverName;
  }

  async get(userId: string): Promise<UserRow | undefined> {
    return this.db.selectFrom("users").selectAll().where("user_id", "=", userId).executeTakeFirst();
  }

  async create(localpart: string, opts: { password?: string | null; role?: Role; displayname?: string } = {}): Promise<UserRow> {
    if (!isValidLocalpart(localpart)) {
      throw new MatrixError("M_INVALID_USERNAME", "User names may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+'");
    }
    if (opts.password != null) {
      const problem = passwordProblem(opts.password);
      if (problem) throw new MatrixError("M_WEAK_PASSWORD", problem);
    }
    const row: UserRow = {
      user_id: this.userIdFor(localpart),
      localpart,
      password_hash: opts.password != null ? await hashPassword(opts.password) : null,
      role: opts.role ?? "user",
      deactivated: 0,
      locked: 0,
      created_ts: Date.now(),
      displayname: opts.displayname ?? localpart,
      avatar_url: null,
    };
    const inserted = await this.db
      .insertInto("users")
      .values(row)
      .onConflict((oc) => oc.column("localpart").doNothing())
      .executeTakeFirst();
    if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 0) throw new MatrixError("M_USER_IN_USE", "That user name is taken");
    return row;
  }

  async isAvailable(localpart: string): Promise<boolean> {
    const row = await this.db.selectFrom("users").select("user_id").where("localpart", "=", localpart).executeTakeFirst();
    return row === undefined;
  }

  async setPassword(userId: string, password: string): Promise<void> {
    const problem = passwordProblem(password);
    if (problem) throw new MatrixError("M_WEAK_PASSWORD", problem);
    const hash = await hashPassword(password);
    const res = await this.db.updateTable("users").set({ password_hash: hash }).where("user_id", "=", userId).executeTakeFirst();
    if (Number(res.numUpdatedRows) === 0) throw new MatrixError("M_NOT_FOUND", "No such user");
  }

  async setRole(userId: string, role: Role): Promise<void> {
    await this.updateStanding(userId, { role });
  }

  /** A locked user keeps their sessions, but every request is refused until unlocked (see governance/hooks.ts). */
  async setLocked(userId: string, locked: boolean): Promise<void> {
    await this.updateStanding(userId, { locked: locked ? 1 : 0 });
  }

  async markDeactivated(userId: string): Promise<void> {
    await this.updateStanding(userId, { deactivated: 1, password_hash: null });
  }

  /** Changes what every cached session of the user carries, logged for every process in the same transaction. */
  private async updateStanding(userId: string, fields: { role?: Role; locked?: number; deactivated?: number; password_hash?: null }): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      await tx.updateTable("users").set(fields).where("user_id", "=", userId).execute();
      await this.sessions.logChange(tx, userId);
    });
    this.sessions.forgetUser(userId);
  }

  async list(opts: { search?: string; from?: string; limit?: number } = {}): Promise<UserRow[]> {
    let q = this.db.selectFrom("users").selectAll().orderBy("user_id").limit(opts.limit ?? 100);
    if (opts.from) q = q.where("user_id", ">", opts.from);
    if (opts.search) {
      const term = opts.search;
      q = q.where((eb) => eb.or([containsIgnoringCase("localpart", term), containsIgnoringCase("displayname", term)]));
    }
    return q.execute();
  }

  async count(): Promise<number> {
    const row = await this.db.selectFrom("users").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirst();
    return Number(row?.n ?? 0);
  }

  async setProfile(userId: string, fields: { displayname?: string | null; avatar_url?: string | null }): Promise<void> {
    await this.db.updateTable("users").set(fields).where("user_id", "=", userId).execute();
  }
}
