import { existsSync, readFileSync } from "node:fs";
import { chmod, copyFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import path from "node:path";
import SqliteDatabase from "better-sqlite3";
import { Kysely, SqliteDialect, sql } from "kysely";
import type { Config } from "../config.js";
import type { Dialect } from "../storage/schema.js";
import { migrate, openPostgres, openSqlite, type Storage } from "../storage/database.js";
import { StreamWriter } from "../storage/stream.js";
import { LocalBus } from "../bus/local.js";
import { AuditLog } from "../governance/audit.js";
import type { Actor } from "../governance/policy.js";
import { blobPath, copyBlobs, copyFileHashed, hasBlobs, HashedWriter, prepareEmptyDir, sha256File, syncDir } from "./files.js";
import {
  afterRestore,
  applyMigrations,
  countRows,
  decodeValue,
  encodeRow,
  knownMigrations,
  listTables,
  readPostgresTable,
  readSqliteTable,
  resetSequences,
  RowInserter,
  TableDigest,
  tableNames,
  type AnyDb,
  type RestoreFixups,
  type Row,
  type TableInfo,
} from "./tables.js";

/**
 * `revier backup <dir>` and `revier restore <dir>`.
 *
 * A backup is a directory:
 *
 *   manifest.json       what is in it: version, migrations, stream position, per-table row counts
 *                       and digests, checksums of every file; written last, so a directory without
 *                       it is an incomplete backup and restore refuses it
 *   revier.db           SQLite: an online copy made with SQLite's backup API (one consistent snapshot)
 *   db/<table>.jsonl    PostgreSQL: every table as JSON lines, read in one REPEATABLE READ snapshot
 *   files/<name>        the data directory's own files: the signing key (signing.key), the Web
 *                       Push key pair (vapid.json) and whatever else lives there beside the
 *                       database and the media, so keys added later are included too
 *   media/blobs/…       the media blobs, each checked against the hash it is named by
 *
 * PostgreSQL is exported by Revier itself rather than with pg_dump: the schema comes back from
 * Revier's own migrations (so a backup restores into a newer Revier, which then migrates it), the
 * export needs no client tools matching the server's major version, and every table carries a row
 * count and a digest that restore checks. See docs/operations.md.
 */

export const BACKUP_FORMAT = "revier-backup";
export const BACKUP_FORMAT_VERSION = 1;
/** How far restore moves the stream counter forward (see `afterRestore`). */
export const RESTORE_STREAM_GAP = 1_000_000_000_000;

export interface ManifestTable {
  name: string;
  columns: string[];
  rows: number;
  /** Order-independent digest of the rows (TableDigest). */
  digest: string;
  /** PostgreSQL backups: the table's file, its checksum and size. */
  file?: string;
  sha256?: string;
  bytes?: number;
}

export interface Manifest {
  format: typeof BACKUP_FORMAT;
  format_version: number;
  revier_version: string;
  created_ts: number;
  server_name: string;
  database: { dialect: Dialect; file?: string; sha256?: string; bytes?: number };
  migrations: string[];
  stream_position: number;
  /** In restore order: tables before the tables whose foreign keys point at them. */
  tables: ManifestTable[];
  /** Top-level files of the data directory (keys), stored under `files/`. */
  data_files: Array<{ name: string; sha256: string; bytes: number }>;
  media: {
    files: number;
    bytes: number;
    /** Blobs the database snapshot refers to that were not in the media store (deleted meanwhile). */
    missing: string[];
    /** Blobs in the media store whose content did not match their hash; not copied. */
    corrupt: string[];
  };
}

export type Say = (line: string) => void;

function revierVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: string };
    return pkg.version ?? "unknown";
  } catch {
    return "unknown";
  }
}

function sqliteFile(config: Config): string {
  return path.join(config.dataDir, "revier.db");
}

function safeFileName(table: string): string {
  if (!/^[A-Za-z0-9_]+$/.test(table)) throw new Error(`cannot name a backup file after table ${JSON.stringify(table)}`);
  return `${table}.jsonl`;
}

