import { Type, type Static } from "@sinclair/typebox";
import { MatrixError, isValidRoomAlias, isValidRoomId, isValidUserId } from "@revier/protocol";
import { route } from "../../http/route.js";
import type { Services } from "../../services.js";
import { toClientEvent, type ClientEvent } from "../../rooms/client-event.js";
import { matchesEventFilter, parseFilter, type RoomEventFilter } from "../../sync/filter.js";
import { formatToken, parseToken } from "../../sync/sync.js";
import type { Membership } from "../../rooms/rooms.js";
import { mayRedact } from "../../rooms/auth-rules.js";

const RoomParams = Type.Object({ roomId: Type.String({ maxLength: 255 }) });
const Content = Type.Record(Type.String(), Type.Unknown());
const MAX_LIMIT = 1000;

function roomIdOf(raw: string): string {
  if (!isValidRoomId(raw)) throw new MatrixError("M_INVALID_PARAM", "Invalid room id");
  return raw;
}

function userIdOf(raw: string): string {
  if (!isValidUserId(raw)) throw new MatrixError("M_INVALID_PARAM", "Invalid user id");
  return raw;
}

/** A non-member learns nothing about a room, not even whether it exists. */
async function requireCanRead(s: Services, roomId: string, userId: string): Promise<void> {
  const m = await s.rooms.membership(roomId, userId);
  if (!m || (m.membership !== "join" && m.membership !== "leave" && m.membership !== "ban")) {
    throw new MatrixError("M_FORBIDDEN", "You are not in this room or it does not exist");
  }
}

const CreateRoomBody = Type.Object(
  {
    visibility: Type.Optional(Type.Union([Type.Literal("public"), Type.Literal("private")])),
    room_alias_name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    name: Type.Optional(Type.String({ maxLength: 1000 })),
    topic: Type.Optional(Type.String({ maxLength: 10000 })),
    invite: Type.Optional(Type.Array(Type.String({ maxLength: 255 }), { maxItems: 1000 })),
    invite_3pid: Type.Optional(Type.Array(Type.Unknown(), { maxItems: 0 })),
    room_version: Type.Optional(Type.String({ maxLength: 32 })),
    creation_content: Type.Optional(Content),
    initial_state: Type.Optional(Type.Array(Type.Object({ type: Type.String({ minLength: 1, maxLength: 255 }), state_key: Type.Optional(Type.String({ maxLength: 255 })), content: Content }), { maxItems: 100 })),
    preset: Type.Optional(Type.Union([Type.Literal("private_chat"), Type.Literal("public_chat"), Type.Literal("trusted_private_chat")])),
    is_direct: Type.Optional(Type.Boolean()),
    power_level_content_override: Type.Optional(Content),
  },
  { additionalProperties: true },
);

/** Hooks that may refuse or adjust a room creation (channel policy). */
export type CreateRoomGuard = (userId: string, body: Static<typeof CreateRoomBody>, s: Services) => Promise<void>;
/** Hooks that may refuse making an existing room public (directory listing or `public` join rule): channel policy. */
export type PublishRoomGuard = (userId: string, roomId: string, s: Services) => Promise<void>;
/** Hooks run after a room was listed in the directory, at creation or later (records the channel owner). */
export type RoomPublishedHook = (userId: string, roomId: string, s: Services) => Promise<void>;

const ReasonBody = Type.Optional(Type.Object({ reason: Type.Optional(Type.String({ maxLength: 1000 })) }, { additionalProperties: true }));
const TargetBody = Type.Object({ user_id: Type.String({ maxLength: 255 }), reason: Type.Optional(Type.String({ maxLength: 1000 })) }, { additionalProperties: true });

