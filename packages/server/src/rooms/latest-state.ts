import type { ExpressionBuilder } from "kysely";
import type { Database } from "../storage/schema.js";

/**
 * For a query over `events as e`: the row is the latest event of its state key up to position
 * `at`, so a query that also keeps `e.stream_ordering <= at` reads the room's state at `at`. Room
 * DAGs are linear here, so that state is the latest event per key.
 */
export function latestStateUpTo(eb: ExpressionBuilder<Database & { e: Database["events"] }, "e">, at: number) {
  return eb(
    "e.stream_ordering",
    "=",
    eb
      .selectFrom("events as e2")
      .select((eb2) => eb2.fn.max("e2.stream_ordering").as("m"))
      .whereRef("e2.room_id", "=", "e.room_id")
      .whereRef("e2.type", "=", "e.type")
      .whereRef("e2.state_key", "=", "e.state_key")
      .where("e2.stream_ordering", "<=", at),
  );
}