interface Snapshot {
  migrations: string[];
  stream: number;
  blobRefs: string[];
}

/** Reads what the manifest needs beyond the tables from one snapshot of the database. */
async function snapshotFacts(db: AnyDb, tables: TableInfo[]): Promise<Snapshot> {
  const names = new Set(tables.map((t) => t.name));
  const migrations = names.has("revier_migrations") ? (await sql<{ name: string }>`select name from revier_migrations`.execute(db)).rows.map((r) => r.name) : [];
  const stream = names.has("counters") ? Number((await sql<{ value: number }>`select value from counters where name = 'stream'`.execute(db)).rows[0]?.value ?? 0) : 0;
  const blobRefs = names.has("media_blobs") ? (await sql<{ sha256: string }>`select sha256 from media_blobs`.execute(db)).rows.map((r) => r.sha256) : [];
  return { migrations: knownMigrations(migrations), stream, blobRefs };
}

/**
 * The data directory's own files (keys): every regular file at its top level except the SQLite
 * database and its journals, and unfinished `.part` files.
 */
async function dataDirFiles(dataDir: string): Promise<string[]> {
  const names: string[] = [];
  for (const e of await readdir(dataDir, { withFileTypes: true })) {
    if (/^revier\.db(-wal|-shm|-journal|\.restoring)?$/.test(e.name) || e.name.endsWith(".part")) continue;
    // A key kept elsewhere and linked into the data directory is backed up as a file.
    if (e.isFile() || (e.isSymbolicLink() && (await stat(path.join(dataDir, e.name)).catch(() => null))?.isFile())) names.push(e.name);
  }
  return names.sort();
}

