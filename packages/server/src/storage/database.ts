import { chmodSync, mkdirSync } from "node:fs";
import path from "node:path";
import SqliteDatabase from "better-sqlite3";
import pg from "pg";
import { CompiledQuery, Kysely, PostgresDialect, SelectQueryNode, SqliteDialect, sql, type DatabaseConnection, type Driver, type QueryResult, type Transaction } from "kysely";
import type { Database, Dialect } from "./schema.js";
import { MIGRATIONS } from "./migrations/index.js";
import { BACKSTOP_PAGES, DEFAULT_WAL_CHECKPOINTER, startWalCheckpointer, type WalCheckpointer, type WalCheckpointerOptions } from "./wal-checkpointer.js";
import { startLogSyncer, type LogSyncer } from "./log-syncer.js";

export type Db = Kysely<Database>;
export type Tx = Transaction<Database>;

export interface Storage {
  db: Db;
  dialect: Dialect;
  /** SQLite's log checkpoints, when a worker thread runs them (a database file). */
  walCheckpointer?: WalCheckpointer;
  /** SQLite's commits made durable off the event loop (a database file; see log-syncer.ts). */
  logSyncer?: LogSyncer;
  close(): Promise<void>;
}

// int8 columns come back from pg as strings by default; every value we store fits in a double.
pg.types.setTypeParser(20, (v) => Number(v));

/**
 * `checkpointer`: copy the write-ahead log into the database file from a worker thread (see
 * wal-checkpointer.ts); on by default for a database file, and without effect in memory.
 * `logSync`: make commits durable from a thread of their own (see log-syncer.ts); on by default
 * for a database file (a function: the syncer to use, for tests). Off, every commit fsyncs on the
 * event loop (synchronous=FULL).
 */
export function openSqlite(
  file: string,
  opts: { checkpointer?: boolean | WalCheckpointerOptions; onCheckpointError?: (message: string) => void; logSync?: boolean | ((walFile: string) => LogSyncer); onLogSyncFailure?: (err: Error) => void } = {},
): Storage {
  if (file !== ":memory:") mkdirSync(path.dirname(file), { recursive: true });
  const raw = new SqliteDatabase(file);
  // The database holds password hashes, token digests and message metadata: owner-only.
  if (file !== ":memory:") chmodSync(file, 0o600);
  // WAL lets readers run beside the single writer. Every commit is on disk before its caller
  // hears of it (an acknowledged write survives power loss, not only a process crash): synced by
  // the log syncer's thread, or by SQLite inside COMMIT (synchronous=FULL). Throughput comes from
  // group commit in StreamWriter (one sync for many writes), never from weakening this.
  raw.pragma("journal_mode = WAL");
  const logSyncer = file === ":memory:" || opts.logSync === false ? null : typeof opts.logSync === "function" ? opts.logSync(`${file}-wal`) : startLogSyncer(`${file}-wal`, opts.onLogSyncFailure);
  // NORMAL leaves out only the fsync at commit; the log stays consistent.
  raw.pragma(logSyncer ? "synchronous = NORMAL" : "synchronous = FULL");
  raw.pragma("foreign_keys = ON");
  // Redacted and expired content must not linger in the file: FAST zeroes deleted cells on pages
  // that are written anyway, without the extra I/O of full secure_delete.
  raw.pragma("secure_delete = FAST");
  raw.pragma("busy_timeout = 5000");
  let checkpointer: WalCheckpointer | null = null;
  if (file !== ":memory:" && opts.checkpointer !== false) {
    raw.pragma(`wal_autocheckpoint = ${BACKSTOP_PAGES}`);
    // A log grown long under a burst is cut back to this when it starts over.
    raw.pragma(`journal_size_limit = ${64 * 1024 * 1024}`);
    checkpointer = startWalCheckpointer(file, typeof opts.checkpointer === "object" ? opts.checkpointer : DEFAULT_WAL_CHECKPOINTER, opts.onCheckpointError);
  }
  // A second, read-only connection serves queries outside transactions (see FastSqliteDriver).
  // An in-memory database cannot be shared between connections, so it keeps one.
  let reader: SqliteDatabase.Database | null = null;
  if (file !== ":memory:") {
    reader = new SqliteDatabase(file, { readonly: true, fileMustExist: true });
    reader.pragma("busy_timeout = 5000");
  }
  const dialect = new FastSqliteDialect(raw, reader, logSyncer);
  const db = new Kysely<Database>({ dialect });
  if (dialect.driver && reader) directReaders.set(db, dialect.driver);
  return {
    db,
    dialect: "sqlite",
    ...(checkpointer ? { walCheckpointer: checkpointer } : {}),
    ...(logSyncer ? { logSyncer } : {}),
    close: async () => {
      await checkpointer?.stop();
      await db.destroy();
      await logSyncer?.stop();
    },
  };
}

