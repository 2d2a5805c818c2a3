import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import SqliteDatabase from "better-sqlite3";
import { sql } from "kysely";
import { openSqlite, type Storage } from "./database.js";
import { startWalCheckpointer, type WalCheckpointer } from "./wal-checkpointer.js";

const PAGE = 4096;
/** Never, within a test: the writer alone is watched first. */
const IDLE = { intervalMs: 3_600_000, retryMs: 5, retries: 8 };

async function until(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const started = Date.now();
  while (!ok()) {
    assert.ok(Date.now() - started < ms, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("SQLite's log is checkpointed by a worker thread", () => {
  let dir: string;
  let file: string;
  let storage: Storage;

  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), "revier-wal-test-"));
    file = path.join(dir, "revier.db");
  });
  after(async () => {
    await storage?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("the writer leaves the copying to the worker, the log starts over, and every row survives reopening", async () => {
    storage = openSqlite(file, { checkpointer: IDLE });
    const { db } = storage;
    await sql`create table filler (id integer primary key, v blob not null)`.execute(db);
    // 1,500 pages in 150 commits: past SQLite's default threshold of 1,000 pages, at which the
    // writer would have copied the log itself, on the event loop.
    const rows = 1500;
    for (let i = 0; i < rows; i += 10) {
      await db.transaction().execute(async (tx) => {
        for (let j = i; j < i + 10; j++) await sql`insert into filler (id, v) values (${j}, ${Buffer.alloc(PAGE - 200, j % 251)})`.execute(tx);
      });
    }
    const wal = `${file}-wal`;
    assert.ok(statSync(wal).size > 1200 * PAGE, `the writer checkpointed by itself: the log is ${statSync(wal).size} bytes`);
    assert.equal(storage.walCheckpointer!.stats.runs, 0);

    // A second worker, as the server's would after its interval.
    const worker: WalCheckpointer = startWalCheckpointer(file, { intervalMs: 20, retryMs: 5, retries: 8 });
    try {
      await until("a complete checkpoint", () => worker.stats.complete > 0);
      assert.ok(worker.stats.pages >= rows, `copied ${worker.stats.pages} pages`);
      assert.equal(worker.stats.errors, 0);
    } finally {
      await worker.stop();
    }
    // With everything copied, the next commit writes from the start of the log again.
    await db.transaction().execute((tx) => sql`insert into filler (id, v) values (${rows}, ${Buffer.alloc(16)})`.execute(tx));
    const [state] = (await sql<{ log: number; checkpointed: number }>`pragma wal_checkpoint(PASSIVE)`.execute(db)).rows;
    assert.ok(state!.log < 20, `the log did not start over: ${state!.log} pages`);

    await storage.close();
    const reopened = new SqliteDatabase(file, { readonly: true });
    try {
      assert.equal((reopened.prepare("select count(*) as n from filler").get() as { n: number }).n, rows + 1);
      assert.equal((reopened.prepare("select v from filler where id = 777").get() as { v: Buffer }).v[0], 777 % 251);
    } finally {
      reopened.close();
    }
    storage = openSqlite(file);
  });

  test("the server's worker runs on its own and stops with the storage", async () => {
    const before = storage.walCheckpointer!.stats.pages;
    await storage.db.transaction().execute((tx) => sql`insert into filler (id, v) values (${10_000}, ${Buffer.alloc(PAGE * 4)})`.execute(tx));
    await until("the default worker's checkpoint", () => storage.walCheckpointer!.stats.pages > before);
    // Open, the table reads; closed, the same read fails. (Nothing keeps the process up either:
    // the runner would time out.)
    assert.equal((await sql<{ n: number }>`select count(*) as n from filler`.execute(storage.db)).rows[0]!.n, 1502);
    await storage.close();
    await assert.rejects(sql`select count(*) as n from filler`.execute(storage.db));
    storage = openSqlite(file, { checkpointer: false });
    assert.equal(storage.walCheckpointer, undefined);
  });

  test("a worker that cannot open its database reports the error and still stops", async () => {
    const errors: string[] = [];
    const worker = startWalCheckpointer(path.join(dir, "missing.db"), { intervalMs: 10, retryMs: 5, retries: 1 }, (m) => errors.push(m));
    await until("the error", () => worker.stats.errors > 0);
    assert.match(errors[0] ?? "", /unable to open|does not exist|SQLITE_CANTOPEN|directory does not exist/i);
    await worker.stop();
  });
});
