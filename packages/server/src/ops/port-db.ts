import { existsSync } from "node:fs";
import path from "node:path";
import SqliteDatabase from "better-sqlite3";
import { Kysely, SqliteDialect, sql } from "kysely";
import type { Config } from "../config.js";
import { migrate, openPostgres } from "../storage/database.js";
import { StreamWriter } from "../storage/stream.js";
import { LocalBus } from "../bus/local.js";
import { AuditLog } from "../governance/audit.js";
import type { Actor } from "../governance/policy.js";
import { applyMigrations, knownMigrations, listTables, readPostgresTable, readSqliteTable, resetSequences, RowInserter, TableDigest, tableNames, type AnyDb } from "./tables.js";
import type { Say } from "./backup.js";

/**
 * `revier port-db --to postgres://…`: moves a SQLite installation to PostgreSQL.
 *
 * The source is read in one SQLite read transaction (one snapshot); the target must hold no tables.
 * In one PostgreSQL transaction the schema of the source's migrations is created, every table is
 * copied (tables are found in the catalogue, so ones added by later migrations come along), each
 * table is read back and compared with the source by row count and an order-independent digest of
 * its rows, the stream counter is compared, and the sequences behind serial ids are moved past the
 * copied ids. Any difference rolls everything back, leaving the target empty.
 */

export interface PortReport {
  tables: Array<{ name: string; rows: number }>;
  stream: number;
  appliedMigrations: string[];
}

/** The URL without its password, for messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(unparseable URL)";
  }
}

export async function portDb(config: Config, to: string, actor: Actor, say: Say = () => undefined): Promise<PortReport> {
  if (config.databaseUrl) throw new Error("port-db moves a SQLite installation: unset REVIER_DATABASE_URL (and database_url) so the source is the SQLite database in the data directory");
  if (!/^postgres(ql)?:\/\//.test(to)) throw new Error("--to must be a postgres:// URL");
  const file = path.join(config.dataDir, "revier.db");
  if (!existsSync(file)) throw new Error(`no SQLite database at ${file}`);

  const source = new SqliteDatabase(file, { fileMustExist: true });
  source.pragma("busy_timeout = 5000");
  const sourceDb: AnyDb = new Kysely({ dialect: new SqliteDialect({ database: source }) });
  const target = openPostgres(to, { max: 1 });
  let report: PortReport;
  try {
    const existing = await tableNames(target.db, "postgres");
    if (existing.length > 0) throw new Error(`the target database ${redactUrl(to)} is not empty (${existing.length} tables, e.g. ${existing[0]}); port into a new, empty database`);

    // Everything below reads one snapshot of the source.
    source.exec("begin");
    try {
      const tables = await listTables(sourceDb, "sqlite");
      const names = new Set(tables.map((t) => t.name));
      if (!names.has("revier_migrations") || !names.has("counters")) throw new Error(`${file} is not a Revier database`);
      const migrations = knownMigrations((await sql<{ name: string }>`select name from revier_migrations`.execute(sourceDb)).rows.map((r) => r.name));
      const stream = Number((await sql<{ value: number }>`select value from counters where name = 'stream'`.execute(sourceDb)).rows[0]?.value ?? 0);

      const copied = await target.db.transaction().execute(async (tx) => {
        await applyMigrations(tx, "postgres", migrations);
        const schema = new Map((await listTables(tx, "postgres")).map((t) => [t.name, t]));
        const result: Array<{ name: string; rows: number }> = [];
        for (const t of tables) {
          const there = schema.get(t.name);
          if (!there) throw new Error(`table ${t.name} does not exist in PostgreSQL after migrations ${migrations.join(", ")}; was it created outside Revier's migrations?`);
          const unknown = t.columns.filter((c) => !there.columns.includes(c));
          if (unknown.length > 0) throw new Error(`table ${t.name}: columns ${unknown.join(", ")} do not exist in PostgreSQL`);
          // Migrations may seed rows (the stream counter); the source's rows replace them.
          await sql`delete from ${sql.table(t.name)}`.execute(tx);
          const sourceDigest = new TableDigest();
          const inserter = new RowInserter(tx, t);
          for (const batch of readSqliteTable(source, t)) {
            for (const row of batch) {
              sourceDigest.add(row);
              await inserter.add(row);
            }
          }
          await inserter.flush();
          // Read back what PostgreSQL stored and compare.
          const targetDigest = new TableDigest();
          for await (const batch of readPostgresTable(tx, t)) for (const row of batch) targetDigest.add(row);
          if (targetDigest.rows !== sourceDigest.rows) throw new Error(`table ${t.name}: ${sourceDigest.rows} rows in SQLite but ${targetDigest.rows} in PostgreSQL`);
          if (targetDigest.hex !== sourceDigest.hex) throw new Error(`table ${t.name}: ${sourceDigest.rows} rows on both sides, but their contents differ`);
          result.push({ name: t.name, rows: sourceDigest.rows });
          say(`${t.name.padEnd(28)} ${String(sourceDigest.rows).padStart(10)} rows  verified`);
        }
        const portedStream = Number((await sql<{ value: number }>`select value from counters where name = 'stream'`.execute(tx)).rows[0]?.value ?? -1);
        if (portedStream !== stream) throw new Error(`stream counter is ${stream} in SQLite but ${portedStream} in PostgreSQL`);
        await resetSequences(tx);
        return result;
      });
      report = { tables: copied, stream, appliedMigrations: [] };
    } finally {
      source.exec("commit");
    }
    say(`stream counter ${report.stream} verified`);
    report.appliedMigrations = await migrate(target);
    await new AuditLog(target.db, new StreamWriter(target, new LocalBus())).record({
      ...actor,
      action: "database.port",
      target: null,
      details: { from: "sqlite", to: "postgres", tables: report.tables.length, rows: report.tables.reduce((n, t) => n + t.rows, 0), stream_position: report.stream },
    });
  } finally {
    await sourceDb.destroy().catch(() => undefined);
    await target.close();
  }
  return report;
}
