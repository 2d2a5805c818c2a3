import { createRoom, join, login, sendMessage, sync, type Session } from "../matrix.js";
import { percentile, pool, round, sleep } from "../stats.js";
import type { Scenario } from "../scenario.js";

/**
 * K members of one room long-poll /sync; one sender posts at a steady rate. Delivery latency is
 * from the sender's acknowledgement to the moment a member's sync response carries the event
 * (0 when the sync beat the acknowledgement back).
 */
export const fanout: Scenario = async (ctx) => {
  const members = ctx.num("members", ctx.quick ? 200 : 5000);
  const messages = ctx.num("messages", ctx.quick ? 20 : 50);
  const rate = ctx.num("rate", 2);
  const grace = ctx.num("grace", 15);
  const { urls } = ctx.target;
  const creds = await ctx.target.users(members + 1, "fan");
  ctx.progress(`logging in ${members} members and a sender`);
  const sessions = await pool(creds, 8, (c, i) => login(urls[i % urls.length]!, c.user, c.password));
  const sender = sessions[0]!;
  const readers = sessions.slice(1);
  const roomId = await createRoom(sender, { preset: "public_chat", name: "bench fanout" });
  ctx.progress(`joining ${members} members`);
  let joined = 0;
  await pool(readers, 8, async (s) => {
    await join(s, roomId);
    if (++joined % 1000 === 0) ctx.progress(`  ${joined} joined`);
  });

  // Message id → ack time; member index → (message id → receive time).
  const ackAt = new Map<string, number>();
  const received: Map<string, number>[] = readers.map(() => new Map());
  // One controller per member: a shared signal would collect an abort listener per request.
  const controllers = readers.map(() => new AbortController());
  let syncErrors = 0;
  let stop = false;

  const poll = async (s: Session, i: number, from: string) => {
    let since = from;
    while (!stop) {
      try {
        const r = await sync(s, { since, timeout: 30_000 }, controllers[i]!.signal);
        const now = Date.now();
        for (const ev of r.rooms?.join?.[roomId]?.timeline?.events ?? []) {
          const id = ev.content?.["bench_id"];
          if (typeof id === "string" && !received[i]!.has(id)) received[i]!.set(id, now);
        }
        since = r.next_batch;
      } catch {
        if (stop) return;
        syncErrors++;
        await sleep(200);
      }
    }
  };
  ctx.progress(`${members} members sync once, then long-poll`);
  const initial = await pool(readers, 16, async (s) => (await sync(s, { timeout: 0 })).next_batch);
  const ready = readers.map((s, i) => poll(s, i, initial[i]!));
  // Let every member reach its long-poll before the first message.
  await sleep(Math.min(10_000, 1000 + members * 2));

  ctx.progress(`sending ${messages} messages at ${rate}/s`);
  let sendErrors = 0;
  const started = Date.now();
  for (let m = 0; m < messages; m++) {
    const due = started + (m * 1000) / rate;
    if (due > Date.now()) await sleep(due - Date.now());
    const id = `f${started}_${m}`;
    try {
      await sendMessage(sender, roomId, id, { msgtype: "m.text", body: `alert ${m}`, bench_id: id });
      ackAt.set(id, Date.now());
    } catch {
      sendErrors++;
    }
  }
  const deadline = Date.now() + grace * 1000;
  const expected = readers.length * ackAt.size;
  const count = () => received.reduce((n, r) => n + r.size, 0);
  while (count() < expected && Date.now() < deadline) await sleep(100);
  stop = true;
  for (const c of controllers) c.abort();
  await Promise.allSettled(ready);

  const latencies: number[] = [];
  for (const r of received) for (const [id, at] of r) if (ackAt.has(id)) latencies.push(Math.max(0, at - ackAt.get(id)!));
  const undelivered = expected - latencies.length;
  const p99 = percentile(latencies, 99);
  const rss = await ctx.target.rssBytes();
  return {
    parameters: { members, messages, rate },
    figures: {
      delivered: latencies.length,
      undelivered,
      delivery_p50_ms: round(percentile(latencies, 50)),
      delivery_p99_ms: round(p99),
      delivery_max_ms: round(latencies.length ? Math.max(...latencies) : Number.NaN),
      send_errors: sendErrors,
      sync_errors: syncErrors,
      ...(rss !== null ? { server_rss_mb: round(rss / 1048576) } : {}),
    },
    checks: [
      { what: "delivery p99", target: "< 1 s", pass: p99 < 1000 },
      { what: "undelivered", target: "0", pass: undelivered === 0 && sendErrors === 0 },
    ],
  };
};
