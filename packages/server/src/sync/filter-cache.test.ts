import { test } from "node:test";
import assert from "node:assert/strict";
import { FilterCache } from "./filter-cache.js";
import type { Filter } from "./filter.js";

test("a filter is loaded once per key, handed out frozen, and the cache stays bounded", async () => {
  const cache = new FilterCache(2);
  let loads = 0;
  const load = (f: Filter) => async () => {
    loads++;
    return f;
  };
  const a = await cache.get("a", load({ room: { timeline: { limit: 1 } } }));
  assert.equal(await cache.get("a", load({})), a);
  assert.equal(loads, 1);
  assert.ok(Object.isFrozen(a) && Object.isFrozen(a.room!.timeline), "shared between requests: frozen all the way down");
  assert.throws(() => {
    (a.room!.timeline as { limit?: number }).limit = 5;
  });
  await cache.get("b", load({}));
  await cache.get("c", load({})); // "a" is the least recently used and goes
  await cache.get("a", load({}));
  assert.equal(loads, 4);
  await assert.rejects(cache.get("bad", async () => Promise.reject(new Error("invalid"))));
  await assert.rejects(cache.get("bad", async () => Promise.reject(new Error("invalid again"))), /again/, "failures are not kept");
  const big = "x".repeat(5000);
  await cache.get(big, load({}));
  await cache.get(big, load({}));
  assert.equal(loads, 6, "oversized keys are loaded each time");
});

test("stored filters are read once per user and id, however many there are, and a missing one is not remembered", async () => {
  const cache = new FilterCache(2, 3);
  const reads: string[] = [];
  const filters = new Map(["a", "b", "c", "d", "e"].map((u) => [u, { room: { rooms: [`!${u}:x`] } } as Filter]));
  const read = (key: string, filter: Filter | undefined) => async () => {
    reads.push(key);
    return filter;
  };
  for (let round = 0; round < 2; round++) for (const u of ["a", "b", "c"]) assert.equal(await cache.storedFilter(`@${u}\u00001`, read(u, filters.get(u))), filters.get(u));
  assert.deepEqual(reads, ["a", "b", "c"], "three users fit; the second round reads nothing");
  await cache.storedFilter("@d\u00001", read("d", filters.get("d"))); // "a" is the least recently used and goes
  await cache.storedFilter("@a\u00001", read("a", filters.get("a")));
  assert.deepEqual(reads, ["a", "b", "c", "d", "a"]);
  assert.equal(await cache.storedFilter("@e\u00009", read("e", undefined)), undefined);
  assert.equal(await cache.storedFilter("@e\u00009", read("e", filters.get("e"))), filters.get("e"), "an unknown id is asked again (it may be uploaded later)");
});

test("peek hands out what a lookup would find without loading, and counts as a use", async () => {
  const cache = new FilterCache(2, 2);
  const f: Filter = { room: { timeline: { limit: 3 } } };
  assert.equal(cache.peek("stored", "@a\u00001"), undefined, "nothing loaded yet");
  const stored = await cache.storedFilter("@a\u00001", async () => f);
  assert.equal(cache.peek("stored", "@a\u00001"), stored);
  assert.equal(cache.peek("text", "@a\u00001"), undefined, "stored and inline filters are kept apart");
  const text = await cache.get("{x", async () => f);
  assert.equal(cache.peek("text", "{x"), text);
  // A peek keeps an entry in use: "@a" stays when "@c" pushes out the least recently used.
  await cache.storedFilter("@b\u00001", async () => f);
  cache.peek("stored", "@a\u00001");
  await cache.storedFilter("@c\u00001", async () => f);
  assert.notEqual(cache.peek("stored", "@a\u00001"), undefined);
  assert.equal(cache.peek("stored", "@b\u00001"), undefined);
});
