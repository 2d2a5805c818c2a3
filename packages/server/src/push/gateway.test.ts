import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { notifyBody, postToGateway, retryAfterMs, wantsFullFormat, type PushNotification } from "./gateway.js";

const pusher = { app_id: "de.revier.app", pushkey: "pk-1", created_ts: 1_700_000_000_123, data: { url: "https://gw.example/_matrix/push/v1/notify", format: "event_id_only", brand: "revier" } };

test("event-id-only notify body: no content, data without url, counts, device", () => {
  const n: PushNotification = { eventId: "$e", roomId: "!r:test", unread: 3, highlight: false };
  assert.deepEqual(notifyBody(pusher, n), {
    notification: {
      event_id: "$e",
      room_id: "!r:test",
      counts: { unread: 3 },
      prio: "high",
      devices: [{ app_id: "de.revier.app", pushkey: "pk-1", pushkey_ts: 1_700_000_000, data: { format: "event_id_only", brand: "revier" } }],
    },
  });
});

test("zero counts are omitted, highlights become a tweak, details only when given", () => {
  const body = notifyBody(pusher, { eventId: "$e", roomId: "!r:test", unread: 0, highlight: true });
  assert.deepEqual(body.notification.counts, {});
  assert.deepEqual((body.notification.devices as Array<Record<string, unknown>>)[0]!.tweaks, { highlight: true });
  const full = notifyBody(pusher, { eventId: "$e", roomId: "!r:test", unread: 1, highlight: false, details: { type: "m.room.message", sender: "@a:test", content: { body: "hi" } } });
  assert.equal(full.notification.type, "m.room.message");
  assert.deepEqual(full.notification.content, { body: "hi" });
  assert.equal(wantsFullFormat({ format: "event_id_only" }), false);
  assert.equal(wantsFullFormat({}), true);
});

let server: Server;
let base = "";
let respond: (req: IncomingMessage, res: ServerResponse) => void = (_q, res) => res.end();
const bodies: unknown[] = [];

before(async () => {
  server = createServer((req, res) => {
    let raw = "";
    req.on("data", (c: Buffer) => (raw += c.toString("utf8")));
    req.on("end", () => {
      bodies.push(JSON.parse(raw || "null"));
      respond(req, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => new Promise<void>((r) => server.close(() => r())));

const signal = () => AbortSignal.timeout(5000);

test("a gateway's verdict is read: delivered, rejected, retry with Retry-After, failed, no redirects", async () => {
  const url = `${base}/_matrix/push/v1/notify`;
  respond = (_q, res) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ rejected: [] }));
  assert.deepEqual(await postToGateway(url, { notification: { devices: [] } }, "pk-1", signal()), { result: "delivered" });
  assert.deepEqual(bodies.at(-1), { notification: { devices: [] } });

  respond = (_q, res) => res.writeHead(200).end(JSON.stringify({ rejected: ["pk-1"] }));
  assert.equal((await postToGateway(url, {}, "pk-1", signal())).result, "rejected");
  // Another pushkey rejected in the same answer does not concern this pusher.
  respond = (_q, res) => res.writeHead(200).end(JSON.stringify({ rejected: ["pk-2"] }));
  assert.equal((await postToGateway(url, {}, "pk-1", signal())).result, "delivered");

  respond = (_q, res) => res.writeHead(503, { "retry-after": "7" }).end();
  assert.deepEqual(await postToGateway(url, {}, "pk-1", signal()), { result: "retry", reason: "HTTP 503", retryAfterMs: 7000 });
  respond = (_q, res) => res.writeHead(429).end();
  assert.equal((await postToGateway(url, {}, "pk-1", signal())).result, "retry");
  respond = (_q, res) => res.writeHead(400).end("{}");
  assert.deepEqual(await postToGateway(url, {}, "pk-1", signal()), { result: "failed", reason: "HTTP 400" });

  const before = bodies.length;
  respond = (req, res) => (req.url === "/elsewhere" ? res.writeHead(200).end("{}") : res.writeHead(302, { location: `${base}/elsewhere` }).end());
  assert.equal((await postToGateway(url, {}, "pk-1", signal())).result, "failed");
  assert.equal(bodies.length, before + 1, "the redirect was not followed");
});

test("an unreachable gateway or a timeout means retry", async () => {
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
  const port = (closed.address() as AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  assert.equal((await postToGateway(`http://127.0.0.1:${port}/_matrix/push/v1/notify`, {}, "pk", signal())).result, "retry");
  respond = () => undefined; // never answers
  const slow = await postToGateway(`${base}/_matrix/push/v1/notify`, {}, "pk", AbortSignal.timeout(200));
  assert.deepEqual(slow, { result: "retry", reason: "timed out" });
  server.closeAllConnections();
});

test("Retry-After is read as seconds or as a date", () => {
  assert.equal(retryAfterMs(new Response(null, { headers: { "retry-after": "3" } })), 3000);
  assert.equal(retryAfterMs(new Response(null, { headers: { "retry-after": new Date(10_000).toUTCString() } }), 4_000), 6_000);
  assert.equal(retryAfterMs(new Response(null)), undefined);
});
