import { test } from "node:test";
import assert from "node:assert/strict";
import { buildRuleset, emptyPushRules } from "./ruleset.js";
import { evaluatePushRules, type ClientEventLike } from "./evaluate.js";
import { evaluateForRecipients, localpartNeedle, type PushRecipient, type RoomFacts } from "./evaluate-many.js";

const SENDER = "@sender:example.org";
const ROOM = "!room:example.org";

function recipient(localpart: string, displayName?: string, change?: (r: ReturnType<typeof emptyPushRules>) => void): PushRecipient {
  const userId = `@${localpart}:example.org`;
  const stored = emptyPushRules();
  change?.(stored);
  return { userId, localpart, localpartNeedle: localpartNeedle(localpart), ...(displayName !== undefined ? { displayName } : {}), ruleset: buildRuleset(userId, localpart, stored), defaultsOnly: change === undefined };
}

const recipients: PushRecipient[] = [
  recipient("anna", "Anna Berger"),
  recipient("bernd", "Bernd"),
  recipient("carla"),
  recipient("dieter", "Streife 12"),
  recipient("eva", ""),
  recipient("fritz", "Fritz", (s) => {
    s.custom.content.push({ rule_id: "keyword", enabled: true, pattern: "einsatz", actions: ["notify", { set_tweak: "highlight" }] });
  }),
  recipient("gabi", "Gabi", (s) => {
    s.defaults.underride[".m.rule.message"] = { enabled: false };
  }),
  recipient("heinz", "Heinz", (s) => {
    s.custom.room.push({ rule_id: ROOM, enabled: true, actions: [] });
  }),
  // Glob syntax in a historical localpart: always evaluated on its own.
  recipient("ida*", "Ida"),
  ...Array.from({ length: 20 }, (_, i) => recipient(`officer${i}`, `Officer ${i}`)),
];

const message = (content: Record<string, unknown>, extra: Partial<ClientEventLike> = {}): ClientEventLike => ({
  type: "m.room.message",
  sender: SENDER,
  room_id: ROOM,
  event_id: "$e",
  content: { msgtype: "m.text", ...content },
  ...extra,
});

const events: Array<[string, ClientEventLike]> = [
  ["plain text", message({ body: "Lage ruhig" })],
  ["a notice", message({ body: "Schichtwechsel", msgtype: "m.notice" })],
  ["a localpart in the body", message({ body: "anna bitte melden" })],
  ["a display name in the body, other case", message({ body: "STREIFE 12 zur Wache" })],
  ["a display name inside a word", message({ body: "Bernds Auto" })],
  ["a keyword rule", message({ body: "Einsatz in der Altstadt" })],
  ["a mention", message({ body: "Carla?", "m.mentions": { user_ids: ["@carla:example.org"] } })],
  ["a mention of someone else with a name in the body", message({ body: "Anna, Bernd", "m.mentions": { user_ids: ["@officer3:example.org"] } })],
  ["a room mention", message({ body: "@room Alarm", "m.mentions": { room: true } })],
  ["@room without m.mentions", message({ body: "@room Alarm" })],
  ["an edit", message({ body: "* korrigiert", "m.relates_to": { rel_type: "m.replace", event_id: "$x" } })],
  ["an encrypted event", { type: "m.room.encrypted", sender: SENDER, room_id: ROOM, event_id: "$e", content: { algorithm: "m.megolm.v1.aes-sha2", ciphertext: "…" } }],
  ["a reaction", { type: "m.reaction", sender: SENDER, room_id: ROOM, event_id: "$e", content: { "m.relates_to": { rel_type: "m.annotation", event_id: "$x", key: "👍" } } }],
  ["an invite", { type: "m.room.member", sender: SENDER, room_id: ROOM, event_id: "$e", state_key: "@carla:example.org", content: { membership: "invite" } }],
  ["a tombstone", { type: "m.room.tombstone", sender: SENDER, room_id: ROOM, event_id: "$e", state_key: "", content: { body: "closed", replacement_room: "!new:example.org" } }],
  ["a non-string body", message({ body: 42 })],
  ["the sender's own name", message({ body: "sender here" })],
];

const rooms: RoomFacts[] = [
  { roomMemberCount: 30, senderPowerLevel: 0, notificationPowerLevels: {} },
  { roomMemberCount: 2, senderPowerLevel: 100, notificationPowerLevels: { room: 50 } },
];

test("evaluated together, every recipient gets what evaluating their rules alone gives", () => {
  let differing = 0;
  for (const room of rooms) {
    for (const [what, event] of events) {
      const together = evaluateForRecipients(recipients, event, room);
      const alone = recipients.map((r) => evaluatePushRules(r.ruleset, { ...event }, { ...room, userId: r.userId, ...(r.displayName !== undefined ? { displayName: r.displayName } : {}) }));
      assert.deepEqual(together, alone, `${what} (${room.roomMemberCount} members)`);
      if (new Set(alone.map((m) => JSON.stringify(m))).size > 1) differing++;
    }
  }
  // The cases must tell recipients apart, or the comparison above would prove little.
  assert.ok(differing >= 10, `only ${differing} cases treat recipients differently`);
});

test("recipients with default rules that the event does not name share one evaluation", () => {
  const event = message({ body: "Lage ruhig" });
  const together = evaluateForRecipients(recipients, event, rooms[0]!);
  const officers = recipients.map((r, i) => (r.localpart.startsWith("officer") ? together[i] : undefined)).filter((m) => m !== undefined);
  assert.equal(officers.length, 20);
  assert.ok(officers.every((m) => m === officers[0]), "one result object, evaluated once");
  assert.equal(officers[0]?.ruleId, ".m.rule.message");
});

test("the rules of recipients the event does not single out are read once, not once each", () => {
  // The server builds a member's full ruleset only when it is read (push-service.ts): here, for
  // those singled out and for one of the others, never for the rest.
  const reads = new Map<string, number>();
  const counted = recipients.map((r) => ({
    userId: r.userId,
    localpart: r.localpart,
    localpartNeedle: r.localpartNeedle,
    ...(r.displayName !== undefined ? { displayName: r.displayName } : {}),
    defaultsOnly: r.defaultsOnly,
    get ruleset() {
      reads.set(r.userId, (reads.get(r.userId) ?? 0) + 1);
      return r.ruleset;
    },
  }));
  evaluateForRecipients(counted, message({ body: "Lage ruhig, Anna übernimmt" }), rooms[0]!);
  // Anna is named in the body, Fritz, Gabi and Heinz have rules of their own, Ida's localpart is a glob.
  const own = ["anna", "fritz", "gabi", "heinz", "ida*"].map((who) => `@${who}:example.org`);
  for (const who of own) assert.equal(reads.get(who), 1, who);
  const shared = [...reads].filter(([u]) => !own.includes(u));
  assert.deepEqual(
    shared.map(([, n]) => n),
    [1],
    `of the other ${recipients.length - own.length}, one recipient's rules are read once: ${shared.map(([u]) => u).join(", ")}`,
  );
});

test("a localpart's needle is the lower-cased localpart, or none when it holds glob syntax", () => {
  assert.equal(localpartNeedle("Streife.12"), "streife.12");
  for (const glob of ["ida*", "a?b", "x[y]"]) assert.equal(localpartNeedle(glob), null);
});
