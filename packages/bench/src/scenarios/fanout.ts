import http from "node:http";
import { sendMessage, sync, LEAN_FILTER, MatrixHttpError, type Session, type SyncResponse } from "../matrix.js";
import { percentile, pool, round, sleep } from "../stats.js";
import { openSessions, seedRooms } from "../population.js";
import type { Scenario } from "../scenario.js";

/**
 * Long-polls over plain node:http with one keep-alive agent. The load generator shares the
 * machine with the server, and with thousands of members it answers thousands of responses per
 * message: measured here, a request costs the client about 250 µs of CPU with fetch and about
 * 60 µs with node:http, so with fetch the bench itself would need more than a core at 5,000
 * members and its own queueing would show up as delivery latency. https targets keep fetch.
 */
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });

function leanSync(s: Session, since: string, timeoutMs: number, signal: AbortSignal): Promise<SyncResponse> {
  if (!s.baseUrl.startsWith("http:")) return sync(s, { since, timeout: timeoutMs }, signal);
  const q = new URLSearchParams({ since, timeout: String(timeoutMs), filter: LEAN_FILTER });
  return new Promise((resolve, reject) => {
    const req = http.request(`${s.baseUrl}/_matrix/client/v3/sync?${q}`, { agent, headers: { authorization: `Bearer ${s.accessToken}` }, signal }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        if (res.statusCode !== 200) reject(new MatrixHttpError(res.statusCode ?? 0, text, "GET /sync"));
        else {
          try {
            resolve(JSON.parse(text) as SyncResponse);
          } catch (err) {
            reject(err instanceof Error ? err : new Error(String(err)));
          }
        }
      });
    });
    req.on("error", reject);
    req.end();
  });
}

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
  const creds = await ctx.target.users(members + 1, "fan");
  // Set-up takes the fast paths of a server the bench started (sessions without the argon2
  // verify, joins in batches through the event write path); any other server gets /login and
  // /join. Only the delivery of the messages below is measured.
  ctx.progress(`sessions for ${members} members and a sender`);
  const sessions = await openSessions(ctx, creds, "revier-bench", "fanout");
  const sender = sessions[0]!;
  const readers = sessions.slice(1);
  ctx.progress(`one room with ${members} members`);
  const [roomId] = await seedRooms(ctx, creds, [{ creator: 0, members: creds.map((_, i) => i), name: "bench fanout" }], async () => sessions, "fanout room");
  if (!roomId) throw new Error("the fan-out room was not created");

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
        const r = await leanSync(s, since, 30_000, controllers[i]!.signal);
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
  await ctx.target.profile?.("start");
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
  await ctx.target.profile?.("stop", "fanout");
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
      // A loop, not Math.max(...latencies): 250,000 arguments overflow the stack.
      delivery_max_ms: round(latencies.length ? latencies.reduce((a, b) => (b > a ? b : a), 0) : Number.NaN),
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
