import { test } from "node:test";
import assert from "node:assert/strict";
import {
  authEventTypesFor,
  checkAuthEventsSelection,
  checkEventAuth,
  mayApplyRedaction,
  mayRedact,
  namedPowerLevel,
  powerLevelOf,
  requiredPowerLevel,
  roomCreatorOf,
  stateKeyOf,
  type AuthCheckEvent,
  type AuthEvent,
  type AuthOptions,
  type AuthState,
} from "./auth-rules.js";
import { signJson } from "./event-crypto.js";
import { ROOM_VERSIONS, type RoomVersion } from "./room-versions.js";
import { generateSigningKey } from "./signing-key.js";

const V10 = ROOM_VERSIONS["10"] as RoomVersion;
const V11 = ROOM_VERSIONS["11"] as RoomVersion;
const ROOM = "!room:x";
const ALICE = "@alice:x"; // creator, 100
const MOD = "@mod:x"; // 50
const BOB = "@bob:x"; // 0
const CAROL = "@carol:x"; // not in the room
const REMOTE = "@rita:y";

let counter = 0;
function stateEv(type: string, stateKey: string, sender: string, content: Record<string, unknown>): AuthEvent {
  return { event_id: `$${type}-${stateKey}-${++counter}`, type, state_key: stateKey, sender, content };
}

function createEvent(rv: RoomVersion, extra: Record<string, unknown> = {}): AuthEvent {
  return { ...stateEv("m.room.create", "", ALICE, { room_version: rv.id, ...(rv.implicitRoomCreator ? {} : { creator: ALICE }), ...extra }), event_id: "$create" };
}

interface RoomSetup {
  rv?: RoomVersion;
  joinRule?: string | null;
  members?: Record<string, string>;
  pl?: Record<string, unknown> | null;
  createExtra?: Record<string, unknown>;
  extra?: AuthEvent[];
}

const DEFAULT_PL = { users: { [ALICE]: 100, [MOD]: 50 }, users_default: 0, events: { "m.room.name": 50, "m.room.power_levels": 100 }, events_default: 0, state_default: 50, ban: 50, kick: 50, redact: 50, invite: 0 };

function room(setup: RoomSetup = {}): AuthState {
  const rv = setup.rv ?? V10;
  const events: AuthEvent[] = [createEvent(rv, setup.createExtra)];
  const members = setup.members ?? { [ALICE]: "join", [MOD]: "join", [BOB]: "join" };
  for (const [user, membership] of Object.entries(members)) events.push(stateEv("m.room.member", user, user, { membership }));
  if (setup.pl !== null) events.push(stateEv("m.room.power_levels", "", ALICE, setup.pl ?? DEFAULT_PL));
  if (setup.joinRule !== null) events.push(stateEv("m.room.join_rules", "", ALICE, { join_rule: setup.joinRule ?? "invite" }));
  for (const e of setup.extra ?? []) events.push(e);
  return new Map(events.map((e) => [stateKeyOf(e.type, e.state_key ?? ""), e]));
}

function event(type: string, sender: string, content: Record<string, unknown>, stateKey?: string, prevEvents: string[] = ["$latest"]): AuthCheckEvent {
  return { room_id: ROOM, sender, type, ...(stateKey !== undefined ? { state_key: stateKey } : {}), content, prev_events: prevEvents };
}

function member(sender: string, target: string, membership: string, extra: Record<string, unknown> = {}): AuthCheckEvent {
  return event("m.room.member", sender, { membership, ...extra }, target);
}

function allowed(ev: AuthCheckEvent, state: AuthState, rv: RoomVersion = V10, opts?: AuthOptions): void {
  const r = checkEventAuth(ev, state, rv, opts);
  assert.deepEqual(r, { ok: true }, `expected ${ev.type} by ${ev.sender} to be allowed`);
}

