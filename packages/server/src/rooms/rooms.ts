import { MatrixError, isValidRoomAlias, isValidUserId } from "@revier/protocol";
import type { StreamWriter } from "../storage/stream.js";
import type { Db } from "../storage/database.js";
import type { Accounts } from "../users/accounts.js";
import { randomLetters } from "../lib/random.js";
import { DEFAULT_ROOM_VERSION, ROOM_VERSIONS } from "./room-versions.js";
import type { NewEvent, RoomEvents } from "./room-events.js";
import { EVENT_COLUMNS, toClientEvent, type ClientEvent, type EventRow, type Viewer } from "./client-event.js";
import type { Pdu } from "./event-crypto.js";
import { prepared } from "../storage/prepared.js";
import { latestStateUpTo } from "./latest-state.js";
import { chunks } from "../lib/chunks.js";

export type Membership = "join" | "invite" | "leave" | "ban" | "knock";

export interface CreateRoomRequest {
  visibility?: "public" | "private";
  room_alias_name?: string;
  name?: string;
  topic?: string;
  invite?: string[];
  room_version?: string;
  creation_content?: Record<string, unknown>;
  initial_state?: Array<{ type: string; state_key?: string; content: Record<string, unknown> }>;
  preset?: "private_chat" | "public_chat" | "trusted_private_chat";
  is_direct?: boolean;
  power_level_content_override?: Record<string, unknown>;
}

/** Events a viewer may see in one room: stream positions in (from, to]. */
export interface VisibleRange {
  from: number;
  to: number;
}

const NOTHING: VisibleRange = { from: 0, to: -1 };

/** The visible range, from the user's member events in the room (oldest first) and its history visibility. */
function rangeFrom(own: ReadonlyArray<{ membership: string | null; stream_ordering: number }>, hv: string): VisibleRange {
  const last = own[own.length - 1];
  if (hv === "world_readable") return { from: 0, to: last && last.membership !== "join" && last.membership !== "invite" && own.some((m) => m.membership === "join") ? last.stream_ordering : Number.MAX_SAFE_INTEGER };
  if (!last) return NOTHING;
  const firstJoin = own.find((m) => m.membership === "join");
  const firstInvite = own.find((m) => m.membership === "invite" || m.membership === "join");
  let to: number;
  if (last.membership === "join") to = Number.MAX_SAFE_INTEGER;
  else if (firstJoin) to = last.stream_ordering;
  else return NOTHING;
  const from = hv === "shared" ? 0 : hv === "invited" ? (firstInvite?.stream_ordering ?? 0) - 1 : (firstJoin?.stream_ordering ?? 0) - 1;
  return { from, to };
}

// Asked by every long-poll /sync before it waits, and by every send: compiled once (see prepared.ts).
const selectJoinedRooms = prepared((db, userId: string) => db.selectFrom("room_members").select("room_id").where("user_id", "=", userId).where("membership", "=", "join"));
const selectMembership = prepared((db, roomId: string, userId: string) => db.selectFrom("room_members").select(["membership", "stream_ordering"]).where("room_id", "=", roomId).where("user_id", "=", userId));
// An initial /sync runs these once per room (1,500 rooms: 1,500 times each).
const selectStateEvent = prepared((db, roomId: string, type: string, stateKey: string) =>
  db.selectFrom("room_state").innerJoin("events", "events.event_id", "room_state.event_id").select([...EVENT_COLUMNS]).where("room_state.room_id", "=", roomId).where("room_state.type", "=", type).where("room_state.state_key", "=", stateKey),
);
const selectOwnMemberships = prepared((db, roomId: string, userId: string) =>
  db.selectFrom("events").select(["membership", "stream_ordering"]).where("room_id", "=", roomId).where("type", "=", "m.room.member").where("state_key", "=", userId).orderBy("stream_ordering"),
);
const eventsPage = (dir: "asc" | "desc") =>
  prepared((db, roomId: string, after: number, upto: number, limit: number) =>
    db
      .selectFrom("events")
      .select([...EVENT_COLUMNS, "events.type"])
      .where("events.room_id", "=", roomId)
      .where("events.stream_ordering", ">", after)
      .where("events.stream_ordering", "<=", upto)
      .orderBy("events.stream_ordering", dir)
      .limit(limit),
  );