async function join(s: Services, userId: string, roomIdOrAlias: string): Promise<{ room_id: string }> {
  if (!isValidRoomId(roomIdOrAlias) && !isValidRoomAlias(roomIdOrAlias)) throw new MatrixError("M_INVALID_PARAM", "Invalid room id or alias");
  const roomId = await s.rooms.resolveRoomIdOrAlias(roomIdOrAlias);
  if (!(await s.rooms.exists(roomId))) throw new MatrixError("M_NOT_FOUND", "Unknown room");
  await s.rooms.setMembership(roomId, userId, userId, "join");
  return { room_id: roomId };
}

function targetedMembership(membership: Membership, url: string) {
  return route({ method: "POST", url, params: RoomParams, body: TargetBody }, async ({ user, params, body }, s) => {
    const roomId = roomIdOf(params.roomId);
    const target = userIdOf(body.user_id);
    if (membership === "leave" && target === user.userId) throw new MatrixError("M_FORBIDDEN", "Use /leave to leave a room");
    if (url.endsWith("/unban")) {
      const m = await s.rooms.membership(roomId, target);
      if (m?.membership !== "ban") throw new MatrixError("M_FORBIDDEN", "That user is not banned");
    }
    if (url.endsWith("/kick")) {
      const m = await s.rooms.membership(roomId, target);
      if (!m || (m.membership !== "join" && m.membership !== "invite" && m.membership !== "knock")) throw new MatrixError("M_FORBIDDEN", "That user is not in the room");
    }
    await s.rooms.setMembership(roomId, user.userId, target, membership, body.reason !== undefined ? { reason: body.reason } : {});
    return {};
  });
}

