import type { Kysely } from "kysely";
import type { Dialect } from "../schema.js";
import { up as initial } from "./001_initial.js";

export interface Migration {
  name: string;
  up: (db: Kysely<unknown>, dialect: Dialect) => Promise<void>;
}

/** Ordered list of migrations. Append only: an applied migration is never edited. */
export const MIGRATIONS: Migration[] = [{ name: "001_initial", up: initial }];
