/**
 * The `floor` scenario's server: a long-poll endpoint that does nothing of its own. Every GET
 * waits until the parent announces a message, then gets a /sync-shaped answer of about the size
 * Revier sends in the fanout scenario, built per request as a server would. What it costs per
 * answer and how late the last member hears of a message is what this machine's Node, kernel and
 * loopback allow any Node homeserver; Revier's fanout figures are read against it.
 *
 * REVIER_FLOOR_FRAMEWORK: "node" (node:http alone) or "fastify" (one route, no hooks, the JSON
 * object serialised by Fastify as Revier's routes are).
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { PerformanceObserver } from "node:perf_hooks";

export type FloorRequest = { type: "wave" } | { type: "waiting" } | { type: "stop" };
export type FloorReply = { type: "ready"; port: number } | { type: "waiting"; n: number; answers: number; gcMs: number } | { type: "waved"; at: number };

if (!process.send) throw new Error("floor-server runs as a child of the bench CLI");
const send = (m: FloorReply) => process.send!(m);
const framework = process.env.REVIER_FLOOR_FRAMEWORK === "fastify" ? "fastify" : "node";

let gcMs = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcMs += e.duration;
}).observe({ entryTypes: ["gc"] });

let position = 0;
let sentAt = 0;
let answers = 0;
type Waiter = (upto: number) => void;
const waiting: Waiter[] = [];

/** The answer to a member whose token was `since`: one message in one room, as Revier's lean filter yields. */
function answer(since: number): Record<string, unknown> {
  answers++;
  return {
    next_batch: `s${position}`,
    rooms: {
      join: {
        "!floorroomabcdefghij:revier.local": {
          timeline: {
            events: [
              {
                type: "m.room.message",
                sender: "@fan0:revier.local",
                content: { msgtype: "m.text", body: `alert ${position}`, bench_id: `floor_${position}`, sent_at: sentAt },
                event_id: `$floor${position}abcdefghijklmnopqrstuvwxyz0123456789ABCDEF`,
                origin_server_ts: sentAt,
                unsigned: { age: Date.now() - sentAt },
              },
            ],
            limited: false,
            prev_batch: `s${since}`,
          },
          state: { events: [] },
          ephemeral: { events: [] },
          account_data: { events: [] },
          summary: { "m.heroes": ["@fan1:revier.local", "@fan2:revier.local", "@fan3:revier.local", "@fan4:revier.local", "@fan5:revier.local"], "m.joined_member_count": 5001, "m.invited_member_count": 0 },
          unread_notifications: { notification_count: position, highlight_count: 0 },
        },
      },
      invite: {},
      leave: {},
      knock: {},
    },
    account_data: { events: [] },
    presence: { events: [] },
    to_device: { events: [] },
    device_lists: { changed: [], left: [] },
    device_one_time_keys_count: { signed_curve25519: 50 },
    device_unused_fallback_key_types: ["signed_curve25519"],
  };
}

function sinceOf(url: string): number {
  const m = /[?&]since=s(\d+)/.exec(url);
  return m ? Number(m[1]) : 0;
}

/** Calls `reply` now if the member has not had the newest message, else when the next one comes. */
function whenNews(since: number, reply: (upto: number) => void): void {
  if (since < position) reply(position);
  else waiting.push(reply);
}

let server: http.Server;
if (framework === "fastify") {
  const { default: Fastify } = await import("fastify");
  const app = Fastify({ logger: false, keepAliveTimeout: 120_000 });
  app.get("/_matrix/client/v3/sync", (req, reply) => {
    const since = sinceOf(req.url);
    whenNews(since, () => void reply.header("cache-control", "no-store").send(answer(since)));
    return reply;
  });
  await app.listen({ port: 0, host: "127.0.0.1" });
  server = app.server;
} else {
  server = http.createServer({ keepAliveTimeout: 120_000 }, (req, res) => {
    const since = sinceOf(req.url ?? "");
    whenNews(since, () => {
      res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(JSON.stringify(answer(since)));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
}

process.on("message", (m: FloorRequest) => {
  if (m.type === "waiting") return send({ type: "waiting", n: waiting.length, answers, gcMs });
  if (m.type === "stop") {
    server.closeAllConnections();
    server.close(() => process.exit(0));
    return;
  }
  // A message: every waiting member is answered, in arrival order, in one go.
  position++;
  sentAt = Date.now();
  send({ type: "waved", at: sentAt });
  for (const reply of waiting.splice(0)) reply(position);
});
send({ type: "ready", port: (server.address() as AddressInfo).port });
