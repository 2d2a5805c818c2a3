import { LEAN_FILTER } from "../matrix.js";
import { membershipPlan, openSessions, seedRooms, settleAfterBurst, syncWaiters } from "../population.js";
import { PollerPool, connectInSteps } from "../pollers.js";
import { openFileLimit, serverRss } from "../proc.js";
import { linearFit, median, mib, round, sleep } from "../stats.js";
import type { Check, Scenario } from "../scenario.js";

const FULL = { users: 22_000, rooms: 5000 };
const TARGET_BYTES = 500 * 1024 * 1024;

/**
 * Resident memory of a server that holds an organisation: U accounts in R rooms with realistic
 * membership (Zipf-sized rooms: a few directorate-wide channels of thousands, some of hundreds,
 * most small team rooms; each user in about `per-user` rooms), measured
 *  - 3 s after seeding, in the process that wrote it all (the burst's garbage still in its heap);
 *  - `settle` seconds after seeding (default 30), idle: what a long-running server holds (the target);
 *  - after a restart on the same data (a fresh process; only on servers the bench started);
 *  - per 1,000 idle /sync long-polls, opened in steps on top of that.
 * Seeding on a server the bench started goes through its in-process fast paths (accounts share
 * one argon2 hash; rooms and joins through the event write path in batches), and its duration is
 * reported; on any other server it is plain HTTP and takes correspondingly longer.
 */
