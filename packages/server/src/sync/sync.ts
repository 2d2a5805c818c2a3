import { MatrixError } from "@revier/protocol";
import type { Db } from "../storage/database.js";
import type { StreamWriter } from "../storage/stream.js";
import type { Rooms } from "../rooms/rooms.js";
import type { AccountData } from "../users/account-data.js";
import type { PushService } from "../push/push-service.js";
import type { Ephemeral } from "../rooms/ephemeral.js";
import type { Notifier } from "./notifier.js";
import type { Devices } from "../users/devices.js";
import { toClientEvent, type ClientEvent, type Viewer } from "../rooms/client-event.js";
import { DEFAULT_TIMELINE_LIMIT, matchesEventFilter, roomAllowed, type Filter } from "./filter.js";

export interface SyncParams {
  since: string | undefined;
  timeoutMs: number;
  filter: Filter | undefined;
  fullState: boolean;
  signal?: AbortSignal;
}

type Json = Record<string, unknown>;

/** Extra /sync sections other modules fill (to-device, device lists, key counts). */
export type SyncExtension = (ctx: { viewer: Viewer; since: number | null; upto: number; joinedRooms: string[] }, out: Json) => Promise<void>;

export function formatToken(pos: number): string {
  return `s${pos}`;
}

export function parseToken(token: string): number {
  const m = /^s(\d{1,15})$/.exec(token);
  if (!m) throw new MatrixError("M_INVALID_PARAM", "Invalid sync token");
  return Number(m[1]);
}

interface MemberRow {
  room_id: string;
  membership: string;
  stream_ordering: number;
  event_id: string;
}

/** Assembles /sync responses from the database at a fixed upper position. */
export class SyncService {
  private readonly extensions: SyncExtension[] = [];

  constructor(
    private readonly d: {
      db: Db;
      stream: StreamWriter;
      rooms: Rooms;
      accountData: AccountData;
      push: PushService;
      ephemeral: Ephemeral;
      notifier: Notifier;
      devices: Devices;
    },
  ) {}

  extend(ext: SyncExtension): void {
    this.extensions.push(ext);
  }

  async sync(viewer: Viewer, p: SyncParams): Promise<Json> {
    const since = p.since !== undefined ? parseToken(p.since) : null;
    const deadline = Date.now() + p.timeoutMs;
    for (;;) {
      const upto = await this.d.stream.current();
      if (since !== null && since > upto) {
        // A token from the future (e.g. a restore from backup) would hide everything until the
        // stream catches up; answer with the current position so the client resynchronises.
        return this.build(viewer, null, upto, p);
      }
      const out = await this.build(viewer, since, upto, p);
      const remaining = deadline - Date.now();
      // After shutdown began, waiting returns at once: answer now instead of polling the database.
      if (since === null || remaining <= 0 || hasNews(out) || p.signal?.aborted || this.d.notifier.isClosed) return out;
      const rooms = new Set(await this.d.rooms.joinedRooms(viewer.userId));
      await this.d.notifier.wait(viewer.userId, rooms, upto, remaining, p.signal);
      if (Date.now() >= deadline || p.signal?.aborted) return this.build(viewer, since, await this.d.stream.current(), p);
    }
  }