/** An online, consistent backup of the database, the data directory's keys and the media into `dir`. */
export async function createBackup(config: Config, dir: string, actor: Actor, say: Say = () => undefined): Promise<Manifest> {
  const keyFile = path.join(config.dataDir, "signing.key");
  if (!existsSync(keyFile)) throw new Error(`no signing key at ${keyFile}; is REVIER_DATA_DIR (${config.dataDir}) the server's data directory?`);
  const dialect: Dialect = config.databaseUrl ? "postgres" : "sqlite";
  if (dialect === "sqlite" && !existsSync(sqliteFile(config))) throw new Error(`no database at ${sqliteFile(config)}`);
  await prepareEmptyDir(dir);
  const started = Date.now();

  // The database first: media blobs are only ever added before the rows that count them commit, so
  // copying media after the snapshot finds everything the snapshot refers to (unless deleted since).
  let database: Manifest["database"];
  let tables: ManifestTable[];
  let facts: Snapshot;
  if (dialect === "sqlite") {
    ({ database, tables, facts } = await backupSqlite(config, dir, say));
  } else {
    ({ database, tables, facts } = await backupPostgres(config, dir, say));
  }

  await mkdir(path.join(dir, "files"), { mode: 0o700 });
  const dataFiles: Manifest["data_files"] = [];
  for (const name of await dataDirFiles(config.dataDir)) {
    const copied = await copyFileHashed(path.join(config.dataDir, name), path.join(dir, "files", name));
    dataFiles.push({ name, ...copied });
  }
  await syncDir(path.join(dir, "files"));
  say(`data directory files: ${dataFiles.map((f) => f.name).join(", ")}`);

  const mediaRoot = path.join(config.dataDir, "media");
  const copied = await copyBlobs(mediaRoot, path.join(dir, "media"));
  const missing = facts.blobRefs.filter((sha) => !existsSync(blobPath(path.join(dir, "media"), sha))).sort();
  say(`media: ${copied.files} files, ${copied.bytes} bytes${missing.length ? `; ${missing.length} referenced blobs missing` : ""}${copied.corrupt.length ? `; ${copied.corrupt.length} corrupt blobs skipped` : ""}`);

  const manifest: Manifest = {
    format: BACKUP_FORMAT,
    format_version: BACKUP_FORMAT_VERSION,
    revier_version: revierVersion(),
    created_ts: started,
    server_name: config.serverName,
    database,
    migrations: facts.migrations,
    stream_position: facts.stream,
    tables,
    data_files: dataFiles,
    media: { files: copied.files, bytes: copied.bytes, missing, corrupt: copied.corrupt },
  };
  const tmp = path.join(dir, "manifest.json.part");
  await writeFile(tmp, `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o600, flush: true });
  await rename(tmp, path.join(dir, "manifest.json"));
  await syncDir(dir);

  // Taking a full copy of the database is a privileged act; it is audited (after the snapshot, so
  // the entry is in the live log, not in the backup).
  await withAudit(config, async (audit) => {
    await audit.record({ ...actor, action: "backup.create", target: null, details: { directory: path.resolve(dir), dialect, tables: tables.length, rows: tables.reduce((n, t) => n + t.rows, 0), media_files: copied.files, stream_position: facts.stream } });
  });
  return manifest;
}

async function backupSqlite(config: Config, dir: string, say: Say): Promise<{ database: Manifest["database"]; tables: ManifestTable[]; facts: Snapshot }> {
  const dest = path.join(dir, "revier.db");
  const source = new SqliteDatabase(sqliteFile(config), { fileMustExist: true });
  try {
    source.pragma("busy_timeout = 5000");
    // All remaining pages in one step: the step reads inside one transaction, so the copy is one
    // snapshot even while the server writes (WAL readers never block the writer).
    await source.backup(dest, { progress: () => 0x7fffffff });
  } finally {
    source.close();
  }
  await chmod(dest, 0o600);
  const copy = new SqliteDatabase(dest, { fileMustExist: true });
  // A self-contained file: no -wal beside it.
  copy.pragma("journal_mode = DELETE");
  const check = copy.pragma("quick_check", { simple: true });
  if (check !== "ok") {
    copy.close();
    throw new Error(`the copy fails SQLite's quick_check: ${String(check)}`);
  }
  const db: AnyDb = new Kysely({ dialect: new SqliteDialect({ database: copy }) });
  try {
    const infos = await listTables(db, "sqlite");
    const tables: ManifestTable[] = [];
    for (const t of infos) {
      const digest = new TableDigest();
      for (const batch of readSqliteTable(copy, t)) for (const row of batch) digest.add(row);
      tables.push({ name: t.name, columns: t.columns, rows: digest.rows, digest: digest.hex });
    }
    const facts = await snapshotFacts(db, infos);
    await db.destroy();
    const file = await sha256File(dest);
    say(`database (SQLite): ${tables.length} tables, ${tables.reduce((n, t) => n + t.rows, 0)} rows, stream position ${facts.stream}`);
    return { database: { dialect: "sqlite", file: "revier.db", sha256: file.sha256, bytes: file.bytes }, tables, facts };
  } catch (err) {
    await db.destroy().catch(() => undefined);
    throw err;
  }
}

