import { test } from "node:test";
import assert from "node:assert/strict";
import { add, touch } from "./lru.js";

test("uses count for eviction once the map is more than half full; the oldest goes beyond the limit", () => {
  const map = new Map<string, number>();
  add(map, "a", 1, 4);
  add(map, "b", 2, 4);
  // Half full: a use does not reorder.
  touch(map, "a", 1, 4);
  assert.deepEqual([...map.keys()], ["a", "b"]);
  add(map, "c", 3, 4);
  // More than half full: a use moves the key to the end.
  touch(map, "a", 1, 4);
  assert.deepEqual([...map.keys()], ["b", "c", "a"]);
  add(map, "d", 4, 4);
  add(map, "e", 5, 4);
  assert.deepEqual([...map.keys()], ["c", "a", "d", "e"], "b, the least recently used, went");
  add(map, "c", 6, 4);
  assert.deepEqual([...map.entries()], [["a", 1], ["d", 4], ["e", 5], ["c", 6]], "replacing counts as a use");
});