  private async build(viewer: Viewer, since: number | null, upto: number, p: SyncParams): Promise<Json> {
    const { db } = this.d;
    const filter = p.filter;
    const roomFilter = filter?.room;
    const memberships = (await db
      .selectFrom("room_members")
      .select(["room_id", "membership", "stream_ordering", "event_id"])
      .where("user_id", "=", viewer.userId)
      .where("forgotten", "=", 0)
      .where("stream_ordering", "<=", upto)
      .execute()) as MemberRow[];
    // A membership row may have moved past `upto` since; those rooms wait for the next sync.
    const joined = memberships.filter((m) => m.membership === "join" && roomAllowed(roomFilter, m.room_id));
    const joinedIds = joined.map((m) => m.room_id);

    const join: Json = {};
    const invite: Json = {};
    const leave: Json = {};
    const knock: Json = {};

    let changedRooms: Set<string> | null = null;
    if (since !== null && !p.fullState && joinedIds.length > 0) {
      changedRooms = new Set(
        (
          await db
            .selectFrom("events")
            .select("room_id")
            .distinct()
            .where("stream_ordering", ">", since)
            .where("stream_ordering", "<=", upto)
            .where("room_id", "in", joinedIds)
            .execute()
        ).map((r) => r.room_id),
      );
    }
    const [receipts, typing, roomAccountData] = await Promise.all([
      filterEphemeral(roomFilter) ? (since === null ? this.d.ephemeral.receiptsFor(joinedIds, viewer.userId) : this.d.ephemeral.receiptsSince(joinedIds, since, upto, viewer.userId)) : new Map<string, Json>(),
      since !== null && filterEphemeral(roomFilter) ? this.d.ephemeral.typingSince(joinedIds, since, upto) : new Map<string, string[]>(),
      since === null ? this.d.accountData.all(viewer.userId) : this.d.accountData.changedSince(viewer.userId, since, upto),
    ]);

    for (const m of joined) {
      // A later member event may only be a profile change; the room is new to the client only if
      // the user was not joined at `since`.
      const newlyJoined = since !== null && m.stream_ordering > since && (await this.d.rooms.membershipAt(m.room_id, viewer.userId, since)) !== "join";
      const hasEvents = since === null || p.fullState || newlyJoined || changedRooms?.has(m.room_id) === true;
      const roomData: Json = {};
      if (hasEvents) {
        Object.assign(roomData, await this.roomTimelineAndState(viewer, m.room_id, newlyJoined || p.fullState ? null : since, upto, filter));
      }
      const eph: Json[] = [];
      const r = receipts.get(m.room_id);
      if (r && Object.keys(r).length > 0) eph.push({ type: "m.receipt", content: r });
      const t = typing.get(m.room_id);
      if (t) eph.push({ type: "m.typing", content: { user_ids: t } });
      if (since === null && filterEphemeral(roomFilter)) {
        const typers = await this.d.ephemeral.typingNow(m.room_id);
        if (typers.length > 0) eph.push({ type: "m.typing", content: { user_ids: typers } });
      }
      const ad = roomAccountData.rooms.get(m.room_id);
      if (!hasEvents && eph.length === 0 && !ad) continue;
      if (!roomData.timeline) roomData.timeline = { events: [], limited: false, prev_batch: formatToken(upto) };
      if (!roomData.state) roomData.state = { events: [] };
      roomData.ephemeral = { events: eph };
      roomData.account_data = { events: ad ?? [] };
      const counts = await this.d.push.unreadCounts(viewer.userId, m.room_id);
      roomData.unread_notifications = { notification_count: counts.notify, highlight_count: counts.highlight };
      if (Object.keys(counts.threads).length > 0) roomData.unread_thread_notifications = counts.threads;
      join[m.room_id] = roomData;
    }

    for (const m of memberships) {
      if (m.membership === "join" || !roomAllowed(roomFilter, m.room_id)) continue;
      const changed = since === null || m.stream_ordering > since;
      if (!changed) continue;
      if (m.membership === "invite" || m.membership === "knock") {
        const stripped = await this.strippedState(m.room_id, m.event_id);
        if (m.membership === "invite") invite[m.room_id] = { invite_state: { events: stripped } };
        else knock[m.room_id] = { knock_state: { events: stripped } };
      } else if ((m.membership === "leave" || m.membership === "ban") && (since !== null || roomFilter?.include_leave === true)) {
        // Only rooms the user actually left after having been in them show up as left.
        const data = await this.roomTimelineAndState(viewer, m.room_id, since, m.stream_ordering, filter);
        leave[m.room_id] = { ...data, account_data: { events: roomAccountData.rooms.get(m.room_id) ?? [] } };
      }
    }

    const out: Json = {
      next_batch: formatToken(upto),
      rooms: { join, invite, leave, knock },
      account_data: { events: roomAccountData.global.filter((e) => matchesEventFilter(filter?.account_data, { type: e.type, sender: viewer.userId, content: e.content })) },
      presence: { events: await this.presence(viewer.userId, joinedIds, since, upto, filter) },
      to_device: { events: [] },
      device_lists: { changed: [], left: [] },
      device_one_time_keys_count: {},
      device_unused_fallback_key_types: [],
    };
    for (const ext of this.extensions) await ext({ viewer, since, upto, joinedRooms: joinedIds }, out);
    return out;
  }

