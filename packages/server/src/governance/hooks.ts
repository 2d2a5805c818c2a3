import { ENROLLMENT_CODE_PARAM, ENROLLMENT_UIA_STAGE, MatrixError } from "@revier/protocol";
import type { FastifyRequest } from "fastify";
import type { AuthHook, Services } from "../services.js";
import type { LoginGuard } from "../api/client/session.js";
import type { Actor } from "./policy.js";
import { requirePermission, type AdminAction } from "./roles.js";
import { CLIENT_HEADER, tooOldClient } from "./client-version.js";
import type { UiaStage } from "../users/uia.js";
import { ENROLLMENT_CODE_LIFETIME_MS } from "./governance.js";

/** The admin action each admin route needs, keyed by the route's spec object (set by `adminRoute`). */
export const ROUTE_ACTIONS = new WeakMap<object, AdminAction>();

const ACTORS = new WeakMap<FastifyRequest, Actor>();

/** The checked actor of an admin request, as the auth hook left it. */
export function actorOf(req: FastifyRequest): Actor | undefined {
  return ACTORS.get(req);
}

const SYNC_URL = "/_matrix/client/v3/sync";

function header(headers: Record<string, unknown>, name: string): string | undefined {
  const v = headers[name];
  return typeof v === "string" ? v : Array.isArray(v) && typeof v[0] === "string" ? v[0] : undefined;
}

async function refuseOldClient(s: Services, headers: Record<string, unknown>): Promise<void> {
  const policy = await s.policy.get();
  const old = tooOldClient(policy.min_client_versions, { revierClient: header(headers, CLIENT_HEADER), userAgent: header(headers, "user-agent") });
  if (old) {
    throw new MatrixError(
      "ORG_REVIER_CLIENT_TOO_OLD",
      `${old.client.name} ${old.client.version} is no longer supported here; please update to version ${old.minimum} or newer and sign in again.`,
      { extra: { "org.revier.minimum_version": old.minimum, "org.revier.client": old.name } },
    );
  }
}

/**
 * One hook for every authenticated request, on the user row the token lookup read: locked
 * accounts are refused, admin routes are checked against the permission table, and /sync refuses
 * clients below the minimum version (login checks that separately).
 */
export function governanceAuthHook(s: Services): AuthHook {
  return async (session, { req, route }) => {
    const user = session.account;
    if (user.locked) {
      throw new MatrixError("M_USER_LOCKED", "This account has been locked by an administrator", { extra: { soft_logout: false } });
    }
    const action = ROUTE_ACTIONS.get(route);
    if (action) {
      const role = user.role;
      requirePermission(role, action);
      ACTORS.set(req, { actor: session.userId, actorRole: role });
    }
    if (route.url === SYNC_URL) await refuseOldClient(s, req.headers as Record<string, unknown>);
  };
}

/** The refusal of a new device beyond the organisation's limit (`max_devices`). */
export function deviceLimitReached(n: number, max: number): MatrixError {
  return new MatrixError(
    "ORG_REVIER_DEVICE_LIMIT",
    `You already have ${n} devices signed in; your organisation allows at most ${max}. Remove a device you no longer use (in your app's session or device settings, or ask the helpdesk), then sign in again.`,
    { extra: { "org.revier.max_devices": max } },
  );
}

/**
 * Login guards in the order they must run: cheap refusals first, and the enrollment code last
 * because checking it spends it.
 */
export function governanceLoginGuards(): LoginGuard[] {
  const blocked: LoginGuard = async ({ userId, deviceId }, s) => {
    if (await s.governance.isBlocked(userId, deviceId)) {
      throw new MatrixError("ORG_REVIER_DEVICE_BLOCKED", "This device has been blocked by your organisation and cannot sign in again. Use another device id or contact the helpdesk.");
    }
  };
  const clientVersion: LoginGuard = async ({ headers }, s) => refuseOldClient(s, headers);
  const deviceLimit: LoginGuard = async ({ userId, isNewDevice }, s) => {
    if (!isNewDevice) return;
    const { max_devices: max } = await s.policy.get();
    const n = await s.devices.count(userId);
    if (n >= max) throw deviceLimitReached(n, max);
  };
  const enrollment: LoginGuard = async ({ userId, deviceId, isNewDevice, body }, s) => {
    if (!isNewDevice || !(await s.policy.get()).enrollment_required) return;
    const code = body[ENROLLMENT_CODE_PARAM];
    // The code as a user-interactive-auth stage: bound to this user and the requested device id.
    const uia = { method: "POST", path: "/login", body: { user_id: userId, device_id: body.device_id ?? null, auth: body.auth }, userId, context: { device_id: deviceId } };
    if ((typeof code !== "string" || code === "") && body.auth !== undefined && body.auth !== null) {
      await s.uia.require(uia, ENROLLMENT_FLOWS);
      // The flow has this one stage, so it passed in this request, by spending the code in `auth`.
      const spent = (body.auth as Record<string, unknown>).code;
      return typeof spent === "string" ? () => s.governance.returnEnrollmentCode(userId, spent, deviceId) : undefined;
    }
    if (typeof code !== "string" || code === "") {
      throw new MatrixError("ORG_REVIER_ENROLLMENT_REQUIRED", "A new device needs an enrollment code. Create one on a device you already use, or ask the helpdesk, and send it as org.revier.enrollment_code.", {
        extra: await s.uia.describe(uia, ENROLLMENT_FLOWS),
      });
    }
    if (!(await s.governance.spendEnrollmentCode(userId, code, deviceId, "login_parameter"))) {
      throw new MatrixError("ORG_REVIER_ENROLLMENT_REQUIRED", "This enrollment code is wrong, expired or already used. Ask for a new one.");
    }
    return () => s.governance.returnEnrollmentCode(userId, code, deviceId);
  };
  return [blocked, clientVersion, deviceLimit, enrollment];
}

const ENROLLMENT_FLOWS = [[ENROLLMENT_UIA_STAGE]];

/**
 * The `org.revier.enrollment` user-interactive-auth stage: `{type: "org.revier.enrollment", code,
 * session}`. A login of a new device refused for want of a code carries `flows`, `params` and a
 * `session` for it; the client repeats the login with `auth`. The check spends the code.
 */
export function enrollmentUiaStage(s: Services): UiaStage {
  return {
    params: { lifetime_ms: ENROLLMENT_CODE_LIFETIME_MS, login_parameter: ENROLLMENT_CODE_PARAM },
    failure: "This enrollment code is wrong, expired or already used. Ask for a new one.",
    check: async (auth, req) => {
      const deviceId = req.context?.device_id;
      if (req.userId === null || typeof auth.code !== "string" || auth.code === "" || typeof deviceId !== "string") return false;
      return s.governance.spendEnrollmentCode(req.userId, auth.code, deviceId, "uia");
    },
  };
}

/** What `GET /login` adds to the password flow while new devices need an enrollment code; undefined otherwise. */
export async function enrollmentLoginFlow(s: Services): Promise<Record<string, unknown> | undefined> {
  if (!(await s.policy.get()).enrollment_required) return undefined;
  return { [ENROLLMENT_UIA_STAGE]: { uia_stage: ENROLLMENT_UIA_STAGE, login_parameter: ENROLLMENT_CODE_PARAM } };
}
