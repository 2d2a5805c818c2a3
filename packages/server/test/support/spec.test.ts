import { test } from "node:test";
import assert from "node:assert/strict";
import { assertConformsToSpec, findSpecOperations, listSpecOperations, responseValidator } from "./spec.js";

function rejects(fn: () => void, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof assert.AssertionError, `expected an AssertionError, got ${String(err)}`);
    assert.match(err.message, pattern);
    return true;
  });
}

test("every documented response of every client-server operation compiles", () => {
  const ops = listSpecOperations();
  assert.ok(ops.length > 150, `only ${ops.length} operations found`);
  let compiled = 0;
  for (const op of ops) {
    assert.match(op.path, /^\/(_matrix|\.well-known)\//, `${op.operationId} has an unexpected path ${op.path}`);
    assert.ok(Object.keys(op.responses).length > 0, `${op.operationId} documents no responses`);
    for (const status of Object.keys(op.responses)) {
      if (responseValidator(op, status)) compiled++;
    }
  }
  assert.ok(compiled > 300, `only ${compiled} response schemas compiled`);
});

test("base paths come from each file's servers entry", () => {
  const paths = new Set(listSpecOperations().map((op) => `${op.method} ${op.path}`));
  for (const expected of [
    "GET /_matrix/client/versions",
    "GET /_matrix/client/v3/account/whoami",
    "GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}",
    "POST /_matrix/media/v3/upload",
    "GET /_matrix/client/v1/media/download/{serverName}/{mediaId}",
    "GET /.well-known/matrix/client",
    "GET /_matrix/client/v3/admin/whois/{userId}",
  ]) {
    assert.ok(paths.has(expected), `missing ${expected}`);
  }
  // The spec pads a path with a trailing space to dodge a duplicate key; it must not leak through.
  assert.ok([...paths].every((p) => p === p.trim()));
});

test("whoami: a correct body passes, a missing user_id is named", () => {
  assertConformsToSpec("GET", "/_matrix/client/v3/account/whoami", 200, { user_id: "@anna:example.org", device_id: "ABCDEF", is_guest: false });
  rejects(() => assertConformsToSpec("GET", "/_matrix/client/v3/account/whoami", 200, { device_id: "ABCDEF" }), /user_id/);
  rejects(() => assertConformsToSpec("GET", "/_matrix/client/v3/account/whoami", 200, { user_id: "anna" }), /user_id.*(format|pattern)|(format|pattern).*user_id/s);
});

test("sync: a minimal body passes, a timeline event without event_id fails", () => {
  assertConformsToSpec("GET", "/_matrix/client/v3/sync", 200, { next_batch: "s1" });
  const event = { type: "m.room.message", sender: "@anna:example.org", origin_server_ts: 1, content: { msgtype: "m.text", body: "hallo" } };
  const body = (ev: Record<string, unknown>) => ({
    next_batch: "s2",
    rooms: { join: { "!room:example.org": { timeline: { events: [ev], limited: false, prev_batch: "p1" } } } },
  });
  assertConformsToSpec("GET", "/_matrix/client/v3/sync", 200, body({ ...event, event_id: "$abc" }));
  rejects(
    () => assertConformsToSpec("GET", "/_matrix/client/v3/sync", 200, body(event)),
    /\/rooms\/join\/!room:example\.org\/timeline\/events\/0: .*event_id/,
  );
  rejects(() => assertConformsToSpec("GET", "/_matrix/client/v3/sync", 200, {}), /next_batch/);
});

test("login and versions bodies", () => {
  assertConformsToSpec("GET", "/_matrix/client/v3/login", 200, { flows: [{ type: "m.login.password" }] });
  assertConformsToSpec("POST", "/_matrix/client/v3/login", 200, {
    user_id: "@anna:example.org",
    access_token: "syt_token",
    device_id: "ABCDEF",
    refresh_token: "syr_token",
    expires_in_ms: 60000,
  });
  rejects(() => assertConformsToSpec("POST", "/_matrix/client/v3/login", 200, { user_id: "@anna:example.org", device_id: "ABCDEF" }), /access_token/);
  rejects(() => assertConformsToSpec("POST", "/_matrix/client/v3/login", 200, { user_id: "@a:x", access_token: "t", device_id: "D", expires_in_ms: "soon" }), /expires_in_ms: must be integer/);
  assertConformsToSpec("GET", "/_matrix/client/versions", 200, { versions: ["v1.11", "v1.12"], unstable_features: { "org.example.feature": true } });
  rejects(() => assertConformsToSpec("GET", "/_matrix/client/versions", 200, { versions: "v1.11" }), /\/versions: must be array/);
});

test("error bodies validate against the shared error schema", () => {
  assertConformsToSpec("GET", "/_matrix/client/v3/account/whoami", 401, { errcode: "M_UNKNOWN_TOKEN", error: "Unknown token", soft_logout: false });
  rejects(() => assertConformsToSpec("GET", "/_matrix/client/v3/account/whoami", 401, { error: "no code" }), /errcode/);
});

test("unknown operations and undocumented statuses throw", () => {
  rejects(() => assertConformsToSpec("GET", "/_matrix/client/v3/no/such/endpoint", 200, {}), /not an operation/);
  rejects(() => assertConformsToSpec("DELETE", "/_matrix/client/v3/account/whoami", 200, {}), /not an operation/);
  rejects(() => assertConformsToSpec("GET", "/_matrix/client/v3/account/whoami", 418, {}), /does not document status 418/);
});

test("parameter names need not match the spec's spelling", () => {
  const [op] = findSpecOperations("get", "/_matrix/client/v3/rooms/{id}/messages");
  assert.equal(op?.path, "/_matrix/client/v3/rooms/{roomId}/messages");
});

test("an operation documented twice accepts a body valid for either", () => {
  // Deprecated /events and its peeking variant share method and path.
  assert.equal(findSpecOperations("GET", "/_matrix/client/v3/events").length, 2);
  assertConformsToSpec("GET", "/_matrix/client/v3/events", 200, { start: "s1", end: "s2", chunk: [] });
});
