import { test } from "node:test";
import assert from "node:assert/strict";
import { SharedSyncCache } from "./shared-cache.js";

test("requests asking the same question share one computation, even while it runs", async () => {
  const cache = new SharedSyncCache();
  let runs = 0;
  const compute = async () => {
    runs++;
    await new Promise((resolve) => setImmediate(resolve));
    return ["x"];
  };
  const [a, b] = await Promise.all([cache.get("k", undefined, compute), cache.get("k", undefined, compute)]);
  assert.equal(runs, 1);
  assert.equal(a, b);
  await cache.get("k", undefined, compute);
  assert.equal(runs, 1);
});

test("answers expire, and a change to their room drops them at once", async () => {
  const cache = new SharedSyncCache(1000);
  let runs = 0;
  const compute = async () => ++runs;
  assert.equal(await cache.get("k", "!r:x", compute, undefined, 0), 1);
  assert.equal(await cache.get("k", "!r:x", compute, undefined, 999), 1);
  assert.equal(await cache.get("k", "!r:x", compute, undefined, 1000), 2);
  cache.dropRoom("!other:x");
  assert.equal(await cache.get("k", "!r:x", compute, undefined, 1000), 2);
  cache.dropRoom("!r:x");
  assert.equal(await cache.get("k", "!r:x", compute, undefined, 1000), 3);
});

test("a failed computation is not kept", async () => {
  const cache = new SharedSyncCache();
  await assert.rejects(
    cache.get("k", undefined, async () => {
      throw new Error("database gone");
    }),
    /database gone/,
  );
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(await cache.get("k", undefined, async () => "ok"), "ok");
});

test("the oldest answers go once the byte bound is passed", async () => {
  const cache = new SharedSyncCache(60_000, 100, 250);
  let runs = 0;
  const compute = async () => ++runs;
  await cache.get("a", undefined, compute, () => 100);
  await cache.get("b", undefined, compute, () => 100);
  await cache.get("c", undefined, compute, () => 100);
  await new Promise((resolve) => setImmediate(resolve));
  // "a" went to make room for "c"; "b" and "c" are still there.
  assert.equal(await cache.get("b", undefined, compute), 2);
  assert.equal(await cache.get("c", undefined, compute), 3);
  assert.equal(await cache.get("a", undefined, compute), 4);
});

test("expired answers are dropped at the next miss, not kept until the bounds push them out", async () => {
  const cache = new SharedSyncCache(1000);
  for (let i = 0; i < 50; i++) await cache.get(`old:${i}`, i % 2 === 0 ? "!r:x" : undefined, async () => i, undefined, i);
  assert.equal(cache.size, 50);
  // Within the lifetime of the newest old entry: the first ones have expired, the rest stay.
  await cache.get("new:a", undefined, async () => "a", undefined, 1010);
  assert.equal(cache.size, 50 - 11 + 1);
  await cache.get("new:b", undefined, async () => "b", undefined, 5000);
  assert.equal(cache.size, 1);
  // The room index lost them too: dropping the room now touches nothing that is left.
  cache.dropRoom("!r:x");
  assert.equal(cache.size, 1);
  assert.equal(await cache.get("new:b", undefined, async () => "other", undefined, 5001), "b");
});
