import { test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { api } from "./support/http.js";
import { assertConformsToSpec } from "./support/spec.js";
import { TEST_PASSWORD } from "./support/server.js";
import { RateLimiter } from "../src/lib/rate-limiter.js";

describeEachDatabase("devices, user-interactive auth, password and deactivation", ({ server }) => {
  test("devices list, get and rename conform to the spec", async () => {
    await server().createUser("dora");
    const a = await server().login("dora", TEST_PASSWORD, { initial_device_display_name: "Tablet" });
    await server().login("dora");
    const list = await api(server().url, "GET", "/_matrix/client/v3/devices", { token: a.access_token });
    assertConformsToSpec("GET", "/_matrix/client/v3/devices", 200, list.body);
    assert.equal((list.body.devices as unknown[]).length, 2);
    const one = await api(server().url, "GET", `/_matrix/client/v3/devices/${a.device_id}`, { token: a.access_token });
    assertConformsToSpec("GET", "/_matrix/client/v3/devices/{deviceId}", 200, one.body);
    assert.equal(one.body.display_name, "Tablet");
    const rename = await api(server().url, "PUT", `/_matrix/client/v3/devices/${a.device_id}`, { token: a.access_token, body: { display_name: "Streifenwagen" } });
    assert.equal(rename.status, 200);
    const again = await api(server().url, "GET", `/_matrix/client/v3/devices/${a.device_id}`, { token: a.access_token });
    assert.equal(again.body.display_name, "Streifenwagen");
    const missing = await api(server().url, "GET", "/_matrix/client/v3/devices/NOPE", { token: a.access_token });
    assert.equal(missing.status, 404);
  });

  test("a device's last-seen time follows its use, not only its login", async () => {
    await server().createUser("dilan");
    const a = await server().login("dilan");
    const db = server().services.storage.db;
    await db.updateTable("devices").set({ last_seen_ts: 1000, last_seen_ip: "192.0.2.1" }).where("device_id", "=", a.device_id).execute();
    const who = await api(server().url, "GET", "/_matrix/client/v3/account/whoami", { token: a.access_token });
    assert.equal(who.status, 200);
    const one = await api<{ last_seen_ts: number; last_seen_ip: string }>(server().url, "GET", `/_matrix/client/v3/devices/${a.device_id}`, { token: a.access_token });
    assert.ok(one.body.last_seen_ts > Date.now() - 60_000, `last_seen_ts ${one.body.last_seen_ts} was not updated`);
    assert.notEqual(one.body.last_seen_ip, "192.0.2.1");
  });

  test("deleting a device needs user-interactive auth; the session cannot be replayed for another request", async () => {
    await server().createUser("emil");
    const main = await server().login("emil");
    const lost = await server().login("emil");
    const other = await server().login("emil");
    const path = `/_matrix/client/v3/devices/${lost.device_id}`;
    const challenge = await api(server().url, "DELETE", path, { token: main.access_token, body: {} });
    assert.equal(challenge.status, 401);
    assertConformsToSpec("DELETE", "/_matrix/client/v3/devices/{deviceId}", 401, challenge.body);
    assert.deepEqual(challenge.body.flows, [{ stages: ["m.login.password"] }]);
    const session = challenge.body.session as string;
    // The session was opened for deleting `lost`; using it to delete `other` is refused.
    const replay = await api(server().url, "DELETE", `/_matrix/client/v3/devices/${other.device_id}`, {
      token: main.access_token,
      body: { auth: { type: "m.login.password", session, identifier: { type: "m.id.user", user: "emil" }, password: TEST_PASSWORD } },
    });
    assert.equal(replay.status, 403);
    const wrong = await api(server().url, "DELETE", path, { token: main.access_token, body: { auth: { type: "m.login.password", session, identifier: { type: "m.id.user", user: "emil" }, password: "nicht richtig" } } });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body.errcode, "M_FORBIDDEN");
    const ok = await api(server().url, "DELETE", path, { token: main.access_token, body: { auth: { type: "m.login.password", session, identifier: { type: "m.id.user", user: "emil" }, password: TEST_PASSWORD } } });
    assert.equal(ok.status, 200);
    const dead = await api(server().url, "GET", "/_matrix/client/v3/account/whoami", { token: lost.access_token });
    assert.equal(dead.status, 401);
    assert.equal(dead.body.errcode, "M_UNKNOWN_TOKEN");
    assert.equal(dead.body.soft_logout, false);
    // The completed session is gone: replaying it for the same request fails too.
    const again = await api(server().url, "DELETE", `/_matrix/client/v3/devices/${other.device_id}`, { token: main.access_token, body: { auth: { type: "m.login.password", session, password: TEST_PASSWORD, identifier: { type: "m.id.user", user: "emil" } } } });
    assert.equal(again.status, 400);
    const bulk = await api(server().url, "POST", "/_matrix/client/v3/delete_devices", { token: main.access_token, body: { devices: [other.device_id], auth: { type: "m.login.password", password: TEST_PASSWORD, identifier: { type: "m.id.user", user: "emil" } } } });
    assert.equal(bulk.status, 200);
    const left = await api(server().url, "GET", "/_matrix/client/v3/devices", { token: main.access_token });
    assert.deepEqual((left.body.devices as Array<{ device_id: string }>).map((d) => d.device_id), [main.device_id]);
  });

  test("password change logs out other devices", async () => {
    await server().createUser("fritz");
    const a = await server().login("fritz");
    const b = await server().login("fritz");
    const res = await api(server().url, "POST", "/_matrix/client/v3/account/password", { token: a.access_token, body: { new_password: "ein neues Passwort", auth: { type: "m.login.password", identifier: { type: "m.id.user", user: "fritz" }, password: TEST_PASSWORD } } });
    assert.equal(res.status, 200);
    assert.equal((await api(server().url, "GET", "/_matrix/client/v3/account/whoami", { token: b.access_token })).status, 401);
    assert.equal((await api(server().url, "GET", "/_matrix/client/v3/account/whoami", { token: a.access_token })).status, 200);
    await server().login("fritz", "ein neues Passwort");
  });

  test("a deactivated user cannot log in and all their tokens die at once", async () => {
    await server().createUser("gina");
    const a = await server().login("gina", TEST_PASSWORD, { refresh_token: true });
    const b = await server().login("gina");
    const room = await api(server().url, "POST", "/_matrix/client/v3/createRoom", { token: a.access_token, body: {} });
    const res = await api(server().url, "POST", "/_matrix/client/v3/account/deactivate", { token: a.access_token, body: { auth: { type: "m.login.password", identifier: { type: "m.id.user", user: "gina" }, password: TEST_PASSWORD } } });
    assert.equal(res.status, 200);
    assertConformsToSpec("POST", "/_matrix/client/v3/account/deactivate", 200, res.body);
    for (const t of [a.access_token, b.access_token]) assert.equal((await api(server().url, "GET", "/_matrix/client/v3/account/whoami", { token: t })).status, 401);
    const refresh = await api(server().url, "POST", "/_matrix/client/v3/refresh", { body: { refresh_token: a.refresh_token } });
    assert.equal(refresh.status, 401);
    const login = await api(server().url, "POST", "/_matrix/client/v3/login", { body: { type: "m.login.password", identifier: { type: "m.id.user", user: "gina" }, password: TEST_PASSWORD } });
    assert.equal(login.status, 403);
    const membership = await server().services.rooms.membership(room.body.room_id as string, "@gina:localhost");
    assert.equal(membership?.membership, "leave");
  });

  test("deactivation deletes the account's own data; with erase also the profile and uploads", async () => {
    await server().createUser("hanna");
    const a = await server().login("hanna");
    const t = { token: a.access_token };
    const url = server().url;
    assert.equal((await api(url, "POST", "/_matrix/client/v3/pushers/set", { ...t, body: { kind: "http", app_id: "de.polizei.app", pushkey: "pk1", app_display_name: "A", device_display_name: "D", lang: "de", data: { url: "https://203.0.113.9/_matrix/push/v1/notify" } } })).status, 200);
    assert.equal((await api(url, "PUT", "/_matrix/client/v3/user/%40hanna%3Alocalhost/account_data/m.secret_storage.default_key", { ...t, body: { key: "k" } })).status, 200);
    assert.equal((await api(url, "POST", "/_matrix/client/v3/room_keys/version", { ...t, body: { algorithm: "m.megolm_backup.v1.curve25519-aes-sha2", auth_data: { public_key: "abc" } } })).status, 200);
    const upload = await fetch(`${url}/_matrix/media/v3/upload`, { method: "POST", headers: { authorization: `Bearer ${a.access_token}`, "content-type": "application/octet-stream" }, body: new Uint8Array([1, 2, 3, 4]) });
    assert.equal(upload.status, 200);
    const auth = { type: "m.login.password", identifier: { type: "m.id.user", user: "hanna" }, password: TEST_PASSWORD };
    assert.equal((await api(url, "POST", "/_matrix/client/v3/account/deactivate", { ...t, body: { auth, erase: true } })).status, 200);
    const db = server().services.storage.db;
    const userId = "@hanna:localhost";
    for (const table of ["pushers", "account_data", "e2e_room_keys_versions", "media"] as const) {
      const rows = await db.selectFrom(table).selectAll().where("user_id", "=", userId).execute();
      assert.equal(rows.length, 0, `${table} still holds ${rows.length} rows`);
    }
    const user = await server().services.accounts.get(userId);
    assert.equal(user?.displayname, null);
    assert.equal(user?.deactivated, 1);
  });

  test("registration is off by default", async () => {
    const res = await api(server().url, "POST", "/_matrix/client/v3/register", { body: { username: "neu", password: "ein gutes Passwort" } });
    assert.equal(res.status, 403);
    assert.equal(res.body.errcode, "M_FORBIDDEN");
  });

  test("login bursts get 429 with Retry-After", async () => {
    // Three attempts, then one per minute: the fourth and fifth are refused.
    server().services.rateLimits.login = new RateLimiter(1 / 60, 3);
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 5; i++) {
      const r = await api(server().url, "POST", "/_matrix/client/v3/login", { body: { type: "m.login.password", identifier: { type: "m.id.user", user: "nobody" }, password: "x" } });
      statuses.push(r.status);
      if (r.status === 429) {
        retryAfter = r.headers.get("retry-after");
        assert.equal(r.body.errcode, "M_LIMIT_EXCEEDED");
        assert.ok(Number(r.body.retry_after_ms) > 0);
      }
    }
    assert.deepEqual(statuses, [403, 403, 403, 429, 429]);
    assert.ok(retryAfter !== null && Number(retryAfter) > 0);
  });
});

