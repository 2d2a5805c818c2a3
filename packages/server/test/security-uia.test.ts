/**
 * User-interactive auth: a session may only authorise the exact request it was started for (a
 * session completed to delete one device must not delete another, change the password or
 * deactivate the account); no auth means a 401 with flows; password guesses through UIA with a
 * stolen access token are throttled; and the stored session holds nothing from which a new
 * password could be recovered (Synapse CVE-2023-41335 stored new passwords in plaintext in UIA
 * session data).
 */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { api, enc } from "./support/http.js";
import { TEST_PASSWORD } from "./support/server.js";
import { FakeCrossSigning } from "./support/crypto-clients.js";
import { RateLimiter } from "../src/lib/rate-limiter.js";
import { verifyPassword } from "../src/users/passwords.js";
import { passwordAuth, rawLogin } from "./security-helpers.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

describeEachDatabase("user-interactive auth", ({ server }) => {
  const call = (method: string, p: string, token: string, body?: unknown) => api<Json>(server().url, method, p, { token, ...(body !== undefined ? { body } : {}) });
  const devices = async (token: string) => ((await call("GET", "/_matrix/client/v3/devices", token)).body.devices as Array<{ device_id: string }>).map((d) => d.device_id).sort();

  before(async () => {
    for (const u of ["uwe", "vera", "walter", "xaver", "yvonne"]) await server().createUser(u);
  });

  test("every protected operation without auth answers 401 with flows, params and a session, and does nothing", async () => {
    const main = await server().login("uwe");
    const spare = await server().login("uwe");
    const cs = new FakeCrossSigning(main.user_id);
    assert.equal((await call("POST", "/_matrix/client/v3/keys/device_signing/upload", main.access_token, cs.upload())).status, 200);
    const next = new FakeCrossSigning(main.user_id);
    const ops: Array<[string, string, unknown]> = [
      ["DELETE", `/_matrix/client/v3/devices/${spare.device_id}`, undefined],
      ["DELETE", `/_matrix/client/v3/devices/${spare.device_id}`, {}],
      ["DELETE", `/_matrix/client/v3/devices/${spare.device_id}`, { auth: null }],
      ["DELETE", `/_matrix/client/v3/devices/${spare.device_id}`, { auth: { session: "made-up" } }],
      ["DELETE", `/_matrix/client/v3/devices/${spare.device_id}`, { auth: { type: "m.login.dummy" } }],
      ["POST", "/_matrix/client/v3/delete_devices", { devices: [spare.device_id] }],
      ["POST", "/_matrix/client/v3/account/password", { new_password: "ein anderes Passwort" }],
      ["POST", "/_matrix/client/v3/account/deactivate", {}],
      ["POST", "/_matrix/client/v3/keys/device_signing/upload", next.upload()],
    ];
    for (const [method, p, body] of ops) {
      const res = await api<Json>(server().url, method, p, { token: main.access_token, ...(body !== undefined ? { body } : {}) });
      const label = `${method} ${p} ${JSON.stringify(body)?.slice(0, 60)}: ${res.status} ${JSON.stringify(res.body)}`;
      if (JSON.stringify(body)?.includes("made-up")) {
        assert.ok(res.status === 400 || res.status === 401, label);
        continue;
      }
      assert.equal(res.status, 401, label);
      assert.deepEqual(res.body.flows, [{ stages: ["m.login.password"] }], label);
      assert.equal(typeof res.body.session, "string", label);
      assert.ok(res.body.params !== null && typeof res.body.params === "object", label);
      if (res.body.errcode !== undefined) assert.notEqual(res.body.errcode, "M_FORBIDDEN", `${label}: no auth is not a failed auth`);
    }
    assert.deepEqual(await devices(main.access_token), [main.device_id, spare.device_id].sort(), "no device was deleted");
    assert.equal((await rawLogin(server(), "uwe", TEST_PASSWORD)).status, 200, "the password did not change and the account is alive");
    const keys = await call("POST", "/_matrix/client/v3/keys/query", main.access_token, { device_keys: { [main.user_id]: [] } });
    assert.deepEqual(keys.body.master_keys[main.user_id], cs.masterKey(), "the cross-signing keys were not replaced");
  });

  test("a session is bound to its user, endpoint and body: it cannot be completed for another request, and not twice", async () => {
    const main = await server().login("vera");
    const a = await server().login("vera");
    const b = await server().login("vera");
    // Cross-signing keys exist, so replacing them needs UIA (the first upload does not).
    assert.equal((await call("POST", "/_matrix/client/v3/keys/device_signing/upload", main.access_token, new FakeCrossSigning(main.user_id).upload())).status, 200);
    const challenge = await call("DELETE", `/_matrix/client/v3/devices/${a.device_id}`, main.access_token, {});
    assert.equal(challenge.status, 401);
    const session = challenge.body.session as string;
    const auth = passwordAuth("vera", TEST_PASSWORD, session);
    const replays: Array<[string, string, string, unknown]> = [
      ["another device", "DELETE", `/_matrix/client/v3/devices/${b.device_id}`, { auth }],
      ["another device via delete_devices", "POST", "/_matrix/client/v3/delete_devices", { devices: [b.device_id], auth }],
      ["the same device via delete_devices", "POST", "/_matrix/client/v3/delete_devices", { devices: [a.device_id], auth }],
      ["a password change", "POST", "/_matrix/client/v3/account/password", { new_password: "übernommen-123", auth }],
      ["deactivation", "POST", "/_matrix/client/v3/account/deactivate", { auth }],
      ["replacing cross-signing keys", "POST", "/_matrix/client/v3/keys/device_signing/upload", { ...new FakeCrossSigning(main.user_id).upload(), auth }],
      ["the same path with a different body", "DELETE", `/_matrix/client/v3/devices/${a.device_id}`, { auth, extra: "different" }],
    ];
    for (const [what, method, p, body] of replays) {
      const res = await call(method, p, main.access_token, body);
      assert.ok(res.status === 403 || res.status === 400, `${what}: ${res.status} ${JSON.stringify(res.body)}`);
      assert.notEqual(res.status, 200, what);
    }
    // Another user's session, completed with that other user's own password.
    const walter = await server().login("walter");
    const theirs = await call("DELETE", `/_matrix/client/v3/devices/${walter.device_id}`, walter.access_token, { auth: passwordAuth("walter", TEST_PASSWORD, session) });
    assert.ok(theirs.status === 400 || theirs.status === 403, `another user's session: ${theirs.status}`);
    // Another user's credentials for one's own session.
    const foreign = await call("DELETE", `/_matrix/client/v3/devices/${a.device_id}`, main.access_token, { auth: passwordAuth("walter", TEST_PASSWORD, session) });
    assert.equal(foreign.status, 401, "walter's password does not authenticate vera");
    assert.deepEqual(await devices(main.access_token), [main.device_id, a.device_id, b.device_id].sort(), "nothing was deleted so far");
    const vera = await server().services.accounts.get(main.user_id);
    assert.ok(vera && !vera.deactivated && (await verifyPassword(vera.password_hash, TEST_PASSWORD)), "vera's password is unchanged and the account active");
    assert.equal((await call("GET", "/_matrix/client/v3/account/whoami", walter.access_token)).status, 200);

    // The request it was started for works, once.
    const done = await call("DELETE", `/_matrix/client/v3/devices/${a.device_id}`, main.access_token, { auth });
    assert.equal(done.status, 200, JSON.stringify(done.body));
    const again = await call("POST", "/_matrix/client/v3/delete_devices", main.access_token, { devices: [b.device_id], auth });
    assert.equal(again.status, 400, "a completed session is gone");
    assert.deepEqual(await devices(main.access_token), [main.device_id, b.device_id].sort());

    // Multi-device: vera's second device may not finish the session her first device started for
    // deleting b with different parameters, nor with the path of b if it was started for a.
    const c2 = await call("POST", "/_matrix/client/v3/delete_devices", main.access_token, { devices: [b.device_id] });
    const tampered = await call("POST", "/_matrix/client/v3/delete_devices", b.access_token, { devices: [b.device_id, main.device_id], auth: passwordAuth("vera", TEST_PASSWORD, c2.body.session as string) });
    assert.equal(tampered.status, 403, `adding a device to the list: ${JSON.stringify(tampered.body)}`);
    assert.deepEqual(await devices(main.access_token), [main.device_id, b.device_id].sort());
  });

  test("the stored binding is no fast hash of a new password", async () => {
    const login = await server().login("walter");
    const db = server().services.storage.db;
    const before = new Set((await db.selectFrom("uia_sessions").select("session_id").execute()).map((r) => r.session_id));
    const sessions: string[] = [];
    for (const pw of ["erstes-geheimes-Passwort", "zweites-geheimes-Passwort"]) {
      const res = await call("POST", "/_matrix/client/v3/account/password", login.access_token, { new_password: pw, logout_devices: false });
      assert.equal(res.status, 401);
      sessions.push(res.body.session as string);
    }
    const rows = (await db.selectFrom("uia_sessions").selectAll().execute()).filter((r) => !before.has(r.session_id));
    const hashes = sessions.map((id) => rows.find((r) => r.session_id === id)?.request_hash);
    assert.ok(hashes[0] && hashes[1]);
    assert.equal(hashes[0], hashes[1], "the stored hash does not depend on the new password, so it cannot be used to test guesses");
    // The value still cannot be swapped for a different operation: the field's presence and the path are bound.
    const swapped = await call("POST", "/_matrix/client/v3/account/deactivate", login.access_token, { auth: passwordAuth("walter", TEST_PASSWORD, sessions[0]) });
    assert.equal(swapped.status, 403);
  });

  test("password guesses through UIA with a stolen access token are rate limited with Retry-After", async () => {
    const stolen = await server().login("xaver");
    const original = server().services.rateLimits.login;
    server().services.rateLimits.login = new RateLimiter(1 / 60, 3);
    try {
      const statuses: number[] = [];
      let retryAfter: string | null = null;
      for (let i = 0; i < 6; i++) {
        const res = await call("POST", "/_matrix/client/v3/account/deactivate", stolen.access_token, { auth: passwordAuth("xaver", `geraten-${i}-xyz`) });
        statuses.push(res.status);
        if (res.status === 429) {
          retryAfter = res.headers.get("retry-after");
          assert.equal(res.body.errcode, "M_LIMIT_EXCEEDED");
          assert.ok(Number(res.body.retry_after_ms) > 0);
        }
      }
      assert.deepEqual(statuses, [401, 401, 401, 429, 429, 429]);
      assert.ok(retryAfter !== null && Number(retryAfter) >= 1);
      // Limited means limited: even the right password waits.
      assert.equal((await call("POST", "/_matrix/client/v3/account/deactivate", stolen.access_token, { auth: passwordAuth("xaver", TEST_PASSWORD) })).status, 429);
      // Per user: someone else is not affected.
      const yvonne = await server().login("yvonne");
      const other = await call("DELETE", `/_matrix/client/v3/devices/${enc(yvonne.device_id)}`, yvonne.access_token, { auth: passwordAuth("yvonne", "falsch-falsch") });
      assert.equal(other.status, 401);
    } finally {
      server().services.rateLimits.login = original;
    }
    assert.equal((await call("GET", "/_matrix/client/v3/account/whoami", stolen.access_token)).status, 200, "the account was not deactivated");
  });
});
