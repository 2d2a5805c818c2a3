import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import SqliteDatabase from "better-sqlite3";
import { sql } from "kysely";
import { migrate, openSqlite, type Storage } from "./database.js";
import { prepared } from "./prepared.js";

// The SQLite driver lets reads share one read transaction per event-loop turn. These tests pin
// down what that may and may not change about what a read sees.
describe("SQLite reads share a snapshot only within one turn", () => {
  let dir: string;
  let file: string;
  let storage: Storage;
  let other: SqliteDatabase.Database;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "revier-db-test-"));
    file = path.join(dir, "revier.db");
    storage = openSqlite(file);
    await migrate(storage);
    // Another process's connection, as the CLI has while the server runs.
    other = new SqliteDatabase(file);
    other.pragma("busy_timeout = 0");
  });
  after(async () => {
    other.close();
    await storage.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const value = async (name: string) =>
    (await storage.db.selectFrom("counters").select("value").where("name", "=", name).executeTakeFirst())?.value ?? null;
  const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

  test("a read right after this process commits sees the commit, within the same turn", async () => {
    assert.equal(await value("db-test-a"), null);
    await storage.db.transaction().execute((tx) => tx.insertInto("counters").values({ name: "db-test-a", value: 1 }).execute());
    assert.equal(await value("db-test-a"), 1);
    // A write outside a transaction, too.
    await storage.db.updateTable("counters").set({ value: 2 }).where("name", "=", "db-test-a").execute();
    assert.equal(await value("db-test-a"), 2);
  });

  test("another connection's commit is seen from the next turn on", async () => {
    assert.equal(await value("db-test-b"), null);
    other.prepare("insert into counters (name, value) values ('db-test-b', 7)").run();
    await nextTurn();
    assert.equal(await value("db-test-b"), 7);
  });

  test("no read transaction outlives its turn: a truncating checkpoint by another connection succeeds", async () => {
    await storage.db.transaction().execute((tx) => tx.insertInto("counters").values({ name: "db-test-c", value: 1 }).execute());
    assert.equal(await value("db-test-c"), 1);
    // Still in the turn of that read: the snapshot pins the WAL, so the checkpoint cannot truncate.
    const during = other.pragma("wal_checkpoint(TRUNCATE)") as Array<{ busy: number }>;
    assert.equal(during[0]!.busy, 1);
    await nextTurn();
    const [after] = other.pragma("wal_checkpoint(TRUNCATE)") as Array<{ busy: number; log: number }>;
    assert.deepEqual([after!.busy, after!.log], [0, 0]);
  });

  describe("compiled reads outside a transaction go to the read connection directly", () => {
    const selectValue = prepared((db, name: string) => db.selectFrom("counters").select("value").where("name", "=", name));
    const insertRaw = prepared((_db, name: string, v: number) => sql<{ value: number }>`insert into counters (name, value) values (${name}, ${v}) returning value`);
    /** Calls of Kysely's executor on `storage.db` while `f` runs. */
    const executorCalls = async (f: () => Promise<unknown>) => {
      const db = storage.db as unknown as { executeQuery: (...a: unknown[]) => unknown };
      const original = db.executeQuery;
      let calls = 0;
      db.executeQuery = (...a: unknown[]) => {
        calls++;
        return original.apply(storage.db, a);
      };
      try {
        await f();
      } finally {
        delete (db as { executeQuery?: unknown }).executeQuery;
      }
      assert.equal(db.executeQuery, original);
      return calls;
    };

    test("without Kysely's executor, and seeing this process's commit in the same turn", async () => {
      assert.equal(await executorCalls(async () => assert.deepEqual(await selectValue(storage.db, "db-test-d"), [])), 0);
      await storage.db.transaction().execute((tx) => tx.insertInto("counters").values({ name: "db-test-d", value: 4 }).execute());
      assert.equal(await executorCalls(async () => assert.deepEqual(await selectValue(storage.db, "db-test-d"), [{ value: 4 }])), 0);
    });

    test("inside a transaction on the transaction's connection: its own uncommitted write is seen", async () => {
      await storage.db.transaction().execute(async (tx) => {
        await tx.insertInto("counters").values({ name: "db-test-e", value: 5 }).execute();
        assert.deepEqual(await selectValue(tx, "db-test-e"), [{ value: 5 }]);
        // Outside it, not yet.
        assert.deepEqual(await selectValue(storage.db, "db-test-e"), []);
      });
      assert.deepEqual(await selectValue(storage.db, "db-test-e"), [{ value: 5 }]);
    });

    test("a compiled statement that writes still goes through the writer", async () => {
      assert.equal(await executorCalls(async () => assert.deepEqual(await insertRaw(storage.db, "db-test-f", 6), [{ value: 6 }])), 1);
      assert.deepEqual(await selectValue(storage.db, "db-test-f"), [{ value: 6 }]);
      assert.equal((other.prepare("select value from counters where name = 'db-test-f'").get() as { value: number }).value, 6);
    });
  });
});
