import { test } from "node:test";
import assert from "node:assert/strict";
import { procCpuSeconds } from "./proc.js";

test("procCpuSeconds follows the CPU a process burns and is null for a process that does not exist", () => {
  const before = procCpuSeconds(process.pid);
  assert.ok(before !== null && before >= 0);
  // Spin for 300 ms of wall time; on a loaded machine the process still gets a share of it.
  const until = Date.now() + 300;
  let x = 0;
  while (Date.now() < until) x += Math.sqrt(x + 1);
  assert.ok(x > 0);
  const after = procCpuSeconds(process.pid)!;
  assert.ok(after - before >= 0.05, `expected CPU time to grow, got ${before} → ${after}`);
  // Compare with what Node itself counts, in the same units (ticks are 10 ms).
  const own = process.cpuUsage();
  assert.ok(Math.abs(after - (own.user + own.system) / 1e6) < 0.5);
  // The main thread did the spinning; its own figure is part of the process's.
  const main = procCpuSeconds(process.pid, process.pid)!;
  assert.ok(main >= 0.05 && main <= after + 0.01, `main thread ${main}, process ${after}`);
  assert.equal(procCpuSeconds(2 ** 22 + 12345), null);
});
