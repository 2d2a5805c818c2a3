import type { Readable } from "node:stream";
import { CreateUserBody, ImportResponse, ListUsersQuery, ListUsersResponse, MatrixError, PasswordBody, RoleBody, UserDetails, UserParams, EmptyResponse, AdminUser } from "@revier/protocol";
import { adminRoute } from "./admin-route.js";
import { toAdminUser } from "../../governance/governance.js";

const MAX_IMPORT_BYTES = 2 * 1024 * 1024;

async function readText(stream: Readable | undefined, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  // A request without a body never reaches the raw-body parser: an empty file, not a 500.
  if (stream === undefined || stream === null) return "";
  for await (const chunk of stream) {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
    size += buf.length;
    if (size > limit) throw new MatrixError("M_TOO_LARGE", `The CSV file is larger than ${limit} bytes; split it`);
    chunks.push(buf);
  }
  return Buffer.concat(chunks).toString("utf8");
}

export const adminUserRoutes = [
  adminRoute({ method: "GET", url: "/users", query: ListUsersQuery, action: "users.read" }, { summary: "List or search users", response: ListUsersResponse }, async ({ query }, s) => {
    const limit = query.limit ?? 100;
    const rows = await s.accounts.list({ limit, ...(query.search ? { search: query.search } : {}), ...(query.from ? { from: query.from } : {}) });
    const users = rows.map(toAdminUser);
    return { users, ...(rows.length === limit && users.length > 0 ? { next_from: users[users.length - 1]!.user_id } : {}) };
  }),

  adminRoute({ method: "POST", url: "/users", body: CreateUserBody, action: "users.create" }, { summary: "Create a user", response: AdminUser }, async ({ body, actor }, s) => {
    return s.governance.createUser(actor, body);
  }),

  // Registered before /users/:userId so the static segment wins regardless of router order.
  adminRoute(
    { method: "POST", url: "/users/import", action: "users.import", rawBody: true },
    { summary: "Create users from CSV rows localpart,displayname,role,password (password optional); per-row results", response: ImportResponse, consumes: "text/csv" },
    async ({ req, actor }, s) => s.governance.importCsv(actor, await readText(req.body as Readable | undefined, MAX_IMPORT_BYTES)),
  ),

  adminRoute({ method: "GET", url: "/users/:userId", params: UserParams, action: "users.read" }, { summary: "One user", response: UserDetails }, async ({ params }, s) => {
    const user = await s.governance.requireUser(params.userId);
    return { ...toAdminUser(user), device_count: await s.devices.count(user.user_id) };
  }),

  adminRoute({ method: "POST", url: "/users/:userId/lock", params: UserParams, action: "users.lock" }, { summary: "Lock a user: every request answers M_USER_LOCKED", response: EmptyResponse }, async ({ params, actor }, s) => {
    await s.governance.setLocked(actor, params.userId, true);
    return {};
  }),

  adminRoute({ method: "POST", url: "/users/:userId/unlock", params: UserParams, action: "users.lock" }, { summary: "Unlock a user", response: EmptyResponse }, async ({ params, actor }, s) => {
    await s.governance.setLocked(actor, params.userId, false);
    return {};
  }),

  adminRoute({ method: "POST", url: "/users/:userId/password", params: UserParams, body: PasswordBody, action: "users.password" }, { summary: "Reset a user's password (logs out every session unless logout_devices is false)", response: EmptyResponse }, async ({ params, body, actor }, s) => {
    await s.governance.resetPassword(actor, params.userId, body.password, body.logout_devices ?? true);
    return {};
  }),

  adminRoute({ method: "PUT", url: "/users/:userId/role", params: UserParams, body: RoleBody, action: "users.role" }, { summary: "Assign a role", response: EmptyResponse }, async ({ params, body, actor }, s) => {
    await s.governance.setRole(actor, params.userId, body.role);
    return {};
  }),
];
