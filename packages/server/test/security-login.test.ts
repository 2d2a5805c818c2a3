/**
 * Login: bursts are throttled, and neither the answer nor its cost tells whether an account exists.
 * Covers password spraying / credential stuffing against /login and username enumeration through
 * different errors or different response times (CWE-204, CWE-208: an unknown user answered
 * without a password hash check is measurably faster).
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import argon2 from "argon2";
import { describeEachDatabase } from "./support/suite.js";
import { startTestServer, TEST_PASSWORD, type TestServer } from "./support/server.js";
import { api } from "./support/http.js";
import { loginBody, median, rawLogin } from "./security-helpers.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Counts argon2 verifications while `run` runs: calls pass through to the real function. */
async function countVerifies<T>(run: () => Promise<T>): Promise<{ result: T; verifies: number }> {
  const real = argon2.verify;
  let verifies = 0;
  argon2.verify = (async (...args: Parameters<typeof real>) => {
    verifies++;
    return real(...args);
  }) as typeof real;
  try {
    return { result: await run(), verifies };
  } finally {
    argon2.verify = real;
  }
}

/** CPU time (user + system, all threads: argon2 runs on the libuv pool) a request costs the process. */
async function cpuCost(run: () => Promise<unknown>): Promise<number> {
  const start = process.cpuUsage();
  await run();
  const d = process.cpuUsage(start);
  return (d.user + d.system) / 1000;
}

describe("login bursts are throttled", () => {
  let server: TestServer;
  before(async () => {
    // 12 a minute: a burst of 2 (the limiter allows a sixth of the minute's budget at once).
    server = await startTestServer("sqlite", { "limits.login_per_minute": 12 });
    await server.createUser("lena");
  });
  after(async () => {
    await server.destroy();
  });

  test("the third attempt in a burst gets 429 M_LIMIT_EXCEEDED with Retry-After, before any password is checked, whatever the user name, password or spoofed address", async () => {
    const statuses: number[] = [];
    const { verifies } = await countVerifies(async () => {
      for (let i = 0; i < 2; i++) statuses.push((await rawLogin(server, `nobody${i}`, "falsch")).status);
    });
    assert.deepEqual(statuses, [403, 403]);
    assert.equal(verifies, 2, "each refused login cost one verification");
    const limited = await countVerifies(async () => {
      const out: Array<{ status: number; body: Json; headers: Headers }> = [];
      out.push(await rawLogin(server, "lena", "falsch"));
      out.push(await rawLogin(server, "lena", TEST_PASSWORD));
      out.push(await rawLogin(server, "somebody-else", "x"));
      out.push(await rawLogin(server, "lena", TEST_PASSWORD, {}, { "x-forwarded-for": "203.0.113.7" }));
      out.push(await api(server.url, "POST", "/_matrix/client/v3/refresh", { body: { refresh_token: "rvr_guess" } }));
      return out;
    });
    for (const [i, res] of limited.result.entries()) {
      assert.equal(res.status, 429, `attempt ${i}: ${res.status} ${JSON.stringify(res.body)}`);
      assert.equal(res.body.errcode, "M_LIMIT_EXCEEDED");
      assert.ok(Number(res.body.retry_after_ms) > 0);
      const retryAfter = res.headers.get("retry-after");
      assert.match(retryAfter ?? "", /^\d+$/, "Retry-After in whole seconds");
      assert.ok(Number(retryAfter) >= 1 && Number(retryAfter) <= 60);
      assert.ok(Number(retryAfter) * 1000 >= Number(res.body.retry_after_ms), "Retry-After is not shorter than retry_after_ms");
    }
    assert.equal(limited.verifies, 0, "throttled attempts never reach the password check");
  });
});

