import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { sql } from "kysely";
import { migrate, openSqlite, type Storage } from "./database.js";
import { GroupSync, LogSyncFailed, startLogSyncer, type LogSyncer } from "./log-syncer.js";
import { StreamWriter } from "./stream.js";
import { LocalBus } from "../bus/local.js";

/** Whether `p` has settled after the event loop has turned a few times. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  p.then(
    () => (done = true),
    () => (done = true),
  );
  for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 5));
  return done;
}

/** Holds the storage's log syncs until `release()`; each then runs for real. */
function holdSyncs(syncer: LogSyncer): { release: () => void } {
  const real = syncer.sync.bind(syncer);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  (syncer as { sync: () => Promise<void> }).sync = async () => {
    await gate;
    return real();
  };
  return { release };
}

describe("SQLite commits are made durable by the log syncer's thread", () => {
  let dir: string;
  let storage: Storage;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "revier-logsync-test-"));
    storage = openSqlite(path.join(dir, "revier.db"), { checkpointer: false });
    await migrate(storage);
    await sql`create table t (id integer primary key, v text not null)`.execute(storage.db);
  });
  after(async () => {
    await storage?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("a database file gets a syncer, and its writer leaves the fsync out of COMMIT", async () => {
    assert.ok(storage.logSyncer, "no log syncer for a database file");
    // The pragma is per connection: asked inside a transaction, the writer answers. 1 = NORMAL.
    const writer = await storage.db.transaction().execute(async (tx) => (await sql<{ synchronous: number }>`pragma synchronous`.execute(tx)).rows[0]);
    assert.equal(writer?.synchronous, 1, `writer synchronous=${writer?.synchronous}`);
    const memory = openSqlite(":memory:");
    assert.equal(memory.logSyncer, undefined, "an in-memory database has nothing to sync");
    await memory.close();
    const off = openSqlite(path.join(dir, "full.db"), { checkpointer: false, logSync: false });
    try {
      assert.equal(off.logSyncer, undefined);
      const full = await off.db.transaction().execute(async (tx) => (await sql<{ synchronous: number }>`pragma synchronous`.execute(tx)).rows[0]);
      assert.equal(full?.synchronous, 2, "without the syncer, COMMIT fsyncs (FULL)");
    } finally {
      await off.close();
    }
  });

  test("a write outside a transaction and a transaction's commit return only after their sync; other reads see the row meanwhile", async () => {
    const syncer = storage.logSyncer!;
    const real = syncer.sync;
    const before = syncer.stats.syncs;
    try {
      const held = holdSyncs(syncer);
      const single = storage.db.insertInto("t" as never).values({ id: 1, v: "single" } as never).execute();
      const tx = storage.db.transaction().execute(async (t) => {
        await sql`insert into t (id, v) values (2, 'tx')`.execute(t);
      });
      assert.equal(await settled(single), false, "the autocommit write returned before its sync");
      assert.equal(await settled(tx), false, "the transaction returned before its sync");
      // Committed, not yet acknowledged: another request's read finds it (docs/architecture.md).
      const seen = await sql<{ n: number }>`select count(*) as n from t`.execute(storage.db);
      assert.equal(seen.rows[0]?.n, 2);
      held.release();
      await Promise.all([single, tx]);
      assert.ok(syncer.stats.syncs > before, "no sync ran");
    } finally {
      (syncer as { sync: () => Promise<void> }).sync = real;
    }
  });

  test("commits made while a sync runs share the next one", async () => {
    const syncer = storage.logSyncer!;
    const { syncs, waits } = syncer.stats;
    // Each insert commits synchronously and then waits; the thread's answer is a message, which
    // comes only after all twenty have committed.
    await Promise.all(Array.from({ length: 20 }, (_, i) => sql`insert into t (id, v) values (${100 + i}, 'many')`.execute(storage.db)));
    assert.equal(syncer.stats.waits - waits, 20);
    assert.equal(syncer.stats.syncs - syncs, 2, "the first commit's sync, then one for the nineteen that came during it");
  });

  test("the stream's current position stays short of a batch until it is durable", async () => {
    const stream = new StreamWriter(storage, new LocalBus());
    await stream.write(async (w) => void w.next());
    const start = await stream.current();
    const syncer = storage.logSyncer!;
    const real = syncer.sync;
    try {
      const held = holdSyncs(syncer);
      const write = stream.write(async (w) => void w.next());
      // Wait until the batch has committed: the counter row shows it to a reader.
      for (let i = 0; i < 100; i++) {
        const row = await sql<{ value: number }>`select value from counters where name = 'stream'`.execute(storage.db);
        if (Number(row.rows[0]?.value) === start + 1) break;
        await new Promise((r) => setTimeout(r, 5));
      }
      const committed = await sql<{ value: number }>`select value from counters where name = 'stream'`.execute(storage.db);
      assert.equal(Number(committed.rows[0]?.value), start + 1, "the batch did not commit");
      assert.equal(await stream.current(), start, "a position not yet durable was handed out");
      held.release();
      await write;
      assert.equal(await stream.current(), start + 1);
    } finally {
      (syncer as { sync: () => Promise<void> }).sync = real;
    }
  });
});

