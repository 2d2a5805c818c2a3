import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { createECDH, randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import path from "node:path";
import { MatrixError } from "@revier/protocol";
import { checkVapidKeys, loadOrCreateVapidKeys, validateWebPushPusher, WebPushSender } from "./web-push.js";

const dir = mkdtempSync(path.join(tmpdir(), "push-webpush-unit-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("VAPID keys are created once with mode 0600 and loaded again unchanged", () => {
  const file = path.join(dir, "vapid.json");
  const first = loadOrCreateVapidKeys(file);
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.equal(Buffer.from(first.publicKey, "base64url").length, 65);
  assert.deepEqual(loadOrCreateVapidKeys(file), first);
  assert.deepEqual(checkVapidKeys(JSON.parse(readFileSync(file, "utf8"))), first);
});

test("a VAPID key file readable by others, malformed or mismatched stops start-up", () => {
  const open = path.join(dir, "open.json");
  const keys = loadOrCreateVapidKeys(open);
  chmodSync(open, 0o644);
  assert.throws(() => loadOrCreateVapidKeys(open), /accessible by group or others/);
  const broken = path.join(dir, "broken.json");
  writeFileSync(broken, "{", { mode: 0o600 });
  assert.throws(() => loadOrCreateVapidKeys(broken), /malformed/);
  const other = loadOrCreateVapidKeys(path.join(dir, "other.json"));
  const mixed = path.join(dir, "mixed.json");
  writeFileSync(mixed, JSON.stringify({ publicKey: keys.publicKey, privateKey: other.privateKey }), { mode: 0o600 });
  assert.throws(() => loadOrCreateVapidKeys(mixed), /does not belong/);
});

function subscription() {
  const ecdh = createECDH("prime256v1");
  ecdh.generateKeys();
  return { ecdh, p256dh: ecdh.getPublicKey().toString("base64url"), auth: randomBytes(16).toString("base64url") };
}

function refusedPusher(pushkey: string, data: Record<string, unknown>, errcode: string, message: RegExp): void {
  assert.throws(
    () => validateWebPushPusher(pushkey, data),
    (e: unknown) => e instanceof MatrixError && e.toJSON().errcode === errcode && message.test(e.message),
  );
}

test("Web Push pushers need a P-256 pushkey, an https endpoint and a 16-byte auth secret", () => {
  const sub = subscription();
  validateWebPushPusher(sub.p256dh, { url: "https://push.example/wpush/abc", auth: sub.auth });
  validateWebPushPusher(sub.p256dh, { url: "http://127.0.0.1:9999/wpush", auth: sub.auth });
  refusedPusher("abc", { url: "https://push.example/x", auth: sub.auth }, "M_INVALID_PARAM", /pushkey must be/);
  const offCurve = Buffer.alloc(65, 1);
  offCurve[0] = 4;
  refusedPusher(offCurve.toString("base64url"), { url: "https://push.example/x", auth: sub.auth }, "M_INVALID_PARAM", /not a point on the P-256 curve/);
  refusedPusher(sub.p256dh, { auth: sub.auth }, "M_MISSING_PARAM", /data\.url/);
  refusedPusher(sub.p256dh, { url: "http://push.example/x", auth: sub.auth }, "M_INVALID_PARAM", /https/);
  refusedPusher(sub.p256dh, { url: "https://push.example/x" }, "M_MISSING_PARAM", /data\.auth/);
  refusedPusher(sub.p256dh, { url: "https://push.example/x", auth: "c2hvcnQ" }, "M_INVALID_PARAM", /16 bytes/);
});

let server: Server;
let base = "";
let status = 201;
const received: Array<{ headers: IncomingMessage["headers"]; body: Buffer }> = [];

before(async () => {
  server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => new Promise<void>((r) => server.close(() => r())));

test("sending: aes128gcm body, VAPID authorization, TTL and urgency; the status decides the outcome", async () => {
  const keys = loadOrCreateVapidKeys(path.join(dir, "send.json"));
  const sender = new WebPushSender(keys, "mailto:postmaster@example.org", 600);
  const sub = subscription();
  const target = { endpoint: `${base}/wpush/1`, p256dh: sub.p256dh, auth: sub.auth };
  status = 201;
  assert.deepEqual(await sender.send(target, '{"notification":{}}', AbortSignal.timeout(5000)), { result: "delivered" });
  const got = received.at(-1)!;
  assert.equal(got.headers["content-encoding"], "aes128gcm");
  assert.equal(got.headers.ttl, "600");
  assert.equal(got.headers.urgency, "high");
  assert.match(String(got.headers.authorization), new RegExp(`^vapid t=[\\w-]+\\.[\\w-]+\\.[\\w-]+, k=${keys.publicKey}$`));
  // RFC 8188 header: 16-byte salt, record size, key id length 65 (the sender's ephemeral P-256 key).
  assert.equal(got.body.readUInt32BE(16), 4096);
  assert.equal(got.body[20], 65);
  assert.equal(got.body[21], 4);
  assert.ok(!got.body.includes(Buffer.from("notification")), "the payload is not in clear text");

  status = 410;
  assert.equal((await sender.send(target, "{}", AbortSignal.timeout(5000))).result, "rejected");
  status = 404;
  assert.equal((await sender.send(target, "{}", AbortSignal.timeout(5000))).result, "rejected");
  status = 500;
  assert.equal((await sender.send(target, "{}", AbortSignal.timeout(5000))).result, "retry");
  status = 413;
  assert.equal((await sender.send(target, "{}", AbortSignal.timeout(5000))).result, "failed");
});