async function backupPostgres(config: Config, dir: string, say: Say): Promise<{ database: Manifest["database"]; tables: ManifestTable[]; facts: Snapshot }> {
  const storage = openPostgres(config.databaseUrl!, { max: 1 });
  await mkdir(path.join(dir, "db"), { mode: 0o700 });
  try {
    // One REPEATABLE READ, read-only transaction: every table is read from the same snapshot while
    // the server keeps writing, as pg_dump does.
    const result = await storage.db
      .transaction()
      .setIsolationLevel("repeatable read")
      .execute(async (tx) => {
        await sql`set transaction read only`.execute(tx);
        const infos = await listTables(tx, "postgres");
        const tables: ManifestTable[] = [];
        for (const t of infos) {
          const file = path.join("db", safeFileName(t.name));
          const out = await HashedWriter.create(path.join(dir, file));
          const digest = new TableDigest();
          try {
            for await (const batch of readPostgresTable(tx, t)) {
              let chunk = "";
              for (const row of batch) {
                digest.add(row);
                chunk += `${encodeRow(row)}\n`;
              }
              await out.write(chunk);
            }
          } catch (err) {
            await out.close().catch(() => undefined);
            throw err;
          }
          const written = await out.close();
          tables.push({ name: t.name, columns: t.columns, rows: digest.rows, digest: digest.hex, file, sha256: written.sha256, bytes: written.bytes });
        }
        const facts = await snapshotFacts(tx, infos);
        return { tables, facts };
      });
    await syncDir(path.join(dir, "db"));
    say(`database (PostgreSQL): ${result.tables.length} tables, ${result.tables.reduce((n, t) => n + t.rows, 0)} rows, stream position ${result.facts.stream}`);
    return { database: { dialect: "postgres" }, ...result };
  } finally {
    await storage.close();
  }
}

export async function readManifest(dir: string): Promise<Manifest> {
  let text: string;
  try {
    text = await readFile(path.join(dir, "manifest.json"), "utf8");
  } catch {
    throw new Error(`${dir} holds no manifest.json: not a Revier backup, or an incomplete one`);
  }
  const m = JSON.parse(text) as Manifest;
  if (m.format !== BACKUP_FORMAT) throw new Error(`${dir}/manifest.json is not a Revier backup manifest`);
  if (m.format_version !== BACKUP_FORMAT_VERSION) throw new Error(`backup format version ${m.format_version} is not supported by this Revier (supports ${BACKUP_FORMAT_VERSION})`);
  return m;
}

/** Checks every file of the backup against the manifest before anything is touched. */
async function verifyBackupFiles(dir: string, m: Manifest): Promise<void> {
  const check = async (file: string, sha256: string | undefined) => {
    const p = path.join(dir, file);
    if (!existsSync(p)) throw new Error(`backup file ${file} is missing`);
    const got = await sha256File(p);
    if (got.sha256 !== sha256) throw new Error(`backup file ${file} is damaged: its SHA-256 is ${got.sha256}, the manifest says ${sha256}`);
  };
  if (!m.data_files.some((f) => f.name === "signing.key")) throw new Error("the backup holds no signing key");
  for (const f of m.data_files) await check(path.join("files", f.name), f.sha256);
  if (m.database.dialect === "sqlite") await check(m.database.file ?? "revier.db", m.database.sha256);
  else for (const t of m.tables) await check(t.file ?? "", t.sha256);
}

export interface RestoreReport {
  manifest: Manifest;
  tables: number;
  rows: number;
  mediaFiles: number;
  fixups: RestoreFixups;
  appliedMigrations: string[];
}

/**
 * Restores a backup into an empty data directory (and, for PostgreSQL, an empty database). With
 * `force`, what is there is deleted first. The database goes in last and in one step (a renamed
 * file, or one transaction), so a server never starts on half of it.
 */