function refused(ev: AuthCheckEvent, state: AuthState, pattern: RegExp, rv: RoomVersion = V10, opts?: AuthOptions): void {
  const r = checkEventAuth(ev, state, rv, opts);
  assert.equal(r.ok, false, `expected ${ev.type} by ${ev.sender} to be refused`);
  if (!r.ok) assert.match(r.reason, pattern);
}

// --- auth events selection -------------------------------------------------------------------

test("authEventTypesFor selects create, power levels and the sender's membership", () => {
  assert.deepEqual(authEventTypesFor({ type: "m.room.message", sender: BOB, content: {} }), [
    ["m.room.create", ""],
    ["m.room.power_levels", ""],
    ["m.room.member", BOB],
  ]);
  assert.deepEqual(authEventTypesFor({ type: "m.room.create", state_key: "", sender: ALICE, content: {} }), []);
});

test("authEventTypesFor adds what membership changes need", () => {
  assert.deepEqual(authEventTypesFor({ type: "m.room.member", state_key: BOB, sender: BOB, content: { membership: "join" } }), [
    ["m.room.create", ""],
    ["m.room.power_levels", ""],
    ["m.room.member", BOB],
    ["m.room.join_rules", ""],
  ]);
  assert.deepEqual(authEventTypesFor({ type: "m.room.member", state_key: BOB, sender: MOD, content: { membership: "ban" } }), [
    ["m.room.create", ""],
    ["m.room.power_levels", ""],
    ["m.room.member", MOD],
    ["m.room.member", BOB],
  ]);
  assert.deepEqual(authEventTypesFor({ type: "m.room.member", state_key: CAROL, sender: CAROL, content: { membership: "knock" } }).at(-1), ["m.room.join_rules", ""]);
  const tpi = authEventTypesFor({ type: "m.room.member", state_key: CAROL, sender: ALICE, content: { membership: "invite", third_party_invite: { signed: { token: "tok", mxid: CAROL } } } });
  assert.deepEqual(tpi.slice(3), [
    ["m.room.member", CAROL],
    ["m.room.join_rules", ""],
    ["m.room.third_party_invite", "tok"],
  ]);
  const restricted = authEventTypesFor({ type: "m.room.member", state_key: CAROL, sender: CAROL, content: { membership: "join", join_authorised_via_users_server: MOD } });
  assert.deepEqual(restricted.at(-1), ["m.room.member", MOD]);
});

test("checkAuthEventsSelection refuses duplicates, strays and a missing create event", () => {
  const ev = event("m.room.message", BOB, { body: "x" });
  const create = createEvent(V10);
  const pl = stateEv("m.room.power_levels", "", ALICE, DEFAULT_PL);
  const bob = stateEv("m.room.member", BOB, BOB, { membership: "join" });
  assert.deepEqual(checkAuthEventsSelection(ev, [create, pl, bob]), { ok: true });
  assert.equal(checkAuthEventsSelection(ev, [create, pl, pl]).ok, false);
  assert.equal(checkAuthEventsSelection(ev, [create, bob, stateEv("m.room.topic", "", ALICE, {})]).ok, false);
  assert.equal(checkAuthEventsSelection(ev, [pl, bob]).ok, false);
  assert.equal(checkAuthEventsSelection(event("m.room.create", ALICE, { creator: ALICE }, ""), [create]).ok, false);
});

// --- m.room.create ---------------------------------------------------------------------------

test("m.room.create: allowed as the first event with a matching server name", () => {
  allowed(event("m.room.create", ALICE, { creator: ALICE, room_version: "10" }, "", []), new Map(), V10);
  allowed(event("m.room.create", ALICE, { room_version: "11" }, "", []), new Map(), V11);
});

