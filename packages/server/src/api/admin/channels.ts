import { MatrixError, ChannelListResponse, ChannelParams, CloseChannelBody, CloseChannelResponse, ListChannelsQuery, isValidRoomId } from "@revier/protocol";
import { adminRoute } from "./admin-route.js";

function roomIdOf(raw: string): string {
  if (!isValidRoomId(raw)) throw new MatrixError("M_INVALID_PARAM", "Invalid room id");
  return raw;
}

export const adminChannelRoutes = [
  adminRoute(
    { method: "GET", url: "/channels", query: ListChannelsQuery, action: "channels.read" },
    { summary: "Open channels (public rooms) with name, owner, member count, creation and last activity; never content, never private rooms", response: ChannelListResponse },
    async ({ query }, s) => s.channels.list({ ...(query.from !== undefined ? { from: query.from } : {}), limit: query.limit ?? 100 }),
  ),

  adminRoute(
    { method: "POST", url: "/channels/:roomId/close", params: ChannelParams, body: CloseChannelBody, action: "channels.close" },
    { summary: "Close a channel: a notice gives the reason, every member is removed, it leaves the directory and can never be joined again", response: CloseChannelResponse },
    async ({ params, body, actor }, s) => s.channels.close(actor, roomIdOf(params.roomId), body.reason),
  ),
];
