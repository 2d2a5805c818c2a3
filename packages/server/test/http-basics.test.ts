import { test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { api } from "./support/http.js";
import { assertConformsToSpec } from "./support/spec.js";
import { startTestServer } from "./support/server.js";

describeEachDatabase("HTTP basics, auth and errors", ({ server }) => {
  test("versions, well-known and login flows conform to the spec", async () => {
    const v = await api(server().url, "GET", "/_matrix/client/versions");
    assert.equal(v.status, 200);
    assertConformsToSpec("GET", "/_matrix/client/versions", 200, v.body);
    assert.ok((v.body.versions as string[]).includes("v1.11"));
    const wk = await api(server().url, "GET", "/.well-known/matrix/client");
    assert.equal((wk.body["m.homeserver"] as { base_url: string }).base_url, server().config.publicBaseUrl);
    const flows = await api(server().url, "GET", "/_matrix/client/v3/login");
    assertConformsToSpec("GET", "/_matrix/client/v3/login", 200, flows.body);
    assert.deepEqual(flows.body.flows, [{ type: "m.login.password" }]);
    assert.equal(flows.headers.get("access-control-allow-origin"), "*");
  });

  test("login, whoami, logout; wrong password and unknown user answer identically", async () => {
    await server().createUser("anna");
    const login = await api(server().url, "POST", "/_matrix/client/v3/login", { body: { type: "m.login.password", identifier: { type: "m.id.user", user: "anna" }, password: "correct horse battery", initial_device_display_name: "Dienst-Handy" } });
    assert.equal(login.status, 200);
    assertConformsToSpec("POST", "/_matrix/client/v3/login", 200, login.body);
    const token = login.body.access_token as string;
    const who = await api(server().url, "GET", "/_matrix/client/v3/account/whoami", { token });
    assertConformsToSpec("GET", "/_matrix/client/v3/account/whoami", 200, who.body);
    assert.equal(who.body.user_id, `@anna:${server().config.serverName}`);
    assert.equal(who.body.device_id, login.body.device_id);

    const wrong = await api(server().url, "POST", "/_matrix/client/v3/login", { body: { type: "m.login.password", identifier: { type: "m.id.user", user: "anna" }, password: "wrong password!" } });
    const unknown = await api(server().url, "POST", "/_matrix/client/v3/login", { body: { type: "m.login.password", identifier: { type: "m.id.user", user: "nobody" }, password: "wrong password!" } });
    assert.equal(wrong.status, 403);
    assert.deepEqual(wrong.body, unknown.body);
    assert.equal(unknown.status, 403);

    const out = await api(server().url, "POST", "/_matrix/client/v3/logout", { token });
    assert.equal(out.status, 200);
    const after = await api(server().url, "GET", "/_matrix/client/v3/account/whoami", { token });
    assert.equal(after.status, 401);
    assert.equal(after.body.errcode, "M_UNKNOWN_TOKEN");
    assert.equal(after.body.soft_logout, false);
  });

  test("tokens are stored only as digests", async () => {
    await server().createUser("bert");
    const { access_token, refresh_token } = await server().login("bert", undefined, { refresh_token: true });
    const db = server().services.storage.db;
    const rows = await db.selectFrom("access_tokens").select("token_hash").execute();
    assert.ok(rows.length > 0);
    assert.ok(rows.every((r) => r.token_hash !== access_token && /^[0-9a-f]{64}$/.test(r.token_hash)));
    const refresh = await db.selectFrom("refresh_tokens").select("token_hash").execute();
    assert.ok(refresh.every((r) => r.token_hash !== refresh_token));
    const user = await db.selectFrom("users").select("password_hash").where("localpart", "=", "bert").executeTakeFirstOrThrow();
    assert.match(user.password_hash ?? "", /^\$argon2id\$/);
  });

  test("refresh tokens rotate and the old access token dies", async () => {
    await server().createUser("carla");
    const first = await server().login("carla", undefined, { refresh_token: true });
    assert.ok(first.refresh_token);
    const refreshed = await api(server().url, "POST", "/_matrix/client/v3/refresh", { body: { refresh_token: first.refresh_token } });
    assert.equal(refreshed.status, 200);
    assertConformsToSpec("POST", "/_matrix/client/v3/refresh", 200, refreshed.body);
    const oldWho = await api(server().url, "GET", "/_matrix/client/v3/account/whoami", { token: first.access_token });
    assert.equal(oldWho.status, 401);
    const newWho = await api(server().url, "GET", "/_matrix/client/v3/account/whoami", { token: refreshed.body.access_token as string });
    assert.equal(newWho.status, 200);
    const bogus = await api(server().url, "POST", "/_matrix/client/v3/refresh", { body: { refresh_token: "rvr_nope" } });
    assert.equal(bogus.status, 401);
    assert.equal(bogus.body.errcode, "M_UNKNOWN_TOKEN");
  });

  test("an old refresh token works again only until the new access token is used", async () => {
    await server().createUser("cem");
    const first = await server().login("cem", undefined, { refresh_token: true });
    // The response to the first refresh is "lost": the client retries with the same refresh token.
    const lost = await api(server().url, "POST", "/_matrix/client/v3/refresh", { body: { refresh_token: first.refresh_token } });
    assert.equal(lost.status, 200);
    const retry = await api<{ access_token: string; refresh_token: string }>(server().url, "POST", "/_matrix/client/v3/refresh", { body: { refresh_token: first.refresh_token } });
    assert.equal(retry.status, 200, "a retry before the new token is used must still work");
    const lostWho = await api(server().url, "GET", "/_matrix/client/v3/account/whoami", { token: lost.body.access_token as string });
    assert.equal(lostWho.status, 401, "the pair from the lost response is superseded by the retry");
    const who = await api(server().url, "GET", "/_matrix/client/v3/account/whoami", { token: retry.body.access_token });
    assert.equal(who.status, 200);
    // Now the new pair is in use: the original refresh token must be dead for good.
    const replay = await api(server().url, "POST", "/_matrix/client/v3/refresh", { body: { refresh_token: first.refresh_token } });
    assert.equal(replay.status, 401);
    assert.equal(replay.body.errcode, "M_UNKNOWN_TOKEN");
    const next = await api(server().url, "POST", "/_matrix/client/v3/refresh", { body: { refresh_token: retry.body.refresh_token } });
    assert.equal(next.status, 200, "the current refresh token keeps working");
  });

  test("missing, malformed and query-string tokens are refused", async () => {
    const none = await api(server().url, "GET", "/_matrix/client/v3/account/whoami");
    assert.equal(none.status, 401);
    assert.equal(none.body.errcode, "M_MISSING_TOKEN");
    const bad = await api(server().url, "GET", "/_matrix/client/v3/account/whoami", { token: "rva_not-a-token" });
    assert.equal(bad.status, 401);
    assert.equal(bad.body.errcode, "M_UNKNOWN_TOKEN");
    const { access_token } = await server().login("anna");
    const inQuery = await api(server().url, "GET", `/_matrix/client/v3/account/whoami?access_token=${access_token}`);
    assert.equal(inQuery.status, 401);
    assert.equal(inQuery.body.errcode, "M_MISSING_TOKEN");
  });

  test("malformed JSON, wrong shapes, unknown endpoints and wrong methods get Matrix errors", async () => {
    const { access_token: token } = await server().login("anna");
    const notJson = await api(server().url, "POST", "/_matrix/client/v3/createRoom", { token, rawBody: "{not json", headers: { "content-type": "application/json" } });
    assert.equal(notJson.status, 400);
    assert.equal(notJson.body.errcode, "M_NOT_JSON");
    const badUtf8 = await api(server().url, "POST", "/_matrix/client/v3/createRoom", { token, rawBody: Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x7d]), headers: { "content-type": "application/json" } });
    assert.equal(badUtf8.status, 400);
    assert.equal(badUtf8.body.errcode, "M_NOT_JSON");
    const wrongType = await api(server().url, "POST", "/_matrix/client/v3/createRoom", { token, body: { name: 42 } });
    assert.equal(wrongType.status, 400);
    assert.equal(wrongType.body.errcode, "M_BAD_JSON");
    const missing = await api(server().url, "POST", "/_matrix/client/v3/login", { body: { identifier: { type: "m.id.user", user: "anna" } } });
    assert.equal(missing.status, 400);
    assert.equal(missing.body.errcode, "M_MISSING_PARAM");
    const deep = await api(server().url, "POST", "/_matrix/client/v3/createRoom", { token, rawBody: `{"creation_content":${"[".repeat(500)}${"]".repeat(500)}}`, headers: { "content-type": "application/json" } });
    assert.equal(deep.status, 400);
    assert.equal(deep.body.errcode, "M_BAD_JSON");
    const unknown = await api(server().url, "GET", "/_matrix/client/v3/no/such/thing", { token });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.errcode, "M_UNRECOGNIZED");
    const wrongMethod = await api(server().url, "DELETE", "/_matrix/client/v3/createRoom", { token });
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.body.errcode, "M_UNRECOGNIZED");
    const overlong = await api(server().url, "GET", "/_matrix/client/v3/profile/%C0%AE%C0%AE", { token });
    assert.equal(overlong.status, 400);
    assert.equal(overlong.body.errcode, "M_UNRECOGNIZED");
    const badLimit = await api(server().url, "GET", "/_matrix/client/v3/sync?timeout=soon", { token });
    assert.equal(badLimit.status, 400);
    assert.equal(badLimit.body.errcode, "M_INVALID_PARAM");
  });

  test("events over 65,536 bytes are refused with M_TOO_LARGE and nothing is stored", async () => {
    const { access_token: token } = await server().login("anna");
    const room = await api(server().url, "POST", "/_matrix/client/v3/createRoom", { token, body: {} });
    const roomId = room.body.room_id as string;
    const before = await server().services.stream.current();
    const big = await api(server().url, "PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/big1`, { token, body: { msgtype: "m.text", body: "x".repeat(70_000) } });
    assert.equal(big.status, 413);
    assert.equal(big.body.errcode, "M_TOO_LARGE");
    assert.equal(await server().services.stream.current(), before);
  });

  test("health and metrics", async () => {
    const h = await api(server().url, "GET", "/health");
    assert.deepEqual(h.body, { status: "ok" });
    const m = await fetch(`${server().url}/metrics`);
    const text = await m.text();
    assert.match(text, /revier_http_requests_total\{method="GET",route="\/health",status="200"\} \d+/);
    assert.match(text, /revier_events_persisted_total \d+/);
    assert.match(text, /revier_sync_waiters 0/);
  });

  test("metrics are refused to addresses outside metrics_allow_from", async () => {
    const elsewhere = await startTestServer("sqlite", { metrics_allow_from: "10.0.0.0/8,192.0.2.7" });
    try {
      const m = await api(elsewhere.url, "GET", "/metrics");
      assert.equal(m.status, 403);
      assert.equal(m.body.errcode, "M_FORBIDDEN");
      assert.equal((await api(elsewhere.url, "GET", "/health")).status, 200, "health stays open for load balancers");
    } finally {
      await elsewhere.destroy();
    }
  });
});