export const roomRoutes = [
  route({ method: "POST", url: "/_matrix/client/v3/createRoom", body: CreateRoomBody, rateLimit: "send" }, async ({ user, body }, s) => {
    for (const guard of s.createRoomGuards) await guard(user.userId, body, s);
    const { roomId, alias } = await s.rooms.create(user.userId, body);
    if (body.visibility === "public") for (const hook of s.roomPublishedHooks) await hook(user.userId, roomId, s);
    return { room_id: roomId, ...(alias ? { room_alias: alias } : {}) };
  }),

  route({ method: "POST", url: "/_matrix/client/v3/join/:roomIdOrAlias", params: Type.Object({ roomIdOrAlias: Type.String({ maxLength: 255 }) }), body: ReasonBody, rateLimit: "send" }, async ({ user, params }, s) =>
    join(s, user.userId, params.roomIdOrAlias),
  ),
  route({ method: "POST", url: "/_matrix/client/v3/rooms/:roomId/join", params: RoomParams, body: ReasonBody, rateLimit: "send" }, async ({ user, params }, s) => join(s, user.userId, roomIdOf(params.roomId))),

  route({ method: "POST", url: "/_matrix/client/v3/knock/:roomIdOrAlias", params: Type.Object({ roomIdOrAlias: Type.String({ maxLength: 255 }) }), body: ReasonBody, rateLimit: "send" }, async ({ user, params, body }, s) => {
    const roomId = await s.rooms.resolveRoomIdOrAlias(params.roomIdOrAlias);
    await s.rooms.setMembership(roomId, user.userId, user.userId, "knock", body?.reason !== undefined ? { reason: body.reason } : {});
    return { room_id: roomId };
  }),

  route({ method: "POST", url: "/_matrix/client/v3/rooms/:roomId/leave", params: RoomParams, body: ReasonBody }, async ({ user, params, body }, s) => {
    const roomId = roomIdOf(params.roomId);
    const m = await s.rooms.membership(roomId, user.userId);
    if (!m) throw new MatrixError("M_NOT_FOUND", "You are not in this room");
    if (m.membership === "leave" || m.membership === "ban") return {};
    await s.rooms.setMembership(roomId, user.userId, user.userId, "leave", body?.reason !== undefined ? { reason: body.reason } : {});
    return {};
  }),

  route({ method: "POST", url: "/_matrix/client/v3/rooms/:roomId/forget", params: RoomParams }, async ({ user, params }, s) => {
    await s.rooms.forget(roomIdOf(params.roomId), user.userId);
    return {};
  }),

  targetedMembership("invite", "/_matrix/client/v3/rooms/:roomId/invite"),
  targetedMembership("leave", "/_matrix/client/v3/rooms/:roomId/kick"),
  targetedMembership("ban", "/_matrix/client/v3/rooms/:roomId/ban"),
  targetedMembership("leave", "/_matrix/client/v3/rooms/:roomId/unban"),

  route(
    { method: "PUT", url: "/_matrix/client/v3/rooms/:roomId/send/:eventType/:txnId", params: Type.Object({ roomId: Type.String({ maxLength: 255 }), eventType: Type.String({ minLength: 1, maxLength: 255 }), txnId: Type.String({ minLength: 1, maxLength: 255 }) }), body: Content, rateLimit: "send" },
    async ({ user, params, body }, s) => {
      const roomId = roomIdOf(params.roomId);
      if (params.eventType === "m.room.redaction") throw new MatrixError("M_BAD_JSON", "Use the /redact endpoint to redact events");
      // Membership is checked with the send's other reads (see RoomEvents.send).
      const eventId = await s.rooms.send({ roomId, sender: user.userId, type: params.eventType, content: body, txn: { deviceId: user.deviceId, txnId: params.txnId } }, { asMember: true });
      return { event_id: eventId };
    },
  ),

  route(
    { method: "PUT", url: "/_matrix/client/v3/rooms/:roomId/redact/:eventId/:txnId", params: Type.Object({ roomId: Type.String({ maxLength: 255 }), eventId: Type.String({ maxLength: 255 }), txnId: Type.String({ minLength: 1, maxLength: 255 }) }), body: Type.Object({ reason: Type.Optional(Type.String({ maxLength: 1000 })) }, { additionalProperties: true }), rateLimit: "send" },
    async ({ user, params, body }, s) => {
      const roomId = roomIdOf(params.roomId);
      await s.rooms.requireJoined(roomId, user.userId);
      const target = await s.rooms.event(params.eventId);
      if (!target || target.room_id !== roomId) throw new MatrixError("M_NOT_FOUND", "Event not found");
      const version = await s.rooms.roomVersion(roomId);
      const content: Record<string, unknown> = body.reason !== undefined ? { reason: body.reason } : {};
      if (version === "11") content.redacts = params.eventId;
      const authState = await s.roomEvents.loadAuthState(s.storage.db, roomId, { type: "m.room.redaction", sender: user.userId, content: {} });
      if (!mayRedact(user.userId, target.sender, authState)) throw new MatrixError("M_FORBIDDEN", "You may only redact your own events");
      const eventId = await s.rooms.send({ roomId, sender: user.userId, type: "m.room.redaction", content, redacts: params.eventId, txn: { deviceId: user.deviceId, txnId: `redact:${params.txnId}` } });
      return { event_id: eventId };
    },
  ),

  route(
    { method: "PUT", url: "/_matrix/client/v3/rooms/:roomId/state/:eventType/:stateKey", params: Type.Object({ roomId: Type.String({ maxLength: 255 }), eventType: Type.String({ minLength: 1, maxLength: 255 }), stateKey: Type.String({ maxLength: 255 }) }), body: Content, rateLimit: "send" },
    async ({ user, params, body }, s) => sendState(s, user.userId, params.roomId, params.eventType, params.stateKey, body),
  ),
  route(
    { method: "PUT", url: "/_matrix/client/v3/rooms/:roomId/state/:eventType", params: Type.Object({ roomId: Type.String({ maxLength: 255 }), eventType: Type.String({ minLength: 1, maxLength: 255 }) }), body: Content, rateLimit: "send" },
    async ({ user, params, body }, s) => sendState(s, user.userId, params.roomId, params.eventType, "", body),
  ),

  route({ method: "GET", url: "/_matrix/client/v3/rooms/:roomId/state", params: RoomParams }, async ({ user, params }, s) => {
    const roomId = roomIdOf(params.roomId);
    await requireCanRead(s, roomId, user.userId);
    const m = await s.rooms.membership(roomId, user.userId);
    const events = m?.membership === "join" ? await s.rooms.currentState(roomId) : await s.rooms.stateAt(roomId, m!.streamOrdering);
    return events;
  }),

  route(
    { method: "GET", url: "/_matrix/client/v3/rooms/:roomId/state/:eventType/:stateKey", params: Type.Object({ roomId: Type.String({ maxLength: 255 }), eventType: Type.String({ maxLength: 255 }), stateKey: Type.String({ maxLength: 255 }) }), query: Type.Object({ format: Type.Optional(Type.String()) }) },
    async ({ user, params, query }, s) => getState(s, user.userId, params.roomId, params.eventType, params.stateKey, query.format),
  ),
  route(
    { method: "GET", url: "/_matrix/client/v3/rooms/:roomId/state/:eventType", params: Type.Object({ roomId: Type.String({ maxLength: 255 }), eventType: Type.String({ maxLength: 255 }) }), query: Type.Object({ format: Type.Optional(Type.String()) }) },
    async ({ user, params, query }, s) => getState(s, user.userId, params.roomId, params.eventType, "", query.format),
  ),

  route({ method: "GET", url: "/_matrix/client/v3/rooms/:roomId/event/:eventId", params: Type.Object({ roomId: Type.String({ maxLength: 255 }), eventId: Type.String({ maxLength: 255 }) }) }, async ({ user, params }, s) => {
    const roomId = roomIdOf(params.roomId);
    await requireCanRead(s, roomId, user.userId);
    return s.rooms.visibleEvent(roomId, params.eventId, user);
  }),

  route(
    { method: "GET", url: "/_matrix/client/v3/rooms/:roomId/members", params: RoomParams, query: Type.Object({ at: Type.Optional(Type.String()), membership: Type.Optional(Type.String()), not_membership: Type.Optional(Type.String()) }) },
    async ({ user, params, query }, s) => {
      const roomId = roomIdOf(params.roomId);
      await requireCanRead(s, roomId, user.userId);
      const m = await s.rooms.membership(roomId, user.userId);
      let at = query.at !== undefined ? parseToken(query.at) : Number.MAX_SAFE_INTEGER;
      if (m && m.membership !== "join") at = Math.min(at, m.streamOrdering);
      const state = at === Number.MAX_SAFE_INTEGER ? await s.rooms.currentState(roomId) : await s.rooms.stateAt(roomId, at);
      const chunk = state.filter((e) => e.type === "m.room.member" && (query.membership === undefined || e.content.membership === query.membership) && (query.not_membership === undefined || e.content.membership !== query.not_membership));
      return { chunk };
    },
  ),

  route({ method: "GET", url: "/_matrix/client/v3/rooms/:roomId/joined_members", params: RoomParams }, async ({ user, params }, s) => {
    const roomId = roomIdOf(params.roomId);
    await s.rooms.requireJoined(roomId, user.userId);
    const joined: Record<string, { display_name?: string; avatar_url?: string }> = {};
    for (const m of await s.rooms.joinedMembers(roomId)) joined[m.user_id] = { ...(m.displayname ? { display_name: m.displayname } : {}), ...(m.avatar_url ? { avatar_url: m.avatar_url } : {}) };
    return { joined };
  }),

  route({ method: "GET", url: "/_matrix/client/v3/joined_rooms" }, async ({ user }, s) => ({ joined_rooms: await s.rooms.joinedRooms(user.userId) })),

  route(
    {
      method: "GET",
      url: "/_matrix/client/v3/rooms/:roomId/messages",
      params: RoomParams,
      query: Type.Object({ from: Type.Optional(Type.String()), to: Type.Optional(Type.String()), dir: Type.Optional(Type.Union([Type.Literal("b"), Type.Literal("f")])), limit: Type.Optional(Type.Integer({ minimum: 0 })), filter: Type.Optional(Type.String({ maxLength: 8192 })) }),
    },
    async ({ user, params, query }, s) => {
      const roomId = roomIdOf(params.roomId);
      await requireCanRead(s, roomId, user.userId);
      const dir = query.dir ?? "b";
      const limit = Math.min(query.limit ?? 10, MAX_LIMIT);
      const filter = parseRoomEventFilter(query.filter);
      const range = await s.rooms.visibleRange(roomId, user.userId);
      const current = await s.stream.current();
      const from = query.from !== undefined ? parseToken(query.from) : dir === "b" ? current : 0;
      const to = query.to !== undefined ? parseToken(query.to) : undefined;
      let lo: number;
      let hi: number;
      if (dir === "b") {
        hi = Math.min(from, range.to);
        lo = Math.max(range.from, to ?? 0);
      } else {
        lo = Math.max(from, range.from);
        hi = Math.min(range.to, to ?? current);
      }
      const chunk: ClientEvent[] = [];
      let cursor = dir === "b" ? hi : lo;
      let exhausted = false;
      const now = Date.now();
      while (chunk.length < limit && !exhausted) {
        const rows = await s.rooms.eventsBetween(roomId, { after: dir === "b" ? lo : cursor, upto: dir === "b" ? cursor : hi, dir, limit: limit - chunk.length, ...sqlFilter(filter) });
        if (rows.length < limit - chunk.length) exhausted = true;
        for (const row of rows) {
          cursor = dir === "b" ? row.stream_ordering - 1 : row.stream_ordering;
          const ev = toClientEvent(row, { now, viewer: user });
          if (matchesEventFilter(filter, ev)) chunk.push(ev);
        }
        if (rows.length === 0) exhausted = true;
      }
      const out: Record<string, unknown> = { chunk, start: formatToken(from) };
      if (!exhausted || chunk.length === limit) {
        if (!(dir === "b" ? cursor <= lo : cursor >= hi)) out.end = formatToken(cursor);
      }
      if (filter?.lazy_load_members && chunk.length > 0) {
        const senders = [...new Set(chunk.map((e) => e.sender))];
        const pos = dir === "b" ? hi : lo;
        out.state = (await s.rooms.stateAt(roomId, pos, { memberKeys: senders })).filter((e) => e.type === "m.room.member");
      }
      return out;
    },
  ),

  route(
    { method: "GET", url: "/_matrix/client/v3/rooms/:roomId/context/:eventId", params: Type.Object({ roomId: Type.String({ maxLength: 255 }), eventId: Type.String({ maxLength: 255 }) }), query: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 0 })), filter: Type.Optional(Type.String({ maxLength: 8192 })) }) },
    async ({ user, params, query }, s) => {
      const roomId = roomIdOf(params.roomId);
      await requireCanRead(s, roomId, user.userId);
      const event = await s.rooms.visibleEvent(roomId, params.eventId, user);
      const row = await s.rooms.event(params.eventId);
      const pos = row!.stream_ordering;
      const limit = Math.min(query.limit ?? 10, MAX_LIMIT);
      const filter = parseRoomEventFilter(query.filter);
      const range = await s.rooms.visibleRange(roomId, user.userId);
      const beforeCount = Math.floor(limit / 2);
      const afterCount = limit - beforeCount;
      const before = (await s.rooms.eventsBetween(roomId, { after: range.from, upto: pos - 1, dir: "b", limit: beforeCount, ...sqlFilter(filter) })).map((r) => toClientEvent(r, { viewer: user })).filter((e) => matchesEventFilter(filter, e));
      const after = (await s.rooms.eventsBetween(roomId, { after: pos, upto: range.to, dir: "f", limit: afterCount, ...sqlFilter(filter) })).map((r) => toClientEvent(r, { viewer: user })).filter((e) => matchesEventFilter(filter, e));
      const startPos = before.length > 0 ? ((await s.rooms.event(before[before.length - 1]!.event_id))!.stream_ordering - 1) : pos - 1;
      const endPos = after.length > 0 ? (await s.rooms.event(after[after.length - 1]!.event_id))!.stream_ordering : pos;
      const stateEvents = await s.rooms.stateAt(roomId, Math.min(endPos, range.to), filter?.lazy_load_members ? { memberKeys: [...new Set([event, ...before, ...after].map((e) => e.sender))] } : undefined);
      return { event, events_before: before, events_after: after, start: formatToken(startPos), end: formatToken(endPos), state: stateEvents };
    },
  ),

  route(
    {
      method: "GET",
      url: "/_matrix/client/v1/rooms/:roomId/relations/:eventId",
      params: Type.Object({ roomId: Type.String({ maxLength: 255 }), eventId: Type.String({ maxLength: 255 }) }),
      query: RelationsQuery(),
    },
    async ({ user, params, query }, s) => relations(s, user, params.roomId, params.eventId, undefined, undefined, query),
  ),
  route(
    {
      method: "GET",
      url: "/_matrix/client/v1/rooms/:roomId/relations/:eventId/:relType",
      params: Type.Object({ roomId: Type.String({ maxLength: 255 }), eventId: Type.String({ maxLength: 255 }), relType: Type.String({ maxLength: 255 }) }),
      query: RelationsQuery(),
    },
    async ({ user, params, query }, s) => relations(s, user, params.roomId, params.eventId, params.relType, undefined, query),
  ),
  route(
    {
      method: "GET",
      url: "/_matrix/client/v1/rooms/:roomId/relations/:eventId/:relType/:eventType",
      params: Type.Object({ roomId: Type.String({ maxLength: 255 }), eventId: Type.String({ maxLength: 255 }), relType: Type.String({ maxLength: 255 }), eventType: Type.String({ maxLength: 255 }) }),
      query: RelationsQuery(),
    },
    async ({ user, params, query }, s) => relations(s, user, params.roomId, params.eventId, params.relType, params.eventType, query),
  ),
];

