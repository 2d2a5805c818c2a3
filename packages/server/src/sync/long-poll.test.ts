import { test } from "node:test";
import assert from "node:assert/strict";
import { longPollJitter } from "./sync.js";

test("long-polls of 10 s and more are answered up to a fifth (at most 10 s) early, shorter ones on time", () => {
  for (const t of [0, 600, 9_999]) assert.equal(longPollJitter(t), 0);
  const seen = new Set<number>();
  for (let i = 0; i < 2000; i++) {
    const j = longPollJitter(30_000);
    assert.ok(j >= 0 && j < 6_000, String(j));
    seen.add(Math.floor(j / 1000));
    assert.ok(longPollJitter(120_000) < 10_000);
  }
  assert.equal(seen.size, 6, "spread over the whole range");
});
