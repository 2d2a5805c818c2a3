import { Type } from "@sinclair/typebox";
import { MatrixError, isValidLocalpart } from "@revier/protocol";
import { route } from "../../http/route.js";
import type { Services } from "../../services.js";
import { sha256Hex } from "../../lib/random.js";

const Auth = Type.Optional(Type.Unknown());

/**
 * Leaves every room, kills every token and device, and deletes what only served the account's own
 * use (pushers, account data, push rules, filters, presence, cross-signing keys, key backup).
 * With `erase` the profile and every uploaded file go too. The account row stays so the id is
 * never reused; messages already delivered stay with the rooms' other members.
 */
export async function deactivateAccount(s: Services, userId: string, opts: { erase?: boolean } = {}): Promise<void> {
  await s.accounts.markDeactivated(userId);
  await s.tokens.revokeAll(userId);
  await s.devices.removeAll(userId);
  const db = s.storage.db;
  await db.transaction().execute(async (tx) => {
    await tx.deleteFrom("pushers").where("user_id", "=", userId).execute();
    await tx.deleteFrom("account_data").where("user_id", "=", userId).execute();
    await tx.deleteFrom("push_rules").where("user_id", "=", userId).execute();
    await tx.deleteFrom("filters").where("user_id", "=", userId).execute();
    await tx.deleteFrom("presence").where("user_id", "=", userId).execute();
    await tx.deleteFrom("e2e_cross_signing_keys").where("user_id", "=", userId).execute();
    await tx.deleteFrom("e2e_signatures").where((eb) => eb.or([eb("target_user_id", "=", userId), eb("signer_user_id", "=", userId)])).execute();
    await tx.deleteFrom("e2e_room_keys").where("user_id", "=", userId).execute();
    await tx.deleteFrom("e2e_room_keys_versions").where("user_id", "=", userId).execute();
    await tx.deleteFrom("duty_settings").where("user_id", "=", userId).execute();
    await tx.deleteFrom("enrollment_codes").where("user_id", "=", userId).execute();
    // Terms acceptances stay: they are the organisation's record of what the user agreed to.
  });
  // The cross-signing keys are gone: everyone sharing a room must re-query them.
  await s.devices.markChanged(userId);
  if (opts.erase) {
    await s.accounts.setProfile(userId, { displayname: null, avatar_url: null });
    await s.media.deleteAll(userId);
  }
  const rows = await s.storage.db.selectFrom("room_members").select(["room_id", "membership"]).where("user_id", "=", userId).where("membership", "in", ["join", "invite", "knock"]).execute();
  for (const r of rows) {
    try {
      await s.rooms.setMembership(r.room_id, userId, userId, "leave");
    } catch (err) {
      s.log.warn({ room: r.room_id, err: (err as Error).message }, "could not leave room while deactivating");
    }
  }
}