function RelationsQuery() {
  return Type.Object({ from: Type.Optional(Type.String()), to: Type.Optional(Type.String()), limit: Type.Optional(Type.Integer({ minimum: 0 })), dir: Type.Optional(Type.Union([Type.Literal("b"), Type.Literal("f")])), recurse: Type.Optional(Type.Boolean()) });
}

async function relations(
  s: Services,
  user: { userId: string; deviceId: string },
  rawRoomId: string,
  eventId: string,
  relType: string | undefined,
  eventType: string | undefined,
  query: { from?: string; to?: string; limit?: number; dir?: "b" | "f" },
): Promise<Record<string, unknown>> {
  const roomId = roomIdOf(rawRoomId);
  await requireCanRead(s, roomId, user.userId);
  await s.rooms.visibleEvent(roomId, eventId, user);
  const range = await s.rooms.visibleRange(roomId, user.userId);
  const dir = query.dir ?? "b";
  const limit = Math.min(query.limit ?? 50, MAX_LIMIT);
  const from = query.from !== undefined ? parseToken(query.from) : undefined;
  let q = s.storage.db
    .selectFrom("events")
    .select(["events.event_id", "events.json", "events.stream_ordering", "events.redacted_by", "events.sender", "events.txn_device", "events.txn_id", "events.type"])
    .where("events.room_id", "=", roomId)
    .where("events.relates_to", "=", eventId)
    .where("events.rel_type", "!=", "m.in_reply_to")
    // Redaction strips m.relates_to, so a redacted child no longer relates to its parent.
    .where("events.redacted_by", "is", null)
    .where("events.stream_ordering", ">", range.from)
    .where("events.stream_ordering", "<=", range.to);
  if (relType !== undefined) q = q.where("events.rel_type", "=", relType);
  if (eventType !== undefined) q = q.where("events.type", "=", eventType);
  if (from !== undefined) q = dir === "b" ? q.where("events.stream_ordering", "<=", from) : q.where("events.stream_ordering", ">", from);
  const rows = await q.orderBy("events.stream_ordering", dir === "b" ? "desc" : "asc").limit(limit + 1).execute();
  const page = rows.slice(0, limit);
  const out: Record<string, unknown> = { chunk: page.map((r) => toClientEvent(r, { viewer: user })) };
  const last = page[page.length - 1];
  if (rows.length > limit && last) out.next_batch = formatToken(dir === "b" ? last.stream_ordering - 1 : last.stream_ordering);
  return out;
}

