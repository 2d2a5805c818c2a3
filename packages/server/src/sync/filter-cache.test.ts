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