export const accountRoutes = [
  route(
    {
      method: "POST",
      url: "/_matrix/client/v3/register",
      auth: "none",
      rateLimit: "register",
      query: Type.Object({ kind: Type.Optional(Type.String()) }),
      body: Type.Object(
        {
          auth: Auth,
          username: Type.Optional(Type.String()),
          password: Type.Optional(Type.String()),
          device_id: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
          initial_device_display_name: Type.Optional(Type.String({ maxLength: 255 })),
          inhibit_login: Type.Optional(Type.Boolean()),
          refresh_token: Type.Optional(Type.Boolean()),
        },
        { additionalProperties: true },
      ),
    },
    async ({ body, query, req }, s) => {
      if (!s.config.registration.enabled) throw new MatrixError("M_FORBIDDEN", "Registration is disabled; ask an administrator for an account");
      if (query.kind === "guest") throw new MatrixError("M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled");
      if (body.username === undefined || body.password === undefined) {
        // The first call of a client only discovers flows.
        if (body.auth === undefined) throw registrationChallenge(s);
        throw new MatrixError("M_MISSING_PARAM", "username and password are required");
      }
      const localpart = body.username.toLowerCase();
      if (!isValidLocalpart(localpart)) throw new MatrixError("M_INVALID_USERNAME", "User names may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+'");
      if (!(await s.accounts.isAvailable(localpart))) throw new MatrixError("M_USER_IN_USE", "That user name is taken");
      await completeRegistrationAuth(s, body.auth);
      const user = await s.accounts.create(localpart, { password: body.password });
      if (body.inhibit_login) return { user_id: user.user_id };
      const deviceId = body.device_id ?? s.devices.newDeviceId();
      await s.devices.upsert(user.user_id, deviceId, body.initial_device_display_name ?? null, { ip: req.ip });
      const tokens = await s.tokens.issue(user.user_id, deviceId, body.refresh_token === true);
      return { user_id: user.user_id, device_id: deviceId, home_server: s.config.serverName, ...tokens };
    },
  ),

  route({ method: "GET", url: "/_matrix/client/v3/register/available", auth: "none", rateLimit: "register", query: Type.Object({ username: Type.String() }) }, async ({ query }, s) => {
    if (!s.config.registration.enabled) throw new MatrixError("M_FORBIDDEN", "Registration is disabled");
    const localpart = query.username.toLowerCase();
    if (!isValidLocalpart(localpart)) throw new MatrixError("M_INVALID_USERNAME", "Invalid user name");
    if (!(await s.accounts.isAvailable(localpart))) throw new MatrixError("M_USER_IN_USE", "That user name is taken");
    return { available: true };
  }),

  route({ method: "GET", url: "/_matrix/client/v1/register/m.login.registration_token/validity", auth: "none", rateLimit: "register", query: Type.Object({ token: Type.String() }) }, async ({ query }, s) => {
    if (!s.config.registration.enabled) throw new MatrixError("M_FORBIDDEN", "Registration is disabled");
    return { valid: await registrationTokenUsable(s, query.token) };
  }),

  route(
    {
      method: "POST",
      url: "/_matrix/client/v3/account/password",
      body: Type.Object({ new_password: Type.String(), logout_devices: Type.Optional(Type.Boolean()), auth: Auth }, { additionalProperties: true }),
    },
    async ({ user, body }, s) => {
      await s.uia.require({ method: "POST", path: "/account/password", body: body as Record<string, unknown>, userId: user.userId });
      await s.accounts.setPassword(user.userId, body.new_password);
      if (body.logout_devices !== false) await s.devices.removeAll(user.userId, user.deviceId);
      return {};
    },
  ),

  route(
    {
      method: "POST",
      url: "/_matrix/client/v3/account/deactivate",
      body: Type.Object({ auth: Auth, erase: Type.Optional(Type.Boolean()), id_server: Type.Optional(Type.String()) }, { additionalProperties: true }),
    },
    async ({ user, body }, s) => {
      await s.uia.require({ method: "POST", path: "/account/deactivate", body: body as Record<string, unknown>, userId: user.userId });
      await deactivateAccount(s, user.userId, { erase: body.erase === true });
      return { id_server_unbind_result: "no-support" };
    },
  ),

  route({ method: "GET", url: "/_matrix/client/v3/account/3pid" }, async () => ({ threepids: [] })),
];

function registrationFlows(s: Services): string[][] {
  return s.config.registration.tokenRequired ? [["m.login.registration_token"]] : [["m.login.dummy"]];
}

function registrationChallenge(s: Services): MatrixError {
  return new MatrixError("M_UNAUTHORIZED", "Authentication required", {
    status: 401,
    extra: { flows: registrationFlows(s).map((stages) => ({ stages })), params: {}, session: sha256Hex(String(Math.random())).slice(0, 24) },
  });
}

async function registrationTokenUsable(s: Services, token: string): Promise<boolean> {
  const row = await s.storage.db.selectFrom("registration_tokens").selectAll().where("token_hash", "=", sha256Hex(token)).executeTakeFirst();
  if (!row) return false;
  if (row.expiry_ts !== null && row.expiry_ts < Date.now()) return false;
  return row.uses_allowed === null || row.completed < row.uses_allowed;
}

/** Registration is single-stage: either a registration token (default) or, if tokens are off, m.login.dummy. */
async function completeRegistrationAuth(s: Services, auth: unknown): Promise<void> {
  if (auth === undefined || auth === null || typeof auth !== "object") throw registrationChallenge(s);
  const a = auth as Record<string, unknown>;
  if (s.config.registration.tokenRequired) {
    if (a.type !== "m.login.registration_token" || typeof a.token !== "string") throw registrationChallenge(s);
    // The conditional update is the check: two registrations racing for the last use cannot both win.
    const now = Date.now();
    const spent = await s.storage.db
      .updateTable("registration_tokens")
      .set((eb) => ({ completed: eb("completed", "+", 1) }))
      .where("token_hash", "=", sha256Hex(a.token))
      .where((eb) => eb.or([eb("expiry_ts", "is", null), eb("expiry_ts", ">=", now)]))
      .where((eb) => eb.or([eb("uses_allowed", "is", null), eb("completed", "<", eb.ref("uses_allowed"))]))
      .executeTakeFirst();
    if (Number(spent.numUpdatedRows) !== 1) throw new MatrixError("M_FORBIDDEN", "Invalid or used-up registration token", { status: 401 });
    return;
  }
  if (a.type !== "m.login.dummy") throw registrationChallenge(s);
}
