/**
 * Every endpoint that makes the server write is rate-limited, not only sending, login and
 * registration: receipts, typing, to-device messages, account data, key uploads and the rest take
 * from one per-user budget ("writes"). Without it, one client could make the server write as fast
 * as it can send requests; a receipt for an unknown event, for example, costs a PostgreSQL batch
 * a second run (see StreamWriter's replayable writes).
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "./support/server.js";
import { api, enc, type ApiResponse } from "./support/http.js";
import { createRoom, sendMessage } from "./security-helpers.js";
import { RateLimiter } from "../src/lib/rate-limiter.js";
import { ALL_ROUTES } from "../src/api/index.js";
import { rateLimitOf } from "../src/http/route.js";
import { loadConfig } from "../src/config.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function assertLimited(res: ApiResponse, label: string): void {
  assert.equal(res.status, 429, `${label}: ${res.status} ${JSON.stringify(res.body)}`);
  const body = res.body as Json;
  assert.equal(body.errcode, "M_LIMIT_EXCEEDED", label);
  assert.ok(Number(body.retry_after_ms) > 0, `${label}: retry_after_ms`);
  assert.match(res.headers.get("retry-after") ?? "", /^[1-9]\d*$/, `${label}: Retry-After in whole seconds`);
}

describe("writes share one rate limit per user", () => {
  let server: TestServer;
  let anna: string;
  let annaId: string;
  let bert: string;
  let roomId: string;
  let eventId: string;
  let now = 1_000_000;

  before(async () => {
    server = await startTestServer("sqlite");
    annaId = await server.createUser("anna");
    const bertId = await server.createUser("bert");
    anna = (await server.login("anna")).access_token;
    bert = (await server.login("bert")).access_token;
    roomId = await createRoom(server, anna, { preset: "private_chat", invite: [bertId] });
    assert.equal((await api(server.url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/join`, { token: bert, body: {} })).status, 200);
    eventId = await sendMessage(server, anna, roomId, "Lage um 14 Uhr", "m1");
    // A clock the test moves: four writes at once, then one a second.
    server.services.rateLimits.writes = new RateLimiter(1, 4, () => now);
  });
  after(async () => {
    await server.destroy();
  });

  const accountData = (token: string, value: string) =>
    api(server.url, "PUT", `/_matrix/client/v3/user/${enc(annaId)}/account_data/org.revier.test`, { token, body: { value } });

  test("receipts, typing, account data and to-device take from the same budget; the refused write changes nothing", async () => {
    const allowed = [
      await api(server.url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/receipt/m.read/${enc(eventId)}`, { token: anna, body: {} }),
      await api(server.url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/typing/${enc(annaId)}`, { token: anna, body: { typing: true, timeout: 10_000 } }),
      await accountData(anna, "erster Stand"),
      await api(server.url, "PUT", `/_matrix/client/v3/sendToDevice/m.test/t1`, { token: anna, body: { messages: {} } }),
    ];
    assert.deepEqual(
      allowed.map((r) => r.status),
      [200, 200, 200, 200],
      JSON.stringify(allowed.map((r) => r.body)),
    );

    assertLimited(await api(server.url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/receipt/m.read/${enc(eventId)}`, { token: anna, body: {} }), "receipt");
    assertLimited(await accountData(anna, "zweiter Stand"), "account data");
    assertLimited(await api(server.url, "POST", "/_matrix/client/v3/keys/upload", { token: anna, body: {} }), "key upload");
    assertLimited(await api(server.url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/typing/${enc(annaId)}`, { token: anna, body: { typing: false } }), "typing");

    const stored = await api<Json>(server.url, "GET", `/_matrix/client/v3/user/${enc(annaId)}/account_data/org.revier.test`, { token: anna });
    assert.equal(stored.status, 200);
    assert.equal(stored.body.value, "erster Stand", "the refused write did not reach the store");
  });

  test("while one user is limited, others are not, and the limited user can still read, query keys, send and log out", async () => {
    assertLimited(await accountData(anna, "noch gesperrt"), "still limited");
    assert.equal((await api(server.url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/receipt/m.read/${enc(eventId)}`, { token: bert, body: {} })).status, 200, "bert has his own budget");
    assert.equal((await api(server.url, "GET", "/_matrix/client/v3/sync?timeout=0", { token: anna })).status, 200, "reads are not limited");
    const keys = await api(server.url, "POST", "/_matrix/client/v3/keys/query", { token: anna, body: { device_keys: { [annaId]: [] } } });
    assert.equal(keys.status, 200, "a key query is a read, sent as POST");
    // Sending has its own, separate limit (raised in tests).
    await sendMessage(server, anna, roomId, "trotzdem zugestellt", "m2");
  });

  test("the budget refills with time", async () => {
    assertLimited(await accountData(anna, "zu früh"), "before the refill");
    now += 1000;
    assert.equal((await accountData(anna, "nach einer Sekunde")).status, 200);
    assertLimited(await accountData(anna, "gleich wieder"), "one token a second");
    const stored = await api<Json>(server.url, "GET", `/_matrix/client/v3/user/${enc(annaId)}/account_data/org.revier.test`, { token: anna });
    assert.equal(stored.body.value, "nach einer Sekunde");
  });

  test("a limited user can still log out", async () => {
    const second = (await server.login("anna")).access_token;
    assertLimited(await accountData(second, "gesperrt"), "limited before logout");
    assert.equal((await api(server.url, "POST", "/_matrix/client/v3/logout", { token: second, body: {} })).status, 200);
    assert.equal((await api(server.url, "GET", "/_matrix/client/v3/account/whoami", { token: second })).status, 401, "the token is gone");
  });
});

describe("which routes are limited", () => {
  test("every route that writes takes from a limiter; only reads sent as POST and logging out are exempt", () => {
    const exempt = ALL_ROUTES.filter((r) => r.spec.method !== "GET" && rateLimitOf(r.spec) === "none").map((r) => `${r.spec.method} ${r.spec.url}`);
    assert.deepEqual(exempt.sort(), ["POST /_matrix/client/v3/keys/query", "POST /_matrix/client/v3/logout", "POST /_matrix/client/v3/logout/all"]);
    const unauthenticatedWrites = ALL_ROUTES.filter((r) => r.spec.method !== "GET" && r.spec.auth === "none");
    assert.ok(unauthenticatedWrites.length >= 4, "login, refresh, register and consent");
    for (const r of unauthenticatedWrites) assert.ok(["login", "register"].includes(rateLimitOf(r.spec)), `${r.spec.url} is limited per address by the login or registration limiter`);
    for (const r of ALL_ROUTES.filter((x) => x.spec.method === "GET")) assert.equal(rateLimitOf(r.spec), r.spec.rateLimit ?? "none", `${r.spec.url}`);
  });

  test("the writes budget is configurable, with defaults that leave normal clients alone", () => {
    const defaults = loadConfig({}).limits;
    assert.equal(defaults.writesPerSecond, 50);
    assert.equal(defaults.writesBurst, 500);
    const set = loadConfig({ REVIER_WRITES_PER_SECOND: "5", REVIER_WRITES_BURST: "20" }).limits;
    assert.deepEqual([set.writesPerSecond, set.writesBurst], [5, 20]);
    assert.throws(() => loadConfig({ REVIER_WRITES_PER_SECOND: "0" }), /REVIER_WRITES_PER_SECOND/);
  });
});
