import { test } from "node:test";
import assert from "node:assert/strict";
import { KeyedLock } from "./keyed-lock.js";

test("tasks of one key never overlap and run in order; a failure does not block the next", async () => {
  const lock = new KeyedLock();
  const log: string[] = [];
  let inside = 0;
  const task = (name: string, fail = false) =>
    lock.run("anna", async () => {
      inside++;
      assert.equal(inside, 1, "two tasks of one key overlapped");
      log.push(`start ${name}`);
      await new Promise((r) => setTimeout(r, 5));
      log.push(`end ${name}`);
      inside--;
      if (fail) throw new Error(name);
      return name;
    });
  const results = await Promise.allSettled([task("a"), task("b", true), task("c")]);
  assert.deepEqual(log, ["start a", "end a", "start b", "end b", "start c", "end c"]);
  assert.deepEqual(results.map((r) => r.status), ["fulfilled", "rejected", "fulfilled"]);
});

test("different keys run side by side", async () => {
  const lock = new KeyedLock();
  let release!: () => void;
  const blocked = lock.run("anna", () => new Promise<void>((r) => (release = r)));
  assert.equal(await lock.run("bert", async () => "bert ran"), "bert ran");
  release();
  await blocked;
});
