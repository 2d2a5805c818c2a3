import { createHash } from "node:crypto";
import { sql, type Kysely } from "kysely";
import type SqliteDatabase from "better-sqlite3";
import type { Dialect } from "../storage/schema.js";
import { MIGRATIONS } from "../storage/migrations/index.js";

/**
 * Generic table handling for backup, restore and port-db. Nothing here names a Revier table: the
 * tables and their columns come from the database catalogue, so tables that later migrations add
 * are backed up, restored and ported without touching this code.
 */

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyDb = Kysely<any>;
export type Row = unknown[];

export interface TableInfo {
  name: string;
  /** Column names in declaration order; generated columns are left out (they are recomputed). */
  columns: string[];
}

/** Every table of Revier's schema, parents before the tables whose foreign keys point at them. */
export async function listTables(db: AnyDb, dialect: Dialect): Promise<TableInfo[]> {
  const names: string[] = [];
  const parents = new Map<string, Set<string>>();
  const columns = new Map<string, string[]>();
  if (dialect === "sqlite") {
    const tables = await sql<{ name: string }>`select name from sqlite_master where type = 'table' and name not like 'sqlite\_%' escape '\\' order by name`.execute(db);
    for (const { name } of tables.rows) {
      names.push(name);
      // table_info leaves out generated (hidden) columns, which cannot be inserted into.
      const cols = await sql<{ name: string }>`select name from pragma_table_info(${name}) order by cid`.execute(db);
      columns.set(name, cols.rows.map((c) => c.name));
      const fks = await sql<{ parent: string }>`select "table" as parent from pragma_foreign_key_list(${name})`.execute(db);
      parents.set(name, new Set(fks.rows.map((f) => f.parent)));
    }
  } else {
    const tables = await sql<{ name: string }>`select table_name as name from information_schema.tables where table_schema = current_schema() and table_type = 'BASE TABLE' order by table_name`.execute(db);
    const cols = await sql<{ table_name: string; column_name: string }>`
      select table_name, column_name from information_schema.columns
      where table_schema = current_schema() and is_generated = 'NEVER'
      order by table_name, ordinal_position`.execute(db);
    for (const c of cols.rows) {
      let list = columns.get(c.table_name);
      if (!list) columns.set(c.table_name, (list = []));
      list.push(c.column_name);
    }
    const fks = await sql<{ child: string; parent: string }>`
      select cl.relname as child, pcl.relname as parent
      from pg_constraint c
      join pg_class cl on cl.oid = c.conrelid
      join pg_class pcl on pcl.oid = c.confrelid
      join pg_namespace n on n.oid = cl.relnamespace
      where c.contype = 'f' and n.nspname = current_schema()`.execute(db);
    for (const { name } of tables.rows) {
      names.push(name);
      parents.set(name, new Set());
    }
    for (const f of fks.rows) parents.get(f.child)?.add(f.parent);
  }
  // Topological order (a table's parents first); self-references and cycles fall back to name order.
  const ordered: string[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = (name: string) => {
    if (state.has(name)) return;
    state.set(name, "visiting");
    for (const p of [...(parents.get(name) ?? [])].sort()) if (p !== name && names.includes(p)) visit(p);
    state.set(name, "done");
    ordered.push(name);
  };
  for (const name of names) visit(name);
  return ordered.map((name) => ({ name, columns: columns.get(name) ?? [] }));
}

/** Whether the database holds any table at all (an empty target for restore or port-db holds none). */
export async function tableNames(db: AnyDb, dialect: Dialect): Promise<string[]> {
  const rows =
    dialect === "sqlite"
      ? await sql<{ name: string }>`select name from sqlite_master where type = 'table' and name not like 'sqlite\_%' escape '\\' order by name`.execute(db)
      : await sql<{ name: string }>`select table_name as name from information_schema.tables where table_schema = current_schema() order by table_name`.execute(db);
  return rows.rows.map((r) => r.name);
}

export async function countRows(db: AnyDb, table: string): Promise<number> {
  const r = await sql<{ n: number | string }>`select count(*) as n from ${sql.table(table)}`.execute(db);
  return Number(r.rows[0]?.n ?? 0);
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/**
 * Reads a PostgreSQL table in batches through a server-side cursor, so a table of any size streams
 * through bounded memory. Must run inside a transaction (the cursor lives as long as it does), which
 * is also what makes several tables one consistent snapshot.
 */
export async function* readPostgresTable(tx: AnyDb, table: TableInfo, batch = 1000): AsyncGenerator<Row[]> {
  const cursor = sql.id(`revier_ops_${table.name}`);
  const cols = sql.join(table.columns.map((c) => sql.id(c)));
  await sql`declare ${cursor} no scroll cursor for select ${cols} from ${sql.table(table.name)}`.execute(tx);
  let open = true;
  try {
    for (;;) {
      const res = await sql<Record<string, unknown>>`fetch forward ${sql.raw(String(batch))} from ${cursor}`.execute(tx);
      if (res.rows.length === 0) break;
      yield res.rows.map((r) => table.columns.map((c) => r[c]));
    }
    open = false;
    await sql`close ${cursor}`.execute(tx);
  } finally {
    // Abandoned half-way (an error downstream): close it, unless the transaction is already broken.
    if (open) await sql`close ${cursor}`.execute(tx).catch(() => undefined);
  }
}

/** Reads a SQLite table in batches straight from better-sqlite3 (an iterator, not an array). */
export function* readSqliteTable(raw: SqliteDatabase.Database, table: TableInfo, batch = 1000): Generator<Row[]> {
  const stmt = raw.prepare(`select ${table.columns.map(quoteIdent).join(", ")} from ${quoteIdent(table.name)}`).raw(true);
  let rows: Row[] = [];
  for (const row of stmt.iterate() as IterableIterator<Row>) {
    rows.push(row);
    if (rows.length >= batch) {
      yield rows;
      rows = [];
    }
  }
  if (rows.length > 0) yield rows;
}

/**
 * Collects rows and inserts them in multi-row statements, staying below PostgreSQL's 65,535 bind
 * parameters per statement and a few megabytes per round trip.
 */
export class RowInserter {
  private rows: Row[] = [];
  private bytes = 0;
  inserted = 0;

  constructor(
    private readonly db: AnyDb,
    private readonly table: TableInfo,
  ) {}

  async add(row: Row): Promise<void> {
    this.rows.push(row);
    for (const v of row) this.bytes += typeof v === "string" ? v.length : Buffer.isBuffer(v) ? v.length : 8;
    if ((this.rows.length + 1) * this.table.columns.length > 30_000 || this.rows.length >= 1000 || this.bytes > 4 * 1024 * 1024) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.rows.length === 0) return;
    const rows = this.rows;
    this.rows = [];
    this.bytes = 0;
    const cols = sql.join(this.table.columns.map((c) => sql.id(c)));
    await sql`insert into ${sql.table(this.table.name)} (${cols}) values ${sql.join(rows.map((r) => sql`(${sql.join(r)})`))}`.execute(this.db);
    this.inserted += rows.length;
  }
}

/**
 * JSON for one database value. Plain numbers, strings, booleans and null stay as they are; the
 * rest (bytes, dates, json columns) are tagged so they read back as the same value.
 */
export function encodeValue(v: unknown): unknown {
  if (v === null || v === undefined) return null;
  if (typeof v === "string" || typeof v === "number" || typeof v === "boolean") return v;
  if (typeof v === "bigint") return { $bigint: v.toString() };
  if (v instanceof Uint8Array) return { $bytes: Buffer.from(v).toString("base64") };
  if (v instanceof Date) return { $date: v.toISOString() };
  return { $json: v };
}

export function decodeValue(v: unknown): unknown {
  if (v === null || typeof v !== "object") return v;
  const o = v as Record<string, unknown>;
  if (typeof o.$bigint === "string") return o.$bigint;
  if (typeof o.$bytes === "string") return Buffer.from(o.$bytes, "base64");
  if (typeof o.$date === "string") return new Date(o.$date);
  if ("$json" in o) return o.$json;
  throw new Error(`unrecognised value in backup: ${JSON.stringify(v).slice(0, 80)}`);
}

export function encodeRow(row: Row): string {
  return JSON.stringify(row.map(encodeValue));
}

const MOD = 1n << 256n;

/**
 * An order-independent digest of a table's rows: the sum of the rows' SHA-256 hashes modulo 2^256.
 * SQLite and PostgreSQL return rows in different orders (and sort text differently), so a digest
 * that does not depend on order is what lets the two sides of a copy be compared.
 */
export class TableDigest {
  private sum = 0n;
  rows = 0;

  add(row: Row): void {
    const h = createHash("sha256").update(encodeRow(row)).digest("hex");
    this.sum = (this.sum + BigInt(`0x${h}`)) % MOD;
    this.rows++;
  }

  get hex(): string {
    return this.sum.toString(16).padStart(64, "0");
  }
}

/** The migrations recorded in a database, in the order this build applies them; throws on unknown ones. */
export function knownMigrations(recorded: string[]): string[] {
  const known = new Set(MIGRATIONS.map((m) => m.name));
  const unknown = recorded.filter((n) => !known.has(n));
  if (unknown.length > 0) throw new Error(`the data was written by a newer Revier (unknown migrations: ${unknown.join(", ")}); use that version or newer`);
  const wanted = new Set(recorded);
  return MIGRATIONS.filter((m) => wanted.has(m.name)).map((m) => m.name);
}

/**
 * Creates the schema of exactly the given migrations in an empty database, so data from an older
 * installation lands in the tables it was written for; later migrations run afterwards as at start.
 */
export async function applyMigrations(db: AnyDb, dialect: Dialect, names: string[]): Promise<void> {
  await sql`create table if not exists revier_migrations (name text primary key, applied_ts bigint not null)`.execute(db);
  for (const name of names) {
    const m = MIGRATIONS.find((x) => x.name === name);
    if (!m) throw new Error(`unknown migration ${name}`);
    await m.up(db as Kysely<unknown>, dialect);
    await sql`insert into revier_migrations (name, applied_ts) values (${name}, ${Date.now()})`.execute(db);
  }
}

/**
 * PostgreSQL sequences behind serial and identity columns do not move when rows arrive with their
 * ids; each is set past the highest id copied so the next insert does not collide.
 */
export async function resetSequences(db: AnyDb): Promise<number> {
  const cols = await sql<{ table_name: string; column_name: string; seq: string | null }>`
    select table_name, column_name, pg_get_serial_sequence(quote_ident(table_name), column_name) as seq
    from information_schema.columns
    where table_schema = current_schema() and (column_default like 'nextval(%' or is_identity = 'YES')`.execute(db);
  let n = 0;
  for (const c of cols.rows) {
    if (!c.seq) continue;
    await sql`select setval(${c.seq}, coalesce(max(${sql.id(c.column_name)}), 1), max(${sql.id(c.column_name)}) is not null) from ${sql.table(c.table_name)}`.execute(db);
    n++;
  }
  return n;
}

export interface RestoreFixups {
  oneTimeKeysDropped: number;
  fallbackKeysMarked: number;
  streamBefore: number;
  streamAfter: number;
}

/**
 * What must change when old data comes back to life (restore), written inside the same transaction
 * as the data so a half-restored database never serves:
 *
 * - One-time keys: the backup still lists keys that were claimed after it was taken. Handing one of
 *   those out again would let two senders start Olm sessions from the same key. Nobody can tell
 *   which keys were claimed since, so all are dropped; every client sees its count at 0 in its next
 *   /sync and uploads fresh ones. Fallback keys are marked used, so clients replace them too.
 * - The stream counter moves forward by `streamGap`: clients may hold sync tokens from after the
 *   backup. Without the jump, new writes would take positions those clients believe they have seen
 *   already, and they would never receive them (to-device messages up to their token would even be
 *   deleted as delivered). Positions are never reused; a jump is harmless.
 */
export async function afterRestore(db: AnyDb, dialect: Dialect, streamGap: number): Promise<RestoreFixups> {
  const tables = new Set(await tableNames(db, dialect));
  let oneTimeKeysDropped = 0;
  let fallbackKeysMarked = 0;
  if (tables.has("e2e_one_time_keys")) {
    const r = await db.deleteFrom("e2e_one_time_keys").executeTakeFirst();
    oneTimeKeysDropped = Number(r.numDeletedRows);
  }
  if (tables.has("e2e_fallback_keys")) {
    const r = await db.updateTable("e2e_fallback_keys").set({ used: 1 }).executeTakeFirst();
    fallbackKeysMarked = Number(r.numUpdatedRows);
  }
  const before = await db.selectFrom("counters").select("value").where("name", "=", "stream").executeTakeFirst();
  const streamBefore = Number(before?.value ?? 0);
  const streamAfter = streamBefore + streamGap;
  await db.updateTable("counters").set({ value: streamAfter }).where("name", "=", "stream").execute();
  return { oneTimeKeysDropped, fallbackKeysMarked, streamBefore, streamAfter };
}
