/**
 * PostgreSQL connections killed under load. The machine's PostgreSQL serves others too, so it is
 * not restarted: every backend connected to the test's scratch database is terminated with
 * pg_terminate_backend, again and again, from a separate connection. That is what a server restart
 * or failover looks like to Revier (every connection drops at once), without touching anyone else.
 *
 * While it happens requests fail with 5xx and M_UNKNOWN — never hang, never crash the process;
 * afterwards the server recovers by itself; nothing is half-written; stream positions stay
 * gap-free and in order.
 */
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import pg from "pg";
import { createScratchDatabase, PG_ADMIN_URL, PG_SKIP_MESSAGE, postgresReachable } from "./support/databases.js";
import { startTestServer } from "./support/server.js";
import { call, enc, faultsTempDir, removeDir, sleep, spawnServer, type Json, type ServerProcess } from "./faults-support.js";

const pgOk = await postgresReachable();
const WRITERS = 8;
const CHAOS_MS = 4_000;
const FILTER = JSON.stringify({ room: { timeline: { limit: 2000, types: ["m.room.message"] }, state: { lazy_load_members: true } }, presence: { not_types: ["*"] } });

interface Session {
  user_id: string;
  access_token: string;
  device_id: string;
}

describe("PostgreSQL connections killed under load", { skip: pgOk ? false : PG_SKIP_MESSAGE }, () => {
  let dataDir: string | undefined;
  let drop: (() => Promise<void>) | undefined;
  let proc: ServerProcess | undefined;
  let admin: pg.Client | undefined;
  after(async () => {
    await proc?.kill();
    await admin?.end().catch(() => undefined);
    removeDir(dataDir);
    await drop?.();
  });

  test("requests fail cleanly while connections die, recover by themselves, and leave no partial writes or gaps", async (t) => {
    dataDir = faultsTempDir("pg");
    const scratch = await createScratchDatabase();
    drop = scratch.drop;
    const dbName = new URL(scratch.url).pathname.slice(1);

    const seed = await startTestServer("postgres", {}, { dataDir, databaseUrl: scratch.url });
    const names = [...Array.from({ length: WRITERS }, (_, i) => `wache${i}`), "lage"];
    await Promise.all(names.map((n) => seed.createUser(n)));
    const sessions: Session[] = await Promise.all(names.map((n) => seed.login(n)));
    const writers = sessions.slice(0, WRITERS);
    const reader = sessions[WRITERS]!;
    const room = await call(seed.url, "POST", "/_matrix/client/v3/createRoom", { token: reader.access_token, body: { preset: "public_chat" } });
    assert.equal(room.status, 200, JSON.stringify(room.body));
    const roomId = room.body.room_id as string;
    for (const w of writers) {
      const joined = await call(seed.url, "POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: w.access_token, body: {} });
      assert.equal(joined.status, 200, JSON.stringify(joined.body));
    }
    await seed.stop();

    proc = await spawnServer({ REVIER_DATA_DIR: dataDir, REVIER_DATABASE_URL: scratch.url });
    const base = proc.url;
    admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    const probe = new pg.Client({ connectionString: scratch.url });
    await probe.connect();
    const streamPosition = async () => Number((await probe.query("select value from counters where name = 'stream'")).rows[0].value);
    const p0 = await streamPosition();
    await probe.end();

    const first = await call(base, "GET", `/_matrix/client/v3/sync?timeout=0&set_presence=offline&filter=${enc(FILTER)}`, { token: reader.access_token });
    assert.equal(first.status, 200);

    // ---- load --------------------------------------------------------------------------------
    const outcomes: Array<{ status: number; errcode?: string; error?: string; ms: number; what: string }> = [];
    const attempted: string[][] = writers.map(() => []);
    const ackedSend = new Map<string, string>();
    const ackedData = new Map<string, string>(); // account data type -> owner
    let stopLoad = false;
    let chaos = true;

    const runWriter = async (i: number) => {
      const me = writers[i]!;
      for (let n = 0; !stopLoad; n++) {
        const started = Date.now();
        let res;
        if (n % 2 === 0) {
          const body = `w${i}-${n}`;
          attempted[i]!.push(body);
          res = await call<Json>(base, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/s${n}`, { token: me.access_token, body: { msgtype: "m.text", body }, timeoutMs: 15_000 });
          if (res.status === 200) ackedSend.set(body, res.body.event_id);
        } else {
          const type = `org.example.w${i}.${n}`;
          res = await call<Json>(base, "PUT", `/_matrix/client/v3/user/${enc(me.user_id)}/account_data/${type}`, { token: me.access_token, body: { n }, timeoutMs: 15_000 });
          if (res.status === 200) ackedData.set(type, me.user_id);
        }
        outcomes.push({ status: res.status, errcode: res.body?.errcode, error: res.error, ms: Date.now() - started, what: n % 2 === 0 ? "send" : "account_data" });
        if (res.status === 0) return;
        // A moderate pace while connections are being killed keeps the failures countable.
        if (chaos) await sleep(20);
      }
    };

    // The reader long-polls throughout: tokens never go backwards, no event twice, none lost.
    const seen = new Set<string>();
    const tokens: number[] = [];
    let since = first.body.next_batch as string;
    const runReader = async () => {
      while (!stopLoad) {
        const res = await call<Json>(base, "GET", `/_matrix/client/v3/sync?timeout=500&set_presence=offline&since=${enc(since)}&filter=${enc(FILTER)}`, { token: reader.access_token, timeoutMs: 15_000 });
        outcomes.push({ status: res.status, errcode: res.body?.errcode, error: res.error, ms: 0, what: "sync" });
        if (res.status !== 200) {
          if (res.status === 0) return;
          await sleep(50);
          continue;
        }
        const tl = res.body.rooms?.join?.[roomId]?.timeline;
        if (tl) {
          assert.equal(tl.limited, false);
          for (const e of tl.events as Json[]) {
            assert.ok(!seen.has(e.event_id), `sync delivered ${e.event_id} twice`);
            seen.add(e.event_id);
          }
        }
        since = res.body.next_batch;
        tokens.push(Number(since.replace(/^s/, "")));
      }
    };

    const loops = [...writers.map((_, i) => runWriter(i)), runReader()];
    await sleep(300);

    // ---- chaos: terminate every backend of the scratch database, repeatedly --------------------
    let terminated = 0;
    const chaosStarted = Date.now();
    while (Date.now() - chaosStarted < CHAOS_MS) {
      const r = await admin.query("select count(pg_terminate_backend(pid)) as n from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()", [dbName]);
      terminated += Number(r.rows[0].n);
      await sleep(100 + Math.floor(Math.random() * 100));
    }
    chaos = false;
    const chaosEnded = outcomes.length;
    assert.ok(terminated > 0, "connections were terminated");

    // ---- recovery: without help, requests succeed again ----------------------------------------
    const recoverBy = Date.now() + 10_000;
    const recovered = () => {
      const tail = outcomes.slice(chaosEnded).filter((o) => o.what !== "sync");
      return tail.length >= WRITERS * 3 && tail.slice(-WRITERS * 3).every((o) => o.status === 200);
    };
    while (!recovered() && Date.now() < recoverBy) await sleep(100);
    await sleep(500);
    stopLoad = true;
    await Promise.all(loops);
    assert.equal(proc.child.exitCode, null, `the server process is still running:\n${proc.output().slice(-2000)}`);

    const failures = outcomes.filter((o) => o.status !== 200);
    const bad = failures.filter((o) => !(o.status >= 500 && o.status < 600 && o.errcode === "M_UNKNOWN"));
    assert.deepEqual(bad.slice(0, 5), [], `every failure is a 5xx with M_UNKNOWN (${bad.length} were not)`);
    assert.ok(failures.length > 0, "killing connections made some requests fail (otherwise this test tests nothing)");
    assert.ok(recovered(), `after the connections stopped dying, requests succeed again: ${JSON.stringify(outcomes.slice(-WRITERS * 3))}`);
    const slowest = Math.max(...outcomes.map((o) => o.ms));
    assert.ok(slowest < 14_000, `no request hung (slowest ${slowest} ms)`);
    t.diagnostic(`${terminated} backends terminated; ${outcomes.length} requests, ${failures.length} failed with 5xx M_UNKNOWN; slowest ${slowest} ms`);

    // Tokens handed to the reader never went backwards.
    for (let k = 1; k < tokens.length; k++) assert.ok(tokens[k]! >= tokens[k - 1]!, `sync token went back from ${tokens[k - 1]} to ${tokens[k]}`);

    // ---- no partial writes, no gaps -------------------------------------------------------------
    const db = new pg.Client({ connectionString: scratch.url });
    await db.connect();
    try {
      const p1 = Number((await db.query("select value from counters where name = 'stream'")).rows[0].value);
      const events = (await db.query("select stream_ordering, event_id, depth, json from events where room_id = $1 and stream_ordering > $2 order by stream_ordering", [roomId, p0])).rows as Array<{ stream_ordering: number; event_id: string; depth: number; json: string }>;
      const data = (await db.query("select stream_pos, type from account_data where stream_pos > $1", [p0])).rows as Array<{ stream_pos: number; type: string }>;
      // Only messages and account data were written: together they take every position once.
      const positions = [...events.map((e) => Number(e.stream_ordering)), ...data.map((d) => Number(d.stream_pos))].sort((a, b) => a - b);
      assert.deepEqual(positions, Array.from({ length: p1 - p0 }, (_, k) => p0 + 1 + k), "stream positions are gap-free and unique");
      // The room's graph is linear and each event points at the one before it.
      const all = (await db.query("select event_id, depth, json from events where room_id = $1 order by stream_ordering", [roomId])).rows as Array<{ event_id: string; depth: number; json: string }>;
      for (let k = 1; k < all.length; k++) {
        assert.equal(Number(all[k]!.depth), Number(all[k - 1]!.depth) + 1, "depth grows by one per event");
        assert.deepEqual((JSON.parse(all[k]!.json) as { prev_events: string[] }).prev_events, [all[k - 1]!.event_id]);
      }
      const last = (await db.query("select last_event_id, last_stream from rooms where room_id = $1", [roomId])).rows[0] as { last_event_id: string; last_stream: number };
      assert.equal(last.last_event_id, all[all.length - 1]!.event_id, "the room's head is its last event");
      // Every acknowledged write is there.
      for (const [body, eventId] of ackedSend) assert.ok(events.some((e) => e.event_id === eventId), `acknowledged ${body}`);
      const types = new Set(data.map((d) => d.type));
      for (const t of ackedData.keys()) assert.ok(types.has(t), `acknowledged account data ${t}`);
      // Every event has its transaction record (written in the same transaction).
      const txns = Number((await db.query("select count(*) as n from event_txns where scope = 'send' and user_id = any($1)", [writers.map((w) => w.user_id)])).rows[0].n);
      assert.equal(txns, events.filter((e) => JSON.parse(e.json).type === "m.room.message").length, "one transaction record per stored message");
    } finally {
      await db.end();
    }

    // The reader saw everything exactly once.
    const final = await call<Json>(base, "GET", `/_matrix/client/v3/sync?timeout=0&set_presence=offline&since=${enc(since)}&filter=${enc(FILTER)}`, { token: reader.access_token });
    for (const e of (final.body.rooms?.join?.[roomId]?.timeline?.events ?? []) as Json[]) {
      assert.ok(!seen.has(e.event_id));
      seen.add(e.event_id);
    }
    // Every stored message, paged through /messages: a sync timeline stops at 500 events, and a
    // fast machine attempts more than that while the connections die.
    const allMessages = async (): Promise<Json[]> => {
      const out: Json[] = [];
      let from: string | undefined;
      for (;;) {
        const qs = new URLSearchParams({ dir: "b", limit: "1000", filter: JSON.stringify({ types: ["m.room.message"] }), ...(from ? { from } : {}) });
        const page = await call<Json>(base, "GET", `/_matrix/client/v3/rooms/${enc(roomId)}/messages?${qs}`, { token: reader.access_token });
        assert.equal(page.status, 200, JSON.stringify(page.body));
        out.push(...(page.body.chunk as Json[]));
        if (!page.body.end || (page.body.chunk as Json[]).length === 0) return out.reverse();
        from = page.body.end as string;
      }
    };
    assert.deepEqual(seen, new Set((await allMessages()).map((e) => e.event_id as string)), "the long-polling reader missed nothing");

    // Retrying every send (as clients do after a 5xx) stores each message exactly once.
    await Promise.all(
      writers.map(async (w, i) => {
        for (const body of attempted[i]!) {
          const n = Number(body.split("-")[1]);
          const res = await call<Json>(base, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/s${n}`, { token: w.access_token, body: { msgtype: "m.text", body } });
          assert.equal(res.status, 200, JSON.stringify(res.body));
          if (ackedSend.has(body)) assert.equal(res.body.event_id, ackedSend.get(body));
        }
      }),
    );
    const bodies = (await allMessages()).map((e) => e.content.body as string);
    assert.equal(new Set(bodies).size, bodies.length, "no message stored twice");
    assert.deepEqual(new Set(bodies), new Set(attempted.flat()), "every attempted message stored once after retries");
  });
});
