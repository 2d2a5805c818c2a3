import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  buildConformanceReport,
  endpointKey,
  extractConformanceCalls,
  matchRoutes,
  routeMatchesSpecPath,
  scanCoverage,
  type SpecEndpoint,
} from "./conformance-lib.js";

const SPEC: SpecEndpoint[] = [
  { method: "GET", path: "/_matrix/client/versions", file: "versions.yaml", section: "Versions" },
  { method: "GET", path: "/_matrix/client/v3/account/whoami", file: "whoami.yaml", section: "Whoami" },
  { method: "PUT", path: "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}", file: "room_send.yaml", section: "Send" },
  { method: "GET", path: "/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}", file: "rooms.yaml", section: "Rooms" },
  { method: "GET", path: "/_matrix/client/v3/rooms/{roomId}/messages", file: "rooms.yaml", section: "Rooms" },
  { method: "GET", path: "/_matrix/media/v3/download/{serverName}/{mediaId}", file: "content-repo.yaml", section: "Media" },
  { method: "GET", path: "/_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}", file: "content-repo.yaml", section: "Media" },
  { method: "GET", path: "/_matrix/client/v3/events", file: "old_sync.yaml", section: "Old sync", deprecated: true },
  { method: "GET", path: "/_matrix/client/v3/events", file: "peeking_events.yaml", section: "Peeking" },
];

const ROUTES = [
  { method: "GET", url: "/_matrix/client/versions" },
  { method: "HEAD", url: "/_matrix/client/versions" },
  { method: "GET", url: "/_matrix/client/v3/account/whoami" },
  { method: "put", url: "/_matrix/client/v3/rooms/:id/send/:type/:txn" },
  { method: "GET", url: "/_matrix/client/v3/rooms/:roomId/state/:eventType/:stateKey" },
  { method: "GET", url: "/_matrix/client/v3/rooms/:roomId/state/:eventType" },
  { method: "GET", url: "/_matrix/media/v3/download/*" },
  { method: "GET", url: "/_matrix/client/v3/events" },
  { method: "HEAD", url: "/_revier/only-head" },
  { method: "GET", url: "/_revier/v1/health" },
  { method: "POST", url: "/_matrix/client/v3/account/whoami" },
];

test("fastify parameters match spec parameters by position, not name", () => {
  assert.ok(routeMatchesSpecPath("/_matrix/client/v3/rooms/:x/send/:y/:z", "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}"));
  assert.ok(routeMatchesSpecPath("/_matrix/client/v3/rooms/:roomId(^!.+)/messages", "/_matrix/client/v3/rooms/{roomId}/messages"));
  assert.ok(routeMatchesSpecPath("/_matrix/client/v3/account/whoami/", "/_matrix/client/v3/account/whoami"));
  assert.ok(!routeMatchesSpecPath("/_matrix/client/v3/rooms/:roomId/messages", "/_matrix/client/v3/rooms/{roomId}/members"));
  assert.ok(!routeMatchesSpecPath("/_matrix/client/v3/rooms/:roomId", "/_matrix/client/v3/rooms/{roomId}/messages"));
  assert.ok(!routeMatchesSpecPath("/_matrix/client/v3/rooms/messages", "/_matrix/client/v3/rooms/{roomId}/messages"));
  // A literal segment never stands in for a parameter, nor the other way round.
  assert.ok(!routeMatchesSpecPath("/_matrix/client/v3/user/:userId/filter", "/_matrix/client/v3/user/{userId}/{filterId}"));
  assert.ok(routeMatchesSpecPath("/_matrix/media/v3/download/*", "/_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}"));
  assert.ok(!routeMatchesSpecPath("/_matrix/media/v3/download/*", "/_matrix/media/v3/download"));
});

