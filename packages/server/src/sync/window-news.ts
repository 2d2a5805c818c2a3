import type { Db } from "../storage/database.js";

/** A member event of a short window, for device-list bookkeeping (see DeviceLists.changes). */
export interface WindowMemberEvent {
  room_id: string;
  state_key: string | null;
  membership: string | null;
  json: string;
  stream_ordering: number;
}

/**
 * Who has per-user news of each kind in a short stream window (since, upto]. When one message
 * reaches a room of thousands, every member's /sync asks "any account data, to-device messages,
 * device-list changes for me in (P, Q]?" — the same window for all of them, and almost always
 * "no". Asked once per window, the answer turns each member's queries into set lookups; only
 * users named here need their own query.
 *
 * Rows at positions inside the window are never moved into it later (a write takes positions
 * above everything committed), so a user missing here has nothing of that kind in the window.
 * The reverse may happen (a row rewritten at a later position since): a user named here may find
 * nothing, which is merely a query spent.
 */
export interface WindowNews {
  accountData: ReadonlySet<string>;
  /** `${user_id}\u0000${device_id}` of devices with to-device messages in the window. */
  toDevice: ReadonlySet<string>;
  /** Users whose devices or keys changed in the window. */
  deviceLists: ReadonlySet<string>;
  /** Users told of a signature on someone's key in the window. */
  signatureNotices: ReadonlySet<string>;
  /** Rooms with receipts set in the window, and by whom. */
  receipts: ReadonlyMap<string, ReadonlySet<string>>;
  /** Member events in the window, oldest first; null when there were too many to share. */
  memberEvents: readonly WindowMemberEvent[] | null;
}

/** More member events than this in one window (a mass join) are looked up per user instead. */
const MAX_SHARED_MEMBER_EVENTS = 2000;

export function toDeviceKey(userId: string, deviceId: string): string {
  return `${userId}\u0000${deviceId}`;
}

export async function loadWindowNews(db: Db, since: number, upto: number): Promise<WindowNews> {
  const [accountData, toDevice, deviceLists, notices, receipts, members] = await Promise.all([
    db.selectFrom("account_data").select("user_id").distinct().where("stream_pos", ">", since).where("stream_pos", "<=", upto).execute(),
    db.selectFrom("device_inbox").select(["user_id", "device_id"]).distinct().where("stream_pos", ">", since).where("stream_pos", "<=", upto).execute(),
    db.selectFrom("device_list_changes").select("user_id").where("stream_pos", ">", since).where("stream_pos", "<=", upto).execute(),
    db.selectFrom("e2e_signature_notices").select("user_id").distinct().where("stream_pos", ">", since).where("stream_pos", "<=", upto).execute(),
    db.selectFrom("receipts").select(["user_id", "room_id"]).distinct().where("stream_pos", ">", since).where("stream_pos", "<=", upto).execute(),
    db
      .selectFrom("events")
      .select(["room_id", "state_key", "membership", "json", "stream_ordering"])
      .where("stream_ordering", ">", since)
      .where("stream_ordering", "<=", upto)
      .where("type", "=", "m.room.member")
      .orderBy("stream_ordering")
      .limit(MAX_SHARED_MEMBER_EVENTS + 1)
      .execute(),
  ]);
  return {
    accountData: new Set(accountData.map((r) => r.user_id)),
    toDevice: new Set(toDevice.map((r) => toDeviceKey(r.user_id, r.device_id))),
    deviceLists: new Set(deviceLists.map((r) => r.user_id)),
    signatureNotices: new Set(notices.map((r) => r.user_id)),
    receipts: groupUsersByRoom(receipts),
    memberEvents: members.length > MAX_SHARED_MEMBER_EVENTS ? null : (members as WindowMemberEvent[]),
  };
}

function groupUsersByRoom(rows: ReadonlyArray<{ user_id: string; room_id: string }>): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const r of rows) {
    let users = out.get(r.room_id);
    if (!users) out.set(r.room_id, (users = new Set()));
    users.add(r.user_id);
  }
  return out;
}

/** Rough size of a WindowNews in memory, for the shared cache's bound. */
export function weighWindowNews(n: WindowNews): number {
  let bytes = 256 + (n.accountData.size + n.toDevice.size + n.deviceLists.size + n.signatureNotices.size) * 80;
  for (const users of n.receipts.values()) bytes += 80 + users.size * 80;
  for (const e of n.memberEvents ?? []) bytes += e.json.length + 200;
  return bytes;
}
