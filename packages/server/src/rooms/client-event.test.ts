import { test } from "node:test";
import assert from "node:assert/strict";
import { parseFrozen, toClientEvent, type EventRow } from "./client-event.js";

const row: EventRow = {
  event_id: "$e",
  json: JSON.stringify({ type: "m.room.message", room_id: "!r:t", sender: "@anna:t", origin_server_ts: 1_000, content: { msgtype: "m.text", body: "Lage", "m.mentions": { user_ids: ["@bert:t"] } }, unsigned: { x: 1 } }),
  stream_ordering: 7,
  redacted_by: null,
  sender: "@anna:t",
  txn_device: "PHONE",
  txn_id: "t1",
};

test("one parse serves many viewers: shared content is frozen, each viewer's unsigned is its own", () => {
  const parsed = parseFrozen(row.json);
  const sender = toClientEvent(row, { now: 5_000, viewer: { userId: "@anna:t", deviceId: "PHONE" } }, parsed);
  const other = toClientEvent(row, { now: 6_000, viewer: { userId: "@bert:t", deviceId: "D" } }, parsed);
  assert.deepEqual(sender, toClientEvent(row, { now: 5_000, viewer: { userId: "@anna:t", deviceId: "PHONE" } }), "the same event as parsed on its own");
  assert.equal(sender.content, other.content);
  assert.deepEqual(sender.unsigned, { x: 1, age: 4_000, transaction_id: "t1" });
  assert.deepEqual(other.unsigned, { x: 1, age: 5_000 });
  assert.ok(Object.isFrozen(sender.content) && Object.isFrozen((sender.content["m.mentions"] as { user_ids: string[] }).user_ids));
  // ESM is strict: changing the shared content throws instead of reaching another viewer's answer.
  assert.throws(() => {
    (other.content as Record<string, unknown>).body = "geändert";
  }, TypeError);
  other.unsigned!.age = 0;
  assert.equal(sender.unsigned!.age, 4_000);
});
