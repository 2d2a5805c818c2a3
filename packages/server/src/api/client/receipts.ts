import { Type } from "@sinclair/typebox";
import { MatrixError, isValidEventId, isValidRoomId, isValidUserId } from "@revier/protocol";
import { route } from "../../http/route.js";
import type { Services } from "../../services.js";
import { MAX_TYPING_MS, RECEIPT_TYPES, type ReceiptType } from "../../rooms/ephemeral.js";

const RoomId = Type.String({ maxLength: 255 });
const EventId = Type.String({ maxLength: 255 });

function roomIdOf(raw: string): string {
  if (!isValidRoomId(raw)) throw new MatrixError("M_INVALID_PARAM", `${raw} is not a valid room ID`);
  return raw;
}

function eventIdOf(raw: string, field = "event ID"): string {
  if (!isValidEventId(raw)) throw new MatrixError("M_INVALID_PARAM", `Invalid ${field}`);
  return raw;
}

/** Whether two users share a joined room; only then may one see the other's presence. */
async function shareRoom(s: Services, a: string, b: string): Promise<boolean> {
  const row = await s.storage.db
    .selectFrom("room_members as m1")
    .innerJoin("room_members as m2", "m2.room_id", "m1.room_id")
    .select("m1.room_id")
    .where("m1.user_id", "=", a)
    .where("m1.membership", "=", "join")
    .where("m2.user_id", "=", b)
    .where("m2.membership", "=", "join")
    .limit(1)
    .executeTakeFirst();
  return row !== undefined;
}

const PresenceState = Type.Union([Type.Literal("online"), Type.Literal("offline"), Type.Literal("unavailable")]);

export const receiptRoutes = [
  route(
    {
      method: "POST",
      url: "/_matrix/client/v3/rooms/:roomId/receipt/:receiptType/:eventId",
      params: Type.Object({ roomId: RoomId, receiptType: Type.String({ maxLength: 255 }), eventId: EventId }),
      // The spec requires a body, but older clients post none; an absent body means "unthreaded".
      body: Type.Optional(Type.Object({ thread_id: Type.Optional(Type.String({ maxLength: 255 })) }, { additionalProperties: true })),
    },
    async ({ user, params, body }, s) => {
      const roomId = roomIdOf(params.roomId);
      if (!(RECEIPT_TYPES as readonly string[]).includes(params.receiptType)) {
        throw new MatrixError("M_INVALID_PARAM", `Receipt type must be one of ${RECEIPT_TYPES.join(", ")}`);
      }
      const receiptType = params.receiptType as ReceiptType;
      const eventId = eventIdOf(params.eventId);
      const threadId = body?.thread_id;
      if (threadId !== undefined) {
        if (threadId === "") throw new MatrixError("M_INVALID_PARAM", "thread_id must be a non-empty string");
        if (receiptType === "m.fully_read") throw new MatrixError("M_INVALID_PARAM", "thread_id is not allowed for m.fully_read");
      }
      await s.rooms.requireJoined(roomId, user.userId);
      await s.ephemeral.setReceipt(user.userId, roomId, receiptType, eventId, threadId);
      return {};
    },
  ),

  route(
    {
      method: "POST",
      url: "/_matrix/client/v3/rooms/:roomId/read_markers",
      params: Type.Object({ roomId: RoomId }),
      body: Type.Object(
        {
          "m.fully_read": Type.Optional(EventId),
          "m.read": Type.Optional(EventId),
          "m.read.private": Type.Optional(EventId),
        },
        { additionalProperties: true },
      ),
    },
    async ({ user, params, body }, s) => {
      const roomId = roomIdOf(params.roomId);
      const updates: Array<[ReceiptType, string]> = [];
      for (const type of RECEIPT_TYPES) {
        const id = body[type];
        if (id !== undefined) updates.push([type, eventIdOf(id, `${type} event ID`)]);
      }
      await s.rooms.requireJoined(roomId, user.userId);
      for (const [type, eventId] of updates) await s.ephemeral.setReceipt(user.userId, roomId, type, eventId);
      return {};
    },
  ),

  route(
    {
      method: "PUT",
      url: "/_matrix/client/v3/rooms/:roomId/typing/:userId",
      params: Type.Object({ roomId: RoomId, userId: Type.String({ maxLength: 255 }) }),
      body: Type.Object({ typing: Type.Boolean(), timeout: Type.Optional(Type.Integer({ minimum: 0 })) }, { additionalProperties: true }),
    },
    async ({ user, params, body }, s) => {
      if (params.userId !== user.userId) throw new MatrixError("M_FORBIDDEN", "Cannot set typing state for other users");
      const roomId = roomIdOf(params.roomId);
      await s.rooms.requireJoined(roomId, user.userId);
      // A client that says "typing" without a timeout gets the longest we allow; it is capped anyway.
      await s.ephemeral.setTyping(roomId, user.userId, body.typing, body.timeout ?? MAX_TYPING_MS);
      return {};
    },
  ),

  route({ method: "GET", url: "/_matrix/client/v3/presence/:userId/status", params: Type.Object({ userId: Type.String({ maxLength: 255 }) }) }, async ({ user, params }, s) => {
    if (!isValidUserId(params.userId)) throw new MatrixError("M_INVALID_PARAM", "Invalid user ID");
    if (params.userId !== user.userId && !(await shareRoom(s, user.userId, params.userId))) {
      throw new MatrixError("M_FORBIDDEN", "You are not allowed to see their presence");
    }
    const presence = await s.ephemeral.getPresence(params.userId);
    // A user who never reported presence is simply offline.
    return presence ?? { presence: "offline" };
  }),

  route(
    {
      method: "PUT",
      url: "/_matrix/client/v3/presence/:userId/status",
      params: Type.Object({ userId: Type.String({ maxLength: 255 }) }),
      body: Type.Object({ presence: PresenceState, status_msg: Type.Optional(Type.Union([Type.String({ maxLength: 1024 }), Type.Null()])) }, { additionalProperties: true }),
    },
    async ({ user, params, body }, s) => {
      if (params.userId !== user.userId) throw new MatrixError("M_FORBIDDEN", "Cannot set presence for other users");
      // Setting presence replaces the whole status: a message left out is cleared.
      await s.ephemeral.setPresence(user.userId, body.presence, body.status_msg ?? null);
      return {};
    },
  ),
];
