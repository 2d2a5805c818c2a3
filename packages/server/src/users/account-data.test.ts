import { after, before, describe, test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { migrate, openPostgres, openSqlite, type Storage } from "../storage/database.js";
import { StreamWriter } from "../storage/stream.js";
import { LocalBus } from "../bus/local.js";
import type { WakeUp } from "../bus/bus.js";
import { AccountData } from "./account-data.js";
import { DB_KINDS, PG_SKIP_MESSAGE, createScratchDatabase, postgresReachable, type DbKind } from "../../test/support/databases.js";

interface Env {
  storage: Storage;
  stream: StreamWriter;
  ad: AccountData;
  wakes: WakeUp[];
  close(): Promise<void>;
}

async function openEnv(kind: DbKind): Promise<Env | null> {
  let storage: Storage;
  let drop = async (): Promise<void> => undefined;
  if (kind === "sqlite") {
    storage = openSqlite(":memory:");
  } else {
    if (!(await postgresReachable())) return null;
    const scratch = await createScratchDatabase();
    storage = openPostgres(scratch.url);
    drop = scratch.drop;
  }
  await migrate(storage);
  const bus = new LocalBus();
  const wakes: WakeUp[] = [];
  bus.subscribe(({ position, rooms, users }) => wakes.push({ position, rooms, users }));
  const stream = new StreamWriter(storage, bus);
  return {
    storage,
    stream,
    ad: new AccountData(storage.db, stream),
    wakes,
    close: async () => {
      await storage.close();
      await drop();
    },
  };
}

for (const kind of DB_KINDS) {
  describe(`AccountData on ${kind}`, () => {
    let env: Env | null = null;
    before(async () => {
      env = await openEnv(kind);
    });
    after(async () => {
      await env?.close();
    });

    /** The environment, or null after marking the test skipped because PostgreSQL is absent. */
    function use(t: TestContext): Env | null {
      if (!env) t.skip(PG_SKIP_MESSAGE);
      return env;
    }

    test("set and get global and room data separately", async (t) => {
      const e = use(t);
      if (!e) return;
      const u = "@get:test";
      await e.ad.set(u, null, "org.example.a", { v: 1 });
      await e.ad.set(u, "!room:test", "org.example.a", { v: 2 });
      assert.deepEqual(await e.ad.get(u, null, "org.example.a"), { v: 1 });
      assert.deepEqual(await e.ad.get(u, "!room:test", "org.example.a"), { v: 2 });
      assert.equal(await e.ad.get(u, null, "org.example.missing"), undefined);
      assert.equal(await e.ad.get("@other:test", null, "org.example.a"), undefined);
    });

    test("every set takes a new stream position and wakes only the owner", async (t) => {
      const e = use(t);
      if (!e) return;
      const u = "@pos:test";
      const start = await e.stream.current();
      const p1 = await e.ad.set(u, null, "org.example.x", { n: 1 });
      const p2 = await e.ad.set(u, null, "org.example.x", { n: 2 });
      assert.equal(p1, start + 1);
      assert.equal(p2, start + 2);
      assert.equal(await e.stream.current(), p2);
      const wake = e.wakes.at(-1);
      assert.deepEqual(wake, { position: p2, rooms: [], users: [u] });
      assert.deepEqual(await e.ad.get(u, null, "org.example.x"), { n: 2 });
    });

    test("all() groups global and per-room data with the latest content", async (t) => {
      const e = use(t);
      if (!e) return;
      const u = "@all:test";
      await e.ad.set(u, null, "m.direct", { "@bob:test": ["!dm:test"] });
      await e.ad.set(u, "!r1:test", "m.tag", { tags: { "m.favourite": {} } });
      await e.ad.set(u, "!r1:test", "org.example.note", { text: "old" });
      await e.ad.set(u, "!r2:test", "org.example.note", { text: "r2" });
      await e.ad.set(u, "!r1:test", "org.example.note", { text: "new" });
      await e.ad.set("@someone-else:test", null, "m.direct", {});

      const all = await e.ad.all(u);
      assert.deepEqual(all.global, [{ type: "m.direct", content: { "@bob:test": ["!dm:test"] } }]);
      assert.deepEqual([...all.rooms.keys()].sort(), ["!r1:test", "!r2:test"]);
      assert.deepEqual(all.rooms.get("!r1:test"), [
        { type: "m.tag", content: { tags: { "m.favourite": {} } } },
        { type: "org.example.note", content: { text: "new" } },
      ]);
      assert.deepEqual(all.rooms.get("!r2:test"), [{ type: "org.example.note", content: { text: "r2" } }]);
    });

    test("changedSince returns exactly the rows written in (since, upto]", async (t) => {
      const e = use(t);
      if (!e) return;
      const u = "@window:test";
      const p0 = await e.stream.current();
      const p1 = await e.ad.set(u, null, "a", { a: 1 });
      const p2 = await e.ad.set(u, "!w:test", "b", { b: 1 });
      const p3 = await e.ad.set(u, null, "c", { c: 1 });

      const mid = await e.ad.changedSince(u, p1, p2);
      assert.deepEqual(mid.global, []);
      assert.deepEqual(mid.rooms.get("!w:test"), [{ type: "b", content: { b: 1 } }]);

      const everything = await e.ad.changedSince(u, p0, p3);
      assert.deepEqual(everything.global.map((x) => x.type), ["a", "c"]);
      assert.equal(everything.rooms.size, 1);

      const none = await e.ad.changedSince(u, p3, p3);
      assert.deepEqual(none.global, []);
      assert.equal(none.rooms.size, 0);

      // Rewriting "a" moves it forward: it appears in the new window with its new content.
      const p4 = await e.ad.set(u, null, "a", { a: 2 });
      assert.deepEqual((await e.ad.changedSince(u, p3, p4)).global, [{ type: "a", content: { a: 2 } }]);
      assert.deepEqual((await e.ad.changedSince(u, p0, p3)).global.map((x) => x.type), ["c"]);

      // all() bounded by an older position leaves later writes out.
      assert.deepEqual((await e.ad.all(u, p3)).global.map((x) => x.type), ["c"]);
    });

    test("update reads and writes in one step; returning undefined writes nothing", async (t) => {
      const e = use(t);
      if (!e) return;
      const u = "@upd:test";
      const r = "!upd:test";
      await Promise.all(
        ["t1", "t2", "t3", "t4"].map((tag) => e.ad.update(u, r, "m.tag", (cur) => ({ tags: { ...((cur?.tags as Record<string, unknown>) ?? {}), [tag]: {} } }))),
      );
      assert.deepEqual(Object.keys(((await e.ad.get(u, r, "m.tag"))?.tags as Record<string, unknown>) ?? {}).sort(), ["t1", "t2", "t3", "t4"]);

      const before = await e.stream.current();
      const out = await e.ad.update(u, r, "m.tag", () => undefined);
      assert.equal(out, undefined);
      assert.equal(await e.stream.current(), before);
    });

    test("filters get small per-user ids, identical filters are reused", async (t) => {
      const e = use(t);
      if (!e) return;
      const u = "@filter:test";
      const f0 = { room: { timeline: { limit: 10 } } };
      const f1 = { presence: { types: ["m.presence"] } };
      const id0 = await e.ad.saveFilter(u, f0);
      const id1 = await e.ad.saveFilter(u, f1);
      assert.equal(id0, "0");
      assert.equal(id1, "1");
      assert.equal(await e.ad.saveFilter(u, { room: { timeline: { limit: 10 } } }), "0");
      assert.equal(await e.ad.saveFilter("@filter2:test", f1), "0");
      assert.deepEqual(await e.ad.getFilter(u, id0), f0);
      assert.deepEqual(await e.ad.getFilter(u, id1), f1);
      assert.deepEqual(await e.ad.getFilter("@filter2:test", "0"), f1);
      assert.equal(await e.ad.getFilter(u, "99"), undefined);
      assert.equal(await e.ad.getFilter("@nobody:test", id0), undefined);

      // Ids keep counting numerically past 9 (no text ordering surprises).
      for (let i = 2; i <= 10; i++) assert.equal(await e.ad.saveFilter(u, { n: i }), String(i));
      assert.equal(await e.ad.saveFilter(u, { n: 11 }), "11");
    });

    test("concurrent filter uploads get distinct ids", async (t) => {
      const e = use(t);
      if (!e) return;
      const u = "@filter-race:test";
      const ids = await Promise.all([0, 1, 2, 3, 4].map((n) => e.ad.saveFilter(u, { event_fields: [`f${n}`] })));
      assert.equal(new Set(ids).size, 5);
      for (const [n, id] of ids.entries()) assert.deepEqual(await e.ad.getFilter(u, id), { event_fields: [`f${n}`] });
    });
  });
}
