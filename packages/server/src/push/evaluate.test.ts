import { test } from "node:test";
import assert from "node:assert/strict";
import { defaultRules, type Ruleset } from "./default-rules.js";
import { conditionMatches, evaluatePushRules, lookupPath, memberCountMatches, splitDottedPath, summariseActions, type ClientEventLike, type PushContext } from "./evaluate.js";

const ME = "@alice:example.org";
const BOB = "@bob:example.org";
const ROOM = "!room:example.org";

function ctx(over: Partial<PushContext> = {}): PushContext {
  return { userId: ME, displayName: "Alice Liddell", roomMemberCount: 5, senderPowerLevel: 0, notificationPowerLevels: {}, ...over };
}

function message(content: Record<string, unknown>, extra: Partial<ClientEventLike> = {}): ClientEventLike {
  return { type: "m.room.message", sender: BOB, room_id: ROOM, event_id: "$e", content: { msgtype: "m.text", ...content }, ...extra };
}

function run(event: ClientEventLike, c: PushContext = ctx(), rules: Ruleset = defaultRules(ME, "alice")) {
  const match = evaluatePushRules(rules, event, c);
  return { ruleId: match?.ruleId, summary: summariseActions(match?.actions ?? []) };
}

test("a message in a one-to-one room notifies with the default sound", () => {
  const r = run(message({ body: "hi" }), ctx({ roomMemberCount: 2 }));
  assert.equal(r.ruleId, ".m.rule.room_one_to_one");
  assert.deepEqual(r.summary, { notify: true, highlight: false, sound: "default" });
});

test("a message in a group room notifies silently", () => {
  const r = run(message({ body: "hi" }));
  assert.equal(r.ruleId, ".m.rule.message");
  assert.deepEqual(r.summary, { notify: true, highlight: false });
});

test("encrypted events: one-to-one with sound, group rooms without", () => {
  const enc = { type: "m.room.encrypted", sender: BOB, room_id: ROOM, content: { algorithm: "m.megolm.v1.aes-sha2", ciphertext: "x" } };
  assert.equal(run(enc, ctx({ roomMemberCount: 2 })).ruleId, ".m.rule.encrypted_room_one_to_one");
  assert.equal(run(enc).ruleId, ".m.rule.encrypted");
  assert.deepEqual(run(enc).summary, { notify: true, highlight: false });
});

test("m.mentions.user_ids containing the user highlights", () => {
  const r = run(message({ body: "look", "m.mentions": { user_ids: [BOB, ME] } }));
  assert.equal(r.ruleId, ".m.rule.is_user_mention");
  assert.deepEqual(r.summary, { notify: true, highlight: true, sound: "default" });
  // Only an exact element matches.
  assert.equal(run(message({ body: "look", "m.mentions": { user_ids: [`${ME}x`] } })).ruleId, ".m.rule.message");
});

test("an @room mention highlights only when the sender has the notification power", () => {
  const ev = message({ body: "everyone!", "m.mentions": { room: true } });
  const powerful = run(ev, ctx({ senderPowerLevel: 50 }));
  assert.equal(powerful.ruleId, ".m.rule.is_room_mention");
  assert.deepEqual(powerful.summary, { notify: true, highlight: true });
  assert.equal(run(ev, ctx({ senderPowerLevel: 49 })).ruleId, ".m.rule.message");
  // The room's power levels can lower or raise the requirement.
  assert.equal(run(ev, ctx({ senderPowerLevel: 10, notificationPowerLevels: { room: 10 } })).ruleId, ".m.rule.is_room_mention");
  assert.equal(run(ev, ctx({ senderPowerLevel: 50, notificationPowerLevels: { room: 100 } })).ruleId, ".m.rule.message");
  // `room: "true"` is a string, not the boolean the rule asks for.
  assert.equal(run(message({ body: "x", "m.mentions": { room: "true" } }), ctx({ senderPowerLevel: 100 })).ruleId, ".m.rule.message");
});

test("legacy @room in the body applies only without m.mentions", () => {
  assert.equal(run(message({ body: "hey @room" }), ctx({ senderPowerLevel: 50 })).ruleId, ".m.rule.roomnotif");
  assert.equal(run(message({ body: "hey @room" }), ctx({ senderPowerLevel: 0 })).ruleId, ".m.rule.message");
  assert.equal(run(message({ body: "hey @room", "m.mentions": {} }), ctx({ senderPowerLevel: 50 })).ruleId, ".m.rule.message");
});

