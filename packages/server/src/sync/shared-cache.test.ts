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