test("m.room.create: refused with prev events, a foreign room id, or a bad version", () => {
  refused(event("m.room.create", ALICE, { creator: ALICE, room_version: "10" }, "", ["$x"]), new Map(), /prev_events/);
  refused({ ...event("m.room.create", REMOTE, { creator: REMOTE, room_version: "10" }, "", []) }, new Map(), /server name/);
  refused({ ...event("m.room.create", ALICE, { creator: ALICE, room_version: "10" }, "", []), room_id: "!room:y" }, new Map(), /server name/);
  refused(event("m.room.create", ALICE, { creator: ALICE, room_version: "99" }, "", []), new Map(), /unsupported room version/);
  refused(event("m.room.create", ALICE, { creator: ALICE, room_version: 10 }, "", []), new Map(), /unsupported room version/);
  refused(event("m.room.create", ALICE, { creator: ALICE, room_version: "11" }, "", []), new Map(), /checked as version 10/, V10);
  refused(event("m.room.create", ALICE, { creator: ALICE, room_version: "10" }, "x", []), new Map(), /empty state key/);
});

test("m.room.create: v10 requires content.creator, v11 does not", () => {
  refused(event("m.room.create", ALICE, { room_version: "10" }, "", []), new Map(), /no creator/, V10);
  allowed(event("m.room.create", ALICE, { room_version: "11" }, "", []), new Map(), V11);
});

test("events need a create event in their auth state", () => {
  const state = room();
  state.delete(stateKeyOf("m.room.create", ""));
  refused(event("m.room.message", BOB, { body: "hi" }), state, /no m.room.create/);
});

test("m.federate false keeps other servers' users out", () => {
  const state = room({ joinRule: "public", createExtra: { "m.federate": false } });
  refused(member(REMOTE, REMOTE, "join"), state, /m.federate/);
  allowed(member(CAROL, CAROL, "join"), state);
});

// --- joins -----------------------------------------------------------------------------------

test("the creator may join right after the create event (v10: content.creator, v11: sender)", () => {
  for (const rv of [V10, V11]) {
    const state = room({ rv, members: {}, pl: null, joinRule: null });
    allowed({ ...member(ALICE, ALICE, "join"), prev_events: ["$create"] }, state, rv);
    refused({ ...member(CAROL, CAROL, "join"), prev_events: ["$create"] }, state, /join rule/, rv);
    // Later on, the creator is subject to the join rules like anyone else.
    refused({ ...member(ALICE, ALICE, "join"), prev_events: ["$somethingelse"] }, state, /join rule/, rv);
  }
});

test("v11 derives the creator from the create event's sender, ignoring content.creator", () => {
  const state = room({ rv: V11, members: {}, pl: null, joinRule: null, createExtra: { creator: CAROL } });
  assert.equal(roomCreatorOf(state, V11), ALICE);
  assert.equal(powerLevelOf(ALICE, state, V11), 100);
  assert.equal(powerLevelOf(CAROL, state, V11), 0);
  refused({ ...member(CAROL, CAROL, "join"), prev_events: ["$create"] }, state, /join rule/, V11);
});

test("public rooms can be joined, but only on one's own behalf", () => {
  const state = room({ joinRule: "public" });
  allowed(member(CAROL, CAROL, "join"), state);
  allowed(member(BOB, BOB, "join", { displayname: "Bob" }), state, V10);
  refused(member(ALICE, CAROL, "join"), state, /own behalf/);
});

test("invite-only rooms refuse joins without an invite", () => {
  for (const joinRule of ["invite", "knock"]) {
    refused(member(CAROL, CAROL, "join"), room({ joinRule }), /not been invited/);
    allowed(member(CAROL, CAROL, "join"), room({ joinRule, members: { [ALICE]: "join", [CAROL]: "invite" } }));
  }
  // No join rules event at all behaves as invite-only.
  refused(member(CAROL, CAROL, "join"), room({ joinRule: null }), /invite/);
  refused(member(CAROL, CAROL, "join"), room({ joinRule: "private" }), /does not allow/);
});

test("banned users cannot rejoin, even public rooms or with a pending invite", () => {
  refused(member(CAROL, CAROL, "join"), room({ joinRule: "public", members: { [ALICE]: "join", [CAROL]: "ban" } }), /banned/);
});