test("legacy display-name and user-name mentions apply only without m.mentions", () => {
  const byName = run(message({ body: "thanks alice liddell!" }));
  assert.equal(byName.ruleId, ".m.rule.contains_display_name");
  assert.deepEqual(byName.summary, { notify: true, highlight: true, sound: "default" });
  assert.equal(run(message({ body: "thanks alice liddell!", "m.mentions": {} })).ruleId, ".m.rule.message");
  const byLocalpart = run(message({ body: "ALICE: ping" }), ctx({ displayName: "Someone Else" }));
  assert.equal(byLocalpart.ruleId, ".m.rule.contains_user_name");
  assert.equal(byLocalpart.summary.highlight, true);
  assert.equal(run(message({ body: "alice: ping", "m.mentions": { user_ids: [] } }), ctx({ displayName: "X" })).ruleId, ".m.rule.message");
  // Word boundaries: "malice" does not mention alice.
  assert.equal(run(message({ body: "with malice" }), ctx({ displayName: "X" })).ruleId, ".m.rule.message");
});

test("notices are suppressed", () => {
  const r = run(message({ msgtype: "m.notice", body: "bot says alice" }), ctx({ roomMemberCount: 2 }));
  assert.equal(r.ruleId, ".m.rule.suppress_notices");
  assert.deepEqual(r.summary, { notify: false, highlight: false });
});

test("edits (m.replace) do not notify", () => {
  const ev = message({ body: "* fixed", "m.new_content": { body: "fixed" }, "m.relates_to": { rel_type: "m.replace", event_id: "$orig" } });
  const r = run(ev, ctx({ roomMemberCount: 2 }));
  assert.equal(r.ruleId, ".m.rule.suppress_edits");
  assert.equal(r.summary.notify, false);
  // Other relations still notify.
  const thread = message({ body: "reply", "m.relates_to": { rel_type: "m.thread", event_id: "$root" } });
  assert.equal(run(thread).ruleId, ".m.rule.message");
});

test("invites for the user notify; other membership events do not", () => {
  const invite = { type: "m.room.member", sender: BOB, room_id: ROOM, state_key: ME, content: { membership: "invite" } };
  const r = run(invite);
  assert.equal(r.ruleId, ".m.rule.invite_for_me");
  assert.deepEqual(r.summary, { notify: true, highlight: false, sound: "default" });
  const other = { ...invite, state_key: "@carol:example.org" };
  assert.equal(run(other).ruleId, ".m.rule.member_event");
  assert.equal(run(other).summary.notify, false);
});

test("tombstones highlight, reactions and server ACL changes are silent, calls ring", () => {
  const tomb = { type: "m.room.tombstone", sender: BOB, room_id: ROOM, state_key: "", content: { body: "moved", replacement_room: "!new:x" } };
  assert.deepEqual(run(tomb).summary, { notify: true, highlight: true });
  // Without an empty state key it is not a state event and the rule does not apply.
  assert.equal(run({ ...tomb, state_key: undefined }).ruleId, undefined);
  assert.equal(run({ type: "m.reaction", sender: BOB, room_id: ROOM, content: { "m.relates_to": { rel_type: "m.annotation", key: "👍", event_id: "$x" } } }).ruleId, ".m.rule.reaction");
  assert.equal(run({ type: "m.room.server_acl", sender: BOB, room_id: ROOM, state_key: "", content: { allow: ["*"] } }).ruleId, ".m.rule.room.server_acl");
  const call = run({ type: "m.call.invite", sender: BOB, room_id: ROOM, content: { call_id: "c" } });
  assert.deepEqual(call.summary, { notify: true, highlight: false, sound: "ring" });
});

test("unmatched events and the user's own events yield null", () => {
  assert.equal(evaluatePushRules(defaultRules(ME, "alice"), { type: "m.room.topic", sender: BOB, room_id: ROOM, state_key: "", content: { topic: "t" } }, ctx()), null);
  assert.equal(evaluatePushRules(defaultRules(ME, "alice"), message({ body: "mine" }, { sender: ME }), ctx({ roomMemberCount: 2 })), null);
});

test("the master rule, once enabled, silences everything", () => {
  const rules = defaultRules(ME, "alice");
  rules.override[0]!.enabled = true;
  const r = run(message({ body: "hi", "m.mentions": { user_ids: [ME] } }), ctx(), rules);
  assert.equal(r.ruleId, ".m.rule.master");
  assert.equal(r.summary.notify, false);
});

