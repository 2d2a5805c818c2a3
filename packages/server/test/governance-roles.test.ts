import { before, test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { TEST_PASSWORD, type TestServer } from "./support/server.js";
import { api, enc } from "./support/http.js";
import type { Role } from "../src/users/accounts.js";

const ADMIN = "/_revier/admin/v1";
type Caller = Role | "none";
const CALLERS: Caller[] = ["admin", "helpdesk", "dpo", "user", "none"];

interface Row {
  name: string;
  /** Roles that must be let through; every other caller is refused. Written out, not derived from the permission table. */
  allowed: Role[];
  /** Builds a fresh request (own target user, device …) for one caller. */
  request: (ctx: { server: TestServer; n: number }) => Promise<{ method: string; path: string; body?: unknown; rawBody?: string }>;
}

let counter = 0;
async function freshUser(server: TestServer): Promise<string> {
  return (await server.services.accounts.create(`target${++counter}`, { password: TEST_PASSWORD })).user_id;
}

const ROWS: Row[] = [
  { name: "GET /users", allowed: ["admin", "helpdesk"], request: async () => ({ method: "GET", path: "/users?limit=5" }) },
  { name: "POST /users", allowed: ["admin"], request: async ({ n }) => ({ method: "POST", path: "/users", body: { localpart: `made${n}`, password: TEST_PASSWORD } }) },
  { name: "GET /users/{userId}", allowed: ["admin", "helpdesk"], request: async ({ server }) => ({ method: "GET", path: `/users/${enc(await freshUser(server))}` }) },
  { name: "POST /users/{userId}/lock", allowed: ["admin", "helpdesk"], request: async ({ server }) => ({ method: "POST", path: `/users/${enc(await freshUser(server))}/lock` }) },
  { name: "POST /users/{userId}/unlock", allowed: ["admin", "helpdesk"], request: async ({ server }) => ({ method: "POST", path: `/users/${enc(await freshUser(server))}/unlock` }) },
  {
    name: "POST /users/{userId}/password",
    allowed: ["admin", "helpdesk"],
    request: async ({ server }) => ({ method: "POST", path: `/users/${enc(await freshUser(server))}/password`, body: { password: "ein neues Passwort" } }),
  },
  { name: "PUT /users/{userId}/role", allowed: ["admin"], request: async ({ server }) => ({ method: "PUT", path: `/users/${enc(await freshUser(server))}/role`, body: { role: "dpo" } }) },
  { name: "POST /users/import", allowed: ["admin"], request: async ({ n }) => ({ method: "POST", path: "/users/import", rawBody: `imported${n},Imported ${n},user\n` }) },
  { name: "GET /users/{userId}/devices", allowed: ["admin", "helpdesk"], request: async ({ server }) => ({ method: "GET", path: `/users/${enc(await freshUser(server))}/devices` }) },
  {
    name: "DELETE /users/{userId}/devices/{deviceId}",
    allowed: ["admin", "helpdesk"],
    request: async ({ server }) => {
      const userId = await freshUser(server);
      await server.services.devices.upsert(userId, "PHONE", null, {});
      return { method: "DELETE", path: `/users/${enc(userId)}/devices/PHONE?block=true` };
    },
  },
  { name: "POST /users/{userId}/enrollment_codes", allowed: ["admin", "helpdesk"], request: async ({ server }) => ({ method: "POST", path: `/users/${enc(await freshUser(server))}/enrollment_codes` }) },
  { name: "GET /policy", allowed: ["admin", "dpo"], request: async () => ({ method: "GET", path: "/policy" }) },
  { name: "PUT /policy", allowed: ["admin"], request: async () => ({ method: "PUT", path: "/policy", body: { max_devices: 3 } }) },
  { name: "GET /audit", allowed: ["admin", "dpo"], request: async () => ({ method: "GET", path: "/audit?limit=2" }) },
  { name: "GET /audit/verify", allowed: ["admin", "dpo"], request: async () => ({ method: "GET", path: "/audit/verify" }) },
  { name: "GET /audit/export", allowed: ["admin", "dpo"], request: async () => ({ method: "GET", path: "/audit/export" }) },
  { name: "GET /stats", allowed: ["admin", "dpo"], request: async () => ({ method: "GET", path: "/stats" }) },
  { name: "GET /channels", allowed: ["admin"], request: async () => ({ method: "GET", path: "/channels" }) },
  {
    name: "POST /channels/{roomId}/close",
    allowed: ["admin"],
    request: async ({ server }) => {
      const { roomId } = await server.services.rooms.create(await freshUser(server), { preset: "public_chat" });
      return { method: "POST", path: `/channels/${enc(roomId)}/close`, body: { reason: "Test" } };
    },
  },
  { name: "GET /terms", allowed: ["admin", "dpo"], request: async () => ({ method: "GET", path: "/terms" }) },
  { name: "POST /terms", allowed: ["admin"], request: async ({ n }) => ({ method: "POST", path: "/terms", body: { version: `matrix-${n}`, text: "Text" } }) },
  {
    name: "POST /users/{userId}/devices/{deviceId}/unblock",
    allowed: ["admin", "helpdesk"],
    request: async ({ server }) => {
      const u = await freshUser(server);
      await server.services.governance.wipeDevice({ actor: "test", actorRole: "admin" }, u, "PHONE", true);
      return { method: "POST", path: `/users/${enc(u)}/devices/PHONE/unblock` };
    },
  },
];

describeEachDatabase("governance: role matrix", ({ server }) => {
  const tokens = new Map<Caller, string>();

  before(async () => {
    for (const role of ["admin", "helpdesk", "dpo", "user"] as Role[]) {
      await server().services.accounts.create(`as_${role}`, { password: TEST_PASSWORD, role });
      tokens.set(role, (await server().login(`as_${role}`)).access_token);
    }
  });

  test("every documented admin endpoint is in the matrix", async () => {
    const res = await api<{ paths: Record<string, Record<string, unknown>> }>(server().url, "GET", `${ADMIN}/openapi.json`);
    assert.equal(res.status, 200);
    const documented = Object.entries(res.body.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p.slice(ADMIN.length)}`));
    assert.deepEqual(documented.sort(), ROWS.map((r) => r.name).sort());
  });

  for (const row of ROWS) {
    test(`${row.name}: allowed for ${row.allowed.join(", ")}, refused for everyone else`, async () => {
      for (const caller of CALLERS) {
        const req = await row.request({ server: server(), n: ++counter });
        const token = tokens.get(caller);
        const res = await api(server().url, req.method, `${ADMIN}${req.path}`, {
          ...(token ? { token } : {}),
          ...(req.body !== undefined ? { body: req.body } : {}),
          ...(req.rawBody !== undefined ? { rawBody: req.rawBody, headers: { "content-type": "text/csv" } } : {}),
        });
        const label = `${row.name} as ${caller}: ${res.status} ${JSON.stringify(res.body)}`;
        if (caller === "none") {
          assert.equal(res.status, 401, label);
          assert.equal((res.body as { errcode?: string }).errcode, "M_MISSING_TOKEN", label);
        } else if (row.allowed.includes(caller)) {
          assert.equal(res.status, 200, label);
        } else {
          assert.equal(res.status, 403, label);
          assert.equal((res.body as { errcode?: string }).errcode, "M_FORBIDDEN", label);
        }
      }
    });
  }

  test("helpdesk acts on ordinary users only: it cannot take over an administrator or another helpdesk account", async () => {
    const helpdesk = tokens.get("helpdesk")!;
    for (const target of ["as_admin", "as_dpo"]) {
      const userId = `@${target}:${server().config.serverName}`;
      const device = (await server().login(target)).device_id;
      const attempts = [
        { method: "POST" as const, path: `/users/${enc(userId)}/password`, body: { password: "taken over 123" } },
        { method: "POST" as const, path: `/users/${enc(userId)}/lock`, body: {} },
        { method: "POST" as const, path: `/users/${enc(userId)}/enrollment_codes`, body: {} },
        { method: "DELETE" as const, path: `/users/${enc(userId)}/devices/${enc(device)}` },
      ];
      for (const a of attempts) {
        const res = await api(server().url, a.method, `${ADMIN}${a.path}`, { token: helpdesk, ...(a.body ? { body: a.body } : {}) });
        assert.equal(res.status, 403, `${a.method} ${a.path}: ${JSON.stringify(res.body)}`);
        assert.equal((res.body as { errcode?: string }).errcode, "M_FORBIDDEN");
      }
      // Nothing changed: the original password still works and the device is still there.
      await server().login(target);
      assert.ok(await server().services.devices.get(userId, device));
    }
  });

  test("a password reset that signs the user out removes the devices and their keys", async () => {
    const userId = await freshUser(server());
    const localpart = userId.slice(1, userId.indexOf(":"));
    const { device_id } = await server().login(localpart);
    const res = await api(server().url, "POST", `${ADMIN}/users/${enc(userId)}/password`, { token: tokens.get("helpdesk")!, body: { password: "a new password 123" } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(await server().services.devices.get(userId, device_id), undefined);
    assert.deepEqual(await server().services.devices.list(userId), []);
  });

  test("a refused caller learns nothing about request shapes: the role is checked before the body", async () => {
    const res = await api(server().url, "PUT", `${ADMIN}/policy`, { token: tokens.get("dpo")!, body: { max_devices: "lots" } });
    assert.equal(res.status, 403);
  });
});
