/**
 * Property-based fuzzing of every route in the route table (issue 7, "fuzzing"): random and
 * hostile path segments, query parameters (the route's own and others), JSON bodies, raw bodies
 * (invalid UTF-8, truncated JSON, huge numbers, odd content types), as the right kind of caller
 * (an admin for the admin API) and anonymously. Every answer must be below 500, every 4xx a
 * Matrix error (`errcode` and `error`, JSON), and the server must still be healthy afterwards.
 *
 * CI runs a fixed seed and a small budget; `npm run fuzz` (scripts/fuzz.mjs) runs the same
 * properties longer, with `REVIER_FUZZ_RUNS` and `REVIER_FUZZ_SEED`.
 */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { describeEachDatabase } from "./support/suite.js";
import { api, type ApiResponse } from "./support/http.js";
import { TEST_PASSWORD } from "./support/server.js";
import { ALL_ROUTES } from "../src/api/index.js";
import pino from "pino";
import { Capture } from "./security-helpers.js";

// A fixed seed keeps CI reproducible; `REVIER_FUZZ_RUNS` raises the budget for a longer local run.
const SEED = Number(process.env.REVIER_FUZZ_SEED ?? 20261126);
const RUNS = Number(process.env.REVIER_FUZZ_RUNS ?? 12);
const ONLY = process.env.REVIER_FUZZ_ONLY;

const jsonValue = fc.jsonValue({ maxDepth: 4 });
const hostileString = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 20 }),
  fc.constantFrom(
    "../../etc/passwd",
    "%2e%2e%2f",
    "..%2F..%2Fsigning.key",
    "!room:localhost",
    "@user:localhost",
    "@fuzzer:localhost",
    "#alias:localhost",
    "$event",
    "\u0000",
    "\ud800",
    "\udfff",
    "𝄞",
    "",
    " ",
    "s-1",
    "s0",
    "s99999999999999999999",
    "9007199254740993",
    "-1",
    "1e400",
    "NaN",
    "true",
    "null",
    "[]",
    "{}",
    '{"a":1}',
    "x".repeat(300),
    "m.room.message",
    "m.login.password",
    "global",
    "content",
    "override",
    ".m.rule.master",
  ),
);
const body = fc.oneof(fc.dictionary(fc.string({ maxLength: 12 }), jsonValue, { maxKeys: 6 }), jsonValue, fc.constant(undefined));
/** Bodies that are not well-formed JSON, or JSON that strains the parser's limits. */
const rawBody = fc.oneof(
  fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 200 }).map((b) => Buffer.from(b)),
  fc.string({ maxLength: 200 }).map((s) => Buffer.from(s)),
  fc.constantFrom(
    '{"a":',
    "[".repeat(100),
    "{".repeat(70) + "}".repeat(70),
    '{"n":1e999}',
    '{"n":-0}',
    '{"n":9007199254740993}',
    '{"s":"\\ud800"}',
    '{"s":"\\u0000"}',
    '{"a":1,"a":2}',
    "null",
    "true",
    '"string"',
    "123",
    "\ufeff{}",
  ).map((s) => Buffer.from(s)),
  fc.constantFrom(Buffer.from([0xff, 0xfe, 0x7b, 0x7d]), Buffer.from([0x7b, 0x22, 0xc0, 0xae, 0x22, 0x3a, 0x31, 0x7d]), Buffer.from([0x7b, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x3a, 0x31, 0x7d])),
);
const contentType = fc.constantFrom("application/json", "application/json; charset=utf-8", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "image/png", undefined);
const COMMON_QUERY_KEYS = ["limit", "from", "to", "dir", "since", "timeout", "filter", "format", "kind", "version", "at", "membership", "server", "search", "user_id", "block", "access_token_x"];

/**
 * encodeURIComponent, except that a lone surrogate (which it refuses) is written as the three
 * bytes a careless encoder would produce (CESU-8, e.g. %ED%A0%80): invalid UTF-8 in the URL.
 */
function encodeSegment(s: string): string {
  try {
    return encodeURIComponent(s);
  } catch {
    let out = "";
    for (const ch of s) {
      const cp = ch.codePointAt(0)!;
      if (cp >= 0xd800 && cp <= 0xdfff) out += [0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f)].map((b) => `%${b.toString(16).toUpperCase()}`).join("");
      else out += encodeURIComponent(ch);
    }
    return out;
  }
}

