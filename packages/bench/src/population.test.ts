import { test } from "node:test";
import assert from "node:assert/strict";
import { groupPlan, membershipPlan, roomSizes } from "./population.js";

test("roomSizes follow rank order within bounds and add up to about users × perUser", () => {
  const sizes = roomSizes(5000, 22_000, 3, 2000);
  assert.equal(sizes.length, 5000);
  assert.ok(sizes.every((s) => s >= 2 && s <= 2000));
  for (let i = 1; i < sizes.length; i++) assert.ok(sizes[i]! <= sizes[i - 1]!);
  const total = sizes.reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(total - 66_000) / 66_000 < 0.02, `total ${total}`);
  assert.equal(sizes[0], 2000);
});

test("membershipPlan is deterministic, has no repeated members and leaves nobody out", () => {
  const a = membershipPlan({ users: 2000, rooms: 500, perUser: 3, maxSize: 200 });
  const b = membershipPlan({ users: 2000, rooms: 500, perUser: 3, maxSize: 200 });
  assert.deepEqual(a, b);
  const seen = new Set<number>();
  for (const room of a) {
    assert.equal(new Set(room.members).size, room.members.length);
    assert.equal(room.creator, room.members[0]);
    for (const m of room.members) {
      assert.ok(m >= 0 && m < 2000);
      seen.add(m);
    }
  }
  assert.equal(seen.size, 2000);
});

test("groupPlan cuts accounts into consecutive rooms", () => {
  const plan = groupPlan(120, 50, "team");
  assert.deepEqual(
    plan.map((r) => r.members.length),
    [50, 50, 20],
  );
  assert.equal(plan[2]!.members[0], 100);
});
