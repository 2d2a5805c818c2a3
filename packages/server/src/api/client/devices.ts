import { Type } from "@sinclair/typebox";
import { MatrixError } from "@revier/protocol";
import { route } from "../../http/route.js";

const DeviceParams = Type.Object({ deviceId: Type.String({ minLength: 1, maxLength: 255 }) });

export const deviceRoutes = [
  route({ method: "GET", url: "/_matrix/client/v3/devices" }, async ({ user }, s) => ({ devices: await s.devices.list(user.userId) })),

  route({ method: "GET", url: "/_matrix/client/v3/devices/:deviceId", params: DeviceParams }, async ({ user, params }, s) => {
    const device = await s.devices.get(user.userId, params.deviceId);
    if (!device) throw new MatrixError("M_NOT_FOUND", "Device not found");
    return device;
  }),

  route(
    { method: "PUT", url: "/_matrix/client/v3/devices/:deviceId", params: DeviceParams, body: Type.Object({ display_name: Type.Optional(Type.String({ maxLength: 255 })) }, { additionalProperties: true }) },
    async ({ user, params, body }, s) => {
      if (!(await s.devices.get(user.userId, params.deviceId))) throw new MatrixError("M_NOT_FOUND", "Device not found");
      if (body.display_name !== undefined) await s.devices.rename(user.userId, params.deviceId, body.display_name);
      return {};
    },
  ),

  route({ method: "DELETE", url: "/_matrix/client/v3/devices/:deviceId", params: DeviceParams, body: Type.Optional(Type.Object({ auth: Type.Optional(Type.Unknown()) }, { additionalProperties: true })) }, async ({ user, params, body }, s) => {
    if (!(await s.devices.get(user.userId, params.deviceId))) throw new MatrixError("M_NOT_FOUND", "Device not found");
    await s.uia.require({ method: "DELETE", path: `/devices/${params.deviceId}`, body: body as Record<string, unknown> | undefined, userId: user.userId });
    await s.devices.remove(user.userId, params.deviceId);
    return {};
  }),

  route(
    { method: "POST", url: "/_matrix/client/v3/delete_devices", body: Type.Object({ devices: Type.Array(Type.String({ maxLength: 255 }), { maxItems: 1000 }), auth: Type.Optional(Type.Unknown()) }, { additionalProperties: true }) },
    async ({ user, body }, s) => {
      await s.uia.require({ method: "POST", path: "/delete_devices", body: body as Record<string, unknown>, userId: user.userId });
      for (const d of body.devices) if (await s.devices.get(user.userId, d)) await s.devices.remove(user.userId, d);
      return {};
    },
  ),
];