const selectEventsForward = eventsPage("asc");

/**
 * The state query of stateAt. `memberKeys`: member events only for these users (any other state
 * in full); none given, every member event.
 */
function stateQuery(db: Db, roomId: string, at: number, memberKeys?: readonly string[]) {
  const q = db
    .selectFrom("events as e")
    .select(["e.event_id", "e.json", "e.stream_ordering", "e.redacted_by", "e.sender", "e.txn_device", "e.txn_id"])
    .where("e.room_id", "=", roomId)
    .where("e.state_key", "is not", null)
    .where("e.stream_ordering", "<=", at)
    .where((eb) => latestStateUpTo(eb, at));
  const filtered = memberKeys === undefined ? q : q.where((eb) => eb.or([eb("e.type", "!=", "m.room.member"), ...(memberKeys.length > 0 ? [eb("e.state_key", "in", memberKeys)] : [])]));
  return filtered.orderBy("e.stream_ordering");
}

// An initial /sync runs stateAt once per room (1,500 rooms: 1,500 times), lazy-loading clients
// with the few senders of the room's timeline: compiled once for each number of keys up to 64,
// rounded up to a power of two. Building and compiling the query through Kysely per room was a
// tenth of a cold initial sync's thread.
const selectState = prepared((db, roomId: string, at: number) => stateQuery(db, roomId, at));
const STATE_KEY_BUCKETS = [0, 1, 2, 4, 8, 16, 32, 64].map((size) => ({
  size,
  select: prepared((db, roomId: string, at: number, ...keys: string[]) => stateQuery(db, roomId, at, keys)),
}));

const selectEventsBackward = eventsPage("desc");

/** A check that may refuse a membership change before it is attempted (governance: closed channels). */
export type MembershipGuard = (change: { roomId: string; sender: string; target: string; membership: Membership }) => Promise<void>;

/** Room-level operations: creation, membership and the read side of room history. */
export class Rooms {
  private readonly membershipGuards: MembershipGuard[] = [];

  constructor(
    private readonly db: Db,
    private readonly events: RoomEvents,
    private readonly accounts: Accounts,
    private readonly serverName: string,
    private readonly stream: StreamWriter,
  ) {}

  /** Adds a check run before every membership change made through `setMembership`. */
  onMembershipChange(guard: MembershipGuard): void {
    this.membershipGuards.push(guard);
  }