export const idle: Scenario = async (ctx) => {
  const users = ctx.num("users", ctx.quick ? 2000 : FULL.users);
  const rooms = ctx.num("rooms", ctx.quick ? 500 : FULL.rooms);
  const perUser = ctx.num("per-user", 3);
  const maxRoom = ctx.num("max-room", ctx.quick ? 200 : 2000);
  const wanted = Math.min(users, ctx.num("connections", ctx.quick ? 1000 : 5000));
  const step = ctx.num("step", ctx.quick ? 250 : 1000);
  const pollTimeoutS = ctx.num("poll-timeout", 30);
  const presenceOnline = ctx.num("presence-online", 0) === 1;
  const settleS = ctx.num("settle", 30);
  const { target } = ctx;
  const notes: string[] = ["shared 2-core machine: other engineers' test runs share the CPU, figures are noisy"];
  if (users < FULL.users || rooms < FULL.rooms) notes.push(`quick size: ${users} users, ${rooms} rooms; the target is for 22,000 and 5,000`);

  const serverPid = target.pids?.[0];
  const serverLimit = serverPid !== undefined ? openFileLimit(serverPid) : null;
  const connections = serverLimit !== null ? Math.min(wanted, serverLimit - 500) : wanted;
  if (connections < wanted) notes.push(`${connections} of ${wanted} connections: the server process may open ${serverLimit} files`);

  ctx.progress(`${users} accounts`);
  const t0 = Date.now();
  const creds = await target.users(users, "org");
  const usersS = (Date.now() - t0) / 1000;
  ctx.progress(`  ${usersS.toFixed(1)} s`);

  const plan = membershipPlan({ users, rooms, perUser, maxSize: maxRoom, namePrefix: "bench channel" });
  const sizes = plan.map((r) => r.members.length).sort((a, b) => b - a);
  const memberships = sizes.reduce((a, b) => a + b, 0);
  ctx.progress(`${rooms} rooms, ${memberships} memberships (largest ${sizes[0]}, median ${median(sizes)}, ${sizes.filter((s) => s >= 100).length} rooms of ≥ 100)`);
  const t1 = Date.now();
  await seedRooms(ctx, creds, plan, () => openSessions(ctx, creds, "bench seed", "seed sessions"), "rooms");
  const roomsS = (Date.now() - t1) / 1000;
  ctx.progress(`  ${roomsS.toFixed(1)} s`);

  // Right after the burst the heap still holds its garbage: V8 collects when allocation fills
  // the heap, never on a timer. What the organisation costs to hold is read once the server has
  // been idle for a while (Revier collects then, see memory.idle_reclaim_mb); both are reported.
  await sleep(3000);
  const rssBurst = await serverRss(target);
  ctx.progress(`server RSS 3 s after seeding: ${rssBurst !== null ? mib(rssBurst) : "?"} MiB`);
  await sleep(Math.max(0, settleS * 1000 - 3000));
  const rssSeeded = await serverRss(target);
  ctx.progress(`server RSS ${settleS} s after seeding: ${rssSeeded !== null ? mib(rssSeeded) : "?"} MiB`);
  let rssRestarted: number | null = null;
  if (target.restart) {
    await target.restart();
    await sleep(3000);
    rssRestarted = await serverRss(target);
    ctx.progress(`server RSS after a restart: ${rssRestarted !== null ? mib(rssRestarted) : "?"} MiB`);
  } else {
    notes.push("no restart figure: the bench did not start this server");
  }

  // Sessions for the first `connections` accounts, then their long-polls in steps.
  const t2 = Date.now();
  const sessions = await openSessions(ctx, creds.slice(0, connections), "bench idle", "sessions");
  const sessionsS = (Date.now() - t2) / 1000;
  // The logins were a burst of their own: memory per connection is read after it settled.
  const settled = await settleAfterBurst(ctx, target.urls[0]!, "the logins");
  const pollers = PollerPool.create({ perProcess: 5000, timeoutMs: pollTimeoutS * 1000, presence: presenceOnline ? "online" : "offline", filter: LEAN_FILTER }, target.urls[0]!);
  ctx.progress(`opening ${connections} idle long-polls, ${step} at a time`);
  await target.profile?.("start");
  const { steps, saturated } = await connectInSteps({ pool: pollers, sessions, step, rss: () => serverRss(target), waiters: () => syncWaiters(target.urls[0]!), progress: ctx.progress });
  await target.profile?.("stop", "idle-connections");
  if (saturated) notes.push(`the server stopped taking new long-polls at ${steps[steps.length - 1]!.connections} connections`);
  const pollerStatus = await pollers.stop();
  const points = steps.filter((p) => p.rssBytes !== null).map((p) => ({ x: p.connections, y: p.rssBytes! }));
  const fit = linearFit(points);
  const last = steps[steps.length - 1]!;
  if (!presenceOnline) notes.push("idle long-polls send set_presence=offline");

  const checks: Check[] = [
    { what: `RSS, ${users} users and ${rooms} rooms, ${settleS} s after seeding them`, target: "< 500 MB", pass: rssSeeded !== null && rssSeeded < TARGET_BYTES },
  ];
  if (target.restart) checks.push({ what: `RSS, ${users} users and ${rooms} rooms, after a restart`, target: "< 500 MB", pass: rssRestarted !== null && rssRestarted < TARGET_BYTES });
  checks.push({ what: "poller errors", target: "0", pass: (pollerStatus?.errors ?? 0) === 0 });
  if (pollerStatus && pollerStatus.errors > 0) notes.push(`poller errors: ${pollerStatus.errors}, last: ${pollerStatus.lastError}`);
  return {
    parameters: { users, rooms, per_user: perUser, max_room: maxRoom, connections, step, poll_timeout_s: pollTimeoutS, settle_s: settleS },
    figures: {
      memberships,
      largest_room: sizes[0] ?? 0,
      median_room: median(sizes),
      seed_users_s: round(usersS),
      seed_rooms_s: round(roomsS),
      sessions_s: round(sessionsS),
      settled_after_logins_s: round(settled.waitedS),
      rss_after_seed_3s_mb: rssBurst !== null ? mib(rssBurst) : Number.NaN,
      rss_after_seed_settled_mb: rssSeeded !== null ? mib(rssSeeded) : Number.NaN,
      rss_after_restart_mb: rssRestarted !== null ? mib(rssRestarted) : Number.NaN,
      rss_with_connections_mb: last.rssBytes !== null ? mib(last.rssBytes) : Number.NaN,
      connections: last.connections,
      rss_per_1000_connections_mb: round((fit.slope * 1000) / 1048576, 2),
      poller_errors: pollerStatus?.errors ?? 0,
    },
    checks,
    notes,
    detail: { steps: steps.map((p) => ({ connections: p.connections, rss_mb: p.rssBytes !== null ? mib(p.rssBytes) : null, server_waiters: p.serverWaiters, at_s: p.at_s })), room_sizes_top: sizes.slice(0, 20) },
  };
};
