import type { Db } from "../storage/database.js";
import type { StreamWrite } from "../storage/stream.js";
import type { WindowNews } from "../sync/window-news.js";
import { chunks } from "../lib/chunks.js";
import { latestStateUpTo } from "../rooms/latest-state.js";


/**
 * Records, inside the caller's ordered write, that a user's devices or keys changed, and wakes
 * everyone who shares a room with them. Same row as `Devices.markChanged`, which cannot be used
 * here because it opens its own write (and SQLite has a single connection).
 */
export async function recordDeviceListChange(w: StreamWrite, userId: string): Promise<void> {
  const pos = w.next();
  await w.tx
    .insertInto("device_list_changes")
    .values({ user_id: userId, stream_pos: pos })
    .onConflict((oc) => oc.column("user_id").doUpdateSet({ stream_pos: pos }))
    .execute();
  const rooms = await w.tx.selectFrom("room_members").select("room_id").where("user_id", "=", userId).where("membership", "=", "join").execute();
  w.touch({ users: [userId], rooms: rooms.map((r) => r.room_id) });
}

export interface DeviceListChanges {
  changed: string[];
  left: string[];
}

interface MemberEventRow {
  room_id: string;
  state_key: string | null;
  membership: string | null;
  json: string;
  stream_ordering: number;
}

/**
 * Which users' device lists a client must look at again between two stream positions
 * (`device_lists` in /sync, and /keys/changes). A client tracks the devices of everyone it shares
 * a room with, so it must hear of:
 *   - key or device changes of those users (and of its own user, for its other devices),
 *   - users who newly share a room with it (their join, or its own join),
 *   - users it no longer shares any room with (`left`), so it stops encrypting to them.
 * Signatures on another user's master key are visible only to the signer, whose devices are told
 * about the target user.
 */
/** Windows (in stream positions) up to this size start from the changes in them; see `changes`. */
const SHORT_WINDOW = 5000;

export class DeviceLists {
  constructor(private readonly db: Db) {}

