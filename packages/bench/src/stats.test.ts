import { test } from "node:test";
import assert from "node:assert/strict";
import { linearFit, median, percentile, percentileByGroup, pool } from "./stats.js";

test("percentile is nearest-rank over unsorted samples", () => {
  const samples = [5, 1, 4, 2, 3];
  assert.equal(percentile(samples, 50), 3);
  assert.equal(percentile(samples, 99), 5);
  assert.equal(percentile(samples, 0), 1);
  assert.equal(median([10]), 10);
  assert.ok(Number.isNaN(percentile([], 50)));
});

test("linearFit recovers slope and intercept of a line and needs two distinct x", () => {
  const fit = linearFit([0, 1000, 2000, 3000].map((x) => ({ x, y: 100 + 0.5 * x })));
  assert.equal(fit.slope, 0.5);
  assert.equal(fit.intercept, 100);
  assert.ok(Number.isNaN(linearFit([{ x: 1, y: 2 }]).slope));
  assert.ok(Number.isNaN(linearFit([]).slope));
});

test("pool keeps result order and never exceeds its limit", async () => {
  let running = 0;
  let most = 0;
  const out = await pool([5, 4, 3, 2, 1], 2, async (n, i) => {
    running++;
    most = Math.max(most, running);
    await new Promise((r) => setImmediate(r));
    running--;
    return n * 10 + i;
  });
  assert.deepEqual(out, [50, 41, 32, 23, 14]);
  assert.equal(most, 2);
});

test("percentileByGroup gives each group's percentile in the given order and skips empty or unknown groups", () => {
  const samples: Array<[string, number]> = [
    ["b", 5],
    ["a", 1],
    ["b", 7],
    ["a", 3],
    ["x", 100],
    ["a", 2],
  ];
  assert.deepEqual(percentileByGroup(["a", "b", "c"], samples, 100), [3, 7]);
  assert.deepEqual(percentileByGroup(["b", "a"], samples, 50), [5, 2]);
});