test("restricted joins need an authorising member with invite power", () => {
  for (const joinRule of ["restricted", "knock_restricted"]) {
    const state = room({ joinRule });
    refused(member(CAROL, CAROL, "join"), state, /authorised via/);
    allowed(member(CAROL, CAROL, "join", { join_authorised_via_users_server: MOD }), state);
    // An invite still works without an authoriser.
    allowed(member(CAROL, CAROL, "join"), room({ joinRule, members: { [ALICE]: "join", [CAROL]: "invite" } }));

    const strictInvite = room({ joinRule, pl: { ...DEFAULT_PL, invite: 50 } });
    refused(member(CAROL, CAROL, "join", { join_authorised_via_users_server: BOB }), strictInvite, /needs power level 50 to invite/);
    allowed(member(CAROL, CAROL, "join", { join_authorised_via_users_server: MOD }), strictInvite);
    // The authoriser has to be in the room.
    refused(member(CAROL, CAROL, "join", { join_authorised_via_users_server: ALICE }), room({ joinRule, members: { [ALICE]: "leave", [BOB]: "join" } }), /not joined/);
    refused(member(CAROL, CAROL, "join", { join_authorised_via_users_server: 42 }), state, /not a user id/);
  }
});

test("restricted joins must be signed by the authorising user's server when signatures are checked", () => {
  const state = room({ joinRule: "restricted" });
  const ev = member(REMOTE, REMOTE, "join", { join_authorised_via_users_server: MOD });
  refused(ev, state, /not signed by x/, V10, { isSignedBy: (s) => s === "y" });
  allowed(ev, state, V10, { isSignedBy: (s) => s === "x" || s === "y" });
});

// --- invites ---------------------------------------------------------------------------------

test("invites need a joined sender with invite power and an invitable target", () => {
  const state = room({ members: { [ALICE]: "join", [MOD]: "join", [BOB]: "join", "@in:x": "join", "@out:x": "ban" } });
  allowed(member(BOB, CAROL, "invite"), state);
  refused(member(CAROL, "@d:x", "invite"), state, /not joined/);
  refused(member(BOB, "@in:x", "invite"), state, /already in the room/);
  refused(member(ALICE, "@out:x", "invite"), state, /banned/);
  const strict = room({ pl: { ...DEFAULT_PL, invite: 50 } });
  refused(member(BOB, CAROL, "invite"), strict, /inviting needs power level 50, @bob:x has 0/);
  allowed(member(MOD, CAROL, "invite"), strict);
});

test("third-party invites are completed only with a signature from the invite's key", () => {
  const idServer = generateSigningKey();
  const tpiEvent = stateEv("m.room.third_party_invite", "tok", MOD, { display_name: "c…", key_validity_url: "https://id.example/isvalid", public_key: "AAAA", public_keys: [{ public_key: idServer.publicKeyBase64 }] });
  const state = room({ extra: [tpiEvent] });
  const signed = signJson({ mxid: CAROL, token: "tok", sender: MOD }, "id.example", idServer);
  const invite = (sender: string, target: string, s: Record<string, unknown>) => member(sender, target, "invite", { third_party_invite: { display_name: "c…", signed: s } });

  allowed(invite(MOD, CAROL, signed), state);
  refused(invite(BOB, CAROL, signed), state, /only the sender of the third-party invite/);
  refused(invite(MOD, "@dave:x", signed), state, /mxid does not match/);
  refused(invite(MOD, CAROL, { ...signed, mxid: CAROL, token: "other" }), state, /no m.room.third_party_invite/);
  refused(invite(MOD, CAROL, { ...signed, extra: 1 }), state, /not signed by any/);
  refused(invite(MOD, CAROL, signJson({ mxid: CAROL, token: "tok" }, "id.example", generateSigningKey())), state, /not signed by any/);
  refused(member(MOD, CAROL, "invite", { third_party_invite: {} }), state, /no signed object/);
  refused(invite(MOD, CAROL, { token: "tok" }), state, /mxid and token/);
  const banned = room({ extra: [tpiEvent], members: { [ALICE]: "join", [MOD]: "join", [CAROL]: "ban" } });
  refused(invite(MOD, CAROL, signed), banned, /banned/);
});

