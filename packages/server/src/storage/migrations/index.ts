import type { Kysely } from "kysely";
import type { Dialect } from "../schema.js";
import { up as initial } from "./001_initial.js";
import { up as e2ee } from "./002_e2ee.js";
import { up as media } from "./003_media.js";
import { up as governance } from "./004_governance.js";
import { up as terms } from "./005_terms.js";
import { up as channels } from "./006_channels.js";
import { up as pushDuty } from "./007_push_duty.js";
import { up as pusherDevices } from "./008_pusher_devices.js";
import { up as partialEventIndexes } from "./009_partial_event_indexes.js";
import { up as streamWindowIndexes } from "./010_stream_window_indexes.js";
import { up as pushActionsByUser } from "./011_push_actions_by_user.js";
import { up as sharedPushOutcome } from "./012_shared_push_outcome.js";
import { up as authChanges } from "./013_auth_changes.js";

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
  { name: "005_terms", up: terms },
  { name: "006_channels", up: channels },
  { name: "007_push_duty", up: pushDuty },
  { name: "008_pusher_devices", up: pusherDevices },
  { name: "009_partial_event_indexes", up: partialEventIndexes },
  { name: "010_stream_window_indexes", up: streamWindowIndexes },
  { name: "011_push_actions_by_user", up: pushActionsByUser },
  { name: "012_shared_push_outcome", up: sharedPushOutcome },
  { name: "013_auth_changes", up: authChanges },
];
