/**
 * Identity binding and deactivation. Key uploads naming another user or device (a homeserver that
 * stores them lets one account plant a device in someone else's device list: the key-substitution
 * class E2EE relies on the server to prevent) are refused; a deactivated account is dead on every
 * path, refresh tokens included (deactivated users keeping working tokens is a recurring
 * homeserver bug class); and a copied refresh token cannot be replayed to take a session over
 * (RFC 6819 §5.2.2.3; the spec's rotation rule).
 */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { api, enc } from "./support/http.js";
import { TEST_PASSWORD } from "./support/server.js";
import { FakeCrossSigning, FakeDevice } from "./support/crypto-clients.js";
import { loginBody, passwordAuth, rawLogin } from "./security-helpers.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

describeEachDatabase("identity binding and deactivation", ({ server }) => {
  const ADMIN = "/_revier/admin/v1";
  let adminToken = "";
  const call = (method: string, p: string, token: string | undefined, body?: unknown) => api<Json>(server().url, method, p, { ...(token ? { token } : {}), ...(body !== undefined ? { body } : {}) });

  before(async () => {
    await server().services.accounts.create("chefin", { password: TEST_PASSWORD, role: "admin" });
    adminToken = (await server().login("chefin")).access_token;
  });

  test("device keys, cross-signing keys, signatures, backups and to-device messages cannot be written in someone else's name", async () => {
    await server().createUser("alice");
    await server().createUser("bob");
    const alice = await server().login("alice");
    const alice2 = await server().login("alice");
    const bob = await server().login("bob");
    const aliceDevice = new FakeDevice(alice.user_id, alice.device_id);
    const bobDevice = new FakeDevice(bob.user_id, bob.device_id);
    assert.equal((await call("POST", "/_matrix/client/v3/keys/upload", bob.access_token, { device_keys: bobDevice.deviceKeys() })).status, 200);
    assert.equal((await call("POST", "/_matrix/client/v3/keys/upload", alice.access_token, { device_keys: aliceDevice.deviceKeys() })).status, 200);
    const bobCs = new FakeCrossSigning(bob.user_id);
    assert.equal((await call("POST", "/_matrix/client/v3/keys/device_signing/upload", bob.access_token, bobCs.upload())).status, 200);
    const before = (await call("POST", "/_matrix/client/v3/keys/query", bob.access_token, { device_keys: { [bob.user_id]: [], [alice.user_id]: [] } })).body;

    // Alice, signed in, forges keys naming Bob's user or device, or her own other device.
    const forgedBobDevice = new FakeDevice(bob.user_id, bob.device_id);
    const forgedNewBobDevice = new FakeDevice(bob.user_id, "EVILDEVICE");
    const forgedOtherAliceDevice = new FakeDevice(alice.user_id, alice2.device_id);
    const refusedUploads: Array<[string, Json]> = [
      ["Bob's user and device id", { device_keys: forgedBobDevice.deviceKeys() }],
      ["a new device id under Bob's user", { device_keys: forgedNewBobDevice.deviceKeys() }],
      ["Bob's user with Alice's device id", { device_keys: new FakeDevice(bob.user_id, alice.device_id).deviceKeys() }],
      ["Alice's other device", { device_keys: forgedOtherAliceDevice.deviceKeys() }],
      ["one-time keys signed as Bob's device", { one_time_keys: forgedBobDevice.oneTimeKeys(2) }],
      ["a fallback key signed as Alice's other device", { fallback_keys: forgedOtherAliceDevice.fallbackKey() }],
    ];
    for (const [what, body] of refusedUploads) {
      const res = await call("POST", "/_matrix/client/v3/keys/upload", alice.access_token, body);
      assert.equal(res.status, 400, `${what}: ${res.status} ${JSON.stringify(res.body)}`);
    }
    const forgedCs = new FakeCrossSigning(bob.user_id);
    const cs = await call("POST", "/_matrix/client/v3/keys/device_signing/upload", alice.access_token, { ...forgedCs.upload(), auth: passwordAuth(alice.user_id, TEST_PASSWORD) });
    assert.ok(cs.status === 400 || cs.status === 403, `cross-signing keys for Bob: ${cs.status} ${JSON.stringify(cs.body)}`);
    // Alice may not sign Bob's device key (only his master key, with her user-signing key).
    const aliceCs = new FakeCrossSigning(alice.user_id);
    assert.equal((await call("POST", "/_matrix/client/v3/keys/device_signing/upload", alice.access_token, aliceCs.upload())).status, 200);
    const bobKeyAsStored = before.device_keys[bob.user_id][bob.device_id] as Json;
    const signedByAlice = aliceCs.selfSigning.sign(bobKeyAsStored, alice.user_id, `ed25519:${aliceCs.selfSigning.publicKey}`);
    const sig = await call("POST", "/_matrix/client/v3/keys/signatures/upload", alice.access_token, { [bob.user_id]: { [bob.device_id]: signedByAlice } });
    assert.equal(sig.status, 200);
    assert.ok(sig.body.failures?.[bob.user_id]?.[bob.device_id], `signing Bob's device is reported as a failure: ${JSON.stringify(sig.body)}`);

    const after = (await call("POST", "/_matrix/client/v3/keys/query", bob.access_token, { device_keys: { [bob.user_id]: [], [alice.user_id]: [] } })).body;
    assert.deepEqual(after.device_keys[bob.user_id], before.device_keys[bob.user_id], "Bob's devices and their signatures are unchanged");
    assert.deepEqual(Object.keys(after.device_keys[alice.user_id]).sort(), [alice.device_id], "no device appeared for Alice's other session");
    assert.deepEqual(after.master_keys[bob.user_id], bobCs.masterKey(), "Bob's master key is his own");
    const claimed = await call("POST", "/_matrix/client/v3/keys/claim", bob.access_token, { one_time_keys: { [bob.user_id]: { [bob.device_id]: "signed_curve25519" } } });
    assert.deepEqual(claimed.body.one_time_keys?.[bob.user_id] ?? {}, {}, "no one-time key was planted on Bob's device");

    // Key backups are per user: Bob's version is not Alice's to read or write.
    const version = (await call("POST", "/_matrix/client/v3/room_keys/version", bob.access_token, { algorithm: "m.megolm_backup.v1.curve25519-aes-sha2", auth_data: { public_key: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ" } })).body.version as string;
    assert.ok(version);
    for (const [method, p, body] of [
      ["GET", `/_matrix/client/v3/room_keys/version/${enc(version)}`, undefined],
      ["GET", `/_matrix/client/v3/room_keys/keys?version=${enc(version)}`, undefined],
      ["PUT", `/_matrix/client/v3/room_keys/keys/${enc("!r:localhost")}/sess?version=${enc(version)}`, { first_message_index: 0, forwarded_count: 0, is_verified: false, session_data: { ciphertext: "x", ephemeral: "y", mac: "z" } }],
      ["DELETE", `/_matrix/client/v3/room_keys/version/${enc(version)}`, undefined],
    ] as Array<[string, string, Json | undefined]>) {
      const res = await call(method, p, alice.access_token, body);
      assert.ok(res.status === 404 || res.status === 403, `${method} ${p} as Alice: ${res.status} ${JSON.stringify(res.body)}`);
    }
    assert.equal((await call("GET", `/_matrix/client/v3/room_keys/version/${enc(version)}`, bob.access_token)).status, 200, "Bob's backup is still there");

    // A to-device message's sender is whoever sent it, whatever the content claims.
    assert.equal((await call("PUT", "/_matrix/client/v3/sendToDevice/m.test/spoof1", alice.access_token, { messages: { [bob.user_id]: { [bob.device_id]: { sender: "@chefin:localhost", body: "hallo" } } } })).status, 200);
    const sync = await call("GET", "/_matrix/client/v3/sync?timeout=0", bob.access_token);
    const msgs = (sync.body.to_device.events as Json[]).filter((e) => e.type === "m.test");
    assert.equal(msgs.length, 1);
    assert.equal(msgs[0]!.sender, alice.user_id);
  });

  // Refresh-token replay (RFC 6819 §5.2.2.3; spec: "the old refresh token remains valid until the
  // new access token or refresh token is used"): a refresh token copied off a phone must not let
  // the thief take the session over once the owner has moved on to the next token.
  test("a superseded refresh token dies once its successor is used, and cannot be replayed to hijack the session", async () => {
    await server().createUser("rita");
    const first = await server().login("rita", TEST_PASSWORD, { refresh_token: true });
    const r1 = await call("POST", "/_matrix/client/v3/refresh", undefined, { refresh_token: first.refresh_token });
    assert.equal(r1.status, 200);
    // A lost response: the client retries with the same refresh token before using the new pair. Allowed.
    const retry = await call("POST", "/_matrix/client/v3/refresh", undefined, { refresh_token: first.refresh_token });
    assert.equal(retry.status, 200, "a retry before the new pair is used still works");
    assert.equal((await call("GET", "/_matrix/client/v3/account/whoami", retry.body.access_token as string)).status, 200);
    // Now the new access token has been used: the old refresh token must be dead.
    const replay = await call("POST", "/_matrix/client/v3/refresh", undefined, { refresh_token: first.refresh_token });
    assert.equal(replay.status, 401, `replaying the superseded refresh token: ${JSON.stringify(replay.body)}`);
    assert.equal((await call("GET", "/_matrix/client/v3/account/whoami", retry.body.access_token as string)).status, 200, "the owner's session survives the replay attempt");
    // Using the successor refresh token also retires its predecessor.
    const r2 = await call("POST", "/_matrix/client/v3/refresh", undefined, { refresh_token: retry.body.refresh_token });
    assert.equal(r2.status, 200);
    const r3 = await call("POST", "/_matrix/client/v3/refresh", undefined, { refresh_token: r2.body.refresh_token });
    assert.equal(r3.status, 200);
    assert.equal((await call("POST", "/_matrix/client/v3/refresh", undefined, { refresh_token: retry.body.refresh_token })).status, 401, "two generations back is dead");
    assert.equal((await call("GET", "/_matrix/client/v3/account/whoami", r3.body.access_token as string)).status, 200);
  });

  test("a deactivated user is dead on every path: password in every spelling, old access tokens, refresh tokens old and new, enrollment codes, admin resets", async () => {
    const userId = await server().createUser("gesperrt");
    const sn = server().config.serverName;
    const phone = await server().login("gesperrt", TEST_PASSWORD, { refresh_token: true });
    const tablet = await server().login("gesperrt", TEST_PASSWORD, { refresh_token: true });
    const plain = await server().login("gesperrt");
    // The tablet has refreshed once: its previous refresh token is still valid until the new pair is used.
    const rotated = await call("POST", "/_matrix/client/v3/refresh", undefined, { refresh_token: tablet.refresh_token });
    assert.equal(rotated.status, 200);
    const code = await call("POST", `${ADMIN}/users/${enc(userId)}/enrollment_codes`, adminToken);
    assert.equal(code.status, 200);

    const res = await call("POST", "/_matrix/client/v3/account/deactivate", plain.access_token, { auth: passwordAuth("gesperrt", TEST_PASSWORD) });
    assert.equal(res.status, 200, JSON.stringify(res.body));

    for (const [what, token] of [["phone", phone.access_token], ["tablet (superseded)", tablet.access_token], ["tablet (rotated)", rotated.body.access_token as string], ["plain", plain.access_token]] as Array<[string, string]>) {
      const who = await call("GET", "/_matrix/client/v3/account/whoami", token);
      assert.equal(who.status, 401, `${what} access token`);
      assert.equal(who.body.errcode, "M_UNKNOWN_TOKEN", what);
      assert.equal((await call("GET", "/_matrix/client/v3/sync?timeout=0", token)).status, 401, `${what}: /sync`);
    }
    for (const [what, refresh] of [["phone", phone.refresh_token], ["tablet, before rotation", tablet.refresh_token], ["tablet, after rotation", rotated.body.refresh_token]] as Array<[string, string]>) {
      const r = await call("POST", "/_matrix/client/v3/refresh", undefined, { refresh_token: refresh });
      assert.equal(r.status, 401, `${what} refresh token: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.errcode, "M_UNKNOWN_TOKEN");
    }
    const db = server().services.storage.db;
    assert.equal((await db.selectFrom("access_tokens").select("token_hash").where("user_id", "=", userId).execute()).length, 0, "no access token rows remain");
    assert.equal((await db.selectFrom("refresh_tokens").select("token_hash").where("user_id", "=", userId).execute()).length, 0, "no refresh token rows remain");
    assert.equal((await db.selectFrom("devices").select("device_id").where("user_id", "=", userId).execute()).length, 0, "no devices remain");

    const wrongPassword = await rawLogin(server(), "gesperrt", "falsches Passwort");
    const spellings: Array<[string, Json]> = [
      ["localpart", loginBody("gesperrt", TEST_PASSWORD)],
      ["full user id", loginBody(userId, TEST_PASSWORD)],
      ["upper case", loginBody("GESPERRT", TEST_PASSWORD)],
      ["user id in upper case", loginBody(`@GESPERRT:${sn}`, TEST_PASSWORD)],
      ["legacy `user` field", { type: "m.login.password", user: "gesperrt", password: TEST_PASSWORD }],
      ["with an existing device id", loginBody("gesperrt", TEST_PASSWORD, { device_id: phone.device_id })],
      ["with the enrollment code", loginBody("gesperrt", TEST_PASSWORD, { "org.revier.enrollment_code": code.body.code })],
    ];
    for (const [what, body] of spellings) {
      const r = await call("POST", "/_matrix/client/v3/login", undefined, body);
      assert.equal(r.status, 403, `${what}: ${r.status} ${JSON.stringify(r.body)}`);
      // The same answer as a wrong password: a deactivated account is not told apart.
      assert.deepEqual(r.body, wrongPassword.body, what);
    }

    // An admin setting a new password or unlocking does not bring the account back.
    const reset = await call("POST", `${ADMIN}/users/${enc(userId)}/password`, adminToken, { password: "ein ganz neues Passwort" });
    assert.ok(reset.status === 200 || reset.status === 400 || reset.status === 403 || reset.status === 404, `reset: ${reset.status}`);
    await call("POST", `${ADMIN}/users/${enc(userId)}/unlock`, adminToken, {});
    for (const pw of [TEST_PASSWORD, "ein ganz neues Passwort"]) assert.equal((await rawLogin(server(), "gesperrt", pw)).status, 403);
    assert.equal((await db.selectFrom("access_tokens").select("token_hash").where("user_id", "=", userId).execute()).length, 0);
    // The user id is never handed out again.
    assert.equal((await server().services.accounts.isAvailable("gesperrt")), false);
  });
});
