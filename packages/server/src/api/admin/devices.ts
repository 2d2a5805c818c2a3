import { Type } from "@sinclair/typebox";
import { DeviceListResponse, DeviceParams, EmptyResponse, EnrollmentCodeResponse, UserParams, WipeQuery } from "@revier/protocol";
import { adminRoute } from "./admin-route.js";
import { route } from "../../http/route.js";

export const adminDeviceRoutes = [
  adminRoute({ method: "GET", url: "/users/:userId/devices", params: UserParams, action: "devices.read" }, { summary: "A user's devices and blocked device ids", response: DeviceListResponse }, async ({ params }, s) => {
    const user = await s.governance.requireUser(params.userId);
    return { devices: await s.devices.list(user.user_id), blocked: await s.governance.blockedDevices(user.user_id) };
  }),

  adminRoute(
    { method: "DELETE", url: "/users/:userId/devices/:deviceId", params: DeviceParams, query: WipeQuery, action: "devices.wipe" },
    { summary: "Remote wipe: revoke the device's tokens and delete its keys; with block=true the device id can never log in again", response: EmptyResponse },
    async ({ params, query, actor }, s) => {
      await s.governance.wipeDevice(actor, params.userId, params.deviceId, query.block === true);
      return {};
    },
  ),

  adminRoute(
    { method: "POST", url: "/users/:userId/enrollment_codes", params: UserParams, action: "enrollment.issue" },
    { summary: "Issue a one-time enrollment code (15 minutes) for a new device of the user", response: EnrollmentCodeResponse },
    async ({ params, actor }, s) => s.governance.issueEnrollmentCode(actor, params.userId),
  ),
];

/** A user's existing device vouches for a new one: the code it gets lets one more device enroll. */
export const clientEnrollmentRoutes = [
  route({ method: "POST", url: "/_revier/client/v1/enrollment_codes", body: Type.Optional(Type.Object({}, { additionalProperties: true })) }, async ({ user }, s) => {
    const role = (await s.accounts.get(user.userId))?.role ?? "user";
    return s.governance.issueEnrollmentCode({ actor: user.userId, actorRole: role }, user.userId);
  }),
];
