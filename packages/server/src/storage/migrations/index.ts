import type { Kysely } from "kysely";
import type { Dialect } from "../schema.js";
import { up as initial } from "./001_initial.js";
import { up as e2ee } from "./002_e2ee.js";
import { up as media } from "./003_media.js";
import { up as governance } from "./004_governance.js";

export interface Migration {
  name: string;
  up: (db: Kysely<unknown>, dialect: Dialect) => Promise<void>;
}

/** Ordered list of migrations. Append only: an applied migration is never edited. */
export const MIGRATIONS: Migration[] = [
  { name: "001_initial", up: initial },
  { name: "002_e2ee", up: e2ee },
  { name: "003_media", up: media },
  { name: "004_governance", up: governance },
];