test("kinds are checked in priority order: override, content, room, sender, underride", () => {
  const rules = defaultRules(ME, "alice");
  rules.room.push({ rule_id: ROOM, default: false, enabled: true, actions: [] });
  rules.sender.push({ rule_id: BOB, default: false, enabled: true, actions: ["notify", { set_tweak: "sound", value: "bob.wav" }] });
  rules.content.unshift({ rule_id: "cake", default: false, enabled: true, pattern: "cake*lie", actions: ["notify", { set_tweak: "highlight", value: true }] });
  assert.equal(run(message({ body: "the cake is a lie!" }), ctx(), rules).ruleId, "cake");
  assert.equal(run(message({ body: "hello" }), ctx(), rules).ruleId, ROOM);
  assert.equal(run(message({ body: "hello" }, { room_id: "!other:x" }), ctx(), rules).ruleId, BOB);
  assert.equal(run(message({ body: "hello" }, { room_id: "!other:x", sender: "@carol:x" }), ctx(), rules).ruleId, ".m.rule.message");
  // A disabled rule is skipped.
  rules.room[0]!.enabled = false;
  assert.equal(run(message({ body: "hello" }), ctx(), rules).ruleId, BOB);
});

test("returned actions drop the historical dont_notify and coalesce", () => {
  const rules: Ruleset = { override: [{ rule_id: "x", default: false, enabled: true, conditions: [], actions: ["dont_notify", "coalesce"] }], content: [], room: [], sender: [], underride: [] };
  const match = evaluatePushRules(rules, message({ body: "x" }), ctx());
  assert.deepEqual(match, { ruleId: "x", kind: "override", actions: [] });
});

test("event_match: whole value, case-insensitive, strings only, content.body by words", () => {
  const ev = message({ body: "An example event.", msgtype: "m.text", count: 3, topic: "Lunch plans" });
  const m = (key: string, pattern: string): boolean => conditionMatches({ kind: "event_match", key, pattern }, ev, ctx());
  assert.equal(m("content.topic", "lunc?*"), true);
  assert.equal(m("content.topic", "lunch"), false);
  assert.equal(m("content.body", "ex*ple"), true);
  assert.equal(m("content.body", "event"), true);
  assert.equal(m("content.body", "even"), false);
  assert.equal(m("type", "M.ROOM.MESSAGE"), true);
  assert.equal(m("content.count", "*"), false);
  assert.equal(m("content.missing", "*"), false);
  assert.equal(m("content", "*"), false);
  assert.equal(m("room_id", "!room:*"), true);
  assert.equal(conditionMatches({ kind: "event_match", key: "type" }, ev, ctx()), false);
});

test("dotted keys honour \\. and \\\\ escapes", () => {
  assert.deepEqual(splitDottedPath("content.m\\.relates_to.rel_type"), ["content", "m.relates_to", "rel_type"]);
  assert.deepEqual(splitDottedPath("a\\\\.b"), ["a\\", "b"]);
  assert.deepEqual(splitDottedPath("a\\\\\\.b"), ["a\\.b"]);
  assert.deepEqual(splitDottedPath("a\\xb"), ["a\\xb"]);
  assert.deepEqual(splitDottedPath("trailing\\"), ["trailing\\"]);
  const ev = message({ "m.relates_to": { rel_type: "m.replace" }, m: { relates_to: { rel_type: "nested" } }, "back\\slash": "yes" });
  assert.deepEqual(lookupPath(ev, "content.m\\.relates_to.rel_type"), { found: true, value: "m.replace" });
  assert.deepEqual(lookupPath(ev, "content.m.relates_to.rel_type"), { found: true, value: "nested" });
  assert.deepEqual(lookupPath(ev, "content.back\\\\slash"), { found: true, value: "yes" });
  assert.deepEqual(lookupPath(ev, "content.constructor"), { found: false });
  assert.deepEqual(lookupPath(ev, "content.__proto__"), { found: false });
  const isEdit = { kind: "event_property_is", key: "content.m\\.relates_to.rel_type", value: "m.replace" };
  assert.equal(conditionMatches(isEdit, ev, ctx()), true);
  assert.equal(conditionMatches({ ...isEdit, key: "content.m.relates_to.rel_type" }, ev, ctx()), false);
});

test("event_property_is compares exactly and without casting (spec m.federate examples)", () => {
  const create = (federate: unknown): ClientEventLike => ({ type: "m.room.create", sender: BOB, state_key: "", content: { "m.federate": federate } });
  const cond = { kind: "event_property_is", key: "content.m\\.federate", value: true };
  assert.equal(conditionMatches(cond, create(true), ctx()), true);
  assert.equal(conditionMatches(cond, create("true"), ctx()), false);
  assert.equal(conditionMatches(cond, create(1), ctx()), false);
  assert.equal(conditionMatches({ ...cond, value: null }, create(null), ctx()), true);
  assert.equal(conditionMatches({ ...cond, value: null }, { type: "m.room.create", sender: BOB, content: {} }, ctx()), false);
  assert.equal(conditionMatches({ ...cond, value: 3 }, create(3), ctx()), true);
  assert.equal(conditionMatches({ ...cond, value: 1.5 }, create(1.5), ctx()), false);
});

