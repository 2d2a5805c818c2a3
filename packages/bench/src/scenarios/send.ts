import { createRoom, sendMessage, setTyping, withLeanConnection } from "../matrix.js";
import { percentile, pool, round, sleep } from "../stats.js";
import { openSessions } from "../population.js";
import type { Scenario } from "../scenario.js";

/**
 * N senders, each in a room of its own, sending back to back. Only acknowledgements inside the
 * measurement window count, after a warm-up that fills caches and connection pools.
 *
 * `--typing 1`: each message comes between a typing notice and its end, as a client sends them
 * (three writes per message, each a stream position); the figures still count messages.
 */
export const send: Scenario = async (ctx) => {
  const senders = ctx.num("senders", 50);
  const seconds = ctx.num("seconds", ctx.quick ? 15 : 60);
  const warmup = ctx.num("warmup", ctx.quick ? 3 : 5);
  const typing = ctx.num("typing", 0) === 1;
  const creds = await ctx.target.users(senders, "send");
  ctx.progress(`sessions for ${senders} senders`);
  const opened = await openSessions(ctx, creds, "revier-bench", "senders");
  const rooms = await pool(opened, 8, (s) => createRoom(s, { preset: "private_chat", name: "bench send" }));
  // Each sender sends one request at a time, over a connection of its own.
  const sessions = opened.map(withLeanConnection);

  ctx.progress(`sending for ${warmup}+${seconds} s`);
  const start = Date.now();
  const measureFrom = start + warmup * 1000;
  const measureTo = measureFrom + seconds * 1000;
  const latencies: number[] = [];
  let errors = 0;
  // The server's CPU profile (with --cpu-prof) covers the measurement window only.
  const profiling = sleep(warmup * 1000).then(() => ctx.target.profile?.("start"));
  await Promise.all(
    sessions.map(async (s, i) => {
      let n = 0;
      while (Date.now() < measureTo) {
        let t0 = 0;
        let sentAt = 0;
        let acked = 0;
        try {
          if (typing) await setTyping(s, rooms[i]!, true);
          t0 = performance.now();
          sentAt = Date.now();
          await sendMessage(s, rooms[i]!, `b${start}_${n++}`, { msgtype: "m.text", body: `load ${n}` });
          acked = performance.now();
          if (typing) await setTyping(s, rooms[i]!, false);
        } catch {
          errors++;
          await sleep(50);
          continue;
        }
        // The acknowledgement of the message alone, not of the typing notices around it.
        if (sentAt >= measureFrom && Date.now() <= measureTo) latencies.push(acked - t0);
      }
    }),
  );
  for (const s of sessions) s.lean?.close();
  await profiling;
  await ctx.target.profile?.("stop", "send");
  const rate = latencies.length / seconds;
  const p50 = percentile(latencies, 50);
  const p99 = percentile(latencies, 99);
  return {
    parameters: { senders, seconds, warmup, ...(typing ? { typing: 1 } : {}) },
    figures: { events_per_s: round(rate), ack_p50_ms: round(p50), ack_p99_ms: round(p99), acked: latencies.length, errors },
    checks: [
      { what: "events/s", target: "≥ 3000", pass: rate >= 3000 },
      { what: "ack p99", target: "< 50 ms", pass: p99 < 50 },
      { what: "errors", target: "0", pass: errors === 0 },
    ],
  };
};
