import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { describeEachDatabase } from "./support/suite.js";
import { api, enc } from "./support/http.js";
import { startClient, waitFor, type Client } from "./support/sdk.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const DUTY = "/_revier/client/v1/duty";

/** A real push gateway on a local port, recording every notify body. */
class Gateway {
  readonly bodies: Json[] = [];
  private server!: Server;
  url = "";

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      let raw = "";
      req.on("data", (c: Buffer) => (raw += c.toString("utf8")));
      req.on("end", () => {
        this.bodies.push(JSON.parse(raw) as Json);
        res.writeHead(200, { "content-type": "application/json" }).end('{"rejected":[]}');
      });
    });
    // Longer than the tests, so an idle keep-alive socket is never closed under a request (a spurious retry).
    this.server.keepAliveTimeout = 60_000;
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/_matrix/push/v1/notify`;
  }

  events(pushkey: string): string[] {
    return this.bodies.filter((b) => b.notification.devices[0].pushkey === pushkey).map((b) => b.notification.event_id as string);
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

describeEachDatabase("governance: duty hours", ({ server }) => {
  const gw = new Gateway();
  const clients: Client[] = [];
  let anna: { userId: string; token: string };
  let bert: { userId: string; token: string };
  let roomId: string;

  async function user(localpart: string) {
    const userId = await server().createUser(localpart);
    return { userId, token: (await server().login(localpart)).access_token };
  }

  before(async () => {
    await gw.start();
    anna = await user("anna");
    bert = await user("bert");
    const created = await api<{ room_id: string }>(server().url, "POST", "/_matrix/client/v3/createRoom", { token: bert.token, body: { preset: "private_chat", invite: [anna.userId] } });
    roomId = created.body.room_id;
    assert.equal((await api(server().url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/join`, { token: anna.token, body: {} })).status, 200);
  });
  afterEach(async () => {
    server().services.duty.clock = Date.now;
    await api(server().url, "PUT", DUTY, { token: anna.token, body: { mode: "on" } });
  });
  after(async () => {
    for (const c of clients) c.stopClient();
    await gw.stop();
  });

  const duty = (body: unknown, token = anna.token) => api<Json>(server().url, "PUT", DUTY, { token, body });
  const getDuty = (token = anna.token) => api<Json>(server().url, "GET", DUTY, { token });
  const presenceOf = async (userId: string, token = bert.token) => (await api<Json>(server().url, "GET", `/_matrix/client/v3/presence/${enc(userId)}/status`, { token })).body;

  let txn = 0;
  async function send(body: string): Promise<string> {
    const res = await api<{ event_id: string }>(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/d${++txn}`, { token: bert.token, body: { msgtype: "m.text", body } });
    assert.equal(res.status, 200);
    return res.body.event_id;
  }

  test("settings start on duty and round-trip through GET and PUT", async () => {
    const fresh = await user("neu");
    assert.deepEqual((await getDuty(fresh.token)).body, { mode: "on", schedule: [], emergency_notifications: false, on_duty: true });
    const body = { mode: "schedule", time_zone: "Europe/Berlin", emergency_notifications: true, schedule: [{ day: "mon", start: "06:00", end: "14:00" }, { day: "fri", start: "22:00", end: "06:00" }] };
    const put = await duty(body, fresh.token);
    assert.equal(put.status, 200, JSON.stringify(put.body));
    const got = await getDuty(fresh.token);
    assert.equal(typeof got.body.on_duty, "boolean");
    const { on_duty: _now, ...stored } = got.body;
    assert.deepEqual(stored, body);
    assert.equal((await api(server().url, "GET", DUTY)).status, 401);
  });

  test("bad time zones and overlapping or ill-formed slots get clear errors", async () => {
    const zone = await duty({ mode: "schedule", time_zone: "Europe/Berln", schedule: [] });
    assert.equal(zone.status, 400);
    assert.equal(zone.body.errcode, "M_INVALID_PARAM");
    assert.match(zone.body.error, /Unknown time zone 'Europe\/Berln'/);
    const overlap = await duty({ mode: "schedule", time_zone: "Europe/Berlin", schedule: [{ day: "tue", start: "06:00", end: "14:00" }, { day: "tue", start: "13:00", end: "21:00" }] });
    assert.equal(overlap.status, 400);
    assert.equal(overlap.body.errcode, "M_INVALID_PARAM");
    assert.match(overlap.body.error, /schedule\[0\] \(tue 06:00–14:00\) overlaps schedule\[1\] \(tue 13:00–21:00\)/);
    const slot = await duty({ mode: "schedule", time_zone: "Europe/Berlin", schedule: [{ day: "tue", start: "6 Uhr", end: "14:00" }] });
    assert.equal(slot.status, 400);
    assert.equal(slot.body.errcode, "M_BAD_JSON");
    assert.match(slot.body.error, /schedule\[0\]\.start must be a time HH:MM/);
    const noZone = await duty({ mode: "schedule", schedule: [] });
    assert.match(noZone.body.error, /time_zone is required/);
    // Nothing was stored by the refused requests.
    assert.equal((await getDuty()).body.mode, "on");
  });

  test("a schedule in Europe/Berlin decides pushes in local time across the DST change", async () => {
    const login = await server().login("anna");
    const pusher = await api(server().url, "POST", "/_matrix/client/v3/pushers/set", {
      token: login.access_token,
      body: { kind: "http", app_id: "de.revier.test", pushkey: "anna-dienst", app_display_name: "Revier", device_display_name: "Diensthandy", lang: "de", data: { url: gw.url, format: "event_id_only" } },
    });
    assert.equal(pusher.status, 200);
    const put = await duty({ mode: "schedule", time_zone: "Europe/Berlin", schedule: [{ day: "sun", start: "07:00", end: "15:00" }] });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    const delivery = server().services.pushDelivery;
    const at = async (iso: string) => {
      server().services.duty.clock = () => Date.parse(iso);
      return (await getDuty()).body.on_duty as boolean;
    };

    // Sunday 30 March 2025, clocks jump to CEST (UTC+2): 05:30 UTC is 07:30 in Berlin.
    assert.equal(await at("2025-03-30T05:30:00Z"), true);
    const onDuty = await send("Dienstbeginn");
    await waitFor("the on-duty notification", () => gw.events("anna-dienst").includes(onDuty));
    const body = gw.bodies.find((b) => b.notification.event_id === onDuty)!;
    assert.deepEqual(Object.keys(body.notification).sort(), ["counts", "devices", "event_id", "prio", "room_id"]);
    assert.equal(body.notification.room_id, roomId);

    // 13:30 UTC is 15:30 in Berlin: off duty (a fixed UTC+1 would say 14:30, on duty).
    assert.equal(await at("2025-03-30T13:30:00Z"), false);
    const late = await send("nach Schichtende");
    await delivery.flush();
    // A week earlier (CET, UTC+1) 05:30 UTC is 06:30: not yet on duty.
    assert.equal(await at("2025-03-23T05:30:00Z"), false);
    const early = await send("vor Schichtbeginn");
    await delivery.flush();
    assert.equal(await at("2025-03-23T06:30:00Z"), true);
    const marker = await send("jetzt im Dienst");
    await waitFor("the next on-duty notification", () => gw.events("anna-dienst").includes(marker));
    const pushed = gw.events("anna-dienst");
    assert.ok(!pushed.includes(late) && !pushed.includes(early), "no notification while off duty");
    assert.deepEqual(pushed.slice(pushed.indexOf(onDuty)), [onDuty, marker]);
  });

  test("off duty shows as presence unavailable with status 'off duty', whatever the client says", async () => {
    const watcher = await startClient(server(), "bert");
    clients.push(watcher);
    assert.equal((await duty({ mode: "off" })).status, 200);
    assert.deepEqual({ ...(await presenceOf(anna.userId)), last_active_ago: 0 }, { presence: "unavailable", status_msg: "off duty", currently_active: false, last_active_ago: 0 });
    // matrix-js-sdk learns it through /sync.
    await waitFor("bert's client to see anna off duty", () => {
      const u = watcher.getUser(anna.userId);
      return u?.presence === "unavailable" && u.presenceStatusMsg === "off duty";
    });
    // Her app syncing (set_presence=online) or setting presence does not make her look available,
    // also once the pin and her presence are known without waiting (the second sync).
    assert.deepEqual(server().services.duty.presenceOverrideNow(anna.userId), { state: "unavailable", statusMsg: "off duty" });
    for (let i = 0; i < 2; i++) assert.equal((await api(server().url, "GET", "/_matrix/client/v3/sync?timeout=0&set_presence=online", { token: anna.token })).status, 200);
    assert.equal(server().services.ephemeral.presenceIsCurrent(anna.userId, "online"), true, "pinned: nothing for a sync to change");
    const set = await api(server().url, "PUT", `/_matrix/client/v3/presence/${enc(anna.userId)}/status`, { token: anna.token, body: { presence: "online", status_msg: "bin da" } });
    assert.equal(set.status, 200);
    assert.equal((await presenceOf(anna.userId)).status_msg, "off duty");
    // Idle off-duty users are not swept to offline.
    await server().services.ephemeral.expirePresence(Date.now() + 3600_000, 5 * 60_000);
    assert.equal((await presenceOf(anna.userId)).presence, "unavailable");

    assert.equal((await duty({ mode: "on" })).status, 200);
    assert.equal(server().services.duty.presenceOverrideNow(anna.userId), undefined);
    assert.equal(server().services.duty.presenceOverrideNow("@nobody-cached:test"), null, "settings not cached: not known at once");
    const back = await presenceOf(anna.userId);
    assert.equal(back.presence, "online");
    assert.equal(back.status_msg, undefined);
    await waitFor("bert's client to see anna back", () => watcher.getUser(anna.userId)?.presence === "online");
  });

  test("schedule transitions are announced in presence by the sweep, once each", async () => {
    const clara = await user("clara");
    const invite = await api(server().url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/invite`, { token: bert.token, body: { user_id: clara.userId } });
    assert.equal(invite.status, 200);
    assert.equal((await api(server().url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/join`, { token: clara.token, body: {} })).status, 200);
    const services = server().services;
    // Monday 9 June 2025, New York (EDT, UTC-4): on duty 09:00–17:00.
    services.duty.clock = () => Date.parse("2025-06-09T14:00:00Z");
    assert.equal((await duty({ mode: "schedule", time_zone: "America/New_York", schedule: [{ day: "mon", start: "09:00", end: "17:00" }] }, clara.token)).status, 200);
    assert.notEqual((await presenceOf(clara.userId)).status_msg, "off duty");
    assert.equal(await services.duty.sweep(), 0);

    services.duty.clock = () => Date.parse("2025-06-09T21:05:00Z"); // 17:05 local
    assert.equal(await services.duty.sweep(), 1);
    assert.deepEqual([(await presenceOf(clara.userId)).presence, (await presenceOf(clara.userId)).status_msg], ["unavailable", "off duty"]);
    assert.equal(await services.duty.sweep(), 0);

    services.duty.clock = () => Date.parse("2025-06-16T13:01:00Z"); // next Monday 09:01
    assert.equal(await services.duty.sweep(), 1);
    const back = await presenceOf(clara.userId);
    assert.equal(back.presence, "offline");
    assert.equal(back.status_msg, undefined);
    await duty({ mode: "on" }, clara.token);
  });
}, { "push.gateway_allowlist": ["127.0.0.1"] });
