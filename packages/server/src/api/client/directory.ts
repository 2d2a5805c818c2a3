import { Type } from "@sinclair/typebox";
import { MatrixError, isValidRoomAlias, isValidRoomId } from "@revier/protocol";
import { route } from "../../http/route.js";
import type { Services } from "../../services.js";

const AliasParams = Type.Object({ roomAlias: Type.String({ maxLength: 255 }) });

function aliasOf(raw: string, s: Services): string {
  if (!isValidRoomAlias(raw)) throw new MatrixError("M_INVALID_PARAM", "Invalid room alias");
  if (!raw.endsWith(`:${s.config.serverName}`)) throw new MatrixError("M_INVALID_PARAM", "Aliases must be on this server");
  return raw;
}

async function powerLevel(s: Services, roomId: string, userId: string): Promise<number> {
  const pl = await s.rooms.stateContent(roomId, "m.room.power_levels");
  const users = (pl?.users ?? {}) as Record<string, number>;
  return users[userId] ?? Number(pl?.users_default ?? 0);
}

interface PublicRoom {
  room_id: string;
  num_joined_members: number;
  world_readable: boolean;
  guest_can_join: boolean;
  name?: string;
  topic?: string;
  canonical_alias?: string;
  avatar_url?: string;
  join_rule?: string;
  room_type?: string;
}

async function publicRoomChunk(s: Services, roomId: string): Promise<PublicRoom> {
  const state = await s.rooms.currentState(roomId);
  const get = (type: string) => state.find((e) => e.type === type && e.state_key === "")?.content;
  const str = (v: unknown) => (typeof v === "string" && v !== "" ? v : undefined);
  const chunk: PublicRoom = {
    room_id: roomId,
    num_joined_members: await s.rooms.joinedMemberCount(roomId),
    world_readable: get("m.room.history_visibility")?.history_visibility === "world_readable",
    guest_can_join: get("m.room.guest_access")?.guest_access === "can_join",
  };
  const name = str(get("m.room.name")?.name);
  const topic = str(get("m.room.topic")?.topic);
  const alias = str(get("m.room.canonical_alias")?.alias);
  const avatar = str(get("m.room.avatar")?.url);
  const joinRule = str(get("m.room.join_rules")?.join_rule);
  const roomType = str(get("m.room.create")?.type);
  if (name) chunk.name = name;
  if (topic) chunk.topic = topic;
  if (alias) chunk.canonical_alias = alias;
  if (avatar) chunk.avatar_url = avatar;
  if (joinRule) chunk.join_rule = joinRule;
  if (roomType) chunk.room_type = roomType;
  return chunk;
}

async function publicRooms(s: Services, opts: { limit?: number; since?: string; term?: string }): Promise<Record<string, unknown>> {
  const rows = await s.storage.db.selectFrom("rooms").select("room_id").where("visibility", "=", "public").orderBy("room_id").execute();
  let chunks = await Promise.all(rows.map((r) => publicRoomChunk(s, r.room_id)));
  if (opts.term) {
    const t = opts.term.toLowerCase();
    chunks = chunks.filter((c) => [c.name, c.topic, c.canonical_alias].some((v) => v?.toLowerCase().includes(t)));
  }
  chunks.sort((a, b) => b.num_joined_members - a.num_joined_members || a.room_id.localeCompare(b.room_id));
  const offset = opts.since !== undefined ? Number(/^o(\d{1,9})$/.exec(opts.since)?.[1] ?? NaN) : 0;
  if (!Number.isInteger(offset)) throw new MatrixError("M_INVALID_PARAM", "Invalid pagination token");
  const limit = Math.min(opts.limit ?? 100, 500);
  const page = chunks.slice(offset, offset + limit);
  const out: Record<string, unknown> = { chunk: page, total_room_count_estimate: chunks.length };
  if (offset + limit < chunks.length) out.next_batch = `o${offset + limit}`;
  if (offset > 0) out.prev_batch = `o${Math.max(0, offset - limit)}`;
  return out;
}