test("m.room.third_party_invite needs the invite level", () => {
  const strict = room({ pl: { ...DEFAULT_PL, invite: 50 } });
  allowed(event("m.room.third_party_invite", MOD, { public_key: "k" }, "tok"), strict);
  refused(event("m.room.third_party_invite", BOB, { public_key: "k" }, "tok"), strict, /third-party invites needs power level 50/);
  refused(event("m.room.third_party_invite", CAROL, { public_key: "k" }, "tok"), strict, /not joined/);
});

// --- leave, kick, ban ------------------------------------------------------------------------

test("a user can leave, reject an invite or withdraw a knock", () => {
  const state = room({ members: { [ALICE]: "join", [BOB]: "join", [CAROL]: "invite", "@k:x": "knock", "@gone:x": "leave", "@out:x": "ban" } });
  allowed(member(BOB, BOB, "leave"), state);
  allowed(member(CAROL, CAROL, "leave"), state);
  allowed(member("@k:x", "@k:x", "leave"), state);
  refused(member("@gone:x", "@gone:x", "leave"), state, /cannot leave/);
  refused(member("@out:x", "@out:x", "leave"), state, /cannot leave: membership is ban/);
  refused(member("@never:x", "@never:x", "leave"), state, /membership is none/);
});

test("kicking needs the kick level and a higher level than the target", () => {
  const state = room({ members: { [ALICE]: "join", [MOD]: "join", [BOB]: "join", "@mod2:x": "join" }, pl: { ...DEFAULT_PL, users: { ...DEFAULT_PL.users, "@mod2:x": 50 } } });
  refused(member(BOB, MOD, "leave"), state, /kicking needs power level 50, @bob:x has 0/);
  allowed(member(MOD, BOB, "leave"), state);
  refused(member(MOD, "@mod2:x", "leave"), state, /not lower/);
  refused(member(MOD, ALICE, "leave"), state, /not lower/);
  allowed(member(ALICE, MOD, "leave"), state);
  refused(member(CAROL, BOB, "leave"), state, /not joined/);
});

test("unbanning needs both the ban and kick levels", () => {
  const members = { [ALICE]: "join", [MOD]: "join", [CAROL]: "ban" };
  allowed(member(MOD, CAROL, "leave"), room({ members }));
  refused(member(MOD, CAROL, "leave"), room({ members, pl: { ...DEFAULT_PL, ban: 75 } }), /unbanning needs power level 75/);
  refused(member(MOD, CAROL, "leave"), room({ members, pl: { ...DEFAULT_PL, kick: 75 } }), /kicking needs power level 75/);
});

test("banning needs the ban level and a higher level than the target", () => {
  const state = room();
  allowed(member(MOD, BOB, "ban"), state);
  allowed(member(MOD, CAROL, "ban"), state, V10);
  refused(member(BOB, CAROL, "ban"), state, /banning needs power level 50/);
  refused(member(MOD, ALICE, "ban"), state, /not lower/);
  refused(member(CAROL, BOB, "ban"), room({ members: { [ALICE]: "join", [BOB]: "join", [CAROL]: "leave" } }), /not joined/);
});

// --- knocking --------------------------------------------------------------------------------

test("knocking is allowed only under the knock join rules", () => {
  for (const joinRule of ["knock", "knock_restricted"]) allowed(member(CAROL, CAROL, "knock"), room({ joinRule }));
  for (const joinRule of ["public", "invite", "restricted"]) refused(member(CAROL, CAROL, "knock"), room({ joinRule }), /does not allow knocking/);
  refused(member(ALICE, CAROL, "knock"), room({ joinRule: "knock" }), /own behalf/);
  for (const membership of ["ban", "invite", "join"]) {
    refused(member(CAROL, CAROL, "knock"), room({ joinRule: "knock", members: { [ALICE]: "join", [CAROL]: membership } }), /cannot knock/);
  }
  allowed(member(CAROL, CAROL, "knock"), room({ joinRule: "knock", members: { [ALICE]: "join", [CAROL]: "leave" } }));
});