test("endpoint keys ignore parameter names and syntax", () => {
  assert.equal(endpointKey("get", "/_matrix/client/v3/rooms/{roomId}/messages"), endpointKey("GET", "/_matrix/client/v3/rooms/{id}/messages"));
  assert.equal(endpointKey("GET", "/a/{b}"), "GET /a/{}");
});

test("routes are matched to spec endpoints; HEAD is ignored; the rest are Revier's own", () => {
  const { implemented, matches, unmatched } = matchRoutes(SPEC, ROUTES);
  const keys = [...implemented].sort();
  assert.deepEqual(keys, [
    "GET /_matrix/client/v3/account/whoami",
    "GET /_matrix/client/v3/events",
    "GET /_matrix/client/v3/rooms/{}/state/{}/{}",
    "GET /_matrix/client/versions",
    "GET /_matrix/media/v3/download/{}/{}",
    "GET /_matrix/media/v3/download/{}/{}/{}",
    "PUT /_matrix/client/v3/rooms/{}/send/{}/{}",
  ]);
  const messages = matches.find((m) => m.endpoint.path.endsWith("/messages"));
  assert.deepEqual(messages?.routes, []);
  // The state route without a state key is the spec's optional-trailing-slash form, not an own API.
  assert.deepEqual(unmatched, [
    { method: "POST", url: "/_matrix/client/v3/account/whoami" },
    { method: "GET", url: "/_revier/v1/health" },
  ]);
});

test("conformance calls are found in every quote style, template literals only without interpolation", () => {
  const source = [
    `assertConformsToSpec("GET", "/_matrix/client/v3/account/whoami", 200, who.body);`,
    `assertConformsToSpec('post', '/_matrix/client/v3/login', 200, body);`,
    "assertConformsToSpec(`PUT`, `/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`, 200, r.body);",
    "assertConformsToSpec(\n      \"GET\",\n      \"/_matrix/client/v3/sync\",\n      200,\n      body,\n    );",
    "assertConformsToSpec(\"GET\", `/_matrix/client/v3/rooms/${roomId}/messages`, 200, body);",
    "assertConformsToSpec(method, \"/_matrix/client/v3/devices\", 200, body);",
    "notassertConformsToSpec(\"GET\", \"/nope\", 200, body);",
  ].join("\n");
  assert.deepEqual(extractConformanceCalls(source), [
    { method: "GET", path: "/_matrix/client/v3/account/whoami" },
    { method: "POST", path: "/_matrix/client/v3/login" },
    { method: "PUT", path: "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}" },
    { method: "GET", path: "/_matrix/client/v3/sync" },
  ]);
});

