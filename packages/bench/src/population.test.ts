import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { gcBetween, groupPlan, loopDelayFigures, membershipPlan, parseGcMetrics, parseLoopDelay, roomSizes, settleAfterBurst, syncWaiters } from "./population.js";

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

test("settleAfterBurst waits for the server's reclaim counter to move, at most maxS, and a plain pause without the counter", async () => {
  let reclaims: number | null = 0;
  const srv = http.createServer((req, res) => {
    if (req.url !== "/metrics") return res.writeHead(404).end();
    res.end(`# HELP revier_sync_waiters x\nrevier_sync_waiters 3\n${reclaims !== null ? `revier_heap_reclaims_total ${reclaims}\n` : ""}`);
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  const said: string[] = [];
  const ctx = { progress: (m: string) => void said.push(m) };
  try {
    assert.equal(await syncWaiters(url), 3);
    setTimeout(() => (reclaims = 1), 1500);
    const moved = await settleAfterBurst(ctx, url, "seeding", 10, 0, 0.2);
    assert.equal(moved.reclaimed, true);
    assert.ok(moved.waitedS >= 1.7 && moved.waitedS < 5, `waited ${moved.waitedS} s`);
    const still = await settleAfterBurst(ctx, url, "seeding", 1.5, 0);
    assert.equal(still.reclaimed, false);
    assert.ok(still.waitedS >= 1.5, `waited ${still.waitedS} s`);
    reclaims = null;
    const other = await settleAfterBurst(ctx, url, "the logins", 10, 0.3);
    assert.equal(other.reclaimed, null);
    assert.ok(other.waitedS >= 0.3 && other.waitedS < 1, `waited ${other.waitedS} s`);
    assert.match(said[0]!, /^settled after seeding: .* s, heap compacted$/);
    assert.match(said[2]!, /^settled after the logins: [\d.]+ s$/);
  } finally {
    srv.close();
  }
});

test("the collector's figures come from prom-client's histogram, per kind, and subtract between readings", () => {
  const reading = (minor: number[], major: number[]) => {
    // Cumulative buckets as prom-client writes them, from a list of pause lengths in seconds.
    const lines: string[] = [];
    for (const [kind, pauses] of [["minor", minor], ["major", major]] as const) {
      for (const le of ["0.001", "0.01", "0.1", "1", "+Inf"]) lines.push(`revier_nodejs_gc_duration_seconds_bucket{le="${le}",kind="${kind}"} ${pauses.filter((p) => le === "+Inf" || p <= Number(le)).length}`);
      lines.push(`revier_nodejs_gc_duration_seconds_sum{kind="${kind}"} ${pauses.reduce((a, b) => a + b, 0)}`);
      lines.push(`revier_nodejs_gc_duration_seconds_count{kind="${kind}"} ${pauses.length}`);
    }
    return parseGcMetrics(["# HELP revier_nodejs_gc_duration_seconds …", "revier_sync_waiters 3", ...lines].join("\n"));
  };
  const before = reading([0.002, 0.0005], [0.05]);
  assert.deepEqual(before?.get("major"), { count: 1, seconds: 0.05, over10ms: 1, over100ms: 0 });
  const after = reading([0.002, 0.0005, 0.004, 0.02], [0.05, 0.15, 0.3]);
  assert.deepEqual(gcBetween(before, after, "load_gc"), {
    load_gc_major_count: 2,
    load_gc_major_ms: 450,
    load_gc_minor_count: 2,
    load_gc_minor_ms: 24,
    load_gc_pauses_10ms_plus: 3,
    load_gc_pauses_100ms_plus: 2,
  });
  assert.equal(parseGcMetrics("revier_sync_waiters 3\n"), null);
  assert.deepEqual(gcBetween(null, after, "load_gc"), {});
});

test("the event loop's delay comes from prom-client's gauges, less the 10-ms check interval", () => {
  const text = [
    "# HELP revier_nodejs_eventloop_lag_p50_seconds The 50th percentile of the recorded event loop delays.",
    "revier_nodejs_eventloop_lag_seconds 0.0012",
    "revier_nodejs_eventloop_lag_min_seconds 0.010002176",
    "revier_nodejs_eventloop_lag_max_seconds 0.314376191",
    "revier_nodejs_eventloop_lag_p50_seconds 0.010125311",
    "revier_nodejs_eventloop_lag_p90_seconds 0.01163",
    "revier_nodejs_eventloop_lag_p99_seconds 0.069140479",
  ].join("\n");
  const delay = parseLoopDelay(text);
  assert.deepEqual(delay, { p50: 0.010125311, p99: 0.069140479, max: 0.314376191 });
  assert.deepEqual(loopDelayFigures(delay, "load_loop_delay"), { load_loop_delay_p50_ms: 0.1, load_loop_delay_p99_ms: 59.1, load_loop_delay_max_ms: 304.4 });
  // A server without them (or with one missing) gives no figures rather than made-up ones.
  assert.equal(parseLoopDelay("revier_sync_waiters 3\n"), null);
  assert.equal(parseLoopDelay(text.replace(/^.*_max_seconds.*$/m, "")), null);
  assert.deepEqual(loopDelayFigures(null, "load_loop_delay"), {});
});