  /** Timeline (newest `limit` events after `since`, up to `upto`) and the state before it. */
  private async roomTimelineAndState(viewer: Viewer, roomId: string, since: number | null, upto: number, filter: Filter | undefined): Promise<Json> {
    const tf = filter?.room?.timeline;
    const limit = Math.min(tf?.limit ?? DEFAULT_TIMELINE_LIMIT, 500);
    const range = await this.d.rooms.visibleRange(roomId, viewer.userId);
    const after = Math.max(since ?? 0, range.from);
    const end = Math.min(upto, range.to);
    const timeline: ClientEvent[] = [];
    let limited = false;
    let cursor = end;
    let firstPos: number | null = null;
    const now = Date.now();
    // Fetch in pages so filtered-out events do not starve the timeline.
    while (!limited && cursor > after) {
      const rows = await this.d.rooms.eventsBetween(roomId, { after, upto: cursor, dir: "b", limit: Math.max(limit * 2, 20) });
      if (rows.length === 0) break;
      for (const row of rows) {
        const ev = toClientEvent(row, { now, viewer, withRoomId: false });
        if (!matchesEventFilter(tf, ev)) {
          cursor = row.stream_ordering - 1;
          continue;
        }
        // One matching event more than fits: the client has a gap to fill with /messages.
        if (timeline.length >= limit) {
          limited = true;
          break;
        }
        timeline.push(ev);
        firstPos = row.stream_ordering;
        cursor = row.stream_ordering - 1;
      }
    }
    timeline.reverse();
    // State and prev_batch describe the point just before the first timeline event.
    const startPos = firstPos !== null ? firstPos - 1 : end;
    const sf = filter?.room?.state;
    const lazy = sf?.lazy_load_members === true;
    let memberKeys: string[] | undefined;
    if (lazy) memberKeys = [...new Set([...timeline.map((e) => e.sender), viewer.userId])];
    let state: ClientEvent[] = [];
    if (since === null || limited) {
      state = await this.d.rooms.stateAt(roomId, startPos, memberKeys ? { memberKeys } : undefined);
      if (since !== null) {
        const sincePos = since;
        const positions = await this.positionsOf(state.map((e) => e.event_id));
        state = state.filter((e) => (positions.get(e.event_id) ?? 0) > sincePos);
      }
      state = state.filter((e) => matchesEventFilter(sf, e)).map((e) => ({ ...e, room_id: undefined }) as ClientEvent);
      for (const e of state) delete e.room_id;
    }
    const result: Json = {
      timeline: { events: timeline, limited, prev_batch: formatToken(startPos) },
      state: { events: state },
    };
    if (since === null || limited || lazy) result.summary = await this.summary(roomId, viewer.userId);
    return result;
  }

  private async summary(roomId: string, userId: string): Promise<Json> {
    const rows = await this.d.db.selectFrom("room_members").select(["user_id", "membership"]).where("room_id", "=", roomId).where("membership", "in", ["join", "invite"]).orderBy("stream_ordering").limit(5000).execute();
    const joined = rows.filter((r) => r.membership === "join").length;
    const invited = rows.length - joined;
    const heroes = rows.filter((r) => r.user_id !== userId).slice(0, 5).map((r) => r.user_id);
    return { "m.heroes": heroes, "m.joined_member_count": joined, "m.invited_member_count": invited };
  }

  private async strippedState(roomId: string, memberEventId: string): Promise<Json[]> {
    const types = ["m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar", "m.room.canonical_alias", "m.room.encryption", "m.room.topic"];
    const state = await this.d.rooms.currentState(roomId);
    const out: Json[] = state.filter((e) => types.includes(e.type) && e.state_key === "").map((e) => ({ type: e.type, state_key: e.state_key, sender: e.sender, content: e.content }));
    const own = await this.d.rooms.event(memberEventId);
    if (own) {
      const ev = toClientEvent(own);
      out.push({ type: ev.type, state_key: ev.state_key, sender: ev.sender, content: ev.content });
    }
    return out;
  }

  private async presence(userId: string, joinedRooms: string[], since: number | null, upto: number, filter: Filter | undefined): Promise<Json[]> {
    if (joinedRooms.length === 0) return [];
    const sharers = await this.d.db.selectFrom("room_members").select("user_id").distinct().where("room_id", "in", joinedRooms).where("membership", "=", "join").execute();
    const users = sharers.map((r) => r.user_id);
    if (!users.includes(userId)) users.push(userId);
    const events = await this.d.ephemeral.presenceSince(users, since ?? 0, upto);
    return events.filter((e) => matchesEventFilter(filter?.presence, { type: e.type, sender: e.sender, content: e.content }));
  }

  private async positionsOf(eventIds: string[]): Promise<Map<string, number>> {
    if (eventIds.length === 0) return new Map();
    const rows = await this.d.db.selectFrom("events").select(["event_id", "stream_ordering"]).where("event_id", "in", eventIds).execute();
    return new Map(rows.map((r) => [r.event_id, r.stream_ordering]));
  }
}

function filterEphemeral(roomFilter: Filter["room"] | undefined): boolean {
  const ef = roomFilter?.ephemeral;
  return !(ef && ef.limit === 0);
}

function hasNews(out: Json): boolean {
  const rooms = out.rooms as Record<string, Json>;
  if (Object.values(rooms).some((section) => Object.keys(section).length > 0)) return true;
  for (const key of ["account_data", "presence", "to_device"]) if (((out[key] as { events: unknown[] }).events ?? []).length > 0) return true;
  const dl = out.device_lists as { changed: unknown[]; left: unknown[] };
  return dl.changed.length > 0 || dl.left.length > 0;
}
