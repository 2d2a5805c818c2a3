import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createDecipheriv, createECDH, createHmac, createPublicKey, randomBytes, verify, type ECDH } from "node:crypto";
import { describeEachDatabase } from "./support/suite.js";
import { api, enc } from "./support/http.js";
import { startClient, waitFor, type Client } from "./support/sdk.js";

/** Notify bodies as the gateway saw them; `any` keeps deep assertions terse. */
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

interface Received {
  at: number;
  path: string;
  headers: IncomingHttpHeaders;
  raw: Buffer;
  body: Json | null;
}

/**
 * A real HTTP server playing the other side: a push gateway at /_matrix/push/v1/notify and a Web
 * Push service at /wpush/…. `respond` decides each answer.
 */
class TestGateway {
  readonly received: Received[] = [];
  respond: (r: Received) => { status: number; json?: unknown } = () => ({ status: 200, json: { rejected: [] } });
  private server!: Server;
  base = "";

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const raw = Buffer.concat(chunks);
        let body: Json | null = null;
        try {
          body = JSON.parse(raw.toString("utf8")) as Json;
        } catch {
          // Web Push bodies are binary.
        }
        const r: Received = { at: Date.now(), path: req.url ?? "", headers: req.headers, raw, body };
        this.received.push(r);
        const answer = this.respond(r);
        res.writeHead(answer.status, { "content-type": "application/json" }).end(answer.json === undefined ? "" : JSON.stringify(answer.json));
      });
    });
    // Longer than the tests, so an idle keep-alive socket is never closed under a request (a spurious retry).
    this.server.keepAliveTimeout = 60_000;
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.base = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  get notifyUrl(): string {
    return `${this.base}/_matrix/push/v1/notify`;
  }

  forEvent(eventId: string): Received[] {
    return this.received.filter((r) => r.body?.notification?.event_id === eventId);
  }

  forPushkey(pushkey: string): Received[] {
    return this.received.filter((r) => r.body?.notification?.devices?.[0]?.pushkey === pushkey);
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/** RFC 8291 decryption, as the browser does it, with the subscription's private key and auth secret. */
function decryptWebPush(body: Buffer, ua: ECDH, auth: Buffer): string {
  const salt = body.subarray(0, 16);
  const idlen = body[20]!;
  const asPublic = body.subarray(21, 21 + idlen);
  const ciphertext = body.subarray(21 + idlen);
  const hmac = (key: Buffer, data: Buffer) => createHmac("sha256", key).update(data).digest();
  const prkKey = hmac(auth, ua.computeSecret(asPublic));
  const ikm = hmac(prkKey, Buffer.concat([Buffer.from("WebPush: info\0"), ua.getPublicKey(), asPublic, Buffer.from([1])]));
  const prk = hmac(salt, ikm);
  const cek = hmac(prk, Buffer.from("Content-Encoding: aes128gcm\0\x01", "latin1")).subarray(0, 16);
  const nonce = hmac(prk, Buffer.from("Content-Encoding: nonce\0\x01", "latin1")).subarray(0, 12);
  const decipher = createDecipheriv("aes-128-gcm", cek, nonce);
  decipher.setAuthTag(ciphertext.subarray(ciphertext.length - 16));
  const plain = Buffer.concat([decipher.update(ciphertext.subarray(0, ciphertext.length - 16)), decipher.final()]);
  let end = plain.length - 1;
  while (end >= 0 && plain[end] === 0) end--;
  assert.equal(plain[end], 2, "the last record ends with the 0x02 padding delimiter");
  return plain.subarray(0, end).toString("utf8");
}

/** Checks the VAPID JWT (RFC 8292): signed ES256 by the server's public key, audience = push service origin. */
function verifyVapid(authorization: string, publicKey: string, origin: string): Json {
  const m = /^vapid t=([\w-]+)\.([\w-]+)\.([\w-]+), k=([\w-]+)$/.exec(authorization);
  assert.ok(m, `unexpected Authorization header ${authorization}`);
  const [, h, p, s, k] = m;
  assert.equal(k, publicKey);
  const raw = Buffer.from(publicKey, "base64url");
  const key = createPublicKey({ key: { kty: "EC", crv: "P-256", x: raw.subarray(1, 33).toString("base64url"), y: raw.subarray(33).toString("base64url") }, format: "jwk" });
  assert.ok(verify("sha256", Buffer.from(`${h}.${p}`), { key, dsaEncoding: "ieee-p1363" }, Buffer.from(s!, "base64url")), "the VAPID signature verifies");
  const claims = JSON.parse(Buffer.from(p!, "base64url").toString("utf8")) as Json;
  assert.equal(claims.aud, origin);
  assert.ok(claims.exp * 1000 > Date.now());
  return claims;
}

describeEachDatabase("push delivery", ({ server, replace }) => {
  const gw = new TestGateway();
  const clients: Client[] = [];
  let bert: { userId: string; token: string };

  before(async () => {
    await gw.start();
    bert = await user("bert");
  });
  after(async () => {
    for (const c of clients) c.stopClient();
    await gw.stop();
  });

  async function user(localpart: string, role: "admin" | "user" = "user"): Promise<{ userId: string; token: string }> {
    const userId = await server().createUser(localpart, undefined, role);
    return { userId, token: (await server().login(localpart)).access_token };
  }

  async function roomWith(...members: Array<{ userId: string; token: string }>): Promise<string> {
    const created = await api<{ room_id: string }>(server().url, "POST", "/_matrix/client/v3/createRoom", { token: bert.token, body: { preset: "private_chat", invite: members.map((m) => m.userId) } });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    for (const m of members) {
      const joined = await api(server().url, "POST", `/_matrix/client/v3/rooms/${enc(created.body.room_id)}/join`, { token: m.token, body: {} });
      assert.equal(joined.status, 200, JSON.stringify(joined.body));
    }
    return created.body.room_id;
  }

  let txn = 0;
  async function send(roomId: string, body: string): Promise<string> {
    const res = await api<{ event_id: string }>(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/t${++txn}`, { token: bert.token, body: { msgtype: "m.text", body } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.event_id;
  }

  async function setPusher(token: string, pushkey: string, extra: Record<string, unknown> = {}): Promise<void> {
    const res = await api(server().url, "POST", "/_matrix/client/v3/pushers/set", {
      token,
      body: { kind: "http", app_id: "de.revier.test", pushkey, app_display_name: "Revier", device_display_name: "Diensthandy", lang: "de", data: { url: gw.notifyUrl, format: "event_id_only" }, ...extra },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  }

  async function setDuty(token: string, body: unknown): Promise<void> {
    const res = await api(server().url, "PUT", "/_revier/client/v1/duty", { token, body });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  }

  /** Everything committed so far has gone through the queue once (delivered, silenced or waiting for a retry). */
  const flush = () => server().services.pushDelivery.flush();

  async function queued(): Promise<number> {
    const row = await server().services.storage.db.selectFrom("push_queue").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirst();
    return Number(row?.n ?? 0);
  }

  test("a pusher set with matrix-js-sdk gets event-id-only notifications, even when it asks for the full format", async () => {
    const anna = await user("anna");
    const client = await startClient(server(), "anna");
    clients.push(client);
    // No `format`: the pusher asks for the full format; the organisation has not allowed content.
    await client.setPusher({ kind: "http", app_id: "de.revier.web", pushkey: "anna-phone", app_display_name: "Revier", device_display_name: "Annas Diensthandy", lang: "de", data: { url: gw.notifyUrl } });
    const before = Date.now();
    const roomId = await roomWith(anna);
    // The invitation notified her (default rule .m.rule.invite_for_me); joining ends it as unread.
    const [invite] = await waitFor("the invitation's notification", () => gw.forPushkey("anna-phone").length === 1 && gw.forPushkey("anna-phone"));
    assert.equal(invite!.body!.notification.room_id, roomId);
    const first = await send(roomId, "Lagebesprechung um 14 Uhr im Raum 2.17");
    const [got] = await waitFor("the gateway receives the notification", () => gw.forEvent(first).length === 1 && gw.forEvent(first));
    const device = got!.body!.notification.devices[0];
    assert.ok(Number.isInteger(device.pushkey_ts) && Math.abs(device.pushkey_ts * 1000 - before) < 60_000, `pushkey_ts ${device.pushkey_ts}`);
    assert.deepEqual(got!.body, {
      notification: {
        event_id: first,
        room_id: roomId,
        counts: { unread: 1 },
        prio: "high",
        devices: [{ app_id: "de.revier.web", pushkey: "anna-phone", pushkey_ts: device.pushkey_ts, data: {} }],
      },
    });
    assert.equal(got!.headers["content-type"], "application/json");
    const text = got!.raw.toString("utf8");
    assert.ok(!text.includes("Lagebesprechung") && !text.includes("bert") && !text.includes("m.room.message"), "no content, sender or type leaves the server");

    // The unread count grows until Anna reads; after her receipt it starts again from one.
    const second = await send(roomId, "zweite Nachricht");
    const [next] = await waitFor("the second notification", () => gw.forEvent(second).length === 1 && gw.forEvent(second));
    assert.deepEqual(next!.body!.notification.counts, { unread: 2 });
    const receipt = await api(server().url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/receipt/m.read/${enc(second)}`, { token: (await server().login("anna")).access_token, body: {} });
    assert.equal(receipt.status, 200);
    const third = await send(roomId, "dritte Nachricht");
    const [last] = await waitFor("the third notification", () => gw.forEvent(third).length === 1 && gw.forEvent(third));
    assert.deepEqual(last!.body!.notification.counts, { unread: 1 });
    // Delivered rows leave the queue.
    await waitFor("the queue to empty", async () => (await queued()) === 0);
  });

  test("off duty: no notification; on duty again: notifications resume", async () => {
    const dora = await user("dora");
    await setPusher(dora.token, "dora-phone");
    const roomId = await roomWith(dora);
    await flush();
    const earlier = gw.forPushkey("dora-phone").length;
    await setDuty(dora.token, { mode: "off" });
    const silent = await send(roomId, "nach Dienstschluss");
    await flush();
    await setDuty(dora.token, { mode: "on" });
    const marker = await send(roomId, "wieder im Dienst");
    await waitFor("the on-duty notification", () => gw.forEvent(marker).length === 1);
    assert.deepEqual(gw.forEvent(silent), []);
    assert.deepEqual(gw.forPushkey("dora-phone").slice(earlier).map((r) => r.body!.notification.event_id), [marker]);
    // The message itself waited: Dora's sync has it.
    const sync = await api<Json>(server().url, "GET", "/_matrix/client/v3/sync", { token: dora.token });
    const bodies = (sync.body.rooms.join[roomId].timeline.events as Json[]).map((e) => e.content.body);
    assert.ok(bodies.includes("nach Dienstschluss"));
  });

  test("emergency rooms still notify off-duty users who opted in, and only them", async () => {
    const admin = await user("leitstelle", "admin");
    const emil = await user("emil");
    const frida = await user("frida");
    await setPusher(emil.token, "emil-phone");
    await setPusher(frida.token, "frida-phone");
    const emergency = await roomWith(emil, frida);
    const ordinary = await roomWith(emil, frida);
    await flush();
    const fridaEarlier = gw.forPushkey("frida-phone").length;
    const policy = await api(server().url, "PUT", "/_revier/admin/v1/policy", { token: admin.token, body: { emergency_rooms: [emergency] } });
    assert.equal(policy.status, 200, JSON.stringify(policy.body));
    await setDuty(emil.token, { mode: "off", emergency_notifications: true });
    await setDuty(frida.token, { mode: "off" });

    const alarm = await send(emergency, "Großlage: alle Kräfte melden");
    const chat = await send(ordinary, "Kaffee?");
    await flush();
    await waitFor("Emil's emergency notification", () => gw.forEvent(alarm).length === 1);
    await flush();
    assert.deepEqual(
      gw.forEvent(alarm).map((r) => r.body!.notification.devices[0].pushkey),
      ["emil-phone"],
    );
    assert.deepEqual(gw.forEvent(chat), []);
    assert.deepEqual(gw.forPushkey("frida-phone").slice(fridaEarlier), []);
  });

  test("a gateway answering 5xx is retried with growing delays until it delivers", async () => {
    const gustav = await user("gustav");
    await setPusher(gustav.token, "gustav-phone");
    const roomId = await roomWith(gustav);
    // The invitation's notification goes out before the gateway starts failing.
    await flush();
    server().services.pushDelivery.tuning.retryBaseMs = 300;
    let failures = 2;
    gw.respond = (r) => (r.body?.notification?.devices?.[0]?.pushkey === "gustav-phone" && failures-- > 0 ? { status: 503 } : { status: 200, json: { rejected: [] } });
    try {
      const eventId = await send(roomId, "Funkstörung");
      const attempts = await waitFor("three attempts", () => gw.forEvent(eventId).length === 3 && gw.forEvent(eventId), 20_000);
      const gap1 = attempts[1]!.at - attempts[0]!.at;
      const gap2 = attempts[2]!.at - attempts[1]!.at;
      assert.ok(gap1 >= 250, `first retry after ${gap1} ms`);
      assert.ok(gap2 >= 550 && gap2 > gap1, `second retry after ${gap2} ms (back-off doubles)`);
      // Every attempt carried the same notification (the gateway deduplicates by event id).
      assert.deepEqual(attempts[2]!.body, attempts[0]!.body);
      await waitFor("the queue to empty", async () => (await queued()) === 0);
    } finally {
      gw.respond = () => ({ status: 200, json: { rejected: [] } });
      server().services.pushDelivery.tuning.retryBaseMs = 1000;
    }
  });

  test("a pushkey the gateway rejects removes the pusher", async () => {
    const hanna = await user("hanna");
    await setPusher(hanna.token, "hanna-old-phone");
    await setPusher(hanna.token, "hanna-new-phone");
    const roomId = await roomWith(hanna);
    await flush();
    gw.respond = (r) => ({ status: 200, json: { rejected: r.body?.notification?.devices?.[0]?.pushkey === "hanna-old-phone" ? ["hanna-old-phone"] : [] } });
    try {
      const first = await send(roomId, "erste");
      await waitFor("both pushers tried", () => gw.forEvent(first).length === 2);
      const pushers = await waitFor("the rejected pusher to go", async () => {
        const res = await api<{ pushers: Json[] }>(server().url, "GET", "/_matrix/client/v3/pushers", { token: hanna.token });
        return res.body.pushers.length === 1 && res.body.pushers;
      });
      assert.equal(pushers[0]!.pushkey, "hanna-new-phone");
      const second = await send(roomId, "zweite");
      await waitFor("the remaining pusher notified", () => gw.forEvent(second).length === 1);
      await flush();
      assert.deepEqual(gw.forEvent(second).map((r) => r.body!.notification.devices[0].pushkey), ["hanna-new-phone"]);
    } finally {
      gw.respond = () => ({ status: 200, json: { rejected: [] } });
    }
  });

  test("Web Push: an aes128gcm-encrypted, VAPID-signed payload with event ids only; a gone subscription removes the pusher", async () => {
    const ida = await user("ida");
    const roomId = await roomWith(ida);
    await flush();
    const vapid = await api<{ public_key: string; pusher_kind: string }>(server().url, "GET", "/_revier/client/v1/push/vapid", { token: ida.token });
    assert.equal(vapid.status, 200);
    assert.equal(vapid.body.pusher_kind, "org.revier.webpush");
    assert.equal(Buffer.from(vapid.body.public_key, "base64url").length, 65);

    // What the browser's PushManager.subscribe() would hand the web app.
    const ua = createECDH("prime256v1");
    ua.generateKeys();
    const auth = randomBytes(16);
    const endpoint = `${gw.base}/wpush/ida-browser`;
    const set = await api(server().url, "POST", "/_matrix/client/v3/pushers/set", {
      token: ida.token,
      body: { kind: "org.revier.webpush", app_id: "de.revier.webapp", pushkey: ua.getPublicKey().toString("base64url"), app_display_name: "Revier Web", device_display_name: "Firefox", lang: "de", data: { url: endpoint, auth: auth.toString("base64url") } },
    });
    assert.equal(set.status, 200, JSON.stringify(set.body));
    const bad = await api<Json>(server().url, "POST", "/_matrix/client/v3/pushers/set", {
      token: ida.token,
      body: { kind: "org.revier.webpush", app_id: "de.revier.webapp", pushkey: "not-a-key", app_display_name: "x", device_display_name: "x", lang: "de", data: { url: endpoint, auth: auth.toString("base64url") } },
    });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.errcode, "M_INVALID_PARAM");

    gw.respond = (r) => (r.path.startsWith("/wpush/") ? { status: 201 } : { status: 200, json: { rejected: [] } });
    const eventId = await send(roomId, "Streng vertraulich: Zugriff 05:00");
    const [msg] = await waitFor("the push service receives a message", () => {
      const got = gw.received.filter((r) => r.path === "/wpush/ida-browser");
      return got.length === 1 && got;
    });
    assert.equal(msg!.headers["content-encoding"], "aes128gcm");
    assert.equal(msg!.headers.urgency, "high");
    assert.ok(Number(msg!.headers.ttl) > 0);
    verifyVapid(String(msg!.headers.authorization), vapid.body.public_key, gw.base);
    assert.ok(!msg!.raw.includes(Buffer.from(eventId)), "the event id is not readable on the way");
    const payload = JSON.parse(decryptWebPush(msg!.raw, ua, auth)) as Json;
    // Unread: this message (the invitation's notification ended with the join).
    assert.deepEqual(payload, { notification: { event_id: eventId, room_id: roomId, counts: { unread: 1 }, prio: "high" } });

    gw.respond = (r) => (r.path.startsWith("/wpush/") ? { status: 410 } : { status: 200, json: { rejected: [] } });
    await send(roomId, "noch eine");
    await waitFor("the expired subscription to be removed", async () => {
      const res = await api<{ pushers: Json[] }>(server().url, "GET", "/_matrix/client/v3/pushers", { token: ida.token });
      return res.body.pushers.length === 0;
    });
    gw.respond = () => ({ status: 200, json: { rejected: [] } });
  });

  test("a pusher URL on an internal address that is not allowlisted is refused (no requests into the internal network)", async () => {
    const mallory = await user("mallory");
    for (const url of ["http://10.0.0.1/_matrix/push/v1/notify", "http://169.254.169.254/_matrix/push/v1/notify", "http://[::1]:8008/_matrix/push/v1/notify"]) {
      const res = await api(server().url, "POST", "/_matrix/client/v3/pushers/set", {
        token: mallory.token,
        body: { kind: "http", app_id: "de.revier.test", pushkey: "ssrf", app_display_name: "R", device_display_name: "D", lang: "de", data: { url } },
      });
      assert.equal(res.status, 400, `${url}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.errcode, "M_INVALID_PARAM");
    }
    const listed = await api<{ pushers: unknown[] }>(server().url, "GET", "/_matrix/client/v3/pushers", { token: mallory.token });
    assert.deepEqual(listed.body.pushers, []);
  });

  test("signing a device out or wiping it removes that device's pushers, and only those", async () => {
    const nora = await user("nora");
    const phone = await server().login("nora");
    await setPusher(nora.token, "nora-tablet");
    await setPusher(phone.access_token, "nora-phone");
    const pushkeys = async () => (await api<{ pushers: Array<{ pushkey: string }> }>(server().url, "GET", "/_matrix/client/v3/pushers", { token: nora.token })).body.pushers.map((p) => p.pushkey).sort();
    assert.deepEqual(await pushkeys(), ["nora-phone", "nora-tablet"]);
    assert.equal((await api(server().url, "POST", "/_matrix/client/v3/logout", { token: phone.access_token })).status, 200);
    assert.deepEqual(await pushkeys(), ["nora-tablet"]);
    const laptop = await server().login("nora");
    await setPusher(laptop.access_token, "nora-laptop");
    await server().services.governance.wipeDevice({ actor: "test", actorRole: "admin" }, nora.userId, laptop.device_id, true);
    assert.deepEqual(await pushkeys(), ["nora-tablet"]);
  });

  test("the queue survives restarts: a notification committed but never queued, then one waiting for its retry", async () => {
    for (const c of clients.splice(0)) c.stopClient();
    const jan = await user("jan");
    await setPusher(jan.token, "jan-phone");
    const roomId = await roomWith(jan);
    await flush();
    // The worker stops as if the process died right after the commit: nothing is queued.
    await server().services.pushDelivery.stop();
    const eventId = await send(roomId, "vor dem Neustart");
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(gw.forEvent(eventId), []);

    // After a restart the notification is rebuilt from the stored push actions; the gateway is down.
    let down = true;
    gw.respond = (r) => (down && r.body?.notification?.devices?.[0]?.pushkey === "jan-phone" ? { status: 502 } : { status: 200, json: { rejected: [] } });
    try {
      const first = await server().restart();
      replace(first);
      await waitFor("a first, failed attempt", () => gw.forEvent(eventId).length >= 1);
      await waitFor("the attempt to be rescheduled in the database", async () => {
        const rows = await first.services.storage.db.selectFrom("push_queue").select(["attempts", "claim"]).where("event_id", "=", eventId).execute();
        return rows.length === 1 && rows[0]!.attempts >= 1 && rows[0]!.claim === null;
      });
      // Down again before the retry; the next process finds the row and delivers once the gateway is back.
      const second = await first.restart();
      replace(second);
      const tried = gw.forEvent(eventId).length;
      down = false;
      await waitFor("delivery after the second restart", () => gw.forEvent(eventId).length > tried, 20_000);
      const delivered = gw.forEvent(eventId).at(-1)!;
      assert.equal(delivered.body!.notification.room_id, roomId);
      assert.equal(delivered.body!.notification.devices[0].pushkey, "jan-phone");
      await waitFor("the queue to empty", async () => {
        const row = await second.services.storage.db.selectFrom("push_queue").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirst();
        return Number(row?.n) === 0;
      });
    } finally {
      gw.respond = () => ({ status: 200, json: { rejected: [] } });
    }
  });
}, { "push.gateway_allowlist": ["127.0.0.1"] });
