import { sql, type RawBuilder } from "kysely";

/** Case-insensitive substring match that behaves the same on SQLite and PostgreSQL. */
export function containsIgnoringCase(column: string, term: string): RawBuilder<boolean> {
  const pattern = `%${term.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
  return sql<boolean>`lower(${sql.ref(column)}) like ${pattern} escape '\\'`;
}
