import { test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { api, enc } from "./support/http.js";
import { assertConformsToSpec } from "./support/spec.js";
import { TEST_PASSWORD } from "./support/server.js";
import { FakeCrossSigning, FakeDevice, passwordAuth } from "./support/crypto-clients.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const MEGOLM_BACKUP = "m.megolm_backup.v1.curve25519-aes-sha2";

describeEachDatabase("end-to-end encryption over HTTP", ({ server, replace }) => {
  interface Login {
    user_id: string;
    access_token: string;
    device_id: string;
  }

  async function user(localpart: string, deviceName?: string): Promise<Login> {
    if (!(await server().services.accounts.get(`@${localpart}:${server().config.serverName}`))) await server().createUser(localpart);
    return server().login(localpart, TEST_PASSWORD, deviceName ? { initial_device_display_name: deviceName } : {});
  }

  function call(method: string, path: string, token: string, body?: unknown) {
    return api<Json>(server().url, method, path, { token, ...(body !== undefined ? { body } : {}) });
  }

  async function sync(token: string, since?: string): Promise<Json> {
    const res = await call("GET", `/_matrix/client/v3/sync?timeout=0${since ? `&since=${since}` : ""}`, token);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body;
  }

  async function upload(who: Login, body: Json) {
    return call("POST", "/_matrix/client/v3/keys/upload", who.access_token, body);
  }

  async function query(who: Login, users: Record<string, string[]>) {
    const res = await call("POST", "/_matrix/client/v3/keys/query", who.access_token, { device_keys: users });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assertConformsToSpec("POST", "/_matrix/client/v3/keys/query", 200, res.body);
    return res.body;
  }

  async function claim(who: Login, request: Record<string, Record<string, string>>) {
    const res = await call("POST", "/_matrix/client/v3/keys/claim", who.access_token, { one_time_keys: request });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body;
  }

  async function newDevice(localpart: string, deviceName?: string): Promise<{ login: Login; device: FakeDevice }> {
    const login = await user(localpart, deviceName);
    return { login, device: new FakeDevice(login.user_id, login.device_id) };
  }

  async function sharedRoom(creator: Login, others: Login[]): Promise<string> {
    const r = await call("POST", "/_matrix/client/v3/createRoom", creator.access_token, { preset: "public_chat" });
    const roomId = r.body.room_id as string;
    for (const o of others) assert.equal((await call("POST", `/_matrix/client/v3/join/${enc(roomId)}`, o.access_token, {})).status, 200);
    return roomId;
  }

  test("keys/upload stores device, one-time and fallback keys; keys/query returns them with the display name", async () => {
    const { login: ute, device } = await newDevice("ute", "Streifenwagen 12");
    const vera = await user("vera");
    const res = await upload(ute, { device_keys: device.deviceKeys(), one_time_keys: device.oneTimeKeys(5), fallback_keys: device.fallbackKey() });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assertConformsToSpec("POST", "/_matrix/client/v3/keys/upload", 200, res.body);
    assert.equal(res.body.one_time_key_counts.signed_curve25519, 5);

    const unknown = `@niemand:${server().config.serverName}`;
    const q = await query(vera, { [ute.user_id]: [], [unknown]: [], "@someone:elsewhere.example": [] });
    assert.deepEqual(q.device_keys[ute.user_id][ute.device_id], { ...device.deviceKeys(), unsigned: { device_display_name: "Streifenwagen 12" } });
    assert.equal(q.device_keys[unknown], undefined, "an unknown local user has no entry");
    assert.ok(q.failures["elsewhere.example"], "an unreachable server is listed in failures");
    const one = await query(vera, { [ute.user_id]: ["NOSUCHDEVICE"] });
    assert.deepEqual(one.device_keys[ute.user_id], {});

    const s = await sync(ute.access_token);
    assert.equal(s.device_one_time_keys_count.signed_curve25519, 5);
    assert.deepEqual(s.device_unused_fallback_key_types, ["signed_curve25519"]);

    // Sending the same keys again (a retry after a lost response) is accepted and stores nothing new.
    const again = await upload(ute, { device_keys: device.deviceKeys() });
    assert.equal(again.status, 200);
    assert.equal(again.body.one_time_key_counts.signed_curve25519, 5);
  });

  test("malformed, oversized or foreign key uploads are refused and change nothing", async () => {
    const { login: willi, device } = await newDevice("willi");
    const otherUser = await user("xenia");
    assert.equal((await upload(willi, { device_keys: device.deviceKeys(), one_time_keys: device.oneTimeKeys(2), fallback_keys: device.fallbackKey() })).status, 200);
    const before = await query(otherUser, { [willi.user_id]: [] });
    const countsBefore = (await upload(willi, {})).body.one_time_key_counts;

    const stranger = new FakeDevice(willi.user_id, "OTHERDEVICE");
    const impostor = new FakeDevice(willi.user_id, willi.device_id);
    const resign = (keys: Json) => device.ed25519.sign({ ...keys, signatures: {} }, willi.user_id, device.keyId);
    const big = "A".repeat(20_000);
    const tooMany = device.oneTimeKeys(201);
    const twoFallbacks = { ...device.fallbackKey(), ...device.fallbackKey() };
    const cases: Array<[string, Json, number, string]> = [
      ["user id of someone else", { device_keys: new FakeDevice(otherUser.user_id, willi.device_id).deviceKeys() }, 400, "M_INVALID_PARAM"],
      ["device id of another device", { device_keys: stranger.deviceKeys() }, 400, "M_INVALID_PARAM"],
      ["algorithms not a list", { device_keys: resign({ ...device.deviceKeys(), algorithms: "m.megolm.v1.aes-sha2" }) }, 400, "M_BAD_JSON"],
      ["a key that is a number", { device_keys: resign({ ...device.deviceKeys(), keys: { [`ed25519:${willi.device_id}`]: 42 } }) }, 400, "M_BAD_JSON"],
      ["a key that is not base64", { device_keys: resign({ ...device.deviceKeys(), keys: { ...device.deviceKeys().keys, [`curve25519:${willi.device_id}`]: "not a key!" } }) }, 400, "M_BAD_JSON"],
      ["device_keys as a list", { device_keys: [device.deviceKeys()] }, 400, "M_BAD_JSON"],
      ["an unsigned device key", { device_keys: { ...device.deviceKeys(), signatures: {} } }, 400, "M_INVALID_SIGNATURE"],
      ["different identity keys for this device", { device_keys: impostor.deviceKeys() }, 400, "M_INVALID_PARAM"],
      ["device_keys over 16 KiB", { device_keys: resign({ ...device.deviceKeys(), padding: big }) }, 400, "M_BAD_JSON"],
      ["a signed one-time key given as a bare string", { one_time_keys: { "signed_curve25519:AAAAAQ": device.curve25519 } }, 400, "M_BAD_JSON"],
      ["a one-time key signed by another device", { one_time_keys: stranger.oneTimeKeys(1) }, 400, "M_INVALID_SIGNATURE"],
      ["a one-time key with a forged signature", { one_time_keys: impostor.oneTimeKeys(1) }, 400, "M_INVALID_SIGNATURE"],
      ["201 one-time keys in one upload", { one_time_keys: tooMany }, 400, "M_BAD_JSON"],
      ["two fallback keys of one algorithm", { fallback_keys: twoFallbacks }, 400, "M_BAD_JSON"],
      ["one_time_keys as a string", { one_time_keys: "keys" }, 400, "M_BAD_JSON"],
      // Good one-time keys next to bad device keys: the whole upload is refused, the keys too.
      ["good one-time keys with bad device keys", { one_time_keys: device.oneTimeKeys(3), device_keys: stranger.deviceKeys() }, 400, "M_INVALID_PARAM"],
    ];
    for (const [what, body, status, errcode] of cases) {
      const res = await upload(willi, body);
      assert.equal(res.status, status, `${what}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.errcode, errcode, `${what}: ${JSON.stringify(res.body)}`);
    }
    // A one-time key id may not be reused for a different key.
    const first = device.oneTimeKeys(1);
    const existingOtkName = Object.keys(first)[0]!;
    assert.equal((await upload(willi, { one_time_keys: first })).status, 200);
    assert.equal((await upload(willi, { one_time_keys: first })).status, 200, "the same key again is fine");
    const reuse = { [existingOtkName]: device.ed25519.sign({ key: device.curve25519 }, willi.user_id, device.keyId) };
    const reused = await upload(willi, { one_time_keys: reuse });
    assert.equal(reused.status, 400);
    const raw = await api<Json>(server().url, "POST", "/_matrix/client/v3/keys/upload", { token: willi.access_token, rawBody: "[1,2,3]", headers: { "content-type": "application/json" } });
    assert.equal(raw.status, 400);

    const after = await query(otherUser, { [willi.user_id]: [] });
    assert.deepEqual(after.device_keys, before.device_keys, "stored device keys are unchanged");
    const countsAfter = (await upload(willi, {})).body.one_time_key_counts;
    assert.deepEqual(countsAfter, { ...countsBefore, signed_curve25519: countsBefore.signed_curve25519 + 1 }, "only the one accepted key was added");
  });

  test("one-time keys are claimed oldest first, then the fallback key, which is reused and reported as used", async () => {
    const { login: xaver, device } = await newDevice("xaver");
    const yvonne = await user("yvonne");
    const batch1 = device.oneTimeKeys(2);
    const batch2 = device.oneTimeKeys(1);
    const fallback = device.fallbackKey();
    assert.equal((await upload(xaver, { device_keys: device.deviceKeys(), one_time_keys: batch1, fallback_keys: fallback })).status, 200);
    assert.equal((await upload(xaver, { one_time_keys: batch2 })).status, 200);

    const want = { [xaver.user_id]: { [xaver.device_id]: "signed_curve25519" } };
    const got: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await claim(yvonne, want);
      assertConformsToSpec("POST", "/_matrix/client/v3/keys/claim", 200, res);
      const keys = res.one_time_keys[xaver.user_id][xaver.device_id];
      assert.equal(Object.keys(keys).length, 1);
      const [name, key] = Object.entries(keys)[0]!;
      got.push(name);
      const uploaded = { ...batch1, ...batch2, ...fallback }[name];
      assert.deepEqual(key, uploaded, "the key comes back exactly as uploaded");
    }
    assert.deepEqual(new Set(got.slice(0, 2)), new Set(Object.keys(batch1)), "the first upload's keys go first");
    assert.equal(got[2], Object.keys(batch2)[0]);
    assert.equal(got[3], Object.keys(fallback)[0], "then the fallback key");
    assert.equal(got[4], Object.keys(fallback)[0], "the fallback key is handed out again");

    const s = await sync(xaver.access_token);
    assert.equal(s.device_one_time_keys_count.signed_curve25519, 0);
    assert.deepEqual(s.device_unused_fallback_key_types, [], "a used fallback key is no longer listed as unused");
    assert.equal((await upload(xaver, { fallback_keys: device.fallbackKey() })).status, 200);
    assert.deepEqual((await sync(xaver.access_token)).device_unused_fallback_key_types, ["signed_curve25519"]);

    const none = await claim(yvonne, { [xaver.user_id]: { NOSUCHDEVICE: "signed_curve25519" }, [`@niemand:${server().config.serverName}`]: { X: "signed_curve25519" }, "@a:elsewhere.example": { X: "signed_curve25519" } });
    assert.deepEqual(none.one_time_keys, {});
    assert.ok(none.failures["elsewhere.example"]);
  });

  test("100 concurrent claims against one device never hand out the same one-time key twice", async () => {
    const { login: zora, device } = await newDevice("zora");
    const claimer = await user("yusuf");
    const otks = device.oneTimeKeys(50);
    const fallback = device.fallbackKey();
    assert.equal((await upload(zora, { device_keys: device.deviceKeys(), one_time_keys: otks, fallback_keys: fallback })).status, 200);
    const results = await Promise.all(Array.from({ length: 100 }, () => claim(claimer, { [zora.user_id]: { [zora.device_id]: "signed_curve25519" } })));
    const names = results.map((r) => Object.keys(r.one_time_keys[zora.user_id]?.[zora.device_id] ?? {})[0]);
    const oneTime = names.filter((n) => n !== undefined && n in otks);
    const fallbacks = names.filter((n) => n === Object.keys(fallback)[0]);
    assert.equal(new Set(oneTime).size, oneTime.length, "no one-time key was handed out twice");
    assert.equal(oneTime.length, 50, "every one-time key was handed out once");
    assert.equal(fallbacks.length, 50, "the other claims got the fallback key");
    assert.equal((await upload(zora, {})).body.one_time_key_counts.signed_curve25519, 0);
  });

  test("a long-poll reports the key counts another user's claims lowered and the device's uploads raised", async () => {
    const { login: ida, device } = await newDevice("ida");
    const jonas = await user("jonas");
    assert.equal((await upload(ida, { device_keys: device.deviceKeys(), one_time_keys: device.oneTimeKeys(3), fallback_keys: device.fallbackKey() })).status, 200);
    const roomId = await sharedRoom(jonas, [ida]);
    // The server remembers what this answer found (see DeviceSyncCache); claims wake nobody.
    let since = (await sync(ida.access_token)).next_batch as string;
    assert.equal((await sync(ida.access_token, since)).device_one_time_keys_count.signed_curve25519, 3);

    let n = 0;
    // A message wakes ida's long-poll; its answer carries the counts as they are now.
    const wokenBy = async (act: () => Promise<void>): Promise<Json> => {
      const poll = call("GET", `/_matrix/client/v3/sync?timeout=10000&since=${since}`, ida.access_token);
      await new Promise((r) => setTimeout(r, 100));
      await act();
      const send = await call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/w${++n}`, jonas.access_token, { msgtype: "m.text", body: `Lage ${n}` });
      assert.equal(send.status, 200);
      let body = (await poll).body as Json;
      while (!(body.rooms?.join?.[roomId]?.timeline?.events ?? []).some((e: Json) => e.content?.body === `Lage ${n}`)) body = await sync(ida.access_token, body.next_batch);
      since = body.next_batch;
      return body;
    };
    const want = { [ida.user_id]: { [ida.device_id]: "signed_curve25519" } };

    let body = await wokenBy(async () => void (await claim(jonas, want)));
    assert.equal(body.device_one_time_keys_count.signed_curve25519, 2, "a claim by someone else lowers the count");
    body = await wokenBy(async () => void assert.equal((await upload(ida, { one_time_keys: device.oneTimeKeys(4) })).status, 200));
    assert.equal(body.device_one_time_keys_count.signed_curve25519, 6, "the device's own upload raises it");
    body = await wokenBy(async () => {
      for (let i = 0; i < 7; i++) await claim(jonas, want);
    });
    assert.equal(body.device_one_time_keys_count.signed_curve25519, 0);
    assert.deepEqual(body.device_unused_fallback_key_types, [], "the fallback key went out and is no longer unused");
    // Nothing changed since: the next answer, woken by a message alone, says the same.
    body = await wokenBy(async () => undefined);
    assert.equal(body.device_one_time_keys_count.signed_curve25519, 0);
    assert.deepEqual(body.device_unused_fallback_key_types, []);
  });

  test("device list changes reach everyone who shares a room, in /sync and /keys/changes", async () => {
    const anton = await user("anton");
    const berta = await user("berta");
    const conny = await user("conny");
    const roomId = await sharedRoom(anton, [berta]);
    const t0 = (await sync(berta.access_token)).next_batch as string;
    const antonT0 = (await sync(anton.access_token)).next_batch as string;

    // Anton signs in on a second device and publishes its keys.
    const { login: anton2, device } = await newDevice("anton");
    assert.equal((await upload(anton2, { device_keys: device.deviceKeys() })).status, 200);
    const s1 = await sync(berta.access_token, t0);
    assert.deepEqual(s1.device_lists, { changed: [anton.user_id], left: [] });
    const changes = await call("GET", `/_matrix/client/v3/keys/changes?from=${t0}&to=${s1.next_batch}`, berta.access_token);
    assert.equal(changes.status, 200);
    assertConformsToSpec("GET", "/_matrix/client/v3/keys/changes", 200, changes.body);
    assert.deepEqual(changes.body, { changed: [anton.user_id], left: [] });
    // Anton's first device hears of its own user's new device.
    assert.ok((await sync(anton.access_token, antonT0)).device_lists.changed.includes(anton.user_id));

    // A user who joins a shared room is new to track; one who leaves the last shared room is gone.
    assert.equal((await call("POST", `/_matrix/client/v3/join/${enc(roomId)}`, conny.access_token, {})).status, 200);
    const s2 = await sync(berta.access_token, s1.next_batch);
    assert.deepEqual(s2.device_lists, { changed: [conny.user_id], left: [] });
    assert.equal((await call("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/leave`, conny.access_token, {})).status, 200);
    const s3 = await sync(berta.access_token, s2.next_batch);
    assert.deepEqual(s3.device_lists, { changed: [], left: [conny.user_id] });
    // Conny no longer shares a room with Berta: her key changes are none of Berta's business.
    const { login: conny2, device: cd } = await newDevice("conny");
    assert.equal((await upload(conny2, { device_keys: cd.deviceKeys() })).status, 200);
    const s4 = await sync(berta.access_token, s3.next_batch);
    assert.deepEqual(s4.device_lists, { changed: [], left: [] });

    const bad = await call("GET", "/_matrix/client/v3/keys/changes?from=garbage&to=s1", berta.access_token);
    assert.equal(bad.status, 400);
  });

  test("cross-signing: the first upload needs no UIA, replacing keys does; signatures are checked per key", async () => {
    const { login: dora, device } = await newDevice("dora");
    const emil = await user("emil");
    const gustav = await user("gustav");
    assert.equal((await upload(dora, { device_keys: device.deviceKeys() })).status, 200);
    const cs = new FakeCrossSigning(dora.user_id);
    const first = await call("POST", "/_matrix/client/v3/keys/device_signing/upload", dora.access_token, cs.upload());
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assertConformsToSpec("POST", "/_matrix/client/v3/keys/device_signing/upload", 200, first.body);
    // Repeating exactly the published keys is idempotent and needs no UIA either.
    assert.equal((await call("POST", "/_matrix/client/v3/keys/device_signing/upload", dora.access_token, cs.upload())).status, 200);

    const own = await query(dora, { [dora.user_id]: [] });
    assert.deepEqual(own.master_keys[dora.user_id], cs.masterKey());
    assert.deepEqual(own.self_signing_keys[dora.user_id], cs.selfSigningKey());
    assert.deepEqual(own.user_signing_keys[dora.user_id], cs.userSigningKey());
    const seen = await query(emil, { [dora.user_id]: [] });
    assert.deepEqual(seen.master_keys[dora.user_id], cs.masterKey());
    assert.equal(seen.user_signing_keys[dora.user_id], undefined, "the user-signing key is only shown to its owner");

    // Replacing the keys needs the password.
    const next = new FakeCrossSigning(dora.user_id);
    const challenge = await call("POST", "/_matrix/client/v3/keys/device_signing/upload", dora.access_token, next.upload());
    assert.equal(challenge.status, 401);
    assert.deepEqual(challenge.body.flows, [{ stages: ["m.login.password"] }]);
    const replaced = await call("POST", "/_matrix/client/v3/keys/device_signing/upload", dora.access_token, { ...next.upload(), auth: { ...passwordAuth(dora.user_id), session: challenge.body.session } });
    assert.equal(replaced.status, 200, JSON.stringify(replaced.body));
    assert.deepEqual((await query(emil, { [dora.user_id]: [] })).master_keys[dora.user_id], next.masterKey());

    // A self-signing key the master key did not sign is refused, as is a key without a master key.
    const forged = { ...next.selfSigningKey(), signatures: { [dora.user_id]: { [`ed25519:${next.master.publicKey}`]: cs.master.signature(next.selfSigningKey()) } } };
    const refused = await call("POST", "/_matrix/client/v3/keys/device_signing/upload", dora.access_token, { self_signing_key: forged, auth: passwordAuth(dora.user_id) });
    assert.equal(refused.status, 400);
    assert.equal(refused.body.errcode, "M_INVALID_SIGNATURE");
    const lonely = new FakeCrossSigning(gustav.user_id);
    const noMaster = await call("POST", "/_matrix/client/v3/keys/device_signing/upload", gustav.access_token, { self_signing_key: lonely.selfSigningKey() });
    assert.equal(noMaster.status, 400);
    assert.equal(noMaster.body.errcode, "M_MISSING_PARAM");

    // The self-signing key signs Dora's device.
    const signedDevice = next.selfSigning.sign(device.deviceKeys(), dora.user_id, `ed25519:${next.selfSigning.publicKey}`);
    const sig = await call("POST", "/_matrix/client/v3/keys/signatures/upload", dora.access_token, { [dora.user_id]: { [dora.device_id]: signedDevice } });
    assert.equal(sig.status, 200);
    assertConformsToSpec("POST", "/_matrix/client/v3/keys/signatures/upload", 200, sig.body);
    assert.deepEqual(sig.body.failures, {});
    const withSig = await query(emil, { [dora.user_id]: [dora.device_id] });
    assert.equal(withSig.device_keys[dora.user_id][dora.device_id].signatures[dora.user_id][`ed25519:${next.selfSigning.publicKey}`], signedDevice.signatures[dora.user_id][`ed25519:${next.selfSigning.publicKey}`]);

    // Per-key failures: a bad signature, a key that does not exist, a signed object that differs.
    const badSig = { ...device.deviceKeys(), signatures: { [dora.user_id]: { [`ed25519:${next.selfSigning.publicKey}`]: cs.selfSigning.signature(device.deviceKeys()) } } };
    const tampered = next.selfSigning.sign({ ...device.deviceKeys(), algorithms: ["m.megolm.v1.aes-sha2"] }, dora.user_id, `ed25519:${next.selfSigning.publicKey}`);
    const mixed = await call("POST", "/_matrix/client/v3/keys/signatures/upload", dora.access_token, {
      [dora.user_id]: { [dora.device_id]: badSig, NOSUCHKEY: signedDevice },
      [emil.user_id]: { SOMEKEY: signedDevice },
    });
    assert.equal(mixed.status, 200);
    assertConformsToSpec("POST", "/_matrix/client/v3/keys/signatures/upload", 200, mixed.body);
    assert.equal(mixed.body.failures[dora.user_id][dora.device_id].errcode, "M_INVALID_SIGNATURE");
    assert.equal(mixed.body.failures[dora.user_id].NOSUCHKEY.errcode, "M_NOT_FOUND");
    assert.ok(mixed.body.failures[emil.user_id].SOMEKEY);
    const tamperedRes = await call("POST", "/_matrix/client/v3/keys/signatures/upload", dora.access_token, { [dora.user_id]: { [dora.device_id]: tampered } });
    assert.equal(tamperedRes.body.failures[dora.user_id][dora.device_id].errcode, "M_INVALID_SIGNATURE");

    // Emil verifies Dora: his user-signing key signs her master key. Only Emil sees that signature,
    // and his devices are told to look at Dora's keys again.
    const emilCs = new FakeCrossSigning(emil.user_id);
    assert.equal((await call("POST", "/_matrix/client/v3/keys/device_signing/upload", emil.access_token, emilCs.upload())).status, 200);
    const emilSince = (await sync(emil.access_token)).next_batch as string;
    const signedMaster = emilCs.userSigning.sign(next.masterKey(), emil.user_id, `ed25519:${emilCs.userSigning.publicKey}`);
    const cross = await call("POST", "/_matrix/client/v3/keys/signatures/upload", emil.access_token, { [dora.user_id]: { [next.master.publicKey]: signedMaster } });
    assert.deepEqual(cross.body.failures, {});
    const emilView = await query(emil, { [dora.user_id]: [] });
    assert.ok(emilView.master_keys[dora.user_id].signatures[emil.user_id][`ed25519:${emilCs.userSigning.publicKey}`]);
    const gustavView = await query(gustav, { [dora.user_id]: [] });
    assert.equal(gustavView.master_keys[dora.user_id].signatures?.[emil.user_id], undefined);
    assert.ok((await sync(emil.access_token, emilSince)).device_lists.changed.includes(dora.user_id));
  });

  test("to-device messages: idempotent transaction ids, `*`, exactly-once delivery, at most 100 per sync, kept across a restart", async () => {
    const hanna = await user("hanna");
    const i1 = await user("ingo");
    const i2 = await user("ingo");
    const send = async (txn: string, messages: Json, type = "m.test") => {
      const res = await call("PUT", `/_matrix/client/v3/sendToDevice/${enc(type)}/${enc(txn)}`, hanna.access_token, { messages });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assertConformsToSpec("PUT", "/_matrix/client/v3/sendToDevice/{eventType}/{txnId}", 200, res.body);
    };
    const t0 = (await sync(i1.access_token)).next_batch as string;
    const t0b = (await sync(i2.access_token)).next_batch as string;

    await send("t1", { [i1.user_id]: { [i1.device_id]: { n: 1 } } });
    await send("t1", { [i1.user_id]: { [i1.device_id]: { n: 1 } } });
    const s1 = await sync(i1.access_token, t0);
    assert.deepEqual(s1.to_device.events, [{ type: "m.test", sender: hanna.user_id, content: { n: 1 } }], "a repeated transaction is delivered once");
    // The response was lost: the client syncs again from the old token and gets the message again.
    assert.deepEqual((await sync(i1.access_token, t0)).to_device.events, s1.to_device.events);
    // Syncing on from the new token acknowledges it.
    const s2 = await sync(i1.access_token, s1.next_batch);
    assert.deepEqual(s2.to_device.events, []);
    assert.deepEqual((await sync(i2.access_token, t0b)).to_device.events, [], "the other device got nothing");

    await send("t2", { [i1.user_id]: { "*": { n: 2 } }, [`@niemand:${server().config.serverName}`]: { X: { n: 0 } } });
    const s3 = await sync(i1.access_token, s2.next_batch);
    const s3b = await sync(i2.access_token, t0b);
    assert.deepEqual(s3.to_device.events.map((e: Json) => e.content.n), [2]);
    assert.deepEqual(s3b.to_device.events.map((e: Json) => e.content.n), [2]);

    // 250 waiting messages arrive 100 at a time, in order; one sent meanwhile queues behind them.
    for (let n = 0; n < 250; n++) await send(`bulk${n}`, { [i1.user_id]: { [i1.device_id]: { n } } });
    const b1 = await sync(i1.access_token, s3.next_batch);
    await send("late", { [i1.user_id]: { [i1.device_id]: { n: 1000 } } });
    const b2 = await sync(i1.access_token, b1.next_batch);
    const b3 = await sync(i1.access_token, b2.next_batch);
    const b4 = await sync(i1.access_token, b3.next_batch);
    const seq = (s: Json) => s.to_device.events.map((e: Json) => e.content.n as number);
    assert.equal(seq(b1).length, 100);
    assert.equal(seq(b2).length, 100);
    assert.deepEqual([...seq(b1), ...seq(b2), ...seq(b3)], [...Array.from({ length: 250 }, (_, n) => n), 1000]);
    assert.deepEqual(seq(b4), []);

    // A message waiting for a device survives a restart of the server.
    await send("restart", { [i1.user_id]: { [i1.device_id]: { n: 2000 } } });
    replace(await server().restart());
    assert.deepEqual(seq(await sync(i1.access_token, b4.next_batch)), [2000]);
  });

  test("key backup: versions, the replacement rules, etag and count, and the wrong version", async () => {
    const jana = await user("jana");
    const room = `!raum:${server().config.serverName}`;
    const kb = (path: string) => `/_matrix/client/v3/room_keys/${path}`;
    const none = await call("GET", kb("version"), jana.access_token);
    assert.equal(none.status, 404);
    assert.equal(none.body.errcode, "M_NOT_FOUND");
    assertConformsToSpec("GET", "/_matrix/client/v3/room_keys/version", 404, none.body);

    const authData = { public_key: "abcdefg", signatures: {} };
    const created = await call("POST", kb("version"), jana.access_token, { algorithm: MEGOLM_BACKUP, auth_data: authData });
    assert.equal(created.status, 200);
    assertConformsToSpec("POST", "/_matrix/client/v3/room_keys/version", 200, created.body);
    const v1 = created.body.version as string;
    const info = await call("GET", kb("version"), jana.access_token);
    assertConformsToSpec("GET", "/_matrix/client/v3/room_keys/version", 200, info.body);
    assert.deepEqual(info.body, { algorithm: MEGOLM_BACKUP, auth_data: authData, count: 0, etag: info.body.etag, version: v1 });
    const byVersion = await call("GET", kb(`version/${v1}`), jana.access_token);
    assertConformsToSpec("GET", "/_matrix/client/v3/room_keys/version/{version}", 200, byVersion.body);

    const key = (fmi: number, fc: number, verified: boolean, tag: string) => ({ first_message_index: fmi, forwarded_count: fc, is_verified: verified, session_data: { ephemeral: tag, ciphertext: tag, mac: tag } });
    const putSession = async (data: Json, version = v1) => call("PUT", kb(`keys/${enc(room)}/s1?version=${version}`), jana.access_token, data);
    const stored = async () => (await call("GET", kb(`keys/${enc(room)}/s1?version=${v1}`), jana.access_token)).body.session_data.mac as string;

    const p1 = await putSession(key(5, 1, false, "first"));
    assert.equal(p1.status, 200);
    assertConformsToSpec("PUT", "/_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}", 200, p1.body);
    assert.equal(p1.body.count, 1);
    const steps: Array<[Json, string, boolean]> = [
      [key(6, 0, false, "later index"), "first", false],
      [key(3, 2, false, "lower index"), "lower index", true],
      [key(10, 5, true, "verified"), "verified", true],
      [key(0, 0, false, "unverified but complete"), "verified", false],
      [key(10, 4, true, "fewer hops"), "fewer hops", true],
      [key(10, 4, true, "same"), "fewer hops", false],
    ];
    let etag = p1.body.etag as string;
    for (const [data, expect, changes] of steps) {
      const res = await putSession(data);
      assert.equal(res.status, 200);
      assert.equal(await stored(), expect, `after uploading "${data.session_data.mac}"`);
      assert.equal(res.body.etag !== etag, changes, `etag changes only when a key is replaced ("${data.session_data.mac}")`);
      etag = res.body.etag;
    }

    const many = await call("PUT", kb(`keys?version=${v1}`), jana.access_token, { rooms: { [room]: { sessions: { s2: key(0, 0, false, "s2") } }, [`!zwei:${server().config.serverName}`]: { sessions: { s3: key(0, 0, false, "s3") } } } });
    assertConformsToSpec("PUT", "/_matrix/client/v3/room_keys/keys", 200, many.body);
    assert.equal(many.body.count, 3);
    const perRoom = await call("PUT", kb(`keys/${enc(room)}?version=${v1}`), jana.access_token, { sessions: { s4: key(0, 0, false, "s4") } });
    assertConformsToSpec("PUT", "/_matrix/client/v3/room_keys/keys/{roomId}", 200, perRoom.body);
    assert.equal(perRoom.body.count, 4);
    const all = await call("GET", kb(`keys?version=${v1}`), jana.access_token);
    assertConformsToSpec("GET", "/_matrix/client/v3/room_keys/keys", 200, all.body);
    assert.deepEqual(Object.keys(all.body.rooms[room].sessions).sort(), ["s1", "s2", "s4"]);
    const roomKeys = await call("GET", kb(`keys/${enc(room)}?version=${v1}`), jana.access_token);
    assertConformsToSpec("GET", "/_matrix/client/v3/room_keys/keys/{roomId}", 200, roomKeys.body);
    const emptyRoom = await call("GET", kb(`keys/${enc(`!leer:${server().config.serverName}`)}?version=${v1}`), jana.access_token);
    assert.deepEqual(emptyRoom.body, { sessions: {} });
    const oneKey = await call("GET", kb(`keys/${enc(room)}/s1?version=${v1}`), jana.access_token);
    assertConformsToSpec("GET", "/_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}", 200, oneKey.body);
    const missingKey = await call("GET", kb(`keys/${enc(room)}/nope?version=${v1}`), jana.access_token);
    assert.equal(missingKey.status, 404);
    assert.equal((await call("GET", kb(`keys/${enc(room)}/s1`), jana.access_token)).body.errcode, "M_MISSING_PARAM");

    // A newer backup takes over; writing to the old one is refused with the current version.
    const v2 = (await call("POST", kb("version"), jana.access_token, { algorithm: MEGOLM_BACKUP, auth_data: authData })).body.version as string;
    assert.notEqual(v2, v1);
    const wrong = await putSession(key(0, 0, true, "too late"), v1);
    assert.equal(wrong.status, 403);
    assertConformsToSpec("PUT", "/_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}", 403, wrong.body);
    assert.deepEqual(wrong.body, { errcode: "M_WRONG_ROOM_KEYS_VERSION", error: wrong.body.error, current_version: v2 });
    assert.equal((await call("GET", kb(`keys?version=${v1}`), jana.access_token)).status, 200, "an older backup can still be read");

    const upd = await call("PUT", kb(`version/${v2}`), jana.access_token, { algorithm: MEGOLM_BACKUP, auth_data: { ...authData, extra: 1 }, version: v2 });
    assert.equal(upd.status, 200);
    assertConformsToSpec("PUT", "/_matrix/client/v3/room_keys/version/{version}", 200, upd.body);
    assert.equal((await call("GET", kb("version"), jana.access_token)).body.auth_data.extra, 1);
    const badAlg = await call("PUT", kb(`version/${v2}`), jana.access_token, { algorithm: "org.example.other", auth_data: authData });
    assert.equal(badAlg.status, 400);
    assertConformsToSpec("PUT", "/_matrix/client/v3/room_keys/version/{version}", 400, badAlg.body);
    assert.equal((await call("PUT", kb(`version/${v2}`), jana.access_token, { algorithm: MEGOLM_BACKUP, auth_data: authData, version: v1 })).status, 400);

    const delOne = await call("DELETE", kb(`keys/${enc(room)}/s1?version=${v1}`), jana.access_token);
    assertConformsToSpec("DELETE", "/_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}", 200, delOne.body);
    assert.equal(delOne.body.count, 3);
    const delRoom = await call("DELETE", kb(`keys/${enc(room)}?version=${v1}`), jana.access_token);
    assertConformsToSpec("DELETE", "/_matrix/client/v3/room_keys/keys/{roomId}", 200, delRoom.body);
    assert.equal(delRoom.body.count, 1);
    const delAll = await call("DELETE", kb(`keys?version=${v1}`), jana.access_token);
    assertConformsToSpec("DELETE", "/_matrix/client/v3/room_keys/keys", 200, delAll.body);
    assert.equal(delAll.body.count, 0);

    const delV2 = await call("DELETE", kb(`version/${v2}`), jana.access_token);
    assert.equal(delV2.status, 200);
    assertConformsToSpec("DELETE", "/_matrix/client/v3/room_keys/version/{version}", 200, delV2.body);
    assert.equal((await call("DELETE", kb(`version/${v2}`), jana.access_token)).status, 200, "deleting twice succeeds");
    assert.equal((await call("GET", kb(`version/${v2}`), jana.access_token)).status, 404);
    assert.equal((await call("DELETE", kb("version/99"), jana.access_token)).status, 404);
    const v3 = (await call("POST", kb("version"), jana.access_token, { algorithm: MEGOLM_BACKUP, auth_data: authData })).body.version as string;
    assert.ok(Number(v3) > Number(v2), "a deleted version number is never handed out again");
  });

  test("removing a device deletes its keys and tells everyone who shares a room", async () => {
    const { login: k1, device: d1 } = await newDevice("karl");
    const { login: k2, device: d2 } = await newDevice("karl");
    const lena = await user("lena");
    assert.equal((await upload(k1, { device_keys: d1.deviceKeys() })).status, 200);
    assert.equal((await upload(k2, { device_keys: d2.deviceKeys(), one_time_keys: d2.oneTimeKeys(3), fallback_keys: d2.fallbackKey() })).status, 200);
    await sharedRoom(k1, [lena]);
    const since = (await sync(lena.access_token)).next_batch as string;
    assert.deepEqual(Object.keys((await query(lena, { [k1.user_id]: [] })).device_keys[k1.user_id]).sort(), [k1.device_id, k2.device_id].sort());

    const del = await call("DELETE", `/_matrix/client/v3/devices/${k2.device_id}`, k1.access_token, { auth: passwordAuth(k1.user_id) });
    assert.equal(del.status, 200, JSON.stringify(del.body));
    const dead = await call("GET", "/_matrix/client/v3/sync?timeout=0", k2.access_token);
    assert.equal(dead.status, 401);
    assert.equal(dead.body.errcode, "M_UNKNOWN_TOKEN");
    assert.equal(dead.body.soft_logout, false);

    const s = await sync(lena.access_token, since);
    assert.deepEqual(s.device_lists.changed, [k1.user_id]);
    assert.deepEqual(Object.keys((await query(lena, { [k1.user_id]: [] })).device_keys[k1.user_id]), [k1.device_id]);
    assert.deepEqual((await claim(lena, { [k1.user_id]: { [k2.device_id]: "signed_curve25519" } })).one_time_keys, {});
    const sendToGone = await call("PUT", `/_matrix/client/v3/sendToDevice/m.test/gone1`, lena.access_token, { messages: { [k1.user_id]: { [k2.device_id]: { hallo: true } } } });
    assert.equal(sendToGone.status, 200);
  });
});
