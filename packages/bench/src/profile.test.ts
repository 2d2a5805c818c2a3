import { test } from "node:test";
import assert from "node:assert/strict";
import { busyStretches } from "./profile.js";

test("the longest stretches without an idle sample, with what ran in them", () => {
  const node = (id: number, functionName: string, children: number[] = []) => ({ id, callFrame: { functionName, url: id > 3 ? "file:///srv/packages/server/dist/x.js" : "", lineNumber: id }, children });
  // root → idle, program, work (→ checkpoint)
  const nodes = [node(1, "(root)", [2, 3, 4]), node(2, "(idle)"), node(3, "(garbage collector)"), node(4, "build", [5]), node(5, "checkpoint")];
  // 1 ms samples: idle, 3 busy (build, gc, build), idle, 5 busy (checkpoint ×4, gc), idle.
  const samples = [2, 4, 3, 4, 2, 5, 5, 5, 5, 3, 2];
  const profile = { nodes, startTime: 0, endTime: 11_000, samples, timeDeltas: samples.map(() => 1000) };
  const [longest, next, ...rest] = busyStretches(profile, 5, 2);
  assert.equal(rest.length, 0);
  assert.deepEqual(longest, { atMs: 6, ms: 5, top: [{ frame: "checkpoint server/dist/x.js:6", ms: 4 }, { frame: "(garbage collector)", ms: 1 }] });
  assert.deepEqual(next, { atMs: 2, ms: 3, top: [{ frame: "build server/dist/x.js:5", ms: 2 }, { frame: "(garbage collector)", ms: 1 }] });
});
