import { test } from "node:test";
import assert from "node:assert/strict";
import { isBetter } from "./key-backup.js";

const k = (is_verified: boolean, first_message_index: number, forwarded_count: number) => ({ is_verified, first_message_index, forwarded_count });

test("a backed-up session is replaced only by a better copy, in the spec's order of criteria", () => {
  assert.equal(isBetter(k(true, 9, 9), k(false, 0, 0)), true, "verified beats unverified whatever the index");
  assert.equal(isBetter(k(false, 0, 0), k(true, 9, 9)), false);
  assert.equal(isBetter(k(false, 1, 9), k(false, 2, 0)), true, "then a lower first message index");
  assert.equal(isBetter(k(false, 2, 0), k(false, 1, 9)), false);
  assert.equal(isBetter(k(true, 3, 1), k(true, 3, 2)), true, "then a lower forwarded count");
  assert.equal(isBetter(k(true, 3, 2), k(true, 3, 2)), false, "an equal copy changes nothing");
});
