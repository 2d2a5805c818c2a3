import { test } from "node:test";
import assert from "node:assert/strict";
import { createsChannel, mayCreateChannels, requiredLevel } from "./channels.js";
import { defaultPolicy } from "./policy.js";

test("a creation request makes a channel when it is published or ends with the public join rule", () => {
  assert.equal(createsChannel({}), false);
  assert.equal(createsChannel({ preset: "private_chat" }), false);
  assert.equal(createsChannel({ preset: "trusted_private_chat", is_direct: true }), false);
  assert.equal(createsChannel({ preset: "public_chat" }), true);
  assert.equal(createsChannel({ visibility: "public" }), true, "the preset defaults to public_chat, and it is listed");
  assert.equal(createsChannel({ visibility: "public", preset: "private_chat" }), true, "listed in the directory");
  assert.equal(createsChannel({ preset: "private_chat", initial_state: [{ type: "m.room.join_rules", content: { join_rule: "public" } }] }), true);
  assert.equal(createsChannel({ preset: "public_chat", initial_state: [{ type: "m.room.join_rules", content: { join_rule: "invite" } }] }), false);
  // The last entry wins, as room creation applies them in order; other state keys do not count.
  assert.equal(createsChannel({ initial_state: [{ type: "m.room.join_rules", content: { join_rule: "public" } }, { type: "m.room.join_rules", content: { join_rule: "knock" } }] }), false);
  assert.equal(createsChannel({ initial_state: [{ type: "m.room.join_rules", state_key: "x", content: { join_rule: "public" } }] }), false);
});

test("channel creators: everyone, or the listed roles only", () => {
  const policy = defaultPolicy();
  assert.equal(mayCreateChannels(policy, "user"), true);
  const restricted = { ...policy, channel_creators: ["admin", "helpdesk"] as ("admin" | "helpdesk")[] };
  assert.equal(mayCreateChannels(restricted, "admin"), true);
  assert.equal(mayCreateChannels(restricted, "helpdesk"), true);
  assert.equal(mayCreateChannels(restricted, "user"), false);
  assert.equal(mayCreateChannels(restricted, "dpo"), false);
});

test("required levels follow events, then events_default or state_default", () => {
  const pl = { events: { "m.room.name": 50 }, events_default: 50, state_default: 75 };
  assert.equal(requiredLevel(pl, "m.room.name", true), 50);
  assert.equal(requiredLevel(pl, "m.room.message", false), 50);
  assert.equal(requiredLevel(pl, "m.room.retention", true), 75);
  assert.equal(requiredLevel({}, "m.room.message", false), 0);
  assert.equal(requiredLevel({}, "m.room.topic", true), 50);
});
