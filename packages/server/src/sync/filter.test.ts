import { test } from "node:test";
import assert from "node:assert/strict";
import { applyEventFields, DEFAULT_TIMELINE_LIMIT, FilterError, matchesEventFilter, parseFilter, parseFilterParam, roomAllowed, typeMatches, type Filter } from "./filter.js";

function rejects(body: unknown, errcode: string, field: string): void {
  assert.throws(
    () => parseFilter(body),
    (err: unknown) => {
      assert.ok(err instanceof FilterError, `expected FilterError, got ${String(err)}`);
      assert.equal(err.errcode, errcode);
      assert.equal(err.field, field);
      if (field) assert.ok(err.message.startsWith(field), err.message);
      return true;
    },
  );
}

test("the spec's example filter parses unchanged", () => {
  const body = {
    room: {
      state: { types: ["m.room.*"], not_rooms: ["!726s6s6q:example.com"] },
      timeline: { limit: 10, types: ["m.room.message"], not_rooms: ["!726s6s6q:example.com"], not_senders: ["@spam:example.com"] },
      ephemeral: { types: ["m.receipt", "m.typing"], not_rooms: ["!726s6s6q:example.com"], not_senders: ["@spam:example.com"] },
    },
    presence: { types: ["m.presence"], not_senders: ["@alice:example.com"] },
    event_format: "client",
    event_fields: ["type", "content", "sender"],
  };
  assert.deepEqual(parseFilter(body), body);
});

test("all defined fields survive; unknown keys and nulls are dropped", () => {
  const f = parseFilter({
    event_format: "federation",
    account_data: { limit: 3, types: ["m.push_rules"], rooms: ["!ignored:x"] },
    room: {
      rooms: ["!a:x"],
      not_rooms: ["!b:x"],
      include_leave: true,
      account_data: { not_types: ["m.tag"] },
      state: { lazy_load_members: true, include_redundant_members: false, unread_thread_notifications: true },
      timeline: { contains_url: true, senders: ["@a:x"], rooms: ["!a:x"], limit: null },
      extra: 1,
    },
    org_example_custom: true,
  });
  assert.deepEqual(f, {
    event_format: "federation",
    account_data: { limit: 3, types: ["m.push_rules"] },
    room: {
      rooms: ["!a:x"],
      not_rooms: ["!b:x"],
      include_leave: true,
      account_data: { not_types: ["m.tag"] },
      state: { lazy_load_members: true, include_redundant_members: false, unread_thread_notifications: true },
      timeline: { contains_url: true, senders: ["@a:x"], rooms: ["!a:x"] },
    },
  });
  assert.deepEqual(parseFilter({}), {});
});

test("invalid filters are rejected with the offending field named", () => {
  rejects([], "M_BAD_JSON", "");
  rejects("filter", "M_BAD_JSON", "");
  rejects({ event_fields: "type" }, "M_BAD_JSON", "event_fields");
  rejects({ event_fields: ["type", 3] }, "M_BAD_JSON", "event_fields[1]");
  rejects({ event_format: "json" }, "M_INVALID_PARAM", "event_format");
  rejects({ event_format: 1 }, "M_BAD_JSON", "event_format");
  rejects({ presence: [] }, "M_BAD_JSON", "presence");
  rejects({ presence: { limit: 0 } }, "M_INVALID_PARAM", "presence.limit");
  rejects({ room: "all" }, "M_BAD_JSON", "room");
  rejects({ room: { timeline: { limit: -5 } } }, "M_INVALID_PARAM", "room.timeline.limit");
  rejects({ room: { timeline: { limit: 2.5 } } }, "M_BAD_JSON", "room.timeline.limit");
  rejects({ room: { timeline: { limit: "10" } } }, "M_BAD_JSON", "room.timeline.limit");
  rejects({ room: { state: { types: "m.room.member" } } }, "M_BAD_JSON", "room.state.types");
  rejects({ room: { state: { lazy_load_members: "yes" } } }, "M_BAD_JSON", "room.state.lazy_load_members");
  rejects({ room: { include_leave: 1 } }, "M_BAD_JSON", "room.include_leave");
  rejects({ room: { rooms: ["#alias:x"] } }, "M_INVALID_PARAM", "room.rooms[0]");
  rejects({ room: { ephemeral: { not_senders: ["bob"] } } }, "M_INVALID_PARAM", "room.ephemeral.not_senders[0]");
  rejects({ room: { account_data: { contains_url: "true" } } }, "M_BAD_JSON", "room.account_data.contains_url");
  rejects({ account_data: { types: Array.from({ length: 1001 }, () => "x") } }, "M_INVALID_PARAM", "account_data.types");
});

test("the filter parameter is inline JSON when it starts with {, a stored id otherwise", () => {
  const stored: Record<string, Filter> = { "42": { room: { timeline: { limit: 5 } } } };
  const load = (id: string): Filter | undefined => stored[id];
  assert.equal(parseFilterParam(undefined, load), undefined);
  assert.equal(parseFilterParam("", load), undefined);
  assert.deepEqual(parseFilterParam("42", load), { room: { timeline: { limit: 5 } } });
  assert.deepEqual(parseFilterParam('{"room":{"timeline":{"limit":1}}}', load), { room: { timeline: { limit: 1 } } });
  assert.throws(() => parseFilterParam("43", load), (e: unknown) => e instanceof FilterError && e.errcode === "M_INVALID_PARAM");
  assert.throws(() => parseFilterParam("{nope", load), (e: unknown) => e instanceof FilterError && e.errcode === "M_BAD_JSON");
  assert.throws(() => parseFilterParam('{"room":{"timeline":{"limit":0}}}', load), (e: unknown) => e instanceof FilterError && e.field === "room.timeline.limit");
});