test("member events need a state key and a known membership", () => {
  const state = room({ joinRule: "public" });
  refused(event("m.room.member", BOB, { membership: "join" }), state, /state key/);
  refused(event("m.room.member", BOB, {}, BOB), state, /no membership/);
  refused(member(BOB, BOB, "dance"), state, /unknown membership/);
});

// --- sending events --------------------------------------------------------------------------

test("non-members cannot send events", () => {
  const state = room({ joinRule: "public", members: { [ALICE]: "join", [BOB]: "invite", [CAROL]: "leave" } });
  for (const user of [BOB, CAROL, "@stranger:x"]) refused(event("m.room.message", user, { body: "hi" }), state, /is not joined/);
  allowed(event("m.room.message", ALICE, { body: "hi" }), state);
});

test("events need the sender to reach the required power level", () => {
  const state = room();
  allowed(event("m.room.message", BOB, { body: "hi" }), state);
  refused(event("m.room.topic", BOB, { topic: "t" }, ""), state, /sending m.room.topic needs power level 50, @bob:x has 0/);
  allowed(event("m.room.topic", MOD, { topic: "t" }, ""), state);
  refused(event("m.room.name", BOB, { name: "n" }, ""), state, /needs power level 50/);
  refused(event("m.room.power_levels", MOD, DEFAULT_PL, ""), state, /needs power level 100/);
  const lowTopic = room({ pl: { ...DEFAULT_PL, events: { "m.room.topic": 0 } } });
  allowed(event("m.room.topic", BOB, { topic: "t" }, ""), lowTopic);
  const muted = room({ pl: { ...DEFAULT_PL, events_default: 10 } });
  refused(event("m.room.message", BOB, { body: "hi" }), muted, /needs power level 10/);
});

test("state keys starting with @ belong to the user they name", () => {
  const state = room();
  refused(event("org.example.profile", ALICE, {}, BOB), state, /reserved/);
  allowed(event("org.example.profile", ALICE, {}, ALICE), state);
  allowed(event("org.example.profile", ALICE, {}, "not-a-user"), state);
});

// --- power levels ----------------------------------------------------------------------------

test("power levels: nobody can raise anyone above their own level", () => {
  const base = { ...DEFAULT_PL, events: { ...DEFAULT_PL.events, "m.room.power_levels": 50 } };
  const state = room({ pl: base });
  const users = DEFAULT_PL.users;
  const pl = (content: Record<string, unknown>) => event("m.room.power_levels", MOD, { ...base, ...content }, "");
  allowed(pl({}), state);
  refused(pl({ users: { ...users, [MOD]: 100 } }), state, /cannot give @mod:x level 100/);
  refused(pl({ users: { ...users, [BOB]: 51 } }), state, /cannot give @bob:x level 51/);
  allowed(pl({ users: { ...users, [BOB]: 50 } }), state);
  refused(pl({ ban: 60 }), state, /cannot set ban to 60/);
  refused(pl({ users_default: 75 }), state, /cannot set users_default to 75/);
  refused(pl({ events: { ...base.events, "m.room.topic": 80 } }), state, /cannot set events.m.room.topic to 80/);
  refused(pl({ notifications: { room: 70 } }), state, /cannot set notifications.room to 70/);
  allowed(pl({ notifications: { room: 50 } }), state);
});