function parseRoomEventFilter(raw: string | undefined): (RoomEventFilter & { lazy_load_members?: boolean }) | undefined {
  if (raw === undefined) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    throw new MatrixError("M_INVALID_PARAM", "filter must be a JSON object");
  }
  try {
    const f = parseFilter({ room: { timeline: json } });
    return f.room?.timeline as RoomEventFilter & { lazy_load_members?: boolean };
  } catch (err) {
    throw new MatrixError("M_INVALID_PARAM", `Invalid filter: ${(err as Error).message}`);
  }
}

function sqlFilter(f: RoomEventFilter | undefined): { types?: string[]; notTypes?: string[]; senders?: string[]; notSenders?: string[] } {
  if (!f) return {};
  return {
    ...(f.types ? { types: f.types } : {}),
    ...(f.not_types ? { notTypes: f.not_types } : {}),
    ...(f.senders ? { senders: f.senders } : {}),
    ...(f.not_senders ? { notSenders: f.not_senders } : {}),
  };
}

async function sendState(s: Services, userId: string, rawRoomId: string, type: string, stateKey: string, content: Record<string, unknown>): Promise<{ event_id: string }> {
  const roomId = roomIdOf(rawRoomId);
  await s.rooms.requireJoined(roomId, userId);
  if (type === "m.room.member") {
    const membership = content.membership;
    if (typeof membership !== "string") throw new MatrixError("M_BAD_JSON", "membership is required");
  }
  if (type === "m.room.join_rules" && stateKey === "" && content.join_rule === "public") {
    for (const guard of s.publishRoomGuards) await guard(userId, roomId, s);
  }
  if (type === "m.room.canonical_alias") {
    for (const a of [content.alias, ...(Array.isArray(content.alt_aliases) ? content.alt_aliases : [])]) {
      if (a === undefined || a === null) continue;
      if (typeof a !== "string" || !isValidRoomAlias(a)) throw new MatrixError("M_INVALID_PARAM", "Invalid alias in m.room.canonical_alias");
      if ((await s.rooms.resolveAlias(a)) !== roomId) throw new MatrixError("M_BAD_ALIAS", `Alias ${a} does not point to this room`);
    }
  }
  const eventId = await s.rooms.send({ roomId, sender: userId, type, stateKey, content });
  return { event_id: eventId };
}

async function getState(s: Services, userId: string, rawRoomId: string, type: string, stateKey: string, format: string | undefined): Promise<unknown> {
  const roomId = roomIdOf(rawRoomId);
  await requireCanRead(s, roomId, userId);
  const m = await s.rooms.membership(roomId, userId);
  let ev: ClientEvent | undefined;
  if (m?.membership === "join") ev = await s.rooms.stateEvent(roomId, type, stateKey);
  else ev = (await s.rooms.stateAt(roomId, m!.streamOrdering)).find((e) => e.type === type && e.state_key === stateKey);
  if (!ev) throw new MatrixError("M_NOT_FOUND", "State event not found");
  return format === "event" ? ev : ev.content;
}
