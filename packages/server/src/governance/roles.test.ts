import { test } from "node:test";
import assert from "node:assert/strict";
import { PERMISSIONS, can } from "./roles.js";

test("helpdesk and dpo hold only their narrow sets; users and unknown roles hold nothing", () => {
  assert.deepEqual([...PERMISSIONS.helpdesk].sort(), ["devices.read", "devices.wipe", "enrollment.issue", "users.lock", "users.password", "users.read"]);
  assert.deepEqual([...PERMISSIONS.dpo].sort(), ["audit.read", "policy.read", "stats.read"]);
  assert.equal(PERMISSIONS.user.size, 0);
  assert.equal(can("root", "policy.write"), false);
  assert.equal(can("admin", "policy.write"), true);
  assert.equal(can("dpo", "policy.write"), false);
});