test("power levels: nobody can change levels at or above their own, except lowering themselves", () => {
  const state = room({ members: { [ALICE]: "join", [MOD]: "join", "@mod2:x": "join" }, pl: { ...DEFAULT_PL, users: { ...DEFAULT_PL.users, "@mod2:x": 50 }, events: { "m.room.power_levels": 50 } } });
  const users = { [ALICE]: 100, [MOD]: 50, "@mod2:x": 50 };
  const pl = (content: Record<string, unknown>) => event("m.room.power_levels", MOD, { ...DEFAULT_PL, events: { "m.room.power_levels": 50 }, ...content }, "");
  refused(pl({ users: { ...users, "@mod2:x": 0 } }), state, /cannot change the level of @mod2:x/);
  refused(pl({ users: { [ALICE]: 100, [MOD]: 50 } }), state, /cannot change the level of @mod2:x/, V10);
  refused(pl({ users: { ...users, [ALICE]: 0 } }), state, /cannot change the level of @alice:x/);
  allowed(pl({ users: { ...users, [MOD]: 10 } }), state);
  // Removing an entry above one's level (events["m.room.power_levels"] was 100 in the default).
  const modCannotTouch = room({ pl: { ...DEFAULT_PL, events: { "m.room.power_levels": 50, "m.room.tombstone": 100 } } });
  refused(event("m.room.power_levels", MOD, { ...DEFAULT_PL, events: { "m.room.power_levels": 50 } }, ""), modCannotTouch, /events.m.room.tombstone from 100/);
  refused(event("m.room.power_levels", MOD, { ...DEFAULT_PL, events: { "m.room.power_levels": 50 }, redact: undefined, ban: 50 }, ""), room({ pl: { ...DEFAULT_PL, events: { "m.room.power_levels": 50 }, redact: 90 } }), /cannot change redact from 90/);
  // The creator at 100 can demote the moderator.
  allowed(event("m.room.power_levels", ALICE, { ...DEFAULT_PL, users: { [ALICE]: 100 } }, ""), room());
});

test("power levels: v10+ values must be integers, users keys must be user ids", () => {
  const state = room();
  const bad: Array<Record<string, unknown>> = [
    { ...DEFAULT_PL, ban: "50" },
    { ...DEFAULT_PL, state_default: 50.5 },
    { ...DEFAULT_PL, invite: null },
    { ...DEFAULT_PL, users: { [ALICE]: "100" } },
    { ...DEFAULT_PL, users: { "not-a-user": 0, [ALICE]: 100 } },
    { ...DEFAULT_PL, users: [] },
    { ...DEFAULT_PL, events: { "m.room.name": "50" } },
    { ...DEFAULT_PL, events: "nope" },
    { ...DEFAULT_PL, notifications: { room: "50" } },
  ];
  for (const rv of [V10, V11]) {
    for (const content of bad) refused(event("m.room.power_levels", ALICE, content, ""), state, /power levels: /, rv);
    allowed(event("m.room.power_levels", ALICE, { ...DEFAULT_PL, users: { [ALICE]: 100, [BOB]: -5 } }, ""), state, rv);
  }
});

test("power levels: the first power levels event is not compared with a previous one", () => {
  const state = room({ pl: null });
  // Without power levels the creator has 100 and needs state_default 50.
  allowed(event("m.room.power_levels", ALICE, { users: { [ALICE]: 100, [BOB]: 100 } }, ""), state);
  refused(event("m.room.power_levels", BOB, { users: { [BOB]: 100 } }, ""), state, /needs power level 50, @bob:x has 0/);
});

// --- redactions ------------------------------------------------------------------------------

test("redaction events pass auth on send level alone; the target is checked when applied", () => {
  const state = room();
  allowed(event("m.room.redaction", BOB, {}, undefined), state);
  allowed(event("m.room.redaction", BOB, { redacts: "$someone-elses" }), state, V11);
  refused(event("m.room.redaction", CAROL, { redacts: "$x" }), state, /not joined/, V11);
  refused(event("m.room.redaction", BOB, { redacts: "$x" }), room({ pl: { ...DEFAULT_PL, events: { "m.room.redaction": 50 } } }), /needs power level 50/, V11);
});