describeEachDatabase(
  "registration with tokens",
  ({ server }) => {
    test("registration needs a valid token; a used-up token is refused", async () => {
      const token = "einmal-token";
      const { sha256Hex } = await import("../src/lib/random.js");
      await server().services.storage.db.insertInto("registration_tokens").values({ token_hash: sha256Hex(token), uses_allowed: 1, completed: 0, expiry_ts: null, created_ts: Date.now() }).execute();
      const flows = await api(server().url, "POST", "/_matrix/client/v3/register", { body: {} });
      assert.equal(flows.status, 401);
      assert.deepEqual(flows.body.flows, [{ stages: ["m.login.registration_token"] }]);
      const ok = await api(server().url, "POST", "/_matrix/client/v3/register", { body: { username: "neu", password: "ein gutes Passwort", auth: { type: "m.login.registration_token", token } } });
      assert.equal(ok.status, 200);
      assertConformsToSpec("POST", "/_matrix/client/v3/register", 200, ok.body);
      const second = await api(server().url, "POST", "/_matrix/client/v3/register", { body: { username: "neu2", password: "ein gutes Passwort", auth: { type: "m.login.registration_token", token } } });
      assert.equal(second.status, 401);
      const taken = await api(server().url, "GET", "/_matrix/client/v3/register/available?username=neu");
      assert.equal(taken.body.errcode, "M_USER_IN_USE");
    });
  },
  { "registration.enabled": true },
);