export const directoryRoutes = [
  route({ method: "GET", url: "/_matrix/client/v3/directory/room/:roomAlias", params: AliasParams, auth: "optional" }, async ({ params }, s) => {
    if (!isValidRoomAlias(params.roomAlias)) throw new MatrixError("M_INVALID_PARAM", "Invalid room alias");
    const roomId = await s.rooms.resolveAlias(params.roomAlias);
    if (!roomId) throw new MatrixError("M_NOT_FOUND", "Room alias not found");
    return { room_id: roomId, servers: [s.config.serverName] };
  }),

  route({ method: "PUT", url: "/_matrix/client/v3/directory/room/:roomAlias", params: AliasParams, body: Type.Object({ room_id: Type.String({ maxLength: 255 }) }) }, async ({ user, params, body }, s) => {
    const alias = aliasOf(params.roomAlias, s);
    if (!isValidRoomId(body.room_id) || !(await s.rooms.exists(body.room_id))) throw new MatrixError("M_NOT_FOUND", "Unknown room");
    await s.rooms.requireJoined(body.room_id, user.userId);
    const inserted = await s.storage.db.insertInto("room_aliases").values({ alias, room_id: body.room_id, creator: user.userId, created_ts: Date.now() }).onConflict((oc) => oc.column("alias").doNothing()).executeTakeFirst();
    if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 0) throw new MatrixError("M_UNKNOWN", "Room alias already exists", { status: 409 });
    return {};
  }),

  route({ method: "DELETE", url: "/_matrix/client/v3/directory/room/:roomAlias", params: AliasParams }, async ({ user, params }, s) => {
    const alias = aliasOf(params.roomAlias, s);
    const row = await s.storage.db.selectFrom("room_aliases").selectAll().where("alias", "=", alias).executeTakeFirst();
    if (!row) throw new MatrixError("M_NOT_FOUND", "Room alias not found");
    if (row.creator !== user.userId && (await powerLevel(s, row.room_id, user.userId)) < 50) throw new MatrixError("M_FORBIDDEN", "You may not remove this alias");
    await s.storage.db.deleteFrom("room_aliases").where("alias", "=", alias).execute();
    return {};
  }),

  route({ method: "GET", url: "/_matrix/client/v3/rooms/:roomId/aliases", params: Type.Object({ roomId: Type.String({ maxLength: 255 }) }) }, async ({ user, params }, s) => {
    if (!isValidRoomId(params.roomId)) throw new MatrixError("M_INVALID_PARAM", "Invalid room id");
    await s.rooms.requireJoined(params.roomId, user.userId);
    const rows = await s.storage.db.selectFrom("room_aliases").select("alias").where("room_id", "=", params.roomId).execute();
    return { aliases: rows.map((r) => r.alias) };
  }),

  route({ method: "GET", url: "/_matrix/client/v3/directory/list/room/:roomId", params: Type.Object({ roomId: Type.String({ maxLength: 255 }) }), auth: "optional" }, async ({ params }, s) => {
    const v = await s.rooms.visibility(params.roomId);
    if (!v) throw new MatrixError("M_NOT_FOUND", "Unknown room");
    return { visibility: v };
  }),

  route(
    { method: "PUT", url: "/_matrix/client/v3/directory/list/room/:roomId", params: Type.Object({ roomId: Type.String({ maxLength: 255 }) }), body: Type.Object({ visibility: Type.Optional(Type.Union([Type.Literal("public"), Type.Literal("private")])) }) },
    async ({ user, params, body }, s) => {
      if (!(await s.rooms.exists(params.roomId))) throw new MatrixError("M_NOT_FOUND", "Unknown room");
      await s.rooms.requireJoined(params.roomId, user.userId);
      if ((await powerLevel(s, params.roomId, user.userId)) < 50) throw new MatrixError("M_FORBIDDEN", "You need moderator rights to change directory visibility");
      const visibility = body.visibility ?? "public";
      if (visibility === "public") for (const guard of s.publishRoomGuards) await guard(user.userId, params.roomId, s);
      await s.rooms.setVisibility(params.roomId, visibility);
      if (visibility === "public") for (const hook of s.roomPublishedHooks) await hook(user.userId, params.roomId, s);
      return {};
    },
  ),

  route(
    // The spec lets anyone read the directory; an organisation's channel names and topics are
    // internal, so Revier asks for a token here as it does for the POST variant.
    { method: "GET", url: "/_matrix/client/v3/publicRooms", query: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 0 })), since: Type.Optional(Type.String()), server: Type.Optional(Type.String()) }) },
    async ({ query }, s) => publicRooms(s, { ...(query.limit !== undefined ? { limit: query.limit } : {}), ...(query.since !== undefined ? { since: query.since } : {}) }),
  ),

  route(
    {
      method: "POST",
      url: "/_matrix/client/v3/publicRooms",
      query: Type.Object({ server: Type.Optional(Type.String()) }),
      body: Type.Object(
        {
          limit: Type.Optional(Type.Integer({ minimum: 0 })),
          since: Type.Optional(Type.String()),
          filter: Type.Optional(Type.Object({ generic_search_term: Type.Optional(Type.String({ maxLength: 1000 })), room_types: Type.Optional(Type.Array(Type.Union([Type.String(), Type.Null()]))) }, { additionalProperties: true })),
          include_all_networks: Type.Optional(Type.Boolean()),
          third_party_instance_id: Type.Optional(Type.String()),
        },
        { additionalProperties: true },
      ),
    },
    async ({ body }, s) =>
      publicRooms(s, {
        ...(body.limit !== undefined ? { limit: body.limit } : {}),
        ...(body.since !== undefined ? { since: body.since } : {}),
        ...(body.filter?.generic_search_term ? { term: body.filter.generic_search_term } : {}),
      }),
  ),
];
