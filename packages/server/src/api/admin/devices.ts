import { Type } from "@sinclair/typebox";
import { DeviceListResponse, DeviceParams, EmptyResponse, EnrollmentCodeResponse, MatrixError, UserParams, WipeQuery } from "@revier/protocol";
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
    // The same people who may block a device may lift the block (a lost phone was found).
    { method: "POST", url: "/users/:userId/devices/:deviceId/unblock", params: DeviceParams, action: "devices.wipe" },
    { summary: "Lift a lost-device block: the device id may log in again (404 when it is not blocked)", response: EmptyResponse },
    async ({ params, actor }, s) => {
      await s.governance.unblockDevice(actor, params.userId, params.deviceId);
      return {};
    },
  ),

  adminRoute(
    { method: "POST", url: "/users/:userId/enrollment_codes", params: UserParams, action: "enrollment.issue" },
    { summary: "Issue a one-time enrollment code (15 minutes) for a new device of the user", response: EnrollmentCodeResponse },
    async ({ params, actor }, s) => s.governance.issueEnrollmentCode(actor, params.userId),
  ),
];

const MAX_OPEN_DEVICE_CODES = 3;

/** A user's existing device vouches for a new one: the code it gets lets one more device enroll. */
export const clientEnrollmentRoutes = [
  route({ method: "POST", url: "/_revier/client/v1/enrollment_codes", body: Type.Optional(Type.Object({}, { additionalProperties: true })) }, async ({ user }, s) => {
    const role = (await s.accounts.get(user.userId))?.role ?? "user";
    // A stolen, unlocked phone must not be able to mint codes without end: a few open ones suffice.
    const open = await s.storage.db
      .selectFrom("enrollment_codes")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .where("user_id", "=", user.userId)
      .where("issued_by", "=", user.userId)
      .where("used_ts", "is", null)
      .where("expires_ts", ">", Date.now())
      .executeTakeFirst();
    if (Number(open?.n ?? 0) >= MAX_OPEN_DEVICE_CODES) {
      throw new MatrixError("M_LIMIT_EXCEEDED", `You already have ${MAX_OPEN_DEVICE_CODES} unused enrollment codes; use one or let them expire first`);
    }
    return s.governance.issueEnrollmentCode({ actor: user.userId, actorRole: role }, user.userId, { device_id: user.deviceId });
  }),
];
