import { Type } from "@sinclair/typebox";
import { MatrixError, isValidRoomId } from "@revier/protocol";
import { route } from "../../http/route.js";

/** `POST /_revier/client/v1/channels/{roomId}/close` — a channel's owner closes it, as an admin could. */
export const clientChannelRoutes = [
  route(
    {
      method: "POST",
      url: "/_revier/client/v1/channels/:roomId/close",
      params: Type.Object({ roomId: Type.String({ maxLength: 255 }) }),
      body: Type.Object({ reason: Type.String({ minLength: 1, maxLength: 1000 }) }, { additionalProperties: false }),
      rateLimit: "send",
    },
    async ({ user, params, body }, s) => {
      if (!isValidRoomId(params.roomId)) throw new MatrixError("M_INVALID_PARAM", "Invalid room id");
      const role = (await s.accounts.get(user.userId))?.role ?? "user";
      return s.channels.close({ actor: user.userId, actorRole: role }, params.roomId, body.reason, { ownerOnly: true });
    },
  ),
];
