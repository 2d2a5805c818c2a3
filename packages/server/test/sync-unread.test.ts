import { before, test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { api, enc } from "./support/http.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
type Login = { user_id: string; access_token: string; device_id: string };

/**
 * Unread counts carried from one /sync answer to the next (sync/unread-tracker.ts) must equal the
 * counts a fresh count gives, whatever happens in between: messages, mentions, read receipts
 * (public and private), a leave and a rejoin, a second device of the same user on its own
 * rhythm, and a client asking again with an older token.
 */
describeEachDatabase("/sync unread counts carried forward", ({ server }) => {
  let anna: Login;
  let bert: Login;
  let bert2: Login;
  let carl: Login;
  let roomId: string;
  const tokens = new Map<string, string>();
  let sent = 0;

  const call = (method: string, path: string, token: string, body?: unknown) => api<Json>(server().url, method, path, { token, ...(body !== undefined ? { body } : {}) });
  const say = async (who: Login, body: string, mentions: string[] = []) => {
    const res = await call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/u${++sent}`, who.access_token, { msgtype: "m.text", body, "m.mentions": { user_ids: mentions } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.event_id as string;
  };

  /** Syncs the device from its last token and checks the room's counts against a fresh count. */
  const check = async (who: Login, since = tokens.get(who.access_token)): Promise<{ notify: number; highlight: number } | null> => {
    const qs = new URLSearchParams({ timeout: "0", ...(since ? { since } : {}) });
    const res = await call("GET", `/_matrix/client/v3/sync?${qs}`, who.access_token);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    tokens.set(who.access_token, res.body.next_batch);
    const room = res.body.rooms.join[roomId];
    if (!room) return null;
    const upto = Number(String(res.body.next_batch).slice(1));
    const fresh = await server().services.push.unreadCounts(who.user_id, roomId, upto);
    const got = { notify: room.unread_notifications.notification_count, highlight: room.unread_notifications.highlight_count };
    assert.deepEqual(got, { notify: fresh.notify, highlight: fresh.highlight }, `${who.user_id} (${who.device_id}) at ${res.body.next_batch}`);
    return got;
  };
  const checkAll = async () => {
    for (const who of [bert, bert2, carl]) await check(who);
  };

  before(async () => {
    for (const name of ["un_anna", "un_bert", "un_carl"]) await server().createUser(name);
    anna = await server().login("un_anna");
    bert = await server().login("un_bert");
    bert2 = await server().login("un_bert");
    carl = await server().login("un_carl");
    roomId = (await call("POST", "/_matrix/client/v3/createRoom", anna.access_token, { preset: "public_chat" })).body.room_id;
    for (const who of [bert, carl]) assert.equal((await call("POST", `/_matrix/client/v3/join/${enc(roomId)}`, who.access_token, {})).status, 200);
    for (const who of [bert, bert2, carl]) await check(who);
  });

  test("messages and mentions add up, receipts reset, both devices of a user agree", async () => {
    await say(anna, "Lage 1");
    await checkAll();
    await say(anna, "Lage 2");
    await say(anna, "bitte melden", [bert.user_id]);
    const b = await check(bert);
    assert.deepEqual(b, { notify: 3, highlight: 1 }, "three messages, one mentions bert");
    // bert2 has not synced since the first message: a longer step, same result.
    assert.deepEqual(await check(bert2), { notify: 3, highlight: 1 });
    const last = await say(anna, "Lage 4");
    await checkAll();
    // A public read receipt of bert resets his count on both devices.
    assert.equal((await call("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/receipt/m.read/${enc(last)}`, bert.access_token, {})).status, 200);
    assert.deepEqual(await check(bert), { notify: 0, highlight: 0 });
    assert.deepEqual(await check(bert2), { notify: 0, highlight: 0 });
    // Carl's private receipt, then one more message: one unread for carl, as for bert.
    assert.equal((await call("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/receipt/m.read.private/${enc(last)}`, carl.access_token, {})).status, 200);
    await say(anna, "Lage 5");
    for (const who of [bert, bert2, carl]) assert.deepEqual(await check(who), { notify: 1, highlight: 0 });
    // Own messages never count.
    await say(bert, "verstanden");
    assert.deepEqual(await check(bert), { notify: 1, highlight: 0 });
    assert.deepEqual(await check(carl), { notify: 2, highlight: 0 });
  });

  test("an older token and a leave and rejoin give the counts a fresh count gives", async () => {
    const old = tokens.get(carl.access_token)!;
    await say(anna, "Lage 6");
    await checkAll();
    await say(anna, "Lage 7");
    // Carl's client asks again from an earlier token (a retry): same counts as a fresh count.
    await check(carl, old);
    await checkAll();
    assert.equal((await call("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/leave`, carl.access_token, {})).status, 200);
    await say(anna, "Lage 8, ohne Carl");
    await check(carl);
    assert.equal((await call("POST", `/_matrix/client/v3/join/${enc(roomId)}`, carl.access_token, {})).status, 200);
    await say(anna, "Lage 9");
    const c = await check(carl);
    assert.ok(c, "carl is back in the room");
    await checkAll();
  });

  test("members with rules of their own get their own outcome among the shared ones", async () => {
    // Carl highlights a keyword; bert mutes the room (an override rule without actions).
    const rule = (who: Login, path: string, body: unknown) => call("PUT", `/_matrix/client/v3/pushrules/global/${path}`, who.access_token, body);
    assert.equal((await rule(carl, "content/einsatzwort", { pattern: "Einsatz", actions: ["notify", { set_tweak: "highlight" }] })).status, 200);
    assert.equal((await rule(bert, `override/${enc(roomId)}`, { conditions: [{ kind: "event_match", key: "room_id", pattern: roomId }], actions: [] })).status, 200);
    await checkAll();
    const counted = async (who: Login) => {
      const c = await server().services.push.unreadCounts(who.user_id, roomId);
      return { notify: c.notify, highlight: c.highlight };
    };
    const before = { bert: await counted(bert), carl: await counted(carl) };
    await say(anna, "Einsatz läuft");
    assert.deepEqual(await check(carl), { notify: before.carl.notify + 1, highlight: before.carl.highlight + 1 });
    // Bert's room has news (the message), so it is in his answer, with nothing added.
    assert.deepEqual(await check(bert), before.bert, "a muted room adds nothing");
    assert.deepEqual(await check(bert2), before.bert);
  });

  test("a message stores one shared outcome and rows only where a member's differs; counts follow the join, not profile changes", async () => {
    const s = server().services;
    await server().createUser("un_dora");
    await server().createUser("un_emil");
    const dora = await server().login("un_dora");
    const emil = await server().login("un_emil");
    const room = (await call("POST", "/_matrix/client/v3/createRoom", anna.access_token, { preset: "public_chat" })).body.room_id as string;
    for (const who of [bert, carl, dora]) assert.equal((await call("POST", `/_matrix/client/v3/join/${enc(room)}`, who.access_token, {})).status, 200);
    // Carl mutes this room. Bert has rules of his own (his mute of the other room), so his outcome
    // is evaluated alone, but it is the common one and needs no row.
    assert.equal((await call("PUT", `/_matrix/client/v3/pushrules/global/override/${enc(room)}`, carl.access_token, { conditions: [{ kind: "event_match", key: "room_id", pattern: room }], actions: [] })).status, 200);

    const post = async (body: string, mentions: string[] = []) => {
      const res = await call("PUT", `/_matrix/client/v3/rooms/${enc(room)}/send/m.room.message/s${++sent}`, anna.access_token, { msgtype: "m.text", body, "m.mentions": { user_ids: mentions } });
      assert.equal(res.status, 200);
      return Number((await s.storage.db.selectFrom("events").select("stream_ordering").where("event_id", "=", res.body.event_id).executeTakeFirstOrThrow()).stream_ordering);
    };
    const stored = async (pos: number) => ({
      shared: (await s.storage.db.selectFrom("event_push_shared").select(["sender", "highlight"]).where("stream_ordering", "=", pos).execute()).map((r) => ({ ...r, highlight: Number(r.highlight) })),
      own: (await s.storage.db.selectFrom("event_push_actions").select(["user_id", "notify", "highlight"]).where("stream_ordering", "=", pos).orderBy("user_id").execute()).map((r) => ({ user_id: r.user_id, notify: Number(r.notify), highlight: Number(r.highlight) })),
    });
    const notified = async (pos: number) => (await s.push.notifiedAt(pos)).map((n) => `${n.user_id}:${n.highlight}`).sort();
    /** The count a fresh /sync shows, which must equal the direct count. */
    const shown = async (who: Login) => {
      const res = await call("GET", "/_matrix/client/v3/sync?timeout=0", who.access_token);
      const c = res.body.rooms.join[room]?.unread_notifications;
      const direct = await s.push.unreadCounts(who.user_id, room);
      assert.deepEqual({ notify: c?.notification_count ?? 0, highlight: c?.highlight_count ?? 0 }, { notify: direct.notify, highlight: direct.highlight }, who.user_id);
      return `${direct.notify}/${direct.highlight}`;
    };

    const first = await post("Lage");
    assert.deepEqual(await stored(first), { shared: [{ sender: anna.user_id, highlight: 0 }], own: [{ user_id: carl.user_id, notify: 0, highlight: 0 }] });
    assert.deepEqual(await notified(first), [`${bert.user_id}:0`, `${dora.user_id}:0`]);

    const second = await post("Dora bitte melden", [dora.user_id]);
    // Three recipients, three outcomes, none more common than silence: rows of their own only.
    assert.deepEqual(await stored(second), {
      shared: [],
      own: [
        { user_id: bert.user_id, notify: 1, highlight: 0 },
        { user_id: dora.user_id, notify: 1, highlight: 1 },
      ],
    });
    assert.deepEqual(await notified(second), [`${bert.user_id}:0`, `${dora.user_id}:1`]);

    // Emil joins after the first two: they are not his.
    assert.equal((await call("POST", `/_matrix/client/v3/join/${enc(room)}`, emil.access_token, {})).status, 200);
    const third = await post("Lage 3");
    assert.deepEqual(await notified(third), [`${bert.user_id}:0`, `${dora.user_id}:0`, `${emil.user_id}:0`]);
    assert.deepEqual([await shown(bert), await shown(carl), await shown(dora), await shown(emil)], ["3/0", "0/0", "3/1", "1/0"]);

    // A profile change is a member event but no new join: Dora's count goes on.
    assert.equal((await call("PUT", `/_matrix/client/v3/profile/${enc(dora.user_id)}/displayname`, dora.access_token, { displayname: "Dora D." })).status, 200);
    assert.equal(await shown(dora), "3/1");
    await post("Lage 4");
    assert.equal(await shown(dora), "4/1");
    // Leaving and joining again starts afresh.
    assert.equal((await call("POST", `/_matrix/client/v3/rooms/${enc(room)}/leave`, dora.access_token, {})).status, 200);
    await post("Lage 5, ohne Dora");
    assert.equal((await call("POST", `/_matrix/client/v3/join/${enc(room)}`, dora.access_token, {})).status, 200);
    assert.equal(await shown(dora), "0/0");
    await post("Lage 6");
    assert.equal(await shown(dora), "1/0");
    assert.deepEqual([await shown(bert), await shown(emil)], ["6/0", "4/0"]);
    // The push badge counts the same across rooms.
    assert.equal(await s.pushDelivery.unreadCount(emil.user_id), 4);
  });

  test("an initial sync's counts carry into a long-poll whose window is wide; over 100 of the room's events count afresh", async () => {
    const s = server().services;
    await server().createUser("un_fred");
    const fred = await server().login("un_fred");
    assert.equal((await call("POST", `/_matrix/client/v3/join/${enc(roomId)}`, fred.access_token, {})).status, 200);
    await say(anna, "vor Freds erstem Sync");
    const initial = await check(fred);
    assert.deepEqual(initial, { notify: 1, highlight: 0 });
    // Fresh counts of Fred's room made while his syncs are answered (the check's own count is after).
    const freshCounts = { n: 0 };
    const unreadCounts = s.push.unreadCounts.bind(s.push);
    s.push.unreadCounts = (userId, room, upto) => {
      if (userId === fred.user_id && room === roomId) freshCounts.n++;
      return unreadCounts(userId, room, upto);
    };
    try {
      // The stream moves on by more than 100 positions elsewhere (as thousands of members
      // connecting move it), then one message for Fred.
      for (let i = 0; i < 110; i++) assert.equal((await call("PUT", `/_matrix/client/v3/user/${enc(anna.user_id)}/account_data/org.revier.test.step`, anna.access_token, { i })).status, 200);
      await say(anna, "Fred bitte melden", [fred.user_id]);
      const since = tokens.get(fred.access_token)!;
      const res = await call("GET", `/_matrix/client/v3/sync?timeout=0&since=${since}`, fred.access_token);
      assert.ok(Number(String(res.body.next_batch).slice(1)) - Number(since.slice(1)) > 100, "the window is wider than the near page");
      assert.equal(freshCounts.n, 0, "carried forward from the initial sync's count");
      assert.deepEqual(res.body.rooms.join[roomId].unread_notifications, { notification_count: 2, highlight_count: 1 });
      await check(fred, since);
      // More of the room's events than a carried window may hold: counted afresh, and right.
      for (let i = 0; i < 101; i++) await say(anna, `Lage ${i}`);
      freshCounts.n = 0;
      assert.deepEqual(await check(fred), { notify: 103, highlight: 1 });
      assert.equal(freshCounts.n, 2, "counted afresh (once by the sync, once by the check)");
      // What an initial sync remembers is its count as of its own position, not of what came after.
      const atInitial = (await s.push.unreadCountsFor(fred.user_id, Number(since.slice(1)))).get(roomId);
      assert.deepEqual({ notify: atInitial?.notify, highlight: atInitial?.highlight }, { notify: 1, highlight: 0 });
    } finally {
      s.push.unreadCounts = unreadCounts;
    }
  });
});