/** A URL the server may refuse before looking at credentials: U+0000 or invalid UTF-8 in it. */
const MALFORMED_URL = /%00|%ED%[AB]/i;

function queryKeys(spec: (typeof ALL_ROUTES)[number]["spec"]): string[] {
  const props = (spec.query as { properties?: Record<string, unknown> } | undefined)?.properties ?? {};
  return [...new Set([...Object.keys(props), ...COMMON_QUERY_KEYS])];
}

/** The server's error log, so a 500 names its cause. */
const serverLog = new Capture();

/** Below 500, and a 4xx is a Matrix error; a 2xx body is JSON unless the route streams something else. */
function assertSane(res: ApiResponse, label: string): void {
  assert.ok(res.status < 500, `${label} → ${res.status} ${JSON.stringify(res.body).slice(0, 300)}\nserver log: ${serverLog.text().slice(-2000)}`);
  // Pages for browsers (the consent page) answer their errors as pages; API routes never do.
  const api = /^(GET|POST|PUT|DELETE) \/(_matrix|_revier\/admin|_revier\/client)\//.test(label);
  if (!api && (res.headers.get("content-type") ?? "").startsWith("text/html")) return;
  if (res.status >= 400) {
    const b = res.body as { errcode?: unknown; error?: unknown };
    assert.ok(b !== null && typeof b === "object", `${label} → ${res.status} with a non-JSON body: ${String(res.body).slice(0, 200)}`);
    assert.equal(typeof b.errcode, "string", `${label} → ${res.status} without errcode: ${JSON.stringify(b).slice(0, 200)}`);
    assert.match(String(b.errcode), /^[A-Z][A-Z0-9_.]+$/, `${label}: errcode ${String(b.errcode)}`);
    assert.equal(typeof b.error, "string", `${label} → ${res.status} without an error message`);
    assert.match(res.headers.get("content-type") ?? "", /^application\/json/, `${label}: error content type`);
  }
}