test("mayRedact: own events always, others' with the redact level", () => {
  const pl = { users: { [ALICE]: 100, [MOD]: 50 }, users_default: 0 };
  assert.equal(mayRedact(BOB, BOB, pl), true);
  assert.equal(mayRedact(BOB, ALICE, pl), false);
  assert.equal(mayRedact(MOD, BOB, pl), true);
  assert.equal(mayRedact(MOD, BOB, { ...pl, redact: 75 }), false);
  assert.equal(mayRedact(BOB, MOD, { ...pl, redact: 0 }), true);
  assert.equal(mayRedact(MOD, BOB, undefined), false);
  // Via auth state, including the creator's implicit 100 without a power levels event.
  assert.equal(mayRedact(MOD, BOB, room()), true);
  assert.equal(mayRedact(BOB, MOD, room()), false);
  assert.equal(mayRedact(ALICE, BOB, room({ pl: null })), true);
  assert.equal(mayRedact(BOB, ALICE, room({ pl: null })), false);
});

test("mayApplyRedaction: same server, or the redact level", () => {
  const state = room();
  assert.equal(mayApplyRedaction(BOB, ALICE, state), true, "servers vouch for their own users");
  assert.equal(mayApplyRedaction(REMOTE, BOB, state), false);
  assert.equal(mayApplyRedaction(MOD, REMOTE, state), true);
  assert.equal(mayApplyRedaction(BOB, REMOTE, state), false);
});

// --- helpers ---------------------------------------------------------------------------------

test("powerLevelOf, namedPowerLevel and requiredPowerLevel apply the spec defaults", () => {
  const none = room({ pl: null });
  assert.equal(powerLevelOf(ALICE, none), 100);
  assert.equal(powerLevelOf(BOB, none), 0);
  assert.equal(requiredPowerLevel("m.room.message", false, none), 0);
  assert.equal(requiredPowerLevel("m.room.topic", true, none), 50);
  assert.deepEqual(["invite", "kick", "ban", "redact"].map((n) => namedPowerLevel(n as "invite", none)), [0, 50, 50, 50]);

  const custom = room({ pl: { users: { [MOD]: 40 }, users_default: 5, events: { "m.room.message": 7, "m.room.topic": 3 }, events_default: 2, state_default: 9, kick: 1 } });
  assert.equal(powerLevelOf(MOD, custom), 40);
  assert.equal(powerLevelOf(ALICE, custom), 5, "with a power levels event the creator gets no implicit 100");
  assert.equal(requiredPowerLevel("m.room.message", false, custom), 7);
  assert.equal(requiredPowerLevel("m.room.topic", true, custom), 3);
  assert.equal(requiredPowerLevel("m.custom", false, custom), 2);
  assert.equal(requiredPowerLevel("m.custom", true, custom), 9);
  assert.equal(namedPowerLevel("kick", custom), 1);
  assert.equal(namedPowerLevel("ban", custom), 50);

  // Integers only: a string level is ignored in favour of the default.
  const stringy = room({ pl: { users: { [BOB]: "60" }, users_default: 0 } });
  assert.equal(powerLevelOf(BOB, stringy), 0);
});

test("stateKeyOf cannot be confused by separator characters", () => {
  assert.notEqual(stateKeyOf("a\u0000b", "c"), stateKeyOf("a", "b\u0000c"));
  assert.notEqual(stateKeyOf("a", ""), stateKeyOf("a\u0000", ""));
  assert.notEqual(stateKeyOf("ab", "c"), stateKeyOf("a", "bc"));
  assert.notEqual(stateKeyOf("a:", "b"), stateKeyOf("a", ":b"));
  assert.notEqual(stateKeyOf("", "1:a"), stateKeyOf("1:a", ""));
  assert.equal(stateKeyOf("m.room.member", BOB), stateKeyOf("m.room.member", BOB));
});