  /**
   * `news`: who has news in this short window (see WindowNews), asked once for everybody; with
   * it, a user with no device change, signature notice or member event near them costs no query.
   */
  async changes(userId: string, since: number, upto: number, news: WindowNews | null = null): Promise<DeviceListChanges> {
    if (upto <= since) return { changed: [], left: [] };
    const db = this.db;
    const shared = news !== null && news.memberEvents !== null ? { ...news, memberEvents: news.memberEvents } : null;
    let joined: string[] | null = null;
    const joinedRooms = async (): Promise<string[]> =>
      (joined ??= (await db.selectFrom("room_members").select("room_id").where("user_id", "=", userId).where("membership", "=", "join").execute()).map((r) => r.room_id));
    const changed = new Set<string>();

    // Users who share a room now and whose devices or keys changed in the window.
    const own = shared
      ? shared.deviceLists.has(userId)
      : (await db.selectFrom("device_list_changes").select("user_id").where("user_id", "=", userId).where("stream_pos", ">", since).where("stream_pos", "<=", upto).executeTakeFirst()) !== undefined;
    if (own) changed.add(userId);
    if (upto - since <= SHORT_WINDOW) {
      // A long-poll's window holds few changes, if any: start from them. (The join below walks
      // every member of every room the user is in — thousands of rows per /sync in a big room.)
      const inWindow = shared ? [...shared.deviceLists] : (await db.selectFrom("device_list_changes").select("user_id").where("stream_pos", ">", since).where("stream_pos", "<=", upto).execute()).map((r) => r.user_id);
      const others = inWindow.filter((u) => u !== userId);
      if (others.length > 0) for (const u of await this.sharing(userId, others, await joinedRooms())) if (u !== userId) changed.add(u);
    } else {
      for (const rooms of chunks(await joinedRooms())) {
        const rows = await db
          .selectFrom("device_list_changes as c")
          .innerJoin("room_members as m", "m.user_id", "c.user_id")
          .select("c.user_id")
          .distinct()
          .where("c.stream_pos", ">", since)
          .where("c.stream_pos", "<=", upto)
          .where("m.membership", "=", "join")
          .where("m.room_id", "in", rooms)
          .execute();
        for (const r of rows) changed.add(r.user_id);
      }
    }
    if (!shared || shared.signatureNotices.has(userId)) {
      const notices = await db.selectFrom("e2e_signature_notices").select("target_user_id").where("user_id", "=", userId).where("stream_pos", ">", since).where("stream_pos", "<=", upto).execute();
      for (const n of notices) changed.add(n.target_user_id);
    }
    // With no member event in the window, nobody joined or left near this user.
    if (shared && shared.memberEvents.length === 0) return { changed: [...changed].sort(), left: [] };

    // Membership changes in the window: in rooms the user is in now, and in rooms it left.
    const leftRows =
      shared && !shared.memberEvents.some((e) => e.state_key === userId)
        ? []
        : await db.selectFrom("room_members").select(["room_id", "stream_ordering"]).where("user_id", "=", userId).where("membership", "!=", "join").where("stream_ordering", ">", since).where("stream_ordering", "<=", upto).execute();
    const leftRooms = leftRows.map((r) => r.room_id);
    const candidatesLeft = new Set<string>();
    const rooms = [...(await joinedRooms()), ...leftRooms];
    const joinedSet = new Set(await joinedRooms());
    const ownJoinedRooms: string[] = [];
    const roomSet = new Set(rooms);
    for (const batch of shared ? [rooms] : chunks(rooms)) {
      const events = shared
        ? shared.memberEvents.filter((e) => roomSet.has(e.room_id))
        : ((await db
            .selectFrom("events")
            .select(["room_id", "state_key", "membership", "json", "stream_ordering"])
            .where("type", "=", "m.room.member")
            .where("stream_ordering", ">", since)
            .where("stream_ordering", "<=", upto)
            .where("room_id", "in", batch)
            .orderBy("stream_ordering")
            .execute()) as MemberEventRow[]);
      // The first member event of a user in the window tells the membership at `since` (its
      // prev_content), the last one the membership now.
      const firstPrev = new Map<string, string | undefined>();
      const last = new Map<string, string | null>();
      for (const e of events) {
        if (e.state_key === null) continue;
        const k = `${e.room_id}\u0000${e.state_key}`;
        if (!firstPrev.has(k)) firstPrev.set(k, previousMembership(e.json));
        last.set(k, e.membership);
      }
      for (const [k, now] of last) {
        const [roomId, member] = k.split("\u0000") as [string, string];
        const wasJoined = firstPrev.get(k) === "join";
        const isJoined = now === "join";
        if (member === userId) {
          if (isJoined && !wasJoined && joinedSet.has(roomId)) ownJoinedRooms.push(roomId);
          continue;
        }
        if (!joinedSet.has(roomId)) continue;
        if (isJoined && !wasJoined) changed.add(member);
        else if (!isJoined && wasJoined) candidatesLeft.add(member);
      }
    }
    // Joining a room makes all its members newly relevant; leaving one may end sharing with all of them.
    for (const batch of chunks(ownJoinedRooms)) {
      const rows = await db.selectFrom("room_members").select("user_id").distinct().where("room_id", "in", batch).where("membership", "=", "join").execute();
      for (const r of rows) if (r.user_id !== userId) changed.add(r.user_id);
    }
    // Those who were joined when we left — not those who joined after: naming them would tell a
    // former member who is in the room now.
    for (const { room_id: roomId, stream_ordering: leftAt } of leftRows) {
      const rows = await db
        .selectFrom("events as e")
        .select("e.state_key")
        .where("e.room_id", "=", roomId)
        .where("e.type", "=", "m.room.member")
        .where("e.membership", "=", "join")
        .where("e.stream_ordering", "<=", leftAt)
        .where((eb) => latestStateUpTo(eb, leftAt))
        .execute();
      for (const r of rows) if (r.state_key !== null) candidatesLeft.add(r.state_key);
    }
    candidatesLeft.delete(userId);

    const left: string[] = [];
    if (candidatesLeft.size > 0) {
      const stillShared = await this.sharing(userId, [...candidatesLeft], await joinedRooms());
      for (const u of candidatesLeft) if (!stillShared.has(u)) left.push(u);
      for (const u of left) changed.delete(u);
    }
    return { changed: [...changed].sort(), left: left.sort() };
  }

  /** Those of `users` who are joined to at least one of `rooms`. */
  private async sharing(userId: string, users: string[], rooms: string[]): Promise<Set<string>> {
    const out = new Set<string>([userId]);
    if (rooms.length === 0) return out;
    for (const userBatch of chunks(users)) {
      for (const roomBatch of chunks(rooms)) {
        const rows = await this.db.selectFrom("room_members").select("user_id").distinct().where("user_id", "in", userBatch).where("room_id", "in", roomBatch).where("membership", "=", "join").execute();
        for (const r of rows) out.add(r.user_id);
      }
    }
    return out;
  }
}

function previousMembership(json: string): string | undefined {
  try {
    const pdu = JSON.parse(json) as { unsigned?: { prev_content?: { membership?: unknown } } };
    const m = pdu.unsigned?.prev_content?.membership;
    return typeof m === "string" ? m : undefined;
  } catch {
    return undefined;
  }
}