describeEachDatabase("every endpoint survives random and malformed input", ({ server }) => {
  let token = "";
  let adminToken = "";
  let roomId = "";

  before(async () => {
    // Unexpected errors are logged at error level; keep them to explain a 500.
    server().services.log = pino({ level: "error" }, serverLog);
    await server().createUser("fuzzer");
    await server().services.accounts.create("fuzzadmin", { password: TEST_PASSWORD, role: "admin" });
    token = (await server().login("fuzzer")).access_token;
    adminToken = (await server().login("fuzzadmin")).access_token;
    const r = await api(server().url, "POST", "/_matrix/client/v3/createRoom", { token, body: { name: "fuzz" } });
    roomId = r.body.room_id as string;
  });

  ALL_ROUTES.forEach((def, index) => {
    const { method, url } = def.spec;
    // Logging out would end the session the rest of the run uses.
    if (url === "/_matrix/client/v3/logout" || url === "/_matrix/client/v3/logout/all") return;
    if (ONLY && !url.includes(ONLY)) return;
    const keys = queryKeys(def.spec);
    const admin = url.startsWith("/_revier/admin/");
    const caller = () => (admin ? adminToken : token);
    const fill = (segments: string[], useRoom: boolean) => {
      let i = 0;
      return url.replace(/:([A-Za-z]+)/g, (_m, name: string) => {
        if (useRoom && name === "roomId") return encodeURIComponent(roomId);
        let seg = segments[i++ % segments.length] || "x";
        // A lone "." or ".." segment is removed by the client's URL parser before it is sent.
        if (seg === "." || seg === "..") seg = "x";
        // The admin fuzzing its own subject would lock or sign out the session the run depends on.
        if (admin && seg === "@fuzzer:localhost") seg = "@target:localhost";
        return encodeSegment(seg);
      });
    };
    const query = fc.dictionary(fc.constantFrom(...keys), hostileString, { maxKeys: 4 });
    const qs = (q: Record<string, string>) => {
      // Long-polls and waits are fuzzed elsewhere; here they answer at once.
      const fixed = { ...q, ...(q.timeout !== undefined ? { timeout: "0" } : {}), ...(q.timeout_ms !== undefined ? { timeout_ms: "0" } : {}) };
      const s = new URLSearchParams(fixed).toString();
      return s ? `?${s}` : "";
    };

    test(`${method} ${url}`, async () => {
      // Structured: the right caller, random segments, query and JSON body.
      await fc.assert(
        fc.asyncProperty(fc.array(hostileString, { minLength: 6, maxLength: 6 }), body, query, fc.boolean(), async (segments, b, q, useRoom) => {
          const path = `${fill(segments, useRoom)}${qs(q)}`;
          const res = await api(server().url, method, path, { token: caller(), ...(b !== undefined && method !== "GET" ? { body: b } : {}) });
          assertSane(res, `${method} ${path}`);
        }),
        { seed: SEED + index, numRuns: RUNS },
      );
      // Raw: bodies that are not JSON at all, under assorted content types.
      if (method !== "GET") {
        await fc.assert(
          fc.asyncProperty(fc.array(hostileString, { minLength: 6, maxLength: 6 }), rawBody, contentType, fc.boolean(), async (segments, raw, type, useRoom) => {
            const path = fill(segments, useRoom);
            const res = await api(server().url, method, path, { token: caller(), rawBody: raw, headers: type ? { "content-type": type } : {} });
            assertSane(res, `${method} ${path} raw ${type} ${raw.toString("hex").slice(0, 40)}`);
          }),
          { seed: SEED + 7919 * (index + 1), numRuns: Math.max(4, Math.ceil(RUNS / 2)) },
        );
      }
      // Anonymous and with a forged token: refused (or served, for open routes), never a crash.
      await fc.assert(
        fc.asyncProperty(fc.array(hostileString, { minLength: 6, maxLength: 6 }), body, fc.constantFrom(undefined, "rva_forged", "", "Bearer", "x".repeat(500)), async (segments, b, forged) => {
          const path = fill(segments, false);
          const res = await api(server().url, method, path, { ...(forged !== undefined ? { headers: { authorization: `Bearer ${forged}` } } : {}), ...(b !== undefined && method !== "GET" ? { body: b } : {}) });
          assertSane(res, `${method} ${path} anonymous`);
          // Credentials are checked before the body is validated; only a body that is not even
          // acceptable JSON (parsed first) or a malformed URL may be refused before them.
          const refusedEarly = MALFORMED_URL.test(path) || (res.status === 400 && ["M_BAD_JSON", "M_NOT_JSON"].includes(String((res.body as { errcode?: unknown }).errcode)) && JSON.stringify(b ?? null).includes("__proto__"));
          if ((def.spec.auth === undefined || def.spec.auth === "required") && !refusedEarly) assert.equal(res.status, 401, `${method} ${path} without a valid token: ${res.status} ${JSON.stringify(res.body)}`);
        }),
        { seed: SEED + 104729 * (index + 1), numRuns: Math.max(4, Math.ceil(RUNS / 2)) },
      );
      // Still healthy, and the session still works.
      assert.equal((await api(server().url, "GET", "/health")).status, 200);
      assert.equal((await api(server().url, "GET", "/_matrix/client/v3/account/whoami", { token })).status, 200, `the fuzzing session died after ${method} ${url}`);
    });
  });

  test("the database is consistent afterwards", async () => {
    const db = server().services.storage.db;
    const counter = await server().services.stream.current();
    const maxEvent = await db.selectFrom("events").select((eb) => eb.fn.max("stream_ordering").as("m")).executeTakeFirst();
    assert.ok(Number(maxEvent?.m ?? 0) <= counter);
    const positions = (await db.selectFrom("events").select("stream_ordering").orderBy("stream_ordering").execute()).map((r) => r.stream_ordering);
    assert.equal(new Set(positions).size, positions.length);
    const whoami = await api(server().url, "GET", "/_matrix/client/v3/account/whoami", { token });
    assert.equal(whoami.status, 200);
    const state = await api(server().url, "GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/m.room.create`, { token });
    assert.equal(state.status, 200);
    const sync = await api(server().url, "GET", "/_matrix/client/v3/sync?timeout=0", { token });
    assert.equal(sync.status, 200);
    assert.equal((await api(server().url, "GET", "/health")).status, 200);
  });
});