test("event_property_contains matches exact array elements (spec alt_aliases example)", () => {
  const ev: ClientEventLike = { type: "m.room.canonical_alias", sender: BOB, state_key: "", content: { alias: "#somewhere:localhost", alt_aliases: ["#somewhere:example.org", "#myroom:example.com", { x: 1 }] } };
  const cond = (value: string | number | boolean | null, key = "content.alt_aliases") => conditionMatches({ kind: "event_property_contains", key, value }, ev, ctx());
  assert.equal(cond("#myroom:example.com"), true);
  assert.equal(cond(":example.com"), false);
  assert.equal(cond("#somewhere:localhost", "content.alias"), false);
});

test("room_member_count accepts ==, <, >, <=, >= and a bare number", () => {
  assert.equal(memberCountMatches("2", 2), true);
  assert.equal(memberCountMatches("2", 3), false);
  assert.equal(memberCountMatches("==2", 2), true);
  assert.equal(memberCountMatches("<10", 9), true);
  assert.equal(memberCountMatches("<10", 10), false);
  assert.equal(memberCountMatches("<=10", 10), true);
  assert.equal(memberCountMatches(">10", 11), true);
  assert.equal(memberCountMatches(">10", 10), false);
  assert.equal(memberCountMatches(">=10", 10), true);
  for (const bad of ["", "=2", "=>2", "2.5", " 2", "abc", "-1", "<"]) assert.equal(memberCountMatches(bad, 2), false, bad);
});

test("contains_display_name needs a non-empty name at word boundaries", () => {
  const cond = { kind: "contains_display_name" };
  assert.equal(conditionMatches(cond, message({ body: "hi Alice Liddell." }), ctx()), true);
  assert.equal(conditionMatches(cond, message({ body: "hi Alice Liddellx" }), ctx()), false);
  assert.equal(conditionMatches(cond, message({ body: "anything" }), ctx({ displayName: "" })), false);
  assert.equal(conditionMatches(cond, message({ body: "anything" }), ctx({ displayName: undefined })), false);
  assert.equal(conditionMatches(cond, message({ body: 42 }), ctx()), false);
});

test("sender_notification_permission defaults to 50 for keys the room does not list", () => {
  const cond = { kind: "sender_notification_permission", key: "room" };
  const ev = message({ body: "x" });
  assert.equal(conditionMatches(cond, ev, ctx({ senderPowerLevel: 50 })), true);
  assert.equal(conditionMatches(cond, ev, ctx({ senderPowerLevel: 49 })), false);
  assert.equal(conditionMatches({ ...cond, key: "custom" }, ev, ctx({ senderPowerLevel: 60, notificationPowerLevels: { custom: 75 } })), false);
  assert.equal(conditionMatches({ kind: "sender_notification_permission" }, ev, ctx({ senderPowerLevel: 100 })), false);
});

test("unknown condition kinds make the rule never match", () => {
  const rules: Ruleset = { override: [{ rule_id: "future", default: false, enabled: true, conditions: [{ kind: "org.example.future", foo: 1 }], actions: ["notify"] }], content: [], room: [], sender: [], underride: [] };
  assert.equal(evaluatePushRules(rules, message({ body: "x" }), ctx()), null);
});

test("summariseActions reads notify, highlight and sound", () => {
  assert.deepEqual(summariseActions([]), { notify: false, highlight: false });
  assert.deepEqual(summariseActions(["notify"]), { notify: true, highlight: false });
  assert.deepEqual(summariseActions(["notify", { set_tweak: "highlight" }]), { notify: true, highlight: true });
  assert.deepEqual(summariseActions(["notify", { set_tweak: "highlight", value: false }]), { notify: true, highlight: false });
  assert.deepEqual(summariseActions(["notify", { set_tweak: "sound", value: "ping" }, { set_tweak: "highlight", value: true }]), { notify: true, highlight: true, sound: "ping" });
  // Without notify nothing is delivered, so neither highlight nor sound count.
  assert.deepEqual(summariseActions([{ set_tweak: "highlight" }, { set_tweak: "sound", value: "x" }]), { notify: false, highlight: false });
  assert.deepEqual(summariseActions(["dont_notify"]), { notify: false, highlight: false });
});
