/**
 * The admin API: every documented route refuses every role that lacks its right, and no admin
 * endpoint exposes message content or private chat lists. Covers missing per-route authorisation
 * in admin APIs (CWE-285) and the data-exposure class of homeserver admin APIs that return room
 * messages or a user's joined rooms to server admins (Synapse's room-messages and joined-rooms
 * admin endpoints); the replaced messenger's advisories listed personal data exposed through its
 * admin console.
 */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { api, enc } from "./support/http.js";
import { TEST_PASSWORD } from "./support/server.js";
import { ALL_ROUTES } from "../src/api/index.js";
import type { Role } from "../src/users/accounts.js";
import { createRoom, fillOpenApiPath, fillRoute, join, sendMessage } from "./security-helpers.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const ADMIN = "/_revier/admin/v1";

/**
 * Who may take which admin action, written out here rather than read from the server's table, so
 * that widening a role shows up as a failing test. An action not listed is expected to be
 * admin-only: granting a new action to helpdesk or DPO is a decision to record here.
 */
const EXPECTED: Record<string, Role[]> = {
  "users.read": ["admin", "helpdesk"],
  "users.create": ["admin"],
  "users.lock": ["admin", "helpdesk"],
  "users.password": ["admin", "helpdesk"],
  "users.role": ["admin"],
  "users.import": ["admin"],
  "devices.read": ["admin", "helpdesk"],
  "devices.wipe": ["admin", "helpdesk"],
  "enrollment.issue": ["admin", "helpdesk"],
  "policy.read": ["admin", "dpo"],
  "policy.write": ["admin"],
  "audit.read": ["admin", "dpo"],
  "stats.read": ["admin", "dpo"],
};
const allowedFor = (action: string): Role[] => EXPECTED[action] ?? ["admin"];

interface Op {
  method: string;
  path: string;
  permission: string;
}