describeEachDatabase("login does not reveal which accounts exist", ({ server }) => {
  const ADMIN = "/_revier/admin/v1";

  before(async () => {
    await server().createUser("paula");
    await server().createUser("geloescht");
    await server().createUser("gesperrt");
    await server().services.accounts.create("ohnepasswort", { password: null });
    await server().services.accounts.create("chef", { password: TEST_PASSWORD, role: "admin" });
    const geloescht = await server().login("geloescht");
    const res = await api(server().url, "POST", "/_matrix/client/v3/account/deactivate", { token: geloescht.access_token, body: { auth: { type: "m.login.password", identifier: { type: "m.id.user", user: "geloescht" }, password: TEST_PASSWORD } } });
    assert.equal(res.status, 200);
    const admin = await server().login("chef");
    assert.equal((await api(server().url, "POST", `${ADMIN}/users/${encodeURIComponent(`@gesperrt:${server().config.serverName}`)}/lock`, { token: admin.access_token })).status, 200);
  });

  test("unknown, deactivated, password-less, locked and existing accounts with a wrong password get byte-identical answers", async () => {
    const sn = server().config.serverName;
    const cases: Array<[string, Json]> = [
      ["existing user, wrong password", loginBody("paula", "falsches Passwort")],
      ["unknown user", loginBody("niemand", "falsches Passwort")],
      ["unknown full user id", loginBody(`@niemand:${sn}`, "falsches Passwort")],
      ["user id of another server", loginBody("@paula:elsewhere.example", "falsches Passwort")],
      ["invalid user name", loginBody("!!nicht gültig!!", "falsches Passwort")],
      ["deactivated user, wrong password", loginBody("geloescht", "falsches Passwort")],
      ["deactivated user, right password", loginBody("geloescht", TEST_PASSWORD)],
      ["user without a password", loginBody("ohnepasswort", "falsches Passwort")],
      ["locked user, wrong password", loginBody("gesperrt", "falsches Passwort")],
      ["existing user, empty password", loginBody("paula", "")],
      ["unknown user, empty password", loginBody("niemand", "")],
      ["existing user, 600-character password", loginBody("paula", "p".repeat(600))],
      ["unknown user, 600-character password", loginBody("niemand", "p".repeat(600))],
      ["existing user via legacy field", { type: "m.login.password", user: "paula", password: "falsch" }],
      ["unknown user via legacy field", { type: "m.login.password", user: "niemand", password: "falsch" }],
    ];
    const reference = await api(server().url, "POST", "/_matrix/client/v3/login", { body: cases[0]![1] });
    assert.equal(reference.status, 403);
    const headerNames = (h: Headers) => [...h.keys()].filter((k) => k !== "date").sort();
    for (const [what, body] of cases) {
      const res = await api(server().url, "POST", "/_matrix/client/v3/login", { body });
      assert.equal(res.status, reference.status, what);
      assert.deepEqual(res.body, reference.body, what);
      assert.deepEqual(headerNames(res.headers), headerNames(reference.headers), `${what}: the same headers`);
      assert.equal(res.headers.get("content-length"), reference.headers.get("content-length"), what);
    }
  });

  test("an unknown user costs one argon2 verification, exactly like a wrong password (structural)", async () => {
    // Warm the dummy hash once: it is made on first use.
    await rawLogin(server(), "aufwaermen", "x");
    const cases: Array<[string, string, string]> = [
      ["existing user, wrong password", "paula", "falsches Passwort"],
      ["unknown user", "niemand", "falsches Passwort"],
      ["deactivated user", "geloescht", TEST_PASSWORD],
      ["user without a password", "ohnepasswort", "falsches Passwort"],
      ["locked user", "gesperrt", "falsches Passwort"],
      ["invalid user name", "!!nicht gültig!!", "falsches Passwort"],
      ["another server's user", "@paula:elsewhere.example", "falsches Passwort"],
    ];
    for (const [what, user, password] of cases) {
      const { result, verifies } = await countVerifies(() => rawLogin(server(), user, password));
      assert.equal(result.status, 403, what);
      assert.equal(verifies, 1, `${what}: ${verifies} argon2 verifications`);
    }
  });

  test("and it costs the same CPU time: medians of alternating samples agree within a factor of two", async () => {
    // CPU time of this process, not wall-clock time, so other processes on a busy CI machine do
    // not add noise. Without a dummy verification an unknown user costs ~1 ms against ~25 ms:
    // a ratio near 0.05, far outside the bound.
    await rawLogin(server(), "aufwaermen", "x");
    const known: number[] = [];
    const unknown: number[] = [];
    for (let i = 0; i < 12; i++) {
      known.push(await cpuCost(() => rawLogin(server(), "paula", `falsch-${i}`)));
      unknown.push(await cpuCost(() => rawLogin(server(), `niemand${i}`, `falsch-${i}`)));
    }
    const ratio = median(unknown) / median(known);
    if (process.env.REVIER_TEST_VERBOSE) console.log(`login CPU cost: unknown ${median(unknown).toFixed(1)} ms, known ${median(known).toFixed(1)} ms`);
    assert.ok(ratio > 0.5 && ratio < 2, `unknown/known CPU cost ratio ${ratio.toFixed(2)} (medians ${median(unknown).toFixed(1)} ms / ${median(known).toFixed(1)} ms)`);
  });
});
