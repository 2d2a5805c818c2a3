/**
 * Prototype pollution through JSON keys and path segments named `__proto__`, `constructor` or
 * `prototype` — the class of CVE-2022-36059 (matrix-js-sdk: events with `__proto__` keys
 * polluted Object.prototype). Found here by the fuzzer: `/keys/signatures/upload` with a user id
 * of `__proto__` made the server assign into Object.prototype, so one request by any user broke
 * every later request of the process (Buffer.from, used for event signing, failed) and could slip
 * properties into authorisation checks.
 */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { api } from "./support/http.js";
import { ALL_ROUTES } from "../src/api/index.js";
import { TEST_PASSWORD } from "./support/server.js";
import { createRoom, fillRoute, sendMessage } from "./security-helpers.js";

const MARK = "revierPolluted";

/** Bodies that would pollute if any handler copied keys into objects carelessly, at depth 1 to 3. */
function payloads(): string[] {
  const leaf = `{"${MARK}":{"signatures":{"x":{"y":"z"}},"${MARK}2":"signed_curve25519"}}`;
  const proto = `{"__proto__":${leaf}}`;
  const ctor = `{"constructor":{"prototype":${leaf}}}`;
  // The map-shaped fields handlers iterate over (keys, to-device, backups, signatures, filters).
  const fields = ["messages", "device_keys", "one_time_keys", "rooms", "sessions", "signatures", "content", "room"];
  const out = [proto, ctor, `[${proto}]`];
  for (const f of fields) out.push(`{"${f}":{"@u:localhost":${proto}}}`, `{"${f}":{"__proto__":{"valueOf":${leaf}}}}`);
  return out;
}

function prototypeSnapshot(): string {
  const names = (o: object) => Object.getOwnPropertyNames(o).sort().join(",");
  return [names(Object.prototype), names(Array.prototype), names(Function.prototype), typeof Object.prototype.valueOf, typeof Object.prototype.toString].join("|");
}

describeEachDatabase("prototype pollution", ({ server }) => {
  let token = "";
  let adminToken = "";
  let roomId = "";
  let version = "";

  before(async () => {
    await server().createUser("mallory");
    await server().services.accounts.create("polladmin", { password: TEST_PASSWORD, role: "admin" });
    token = (await server().login("mallory")).access_token;
    adminToken = (await server().login("polladmin")).access_token;
    roomId = await createRoom(server(), token, { name: "proto" });
    const backup = await api(server().url, "POST", "/_matrix/client/v3/room_keys/version", { token, body: { algorithm: "m.megolm_backup.v1.curve25519-aes-sha2", auth_data: { public_key: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ" } } });
    version = backup.body.version as string;
  });

  test("ids named __proto__ in paths are stored and read back as plain keys", async () => {
    const before = prototypeSnapshot();
    const key = { first_message_index: 0, forwarded_count: 0, is_verified: false, session_data: { ciphertext: "c", ephemeral: "e", mac: "m" } };
    const room = encodeURIComponent("!r:localhost");
    for (const [r, session] of [["__proto__", "__proto__"], [room, "__proto__"], [room, "valueOf"], [room, "constructor"]]) {
      const put = await api(server().url, "PUT", `/_matrix/client/v3/room_keys/keys/${r}/${session}?version=${version}`, { token, body: key });
      assert.ok(put.status === 200 || put.status === 400, `PUT ${r}/${session}: ${put.status} ${JSON.stringify(put.body)}`);
    }
    const all = await api(server().url, "GET", `/_matrix/client/v3/room_keys/keys?version=${version}`, { token });
    assert.equal(all.status, 200, JSON.stringify(all.body));
    const sessions = Object.keys((all.body.rooms as Record<string, { sessions: object }>)["!r:localhost"]?.sessions ?? {}).sort();
    assert.deepEqual(sessions, ["__proto__", "constructor", "valueOf"], "a session named __proto__ is returned like any other, not swallowed as a prototype");
    for (const [receiptType, eventId] of [["m.read", "__proto__"], ["__proto__", "valueOf"]]) {
      const r = await api(server().url, "POST", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/receipt/${receiptType}/${eventId}`, { token, body: {} });
      assert.ok(r.status < 500, `receipt ${receiptType}/${eventId}: ${r.status}`);
    }
    assert.equal((await api(server().url, "GET", "/_matrix/client/v3/sync?timeout=0", { token })).status, 200);
    assert.equal(prototypeSnapshot(), before);
  });

  test("no body or path segment on any route changes Object.prototype, and the server keeps working", async () => {
    const before = prototypeSnapshot();
    let requests = 0;
    const bodies = payloads();
    for (const def of ALL_ROUTES) {
      const { method, url } = def.spec;
      if (url.endsWith("/logout") || url.endsWith("/logout/all")) continue;
      const auth = url.startsWith("/_revier/admin/") ? adminToken : token;
      for (const seg of ["__proto__", "constructor", "prototype"]) {
        const p = fillRoute(url, { roomId }).replace(/\/x(?=\/|$|\?)/g, `/${seg}`);
        const res = await api(server().url, method, p, { token: auth, ...(method === "GET" ? {} : { body: {} }) });
        assert.ok(res.status < 500, `${method} ${p}: ${res.status} ${JSON.stringify(res.body)}`);
        requests++;
      }
      if (method === "GET") continue;
      for (const raw of bodies) {
        const p = fillRoute(url, { roomId });
        const res = await api(server().url, method, p, { token: auth, rawBody: raw, headers: { "content-type": "application/json" } });
        assert.ok(res.status < 500, `${method} ${p} ${raw.slice(0, 80)}: ${res.status} ${JSON.stringify(res.body)}`);
        requests++;
      }
      assert.equal(prototypeSnapshot(), before, `${method} ${url} polluted a prototype`);
    }
    assert.equal(prototypeSnapshot(), before);
    assert.equal(({} as Record<string, unknown>)[MARK], undefined);
    assert.ok(requests > 1000, `${requests} requests`);
    // Event signing (Buffer.from, canonical JSON) and reads of stored maps still work.
    const fresh = await createRoom(server(), token, { name: "danach" });
    await sendMessage(server(), token, fresh, "noch da", "after-proto");
    for (const p of ["/_matrix/client/v3/sync?timeout=0", `/_matrix/client/v3/room_keys/keys?version=${version}`, "/_matrix/client/v3/pushrules/", "/_matrix/client/v3/devices"]) {
      const res = await api(server().url, "GET", p, { token });
      assert.ok(res.status === 200 || res.status === 404, `${p}: ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
    }
  });

  test("JSON bodies with __proto__ keys or constructor.prototype are refused as a whole", async () => {
    for (const raw of ['{"__proto__":{"a":1}}', '{"x":{"y":{"__proto__":{}}}}', '{"constructor":{"prototype":{"a":1}}}', '[{"__proto__":1}]', '{"\\u005f_proto__":{"a":1}}', '{"\\u0063onstructor":{"prototype":{}}}']) {
      const res = await api(server().url, "PUT", `/_matrix/client/v3/user/${encodeURIComponent("@mallory:localhost")}/account_data/org.example.p`, { token, rawBody: raw, headers: { "content-type": "application/json" } });
      assert.equal(res.status, 400, raw);
      assert.equal(res.body.errcode, "M_BAD_JSON", raw);
    }
    // Ordinary keys that merely contain the words are fine.
    const ok = await api(server().url, "PUT", `/_matrix/client/v3/user/${encodeURIComponent("@mallory:localhost")}/account_data/org.example.p`, { token, body: { constructor: "Bauamt", proto: 1, "x__proto__": 2 } });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
  });
});
