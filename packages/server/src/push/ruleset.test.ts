import { test } from "node:test";
import assert from "node:assert/strict";
import { assertConformsToSpec } from "../../test/support/spec.js";
import { evaluatePushRules } from "./evaluate.js";
import { buildRuleset, deleteRule, emptyPushRules, getRule, parseStoredPushRules, putRule, PushRuleError, setActions, setEnabled, type UserPushRules } from "./ruleset.js";

const ME = "@alice:example.org";
const build = (s: UserPushRules | undefined) => buildRuleset(ME, "alice", s);
const ids = (s: UserPushRules, kind: "override" | "content" | "room" | "sender" | "underride") => build(s)[kind].map((r) => r.rule_id);

function rejects(fn: () => unknown, errcode: string, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof PushRuleError, `expected PushRuleError, got ${String(err)}`);
    assert.equal(err.errcode, errcode);
    if (message) assert.match(err.message, message);
    return true;
  });
}

test("with nothing stored the ruleset is the server defaults", () => {
  const r = build(undefined);
  assert.deepEqual(r, build(emptyPushRules()));
  assert.equal(r.override[0]!.rule_id, ".m.rule.master");
  assert.equal(r.content[0]!.pattern, "alice");
  assertConformsToSpec("GET", "/_matrix/client/v3/pushrules/", 200, { global: r });
});

test("new rules go first among user rules; master stays above them; defaults come after", () => {
  let s = putRule(undefined, "override", "one", { actions: ["notify"], conditions: [{ kind: "event_match", key: "type", pattern: "x" }] });
  s = putRule(s, "override", "two", { actions: [] });
  const override = ids(s, "override");
  assert.deepEqual(override.slice(0, 4), [".m.rule.master", "two", "one", ".m.rule.suppress_notices"]);
  s = putRule(s, "underride", "low", { actions: ["notify"] });
  assert.deepEqual(ids(s, "underride").slice(0, 2), ["low", ".m.rule.call"]);
  s = putRule(s, "content", "cake", { pattern: "cake*lie", actions: ["notify"] });
  assert.deepEqual(ids(s, "content"), ["cake", ".m.rule.contains_user_name"]);
  const rule = getRule(build(s), "override", "one");
  assert.deepEqual(rule, { rule_id: "one", default: false, enabled: true, actions: ["notify"], conditions: [{ kind: "event_match", key: "type", pattern: "x" }] });
  assert.deepEqual(getRule(build(s), "content", "cake"), { rule_id: "cake", default: false, enabled: true, actions: ["notify"], pattern: "cake*lie" });
  assertConformsToSpec("GET", "/_matrix/client/v3/pushrules/", 200, { global: build(s) });
  assertConformsToSpec("GET", "/_matrix/client/v3/pushrules/global/{kind}/{ruleId}", 200, rule);
});

test("before and after place a rule relative to a user rule; before wins", () => {
  let s = putRule(undefined, "room", "!c:x", { actions: [] });
  s = putRule(s, "room", "!a:x", { actions: [] });
  assert.deepEqual(ids(s, "room"), ["!a:x", "!c:x"]);
  s = putRule(s, "room", "!b:x", { actions: [] }, { after: "!a:x" });
  assert.deepEqual(ids(s, "room"), ["!a:x", "!b:x", "!c:x"]);
  s = putRule(s, "room", "!d:x", { actions: [] }, { before: "!a:x" });
  assert.deepEqual(ids(s, "room"), ["!d:x", "!a:x", "!b:x", "!c:x"]);
  s = putRule(s, "room", "!e:x", { actions: [] }, { after: "!c:x" });
  assert.deepEqual(ids(s, "room"), ["!d:x", "!a:x", "!b:x", "!c:x", "!e:x"]);
  s = putRule(s, "room", "!f:x", { actions: [] }, { before: "!b:x", after: "!e:x" });
  assert.deepEqual(ids(s, "room"), ["!d:x", "!a:x", "!f:x", "!b:x", "!c:x", "!e:x"]);
  // Moving an existing rule.
  s = putRule(s, "room", "!d:x", { actions: ["notify"] }, { after: "!e:x" });
  assert.deepEqual(ids(s, "room"), ["!a:x", "!f:x", "!b:x", "!c:x", "!e:x", "!d:x"]);
});

test("before/after naming a missing or server-default rule is M_UNKNOWN", () => {
  const s = putRule(undefined, "override", "mine", { actions: [] });
  rejects(() => putRule(s, "override", "new", { actions: [] }, { before: "nope" }), "M_UNKNOWN", /before\/after rule not found: nope/);
  rejects(() => putRule(s, "override", "new", { actions: [] }, { after: ".m.rule.master" }), "M_UNKNOWN");
  rejects(() => putRule(s, "underride", "new", { actions: [] }, { after: "mine" }), "M_UNKNOWN");
});

