import { test } from "node:test";
import assert from "node:assert/strict";
import { Limiter } from "./limiter.js";

test("at most `limit` tasks run at once, the rest in arrival order; failures free their slot", async () => {
  const limiter = new Limiter(2);
  let running = 0;
  let peak = 0;
  const order: number[] = [];
  const task = (i: number, fail = false) =>
    limiter.run(async () => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, 5));
      running--;
      order.push(i);
      if (fail) throw new Error(`task ${i}`);
      return i;
    });
  const results = await Promise.allSettled([task(1), task(2, true), task(3), task(4), task(5)]);
  assert.equal(peak, 2);
  assert.deepEqual(order, [1, 2, 3, 4, 5]);
  assert.deepEqual(
    results.map((r) => r.status),
    ["fulfilled", "rejected", "fulfilled", "fulfilled", "fulfilled"],
  );
  assert.equal(limiter.queued, 0);
  assert.equal(await task(6), 6, "slots are all free again");
});

test("queued tasks that never wait for I/O still let the event loop turn between them", async () => {
  // Like /sync builds on SQLite: everything resolves in microtasks. Handed over directly, all of
  // them would run before any timer, socket read or write acknowledgement got a turn.
  const limiter = new Limiter(2);
  const finished: number[] = [];
  let finishedWhenLoopTurned = -1;
  const all = Array.from({ length: 50 }, (_, i) =>
    limiter.run(async () => {
      await Promise.resolve();
      finished.push(i);
    }),
  );
  setImmediate(() => (finishedWhenLoopTurned = finished.length));
  await Promise.all(all);
  assert.equal(finished.length, 50);
  assert.ok(finishedWhenLoopTurned >= 0 && finishedWhenLoopTurned < 10, `the loop turned only after ${finishedWhenLoopTurned} of 50 tasks`);
  assert.deepEqual(finished, [...finished].sort((a, b) => a - b), "still in arrival order");
});

test("a queue of thousands is served in arrival order", async () => {
  const limiter = new Limiter(3);
  const order: number[] = [];
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const all = Array.from({ length: 5000 }, (_, i) =>
    limiter.run(async () => {
      if (i < 3) await gate;
      order.push(i);
    }),
  );
  assert.equal(limiter.queued, 4997);
  open();
  await Promise.all(all);
  assert.deepEqual(order, Array.from({ length: 5000 }, (_, i) => i));
  assert.equal(limiter.queued, 0);
});
