import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import net from "node:net";
import path from "node:path";
import pino from "pino";
import { loadConfig } from "../src/config.js";
import { startServer, type RunningServer } from "../src/server.js";
import { NatsBus } from "../src/bus/nats.js";
import { createScratchDatabase, PG_SKIP_MESSAGE, postgresReachable } from "./support/databases.js";
import { api, enc } from "./support/http.js";
import { TEST_PASSWORD, UNLIMITED } from "./support/server.js";
import { FakeDevice } from "./support/crypto-clients.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
interface Session {
  access_token: string;
  user_id: string;
  device_id: string;
}

const NATS_URL = process.env.REVIER_TEST_BUS_URL ?? "nats://127.0.0.1:4222";
const LONG_POLL_MS = 20_000;
// Well under the long-poll timeout: a wake-up that only arrived at the timeout would fail this.
const PROMPT_MS = 3_000;

function natsReachable(): Promise<boolean> {
  const u = new URL(NATS_URL);
  return new Promise((resolve) => {
    const s = net.connect({ host: u.hostname, port: Number(u.port || 4222) });
    s.setTimeout(1000);
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => resolve(false));
    s.once("timeout", () => (s.destroy(), resolve(false)));
  });
}

const pgOk = await postgresReachable();
const natsOk = await natsReachable();
const skip = !pgOk ? PG_SKIP_MESSAGE : !natsOk ? `NATS not reachable at ${NATS_URL} — scale-out tests skipped (start nats-server or set REVIER_TEST_BUS_URL)` : false;

/**
 * Two homeserver processes (separate `startServer` instances, each with its own connection pool,
 * notifier and NATS connection) on one PostgreSQL database and one NATS server. They share the
 * data directory as a deployment shares its signing key and media storage.
 */
