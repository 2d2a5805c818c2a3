import { Type } from "@sinclair/typebox";
import { MatrixError, isValidUserId } from "@revier/protocol";
import { route } from "../../http/route.js";
import type { Services } from "../../services.js";
import { containsIgnoringCase } from "../../storage/sql-helpers.js";

const UserParams = Type.Object({ userId: Type.String({ maxLength: 255 }) });
const FIELDS = ["displayname", "avatar_url"] as const;
type Field = (typeof FIELDS)[number];

async function profileOf(s: Services, userId: string): Promise<{ displayname?: string; avatar_url?: string }> {
  if (!isValidUserId(userId)) throw new MatrixError("M_INVALID_PARAM", "Invalid user id");
  const u = await s.accounts.get(userId);
  if (!u || u.deactivated) throw new MatrixError("M_NOT_FOUND", "Profile not found");
  return { ...(u.displayname !== null ? { displayname: u.displayname } : {}), ...(u.avatar_url !== null ? { avatar_url: u.avatar_url } : {}) };
}

/** A profile change is mirrored into every joined room's member event, as clients show names from there. */
async function setField(s: Services, userId: string, field: Field, value: string | null): Promise<void> {
  await s.accounts.setProfile(userId, { [field]: value });
  for (const roomId of await s.rooms.joinedRooms(userId)) {
    const current = await s.rooms.stateContent(roomId, "m.room.member", userId);
    if (!current) continue;
    const content: Record<string, unknown> = { ...current, membership: "join" };
    if (value === null) delete content[field];
    else content[field] = value;
    try {
      await s.rooms.send({ roomId, sender: userId, type: "m.room.member", stateKey: userId, content });
    } catch (err) {
      s.log.warn({ room: roomId, err: (err as Error).message }, "could not update member event with new profile");
    }
  }
}

export const profileRoutes = [
  route({ method: "GET", url: "/_matrix/client/v3/profile/:userId", params: UserParams }, async ({ params }, s) => profileOf(s, params.userId)),

  route({ method: "GET", url: "/_matrix/client/v3/profile/:userId/:field", params: Type.Object({ userId: Type.String({ maxLength: 255 }), field: Type.String() }) }, async ({ params }, s) => {
    const profile = await profileOf(s, params.userId);
    if (!(FIELDS as readonly string[]).includes(params.field)) throw new MatrixError("M_NOT_FOUND", "Profile field not found");
    const value = profile[params.field as Field];
    if (value === undefined) throw new MatrixError("M_NOT_FOUND", "Profile field not set");
    return { [params.field]: value };
  }),

  route(
    { method: "PUT", url: "/_matrix/client/v3/profile/:userId/:field", params: Type.Object({ userId: Type.String({ maxLength: 255 }), field: Type.String() }), body: Type.Record(Type.String(), Type.Unknown()) },
    async ({ user, params, body }, s) => {
      if (params.userId !== user.userId) throw new MatrixError("M_FORBIDDEN", "Cannot change another user's profile");
      if (!(FIELDS as readonly string[]).includes(params.field)) throw new MatrixError("M_INVALID_PARAM", `Unsupported profile field ${params.field}`);
      const field = params.field as Field;
      const value = body[field];
      if (value !== null && (typeof value !== "string" || value.length > 256)) throw new MatrixError("M_BAD_JSON", `${field} must be a string of at most 256 characters`);
      if (field === "avatar_url" && typeof value === "string" && value !== "" && !value.startsWith("mxc://")) throw new MatrixError("M_INVALID_PARAM", "avatar_url must be an mxc:// URI");
      await setField(s, user.userId, field, value === "" ? null : (value as string | null));
      return {};
    },
  ),

  route({ method: "DELETE", url: "/_matrix/client/v3/profile/:userId/:field", params: Type.Object({ userId: Type.String({ maxLength: 255 }), field: Type.String() }) }, async ({ user, params }, s) => {
    if (params.userId !== user.userId) throw new MatrixError("M_FORBIDDEN", "Cannot change another user's profile");
    if (!(FIELDS as readonly string[]).includes(params.field)) throw new MatrixError("M_INVALID_PARAM", `Unsupported profile field ${params.field}`);
    await setField(s, user.userId, params.field as Field, null);
    return {};
  }),

  route(
    { method: "POST", url: "/_matrix/client/v3/user_directory/search", body: Type.Object({ search_term: Type.String({ maxLength: 255 }), limit: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000 })) }) },
    async ({ body }, s) => {
      const limit = body.limit ?? 10;
      const term = body.search_term.trim();
      // Everyone in the organisation can find everyone: officers need to reach colleagues they
      // share no room with yet. Deactivated accounts are not listed.
      const rows = await s.storage.db
        .selectFrom("users")
        .select(["user_id", "displayname", "avatar_url"])
        .where("deactivated", "=", 0)
        .where((eb) => eb.or([containsIgnoringCase("user_id", term), containsIgnoringCase("displayname", term)]))
        .orderBy("user_id")
        .limit(limit + 1)
        .execute();
      return {
        limited: rows.length > limit,
        results: rows.slice(0, limit).map((r) => ({ user_id: r.user_id, ...(r.displayname ? { display_name: r.displayname } : {}), ...(r.avatar_url ? { avatar_url: r.avatar_url } : {}) })),
      };
    },
  ),
];