export async function restoreBackup(config: Config, dir: string, opts: { force: boolean; actor: Actor }, say: Say = () => undefined): Promise<RestoreReport> {
  const m = await readManifest(dir);
  const dialect: Dialect = config.databaseUrl ? "postgres" : "sqlite";
  if (m.server_name !== config.serverName) {
    throw new Error(`the backup is of server ${m.server_name}, but server_name is ${config.serverName}; user and room ids contain the server name, so it cannot change`);
  }
  if (m.database.dialect !== dialect) {
    throw new Error(
      m.database.dialect === "sqlite"
        ? "the backup holds a SQLite database but REVIER_DATABASE_URL names PostgreSQL: restore into a data directory without database_url, then move it with `revier port-db --to …`"
        : "the backup holds a PostgreSQL database: set REVIER_DATABASE_URL to an empty PostgreSQL database to restore it",
    );
  }
  const migrations = knownMigrations(m.migrations);
  await verifyBackupFiles(dir, m);
  say(`backup of ${m.server_name} from ${new Date(m.created_ts).toISOString()} verified`);

  // The target must be empty, or explicitly given up.
  const mediaRoot = path.join(config.dataDir, "media");
  const dbFile = sqliteFile(config);
  const storage: Storage | null = dialect === "postgres" ? openPostgres(config.databaseUrl!, { max: 1 }) : null;
  let fixups: RestoreFixups;
  try {
    const occupied: string[] = [];
    // A file that is already there with the same content (a configuration file kept in the data
    // directory) is no conflict; a different signing key is.
    for (const f of m.data_files) {
      const there = path.join(config.dataDir, f.name);
      if (existsSync(there) && (await sha256File(there)).sha256 !== f.sha256) occupied.push(there);
    }
    if (await hasBlobs(mediaRoot)) occupied.push(`${mediaRoot} (media files)`);
    if (dialect === "sqlite" && existsSync(dbFile)) occupied.push(dbFile);
    const existingTables = storage ? await tableNames(storage.db, "postgres") : [];
    if (existingTables.length > 0) occupied.push(`the database (${existingTables.length} tables)`);
    if (occupied.length > 0) {
      if (!opts.force) throw new Error(`the target is not empty: ${occupied.join(", ")}; restore into an empty data directory and database, or pass --force to delete what is there`);
      say(`--force: deleting ${occupied.join(", ")}`);
      await rm(mediaRoot, { recursive: true, force: true });
      for (const suffix of ["", "-wal", "-shm", "-journal", ".restoring"]) await rm(`${dbFile}${suffix}`, { force: true });
      if (storage) for (const t of existingTables) await sql`drop table if exists ${sql.table(t)} cascade`.execute(storage.db);
    }
    await mkdir(config.dataDir, { recursive: true, mode: 0o700 });

    const media = await copyBlobs(path.join(dir, "media"), mediaRoot);
    if (media.corrupt.length > 0) throw new Error(`${media.corrupt.length} media files in the backup are damaged (e.g. ${media.corrupt[0]}); nothing of the database was restored`);
    say(`media: ${media.files} files restored`);
    for (const f of m.data_files) {
      const target = path.join(config.dataDir, f.name);
      await copyFile(path.join(dir, "files", f.name), `${target}.part`);
      await chmod(`${target}.part`, 0o600);
      await rename(`${target}.part`, target);
    }
    await syncDir(config.dataDir);

    if (dialect === "sqlite") fixups = await restoreSqlite(dir, m, dbFile);
    else fixups = await restorePostgres(storage!, dir, m, migrations);
    say(`database: ${m.tables.length} tables, ${m.tables.reduce((n, t) => n + t.rows, 0)} rows restored and verified`);
  } finally {
    await storage?.close();
  }

  // Migrations newer than the backup run now, as they would at start; then the restore is audited.
  const live = dialect === "postgres" ? openPostgres(config.databaseUrl!, { max: 2 }) : openSqlite(dbFile);
  try {
    const appliedMigrations = await migrate(live);
    await new AuditLog(live.db, new StreamWriter(live, new LocalBus())).record({
      ...opts.actor,
      action: "backup.restore",
      target: null,
      details: {
        directory: path.resolve(dir),
        backup_created_ts: m.created_ts,
        backup_stream_position: m.stream_position,
        one_time_keys_dropped: fixups.oneTimeKeysDropped,
        fallback_keys_marked_used: fixups.fallbackKeysMarked,
        stream_position: fixups.streamAfter,
        migrations_applied: appliedMigrations,
      },
    });
    return { manifest: m, tables: m.tables.length, rows: m.tables.reduce((n, t) => n + t.rows, 0), mediaFiles: m.media.files, fixups, appliedMigrations };
  } finally {
    await live.close();
  }
}

