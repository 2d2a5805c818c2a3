import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import pino from "pino";
import { migrate, openPostgres, openSqlite, type Storage } from "../storage/database.js";
import { StreamWriter } from "../storage/stream.js";
import { LocalBus } from "../bus/local.js";
import { backoff, DEFAULT_TUNING, PushDelivery } from "./delivery.js";
import { PushDestinations } from "./destinations.js";
import { DB_KINDS, PG_SKIP_MESSAGE, createScratchDatabase, postgresReachable } from "../../test/support/databases.js";

// Before any test is declared: the runner starts once the first one is.
const pgOk = await postgresReachable();

test("back-off doubles from the base and stops at the cap", () => {
  const t = { retryBaseMs: 1000, retryMaxMs: 300_000 };
  assert.deepEqual([0, 1, 2, 3].map((a) => backoff(a, t)), [1000, 2000, 4000, 8000]);
  assert.equal(backoff(9, t), 300_000);
  assert.equal(backoff(1000, t), 300_000);
  assert.ok(DEFAULT_TUNING.retryBaseMs > 0 && DEFAULT_TUNING.giveUpAfterMs > DEFAULT_TUNING.retryMaxMs);
});

for (const kind of DB_KINDS) {
  describe(`push delivery queue [${kind}]`, { skip: kind === "postgres" && !pgOk ? PG_SKIP_MESSAGE : false }, () => {
    // Two storages on one database play two processes (PostgreSQL); SQLite has one writer, so
    // both workers share its connection there.
    let a: Storage;
    let b: Storage;
    let drop = async (): Promise<void> => undefined;
    let gateway: Server;
    let url = "";
    const seen: string[] = [];

    before(async () => {
      if (kind === "sqlite") {
        a = b = openSqlite(":memory:");
      } else {
        const scratch = await createScratchDatabase();
        a = openPostgres(scratch.url);
        b = openPostgres(scratch.url);
        drop = scratch.drop;
      }
      await migrate(a);
      gateway = createServer((req, res) => {
        let raw = "";
        req.on("data", (c: Buffer) => (raw += c.toString("utf8")));
        req.on("end", () => {
          const n = (JSON.parse(raw) as { notification: { event_id: string; devices: Array<{ pushkey: string }> } }).notification;
          seen.push(`${n.devices[0]!.pushkey} ${n.event_id}`);
          // A little latency, so both workers are busy at the same time.
          setTimeout(() => res.writeHead(200).end('{"rejected":[]}'), 5);
        });
      });
      // Longer than the test: an idle keep-alive socket closed under a reused connection would make a retry.
      gateway.keepAliveTimeout = 60_000;
      await new Promise<void>((r) => gateway.listen(0, "127.0.0.1", r));
      url = `http://127.0.0.1:${(gateway.address() as AddressInfo).port}/_matrix/push/v1/notify`;
    });
    after(async () => {
      await a.close();
      if (b !== a) await b.close();
      await drop();
      await new Promise<void>((r) => gateway.close(() => r()));
    });

    function worker(storage: Storage): PushDelivery {
      const bus = new LocalBus();
      const d = new PushDelivery({ storage, stream: new StreamWriter(storage, bus), bus, log: pino({ level: "silent" }), webPush: null, includeContent: false, destinations: new PushDestinations(["127.0.0.1"]) });
      d.tuning.batch = 7;
      d.tuning.retryBaseMs = 50;
      return d;
    }

    test("two workers on one database send every notification exactly once, whole events per batch, shared ones to the members they concern", async () => {
      const users = Array.from({ length: 12 }, (_, i) => `@u${i}:test`);
      for (const u of users) {
        await a.db
          .insertInto("pushers")
          .values({ user_id: u, app_id: "app", pushkey: `pk-${u}`, kind: "http", json: JSON.stringify({ app_id: "app", pushkey: `pk-${u}`, kind: "http", data: { url, format: "event_id_only" } }), created_ts: 1000 })
          .execute();
      }
      // The twelve are joined; a thirteenth with a pusher joins after the events.
      const member = (user_id: string, joined_at: number) => ({ room_id: "!r:test", user_id, membership: "join", event_id: `$join-${user_id}`, stream_ordering: joined_at, sender: user_id, displayname: null, avatar_url: null, forgotten: 0, joined_at });
      await a.db.insertInto("room_members").values(users.map((u) => member(u, 0))).execute();
      await a.db
        .insertInto("pushers")
        .values({ user_id: "@late:test", app_id: "app", pushkey: "pk-late", kind: "http", json: JSON.stringify({ app_id: "app", pushkey: "pk-late", kind: "http", data: { url, format: "event_id_only" } }), created_ts: 1000 })
        .execute();
      await a.db.insertInto("room_members").values(member("@late:test", 1_000_000)).execute();
      // Twenty events, each notifying the twelve users: more recipients than one batch holds. Even
      // ones as rows of their own per user; odd ones as the shared outcome, sent by u5 (who is not
      // notified of their own message) with u3 the exception who is not notified.
      const stream = new StreamWriter(a, new LocalBus());
      const expected: string[] = [];
      for (let i = 0; i < 20; i++) {
        await stream.write(async (w) => {
          const pos = w.next();
          const eventId = `$e${i}`;
          if (i % 2 === 0) {
            await w.tx
              .insertInto("event_push_actions")
              .values(users.map((u) => ({ room_id: "!r:test", user_id: u, event_id: eventId, stream_ordering: pos, thread_id: "main", notify: 1, highlight: 0 })))
              .execute();
            expected.push(...users.filter((u) => u !== "@u11:test").map((u) => `pk-${u} ${eventId}`));
          } else {
            await w.tx.insertInto("event_push_shared").values({ stream_ordering: pos, room_id: "!r:test", event_id: eventId, sender: "@u5:test", thread_id: "main", highlight: 0 }).execute();
            await w.tx.insertInto("event_push_actions").values({ room_id: "!r:test", user_id: "@u3:test", event_id: eventId, stream_ordering: pos, thread_id: "main", notify: 0, highlight: 0 }).execute();
            expected.push(...users.filter((u) => !["@u11:test", "@u5:test", "@u3:test"].includes(u)).map((u) => `pk-${u} ${eventId}`));
          }
        });
      }
      // A user without a pusher is never queued.
      await stream.write(async (w) => {
        const pos = w.next();
        await w.tx.insertInto("event_push_actions").values({ room_id: "!r:test", user_id: "@nopusher:test", event_id: "$lonely", stream_ordering: pos, thread_id: "main", notify: 1, highlight: 0 }).execute();
      });
      const one = worker(a);
      const two = worker(b);
      // Silence one user through a filter, as duty hours do.
      for (const w of [one, two]) w.addFilter(async () => (userId) => userId === "@u11:test");
      one.start();
      two.start();
      // A worker's run ends when it finds nothing left to claim, which may be because the other one
      // just claimed it: flush both until the queue is empty and the cursor has caught up.
      const drained = async () => {
        const q = await a.db.selectFrom("push_queue").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirst();
        const c = await a.db.selectFrom("counters").select("value").where("name", "=", "push_delivery").executeTakeFirstOrThrow();
        return Number(q?.n) === 0 && Number(c.value) === (await stream.current());
      };
      for (let i = 0; i < 200 && !(await drained()); i++) {
        await Promise.all([one.flush(), two.flush()]);
        await new Promise((r) => setTimeout(r, 25));
      }
      await Promise.all([one.stop(), two.stop()]);
      assert.equal(new Set(expected).size, 10 * 11 + 10 * 9);
      assert.deepEqual([...seen].sort(), expected.sort());
      assert.ok(await drained());
    });

    test("notifications arriving back to back are moved in runs at least minIntervalMs apart, none lost", async () => {
      const user = "@paced:test";
      await a.db
        .insertInto("pushers")
        .values({ user_id: user, app_id: "app", pushkey: "pk-paced", kind: "http", json: JSON.stringify({ app_id: "app", pushkey: "pk-paced", kind: "http", data: { url, format: "event_id_only" } }), created_ts: 1000 })
        .execute();
      const bus = new LocalBus();
      const stream = new StreamWriter(a, bus);
      const d = new PushDelivery({ storage: a, stream, bus, log: pino({ level: "silent" }), webPush: null, includeContent: false, destinations: new PushDestinations(["127.0.0.1"]) });
      d.tuning.minIntervalMs = 300;
      // Each run begins with an enqueue: record when the runs began.
      const runs: number[] = [];
      const enqueue = d.enqueue.bind(d);
      let inRun = false;
      d.enqueue = async () => {
        if (!inRun) runs.push(Date.now());
        inRun = true;
        const more = await enqueue();
        if (!more) inRun = false;
        return more;
      };
      d.start();
      await d.flush();
      runs.length = 0;
      const expected: string[] = [];
      for (let i = 0; i < 10; i++) {
        const eventId = `$paced${i}`;
        await stream.write(async (w) => {
          const pos = w.next();
          await w.tx.insertInto("event_push_actions").values({ room_id: "!r:test", user_id: user, event_id: eventId, stream_ordering: pos, thread_id: "main", notify: 1, highlight: 0 }).execute();
          d.noteNotifications(pos);
        });
        expected.push(`pk-paced ${eventId}`);
      }
      for (let i = 0; i < 100 && !expected.every((e) => seen.includes(e)); i++) await new Promise((r) => setTimeout(r, 20));
      await d.stop();
      assert.deepEqual(seen.filter((x) => x.startsWith("pk-paced")).sort(), expected.sort(), "every notification pushed once");
      assert.ok(runs.length >= 1 && runs.length <= 3, `ten messages in quick succession took ${runs.length} runs`);
      for (let i = 1; i < runs.length; i++) assert.ok(runs[i]! - runs[i - 1]! >= 295, `runs ${runs[i]! - runs[i - 1]!} ms apart`);
    });
  });
}