describe("a failed log sync stops all writing", () => {
  test("the real thread's failure (fdatasync refused) fails the waiting write and every later one; reads go on", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "revier-logsync-fail-"));
    const failures: Error[] = [];
    // procfs refuses fdatasync (EINVAL): a sync that fails, from the real worker.
    const storage = openSqlite(path.join(dir, "revier.db"), {
      checkpointer: false,
      logSync: () => startLogSyncer("/proc/self/status", (err) => failures.push(err)),
    });
    try {
      await assert.rejects(sql`create table t (id integer primary key)`.execute(storage.db), (err: Error) => err instanceof LogSyncFailed && /could not be made durable/.test(err.message));
      assert.equal(failures.length, 1, "the failure was not reported once");
      await assert.rejects(sql`insert into t (id) values (1)`.execute(storage.db), LogSyncFailed);
      await assert.rejects(
        storage.db.transaction().execute(async (tx) => {
          await sql`insert into t (id) values (2)`.execute(tx);
        }),
        LogSyncFailed,
      );
      const rows = await sql<{ n: number }>`select count(*) as n from t`.execute(storage.db);
      assert.equal(rows.rows[0]?.n, 0, "a write was let through after the failure");
      assert.equal(failures.length, 1);
    } finally {
      await storage.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("grouped waiters fail together, and later syncs fail at once", async () => {
    let runs = 0;
    let fail!: (err: Error) => void;
    const reported: Error[] = [];
    const group = new GroupSync(
      () =>
        new Promise<void>((_resolve, reject) => {
          runs++;
          fail = reject;
        }),
      (err) => reported.push(err),
    );
    const first = group.sync();
    const second = group.sync();
    const third = group.sync();
    fail(new Error("EIO"));
    await assert.rejects(first, /EIO/);
    await assert.rejects(second, LogSyncFailed);
    await assert.rejects(third, LogSyncFailed);
    await assert.rejects(group.sync(), LogSyncFailed);
    assert.equal(runs, 1, "a sync ran after the failure");
    assert.equal(reported.length, 1);
  });
});

describe("the log syncer's thread follows the log file", () => {
  test("no log yet is nothing to sync; a log created later is synced", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "revier-logsync-file-"));
    const wal = path.join(dir, "x.db-wal");
    const syncer = startLogSyncer(wal);
    try {
      await syncer.sync();
      writeFileSync(wal, "frames");
      await syncer.sync();
      rmSync(wal);
      writeFileSync(wal, "a new log");
      await syncer.sync();
      assert.equal(syncer.stats.syncs, 3);
      assert.equal(syncer.failure, null);
    } finally {
      await syncer.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
