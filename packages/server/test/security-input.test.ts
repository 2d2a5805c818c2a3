/**
 * Hostile input: oversized events, deeply nested JSON, numbers outside canonical JSON, invalid
 * UTF-8 and lone surrogates. Classes: events over the spec's 64 KiB that other servers reject,
 * resource exhaustion through deep nesting (Synapse CVE-2022-31052 was unbounded recursion on
 * nested input), floats and out-of-range integers that homeservers interpret differently
 * (canonical JSON; power levels decide who may do what), and strings the UTF-8 encoder or
 * PostgreSQL silently change (a lone surrogate becomes U+FFFD, so what is stored is no longer
 * what was sent or hashed).
 */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { api, enc } from "./support/http.js";
import { assertMatrixError, createRoom } from "./security-helpers.js";

const json = { "content-type": "application/json" };

describeEachDatabase("hostile input", ({ server }) => {
  let token = "";
  let userId = "";
  let roomId = "";
  const send = (content: unknown, txn: string) => api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${txn}`, { token, body: content });
  const sendRaw = (raw: string | Buffer, txn: string) => api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${txn}`, { token, rawBody: raw, headers: json });
  let txn = 0;
  const nextTxn = () => `t${++txn}`;

  before(async () => {
    userId = await server().createUser("ida");
    token = (await server().login("ida")).access_token;
    roomId = await createRoom(server(), token, { name: "Eingabe" });
  });

  test("events over 65,536 bytes are refused, counted in bytes not characters, on every path that makes events; nothing is stored", async () => {
    const before = await server().services.stream.current();
    const roomsBefore = (await server().services.storage.db.selectFrom("rooms").select("room_id").execute()).length;
    // 22,000 × "€" is 22,000 characters but 66,000 bytes of UTF-8.
    const cases: Array<[string, () => Promise<{ status: number; body: Record<string, unknown> }>]> = [
      ["message of 70,000 ASCII bytes", () => send({ msgtype: "m.text", body: "x".repeat(70_000) }, nextTxn())],
      ["message of 66,000 bytes in 22,000 characters", () => send({ msgtype: "m.text", body: "€".repeat(22_000) }, nextTxn())],
      ["message made big by many keys", () => send(Object.fromEntries(Array.from({ length: 7000 }, (_, i) => [`k${i}`, "abcdef"])), nextTxn())],
      ["state event", () => api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.topic`, { token, body: { topic: "t".repeat(70_000) } })],
      ["state event with a long state key and content", () => api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/org.example.x/${"k".repeat(200)}`, { token, body: { v: "€".repeat(22_000) } })],
      ["initial state of a new room", () => api(server().url, "POST", "/_matrix/client/v3/createRoom", { token, body: { initial_state: [{ type: "m.room.topic", state_key: "", content: { topic: "€".repeat(22_000) } }] } })],
      ["creation content of a new room", () => api(server().url, "POST", "/_matrix/client/v3/createRoom", { token, body: { creation_content: { pad: "x".repeat(70_000) } } })],
    ];
    for (const [what, run] of cases) {
      const res = await run();
      assert.equal(res.status, 413, `${what}: ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
      assert.equal(res.body.errcode, "M_TOO_LARGE", what);
    }
    assert.equal(await server().services.stream.current(), before, "no event was written");
    assert.equal((await server().services.storage.db.selectFrom("rooms").select("room_id").execute()).length, roomsBefore, "no room was created");
    // The limit is the limit, not lower: a 60,000-byte message is fine.
    const ok = await send({ msgtype: "m.text", body: "y".repeat(60_000) }, nextTxn());
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
  });

  test("deeply nested JSON is refused with M_BAD_JSON before parsing, on authenticated and anonymous endpoints, and the server stays up", async () => {
    const deep = (n: number, open = "[", close = "]") => `${open.repeat(n)}${close.repeat(n)}`;
    const nestedObject = (n: number) => `${'{"a":'.repeat(n)}1${"}".repeat(n)}`;
    const targets: Array<[string, string, boolean]> = [
      ["PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${nextTxn()}`, true],
      ["PUT", `/_matrix/client/v3/user/${enc(userId)}/account_data/org.example.deep`, true],
      ["POST", "/_matrix/client/v3/keys/upload", true],
      ["POST", "/_matrix/client/v3/user/" + enc(userId) + "/filter", true],
      ["PUT", "/_revier/admin/v1/policy", true],
      ["POST", "/_matrix/client/v3/login", false],
      ["POST", "/_matrix/client/v3/refresh", false],
    ];
    for (const [method, p, auth] of targets) {
      for (const [label, body] of [
        ["65 levels of arrays", `{"x":${deep(64)}}`],
        ["65 levels of objects", nestedObject(65)],
        ["500,000 open brackets", "[".repeat(500_000)],
        ["brackets hidden after a long string", `{"s":"${"\\\"".repeat(1000)}","x":${deep(200)}}`],
      ] as Array<[string, string]>) {
        const res = await api(server().url, method, p, { ...(auth ? { token } : {}), rawBody: body, headers: json });
        assert.equal(res.status, 400, `${method} ${p} ${label}: ${res.status}`);
        assert.equal(res.body.errcode, "M_BAD_JSON", `${method} ${p} ${label}`);
        assertMatrixError(res, `${method} ${p} ${label}`);
      }
    }
    // JSON carried in query parameters (filters) is limited by the URL length; deep nesting there
    // is either ignored (unknown keys) or refused (wrong types), never a crash.
    for (const inner of [nestedObject(900), `{"types":${deep(1500)}}`, `{"not_senders":${deep(1500, "[", "]")}}`]) {
      const deepFilter = encodeURIComponent(`{"room":{"timeline":${inner}}}`);
      for (const p of [`/_matrix/client/v3/sync?timeout=0&filter=${deepFilter}`, `/_matrix/client/v3/rooms/${enc(roomId)}/messages?filter=${encodeURIComponent(inner)}`]) {
        const res = await api(server().url, "GET", p, { token });
        assert.ok(res.status === 200 || res.status === 400, `${p.slice(0, 60)}: ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
        if (res.status === 400) assertMatrixError(res, p.slice(0, 60));
      }
    }
    // 64 levels are within the limit; the event path applies its own, lower bound without a 500.
    const atLimit = await sendRaw(`{"msgtype":"m.text","body":"tief","x":${deep(62)}}`, nextTxn());
    assert.ok(atLimit.status === 200 || atLimit.status === 400, `${atLimit.status} ${JSON.stringify(atLimit.body)}`);
    assert.equal((await api(server().url, "GET", "/health")).status, 200);
  });

  test("numbers outside canonical JSON (beyond ±(2^53-1), floats, exponents to infinity) are refused in events; the boundary is accepted", async () => {
    const refused: Array<[string, string]> = [
      ["2^53", '{"msgtype":"m.text","body":"n","n":9007199254740992}'],
      ["-(2^53)", '{"msgtype":"m.text","body":"n","n":-9007199254740992}'],
      ["2^53+1 (parses to 2^53)", '{"msgtype":"m.text","body":"n","n":9007199254740993}'],
      ["a float", '{"msgtype":"m.text","body":"n","n":1.5}'],
      ["1e400 (Infinity)", '{"msgtype":"m.text","body":"n","n":1e400}'],
      ["-1e400", '{"msgtype":"m.text","body":"n","n":-1e400}'],
      ["a huge integer with 400 digits", `{"msgtype":"m.text","body":"n","n":${"9".repeat(400)}}`],
      ["a float deep inside", '{"msgtype":"m.text","body":"n","a":[{"b":[0.1]}]}'],
    ];
    for (const [what, raw] of refused) {
      const res = await sendRaw(raw, nextTxn());
      assert.equal(res.status, 400, `${what}: ${res.status} ${JSON.stringify(res.body)}`);
      assert.equal(res.body.errcode, "M_BAD_JSON", what);
    }
    // Power levels are where a float or a huge integer would change who may do what.
    const pl = await api(server().url, "GET", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.power_levels`, { token });
    for (const [what, level] of [["2^53", "9007199254740992"], ["a float", "100.5"], ["1e400", "1e400"]]) {
      const raw = JSON.stringify({ ...pl.body, users: { ...(pl.body.users as object), "@mallory:localhost": 0 } }).replace('"@mallory:localhost":0', `"@mallory:localhost":${level}`);
      const res = await api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.power_levels`, { token, rawBody: raw, headers: json });
      assert.equal(res.status, 400, `power level ${what}: ${res.status} ${JSON.stringify(res.body)}`);
    }
    const current = await api(server().url, "GET", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.power_levels`, { token });
    assert.deepEqual(current.body, pl.body, "the power levels did not change");
    for (const n of ["9007199254740991", "-9007199254740991", "0", "1e2"]) {
      const ok = await sendRaw(`{"msgtype":"m.text","body":"n","n":${n}}`, nextTxn());
      assert.equal(ok.status, 200, `${n}: ${JSON.stringify(ok.body)}`);
      const ev = await api(server().url, "GET", `/_matrix/client/v3/rooms/${enc(roomId)}/event/${enc(ok.body.event_id as string)}`, { token });
      assert.equal((ev.body.content as { n: number }).n, Number(n), `${n} is stored exactly`);
    }
  });

  test("invalid UTF-8 is refused with M_NOT_JSON everywhere a body is parsed; invalid UTF-8 in the URL is refused too", async () => {
    const bad: Array<[string, Buffer]> = [
      ["a stray 0xFF byte", Buffer.from([0x7b, 0x22, 0x62, 0x6f, 0x64, 0x79, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d])],
      ["an overlong encoding of '.' (C0 AE)", Buffer.concat([Buffer.from('{"body":"'), Buffer.from([0xc0, 0xae]), Buffer.from('"}')])],
      ["a UTF-8-encoded surrogate (CESU-8, ED A0 80)", Buffer.concat([Buffer.from('{"body":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')])],
      ["a truncated sequence", Buffer.concat([Buffer.from('{"body":"'), Buffer.from([0xe2, 0x82]), Buffer.from('"}')])],
      ["a code point above U+10FFFF (F4 90 80 80)", Buffer.concat([Buffer.from('{"body":"'), Buffer.from([0xf4, 0x90, 0x80, 0x80]), Buffer.from('"}')])],
      ["Latin-1 text", Buffer.from('{"body":"Stra\xdfe"}', "latin1")],
    ];
    const targets: Array<[string, string, boolean]> = [
      ["PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${nextTxn()}`, true],
      ["PUT", `/_matrix/client/v3/user/${enc(userId)}/account_data/org.example.utf8`, true],
      ["PUT", `/_matrix/client/v3/sendToDevice/m.test/${nextTxn()}`, true],
      ["POST", "/_matrix/client/v3/login", false],
    ];
    for (const [method, p, auth] of targets) {
      for (const [what, body] of bad) {
        const res = await api(server().url, method, p, { ...(auth ? { token } : {}), rawBody: body, headers: json });
        assert.equal(res.status, 400, `${method} ${p} ${what}: ${res.status}`);
        assert.equal(res.body.errcode, "M_NOT_JSON", `${method} ${p} ${what}`);
      }
    }
    for (const seg of ["%FF", "%C0%AE", "%ED%A0%80", "%E2%82"]) {
      const res = await api(server().url, "GET", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.name${seg}`, { token });
      assert.equal(res.status, 400, `${seg}: ${res.status}`);
      assertMatrixError(res, seg);
    }
  });

  test("lone surrogates are refused, whether in events, keys, account data, profiles or to-device messages; valid pairs pass", async () => {
    const before = await server().services.stream.current();
    const refused: Array<[string, string, string, string]> = [
      ["message body", "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${nextTxn()}`, '{"msgtype":"m.text","body":"a\\ud800b"}'],
      ["a low surrogate alone", "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${nextTxn()}`, '{"msgtype":"m.text","body":"\\udc00"}'],
      ["an object key", "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${nextTxn()}`, '{"msgtype":"m.text","body":"x","\\ud83d":1}'],
      ["pair in the wrong order", "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${nextTxn()}`, '{"msgtype":"m.text","body":"\\ude00\\ud83d"}'],
      ["room name", "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.name`, '{"name":"\\ud800"}'],
      ["global account data", "PUT", `/_matrix/client/v3/user/${enc(userId)}/account_data/org.example.s`, '{"v":"\\ud800"}'],
      ["room account data", "PUT", `/_matrix/client/v3/user/${enc(userId)}/rooms/${enc(roomId)}/account_data/org.example.s`, '{"v":"\\udbff"}'],
      ["display name", "PUT", `/_matrix/client/v3/profile/${enc(userId)}/displayname`, '{"displayname":"Ida \\ud800"}'],
      ["to-device message", "PUT", `/_matrix/client/v3/sendToDevice/m.test/${nextTxn()}`, `{"messages":{"${userId}":{"*":{"v":"\\ud800"}}}}`],
      ["filter", "POST", `/_matrix/client/v3/user/${enc(userId)}/filter`, '{"event_fields":["\\ud800"]}'],
      ["room creation", "POST", "/_matrix/client/v3/createRoom", '{"name":"\\udfff"}'],
    ];
    for (const [what, method, p, raw] of refused) {
      const res = await api(server().url, method, p, { token, rawBody: raw, headers: json });
      assert.equal(res.status, 400, `${what}: ${res.status} ${JSON.stringify(res.body)}`);
      assert.ok(res.body.errcode === "M_BAD_JSON" || res.body.errcode === "M_NOT_JSON", `${what}: ${String(res.body.errcode)}`);
    }
    // A wide body: checking 300,000 array elements must not overflow the stack (a 500 would be the bug).
    for (const bad of ["\\ud800", "\\u0000"]) {
      const wide = await api(server().url, "PUT", `/_matrix/client/v3/user/${enc(userId)}/account_data/org.example.wide`, { token, rawBody: `{"a":[${"0,".repeat(300_000)}"${bad}"]}`, headers: json });
      assert.equal(wide.status, 400, `wide body with ${bad}: ${wide.status} ${JSON.stringify(wide.body).slice(0, 200)}`);
      assert.equal(wide.body.errcode, "M_BAD_JSON");
    }
    assert.equal(await server().services.stream.current(), before, "nothing was written");
    const profile = await api(server().url, "GET", `/_matrix/client/v3/profile/${enc(userId)}/displayname`, { token });
    assert.ok(!String(profile.body.displayname ?? "").includes("\ufffd"), "the display name was not changed to a replacement character");
    // An escaped valid pair is just a character outside the BMP, and round-trips exactly.
    const clef = await sendRaw('{"msgtype":"m.text","body":"\\ud834\\udd1e und 😀"}', nextTxn());
    assert.equal(clef.status, 200, JSON.stringify(clef.body));
    const ev = await api(server().url, "GET", `/_matrix/client/v3/rooms/${enc(roomId)}/event/${enc(clef.body.event_id as string)}`, { token });
    assert.equal((ev.body.content as { body: string }).body, "𝄞 und 😀");
    const data = await api(server().url, "PUT", `/_matrix/client/v3/user/${enc(userId)}/account_data/org.example.ok`, { token, rawBody: '{"v":"\\ud834\\udd1e"}', headers: json });
    assert.equal(data.status, 200);
    const back = await api(server().url, "GET", `/_matrix/client/v3/user/${enc(userId)}/account_data/org.example.ok`, { token });
    assert.equal(back.body.v, "𝄞");
  });
});