test("replacing a rule keeps its position and enabled state", () => {
  let s = putRule(undefined, "sender", "@a:x", { actions: [] });
  s = putRule(s, "sender", "@b:x", { actions: [] });
  s = setEnabled(s, "sender", "@a:x", false);
  s = putRule(s, "sender", "@a:x", { actions: ["notify"] });
  assert.deepEqual(ids(s, "sender"), ["@b:x", "@a:x"]);
  assert.deepEqual(getRule(build(s), "sender", "@a:x"), { rule_id: "@a:x", default: false, enabled: false, actions: ["notify"] });
});

test("operations never modify their input", () => {
  const s0 = putRule(undefined, "override", "a", { actions: [] });
  const snapshot = JSON.stringify(s0);
  putRule(s0, "override", "b", { actions: [] });
  setEnabled(s0, "override", "a", false);
  setActions(s0, "underride", ".m.rule.message", ["notify"]);
  setEnabled(s0, "underride", ".m.rule.message", false);
  deleteRule(s0, "override", "a");
  assert.equal(JSON.stringify(s0), snapshot);
});

test("server-default rules can be disabled and get new actions, but not be deleted or replaced", () => {
  let s = setEnabled(undefined, "override", ".m.rule.master", true);
  s = setActions(s, "underride", ".m.rule.message", ["notify", { set_tweak: "sound", value: "ping" }]);
  s = setEnabled(s, "content", ".m.rule.contains_user_name", false);
  const r = build(s);
  assert.deepEqual(getRule(r, "override", ".m.rule.master"), { rule_id: ".m.rule.master", default: true, enabled: true, conditions: [], actions: [] });
  assert.deepEqual(getRule(r, "underride", ".m.rule.message").actions, ["notify", { set_tweak: "sound", value: "ping" }]);
  assert.equal(getRule(r, "underride", ".m.rule.message").enabled, true);
  assert.equal(getRule(r, "content", ".m.rule.contains_user_name").enabled, false);
  rejects(() => deleteRule(s, "override", ".m.rule.master"), "M_INVALID_PARAM");
  rejects(() => putRule(s, "override", ".m.rule.master", { actions: [] }), "M_INVALID_PARAM", /reserved/);
  // The change round-trips through storage and takes effect in evaluation.
  const stored = parseStoredPushRules(JSON.parse(JSON.stringify(s)));
  assert.deepEqual(stored, s);
  const match = evaluatePushRules(build(stored), { type: "m.room.message", sender: "@bob:x", room_id: "!r:x", content: { body: "hi" } }, { userId: ME, roomMemberCount: 3, senderPowerLevel: 0, notificationPowerLevels: {} });
  assert.equal(match?.ruleId, ".m.rule.master");
});

test("delete removes user rules; unknown rules and kinds are errors", () => {
  let s = putRule(undefined, "content", "c1", { pattern: "x", actions: [] });
  s = deleteRule(s, "content", "c1");
  assert.deepEqual(ids(s, "content"), [".m.rule.contains_user_name"]);
  rejects(() => deleteRule(s, "content", "c1"), "M_NOT_FOUND");
  rejects(() => deleteRule(s, "bogus", "c1"), "M_INVALID_PARAM");
  rejects(() => getRule(build(s), "content", "c1"), "M_NOT_FOUND");
  rejects(() => getRule(build(s), "global", "c1"), "M_INVALID_PARAM");
  rejects(() => setEnabled(s, "content", "c1", true), "M_NOT_FOUND");
  rejects(() => setActions(s, "content", "c1", []), "M_NOT_FOUND");
  // A default id under the wrong kind does not exist either.
  rejects(() => setEnabled(s, "underride", ".m.rule.master", true), "M_NOT_FOUND");
  rejects(() => putRule(s, "global", "x", { actions: [] }), "M_INVALID_PARAM", /kind/);
});

