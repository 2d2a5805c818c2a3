import { test } from "node:test";
import assert from "node:assert/strict";
import { DAY_MS, retentionContent } from "./retention.js";

test("m.room.retention content: max_lifetime in milliseconds, empty when retention is off", () => {
  assert.deepEqual(retentionContent(30), { max_lifetime: 30 * DAY_MS });
  assert.equal(retentionContent(1).max_lifetime, 86_400_000);
  assert.deepEqual(retentionContent(null), {});
});