describe("scale-out: two processes on PostgreSQL + NATS", { skip }, () => {
  let a: RunningServer;
  let b: RunningServer;
  let dataDir: string;
  let drop: () => Promise<void>;
  let anna: Session; // a client of process A
  let bert: Session; // a client of process B
  let roomId: string;

  const start = async (databaseUrl: string) => {
    const config = loadConfig(
      {},
      {
        port: 0,
        data_dir: dataDir,
        database_url: databaseUrl,
        bus_url: NATS_URL,
        log_level: "silent",
        ...UNLIMITED,
      },
    );
    return startServer(config, { log: pino({ level: "silent" }) });
  };

  const dbOf = (server: RunningServer) => server.services.storage.db;

  const login = async (server: RunningServer, user: string): Promise<Session> => {
    const res = await api<Session>(server.url, "POST", "/_matrix/client/v3/login", { body: { type: "m.login.password", identifier: { type: "m.id.user", user }, password: TEST_PASSWORD } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body;
  };

  const sync = async (server: RunningServer, token: string, params: Record<string, string> = {}) => {
    const res = await api<Json>(server.url, "GET", `/_matrix/client/v3/sync?${new URLSearchParams({ timeout: "0", ...params })}`, { token });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body;
  };

  /** Starts a long-poll on `server`, runs `act` once it is waiting, and returns what it woke with. */
  const crossWake = async (server: RunningServer, who: Session, act: () => Promise<void>, until: (body: Json) => boolean) => {
    let since = (await sync(server, who.access_token)).next_batch as string;
    const started = Date.now();
    let acted = false;
    for (;;) {
      const poll = sync(server, who.access_token, { since, timeout: String(LONG_POLL_MS) });
      if (!acted) {
        await new Promise((r) => setTimeout(r, 150));
        await act();
        acted = true;
      }
      const body = await poll;
      const elapsed = Date.now() - started;
      assert.ok(elapsed < PROMPT_MS, `woke after ${elapsed} ms; the long-poll timeout is ${LONG_POLL_MS} ms`);
      if (until(body)) return { body, elapsed };
      // The act may take several stream positions (a login writes more than one item).
      since = body.next_batch;
    }
  };

  before(async () => {
    dataDir = mkdtempSync(path.join(tmpdir(), "revier-scale-"));
    const scratch = await createScratchDatabase();
    drop = scratch.drop;
    // One after the other, so the migrations run once.
    a = await start(scratch.url);
    b = await start(scratch.url);
    assert.ok((a.services.bus as NatsBus).isConnected && (b.services.bus as NatsBus).isConnected, "both processes are on NATS");
    await a.services.accounts.create("anna", { password: TEST_PASSWORD, role: "user" });
    await a.services.accounts.create("bert", { password: TEST_PASSWORD, role: "user" });
    anna = await login(a, "anna");
    bert = await login(b, "bert");
    const r = await api<Json>(a.url, "POST", "/_matrix/client/v3/createRoom", { token: anna.access_token, body: { preset: "public_chat", name: "Lagezentrum" } });
    roomId = r.body.room_id;
    const j = await api(b.url, "POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: bert.access_token, body: {} });
    assert.equal(j.status, 200);
  });

  after(async () => {
    await a?.stop();
    await b?.stop();
    rmSync(dataDir, { recursive: true, force: true });
    await drop?.();
  });

  test("a message sent through A wakes a /sync long-poll on B promptly", async () => {
    const { body } = await crossWake(
      b,
      bert,
      async () => {
        const res = await api(a.url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/x1`, { token: anna.access_token, body: { msgtype: "m.text", body: "Einsatz Hauptbahnhof" } });
        assert.equal(res.status, 200);
      },
      (body) => (body.rooms?.join?.[roomId]?.timeline?.events ?? []).length > 0,
    );
    assert.deepEqual(
      body.rooms.join[roomId].timeline.events.map((e: Json) => e.content.body),
      ["Einsatz Hauptbahnhof"],
    );
  });

  test("and the other way round: B's message wakes a long-poll on A", async () => {
    const { body } = await crossWake(
      a,
      anna,
      async () => {
        await api(b.url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/y1`, { token: bert.access_token, body: { msgtype: "m.text", body: "Verstanden" } });
      },
      (body) => (body.rooms?.join?.[roomId]?.timeline?.events ?? []).length > 0,
    );
    assert.equal(body.rooms.join[roomId].timeline.events[0].content.body, "Verstanden");
  });

  test("typing on A reaches B", async () => {
    const ephemeral = (body: Json) => (body.rooms?.join?.[roomId]?.ephemeral?.events ?? []) as Json[];
    const { body } = await crossWake(
      b,
      bert,
      async () => {
        const res = await api(a.url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/typing/${enc(anna.user_id)}`, { token: anna.access_token, body: { typing: true, timeout: 10_000 } });
        assert.equal(res.status, 200);
      },
      (body) => ephemeral(body).some((e) => e.type === "m.typing"),
    );
    assert.deepEqual(ephemeral(body).find((e) => e.type === "m.typing")!.content.user_ids, [anna.user_id]);
    // …and stopping does too.
    const stop = await crossWake(
      b,
      bert,
      async () => {
        await api(a.url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/typing/${enc(anna.user_id)}`, { token: anna.access_token, body: { typing: false } });
      },
      (body) => ephemeral(body).some((e) => e.type === "m.typing"),
    );
    assert.deepEqual(ephemeral(stop.body).find((e) => e.type === "m.typing")!.content.user_ids, []);
  });

  test("a read receipt on A reaches B", async () => {
    const msg = await api<Json>(a.url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/x2`, { token: anna.access_token, body: { msgtype: "m.text", body: "Bitte bestätigen" } });
    const eventId = msg.body.event_id as string;
    const receipts = (body: Json) => ((body.rooms?.join?.[roomId]?.ephemeral?.events ?? []) as Json[]).filter((e) => e.type === "m.receipt");
    const { body } = await crossWake(
      b,
      bert,
      async () => {
        const res = await api(a.url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/receipt/m.read/${enc(eventId)}`, { token: anna.access_token, body: {} });
        assert.equal(res.status, 200);
      },
      (body) => receipts(body).length > 0,
    );
    assert.ok(receipts(body)[0]!.content[eventId]["m.read"][anna.user_id], "anna's receipt for the event");
  });

  test("a new login on A announces anna's device list change to B", async () => {
    // /sync does not fill device_lists yet (that arrives with the E2EE work), so this checks the
    // announcement B's notifier acts on: a wake-up for anna and the room she shares with bert.
    const seen = new Promise<{ users: string[]; rooms: string[] }>((resolve) => {
      const off = b.services.bus.subscribe((w) => {
        if (w.users.includes(anna.user_id)) {
          off();
          resolve(w);
        }
      });
    });
    const started = Date.now();
    await login(a, "anna");
    const w = await seen;
    assert.ok(Date.now() - started < PROMPT_MS);
    assert.ok(w.rooms.includes(roomId), "the shared room is woken too");
  });

  test("account data written through A reaches the same user's long-poll on B", async () => {
    const bertOnA = await login(a, "bert");
    const { body } = await crossWake(
      b,
      bert,
      async () => {
        const res = await api(a.url, "PUT", `/_matrix/client/v3/user/${enc(bert.user_id)}/account_data/org.example.einsatz`, { token: bertOnA.access_token, body: { schicht: "Nacht" } });
        assert.equal(res.status, 200);
      },
      (body) => ((body.account_data?.events ?? []) as Json[]).some((e) => e.type === "org.example.einsatz"),
    );
    assert.deepEqual(((body.account_data.events ?? []) as Json[]).find((e) => e.type === "org.example.einsatz")!.content, { schicht: "Nacht" });
  });

  test("one-time keys claimed through A lower the count B reports, in an initial sync and in a woken long-poll", async () => {
    const device = new FakeDevice(bert.user_id, bert.device_id);
    const up = await api<Json>(b.url, "POST", "/_matrix/client/v3/keys/upload", { token: bert.access_token, body: { device_keys: device.deviceKeys(), one_time_keys: device.oneTimeKeys(5) } });
    assert.equal(up.status, 200, JSON.stringify(up.body));
    const counted = (body: Json) => body.device_one_time_keys_count.signed_curve25519 as number;
    // B remembers what its answers found (see DeviceSyncCache); a claim through A wakes nobody.
    const first = await sync(b, bert.access_token);
    assert.equal(counted(await sync(b, bert.access_token, { since: first.next_batch })), 5);
    const claimThroughA = async () => {
      const res = await api<Json>(a.url, "POST", "/_matrix/client/v3/keys/claim", { token: anna.access_token, body: { one_time_keys: { [bert.user_id]: { [bert.device_id]: "signed_curve25519" } } } });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(Object.keys(res.body.one_time_keys[bert.user_id][bert.device_id]).length, 1);
    };
    await claimThroughA();
    assert.equal(counted(await sync(b, bert.access_token)), 4);
    const { body } = await crossWake(
      b,
      bert,
      async () => {
        await claimThroughA();
        const res = await api(a.url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/k1`, { token: anna.access_token, body: { msgtype: "m.text", body: "Schlüssel" } });
        assert.equal(res.status, 200);
      },
      (body) => (body.rooms?.join?.[roomId]?.timeline?.events ?? []).some((e: Json) => e.content?.body === "Schlüssel"),
    );
    assert.equal(counted(body), 3);
  });

  test("stream positions stay gap-free and in order with concurrent writers on both processes", async () => {
    const db = a.services.storage.db;
    const before = await a.services.stream.current();
    const n = 30;
    const sends: Promise<unknown>[] = [];
    for (let i = 0; i < n; i++) {
      sends.push(api(a.url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/ca${i}`, { token: anna.access_token, body: { msgtype: "m.text", body: `A${i}` } }));
      sends.push(api(b.url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/cb${i}`, { token: bert.access_token, body: { msgtype: "m.text", body: `B${i}` } }));
      // Writes that are not room events take positions from the same counter.
      sends.push(api(i % 2 ? a.url : b.url, "PUT", `/_matrix/client/v3/user/${enc(bert.user_id)}/account_data/org.example.c${i}`, { token: bert.access_token, body: { i } }));
    }
    const results = (await Promise.all(sends)) as { status: number }[];
    assert.ok(results.every((r) => r.status === 200), "every write succeeded");
    const afterPos = await a.services.stream.current();
    const events = await db.selectFrom("events").select(["stream_ordering", "event_id", "depth", "json"]).where("stream_ordering", ">", before).orderBy("stream_ordering").execute();
    const data = await db.selectFrom("account_data").select("stream_pos").where("stream_pos", ">", before).execute();
    const positions = [...events.map((e) => Number(e.stream_ordering)), ...data.map((d) => Number(d.stream_pos))].sort((x, y) => x - y);
    // Every position between the two counter readings belongs to exactly one write.
    assert.equal(afterPos - before, 3 * n);
    assert.deepEqual(
      positions,
      Array.from({ length: 3 * n }, (_, i) => before + 1 + i),
    );
    // The room's event graph stays linear: depth grows with the position.
    const depths = events.map((e) => Number(e.depth));
    for (let i = 1; i < depths.length; i++) assert.equal(depths[i], depths[i - 1]! + 1);
    // Each event follows the one before it, whichever process wrote either: a process whose view
    // of the room was out of date (the other had written since) noticed and started over.
    for (let i = 1; i < events.length; i++) assert.deepEqual((JSON.parse(events[i]!.json) as Json).prev_events, [events[i - 1]!.event_id]);
    // Both processes hand out the same timeline in the same order.
    const filter = JSON.stringify({ room: { timeline: { limit: 3 * n } } });
    const onA = (await sync(a, anna.access_token, { filter })).rooms.join[roomId].timeline.events.map((e: Json) => e.event_id);
    const onB = (await sync(b, bert.access_token, { filter })).rooms.join[roomId].timeline.events.map((e: Json) => e.event_id);
    assert.deepEqual(onA, onB);
  });

  test("a member removed through B cannot send through A, which wrote the room's last event", async () => {
    await a.services.accounts.create("dora", { password: TEST_PASSWORD, role: "user" });
    const dora = await login(a, "dora");
    const send = (server: RunningServer, who: Session, txn: string) =>
      api<Json>(server.url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${txn}`, { token: who.access_token, body: { msgtype: "m.text", body: txn } });
    assert.equal((await api(a.url, "POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: dora.access_token, body: {} })).status, 200);
    // A now holds a view of the room in which dora is a member and its own event is the newest.
    assert.equal((await send(a, dora, "k1")).status, 200);
    const kick = await api(b.url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/kick`, { token: anna.access_token, body: { user_id: dora.user_id, reason: "Schichtende" } });
    assert.equal(kick.status, 200, JSON.stringify(kick.body));
    const before = await a.services.stream.current();
    const refused = await send(a, dora, "k2");
    assert.equal(refused.status, 403, JSON.stringify(refused.body));
    assert.equal(refused.body.errcode, "M_FORBIDDEN");
    const sent = await dbOf(a).selectFrom("events").select("event_id").where("room_id", "=", roomId).where("sender", "=", dora.user_id).where("type", "=", "m.room.message").execute();
    assert.equal(sent.length, 1, "only the message from before the kick is stored");
    // The refused send took no stream position: the next write takes the one after `before`.
    const next = await send(a, anna, "k3");
    assert.equal(next.status, 200);
    assert.equal(await a.services.stream.current(), before + 1);
    const row = await dbOf(a).selectFrom("events").select("stream_ordering").where("event_id", "=", next.body.event_id).executeTakeFirstOrThrow();
    assert.equal(Number(row.stream_ordering), before + 1);
  });

  test("a sign-out and a lock made through A are honoured by B within its session log's interval", async () => {
    // B holds the sessions in memory once it has seen them (users/session-cache.ts) and learns of
    // changes from the auth_changes log, read at most every 250 ms: no bus needed, so a change
    // from the CLI or a lost NATS message is seen the same way.
    const refusedOnB = async (token: string, errcode: string) => {
      const started = Date.now();
      for (;;) {
        const res = await api<Json>(b.url, "GET", "/_matrix/client/v3/account/whoami", { token });
        if (res.status !== 200) {
          assert.equal(res.body.errcode, errcode);
          return Date.now() - started;
        }
        assert.ok(Date.now() - started < PROMPT_MS, `B still accepted the session ${Date.now() - started} ms later`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const second = await login(a, "anna");
    assert.equal((await api(b.url, "GET", "/_matrix/client/v3/account/whoami", { token: second.access_token })).status, 200);
    assert.equal((await api(a.url, "POST", "/_matrix/client/v3/logout", { token: second.access_token, body: {} })).status, 200);
    await refusedOnB(second.access_token, "M_UNKNOWN_TOKEN");

    await a.services.accounts.create("chefin", { password: TEST_PASSWORD, role: "admin" });
    const chefin = await login(a, "chefin");
    const bertOnB = await login(b, "bert");
    assert.equal((await api(b.url, "GET", "/_matrix/client/v3/account/whoami", { token: bertOnB.access_token })).status, 200);
    assert.equal((await api(a.url, "POST", `/_revier/admin/v1/users/${enc(bert.user_id)}/lock`, { token: chefin.access_token, body: {} })).status, 200);
    await refusedOnB(bertOnB.access_token, "M_USER_LOCKED");
    assert.equal((await api(a.url, "POST", `/_revier/admin/v1/users/${enc(bert.user_id)}/unlock`, { token: chefin.access_token, body: {} })).status, 200);
    const started = Date.now();
    while ((await api(b.url, "GET", "/_matrix/client/v3/account/whoami", { token: bertOnB.access_token })).status !== 200) {
      assert.ok(Date.now() - started < PROMPT_MS, "B still refuses bert after the unlock");
      await new Promise((r) => setTimeout(r, 20));
    }
    // Frees bert's device slot for the next test.
    assert.equal((await api(b.url, "POST", "/_matrix/client/v3/logout", { token: bertOnB.access_token, body: {} })).status, 200);
  });

  test("the device limit holds for logins of one user through both processes at once", async () => {
    const carla = await a.services.accounts.create("carla", { password: TEST_PASSWORD, role: "user" });
    const max = (await a.services.policy.get()).max_devices;
    const loginAt = (server: RunningServer, deviceId: string) =>
      api<Json>(server.url, "POST", "/_matrix/client/v3/login", { body: { type: "m.login.password", identifier: { type: "m.id.user", user: "carla" }, password: TEST_PASSWORD, device_id: deviceId } });
    for (let i = 0; i < max - 1; i++) assert.equal((await loginAt(a, `CARLA${i}`)).status, 200);
    // A's login is held after its guards, the device limit's included, have passed with one
    // place left; B's login takes that place meanwhile.
    let reached!: () => void;
    const atHold = new Promise<void>((r) => (reached = r));
    let release!: () => void;
    const hold = new Promise<void>((r) => (release = r));
    const guards = a.services.loginGuards;
    const holdGuard = async ({ deviceId }: { deviceId: string }) => {
      if (deviceId !== "CARLA_A") return;
      reached();
      await hold;
    };
    guards.push(holdGuard);
    try {
      const onA = loginAt(a, "CARLA_A");
      await atHold;
      const onB = await loginAt(b, "CARLA_B");
      assert.equal(onB.status, 200, JSON.stringify(onB.body.errcode));
      release();
      const refused = await onA;
      assert.deepEqual([refused.status, refused.body.errcode], [403, "ORG.REVIER.DEVICE_LIMIT"], "the login held on A is refused");
    } finally {
      release();
      guards.splice(guards.indexOf(holdGuard), 1);
    }
    assert.equal(await b.services.devices.count(carla.user_id), max);
    assert.equal(await a.services.devices.get(carla.user_id, "CARLA_A"), undefined);
  });

  test("when B goes away, A keeps serving, long-polls included", async () => {
    await b.stop();
    const bertOnA = await login(a, "bert");
    const { body } = await crossWake(
      a,
      bertOnA,
      async () => {
        const res = await api(a.url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/x3`, { token: anna.access_token, body: { msgtype: "m.text", body: "Noch da?" } });
        assert.equal(res.status, 200);
      },
      (body) => (body.rooms?.join?.[roomId]?.timeline?.events ?? []).length > 0,
    );
    assert.equal(body.rooms.join[roomId].timeline.events[0].content.body, "Noch da?");
    // B's tokens are database rows, so its clients carry on against A.
    const again = await sync(a, bert.access_token);
    assert.ok(again.rooms.join[roomId]);
  });
});
