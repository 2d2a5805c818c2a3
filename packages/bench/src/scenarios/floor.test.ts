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
    // One answer per member and message, or fewer where a member came back after later messages
    // and got them in one (on a loaded machine, all three); never more, and at least one each.
    const answers = f("answers");
    assert.ok(answers >= 40, `${fw}: only ${answers} answers`);
    assert.ok(answers <= 40 * 3, `${fw}: ${answers} answers, more than one per member and message`);
    assert.ok(f("delivery_p99_ms") >= f("delivery_p50_ms"));
    assert.ok(f("delivery_max_ms") >= f("delivery_p99_ms"));
    // CPU comes from /proc: a number on Linux (this machine), NaN where /proc is missing. /proc
    // counts in clock ticks (10 ms) and the process's and its main thread's counters are read one
    // after the other, so over these 120 answers (about 50 ms of CPU) either may be a tick ahead.
    if (process.platform === "linux") {
      const tick = 10_000 / answers;
      assert.ok(Number.isFinite(f("cpu_us_per_answer")), `${fw}: process CPU measured`);
      assert.ok(f("cpu_us_per_answer") + 2 * tick >= f("main_thread_us_per_answer"), `${fw}: process ${f("cpu_us_per_answer")} µs per answer, main thread ${f("main_thread_us_per_answer")}`);
      assert.ok(f("main_thread_us_per_answer") + 2 * tick >= f("main_thread_system_us_per_answer"), `${fw}: main thread ${f("main_thread_us_per_answer")} µs per answer, in the kernel ${f("main_thread_system_us_per_answer")}`);
    }
    // The collector's pauses come from the server itself, over the same window.
    assert.ok(Number.isFinite(f("gc_us_per_answer")) && f("gc_us_per_answer") >= 0);
  }
  assert.equal(result.checks.length, 0);
  assert.ok(progress.some((m) => m.startsWith("fastify: 40 long-polls waiting")));
});
