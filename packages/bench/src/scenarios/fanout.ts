import { sendMessage, sendReceipt, sync, uploadFilter, withLeanConnection, LEAN_FILTER, LEAN_FILTER_WITH_RECEIPTS, MatrixHttpError, type Session, type SyncResponse } from "../matrix.js";
import { median, percentile, percentileByGroup, pool, round, sleep } from "../stats.js";
import { openSessions, seedRooms } from "../population.js";
import type { Scenario } from "../scenario.js";
import { serverCpuSeconds } from "../proc.js";
import { LeanConnection } from "../lean-client.js";

/**
 * A member's long-poll loop. Over plain http each member holds one LeanConnection: the bench
 * shares the machine with the server and answers thousands of responses per message, so what
 * it spends per request is CPU the server does not get (node:http cost the bench about 200 µs
 * per cycle, fetch more). The filter is stored once and named by id, as Element and the SDKs
 * do. Read receipts go over a second connection of the member's own, one after another, as a
 * client's do beside its long-poll. https targets keep fetch.
 */
class Member {
  private readonly conn: LeanConnection | null;
  private readonly headers: string;
  private readonly controller = new AbortController();
  private readonly receipts: Session;
  private lastReceipt: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly s: Session,
    private readonly filterId: string,
  ) {
    this.conn = withLeanConnection(s).lean ?? null;
    this.headers = `authorization: Bearer ${s.accessToken}\r\n`;
    this.receipts = withLeanConnection(s);
  }

  /** A public read receipt, sent once the member's previous one has been answered. */
  receipt(roomId: string, eventId: string): Promise<void> {
    const sent = this.lastReceipt.then(() => sendReceipt(this.receipts, roomId, eventId));
    this.lastReceipt = sent.catch(() => undefined);
    return sent;
  }

  /** Sync answers read, and their bytes (plain http only). */
  answers = 0;
  bytes = 0;

  async sync(since: string, timeoutMs: number): Promise<SyncResponse> {
    if (!this.conn) return sync(this.s, { since, timeout: timeoutMs, filter: this.filterId }, this.controller.signal);
    const res = await this.conn.get(`/_matrix/client/v3/sync?since=${encodeURIComponent(since)}&timeout=${timeoutMs}&filter=${encodeURIComponent(this.filterId)}`, this.headers);
    this.answers++;
    this.bytes += res.body.length;
    const text = res.body.toString("utf8");
    if (res.status !== 200) throw new MatrixHttpError(res.status, text, "GET /sync");
    return JSON.parse(text) as SyncResponse;
  }

  close(): void {
    this.conn?.close();
    this.receipts.lean?.close();
    this.controller.abort();
  }
}

/**
 * K members of one room long-poll /sync; one sender posts at a steady rate. Delivery latency is
 * from the sender's acknowledgement to the moment a member's sync response carries the event
 * (0 when the sync beat the acknowledgement back).
 *
 * `--receipts 1`: every member sends a read receipt for the newest message an answer brought, as
 * a client showing the room does. The members' filter leaves receipts out, as lean clients' do;
 * `--receipts 2`: it lets them in, as Element's does, so each receipt is news to every member.
 */
