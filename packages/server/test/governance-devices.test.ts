import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { TEST_PASSWORD, type TestServer } from "./support/server.js";
import { api, enc } from "./support/http.js";
import { sdk, startClient, waitFor, type Client } from "./support/sdk.js";
import type { Role } from "../src/users/accounts.js";

const ADMIN = "/_revier/admin/v1";

async function createUser(server: TestServer, localpart: string, role: Role = "user"): Promise<string> {
  return (await server.services.accounts.create(localpart, { password: TEST_PASSWORD, role })).user_id;
}

function loginRaw(server: TestServer, localpart: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}) {
  return api<{ errcode?: string; error?: string; access_token?: string; device_id?: string; soft_logout?: boolean }>(server.url, "POST", "/_matrix/client/v3/login", {
    body: { type: "m.login.password", identifier: { type: "m.id.user", user: localpart }, password: TEST_PASSWORD, ...extra },
    headers,
  });
}

describeEachDatabase("governance: device policies", ({ server }) => {
  let admin: string;
  const clients: Client[] = [];

  before(async () => {
    await createUser(server(), "chefin", "admin");
    admin = (await server().login("chefin")).access_token;
  });
  after(() => {
    for (const c of clients) c.stopClient();
  });

  async function setPolicy(policy: Record<string, unknown>): Promise<void> {
    const res = await api(server().url, "PUT", `${ADMIN}/policy`, { token: admin, body: policy });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  }

  test("the 4th device is refused with ORG.REVIER.DEVICE_LIMIT; after removing one, the login succeeds", async () => {
    await createUser(server(), "anna");
    const first = await loginRaw(server(), "anna");
    await loginRaw(server(), "anna");
    await loginRaw(server(), "anna");
    const fourth = await loginRaw(server(), "anna");
    assert.equal(fourth.status, 403);
    assert.equal(fourth.body.errcode, "ORG.REVIER.DEVICE_LIMIT");
    assert.match(fourth.body.error ?? "", /at most 3/);
    assert.match(fourth.body.error ?? "", /[Rr]emove a device/);
    // Logging in again on an existing device is not a new device.
    assert.equal((await loginRaw(server(), "anna", { device_id: first.body.device_id })).status, 200);

    const again = await loginRaw(server(), "anna", { device_id: first.body.device_id });
    const token = again.body.access_token!;
    const path = `/_matrix/client/v3/devices/${enc(first.body.device_id!)}`;
    const challenge = await api<{ session: string }>(server().url, "DELETE", path, { token, body: {} });
    assert.equal(challenge.status, 401);
    const removed = await api(server().url, "DELETE", path, {
      token,
      body: { auth: { type: "m.login.password", identifier: { type: "m.id.user", user: "anna" }, password: TEST_PASSWORD, session: challenge.body.session } },
    });
    assert.equal(removed.status, 200, JSON.stringify(removed.body));
    assert.equal((await loginRaw(server(), "anna")).status, 200);
  });

  test("ten logins at once cannot get past the device limit", async () => {
    const userId = await createUser(server(), "anton");
    const results = await Promise.all(Array.from({ length: 10 }, () => loginRaw(server(), "anton")));
    const admitted = results.filter((r) => r.status === 200).length;
    const refused = results.filter((r) => r.status === 403 && r.body.errcode === "ORG.REVIER.DEVICE_LIMIT").length;
    assert.equal(admitted, 3, JSON.stringify(results.map((r) => r.status)));
    assert.equal(refused, 7);
    assert.equal(await server().services.devices.count(userId), 3);
  });

  test("an admin wipe logs the matrix-js-sdk client out with M_UNKNOWN_TOKEN and soft_logout false", async () => {
    const userId = await createUser(server(), "bert");
    const client = await startClient(server(), "bert");
    clients.push(client);
    let loggedOut: sdk.MatrixError | undefined;
    client.on(sdk.HttpApiEvent.SessionLoggedOut, (err) => {
      loggedOut = err;
    });
    const res = await api(server().url, "DELETE", `${ADMIN}/users/${enc(userId)}/devices/${enc(client.getDeviceId()!)}`, { token: admin });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    // The client's long-poll is not cut short by the wipe; its next request is refused.
    await assert.rejects(client.getDevices(), (e: sdk.MatrixError) => e.errcode === "M_UNKNOWN_TOKEN");
    const err = await waitFor("the client to be logged out", () => loggedOut);
    assert.equal(err.errcode, "M_UNKNOWN_TOKEN");
    assert.equal(err.data.soft_logout, false);
    client.stopClient();
    const devices = await api<{ devices: unknown[] }>(server().url, "GET", `${ADMIN}/users/${enc(userId)}/devices`, { token: admin });
    assert.deepEqual(devices.body.devices, []);
  });

  test("a blocked device id cannot log in again; other devices still can", async () => {
    const userId = await createUser(server(), "conny");
    const login = await loginRaw(server(), "conny", { device_id: "LOSTPHONE" });
    assert.equal(login.status, 200);
    const res = await api(server().url, "DELETE", `${ADMIN}/users/${enc(userId)}/devices/LOSTPHONE?block=true`, { token: admin });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const whoami = await api(server().url, "GET", "/_matrix/client/v3/account/whoami", { token: login.body.access_token! });
    assert.equal(whoami.status, 401);
    assert.equal(whoami.body.errcode, "M_UNKNOWN_TOKEN");
    assert.equal(whoami.body.soft_logout, false);
    const again = await loginRaw(server(), "conny", { device_id: "LOSTPHONE" });
    assert.equal(again.status, 403);
    assert.equal(again.body.errcode, "ORG.REVIER.DEVICE_BLOCKED");
    const list = await api<{ blocked: string[] }>(server().url, "GET", `${ADMIN}/users/${enc(userId)}/devices`, { token: admin });
    assert.deepEqual(list.body.blocked, ["LOSTPHONE"]);
    assert.equal((await loginRaw(server(), "conny")).status, 200);
  });

  test("with enrollment required a new device needs a code that works once and expires", async () => {
    const userId = await createUser(server(), "dora");
    const existing = await loginRaw(server(), "dora");
    // Room for the devices this test enrolls, so the device limit does not answer first.
    await setPolicy({ enrollment_required: true, max_devices: 10 });
    try {
      const without = await loginRaw(server(), "dora");
      assert.equal(without.status, 403);
      assert.equal(without.body.errcode, "ORG.REVIER.ENROLLMENT_REQUIRED");
      // A device that is already enrolled signs in again without a code.
      assert.equal((await loginRaw(server(), "dora", { device_id: existing.body.device_id })).status, 200);
      const token = (await loginRaw(server(), "dora", { device_id: existing.body.device_id })).body.access_token!;

      const issued = await api<{ code: string; expires_ts: number }>(server().url, "POST", `${ADMIN}/users/${enc(userId)}/enrollment_codes`, { token: admin });
      assert.equal(issued.status, 200);
      assert.ok(issued.body.expires_ts > Date.now() + 14 * 60_000);
      const wrong = await loginRaw(server(), "dora", { "org.revier.enrollment_code": "AAAA-BBBB-CCCC" });
      assert.equal(wrong.body.errcode, "ORG.REVIER.ENROLLMENT_REQUIRED");
      assert.equal((await loginRaw(server(), "dora", { "org.revier.enrollment_code": issued.body.code })).status, 200);
      const reused = await loginRaw(server(), "dora", { "org.revier.enrollment_code": issued.body.code });
      assert.equal(reused.status, 403);
      assert.equal(reused.body.errcode, "ORG.REVIER.ENROLLMENT_REQUIRED");

      // The user's existing device vouches for a new one; codes are case- and dash-insensitive.
      const own = await api<{ code: string }>(server().url, "POST", "/_revier/client/v1/enrollment_codes", { token, body: {} });
      assert.equal(own.status, 200);
      assert.equal((await loginRaw(server(), "dora", { "org.revier.enrollment_code": own.body.code.toLowerCase().replace(/-/g, "") })).status, 200);

      const late = await api<{ code: string }>(server().url, "POST", `${ADMIN}/users/${enc(userId)}/enrollment_codes`, { token: admin });
      await server().services.storage.db.updateTable("enrollment_codes").set({ expires_ts: Date.now() - 1 }).where("user_id", "=", userId).where("used_ts", "is", null).execute();
      const expired = await loginRaw(server(), "dora", { "org.revier.enrollment_code": late.body.code });
      assert.equal(expired.status, 403);
      assert.equal(expired.body.errcode, "ORG.REVIER.ENROLLMENT_REQUIRED");
      // Only digests are stored.
      const stored = await server().services.storage.db.selectFrom("enrollment_codes").select("code_hash").execute();
      assert.ok(stored.every((r) => r.code_hash !== late.body.code && /^[0-9a-f]{64}$/.test(r.code_hash)));
    } finally {
      await setPolicy({});
    }
  });

  test("a client below the minimum version is refused at login and at /sync", async () => {
    await createUser(server(), "emil");
    const current = await loginRaw(server(), "emil", {}, { "X-Revier-Client": "revier-web/2.0.0" });
    assert.equal(current.status, 200);
    await setPolicy({ min_client_versions: { "revier-web": "2.0.0", Element: "1.11.0" } });
    try {
      const old = await loginRaw(server(), "emil", {}, { "X-Revier-Client": "revier-web/1.9.9" });
      assert.equal(old.status, 403);
      assert.equal(old.body.errcode, "ORG.REVIER.CLIENT_TOO_OLD");
      assert.match(old.body.error ?? "", /2\.0\.0/);
      const element = await loginRaw(server(), "emil", {}, { "user-agent": "Element/1.10.2 (Android 13; Pixel 7)" });
      assert.equal(element.body.errcode, "ORG.REVIER.CLIENT_TOO_OLD");
      assert.equal((await loginRaw(server(), "emil", {}, { "user-agent": "Element/1.11.4 (Android 13; Pixel 7)" })).status, 200);

      const token = current.body.access_token!;
      const oldSync = await api(server().url, "GET", "/_matrix/client/v3/sync?timeout=0", { token, headers: { "X-Revier-Client": "revier-web/1.2.0" } });
      assert.equal(oldSync.status, 403);
      assert.equal(oldSync.body.errcode, "ORG.REVIER.CLIENT_TOO_OLD");
      const newSync = await api(server().url, "GET", "/_matrix/client/v3/sync?timeout=0", { token, headers: { "X-Revier-Client": "revier-web/2.1.0" } });
      assert.equal(newSync.status, 200);
      // Only /sync is gated: an old client may still log out.
      const whoami = await api(server().url, "GET", "/_matrix/client/v3/account/whoami", { token, headers: { "X-Revier-Client": "revier-web/1.2.0" } });
      assert.equal(whoami.status, 200);
    } finally {
      await setPolicy({});
    }
  });

  test("a locked user gets M_USER_LOCKED on every request until unlocked", async () => {
    const userId = await createUser(server(), "frieda");
    const token = (await loginRaw(server(), "frieda")).body.access_token!;
    assert.equal((await api(server().url, "POST", `${ADMIN}/users/${enc(userId)}/lock`, { token: admin })).status, 200);
    const locked = await api(server().url, "GET", "/_matrix/client/v3/account/whoami", { token });
    assert.equal(locked.status, 401);
    assert.equal(locked.body.errcode, "M_USER_LOCKED");
    assert.equal(locked.body.soft_logout, false);
    assert.equal((await loginRaw(server(), "frieda")).body.errcode, "M_USER_LOCKED");
    const details = await api<{ locked: boolean }>(server().url, "GET", `${ADMIN}/users/${enc(userId)}`, { token: admin });
    assert.equal(details.body.locked, true);
    assert.equal((await api(server().url, "POST", `${ADMIN}/users/${enc(userId)}/unlock`, { token: admin })).status, 200);
    assert.equal((await api(server().url, "GET", "/_matrix/client/v3/account/whoami", { token })).status, 200);
  });
});
