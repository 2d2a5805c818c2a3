import type { Db } from "../storage/database.js";
import type { StreamWriter } from "../storage/stream.js";
import type { Tokens } from "./tokens.js";
import { randomLetters } from "../lib/random.js";

export interface DeviceInfo {
  device_id: string;
  display_name?: string;
  last_seen_ip?: string;
  last_seen_ts?: number;
}

/** Hooks other modules register to learn that a device is gone (its keys, its inbox). */
export type DeviceRemovedHook = (userId: string, deviceId: string) => Promise<void>;

export class Devices {
  private readonly removedHooks: DeviceRemovedHook[] = [];

  constructor(
    private readonly db: Db,
    private readonly tokens: Tokens,
    private readonly stream: StreamWriter,
  ) {}

  onRemoved(hook: DeviceRemovedHook): void {
    this.removedHooks.push(hook);
  }

  newDeviceId(): string {
    return randomLetters(10).toUpperCase();
  }

  /**
   * Creates the device if new; an existing id is reused and its old tokens are revoked.
   *
   * With `atMost`, a new device is added only while the user has fewer devices than that, and
   * `{ created: false, refused: n }` says the user already has `n`. The count and the insert run
   * in one transaction that first writes the user's row: on PostgreSQL that row lock makes a
   * login through another process wait until this device is committed, so two logins at once
   * cannot both pass the limit (each process also serialises its own logins per user, see
   * Services.loginLock).
   */
  async upsert(userId: string, deviceId: string, displayName: string | null, meta: { ip?: string; userAgent?: string }, opts: { atMost?: number } = {}): Promise<{ created: boolean; refused?: number }> {
    const existing = await this.get(userId, deviceId);
    const now = Date.now();
    if (existing) {
      await this.tokens.revokeDevice(userId, deviceId);
      await this.db
        .updateTable("devices")
        .set({ last_seen_ts: now, last_seen_ip: meta.ip ?? null, user_agent: meta.userAgent ?? null, ...(displayName ? { display_name: displayName } : {}) })
        .where("user_id", "=", userId)
        .where("device_id", "=", deviceId)
        .execute();
      return { created: false };
    }
    const row = { user_id: userId, device_id: deviceId, display_name: displayName, created_ts: now, last_seen_ts: now, last_seen_ip: meta.ip ?? null, user_agent: meta.userAgent ?? null };
    const atMost = opts.atMost;
    if (atMost === undefined) await this.db.insertInto("devices").values(row).execute();
    else {
      const refused = await this.db.transaction().execute(async (tx) => {
        // A write that changes nothing, for its lock.
        await tx.updateTable("users").set((eb) => ({ created_ts: eb.ref("created_ts") })).where("user_id", "=", userId).execute();
        const { n } = await tx.selectFrom("devices").select((eb) => eb.fn.countAll<number | string>().as("n")).where("user_id", "=", userId).executeTakeFirstOrThrow();
        if (Number(n) >= atMost) return Number(n);
        await tx.insertInto("devices").values(row).execute();
        return null;
      });
      if (refused !== null) return { created: false, refused };
    }
    await this.markChanged(userId);
    return { created: true };
  }

  async get(userId: string, deviceId: string): Promise<DeviceInfo | undefined> {
    const row = await this.db.selectFrom("devices").selectAll().where("user_id", "=", userId).where("device_id", "=", deviceId).executeTakeFirst();
    return row ? toInfo(row) : undefined;
  }

  async list(userId: string): Promise<DeviceInfo[]> {
    const rows = await this.db.selectFrom("devices").selectAll().where("user_id", "=", userId).orderBy("created_ts").execute();
    return rows.map(toInfo);
  }

  async count(userId: string): Promise<number> {
    const row = await this.db.selectFrom("devices").select((eb) => eb.fn.countAll<number>().as("n")).where("user_id", "=", userId).executeTakeFirst();
    return Number(row?.n ?? 0);
  }

  async rename(userId: string, deviceId: string, displayName: string): Promise<boolean> {
    const res = await this.db.updateTable("devices").set({ display_name: displayName }).where("user_id", "=", userId).where("device_id", "=", deviceId).executeTakeFirst();
    if (Number(res.numUpdatedRows) > 0) await this.markChanged(userId);
    return Number(res.numUpdatedRows) > 0;
  }

  async touch(userId: string, deviceId: string, ip: string | undefined): Promise<void> {
    await this.db.updateTable("devices").set({ last_seen_ts: Date.now(), last_seen_ip: ip ?? null }).where("user_id", "=", userId).where("device_id", "=", deviceId).execute();
  }

  /** Removes a device: its tokens die at once, its keys and inbox go, and everyone sharing a room hears of it. */
  async remove(userId: string, deviceId: string): Promise<void> {
    await this.tokens.revokeDevice(userId, deviceId);
    await this.db.deleteFrom("devices").where("user_id", "=", userId).where("device_id", "=", deviceId).execute();
    await this.db.deleteFrom("device_inbox").where("user_id", "=", userId).where("device_id", "=", deviceId).execute();
    for (const hook of this.removedHooks) await hook(userId, deviceId);
    await this.markChanged(userId);
  }

  async removeAll(userId: string, except?: string): Promise<void> {
    for (const d of await this.list(userId)) if (d.device_id !== except) await this.remove(userId, d.device_id);
  }

  /** Records that this user's device list changed, so sharers see it in `device_lists.changed`. */
  async markChanged(userId: string): Promise<void> {
    await this.stream.write(async (w) => {
      const pos = w.next();
      await w.tx
        .insertInto("device_list_changes")
        .values({ user_id: userId, stream_pos: pos })
        .onConflict((oc) => oc.column("user_id").doUpdateSet({ stream_pos: pos }))
        .execute();
      w.touch({ users: [userId], rooms: await sharedRoomsOf(w.tx as unknown as Db, userId) });
    });
  }
}

async function sharedRoomsOf(db: Db, userId: string): Promise<string[]> {
  const rows = await db.selectFrom("room_members").select("room_id").where("user_id", "=", userId).where("membership", "=", "join").execute();
  return rows.map((r) => r.room_id);
}

function toInfo(row: { device_id: string; display_name: string | null; last_seen_ip: string | null; last_seen_ts: number | null }): DeviceInfo {
  return {
    device_id: row.device_id,
    ...(row.display_name !== null ? { display_name: row.display_name } : {}),
    ...(row.last_seen_ip !== null ? { last_seen_ip: row.last_seen_ip } : {}),
    ...(row.last_seen_ts !== null ? { last_seen_ts: Number(row.last_seen_ts) } : {}),
  };
}
