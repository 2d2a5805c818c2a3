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
});