async function restoreSqlite(dir: string, m: Manifest, dbFile: string): Promise<RestoreFixups> {
  const tmp = `${dbFile}.restoring`;
  await rm(tmp, { force: true });
  await copyFile(path.join(dir, m.database.file ?? "revier.db"), tmp);
  await chmod(tmp, 0o600);
  const raw = new SqliteDatabase(tmp, { fileMustExist: true });
  const db: AnyDb = new Kysely({ dialect: new SqliteDialect({ database: raw }) });
  let fixups: RestoreFixups;
  try {
    const check = raw.pragma("quick_check", { simple: true });
    if (check !== "ok") throw new Error(`the backed-up database fails SQLite's quick_check: ${String(check)}`);
    for (const t of m.tables) {
      const n = await countRows(db, t.name);
      if (n !== t.rows) throw new Error(`table ${t.name} holds ${n} rows, the manifest says ${t.rows}`);
    }
    // SQLite commits durably (synchronous=FULL), which also flushes the copied pages.
    fixups = await db.transaction().execute((tx) => afterRestore(tx, "sqlite", RESTORE_STREAM_GAP));
  } catch (err) {
    await db.destroy().catch(() => undefined);
    await rm(tmp, { force: true });
    throw err;
  }
  await db.destroy();
  await rename(tmp, dbFile);
  await syncDir(path.dirname(dbFile));
  return fixups;
}

/**
 * Schema from the backup's migrations, then every table from its JSON lines, checked row for row
 * against the manifest's counts and digests, sequences moved past the copied ids and the restore
 * fix-ups applied: one transaction, so a failure leaves the database empty.
 */
async function restorePostgres(storage: Storage, dir: string, m: Manifest, migrations: string[]): Promise<RestoreFixups> {
  return storage.db.transaction().execute(async (tx) => {
    await applyMigrations(tx, "postgres", migrations);
    const existing = new Map((await listTables(tx, "postgres")).map((t) => [t.name, t]));
    for (const t of m.tables) {
      const target = existing.get(t.name);
      if (!target) throw new Error(`table ${t.name} of the backup does not exist after its migrations (${migrations.join(", ")})`);
      const unknown = t.columns.filter((c) => !target.columns.includes(c));
      if (unknown.length > 0) throw new Error(`table ${t.name}: the backup has columns the schema lacks: ${unknown.join(", ")}`);
      // Migrations may seed rows (the stream counter); the backup's rows replace them.
      await sql`delete from ${sql.table(t.name)}`.execute(tx);
      const table: TableInfo = { name: t.name, columns: t.columns };
      const inserter = new RowInserter(tx, table);
      const lines = createInterface({ input: createReadStream(path.join(dir, t.file!)), crlfDelay: Infinity });
      for await (const line of lines) {
        if (line === "") continue;
        const values = (JSON.parse(line) as unknown[]).map(decodeValue) as Row;
        if (values.length !== t.columns.length) throw new Error(`table ${t.name}: a row has ${values.length} values for ${t.columns.length} columns`);
        await inserter.add(values);
      }
      await inserter.flush();
    }
    for (const t of m.tables) {
      const digest = new TableDigest();
      for await (const batch of readPostgresTable(tx, { name: t.name, columns: t.columns })) for (const row of batch) digest.add(row);
      if (digest.rows !== t.rows || digest.hex !== t.digest) throw new Error(`table ${t.name}: ${digest.rows} rows restored (digest ${digest.hex.slice(0, 12)}…), the backup has ${t.rows} (digest ${t.digest.slice(0, 12)}…)`);
    }
    await resetSequences(tx);
    return afterRestore(tx, "postgres", RESTORE_STREAM_GAP);
  });
}

/** Runs `fn` with the audit log of the configured database. */
async function withAudit(config: Config, fn: (audit: AuditLog) => Promise<void>): Promise<void> {
  const storage = config.databaseUrl ? openPostgres(config.databaseUrl, { max: 2 }) : openSqlite(sqliteFile(config));
  try {
    await fn(new AuditLog(storage.db, new StreamWriter(storage, new LocalBus())));
  } finally {
    await storage.close();
  }
}