describeEachDatabase("admin API: authorisation and data minimisation", ({ server }) => {
  const tokens = new Map<string, string>();
  let ops: Op[] = [];
  let targetUser = "";
  let targetDevice = "";
  let channelId = "";

  before(async () => {
    for (const role of ["admin", "helpdesk", "dpo", "user"] as Role[]) {
      await server().services.accounts.create(`sec_${role}`, { password: TEST_PASSWORD, role });
      tokens.set(role, (await server().login(`sec_${role}`)).access_token);
    }
    targetUser = await server().createUser("zielperson");
    targetDevice = (await server().login("zielperson")).device_id;
    channelId = await createRoom(server(), tokens.get("admin")!, { preset: "public_chat", visibility: "public", name: "Lagekanal" });
    const doc = await api<{ paths: Record<string, Record<string, Json>> }>(server().url, "GET", `${ADMIN}/openapi.json`);
    assert.equal(doc.status, 200);
    ops = Object.entries(doc.body.paths).flatMap(([p, byMethod]) => Object.entries(byMethod).map(([m, op]) => ({ method: m.toUpperCase(), path: p, permission: String(op["x-revier-permission"]) })));
  });

  const values = () => ({ userId: targetUser, deviceId: targetDevice, roomId: channelId });

  test("every admin route is documented with a permission; none is reachable without one", async () => {
    assert.ok(ops.length >= 17, `only ${ops.length} documented operations`);
    for (const op of ops) assert.match(op.permission, /^[a-z]+\.[a-z]+$/, `${op.method} ${op.path} names no permission`);
    const documented = new Set(ops.map((o) => `${o.method} ${o.path}`));
    for (const def of ALL_ROUTES) {
      const { method, url } = def.spec;
      if (!url.startsWith(ADMIN) || url === `${ADMIN}/openapi.json`) continue;
      assert.ok(documented.has(`${method} ${url.replace(/:([A-Za-z]+)/g, "{$1}")}`), `${method} ${url} is served but not in the OpenAPI document`);
      // Undocumented or not, a plain user is refused before anything happens.
      const res = await api(server().url, method, fillRoute(url, values()), { token: tokens.get("user")!, ...(method === "GET" || method === "DELETE" ? {} : { body: {} }) });
      assert.equal(res.status, 403, `${method} ${url} as a plain user: ${res.status}`);
    }
  });

  test("each documented route × each role without the right: 403 M_FORBIDDEN; without a token: 401", async () => {
    let refusals = 0;
    for (const op of ops) {
      const path = `${fillOpenApiPath(op.path, values())}`;
      const allowed = allowedFor(op.permission);
      for (const caller of ["helpdesk", "dpo", "user", "none"] as const) {
        if (caller !== "none" && allowed.includes(caller)) continue;
        const token = caller === "none" ? undefined : tokens.get(caller);
        const body = op.method === "GET" || op.method === "DELETE" ? {} : op.path.endsWith("/import") ? { rawBody: "x,y,user\n", headers: { "content-type": "text/csv" } } : { body: { password: "ein Passwort 123", role: "admin", localpart: `neu${refusals}` } };
        const res = await api(server().url, op.method, path, { ...(token ? { token } : {}), ...body });
        const label = `${op.method} ${op.path} (${op.permission}) as ${caller}: ${res.status} ${JSON.stringify(res.body)}`;
        if (caller === "none") {
          assert.equal(res.status, 401, label);
          assert.equal(res.body.errcode, "M_MISSING_TOKEN", label);
        } else {
          assert.equal(res.status, 403, `${label} — if this role should have ${op.permission}, record it in EXPECTED`);
          assert.equal(res.body.errcode, "M_FORBIDDEN", label);
        }
        refusals++;
      }
    }
    assert.ok(refusals >= ops.length * 2);
    // Nothing the refused calls asked for happened.
    const target = await server().services.accounts.get(targetUser);
    assert.equal(target?.role, "user");
    assert.equal(target?.locked, 0);
    assert.ok(await server().services.devices.get(targetUser, targetDevice), "the target's device was not wiped");
    for (let i = 0; i < refusals; i++) assert.equal(await server().services.accounts.isAvailable(`neu${i}`), true);
  });

  test("roles are checked on every request: a demoted, locked or deactivated admin is refused at once", async () => {
    const { access_token: token } = await server().services.accounts.create("ex_admin", { password: TEST_PASSWORD, role: "admin" }).then(() => server().login("ex_admin"));
    const exId = `@ex_admin:${server().config.serverName}`;
    assert.equal((await api(server().url, "GET", `${ADMIN}/users`, { token })).status, 200);
    await server().services.accounts.setRole(exId, "user");
    assert.equal((await api(server().url, "GET", `${ADMIN}/users`, { token })).status, 403, "demoted");
    await server().services.accounts.setRole(exId, "admin");
    assert.equal((await api(server().url, "POST", `${ADMIN}/users/${enc(exId)}/lock`, { token: tokens.get("admin")! })).status, 200);
    const locked = await api(server().url, "GET", `${ADMIN}/users`, { token });
    assert.ok(locked.status === 401 || locked.status === 403, `locked: ${locked.status}`);
    assert.equal(locked.body.errcode, "M_USER_LOCKED");
    assert.equal((await api(server().url, "POST", `${ADMIN}/users/${enc(exId)}/unlock`, { token: tokens.get("admin")! })).status, 200);
    const { deactivateAccount } = await import("../src/api/client/account.js");
    await deactivateAccount(server().services, exId);
    assert.equal((await api(server().url, "GET", `${ADMIN}/users`, { token })).status, 401, "deactivated");
  });

  test("no admin endpoint returns message content, private room names, or which private chats exist", async () => {
    const annaId = await server().createUser("anna");
    const bertId = await server().createUser("bert");
    const anna = (await server().login("anna")).access_token;
    const bert = await server().login("bert");
    const M = `MARKER${Date.now().toString(36)}`;
    const secrets = [`${M}-dm-text`, `${M}-dm-name`, `${M}-dm-topic`, `${M}-channel-text`, `${M}-ciphertext`, `${M}-reaction`, `${M}-edited`, `${M}-group-text`, `${M}-alias`];
    const dm = await createRoom(server(), anna, { preset: "trusted_private_chat", is_direct: true, invite: [bertId], name: `${M}-dm-name`, topic: `${M}-dm-topic` });
    await join(server(), bert.access_token, dm);
    const first = await sendMessage(server(), anna, dm, `${M}-dm-text`, "dm1");
    await sendMessage(server(), bert.access_token, dm, `* ${M}-edited`, "dm2", { "m.new_content": { msgtype: "m.text", body: `${M}-edited` }, "m.relates_to": { rel_type: "m.replace", event_id: first } });
    assert.equal((await api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(dm)}/send/m.reaction/r1`, { token: anna, body: { "m.relates_to": { rel_type: "m.annotation", event_id: first, key: `${M}-reaction` } } })).status, 200);
    assert.equal((await api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(dm)}/send/m.room.encrypted/e1`, { token: anna, body: { algorithm: "m.megolm.v1.aes-sha2", ciphertext: `${M}-ciphertext`, device_id: "X", sender_key: "Y", session_id: "Z" } })).status, 200);
    const group = await createRoom(server(), anna, { preset: "private_chat", invite: [bertId], room_alias_name: `${M}-alias` });
    await join(server(), bert.access_token, group);
    await sendMessage(server(), bert.access_token, group, `${M}-group-text`, "g1");
    await join(server(), anna, channelId);
    await sendMessage(server(), anna, channelId, `${M}-channel-text`, "c1");
    const privateRooms = [dm, group];

    // Every GET the admin API documents, with the participants as targets, and the usual queries.
    const admin = tokens.get("admin")!;
    const paths = new Set<string>();
    for (const op of ops.filter((o) => o.method === "GET")) {
      for (const userId of [annaId, bertId]) paths.add(fillOpenApiPath(op.path, { userId, deviceId: bert.device_id, roomId: channelId }));
      paths.add(fillOpenApiPath(op.path, { userId: annaId, deviceId: bert.device_id, roomId: dm }));
    }
    for (const q of ["/users?search=anna", "/users?search=bert&limit=1000", "/audit?limit=1000", "/audit?from=0&limit=1000", "/stats"]) paths.add(`${ADMIN}${q}`);
    const seen: string[] = [];
    for (const p of paths) {
      const res = await fetch(`${server().url}${p}`, { headers: { authorization: `Bearer ${admin}` } });
      const text = await res.text();
      seen.push(p);
      assert.ok(res.status < 500, `${p}: ${res.status}`);
      for (const s of secrets) assert.ok(!text.includes(s), `${p} exposes ${s}: ${text.slice(Math.max(0, text.indexOf(s) - 200), text.indexOf(s) + 100)}`);
      for (const r of privateRooms) assert.ok(!text.includes(r), `${p} lists the private room ${r}`);
    }
    assert.ok(seen.length >= 10, `only ${seen.length} admin reads were made`);
    // The audit log in the database is no side door either.
    const rows = await server().services.storage.db.selectFrom("audit_log").selectAll().execute();
    const dump = JSON.stringify(rows);
    for (const s of secrets) assert.ok(!dump.includes(s), `the audit log holds ${s}`);
    for (const r of privateRooms) assert.ok(!dump.includes(r), `the audit log names the private room ${r}`);
  });
});
