import { Type } from "@sinclair/typebox";
import { MatrixError } from "@revier/protocol";
import { route } from "../../http/route.js";
import type { Services } from "../../services.js";
import { verifyPassword } from "../../users/passwords.js";
import { deviceLimitReached } from "../../governance/hooks.js";

const Identifier = Type.Object({ type: Type.String() }, { additionalProperties: true });

const LoginBody = Type.Object(
  {
    type: Type.String(),
    identifier: Type.Optional(Identifier),
    user: Type.Optional(Type.String()),
    password: Type.Optional(Type.String()),
    token: Type.Optional(Type.String()),
    device_id: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    initial_device_display_name: Type.Optional(Type.String({ maxLength: 255 })),
    refresh_token: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: true },
);

/**
 * Hooks that may refuse a login after the password checked out (device limit, enrollment, client
 * version). A guard that spends something (an enrollment code) returns how to give it back, for
 * when the login is refused after it passed.
 */
export type LoginGuard = (ctx: { userId: string; deviceId: string; isNewDevice: boolean; body: Record<string, unknown>; userAgent: string | undefined; headers: Record<string, unknown> }, s: Services) => Promise<void | LoginUndo>;
export type LoginUndo = () => Promise<void>;

/** Adds fields to the `m.login.password` flow of `GET /login` (governance: the enrollment stage while codes are required). */
export type LoginFlowExtension = (s: Services) => Promise<Record<string, unknown> | undefined>;

const INVALID = () => new MatrixError("M_FORBIDDEN", "Invalid username or password");

export const sessionRoutes = [
  route({ method: "GET", url: "/_matrix/client/v3/login", auth: "none" }, async (_ctx, s) => {
    let flow: Record<string, unknown> = { type: "m.login.password" };
    for (const extend of s.loginFlowExtensions) flow = { ...flow, ...(await extend(s)) };
    return { flows: [flow] };
  }),

  route({ method: "POST", url: "/_matrix/client/v3/login", auth: "none", body: LoginBody, rateLimit: "login" }, async ({ body, req }, s) => {
    if (body.type !== "m.login.password") throw new MatrixError("M_UNKNOWN", `Login type ${body.type} is not supported`);
    let claimed: string | undefined;
    if (body.identifier) {
      if (body.identifier.type !== "m.id.user") throw new MatrixError("M_UNKNOWN", "Only m.id.user identifiers are supported");
      const u = (body.identifier as Record<string, unknown>).user;
      if (typeof u !== "string") throw new MatrixError("M_BAD_JSON", "identifier.user must be a string");
      claimed = u;
    } else if (body.user !== undefined) {
      claimed = body.user;
    }
    if (claimed === undefined) throw new MatrixError("M_MISSING_PARAM", "Missing identifier");
    if (typeof body.password !== "string") throw new MatrixError("M_MISSING_PARAM", "Missing password");
    const userId = s.accounts.resolveUserId(claimed);
    const user = userId ? await s.accounts.get(userId) : undefined;
    // The same work and the same answer whether or not the account exists.
    const ok = await verifyPassword(user && !user.deactivated ? user.password_hash : null, body.password);
    if (!ok || !user) throw INVALID();
    if (user.locked) throw new MatrixError("M_USER_LOCKED", "This account has been locked by an administrator", { extra: { soft_logout: false } });
    const deviceId = body.device_id ?? s.devices.newDeviceId();
    // Guards (device limit, enrollment) and the device they admit run as one step per user: two
    // logins at once must not both pass the limit and then both add a device. That holds within
    // this process; the device is added under the limit once more, atomically, for logins
    // through other processes at the same moment.
    await s.loginLock.run(user.user_id, async () => {
      const existing = await s.devices.get(user.user_id, deviceId);
      const undo: LoginUndo[] = [];
      try {
        for (const guard of s.loginGuards) {
          const spent = await guard({ userId: user.user_id, deviceId, isNewDevice: !existing, body: body as Record<string, unknown>, userAgent: req.headers["user-agent"], headers: req.headers }, s);
          if (spent) undo.push(spent);
        }
        const { max_devices: max } = await s.policy.get();
        const added = await s.devices.upsert(user.user_id, deviceId, body.initial_device_display_name ?? null, { ip: req.ip, ...(req.headers["user-agent"] ? { userAgent: req.headers["user-agent"] } : {}) }, { atMost: max });
        if (added.refused !== undefined) throw deviceLimitReached(added.refused, max);
      } catch (err) {
        // Refused after a guard spent something: a login through another process took the last
        // device place in between. The user did nothing wrong and keeps their enrollment code.
        for (const u of undo) {
          await u().catch((e: Error) => s.log.error({ err: e.message, user_id: user.user_id }, "could not give back what a refused login spent"));
        }
        throw err;
      }
    });
    const tokens = await s.tokens.issue(user.user_id, deviceId, body.refresh_token === true);
    return {
      user_id: user.user_id,
      device_id: deviceId,
      home_server: s.config.serverName,
      well_known: { "m.homeserver": { base_url: s.config.publicBaseUrl } },
      ...tokens,
    };
  }),

  route({ method: "POST", url: "/_matrix/client/v3/refresh", auth: "none", body: Type.Object({ refresh_token: Type.String({ minLength: 1 }) }), rateLimit: "login" }, async ({ body }, s) => {
    return s.tokens.refresh(body.refresh_token);
  }),

  route({ method: "POST", url: "/_matrix/client/v3/logout", allowWithoutConsent: true, rateLimit: "none" }, async ({ user }, s) => {
    await s.devices.remove(user.userId, user.deviceId);
    return {};
  }),

  route({ method: "POST", url: "/_matrix/client/v3/logout/all", allowWithoutConsent: true, rateLimit: "none" }, async ({ user }, s) => {
    await s.devices.removeAll(user.userId);
    return {};
  }),

  route({ method: "GET", url: "/_matrix/client/v3/account/whoami" }, async ({ user }) => ({
    user_id: user.userId,
    device_id: user.deviceId,
    is_guest: false,
  })),
];
