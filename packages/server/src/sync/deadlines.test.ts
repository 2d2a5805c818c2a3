import { test } from "node:test";
import assert from "node:assert/strict";
import { Deadlines } from "./deadlines.js";

interface Item {
  name: string;
  deadlineSlot: number;
}
const item = (name: string): Item => ({ name, deadlineSlot: -1 });

/** Deadlines with a clock the test moves; checks are made by hand (the timer's own checks find nothing due). */
function setUp(granularityMs = 100) {
  const clock = { t: 1_000_000 };
  const fired: string[] = [];
  const d = new Deadlines<Item>((i) => fired.push(i.name), granularityMs, () => clock.t);
  return { clock, fired, d };
}

test("an item fires at the first check at or after its deadline, never before", () => {
  const { clock, fired, d } = setUp();
  d.add(item("a"), clock.t + 1050);
  d.add(item("b"), clock.t + 1100);
  clock.t += 1049;
  d.check();
  assert.deepEqual(fired, []);
  clock.t += 1;
  d.check();
  // Filed in the slot ending at +1100: not early for "a" at +1050, and "b" is due with it.
  assert.deepEqual(fired, []);
  clock.t += 50;
  d.check();
  assert.deepEqual(fired.sort(), ["a", "b"]);
  assert.equal(d.size, 0);
});

test("a removed item does not fire; removing twice or an item never filed is harmless", () => {
  const { clock, fired, d } = setUp();
  const a = item("a");
  const b = item("b");
  d.add(a, clock.t + 500);
  d.add(b, clock.t + 500);
  d.remove(a);
  d.remove(a);
  d.remove(item("never"));
  assert.equal(d.size, 1);
  clock.t += 500;
  d.check();
  assert.deepEqual(fired, ["b"]);
  assert.equal(a.deadlineSlot, -1);
});

test("an item fired can remove others due in the same check; those do not fire", () => {
  const clock = { t: 0 };
  const fired: string[] = [];
  const items = [item("a"), item("b"), item("c")];
  const d = new Deadlines<Item>(
    (i) => {
      fired.push(i.name);
      for (const other of items) if (other !== i) d.remove(other);
    },
    100,
    () => clock.t,
  );
  for (const i of items) d.add(i, 100);
  clock.t = 100;
  d.check();
  assert.equal(fired.length, 1);
  assert.equal(d.size, 0);
});

test("with the real clock: a wait ends after its deadline, and the timer stops once nothing is filed", async () => {
  const started = performance.now();
  let firedAt = 0;
  const d = new Deadlines<Item>(() => (firedAt = performance.now()), 20);
  d.add(item("a"), started + 60);
  // Were the timer left running, this file's process would not end and the test run would time out.
  while (firedAt === 0) await new Promise((r) => setTimeout(r, 10));
  assert.ok(firedAt >= started + 60, `fired ${firedAt - started} ms after the start, before its 60-ms deadline`);
  assert.equal(d.size, 0);
});
