import { test } from "node:test";
import assert from "node:assert/strict";
import { assertConformsToSpec } from "../../test/support/spec.js";
import { DEFAULT_RULE_IDS, defaultRules, RULE_KINDS, type PushRule } from "./default-rules.js";

const USER = "@alice:example.org";

test("the predefined rules appear in the spec's order, per kind", () => {
  const r = defaultRules(USER, "alice");
  assert.deepEqual(
    r.override.map((x) => x.rule_id),
    [
      ".m.rule.master",
      ".m.rule.suppress_notices",
      ".m.rule.invite_for_me",
      ".m.rule.member_event",
      ".m.rule.is_user_mention",
      ".m.rule.contains_display_name",
      ".m.rule.is_room_mention",
      ".m.rule.roomnotif",
      ".m.rule.tombstone",
      ".m.rule.reaction",
      ".m.rule.room.server_acl",
      ".m.rule.suppress_edits",
    ],
  );
  assert.deepEqual(
    r.content.map((x) => x.rule_id),
    [".m.rule.contains_user_name"],
  );
  assert.deepEqual(r.room, []);
  assert.deepEqual(r.sender, []);
  assert.deepEqual(
    r.underride.map((x) => x.rule_id),
    [".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one", ".m.rule.message", ".m.rule.encrypted"],
  );
  for (const kind of RULE_KINDS) assert.deepEqual(DEFAULT_RULE_IDS[kind], r[kind].map((x) => x.rule_id));
});

test("the ruleset conforms to the GET /pushrules/ response schema", () => {
  assertConformsToSpec("GET", "/_matrix/client/v3/pushrules/", 200, { global: defaultRules(USER, "alice") });
});

test("every rule carries the PushRule fields that apply to its kind", () => {
  const r = defaultRules(USER, "alice");
  for (const kind of RULE_KINDS) {
    for (const rule of r[kind]) {
      assert.equal(rule.default, true, rule.rule_id);
      assert.equal(typeof rule.enabled, "boolean", rule.rule_id);
      assert.ok(rule.rule_id.startsWith("."), rule.rule_id);
      assert.ok(Array.isArray(rule.actions), rule.rule_id);
      const keys = Object.keys(rule).sort();
      if (kind === "content") assert.deepEqual(keys, ["actions", "default", "enabled", "pattern", "rule_id"]);
      else assert.deepEqual(keys, ["actions", "conditions", "default", "enabled", "rule_id"]);
      for (const a of rule.actions) assert.ok(a === "notify" || (typeof a === "object" && typeof a.set_tweak === "string"), `${rule.rule_id}: ${JSON.stringify(a)}`);
    }
  }
});

test("only the master rule is disabled by default", () => {
  const r = defaultRules(USER, "alice");
  const disabled = RULE_KINDS.flatMap((k) => r[k]).filter((x) => !x.enabled).map((x) => x.rule_id);
  assert.deepEqual(disabled, [".m.rule.master"]);
  const master = r.override[0]!;
  assert.deepEqual(master, { rule_id: ".m.rule.master", default: true, enabled: false, conditions: [], actions: [] });
});

test("user-specific rules are built from the user id and localpart", () => {
  const r = defaultRules(USER, "alice");
  const byId = (rules: PushRule[], id: string): PushRule => rules.find((x) => x.rule_id === id)!;
  assert.deepEqual(byId(r.override, ".m.rule.invite_for_me").conditions, [
    { kind: "event_match", key: "type", pattern: "m.room.member" },
    { kind: "event_match", key: "content.membership", pattern: "invite" },
    { kind: "event_match", key: "state_key", pattern: USER },
  ]);
  assert.deepEqual(byId(r.override, ".m.rule.is_user_mention").conditions, [{ kind: "event_property_contains", key: "content.m\\.mentions.user_ids", value: USER }]);
  assert.equal(r.content[0]!.pattern, "alice");
});

test("actions match the spec definitions", () => {
  const r = defaultRules(USER, "alice");
  const actions = Object.fromEntries(RULE_KINDS.flatMap((k) => r[k]).map((x) => [x.rule_id, x.actions]));
  const sound = { set_tweak: "sound", value: "default" };
  const highlight = { set_tweak: "highlight" };
  assert.deepEqual(actions[".m.rule.suppress_notices"], []);
  assert.deepEqual(actions[".m.rule.invite_for_me"], ["notify", sound]);
  assert.deepEqual(actions[".m.rule.member_event"], []);
  assert.deepEqual(actions[".m.rule.is_user_mention"], ["notify", sound, highlight]);
  assert.deepEqual(actions[".m.rule.contains_display_name"], ["notify", sound, highlight]);
  assert.deepEqual(actions[".m.rule.is_room_mention"], ["notify", highlight]);
  assert.deepEqual(actions[".m.rule.roomnotif"], ["notify", highlight]);
  assert.deepEqual(actions[".m.rule.tombstone"], ["notify", highlight]);
  assert.deepEqual(actions[".m.rule.reaction"], []);
  assert.deepEqual(actions[".m.rule.room.server_acl"], []);
  assert.deepEqual(actions[".m.rule.suppress_edits"], []);
  assert.deepEqual(actions[".m.rule.contains_user_name"], ["notify", sound, highlight]);
  assert.deepEqual(actions[".m.rule.call"], ["notify", { set_tweak: "sound", value: "ring" }]);
  assert.deepEqual(actions[".m.rule.encrypted_room_one_to_one"], ["notify", sound]);
  assert.deepEqual(actions[".m.rule.room_one_to_one"], ["notify", sound]);
  assert.deepEqual(actions[".m.rule.message"], ["notify"]);
  assert.deepEqual(actions[".m.rule.encrypted"], ["notify"]);
});

test("each call returns independent objects", () => {
  const a = defaultRules(USER, "alice");
  a.override[1]!.actions.push("notify");
  (a.underride[0]!.actions[1] as { value: string }).value = "changed";
  const b = defaultRules(USER, "alice");
  assert.deepEqual(b.override[1]!.actions, []);
  assert.deepEqual(b.underride[0]!.actions[1], { set_tweak: "sound", value: "ring" });
});