test("DEFAULT_TIMELINE_LIMIT is 10", () => {
  assert.equal(DEFAULT_TIMELINE_LIMIT, 10);
});

test("type patterns: * matches any run of characters, nothing else is special", () => {
  assert.equal(typeMatches("m.room.*", "m.room.message"), true);
  assert.equal(typeMatches("m.room.*", "m.room."), true);
  assert.equal(typeMatches("m.room.*", "m.roomx"), false);
  assert.equal(typeMatches("*", "anything"), true);
  assert.equal(typeMatches("*.call.*", "m.call.invite"), true);
  assert.equal(typeMatches("m.*.invite", "m.call.invite"), true);
  assert.equal(typeMatches("m.*.invite", "m.call.hangup"), false);
  assert.equal(typeMatches("a*a", "a"), false);
  assert.equal(typeMatches("a*b*a", "aba"), true);
  assert.equal(typeMatches("m.room.message", "m.room.message"), true);
  assert.equal(typeMatches("m.room.messag?", "m.room.message"), false);
  assert.equal(typeMatches("M.ROOM.*", "m.room.message"), false);
});

test("matchesEventFilter: not_* lists win, empty lists include nothing, absent lists everything", () => {
  const ev = { type: "m.room.message", sender: "@bob:x", room_id: "!r:x", content: { body: "hi" } };
  assert.equal(matchesEventFilter(undefined, ev), true);
  assert.equal(matchesEventFilter({}, ev), true);
  assert.equal(matchesEventFilter({ types: ["m.room.*"] }, ev), true);
  assert.equal(matchesEventFilter({ types: ["m.room.*"], not_types: ["m.room.message"] }, ev), false);
  assert.equal(matchesEventFilter({ types: [] }, ev), false);
  assert.equal(matchesEventFilter({ not_types: ["*"] }, ev), false);
  assert.equal(matchesEventFilter({ senders: ["@bob:x"] }, ev), true);
  assert.equal(matchesEventFilter({ senders: ["@bob:x"], not_senders: ["@bob:x"] }, ev), false);
  assert.equal(matchesEventFilter({ senders: ["@carol:x"] }, ev), false);
  assert.equal(matchesEventFilter({ rooms: ["!r:x"] }, ev), true);
  assert.equal(matchesEventFilter({ rooms: ["!r:x"], not_rooms: ["!r:x"] }, ev), false);
  assert.equal(matchesEventFilter({ rooms: ["!other:x"] }, ev), false);
  // Events delivered without a room id (inside a room section of /sync) skip the room lists.
  assert.equal(matchesEventFilter({ rooms: ["!other:x"] }, { ...ev, room_id: undefined }), true);
});

test("matchesEventFilter: contains_url", () => {
  const image = { type: "m.room.message", sender: "@b:x", content: { msgtype: "m.image", url: "mxc://x/y" } };
  const text = { type: "m.room.message", sender: "@b:x", content: { msgtype: "m.text", body: "x" } };
  assert.equal(matchesEventFilter({ contains_url: true }, image), true);
  assert.equal(matchesEventFilter({ contains_url: true }, text), false);
  assert.equal(matchesEventFilter({ contains_url: false }, image), false);
  assert.equal(matchesEventFilter({ contains_url: false }, text), true);
  assert.equal(matchesEventFilter({}, image), true);
});

test("roomAllowed applies rooms and not_rooms", () => {
  assert.equal(roomAllowed(undefined, "!a:x"), true);
  assert.equal(roomAllowed({}, "!a:x"), true);
  assert.equal(roomAllowed({ rooms: ["!a:x"] }, "!a:x"), true);
  assert.equal(roomAllowed({ rooms: ["!a:x"] }, "!b:x"), false);
  assert.equal(roomAllowed({ rooms: ["!a:x"], not_rooms: ["!a:x"] }, "!a:x"), false);
  assert.equal(roomAllowed({ not_rooms: ["!a:x"] }, "!b:x"), true);
  assert.equal(roomAllowed({ rooms: [] }, "!a:x"), false);
});

test("applyEventFields keeps only the listed dotted paths", () => {
  const ev = {
    type: "m.room.message",
    sender: "@b:x",
    event_id: "$e",
    content: { body: "hi", msgtype: "m.text", "m.relates_to": { rel_type: "m.thread", event_id: "$root" } },
    unsigned: { age: 5 },
  };
  assert.equal(applyEventFields(ev, undefined), ev);
  assert.deepEqual(applyEventFields(ev, ["type", "content.body"]), { type: "m.room.message", content: { body: "hi" } });
  assert.deepEqual(applyEventFields(ev, ["content.m\\.relates_to.rel_type"]), { content: { "m.relates_to": { rel_type: "m.thread" } } });
  assert.deepEqual(applyEventFields(ev, ["content.body", "content"]), { content: ev.content });
  assert.deepEqual(applyEventFields(ev, ["content", "content.body"]), { content: ev.content });
  assert.deepEqual(applyEventFields(ev, ["missing", "content.missing", "type.length"]), {});
  assert.deepEqual(applyEventFields(ev, []), {});
  // The input is left alone.
  assert.deepEqual(Object.keys(ev.content), ["body", "msgtype", "m.relates_to"]);
});

test("applyEventFields treats __proto__ as an ordinary key", () => {
  const ev = JSON.parse('{"type":"t","content":{"__proto__":{"polluted":true}}}') as Record<string, unknown>;
  const out = applyEventFields(ev, ["content.__proto__.polluted"]);
  const content = out.content as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(content), Object.prototype);
  assert.deepEqual(Object.getOwnPropertyDescriptor(content, "__proto__")?.value, { polluted: true });
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});
