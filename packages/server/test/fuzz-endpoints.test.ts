import { before, test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { describeEachDatabase } from "./support/suite.js";
import { api } from "./support/http.js";
import { ALL_ROUTES } from "../src/api/index.js";

// A fixed seed keeps CI reproducible; `REVIER_FUZZ_RUNS` raises the budget for a longer local run.
const SEED = Number(process.env.REVIER_FUZZ_SEED ?? 20261126);
const RUNS = Number(process.env.REVIER_FUZZ_RUNS ?? 12);

const jsonValue = fc.jsonValue({ maxDepth: 4 });
const hostileString = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.constantFrom("../../etc/passwd", "%2e%2e%2f", "!room:localhost", "@user:localhost", "#alias:localhost", "$event", "\u0000", "\ud800", "𝄞", "", " ", "s-1", "s99999999999999999999"),
);
const body = fc.oneof(
  fc.dictionary(fc.string({ maxLength: 12 }), jsonValue, { maxKeys: 6 }),
  jsonValue,
  fc.constant(undefined),
);

describeEachDatabase("every endpoint survives random and malformed input", ({ server }) => {
  let token = "";
  let roomId = "";

  before(async () => {
    await server().createUser("fuzzer");
    token = (await server().login("fuzzer")).access_token;
    const r = await api(server().url, "POST", "/_matrix/client/v3/createRoom", { token, body: { name: "fuzz" } });
    roomId = r.body.room_id as string;
  });

  for (const def of ALL_ROUTES) {
    const { method, url } = def.spec;
    if (url === "/_matrix/client/v3/logout" || url === "/_matrix/client/v3/logout/all") continue;
    test(`${method} ${url}`, async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(hostileString, { minLength: 6, maxLength: 6 }), body, fc.dictionary(fc.constantFrom("limit", "from", "dir", "since", "timeout", "filter", "format", "to", "kind"), hostileString, { maxKeys: 3 }), fc.boolean(), async (segments, b, query, useRoom) => {
          let i = 0;
          const path = url.replace(/:([A-Za-z]+)/g, (_m, name: string) => {
            if (useRoom && name === "roomId") return encodeURIComponent(roomId);
            return encodeURIComponent(segments[i++ % segments.length] || "x");
          });
          const qs = new URLSearchParams({ ...query, ...(query.timeout !== undefined ? { timeout: "0" } : {}) }).toString();
          const res = await api(server().url, method, `${path}${qs ? `?${qs}` : ""}`, { token, ...(b !== undefined && method !== "GET" ? { body: b } : {}) });
          assert.ok(res.status < 500, `${method} ${path}?${qs} → ${res.status} ${JSON.stringify(res.body)}`);
          if (res.status >= 400 && path.startsWith("/_matrix")) {
            assert.equal(typeof (res.body as { errcode?: unknown }).errcode, "string", `${method} ${path} → ${res.status} without errcode`);
          }
        }),
        { seed: SEED, numRuns: RUNS },
      );
    });
  }

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
  });
});