async function withFakeRepo(files: Record<string, string>, fn: (root: string) => Promise<void>): Promise<void> {
  const root = await mkdtemp(path.join(tmpdir(), "revier-conformance-"));
  try {
    for (const [rel, content] of Object.entries(files)) {
      const full = path.join(root, rel);
      await mkdir(path.dirname(full), { recursive: true });
      await writeFile(full, content);
    }
    await fn(root);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

const call = (method: string, p: string) => `assertConformsToSpec("${method}", "${p}", 200, res.body);\n`;

test("coverage scan reads tests and test helpers, skips other sources and the validator's own test", async () => {
  await withFakeRepo(
    {
      "packages/server/test/basics.test.ts": call("GET", "/_matrix/client/versions") + call("GET", "/_matrix/client/v3/account/whoami"),
      "packages/server/test/rooms/send.test.ts": call("PUT", "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}"),
      "packages/server/test/support/helpers.ts": call("GET", "/_matrix/client/v3/account/whoami"),
      "packages/server/test/support/spec.test.ts": call("GET", "/_matrix/client/v3/rooms/{roomId}/messages"),
      "packages/server/test/fixtures/data.json": call("GET", "/_matrix/client/v3/events"),
      "packages/server/src/api/rooms.test.ts": call("GET", "/_matrix/client/v3/rooms/{id}/state/{type}/{key}"),
      "packages/server/src/api/rooms.ts": call("GET", "/_matrix/client/v3/events"),
      "packages/server/test/node_modules/x/index.ts": call("GET", "/_matrix/client/v3/events"),
    },
    async (root) => {
      const coverage = await scanCoverage(root);
      assert.deepEqual(Object.fromEntries(coverage), {
        "GET /_matrix/client/versions": ["packages/server/test/basics.test.ts"],
        "GET /_matrix/client/v3/account/whoami": ["packages/server/test/basics.test.ts", "packages/server/test/support/helpers.ts"],
        "PUT /_matrix/client/v3/rooms/{}/send/{}/{}": ["packages/server/test/rooms/send.test.ts"],
        "GET /_matrix/client/v3/rooms/{}/state/{}/{}": ["packages/server/src/api/rooms.test.ts"],
      });
    },
  );
});

test("a missing test directory is simply empty coverage", async () => {
  await withFakeRepo({ "README.md": "" }, async (root) => {
    assert.equal((await scanCoverage(root)).size, 0);
  });
});

test("report: counts first, grouped tables, own routes last, uncovered endpoints listed", () => {
  const coverage = new Map<string, string[]>([
    [endpointKey("GET", "/_matrix/client/versions"), ["packages/server/test/basics.test.ts"]],
    [endpointKey("GET", "/_matrix/client/v3/account/whoami"), ["packages/server/test/a.test.ts", "packages/server/test/b.test.ts"]],
    [endpointKey("GET", "/_matrix/client/v3/rooms/{roomId}/messages"), ["packages/server/test/rooms.test.ts"]],
  ]);
  const report = buildConformanceReport({ operations: SPEC, routes: ROUTES, coverage, specSource: "the spec" });
  assert.equal(report.specEndpoints, 8);
  assert.equal(report.implemented, 7);
  assert.equal(report.covered, 3);
  assert.deepEqual(
    report.uncovered.map((op) => `${op.method} ${op.path}`),
    [
      "PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}",
      "GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}",
      "GET /_matrix/media/v3/download/{serverName}/{mediaId}",
      "GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}",
      "GET /_matrix/client/v3/events",
    ],
  );

  const md = report.markdown;
  assert.match(md, /^# Client-server API conformance\n/);
  assert.match(md, /\| Spec endpoints \| 8 \|\n\| Implemented \| 7 \|\n\| Covered by a spec-validating test \| 3 \|/);
  assert.ok(md.indexOf("| Spec endpoints") < md.indexOf("## "), "counts come before the tables");
  assert.match(md, /## Whoami \(`whoami\.yaml`\)\n\n\| Method \| Path \| Implemented \| Covered by \|/);
  assert.match(
    md,
    /\| GET \| `\/_matrix\/client\/v3\/account\/whoami` \| yes \| `packages\/server\/test\/a\.test\.ts`<br>`packages\/server\/test\/b\.test\.ts` \|/,
  );
  // Covered but not served: the report shows both facts rather than hiding either.
  assert.match(md, /\| GET \| `\/_matrix\/client\/v3\/rooms\/\{roomId\}\/messages` \| no \| `packages\/server\/test\/rooms\.test\.ts` \|/);
  assert.match(md, /\| GET \| `\/_matrix\/client\/v3\/events` \(deprecated\) \| yes \| {2}\|/);
  const ownAt = md.indexOf("## Revier routes outside the spec");
  assert.ok(ownAt > md.lastIndexOf("| Method | Path |"), "own routes are the last section");
  const own = md.slice(ownAt);
  assert.match(own, /- POST `\/_matrix\/client\/v3\/account\/whoami`\n- GET `\/_revier\/v1\/health`/);
  assert.ok(!md.includes("only-head"));
  // Deterministic: same input, same bytes.
  assert.equal(buildConformanceReport({ operations: SPEC, routes: ROUTES, coverage, specSource: "the spec" }).markdown, md);
});
