import { Type } from "@sinclair/typebox";
import { ERRORS, MatrixError, isValidRoomId, type ErrorCode } from "@revier/protocol";
import { route } from "../../http/route.js";
import { FilterError, parseFilter } from "../../sync/filter.js";

const UserId = Type.String({ maxLength: 255 });
const RoomId = Type.String({ maxLength: 255 });
const DataType = Type.String({ minLength: 1, maxLength: 255 });
const Content = Type.Record(Type.String(), Type.Unknown());

const GlobalParams = Type.Object({ userId: UserId, type: DataType });
const RoomParams = Type.Object({ userId: UserId, roomId: RoomId, type: DataType });
const TagsParams = Type.Object({ userId: UserId, roomId: RoomId });
const TagParams = Type.Object({ userId: UserId, roomId: RoomId, tag: Type.String({ minLength: 1, maxLength: 255 }) });
const TagBody = Type.Object({ order: Type.Optional(Type.Number()) }, { additionalProperties: true });

/** Types the server maintains itself; the spec has clients change them through their own APIs. */
const SERVER_MANAGED: Record<string, string> = {
  "m.fully_read": "Cannot set m.fully_read through this API; use /read_markers",
  "m.push_rules": "Cannot set m.push_rules through this API; use /pushrules",
};

function requireSelf(callerId: string, pathUserId: string, what: string): void {
  if (pathUserId !== callerId) throw new MatrixError("M_FORBIDDEN", `Cannot ${what} for other users`);
}

function roomIdOf(raw: string): string {
  if (!isValidRoomId(raw)) throw new MatrixError("M_INVALID_PARAM", `${raw} is not a valid room ID`);
  return raw;
}

function refuseServerManaged(type: string): void {
  const reason = SERVER_MANAGED[type];
  if (reason !== undefined) throw new MatrixError("M_BAD_JSON", reason, { status: 405 });
}

function tagsOf(content: Record<string, unknown> | undefined): Record<string, unknown> {
  const tags = content?.tags;
  return tags !== null && typeof tags === "object" && !Array.isArray(tags) ? { ...(tags as Record<string, unknown>) } : {};
}

function filterErrcode(code: string): ErrorCode {
  return code in ERRORS ? (code as ErrorCode) : "M_BAD_JSON";
}

export const accountDataRoutes = [
  route({ method: "GET", url: "/_matrix/client/v3/user/:userId/account_data/:type", params: GlobalParams }, async ({ user, params }, s) => {
    requireSelf(user.userId, params.userId, "get account data");
    const content = await s.accountData.get(user.userId, null, params.type);
    if (content === undefined) throw new MatrixError("M_NOT_FOUND", "Account data not found");
    return content;
  }),

  route({ method: "PUT", url: "/_matrix/client/v3/user/:userId/account_data/:type", params: GlobalParams, body: Content }, async ({ user, params, body }, s) => {
    requireSelf(user.userId, params.userId, "add account data");
    refuseServerManaged(params.type);
    await s.accountData.set(user.userId, null, params.type, body);
    return {};
  }),

  route({ method: "GET", url: "/_matrix/client/v3/user/:userId/rooms/:roomId/account_data/:type", params: RoomParams }, async ({ user, params }, s) => {
    requireSelf(user.userId, params.userId, "get account data");
    const content = await s.accountData.get(user.userId, roomIdOf(params.roomId), params.type);
    if (content === undefined) throw new MatrixError("M_NOT_FOUND", "Room account data not found");
    return content;
  }),

  route({ method: "PUT", url: "/_matrix/client/v3/user/:userId/rooms/:roomId/account_data/:type", params: RoomParams, body: Content }, async ({ user, params, body }, s) => {
    requireSelf(user.userId, params.userId, "add account data");
    const roomId = roomIdOf(params.roomId);
    refuseServerManaged(params.type);
    await s.accountData.set(user.userId, roomId, params.type, body);
    return {};
  }),

  route({ method: "GET", url: "/_matrix/client/v3/user/:userId/rooms/:roomId/tags", params: TagsParams }, async ({ user, params }, s) => {
    requireSelf(user.userId, params.userId, "get tags");
    return { tags: tagsOf(await s.accountData.get(user.userId, roomIdOf(params.roomId), "m.tag")) };
  }),

  route({ method: "PUT", url: "/_matrix/client/v3/user/:userId/rooms/:roomId/tags/:tag", params: TagParams, body: TagBody }, async ({ user, params, body }, s) => {
    requireSelf(user.userId, params.userId, "add tags");
    const roomId = roomIdOf(params.roomId);
    await s.accountData.update(user.userId, roomId, "m.tag", (current) => ({ ...current, tags: { ...tagsOf(current), [params.tag]: body } }));
    return {};
  }),

  route({ method: "DELETE", url: "/_matrix/client/v3/user/:userId/rooms/:roomId/tags/:tag", params: TagParams }, async ({ user, params }, s) => {
    requireSelf(user.userId, params.userId, "remove tags");
    const roomId = roomIdOf(params.roomId);
    await s.accountData.update(user.userId, roomId, "m.tag", (current) => {
      const tags = tagsOf(current);
      // Removing a tag that is not there is not an error, and not a change clients need to see.
      if (!(params.tag in tags)) return undefined;
      delete tags[params.tag];
      return { ...current, tags };
    });
    return {};
  }),

  route({ method: "POST", url: "/_matrix/client/v3/user/:userId/filter", params: Type.Object({ userId: UserId }), body: Content }, async ({ user, params, body }, s) => {
    requireSelf(user.userId, params.userId, "create filters");
    try {
      parseFilter(body);
    } catch (err) {
      if (err instanceof FilterError) throw new MatrixError(filterErrcode(err.errcode), err.message);
      throw err;
    }
    return { filter_id: await s.accountData.saveFilter(user.userId, body) };
  }),

  route(
    { method: "GET", url: "/_matrix/client/v3/user/:userId/filter/:filterId", params: Type.Object({ userId: UserId, filterId: Type.String({ maxLength: 255 }) }) },
    async ({ user, params }, s) => {
      requireSelf(user.userId, params.userId, "get filters");
      const filter = await s.accountData.getFilter(user.userId, params.filterId);
      if (filter === undefined) throw new MatrixError("M_NOT_FOUND", "Unknown filter");
      return filter;
    },
  ),
];
