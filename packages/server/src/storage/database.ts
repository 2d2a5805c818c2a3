import { chmodSync, mkdirSync } from "node:fs";
import path from "node:path";
import SqliteDatabase from "better-sqlite3";
import pg from "pg";
import { Kysely, PostgresDialect, SqliteDialect, sql, type Transaction } from "kysely";
import type { Database, Dialect } from "./schema.js";
import { MIGRATIONS } from "./migrations/index.js";

export type Db = Kysely<Database>;
export type Tx = Transaction<Database>;

export interface Storage {
  db: Db;
  dialect: Dialect;
  close(): Promise<void>;
}

// int8 columns come back from pg as strings by default; every value we store fits in a double.
pg.types.setTypeParser(20, (v) => Number(v));

export function openSqlite(file: string): Storage {
  if (file !== ":memory:") mkdirSync(path.dirname(file), { recursive: true });
  const raw = new SqliteDatabase(file);
  // The database holds password hashes, token digests and message metadata: owner-only.
  if (file !== ":memory:") chmodSync(file, 0o600);
  // WAL lets readers run beside the single writer; synchronous=FULL makes an acknowledged commit
  // survive power loss, not only a process crash.
  raw.pragma("journal_mode = WAL");
  raw.pragma("synchronous = FULL");
  raw.pragma("foreign_keys = ON");
  raw.pragma("busy_timeout = 5000");
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: raw }) });
  return {
    db,
    dialect: "sqlite",
    close: async () => {
      await db.destroy();
    },
  };
}

export function openPostgres(url: string, opts: { max?: number } = {}): Storage {
  const pool = new pg.Pool({ connectionString: url, max: opts.max ?? 10 });
  // A dropped connection must not crash the process; the next query gets a fresh one.
  pool.on("error", () => undefined);
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  return {
    db,
    dialect: "postgres",
    close: async () => {
      await db.destroy();
    },
  };
}

export async function migrate(storage: Storage): Promise<string[]> {
  const { db, dialect } = storage;
  await sql`create table if not exists revier_migrations (name text primary key, applied_ts bigint not null)`.execute(db);
  if (dialect === "postgres") {
    // Several processes may start at once against one database; only one migrates.
    return db.transaction().execute(async (tx) => {
      await sql`select pg_advisory_xact_lock(7301)`.execute(tx);
      return applyPending(tx as unknown as Kysely<unknown>, dialect);
    });
  }
  return db.transaction().execute((tx) => applyPending(tx as unknown as Kysely<unknown>, dialect));
}

async function applyPending(db: Kysely<unknown>, dialect: Dialect): Promise<string[]> {
  const rows = await sql<{ name: string }>`select name from revier_migrations`.execute(db);
  const done = new Set(rows.rows.map((r) => r.name));
  const applied: string[] = [];
  for (const m of MIGRATIONS) {
    if (done.has(m.name)) continue;
    await m.up(db, dialect);
    await sql`insert into revier_migrations (name, applied_ts) values (${m.name}, ${Date.now()})`.execute(db);
    applied.push(m.name);
  }
  return applied;
}
