import { after, before, describe, test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { sql } from "kysely";
import { migrate, openPostgres, openSqlite, type Storage } from "./database.js";
import { StreamWriter, type StreamWrite } from "./stream.js";
import { LocalBus } from "../bus/local.js";
import type { WakeUp } from "../bus/bus.js";
import { DB_KINDS, PG_SKIP_MESSAGE, createScratchDatabase, postgresReachable, type DbKind } from "../../test/support/databases.js";

interface Env {
  storage: Storage;
  stream: StreamWriter;
  wakes: WakeUp[];
  close(): Promise<void>;
}

async function openEnv(kind: DbKind): Promise<Env | null> {
  let storage: Storage;
  let cleanup = async (): Promise<void> => undefined;
  if (kind === "sqlite") {
    // A file, not :memory:, so reads go through the separate read connection as in production.
    const dir = mkdtempSync(path.join(tmpdir(), "revier-stream-test-"));
    storage = openSqlite(path.join(dir, "revier.db"));
    cleanup = async () => rmSync(dir, { recursive: true, force: true });
  } else {
    if (!(await postgresReachable())) return null;
    const scratch = await createScratchDatabase();
    storage = openPostgres(scratch.url);
    cleanup = scratch.drop;
  }
  await migrate(storage);
  // Parent and child with a foreign key checked only at commit: a way to make a commit fail.
  await sql`create table t_parent (id integer primary key)`.execute(storage.db);
  await sql`create table t_child (id integer primary key, parent integer references t_parent (id) deferrable initially deferred)`.execute(storage.db);
  const bus = new LocalBus();
  const wakes: WakeUp[] = [];
  bus.subscribe((w) => wakes.push(w));
  return {
    storage,
    // No pause after a replayed batch (see StreamWriter.savepointsUntil): each test here that
    // expects a savepoint-free first run gets one.
    stream: new StreamWriter(storage, bus, { replayPauseMs: 0 }),
    wakes,
    close: async () => {
      await storage.close();
      await cleanup();
    },
  };
}

/** A presence-like write: one item at one position, announced as presence news of `rooms`. */
async function putPresence(w: StreamWrite, user: string, rooms: string[]): Promise<number> {
  const pos = w.next();
  await w.tx.insertInto("account_data").values({ user_id: user, room_id: "", type: `t.${pos}`, content: "{}", stream_pos: pos }).execute();
  w.touch({ users: [user], rooms, kind: "presence" });
  return pos;
}

/** One account-data item per position taken; returns the positions. */
async function putItems(w: StreamWrite, user: string, count: number): Promise<number[]> {
  const positions: number[] = [];
  for (let i = 0; i < count; i++) {
    const pos = w.next();
    await w.tx.insertInto("account_data").values({ user_id: user, room_id: "", type: `t.${pos}`, content: "{}", stream_pos: pos }).execute();
    positions.push(pos);
  }
  w.touch({ users: [user] });
  return positions;
}

async function storedPositions(e: Env, user: string): Promise<number[]> {
  const rows = await e.storage.db.selectFrom("account_data").select("stream_pos").where("user_id", "=", user).orderBy("stream_pos").execute();
  return rows.map((r) => Number(r.stream_pos));
}

for (const kind of DB_KINDS) {
  describe(`StreamWriter group commit on ${kind}`, () => {
    let e: Env | null = null;
    before(async () => {
      e = await openEnv(kind);
    });
    after(async () => {
      await e?.close();
    });
    const env = (t: TestContext): Env | null => {
      if (!e) t.skip(PG_SKIP_MESSAGE);
      e?.wakes.splice(0);
      return e;
    };

    test("concurrent writes commit together, in arrival order, with consecutive positions", async (t) => {
      const x = env(t);
      if (!x) return;
      const start = await x.stream.current();
      // Started in one tick, so they all queue before the first batch begins.
      const writes = Array.from({ length: 20 }, (_, i) => x.stream.write((w) => putItems(w, `@c${i}:test`, 1 + (i % 3))));
      const results = await Promise.all(writes);
      const all = results.flat();
      assert.deepEqual(
        all,
        Array.from({ length: all.length }, (_, i) => start + 1 + i),
      );
      assert.equal(await x.stream.current(), start + all.length);
      // One commit, one wake-up naming everyone.
      assert.equal(x.wakes.length, 1);
      assert.equal(x.wakes[0]!.position, start + all.length);
      assert.equal(x.wakes[0]!.from, start, "the wake-up says which positions it covers");
      assert.equal(new Set(x.wakes[0]!.users).size, 20);
      // Acknowledged means committed: a plain read sees every item.
      for (let i = 0; i < 20; i++) assert.deepEqual(await storedPositions(x, `@c${i}:test`), results[i]);
    });

    test("presence writes of a batch run first and are announced apart, so the others do not make their rooms news", async (t) => {
      const x = env(t);
      if (!x) return;
      const start = await x.stream.current();
      const presence = (user: string, fail = false) =>
        x.stream.write(
          async (w) => {
            const pos = await putPresence(w, user, [`!${user.slice(1, 3)}:test`, "!channel:test"]);
            if (fail) throw new Error("presence write refuses");
            return pos;
          },
          { presence: true },
        );
      const message = x.stream.write(async (w) => {
        const [pos] = await putItems(w, "@m:test", 1);
        w.touch({ rooms: ["!channel:test"] });
        return pos;
      });
      const receipt = x.stream.write(async (w) => {
        const [pos] = await putItems(w, "@r:test", 1);
        w.touch({ rooms: ["!other:test"], kind: "ephemeral" });
        return pos;
      });
      const [m, p1, r, p2, p3] = await Promise.allSettled([message, presence("@p1:test"), receipt, presence("@p2:test"), presence("@p3:test", true)]);
      // Presence first, each part in arrival order; the failing one's position is given out again.
      assert.deepEqual(
        [p1, p2, m, r].map((o) => (o.status === "fulfilled" ? o.value : o.reason)),
        [start + 1, start + 2, start + 3, start + 4],
      );
      assert.equal(p3.status, "rejected");
      assert.equal(x.wakes.length, 2, "one announcement for the presence writes, one for the rest");
      const [pw, rest] = x.wakes as [WakeUp, WakeUp];
      assert.deepEqual({ from: pw.from, position: pw.position, presenceOnly: pw.presenceOnly }, { from: start, position: start + 2, presenceOnly: true });
      assert.deepEqual([...pw.rooms].sort(), ["!channel:test", "!p1:test", "!p2:test"]);
      assert.deepEqual([...pw.users].sort(), ["@p1:test", "@p2:test"]);
      // The rest: the message's room is news, the receipt's room is ephemeral news, and the rooms
      // of the users whose presence changed are not named at all.
      assert.deepEqual({ from: rest.from, position: rest.position, presenceOnly: rest.presenceOnly }, { from: start + 2, position: start + 4, presenceOnly: undefined });
      assert.deepEqual(rest.rooms, ["!channel:test"]);
      assert.deepEqual(rest.ephemeralRooms, ["!other:test"]);
      assert.deepEqual([...rest.users].sort(), ["@m:test", "@r:test"]);
    });

    test("a batch of presence writes alone, or of none, is announced once", async (t) => {
      const x = env(t);
      if (!x) return;
      const start = await x.stream.current();
      const only = await Promise.all(
        ["@q1:test", "@q2:test"].map((u) =>
          x.stream.write(
            (w) => putPresence(w, u, ["!q:test"]),
            { presence: true },
          ),
        ),
      );
      assert.deepEqual(only, [start + 1, start + 2], "presence writes alone keep their arrival order");
      assert.equal(x.wakes.length, 1);
      assert.deepEqual({ from: x.wakes[0]!.from, position: x.wakes[0]!.position, presenceOnly: x.wakes[0]!.presenceOnly }, { from: start, position: start + 2, presenceOnly: true });
      // Presence writes that took no position (nothing changed) leave the others' announcement alone.
      x.wakes.splice(0);
      await Promise.all([x.stream.write(async () => undefined, { presence: true }), x.stream.write((w) => putItems(w, "@n:test", 1))]);
      assert.equal(x.wakes.length, 1);
      assert.deepEqual({ from: x.wakes[0]!.from, position: x.wakes[0]!.position }, { from: start + 2, position: start + 3 });
    });

    test("a failing write in a batch is undone alone and its positions are reused", async (t) => {
      const x = env(t);
      if (!x) return;
      const start = await x.stream.current();
      const boom = new Error("write b refuses");
      const a = x.stream.write((w) => putItems(w, "@a:test", 2));
      const b = x.stream.write(async (w) => {
        await putItems(w, "@b:test", 3);
        throw boom;
      });
      const c = x.stream.write((w) => putItems(w, "@c:test", 1));
      const [ra, rb, rc] = await Promise.allSettled([a, b, c]);
      assert.deepEqual(ra, { status: "fulfilled", value: [start + 1, start + 2] });
      assert.deepEqual(rb, { status: "rejected", reason: boom });
      assert.deepEqual(rc, { status: "fulfilled", value: [start + 3] });
      assert.deepEqual(await storedPositions(x, "@b:test"), []);
      assert.equal(await x.stream.current(), start + 3);
      assert.equal(x.wakes.length, 1);
      assert.deepEqual([...x.wakes[0]!.users].sort(), ["@a:test", "@c:test"]);
    });

    test("a position handed back is given out again; only the last one given can be handed back", async (t) => {
      const x = env(t);
      if (!x) return;
      const start = await x.stream.current();
      const a = x.stream.write(async (w) => {
        const first = w.next();
        const unused = w.next();
        assert.throws(() => w.giveBack(first), /handed back, but the last one given was/);
        w.giveBack(unused);
        const again = w.next();
        await w.tx.insertInto("account_data").values({ user_id: "@gb:test", room_id: "", type: "t.1", content: "{}", stream_pos: first }).execute();
        await w.tx.insertInto("account_data").values({ user_id: "@gb:test", room_id: "", type: "t.2", content: "{}", stream_pos: again }).execute();
        w.touch({ users: ["@gb:test"] });
        return [first, unused, again];
      });
      const b = x.stream.write((w) => putItems(w, "@gb2:test", 1));
      assert.deepEqual(await a, [start + 1, start + 2, start + 2]);
      assert.deepEqual(await b, [start + 3]);
      assert.equal(await x.stream.current(), start + 3);
    });

    test("replayable writes: a failing one is undone alone, and the others commit once", async (t) => {
      const x = env(t);
      if (!x) return;
      const start = await x.stream.current();
      const runs = new Map<string, number>();
      const put = (user: string, count: number, fail = false) =>
        x.stream.write(
          async (w) => {
            runs.set(user, (runs.get(user) ?? 0) + 1);
            const positions = await putItems(w, user, count);
            if (fail) throw new Error(`${user} refuses`);
            return positions;
          },
          { replayable: true },
        );
      // All clean: one run each.
      const clean = await Promise.all([put("@r1:test", 1), put("@r2:test", 2)]);
      assert.deepEqual(clean, [[start + 1], [start + 2, start + 3]]);
      assert.deepEqual([...runs.values()], [1, 1]);
      runs.clear();
      const [ra, rb, rc] = await Promise.allSettled([put("@ra:test", 2), put("@rb:test", 3, true), put("@rc:test", 1)]);
      assert.deepEqual(ra, { status: "fulfilled", value: [start + 4, start + 5] });
      assert.equal(rb.status, "rejected");
      assert.match(String((rb as PromiseRejectedResult).reason), /@rb:test refuses/);
      assert.deepEqual(rc, { status: "fulfilled", value: [start + 6] });
      for (const [u, want] of [
        ["@ra:test", [start + 4, start + 5]],
        ["@rb:test", []],
        ["@rc:test", [start + 6]],
      ] as const)
        assert.deepEqual(await storedPositions(x, u), want);
      assert.equal(await x.stream.current(), start + 6);
      // On PostgreSQL the batch first ran without savepoints and was run again with them after the
      // failure: the writes before the failing one ran twice, the one after it once. SQLite runs
      // every batch with savepoints.
      const again = kind === "postgres" ? 2 : 1;
      assert.deepEqual(Object.fromEntries(runs), { "@ra:test": again, "@rb:test": again, "@rc:test": 1 });
      // One wake-up for the committed batch, not naming the failed write.
      assert.deepEqual(x.wakes.map((wk) => [...wk.users].sort()), [["@r1:test", "@r2:test"], ["@ra:test", "@rc:test"]]);
    });

    test("a replayable write that fails only when run again is undone, and its first run names no one", async (t) => {
      const x = env(t);
      if (!x) return;
      const start = await x.stream.current();
      let fickleRuns = 0;
      const fickle = x.stream.write(
        async (w) => {
          fickleRuns++;
          const positions = await putItems(w, "@fickle:test", 1);
          if (fickleRuns > 1) throw new Error("refuses the second time");
          return positions;
        },
        { replayable: true },
      );
      const refusing = x.stream.write(
        async (w) => {
          await putItems(w, "@refusing:test", 1);
          throw new Error("refuses");
        },
        { replayable: true },
      );
      const fine = x.stream.write((w) => putItems(w, "@fine:test", 1), { replayable: true });
      const [rf, rr, ok] = await Promise.allSettled([fickle, refusing, fine]);
      assert.equal(rr.status, "rejected");
      if (kind === "postgres") {
        assert.deepEqual(ok, { status: "fulfilled", value: [start + 1] });
        // Its first run, rolled back with the others, succeeded; the second, which counts, failed.
        assert.equal(fickleRuns, 2);
        assert.equal(rf.status, "rejected");
        assert.deepEqual(await storedPositions(x, "@fickle:test"), []);
        assert.deepEqual(x.wakes.map((wk) => [...wk.users]), [["@fine:test"]]);
      } else {
        assert.equal(fickleRuns, 1);
        assert.deepEqual(rf, { status: "fulfilled", value: [start + 1] });
        assert.deepEqual(ok, { status: "fulfilled", value: [start + 2] });
      }
    });

    test("after a batch had to run again, the next ones keep their savepoints for a while", async (t) => {
      const x = env(t);
      if (!x) return;
      // A writer of its own, so the pause is long enough that timing cannot matter.
      const stream = new StreamWriter(x.storage, new LocalBus(), { replayPauseMs: 60_000 });
      const runs = new Map<string, number>();
      const put = (user: string, fail = false) =>
        stream.write(
          async (w) => {
            runs.set(user, (runs.get(user) ?? 0) + 1);
            const positions = await putItems(w, user, 1);
            if (fail) throw new Error(`${user} refuses`);
            return positions;
          },
          { replayable: true },
        );
      for (const round of [1, 2]) {
        const settled = await Promise.allSettled([put(`@p${round}a:test`), put(`@p${round}b:test`, true), put(`@p${round}c:test`)]);
        assert.deepEqual(
          settled.map((r) => r.status),
          ["fulfilled", "rejected", "fulfilled"],
        );
      }
      // The first round ran without savepoints and again with them; the second had them from
      // the start, so its writes ran once. SQLite always has them.
      assert.equal(runs.get("@p1a:test"), kind === "postgres" ? 2 : 1);
      assert.equal(runs.get("@p2a:test"), 1);
      assert.equal(runs.get("@p2b:test"), 1);
    });

    test("a failing first or last write of a batch is undone alone, next to writes that share its savepoint statements", async (t) => {
      // On PostgreSQL one write's release and the next one's savepoint go as one statement, and
      // the last write's savepoint is released by the commit: failures at both ends of a batch.
      const x = env(t);
      if (!x) return;
      const start = await x.stream.current();
      const first = new Error("the first refuses");
      const last = new Error("the last refuses");
      const writes = [
        x.stream.write(async (w) => {
          await putItems(w, "@end1:test", 2);
          throw first;
        }),
        x.stream.write((w) => putItems(w, "@end2:test", 1)),
        x.stream.write((w) => putItems(w, "@end3:test", 2)),
        x.stream.write(async (w) => {
          await putItems(w, "@end4:test", 1);
          throw last;
        }),
      ];
      const results = await Promise.allSettled(writes);
      assert.deepEqual(results, [
        { status: "rejected", reason: first },
        { status: "fulfilled", value: [start + 1] },
        { status: "fulfilled", value: [start + 2, start + 3] },
        { status: "rejected", reason: last },
      ]);
      for (const u of ["@end1:test", "@end4:test"]) assert.deepEqual(await storedPositions(x, u), []);
      assert.deepEqual(await storedPositions(x, "@end3:test"), [start + 2, start + 3]);
      assert.equal(await x.stream.current(), start + 3);
      assert.equal(x.wakes.length, 1, "one batch");
      // And a batch whose last write succeeds after a failure commits that write too.
      const again = await Promise.allSettled([
        x.stream.write(async () => {
          throw first;
        }),
        x.stream.write((w) => putItems(w, "@end5:test", 1)),
      ]);
      assert.deepEqual(again[1], { status: "fulfilled", value: [start + 4] });
      assert.deepEqual(await storedPositions(x, "@end5:test"), [start + 4]);
    });

    test("a lone failing write rolls back and takes no position", async (t) => {
      const x = env(t);
      if (!x) return;
      const start = await x.stream.current();
      await assert.rejects(
        x.stream.write(async (w) => {
          await putItems(w, "@lone:test", 2);
          throw new Error("no");
        }),
        /no/,
      );
      assert.deepEqual(await storedPositions(x, "@lone:test"), []);
      assert.equal(await x.stream.current(), start);
      assert.equal(x.wakes.length, 0);
    });

    test("when the commit fails, no write of the batch is acknowledged, and writing goes on", async (t) => {
      const x = env(t);
      if (!x) return;
      const start = await x.stream.current();
      const a = x.stream.write((w) => putItems(w, "@ca:test", 1));
      // The dangling reference is only detected at commit, failing the whole batch.
      const b = x.stream.write(async (w) => {
        await sql`insert into t_child (id, parent) values (1, 999)`.execute(w.tx);
        return putItems(w, "@cb:test", 1);
      });
      const c = x.stream.write((w) => putItems(w, "@cc:test", 1));
      const results = await Promise.allSettled([a, b, c]);
      assert.deepEqual(
        results.map((r) => r.status),
        ["rejected", "rejected", "rejected"],
      );
      for (const u of ["@ca:test", "@cb:test", "@cc:test"]) assert.deepEqual(await storedPositions(x, u), []);
      assert.equal(await x.stream.current(), start);
      assert.equal(x.wakes.length, 0);
      // The writer (and on SQLite the connection's write lock) is free again.
      assert.deepEqual(await x.stream.write((w) => putItems(w, "@after:test", 1)), [start + 1]);
    });

    test("readers never see a write before it commits", async (t) => {
      const x = env(t);
      if (!x) return;
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      let inserted!: () => void;
      const didInsert = new Promise<void>((resolve) => (inserted = resolve));
      const write = x.stream.write(async (w) => {
        const positions = await putItems(w, "@slow:test", 1);
        inserted();
        await gate;
        return positions;
      });
      await didInsert;
      assert.deepEqual(await storedPositions(x, "@slow:test"), []);
      release();
      const positions = await write;
      assert.deepEqual(await storedPositions(x, "@slow:test"), positions);
    });
  });
}
