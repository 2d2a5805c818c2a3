import { test } from "node:test";
import assert from "node:assert/strict";
import { MembershipCache, membershipsAt, membershipsOf, type MemberRow } from "./membership-cache.js";

const row = (room: string): MemberRow => ({ room_id: room, membership: "join", stream_ordering: 1, event_id: `$${room}` });

test("a load is shared until a drop; a drop during the load keeps its answer from being reused", async () => {
  let loads = 0;
  let release!: () => void;
  let gate = Promise.resolve();
  const cache = new MembershipCache(async () => {
    loads++;
    await gate;
    return [row(`!r${loads}`)];
  });
  assert.deepEqual((await cache.get("@a:x")).rows, [row("!r1")]);
  assert.deepEqual((await cache.get("@a:x")).rows, [row("!r1")]);
  assert.equal(loads, 1);
  cache.drop("@a:x");
  gate = new Promise<void>((resolve) => (release = resolve));
  const inFlight = cache.get("@a:x");
  // A membership change announced while the load runs: the load may have read the old state.
  cache.drop("@a:x");
  release();
  assert.deepEqual((await inFlight).rows, [row("!r2")]);
  assert.deepEqual((await cache.get("@a:x")).rows, [row("!r3")], "read again after the drop");
  assert.equal(loads, 3);
});

test("bounded: the least recently used user goes first; failed loads are not kept", async () => {
  let fail = false;
  let loads = 0;
  const cache = new MembershipCache(async (u) => {
    loads++;
    if (fail) throw new Error("database gone");
    return [row(u)];
  }, 2);
  await cache.get("@a:x");
  await cache.get("@b:x");
  await cache.get("@a:x"); // @b is now the least recently used
  await cache.get("@c:x");
  assert.equal(cache.size, 2);
  loads = 0;
  await cache.get("@a:x");
  assert.equal(loads, 0, "@a stayed");
  await cache.get("@b:x");
  assert.equal(loads, 1, "@b was evicted and is read again");
  fail = true;
  cache.drop("@c:x");
  await assert.rejects(cache.get("@c:x"), /database gone/);
  fail = false;
  assert.deepEqual((await cache.get("@c:x")).rows, [row("@c:x")]);
});

test("as of a position: the cached rows and joined rooms as they are, or those up to it", () => {
  const rows: MemberRow[] = [
    { room_id: "!a:x", membership: "join", stream_ordering: 3, event_id: "$a" },
    { room_id: "!b:x", membership: "leave", stream_ordering: 5, event_id: "$b" },
    { room_id: "!c:x", membership: "join", stream_ordering: 9, event_id: "$c" },
  ];
  const m = membershipsOf(rows);
  assert.equal(m.newest, 9);
  assert.deepEqual([...m.joined], ["!a:x", "!c:x"]);
  assert.equal(membershipsAt(m, 9), m, "nothing newer than asked: shared, not copied");
  assert.equal(membershipsAt(m, 12), m);
  const at5 = membershipsAt(m, 5);
  assert.deepEqual(at5.rows.map((r) => r.room_id), ["!a:x", "!b:x"]);
  assert.deepEqual([...at5.joined], ["!a:x"], "a room joined after the position is not joined yet");
  assert.equal(at5.newest, 5);
  assert.ok(Object.isFrozen(m.rows), "shared between requests, so read-only");
});