export function openPostgres(url: string, opts: { max?: number } = {}): Storage {
  // keepAlive notices a database host that vanished without closing connections; a request waits
  // at most connectionTimeoutMillis for a connection, then fails (5xx) instead of hanging.
  const pool = new pg.Pool({ connectionString: url, max: opts.max ?? 10, connectionTimeoutMillis: 10_000, keepAlive: true, keepAliveInitialDelayMillis: 10_000 });
  // A dropped connection must not crash the process; the next query gets a fresh one.
  pool.on("error", () => undefined);
  // The pool listens for errors only on idle clients. A connection that dies while checked out
  // but between queries (inside a transaction, e.g. while an event is signed) emits 'error' with
  // nobody listening, which would crash the process. Its next query fails instead, and the pool
  // discards it on release (faults-postgres.test.ts).
  pool.on("connect", (client) => client.on("error", () => undefined));
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

// ---- SQLite driver ------------------------------------------------------------------------------

type SqliteStatement = SqliteDatabase.Statement<unknown[], unknown>;

/**
 * Prepared statements by SQL text. Kysely's own SQLite driver prepares every statement again on
 * every execution, which profiles showed as 10–20 % of the server's CPU under load; the same few
 * hundred statements run over and over, so they are kept (oldest evicted first: `IN (…)` lists of
 * varying length make many one-off texts).
 */
class StatementCache {
  private readonly map = new Map<string, SqliteStatement>();
  constructor(
    private readonly db: SqliteDatabase.Database,
    private readonly limit = 2000,
  ) {}

  get(text: string): SqliteStatement {
    let stmt = this.map.get(text);
    if (stmt === undefined) {
      stmt = this.db.prepare(text);
      if (this.map.size >= this.limit) this.map.delete(this.map.keys().next().value!);
      this.map.set(text, stmt);
    }
    return stmt;
  }
}

/** First come, first served. Kysely's mutex wakes every waiter on each release (O(n²) under load). */
class FifoLock {
  private held = false;
  private readonly waiters: Array<() => void> = [];

  lock(): Promise<void> {
    if (!this.held) {
      this.held = true;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  unlock(): void {
    const next = this.waiters.shift();
    // Ownership passes straight to the next waiter, so nobody can jump the queue in between.
    if (next) next();
    else this.held = false;
  }
}

class FastSqliteDialect extends SqliteDialect {
  /** The driver Kysely created (it asks once, in its constructor). */
  driver: FastSqliteDriver | null = null;

  constructor(
    private readonly writer: SqliteDatabase.Database,
    private readonly reader: SqliteDatabase.Database | null,
    private readonly logSyncer: LogSyncer | null,
  ) {
    super({ database: writer });
  }

  override createDriver(): Driver {
    return (this.driver = new FastSqliteDriver(this.writer, this.reader, this.logSyncer));
  }
}

/** SQLite databases (not their transactions) whose reads can skip Kysely's executor: see directRead. */
const directReaders = new WeakMap<Db, FastSqliteDriver>();

/**
 * Runs a compiled read-only statement on `db`'s SQLite read connection at once, bypassing Kysely's
 * executor; undefined where that does not apply (PostgreSQL, a transaction, an in-memory database,
 * a statement that writes), and the caller runs it the usual way. For the hottest compiled reads
 * (prepared.ts): Kysely's way to the driver and back is eight async steps, each a promise or
 * two, which measured 5–8 µs and about 3 KB of garbage per query — a long-poll answer runs
 * several. It ends at the same driver method, so it reads what an executed query would read.
 */
export function directRead(db: Db, text: string, parameters: readonly unknown[]): unknown[] | undefined {
  return directReaders.get(db)?.readOnly(text, parameters);
}

/** One acquisition of the database; `inTx` while it runs a transaction (and holds the write lock). */
class SqliteConnection implements DatabaseConnection {
  inTx = false;
  constructor(private readonly driver: FastSqliteDriver) {}

  executeQuery<R>(query: CompiledQuery): Promise<QueryResult<R>> {
    return this.driver.execute<R>(this, query);
  }

  // eslint-disable-next-line require-yield
  async *streamQuery<R>(): AsyncIterableIterator<QueryResult<R>> {
    throw new Error("streaming queries are not supported on SQLite here");
  }
}

/**
 * better-sqlite3 behind Kysely, built for many concurrent requests on one event loop:
 *
 * - Transactions run on the writer connection and hold a FIFO lock from `begin` to `commit`, so
 *   nothing else interleaves with them (the connection is shared).
 * - Reads outside a transaction run on a separate read-only connection. WAL gives it the last
 *   committed snapshot, so it never sees a transaction in progress and never waits for one — a
 *   long group commit (StreamWriter) no longer stalls every /sync and token lookup behind it.
 * - Writes outside a transaction take the lock for their one statement.
 * - With a log syncer, a commit (COMMIT, or a write outside a transaction) returns to its caller
 *   once the syncer has made it durable; the lock is free meanwhile, so the next transaction
 *   runs and its commit joins the next sync. After a failed sync nothing more is written.
 * - Statements are prepared once per SQL text (StatementCache).
 */
class FastSqliteDriver implements Driver {
  private readonly lock = new FifoLock();
  /** Released connection objects, handed out again (at most as many as were ever in use at once). */
  private readonly free: SqliteConnection[] = [];
  private readonly writerStmts: StatementCache;
  private readonly readerStmts: StatementCache | null;
  /** Whether the reader holds a read transaction (see `read`). */
  private readerOpen = false;
  private readonly closeReaderLater = () => this.closeReader();

  constructor(
    private readonly writer: SqliteDatabase.Database,
    private readonly reader: SqliteDatabase.Database | null,
    private readonly logSyncer: LogSyncer | null,
  ) {
    this.writerStmts = new StatementCache(writer);
    this.readerStmts = reader ? new StatementCache(reader) : null;
  }

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    // Connection objects are reused: Kysely remembers every distinct one it is handed (for its
    // query logging) until the database is destroyed, so a fresh object per query would leak.
    return this.free.pop() ?? new SqliteConnection(this);
  }

  async beginTransaction(connection: DatabaseConnection): Promise<void> {
    const c = connection as SqliteConnection;
    await this.lock.lock();
    try {
      this.refuseAfterSyncFailure();
      // IMMEDIATE takes SQLite's write lock at once, so a busy database (another process, e.g.
      // the CLI) is waited for here by busy_timeout rather than failing half-way through.
      this.run(this.writerStmts.get("begin immediate"), []);
    } catch (err) {
      this.lock.unlock();
      throw err;
    }
    c.inTx = true;
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await this.endTransaction(connection as SqliteConnection, "commit");
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    await this.endTransaction(connection as SqliteConnection, "rollback");
  }

  private async endTransaction(c: SqliteConnection, command: "commit" | "rollback"): Promise<void> {
    // A failed commit that SQLite already rolled back (I/O errors do that) has released the lock;
    // the rollback Kysely issues after it has nothing left to do.
    if (!c.inTx) return;
    // Reads after the commit must see it, and the checkpoint that may follow it must not find the
    // WAL pinned by our own snapshot.
    this.closeReader();
    try {
      this.run(this.writerStmts.get(command), []);
    } finally {
      if (command === "rollback" || !this.writer.inTransaction) {
        c.inTx = false;
        this.lock.unlock();
      }
    }
    if (command === "commit") await this.logSyncer?.sync();
  }

  /** See LogSyncer.failure. */
  private refuseAfterSyncFailure(): void {
    const failure = this.logSyncer?.failure;
    if (failure) throw failure;
  }

  async savepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(`savepoint ${quoteName(name)}`));
  }

  async rollbackToSavepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(`rollback to ${quoteName(name)}`));
  }

  async releaseSavepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(`release ${quoteName(name)}`));
  }

  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    const c = connection as SqliteConnection;
    if (!c.inTx) this.free.push(c);
  }

  async destroy(): Promise<void> {
    this.closeReader();
    this.reader?.close();
    this.writer.close();
  }

  async execute<R>(c: SqliteConnection, query: CompiledQuery): Promise<QueryResult<R>> {
    const { sql: text, parameters } = query;
    if (c.inTx) return this.run(this.writerStmts.get(text), parameters) as QueryResult<R>;
    if (this.readerStmts) {
      if (SelectQueryNode.is(query.query)) return this.read(this.readerStmts.get(text), parameters) as QueryResult<R>;
      // Raw SQL may read or write: SQLite knows which. (Inserts, updates and deletes write.)
      if (query.query.kind === "RawNode" && !isTransactionControl(text)) {
        let probe: SqliteStatement | null = null;
        try {
          probe = this.readerStmts.get(text);
        } catch {
          // Not preparable read-only (a temporary table, an attached file): the writer runs it.
        }
        if (probe?.readonly) return this.read(probe, parameters) as QueryResult<R>;
      }
    }
    await this.lock.lock();
    let writes: boolean;
    let result: QueryResult<unknown>;
    try {
      this.closeReader();
      const stmt = this.writerStmts.get(text);
      writes = !stmt.readonly;
      if (writes) this.refuseAfterSyncFailure();
      result = this.run(stmt, parameters);
    } finally {
      this.lock.unlock();
    }
    // Committed by itself (autocommit): durable before its caller hears of it.
    if (writes && this.logSyncer !== null) await this.logSyncer.sync();
    return result as QueryResult<R>;
  }

  /** See directRead: rows of a read-only statement run on the reader, or undefined if it is not one. */
  readOnly(text: string, parameters: readonly unknown[]): unknown[] | undefined {
    let stmt: SqliteStatement;
    try {
      stmt = this.readerStmts!.get(text);
    } catch {
      return undefined;
    }
    return stmt.readonly && stmt.reader ? this.read(stmt, parameters).rows : undefined;
  }

  /**
   * A read on the reader connection. Reads share one read transaction until the event loop turns
   * over or this process writes: a statement in autocommit mode takes and drops SQLite's WAL read
   * locks itself, which is several system calls, and measured here at 12 µs of a 3.5-µs indexed
   * read. Closing it at every write keeps read-your-writes; closing it each turn bounds how long a
   * commit by another process (the CLI) stays unseen, and never leaves the WAL pinned.
   */
  private read(stmt: SqliteStatement, parameters: readonly unknown[]): QueryResult<unknown> {
    if (!this.readerOpen) {
      if (!this.reader!.inTransaction) this.run(this.readerStmts!.get("begin"), []);
      this.readerOpen = true;
      setImmediate(this.closeReaderLater);
    }
    return this.run(stmt, parameters);
  }

  private closeReader(): void {
    if (!this.readerOpen) return;
    this.readerOpen = false;
    if (this.reader!.inTransaction) this.run(this.readerStmts!.get("commit"), []);
  }

  private run(stmt: SqliteStatement, parameters: readonly unknown[]): QueryResult<unknown> {
    if (stmt.reader) return { rows: stmt.all(parameters) };
    const { changes, lastInsertRowid } = stmt.run(parameters);
    return { numAffectedRows: BigInt(changes), insertId: BigInt(lastInsertRowid), rows: [] };
  }
}

function isTransactionControl(text: string): boolean {
  return /^\s*(begin|commit|end|rollback|savepoint|release)\b/i.test(text);
}

function quoteName(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