export const fanout: Scenario = async (ctx) => {
  const members = ctx.num("members", ctx.quick ? 200 : 5000);
  const messages = ctx.num("messages", ctx.quick ? 20 : 50);
  const rate = ctx.num("rate", 2);
  const grace = ctx.num("grace", 15);
  const receiptMode = ctx.num("receipts", 0);
  const receipts = receiptMode === 1 || receiptMode === 2;
  const filter = receiptMode === 2 ? LEAN_FILTER_WITH_RECEIPTS : LEAN_FILTER;
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
  let syncErrors = 0;
  let receiptsSent = 0;
  let receiptErrors = 0;
  let receiptError: string | undefined;
  let stop = false;

  const poll = async (m: Member, i: number, from: string) => {
    let since = from;
    while (!stop) {
      try {
        const r = await m.sync(since, 30_000);
        const now = Date.now();
        let newest: string | null = null;
        for (const ev of r.rooms?.join?.[roomId]?.timeline?.events ?? []) {
          const id = ev.content?.["bench_id"];
          if (typeof id === "string" && !received[i]!.has(id)) {
            received[i]!.set(id, now);
            newest = ev.event_id;
          }
        }
        since = r.next_batch;
        if (receipts && newest !== null) {
          receiptsSent++;
          m.receipt(roomId, newest).catch((err: unknown) => {
            // Cut off by the bench closing the members' connections at the end: not the server's.
            if (stop) return;
            receiptErrors++;
            receiptError ??= err instanceof Error ? `${err.message}${err.cause instanceof Error ? `: ${err.cause.message}` : ""}` : String(err);
          });
        }
      } catch {
        if (stop) return;
        syncErrors++;
        await sleep(200);
      }
    }
  };
  ctx.progress(`${members} members store a filter, sync once, then long-poll`);
  const filterIds = await pool(readers, 16, (s) => uploadFilter(s, filter));
  const initial = await pool(readers, 16, async (s, i) => (await sync(s, { timeout: 0, filter: filterIds[i]! })).next_batch);
  const polling = readers.map((s, i) => new Member(s, filterIds[i]!));
  const ready = polling.map((m, i) => poll(m, i, initial[i]!));
  // Let every member reach its long-poll before the first message.
  await sleep(Math.min(10_000, 1000 + members * 2));

  ctx.progress(`sending ${messages} messages at ${rate}/s`);
  await ctx.target.profile?.("start");
  const cpuAtStart = serverCpuSeconds(ctx.target);
  const answersAtStart = polling.reduce((n, m) => n + m.answers, 0);
  const bytesAtStart = polling.reduce((n, m) => n + m.bytes, 0);
  const mainAtStart = serverCpuSeconds(ctx.target, true);
  const systemAtStart = serverCpuSeconds(ctx.target, true, "system");
  const gcAtStart = (await ctx.target.gcMs?.()) ?? null;
  const benchCpuAtStart = process.cpuUsage();
  let sendErrors = 0;
  let lastAckAt = Date.now();
  // How long the sender waits for each acknowledgement while the members are being answered.
  const ackMs: number[] = [];
  const started = Date.now();
  for (let m = 0; m < messages; m++) {
    const due = started + (m * 1000) / rate;
    if (due > Date.now()) await sleep(due - Date.now());
    const id = `f${started}_${m}`;
    try {
      const sentAt = Date.now();
      await sendMessage(sender, roomId, id, { msgtype: "m.text", body: `alert ${m}`, bench_id: id });
      ackAt.set(id, (lastAckAt = Date.now()));
      ackMs.push(lastAckAt - sentAt);
    } catch {
      sendErrors++;
    }
  }
  const deadline = Date.now() + grace * 1000;
  const expected = readers.length * ackAt.size;
  const count = () => received.reduce((n, r) => n + r.size, 0);
  while (count() < expected && Date.now() < deadline) await sleep(100);
  const cpuAtEnd = serverCpuSeconds(ctx.target);
  const mainAtEnd = serverCpuSeconds(ctx.target, true);
  const systemAtEnd = serverCpuSeconds(ctx.target, true, "system");
  const gcAtEnd = (await ctx.target.gcMs?.()) ?? null;
  const windowS = (Date.now() - started) / 1000;
  const answers = polling.reduce((n, m) => n + m.answers, 0) - answersAtStart;
  const answerBytes = polling.reduce((n, m) => n + m.bytes, 0) - bytesAtStart;
  const sendingS = (lastAckAt - started) / 1000;
  const benchCpu = process.cpuUsage(benchCpuAtStart);
  await ctx.target.profile?.("stop", "fanout");
  stop = true;
  for (const m of polling) m.close();
  await Promise.allSettled(ready);

  const latencies: number[] = [];
  const byMessage: Array<[string, number]> = [];
  for (const r of received) {
    for (const [id, at] of r) {
      if (!ackAt.has(id)) continue;
      const ms = Math.max(0, at - ackAt.get(id)!);
      latencies.push(ms);
      byMessage.push([id, ms]);
    }
  }
  const undelivered = expected - latencies.length;
  const p99 = percentile(latencies, 99);
  // Each message's p99 over the members, in sending order: whether the tail comes from every
  // wave, from the first (cold caches after start) or from a stretch where the server fell behind.
  const messageP99 = percentileByGroup([...ackAt.keys()], byMessage, 99);
  const overSecond = new Map<string, number>();
  for (const [id, ms] of byMessage) if (ms >= 1000) overSecond.set(id, (overSecond.get(id) ?? 0) + 1);
  const rss = await ctx.target.rssBytes();
  return {
    parameters: { members, messages, rate, ...(receipts ? { receipts: receiptMode } : {}) },
    figures: {
      delivered: latencies.length,
      undelivered,
      delivery_p50_ms: round(percentile(latencies, 50)),
      delivery_p99_ms: round(p99),
      // A loop, not Math.max(...latencies): 250,000 arguments overflow the stack.
      delivery_max_ms: round(latencies.length ? latencies.reduce((a, b) => (b > a ? b : a), 0) : Number.NaN),
      first_message_p99_ms: round(messageP99[0] ?? Number.NaN),
      message_p99_median_ms: round(median(messageP99)),
      message_p99_worst_ms: round(messageP99.length ? Math.max(...messageP99) : Number.NaN),
      // Server CPU per delivered event over the window: what a wave costs, and so how long the
      // last member of a wave waits, with the figure's dependence on other load taken out.
      ...(cpuAtStart !== null && cpuAtEnd !== null && latencies.length > 0
        ? { server_cpu_s: round(cpuAtEnd - cpuAtStart), server_cpu_us_per_delivery: round(((cpuAtEnd - cpuAtStart) * 1e6) / latencies.length) }
        : {}),
      ...(mainAtStart !== null && mainAtEnd !== null ? { server_main_thread_cpu_s: round(mainAtEnd - mainAtStart) } : {}),
      // Of that, time in the kernel (the answers' socket writes and the requests' reads) and the
      // collector's pauses, per answer: the two shares a CPU profile misstates.
      ...(systemAtStart !== null && systemAtEnd !== null ? { server_main_thread_system_s: round(systemAtEnd - systemAtStart) } : {}),
      ...(gcAtStart !== null && gcAtEnd !== null && answers > 0 ? { server_gc_s: round((gcAtEnd - gcAtStart) / 1000), server_gc_us_per_answer: round(((gcAtEnd - gcAtStart) * 1000) / answers) } : {}),
      // Several messages per answer when members fall behind; 0 where fetch was used (https).
      sync_answers: answers,
      ...(answers > 0 ? { answer_bytes_avg: Math.round(answerBytes / answers) } : {}),
      send_ack_p50_ms: round(percentile(ackMs, 50)),
      send_ack_p99_ms: round(percentile(ackMs, 99)),
      // Sending paces itself by the acknowledgements: a server too busy to acknowledge in time
      // stretches the sending over more than messages / rate seconds.
      sending_s: round(sendingS),
      window_s: round(windowS),
      bench_cpu_s: round((benchCpu.user + benchCpu.system) / 1e6),
      send_errors: sendErrors,
      sync_errors: syncErrors,
      ...(receipts ? { receipts_sent: receiptsSent, receipt_errors: receiptErrors } : {}),
      ...(rss !== null ? { server_rss_mb: round(rss / 1048576) } : {}),
    },
    // Per message, in sending order: which waves make the tail.
    detail: { message_p99_ms: messageP99.map(round), message_over_1s: [...ackAt.keys()].map((id) => overSecond.get(id) ?? 0), ...(receiptError !== undefined ? { first_receipt_error: receiptError } : {}) },
    checks: [
      { what: "delivery p99", target: "< 1 s", pass: p99 < 1000 },
      { what: "undelivered", target: "0", pass: undelivered === 0 && sendErrors === 0 },
    ],
  };
};