test("rule bodies are validated per kind", () => {
  rejects(() => putRule(undefined, "override", "x", "nope"), "M_BAD_JSON");
  rejects(() => putRule(undefined, "override", "x", {}), "M_BAD_JSON", /actions/);
  rejects(() => putRule(undefined, "override", "x", { actions: "notify" }), "M_BAD_JSON");
  rejects(() => putRule(undefined, "override", "x", { actions: ["explode"] }), "M_INVALID_PARAM", /explode/);
  rejects(() => putRule(undefined, "override", "x", { actions: [42] }), "M_BAD_JSON");
  rejects(() => putRule(undefined, "override", "x", { actions: [{ foo: "bar" }] }), "M_INVALID_PARAM");
  rejects(() => putRule(undefined, "override", "x", { actions: [{ set_tweak: "highlight", value: "yes" }] }), "M_INVALID_PARAM");
  rejects(() => putRule(undefined, "override", "x", { actions: [], conditions: {} }), "M_BAD_JSON");
  rejects(() => putRule(undefined, "override", "x", { actions: [], conditions: [{ key: "type" }] }), "M_BAD_JSON", /kind/);
  rejects(() => putRule(undefined, "override", "x", { actions: [], conditions: [{ kind: "event_match", key: "type" }] }), "M_BAD_JSON", /pattern/);
  rejects(() => putRule(undefined, "override", "x", { actions: [], conditions: [{ kind: "event_property_is", key: "type", value: { a: 1 } }] }), "M_INVALID_PARAM");
  rejects(() => putRule(undefined, "override", "x", { actions: [], conditions: [{ kind: "event_property_is", key: "type" }] }), "M_BAD_JSON");
  rejects(() => putRule(undefined, "override", "x", { actions: [], conditions: [{ kind: "room_member_count", is: "about 3" }] }), "M_INVALID_PARAM");
  rejects(() => putRule(undefined, "content", "x", { actions: [] }), "M_BAD_JSON", /pattern/);
  rejects(() => putRule(undefined, "content", "x", { actions: [], pattern: "a".repeat(1001) }), "M_INVALID_PARAM");
  rejects(() => putRule(undefined, "room", "not-a-room", { actions: [] }), "M_INVALID_PARAM");
  rejects(() => putRule(undefined, "sender", "!room:x", { actions: [] }), "M_INVALID_PARAM");
  rejects(() => putRule(undefined, "override", "a/b", { actions: [] }), "M_INVALID_PARAM");
  rejects(() => putRule(undefined, "override", "a\\b", { actions: [] }), "M_INVALID_PARAM");
  rejects(() => setEnabled(undefined, "override", ".m.rule.master", "yes"), "M_BAD_JSON");
  rejects(() => setActions(undefined, "override", ".m.rule.master", [{ set_tweak: 1 }]), "M_INVALID_PARAM");
});

test("accepted bodies are normalised: historical actions kept, unknown conditions kept, extra keys dropped", () => {
  let s = putRule(undefined, "override", "x", {
    actions: ["notify", "dont_notify", "coalesce", { set_tweak: "sound", value: "a.wav", junk: 1 }, { set_tweak: "org.example.tweak", value: { nested: [1] } }],
    conditions: [
      { kind: "event_match", key: "content.body", pattern: "beer", extra: true },
      { kind: "room_member_count", is: "<=10" },
      { kind: "org.example.future", feature: "x" },
    ],
    pattern: "ignored for override rules",
  });
  s = putRule(s, "room", "!r:x", { actions: [], conditions: [{ kind: "event_match", key: "type", pattern: "x" }] });
  const r = build(s);
  assert.deepEqual(getRule(r, "override", "x"), {
    rule_id: "x",
    default: false,
    enabled: true,
    actions: ["notify", "dont_notify", "coalesce", { set_tweak: "sound", value: "a.wav" }, { set_tweak: "org.example.tweak", value: { nested: [1] } }],
    conditions: [
      { kind: "event_match", key: "content.body", pattern: "beer" },
      { kind: "room_member_count", is: "<=10" },
      { kind: "org.example.future", feature: "x" },
    ],
  });
  assert.deepEqual(getRule(r, "room", "!r:x"), { rule_id: "!r:x", default: false, enabled: true, actions: [] });
});

test("getRule returns copies", () => {
  const r = build(undefined);
  const rule = getRule(r, "underride", ".m.rule.message");
  rule.actions.push({ set_tweak: "highlight" });
  assert.deepEqual(getRule(r, "underride", ".m.rule.message").actions, ["notify"]);
});

test("parseStoredPushRules drops malformed entries instead of failing", () => {
  assert.deepEqual(parseStoredPushRules(null), emptyPushRules());
  assert.deepEqual(parseStoredPushRules("x"), emptyPushRules());
  const parsed = parseStoredPushRules({
    custom: {
      override: [{ rule_id: "ok", enabled: true, actions: [], conditions: [] }, { rule_id: 5 }, { rule_id: ".m.rule.fake", enabled: true, actions: [] }, { rule_id: "ok", enabled: false, actions: [] }],
      content: [{ rule_id: "nopattern", enabled: true, actions: [] }],
      room: "not a list",
    },
    defaults: { override: { ".m.rule.master": { enabled: true }, ".m.rule.unknown": { enabled: true } }, underride: [] },
  });
  assert.deepEqual(parsed.custom.override, [{ rule_id: "ok", enabled: true, actions: [], conditions: [] }]);
  assert.deepEqual(parsed.custom.content, []);
  assert.deepEqual(parsed.custom.room, []);
  assert.deepEqual(parsed.defaults.override, { ".m.rule.master": { enabled: true } });
});

test("the number of user rules per kind is bounded", () => {
  let s: UserPushRules = emptyPushRules();
  s = { ...s, custom: { ...s.custom, sender: Array.from({ length: 1000 }, (_, i) => ({ rule_id: `@u${i}:x`, enabled: true, actions: [] })) } };
  rejects(() => putRule(s, "sender", "@one-more:x", { actions: [] }), "M_INVALID_PARAM", /Too many/);
  // Replacing an existing rule is still allowed at the limit.
  assert.equal(putRule(s, "sender", "@u5:x", { actions: ["notify"] }).custom.sender.length, 1000);
});