  async create(creator: string, req: CreateRoomRequest): Promise<{ roomId: string; alias?: string }> {
    const version = req.room_version ?? DEFAULT_ROOM_VERSION;
    if (!(version in ROOM_VERSIONS)) throw new MatrixError("M_UNSUPPORTED_ROOM_VERSION", `Room version ${version} is not supported (supported: ${Object.keys(ROOM_VERSIONS).join(", ")})`);
    const visibility = req.visibility ?? "private";
    const preset = req.preset ?? (visibility === "public" ? "public_chat" : "private_chat");
    const invites = req.invite ?? [];
    for (const u of invites) if (!isValidUserId(u)) throw new MatrixError("M_INVALID_PARAM", `Invalid user id in invite: ${u}`);
    let alias: string | undefined;
    if (req.room_alias_name !== undefined) {
      if (!/^[^\s:#]+$/.test(req.room_alias_name)) throw new MatrixError("M_INVALID_PARAM", "room_alias_name may not contain whitespace, ':' or '#'");
      alias = `#${req.room_alias_name}:${this.serverName}`;
      if (!isValidRoomAlias(alias)) throw new MatrixError("M_INVALID_PARAM", "Invalid room alias");
      if (await this.resolveAlias(alias)) throw new MatrixError("M_ROOM_IN_USE", "Room alias already taken");
    }
    const roomId = `!${randomLetters(18)}:${this.serverName}`;
    const profile = await this.accounts.get(creator);
    const e = (type: string, stateKey: string | undefined, content: Record<string, unknown>): NewEvent => ({ roomId, sender: creator, type, ...(stateKey !== undefined ? { stateKey } : {}), content });

    const createContent: Record<string, unknown> = { ...(req.creation_content ?? {}), room_version: version };
    if (version === "10") createContent.creator = creator;
    else delete createContent.creator;
    const batch: NewEvent[] = [{ ...e("m.room.create", "", createContent), roomVersion: version }];
    batch.push(e("m.room.member", creator, memberContent("join", profile)));
    const users: Record<string, number> = { [creator]: 100 };
    if (preset === "trusted_private_chat") for (const u of invites) users[u] = 100;
    const pl: Record<string, unknown> = {
      users,
      users_default: 0,
      events: {
        "m.room.name": 50,
        "m.room.power_levels": 100,
        "m.room.history_visibility": 100,
        "m.room.canonical_alias": 50,
        "m.room.avatar": 50,
        "m.room.tombstone": 100,
        "m.room.server_acl": 100,
        "m.room.encryption": 100,
      },
      events_default: 0,
      state_default: 50,
      ban: 50,
      kick: 50,
      redact: 50,
      invite: preset === "public_chat" ? 0 : 0,
      notifications: { room: 50 },
      ...(req.power_level_content_override ?? {}),
    };
    batch.push(e("m.room.power_levels", "", pl));
    if (alias) batch.push(e("m.room.canonical_alias", "", { alias }));
    const overridden = new Set((req.initial_state ?? []).map((s) => `${s.type}\u0000${s.state_key ?? ""}`));
    const presetState: Array<[string, Record<string, unknown>]> = [
      ["m.room.join_rules", { join_rule: preset === "public_chat" ? "public" : "invite" }],
      ["m.room.history_visibility", { history_visibility: "shared" }],
      ...(preset !== "public_chat" ? ([["m.room.guest_access", { guest_access: "can_join" }]] as Array<[string, Record<string, unknown>]>) : []),
    ];
    for (const [type, content] of presetState) if (!overridden.has(`${type}\u0000`)) batch.push(e(type, "", content));
    for (const s of req.initial_state ?? []) {
      if (s.type === "m.room.create" || s.type === "m.room.member" || s.type === "m.room.power_levels") continue;
      batch.push(e(s.type, s.state_key ?? "", s.content));
    }
    if (req.name !== undefined) batch.push(e("m.room.name", "", { name: req.name }));
    if (req.topic !== undefined) batch.push(e("m.room.topic", "", { topic: req.topic, "m.topic": [{ mimetype: "text/plain", body: req.topic }] }));
    for (const u of invites) {
      const invitee = await this.accounts.get(u);
      batch.push(e("m.room.member", u, { ...memberContent("invite", invitee), ...(req.is_direct ? { is_direct: true } : {}) }));
    }
    await this.events.sendBatch(batch);
    if (alias) await this.db.insertInto("room_aliases").values({ alias, room_id: roomId, creator, created_ts: Date.now() }).execute();
    if (visibility === "public") await this.setVisibility(roomId, "public");
    return { roomId, ...(alias ? { alias } : {}) };
  }

  async exists(roomId: string): Promise<boolean> {
    return (await this.db.selectFrom("rooms").select("room_id").where("room_id", "=", roomId).executeTakeFirst()) !== undefined;
  }

  async roomVersion(roomId: string): Promise<string | undefined> {
    const row = await this.db.selectFrom("rooms").select("room_version").where("room_id", "=", roomId).executeTakeFirst();
    return row?.room_version;
  }

  // ---- membership -------------------------------------------------------------------------

  async membership(roomId: string, userId: string): Promise<{ membership: Membership; streamOrdering: number } | undefined> {
    const [row] = await selectMembership(this.db, roomId, userId);
    return row ? { membership: row.membership as Membership, streamOrdering: row.stream_ordering } : undefined;
  }

  /** The user's membership as of stream position `at` (inclusive), from the member events. */
  async membershipAt(roomId: string, userId: string, at: number): Promise<Membership | undefined> {
    const row = await this.db
      .selectFrom("events")
      .select("membership")
      .where("room_id", "=", roomId)
      .where("type", "=", "m.room.member")
      .where("state_key", "=", userId)
      .where("stream_ordering", "<=", at)
      .orderBy("stream_ordering", "desc")
      .limit(1)
      .executeTakeFirst();
    return (row?.membership ?? undefined) as Membership | undefined;
  }

  async requireJoined(roomId: string, userId: string): Promise<void> {
    const m = await this.membership(roomId, userId);
    if (m?.membership !== "join") throw new MatrixError("M_FORBIDDEN", "You are not a member of this room");
  }

  async setMembership(
    roomId: string,
    sender: string,
    target: string,
    membership: Membership,
    extra: { reason?: string; txn?: { deviceId: string; txnId: string }; isDirect?: boolean; viaUsers?: string } = {},
  ): Promise<string> {
    if (!(await this.exists(roomId))) throw new MatrixError("M_NOT_FOUND", "Unknown room");
    if (!isValidUserId(target)) throw new MatrixError("M_INVALID_PARAM", "Invalid user id");
    if (!this.accounts.isLocal(target)) throw new MatrixError("M_FORBIDDEN", "Federation is not enabled on this server; only local users can join rooms");
    for (const guard of this.membershipGuards) await guard({ roomId, sender, target, membership });
    const current = await this.membership(roomId, target);
    // Repeating a join or leave is a no-op success, as clients retry them.
    if (current?.membership === membership && (membership === "join" || membership === "leave") && sender === target) {
      const row = await this.db.selectFrom("room_members").select("event_id").where("room_id", "=", roomId).where("user_id", "=", target).executeTakeFirst();
      if (membership === "join" && row) return row.event_id;
    }
    const profile = membership === "join" || membership === "invite" || membership === "knock" ? await this.accounts.get(target) : undefined;
    if ((membership === "invite" || membership === "join") && profile === undefined) throw new MatrixError("M_NOT_FOUND", "Unknown user");
    if (profile?.deactivated) throw new MatrixError("M_FORBIDDEN", "That account is deactivated");
    const content: Record<string, unknown> = profile ? memberContent(membership, profile) : { membership };
    if (extra.reason !== undefined) content.reason = extra.reason;
    if (extra.isDirect) content.is_direct = true;
    if (extra.viaUsers) content.join_authorised_via_users_server = extra.viaUsers;
    const { eventId } = await this.events.send({ roomId, sender, type: "m.room.member", stateKey: target, content, ...(extra.txn ? { txn: extra.txn } : {}) });
    return eventId;
  }

  async forget(roomId: string, userId: string): Promise<void> {
    const m = await this.membership(roomId, userId);
    if (m && (m.membership === "join" || m.membership === "invite" || m.membership === "knock")) {
      throw new MatrixError("M_UNKNOWN", "Leave the room before forgetting it");
    }
    // Through the stream, so every process's cached memberships of the user hear of it.
    await this.stream.write(async (w) => {
      w.next();
      await w.tx.updateTable("room_members").set({ forgotten: 1 }).where("room_id", "=", roomId).where("user_id", "=", userId).execute();
      w.touch({ users: [userId] });
    });
  }

  async joinedRooms(userId: string): Promise<string[]> {
    const rows = await selectJoinedRooms(this.db, userId);
    return rows.map((r) => r.room_id);
  }

  async joinedMembers(roomId: string): Promise<Array<{ user_id: string; displayname: string | null; avatar_url: string | null }>> {
    return this.db.selectFrom("room_members").select(["user_id", "displayname", "avatar_url"]).where("room_id", "=", roomId).where("membership", "=", "join").execute();
  }

  async joinedMemberCount(roomId: string): Promise<number> {
    const row = await this.db.selectFrom("room_members").select((eb) => eb.fn.countAll<number>().as("n")).where("room_id", "=", roomId).where("membership", "=", "join").executeTakeFirst();
    return Number(row?.n ?? 0);
  }

  // ---- aliases and directory --------------------------------------------------------------

  async resolveAlias(alias: string): Promise<string | undefined> {
    const row = await this.db.selectFrom("room_aliases").select("room_id").where("alias", "=", alias).executeTakeFirst();
    return row?.room_id;
  }

  async resolveRoomIdOrAlias(idOrAlias: string): Promise<string> {
    if (idOrAlias.startsWith("#")) {
      const roomId = await this.resolveAlias(idOrAlias);
      if (!roomId) throw new MatrixError("M_NOT_FOUND", "Room alias not found");
      return roomId;
    }
    if (!idOrAlias.startsWith("!")) throw new MatrixError("M_INVALID_PARAM", "Expected a room id or alias");
    return idOrAlias;
  }

  async setVisibility(roomId: string, visibility: "public" | "private"): Promise<void> {
    await this.db.updateTable("rooms").set({ visibility }).where("room_id", "=", roomId).execute();
  }

  async visibility(roomId: string): Promise<"public" | "private" | undefined> {
    const row = await this.db.selectFrom("rooms").select("visibility").where("room_id", "=", roomId).executeTakeFirst();
    return row?.visibility as "public" | "private" | undefined;
  }

  // ---- state ------------------------------------------------------------------------------

  async currentState(roomId: string, viewer?: Viewer): Promise<ClientEvent[]> {
    const rows = await this.db
      .selectFrom("room_state")
      .innerJoin("events", "events.event_id", "room_state.event_id")
      .select([...EVENT_COLUMNS])
      .where("room_state.room_id", "=", roomId)
      .orderBy("events.stream_ordering")
      .execute();
    const now = Date.now();
    return rows.map((r) => toClientEvent(r, { now, ...(viewer ? { viewer } : {}) }));
  }

  /**
   * State as of stream position `at` (inclusive). Room DAGs are linear here, so the latest state
   * event per key up to `at` is the state. With `memberKeys` (lazy-loading members), member
   * events only for those users.
   */
  async stateAt(roomId: string, at: number, filter?: { memberKeys?: string[] }): Promise<ClientEvent[]> {
    const keys = filter?.memberKeys;
    let rows: EventRow[];
    if (keys === undefined) rows = await selectState(this.db, roomId, at);
    else {
      const bucket = STATE_KEY_BUCKETS.find((b) => b.size >= keys.length);
      // Padded with the last key repeated: `in (a, b, b, b)` selects what `in (a, b)` does.
      if (bucket) rows = await bucket.select(this.db, roomId, at, ...Array.from({ length: bucket.size }, (_, i) => keys[Math.min(i, keys.length - 1)]!));
      else rows = await stateQuery(this.db, roomId, at, keys).execute();
    }
    const now = Date.now();
    return rows.map((r) => toClientEvent(r, { now }));
  }

  async stateEvent(roomId: string, type: string, stateKey: string): Promise<ClientEvent | undefined> {
    const [row] = await selectStateEvent(this.db, roomId, type, stateKey);
    return row ? toClientEvent(row) : undefined;
  }

  async stateContent(roomId: string, type: string, stateKey = ""): Promise<Record<string, unknown> | undefined> {
    return (await this.stateEvent(roomId, type, stateKey))?.content;
  }

  // ---- history ----------------------------------------------------------------------------

  /**
   * Which part of a room's history a user may read, following history visibility: while joined
   * everything (for `shared`) or from their join/invite on; after leaving, nothing past the leave.
   */
  async visibleRange(roomId: string, userId: string): Promise<VisibleRange> {
    const own = await selectOwnMemberships(this.db, roomId, userId);
    const hv = String((await this.stateContent(roomId, "m.room.history_visibility"))?.history_visibility ?? "shared");
    return rangeFrom(own, hv);
  }

  /**
   * visibleRange for many rooms at once (an initial /sync of an account in 1,500 rooms would ask
   * 3,000 questions otherwise): the user's own member events in one query, the rooms' history
   * visibility in one query per 500 rooms.
   */
  async visibleRanges(userId: string, roomIds: readonly string[]): Promise<Map<string, VisibleRange>> {
    const wanted = new Set(roomIds);
    const own = new Map<string, Array<{ membership: string | null; stream_ordering: number }>>();
    for (const r of await this.db.selectFrom("events").select(["room_id", "membership", "stream_ordering"]).where("type", "=", "m.room.member").where("state_key", "=", userId).orderBy("stream_ordering").execute()) {
      if (!wanted.has(r.room_id)) continue;
      let list = own.get(r.room_id);
      if (!list) own.set(r.room_id, (list = []));
      list.push(r);
    }
    const hv = new Map<string, string>();
    for (const ids of chunks(roomIds)) {
      const rows = await this.db
        .selectFrom("room_state")
        .innerJoin("events", "events.event_id", "room_state.event_id")
        .select(["room_state.room_id", ...EVENT_COLUMNS])
        .where("room_state.type", "=", "m.room.history_visibility")
        .where("room_state.state_key", "=", "")
        .where("room_state.room_id", "in", ids)
        .execute();
      for (const r of rows) hv.set(r.room_id, String(toClientEvent(r).content.history_visibility ?? "shared"));
    }
    return new Map(roomIds.map((id) => [id, rangeFrom(own.get(id) ?? [], hv.get(id) ?? "shared")]));
  }

  async event(eventId: string): Promise<(EventRow & { room_id: string }) | undefined> {
    return this.db.selectFrom("events").select([...EVENT_COLUMNS, "events.room_id"]).where("events.event_id", "=", eventId).executeTakeFirst();
  }

  /** An event the viewer may see, or M_NOT_FOUND (never revealing that it exists elsewhere). */
  async visibleEvent(roomId: string, eventId: string, viewer: Viewer): Promise<ClientEvent> {
    const row = await this.event(eventId);
    if (!row || row.room_id !== roomId) throw new MatrixError("M_NOT_FOUND", "Event not found");
    const range = await this.visibleRange(roomId, viewer.userId);
    if (row.stream_ordering <= range.from || row.stream_ordering > range.to) throw new MatrixError("M_NOT_FOUND", "Event not found");
    return toClientEvent(row, { viewer });
  }

  /** Events with from < position <= to in the given direction, at most `limit`, filtered by predicate. */
  async eventsBetween(roomId: string, opts: { after: number; upto: number; dir: "f" | "b"; limit: number; types?: string[]; notTypes?: string[]; senders?: string[]; notSenders?: string[] }): Promise<Array<EventRow & { type: string }>> {
    const filtered = [opts.types, opts.notTypes, opts.senders, opts.notSenders].some((f) => f !== undefined && f.length > 0);
    if (!filtered) return (opts.dir === "f" ? selectEventsForward : selectEventsBackward)(this.db, roomId, opts.after, opts.upto, opts.limit);
    let q = this.db
      .selectFrom("events")
      .select([...EVENT_COLUMNS, "events.type"])
      .where("events.room_id", "=", roomId)
      .where("events.stream_ordering", ">", opts.after)
      .where("events.stream_ordering", "<=", opts.upto);
    if (opts.types && opts.types.length > 0 && !opts.types.some((t) => t.includes("*"))) q = q.where("events.type", "in", opts.types);
    if (opts.notTypes && opts.notTypes.length > 0 && !opts.notTypes.some((t) => t.includes("*"))) q = q.where("events.type", "not in", opts.notTypes);
    if (opts.senders && opts.senders.length > 0) q = q.where("events.sender", "in", opts.senders);
    if (opts.notSenders && opts.notSenders.length > 0) q = q.where("events.sender", "not in", opts.notSenders);
    return q.orderBy("events.stream_ordering", opts.dir === "f" ? "asc" : "desc").limit(opts.limit).execute();
  }

  /** `asMember`: see RoomEvents.send. */
  async send(ev: NewEvent, opts: { asMember?: boolean } = {}): Promise<string> {
    return (await this.events.send(ev, opts)).eventId;
  }

  parsePdu(json: string): Pdu {
    return JSON.parse(json) as Pdu;
  }
}

function memberContent(membership: Membership, profile: { displayname: string | null; avatar_url: string | null } | undefined): Record<string, unknown> {
  const c: Record<string, unknown> = { membership };
  if (profile?.displayname) c.displayname = profile.displayname;
  if (profile?.avatar_url) c.avatar_url = profile.avatar_url;
  return c;
}
