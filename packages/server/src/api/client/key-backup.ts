import { Type } from "@sinclair/typebox";
import { MatrixError, isValidRoomId } from "@revier/protocol";
import { route } from "../../http/route.js";

const AuthData = Type.Record(Type.String(), Type.Unknown());
const Algorithm = Type.String({ minLength: 1, maxLength: 255 });
const VersionParams = Type.Object({ version: Type.String({ maxLength: 64 }) });
const VersionQuery = Type.Object({ version: Type.String({ maxLength: 64 }) });
const RoomParams = Type.Object({ roomId: Type.String({ maxLength: 255 }) });
const SessionParams = Type.Object({ roomId: Type.String({ maxLength: 255 }), sessionId: Type.String({ minLength: 1, maxLength: 255 }) });

const KeyBackupData = Type.Object(
  {
    first_message_index: Type.Integer({ minimum: 0 }),
    forwarded_count: Type.Integer({ minimum: 0 }),
    is_verified: Type.Boolean(),
    session_data: Type.Record(Type.String(), Type.Unknown()),
  },
  { additionalProperties: true },
);
const RoomKeyBackup = Type.Object({ sessions: Type.Record(Type.String(), KeyBackupData) }, { additionalProperties: true });
const AllKeys = Type.Object({ rooms: Type.Record(Type.String(), RoomKeyBackup) }, { additionalProperties: true });

function roomIdOf(raw: string): string {
  if (!isValidRoomId(raw)) throw new MatrixError("M_INVALID_PARAM", `${raw} is not a valid room ID`);
  return raw;
}

export const keyBackupRoutes = [
  /** POST /room_keys/version — a new backup version, which becomes the current one. */
  route({ method: "POST", url: "/_matrix/client/v3/room_keys/version", body: Type.Object({ algorithm: Algorithm, auth_data: AuthData }, { additionalProperties: true }) }, async ({ user, body }, s) => ({
    version: await s.e2ee.keyBackup.create(user.userId, body.algorithm, body.auth_data),
  })),

  route({ method: "GET", url: "/_matrix/client/v3/room_keys/version" }, async ({ user }, s) => {
    const info = await s.e2ee.keyBackup.info(user.userId);
    if (!info) throw new MatrixError("M_NOT_FOUND", "No current backup version");
    return info;
  }),

  route({ method: "GET", url: "/_matrix/client/v3/room_keys/version/:version", params: VersionParams }, async ({ user, params }, s) => {
    const info = await s.e2ee.keyBackup.info(user.userId, params.version);
    if (!info) throw new MatrixError("M_NOT_FOUND", "Unknown backup version");
    return info;
  }),

  route(
    { method: "PUT", url: "/_matrix/client/v3/room_keys/version/:version", params: VersionParams, body: Type.Object({ algorithm: Algorithm, auth_data: AuthData, version: Type.Optional(Type.String()) }, { additionalProperties: true }) },
    async ({ user, params, body }, s) => {
      await s.e2ee.keyBackup.update(user.userId, params.version, body);
      return {};
    },
  ),

  route({ method: "DELETE", url: "/_matrix/client/v3/room_keys/version/:version", params: VersionParams }, async ({ user, params }, s) => {
    await s.e2ee.keyBackup.deleteVersion(user.userId, params.version);
    return {};
  }),

  route({ method: "PUT", url: "/_matrix/client/v3/room_keys/keys", query: VersionQuery, body: AllKeys }, async ({ user, query, body }, s) => s.e2ee.keyBackup.put(user.userId, query.version, body.rooms)),

  route({ method: "PUT", url: "/_matrix/client/v3/room_keys/keys/:roomId", query: VersionQuery, params: RoomParams, body: RoomKeyBackup }, async ({ user, query, params, body }, s) =>
    s.e2ee.keyBackup.put(user.userId, query.version, { [roomIdOf(params.roomId)]: { sessions: body.sessions } }),
  ),

  route({ method: "PUT", url: "/_matrix/client/v3/room_keys/keys/:roomId/:sessionId", query: VersionQuery, params: SessionParams, body: KeyBackupData }, async ({ user, query, params, body }, s) =>
    s.e2ee.keyBackup.put(user.userId, query.version, { [roomIdOf(params.roomId)]: { sessions: { [params.sessionId]: body } } }),
  ),

  route({ method: "GET", url: "/_matrix/client/v3/room_keys/keys", query: VersionQuery }, async ({ user, query }, s) => ({ rooms: await s.e2ee.keyBackup.get(user.userId, query.version) })),

  route({ method: "GET", url: "/_matrix/client/v3/room_keys/keys/:roomId", query: VersionQuery, params: RoomParams }, async ({ user, query, params }, s) => {
    const roomId = roomIdOf(params.roomId);
    const rooms = await s.e2ee.keyBackup.get(user.userId, query.version, roomId);
    return { sessions: rooms[roomId]?.sessions ?? {} };
  }),

  route({ method: "GET", url: "/_matrix/client/v3/room_keys/keys/:roomId/:sessionId", query: VersionQuery, params: SessionParams }, async ({ user, query, params }, s) => {
    const roomId = roomIdOf(params.roomId);
    const rooms = await s.e2ee.keyBackup.get(user.userId, query.version, roomId, params.sessionId);
    const data = rooms[roomId]?.sessions[params.sessionId];
    if (!data) throw new MatrixError("M_NOT_FOUND", "Key not found");
    return data;
  }),

  route({ method: "DELETE", url: "/_matrix/client/v3/room_keys/keys", query: VersionQuery }, async ({ user, query }, s) => s.e2ee.keyBackup.delete(user.userId, query.version)),

  route({ method: "DELETE", url: "/_matrix/client/v3/room_keys/keys/:roomId", query: VersionQuery, params: RoomParams }, async ({ user, query, params }, s) =>
    s.e2ee.keyBackup.delete(user.userId, query.version, roomIdOf(params.roomId)),
  ),

  route({ method: "DELETE", url: "/_matrix/client/v3/room_keys/keys/:roomId/:sessionId", query: VersionQuery, params: SessionParams }, async ({ user, query, params }, s) =>
    s.e2ee.keyBackup.delete(user.userId, query.version, roomIdOf(params.roomId), params.sessionId),
  ),
];
