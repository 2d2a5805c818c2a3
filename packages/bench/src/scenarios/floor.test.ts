import { test } from "node:test";
import assert from "node:assert/strict";
import { floor } from "./floor.js";
import { noTarget } from "../target.js";

test("floor: every member hears every message from both bare servers, and the figures are measured", async () => {
  const knobs: Record<string, number> = { members: 40, messages: 3, rate: 10 };
  const progress: string[] = [];
  const result = await floor({ target: noTarget("none"), quick: true, num: (k, fallback) => knobs[k] ?? fallback, progress: (m) => progress.push(m) });
  assert.deepEqual(result.parameters, { members: 40, messages: 3, rate: 10 });
  for (const fw of ["node", "fastify"]) {
    const f = (k: string) => result.figures[`${fw}_${k}`]!;
    assert.equal(f("undelivered"), 0, `${fw}: all delivered`);
    assert.equal(f("errors"), 0);
    // One answer per member and message, or fewer where a member came back after the next
    // message and got both in one; never more.
    assert.ok(f("answers") >= 40 * 3 - 40 && f("answers") <= 40 * 3, `${fw}: ${f("answers")} answers`);
    assert.ok(f("delivery_p99_ms") >= f("delivery_p50_ms"));
    assert.ok(f("delivery_max_ms") >= f("delivery_p99_ms"));
    // CPU comes from /proc: a number on Linux (this machine), NaN where /proc is missing.
    if (process.platform === "linux") {
      assert.ok(Number.isFinite(f("cpu_us_per_answer")) && f("cpu_us_per_answer") >= f("main_thread_us_per_answer"));
      assert.ok(f("main_thread_us_per_answer") >= f("main_thread_system_us_per_answer"));
    }
    // The collector's pauses come from the server itself, over the same window.
    assert.ok(Number.isFinite(f("gc_us_per_answer")) && f("gc_us_per_answer") >= 0);
  }
  assert.equal(result.checks.length, 0);
  assert.ok(progress.some((m) => m.startsWith("fastify: 40 long-polls waiting")));
});
