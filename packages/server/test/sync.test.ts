import { before, test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { api, enc } from "./support/http.js";
import { assertConformsToSpec } from "./support/spec.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

describeEachDatabase("/sync", ({ server }) => {
  let anna: { access_token: string; user_id: string; device_id: string };
  let bert: { access_token: string; user_id: string; device_id: string };

  before(async () => {
    await server().createUser("anna");
    await server().createUser("bert");
    anna = await server().login("anna");
    bert = await server().login("bert");
  });

  const sync = async (token: string, params: Record<string, string> = {}) => {
    const res = await api<Json>(server().url, "GET", `/_matrix/client/v3/sync?${new URLSearchParams({ timeout: "0", ...params })}`, { token });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body;
  };

  test("initial sync has every section and conforms to the spec", async () => {
    const r = await api<Json>(server().url, "POST", "/_matrix/client/v3/createRoom", { token: anna.access_token, body: { name: "Wache 3", preset: "public_chat" } });
    const body = await sync(anna.access_token);
    assertConformsToSpec("GET", "/_matrix/client/v3/sync", 200, body);
    const room = body.rooms.join[r.body.room_id];
    assert.ok(room, "the new room is in rooms.join");
    const types = room.state.events.map((e: Json) => e.type).concat(room.timeline.events.map((e: Json) => e.type));
    for (const t of ["m.room.create", "m.room.member", "m.room.power_levels", "m.room.name"]) assert.ok(types.includes(t), `${t} present`);
    assert.deepEqual(body.to_device, { events: [] });
    assert.deepEqual(body.device_lists, { changed: [], left: [] });
    assert.deepEqual(room.unread_notifications, { notification_count: 0, highlight_count: 0 });
    assert.match(body.next_batch, /^s\d+$/);
  });

  test("a long-poll wakes when a message arrives and returns just that message", async () => {
    const r = await api<Json>(server().url, "POST", "/_matrix/client/v3/createRoom", { token: anna.access_token, body: { preset: "public_chat" } });
    const roomId = r.body.room_id;
    await api(server().url, "POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: bert.access_token, body: {} });
    const since = (await sync(bert.access_token)).next_batch;
    const started = Date.now();
    const poll = sync(bert.access_token, { since, timeout: "20000" });
    await new Promise((res) => setTimeout(res, 200));
    await api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/lp1`, { token: anna.access_token, body: { msgtype: "m.text", body: "Alarm" } });
    const body = await poll;
    assert.ok(Date.now() - started < 15_000, "returned before its timeout");
    const events = body.rooms.join[roomId].timeline.events;
    assert.deepEqual(events.map((e: Json) => e.content.body), ["Alarm"]);
    assert.equal(body.rooms.join[roomId].timeline.limited, false);
    assert.equal(body.rooms.join[roomId].unread_notifications.notification_count, 1);
    // Anna's own device sees its transaction id.
    const annaView = await sync(anna.access_token, { since });
    assert.equal(annaView.rooms.join[roomId].timeline.events[0].unsigned.transaction_id, "lp1");
    assert.equal(events[0].unsigned.transaction_id, undefined);
  });

  test("the ephemeral filter's types: receipts left out are not sent, and the long-poll answers at its timeout; typing still is sent, and wakes it", async () => {
    await server().createUser("clara");
    const clara = await server().login("clara");
    const r = await api<Json>(server().url, "POST", "/_matrix/client/v3/createRoom", { token: anna.access_token, body: { preset: "public_chat" } });
    const roomId = r.body.room_id as string;
    for (const who of [bert, clara]) assert.equal((await api(server().url, "POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: who.access_token, body: {} })).status, 200);
    const sent = await api<Json>(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/eph1`, { token: anna.access_token, body: { msgtype: "m.text", body: "Lage" } });
    const noReceipts = JSON.stringify({ room: { ephemeral: { not_types: ["m.receipt"] } } });
    const annaSince = (await sync(anna.access_token)).next_batch;
    const bertSince = (await sync(bert.access_token, { filter: noReceipts })).next_batch;

    const annaPoll = sync(anna.access_token, { since: annaSince, timeout: "20000" });
    const bertStarted = Date.now();
    const bertPoll = sync(bert.access_token, { since: bertSince, timeout: "1500", filter: noReceipts });
    await new Promise((res) => setTimeout(res, 200));
    assert.equal((await api(server().url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/receipt/m.read/${enc(sent.body.event_id)}`, { token: clara.access_token, body: {} })).status, 200);

    const annaBody = await annaPoll;
    const annaEph = annaBody.rooms.join[roomId].ephemeral.events as Json[];
    assert.deepEqual(annaEph.map((e) => e.type), ["m.receipt"]);
    assert.ok(annaEph[0]!.content[sent.body.event_id]["m.read"][clara.user_id]);

    const bertBody = await bertPoll;
    assert.ok(Date.now() - bertStarted >= 1400, "answered at its timeout: the receipt was no news to it");
    assert.equal(bertBody.rooms?.join?.[roomId], undefined, "and its answer carries nothing for the room");

    // Typing passes the same filter: it is sent, and it wakes.
    const typingStarted = Date.now();
    const typingPoll = sync(bert.access_token, { since: bertBody.next_batch, timeout: "20000", filter: noReceipts });
    await new Promise((res) => setTimeout(res, 200));
    assert.equal((await api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/typing/${enc(clara.user_id)}`, { token: clara.access_token, body: { typing: true, timeout: 10_000 } })).status, 200);
    const typingBody = await typingPoll;
    assert.ok(Date.now() - typingStarted < 15_000);
    assert.deepEqual(typingBody.rooms.join[roomId].ephemeral.events, [{ type: "m.typing", content: { user_ids: [clara.user_id] } }]);
    // From the beginning, with the filter: typing but no receipts.
    const full = await sync(bert.access_token, { filter: noReceipts });
    assert.deepEqual((full.rooms.join[roomId].ephemeral.events as Json[]).map((e) => e.type), ["m.typing"]);
  });

  test("an empty long-poll waits for its timeout and returns the same position", async () => {
    const since = (await sync(bert.access_token)).next_batch;
    const started = Date.now();
    const body = await sync(bert.access_token, { since, timeout: "600" });
    assert.ok(Date.now() - started >= 500);
    assert.equal(body.next_batch, since);
  });

  test("a long-poll that times out while others' rooms are busy answers past their news and misses nothing of its own", async () => {
    const mine = (await api<Json>(server().url, "POST", "/_matrix/client/v3/createRoom", { token: anna.access_token, body: { preset: "public_chat" } })).body.room_id;
    await api(server().url, "POST", `/_matrix/client/v3/join/${enc(mine)}`, { token: bert.access_token, body: {} });
    const others = (await api<Json>(server().url, "POST", "/_matrix/client/v3/createRoom", { token: anna.access_token, body: {} })).body.room_id;
    const since = (await sync(bert.access_token)).next_batch;
    const poll = sync(bert.access_token, { since, timeout: "800" });
    for (let i = 0; i < 3; i++) {
      await api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(others)}/send/m.room.message/busy${i}`, { token: anna.access_token, body: { msgtype: "m.text", body: `elsewhere ${i}` } });
    }
    const quiet = await poll;
    assertConformsToSpec("GET", "/_matrix/client/v3/sync", 200, quiet);
    assert.ok(Number(quiet.next_batch.slice(1)) >= Number(since.slice(1)) + 3, `the answer moves past the other room's messages (${since} -> ${quiet.next_batch})`);
    assert.deepEqual(quiet.rooms.join, {});
    assert.equal(quiet.device_one_time_keys_count, undefined, "answered without a lookup (a built answer carries key counts)");
    // Nothing of bert's own rooms is skipped by that token: the next message arrives in full.
    await api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(mine)}/send/m.room.message/mine1`, { token: anna.access_token, body: { msgtype: "m.text", body: "for bert" } });
    const next = await sync(bert.access_token, { since: quiet.next_batch, timeout: "5000" });
    assert.deepEqual(next.rooms.join[mine].timeline.events.map((e: Json) => e.content.body), ["for bert"]);
    assert.equal(next.rooms.join[others], undefined);
    assert.equal(typeof next.device_one_time_keys_count, "object", "a full answer still reports key counts");
  });

  test("a forgotten room leaves the leave section at once (memberships read earlier are not reused)", async () => {
    const roomId = (await api<Json>(server().url, "POST", "/_matrix/client/v3/createRoom", { token: anna.access_token, body: { preset: "public_chat" } })).body.room_id;
    await api(server().url, "POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: bert.access_token, body: {} });
    const withLeaves = JSON.stringify({ room: { include_leave: true } });
    assert.ok((await sync(bert.access_token)).rooms.join[roomId]);
    assert.equal((await api(server().url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/leave`, { token: bert.access_token, body: {} })).status, 200);
    assert.ok((await sync(bert.access_token, { filter: withLeaves })).rooms.leave[roomId], "left, not yet forgotten");
    assert.equal((await api(server().url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/forget`, { token: bert.access_token, body: {} })).status, 200);
    assert.equal((await sync(bert.access_token, { filter: withLeaves })).rooms.leave[roomId], undefined);
  });

  test("delivered to-device messages are deleted by the next request, even one that finds nothing new", async () => {
    const since = (await sync(bert.access_token)).next_batch;
    const res = await api(server().url, "PUT", "/_matrix/client/v3/sendToDevice/m.test.ack/ack1", { token: anna.access_token, body: { messages: { [bert.user_id]: { [bert.device_id]: { n: 1 } } } } });
    assert.equal(res.status, 200);
    const got = await sync(bert.access_token, { since });
    assert.deepEqual(got.to_device.events.map((e: Json) => e.type), ["m.test.ack"]);
    const inbox = () => server().services.storage.db.selectFrom("device_inbox").select("id").where("user_id", "=", bert.user_id).where("device_id", "=", bert.device_id).execute();
    assert.equal((await inbox()).length, 1, "kept until acknowledged");
    // The acknowledging request is a long-poll with nothing new for it: it times out quietly.
    const next = await sync(bert.access_token, { since: got.next_batch, timeout: "300" });
    assert.deepEqual(next.to_device.events, []);
    assert.equal((await inbox()).length, 0, "acknowledged by the next request");
  });

  test("a gap produces a limited timeline with prev_batch that /messages continues from", async () => {
    const r = await api<Json>(server().url, "POST", "/_matrix/client/v3/createRoom", { token: anna.access_token, body: { preset: "public_chat" } });
    const roomId = r.body.room_id;
    await api(server().url, "POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: bert.access_token, body: {} });
    const since = (await sync(bert.access_token)).next_batch;
    for (let i = 0; i < 15; i++) await api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/g${i}`, { token: anna.access_token, body: { msgtype: "m.text", body: `n${i}` } });
    await api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.topic`, { token: anna.access_token, body: { topic: "neu" } });
    const body = await sync(bert.access_token, { since, filter: JSON.stringify({ room: { timeline: { limit: 5 } } }) });
    const room = body.rooms.join[roomId];
    assert.equal(room.timeline.limited, true);
    assert.equal(room.timeline.events.length, 5);
    const back = await api<Json>(server().url, "GET", `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=100&from=${enc(room.timeline.prev_batch)}`, { token: bert.access_token });
    const bodies = back.body.chunk.filter((e: Json) => e.type === "m.room.message").map((e: Json) => e.content.body);
    assert.deepEqual(bodies.slice(0, 11), ["n10", "n9", "n8", "n7", "n6", "n5", "n4", "n3", "n2", "n1", "n0"]);
  });

  test("lazy-loaded members: only the timeline senders' member events", async () => {
    await server().createUser("carl");
    const carl = await server().login("carl");
    const r = await api<Json>(server().url, "POST", "/_matrix/client/v3/createRoom", { token: anna.access_token, body: { preset: "public_chat" } });
    const roomId = r.body.room_id;
    await api(server().url, "POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: bert.access_token, body: {} });
    await api(server().url, "POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: carl.access_token, body: {} });
    for (let i = 0; i < 3; i++) await api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/ll${i}`, { token: bert.access_token, body: { msgtype: "m.text", body: "x" } });
    const body = await sync(carl.access_token, { filter: JSON.stringify({ room: { timeline: { limit: 3 }, state: { lazy_load_members: true } } }) });
    const room = body.rooms.join[roomId];
    const members = room.state.events.filter((e: Json) => e.type === "m.room.member").map((e: Json) => e.state_key).sort();
    assert.deepEqual(members, [bert.user_id, carl.user_id].sort());
    assert.equal(room.summary["m.joined_member_count"], 3);
    assert.equal(room.summary["m.invited_member_count"], 0);
    // Heroes: the other members, in the order they came.
    assert.deepEqual(room.summary["m.heroes"], [anna.user_id, bert.user_id]);
    // An invitation counts as invited and makes a hero; the summary follows the room's writes.
    await server().createUser("dora_ll");
    const doraId = (await server().login("dora_ll")).user_id;
    assert.equal((await api(server().url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/invite`, { token: anna.access_token, body: { user_id: doraId } })).status, 200);
    const again = (await sync(carl.access_token, { filter: JSON.stringify({ room: { timeline: { limit: 3 }, state: { lazy_load_members: true } } }) })).rooms.join[roomId];
    assert.deepEqual([again.summary["m.joined_member_count"], again.summary["m.invited_member_count"], again.summary["m.heroes"]], [3, 1, [anna.user_id, bert.user_id, doraId]]);
  });

  test("state at a position, lazily loaded: member events only for the keys asked, however many", async () => {
    // stateAt compiles its query once per number of keys (padded up to a power of two, up to 64)
    // and builds it per call beyond that: every path must select the same.
    await server().createUser("dora_sa");
    const dora = await server().login("dora_sa");
    const roomId = (await api<Json>(server().url, "POST", "/_matrix/client/v3/createRoom", { token: anna.access_token, body: { preset: "public_chat", name: "Lage" } })).body.room_id;
    for (const who of [bert, dora]) assert.equal((await api(server().url, "POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: who.access_token, body: {} })).status, 200);
    const renamed = await api<Json>(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.member/${enc(bert.user_id)}`, { token: bert.access_token, body: { membership: "join", displayname: "Bert (Leitstelle)" } });
    const rooms = server().services.rooms;
    const at = (await rooms.event(renamed.body.event_id))!.stream_ordering;
    const members = async (pos: number, keys?: string[]) =>
      (await rooms.stateAt(roomId, pos, keys ? { memberKeys: keys } : undefined))
        .filter((e) => e.type === "m.room.member")
        .map((e) => `${e.state_key}:${String(e.content.displayname ?? "")}`)
        .sort();
    const strangers = (n: number) => Array.from({ length: n }, (_, i) => `@fremd${i}:${server().config.serverName}`);
    const bertNow = `${bert.user_id}:Bert (Leitstelle)`;
    const all = [`${anna.user_id}:anna`, bertNow, `${dora.user_id}:dora_sa`].sort();
    assert.deepEqual(await members(at), all, "no keys given: every member");
    assert.deepEqual(await members(at, []), [], "no keys: no member events");
    assert.deepEqual(await members(at, [bert.user_id]), [bertNow]);
    assert.deepEqual(await members(at, [dora.user_id, bert.user_id, anna.user_id]), all, "three keys, padded to four");
    assert.deepEqual(await members(at, [bert.user_id, ...strangers(63)]), [bertNow], "64 keys");
    assert.deepEqual(await members(at, [...strangers(70), dora.user_id]), [`${dora.user_id}:dora_sa`], "71 keys, built per call");
    // Just before the rename: Bert's earlier member event.
    assert.deepEqual(await members(at - 1, [bert.user_id, ...strangers(2)]), [`${bert.user_id}:bert`]);
    assert.deepEqual(await members(at - 1, [bert.user_id, ...strangers(80)]), [`${bert.user_id}:bert`]);
    // Other state comes in full with any keys.
    const names = (await rooms.stateAt(roomId, at, { memberKeys: strangers(5) })).filter((e) => e.type === "m.room.name").map((e) => e.content.name);
    assert.deepEqual(names, ["Lage"]);
  });

  test("stored filters, invites and leaves", async () => {
    const f = await api<Json>(server().url, "POST", `/_matrix/client/v3/user/${enc(bert.user_id)}/filter`, { token: bert.access_token, body: { room: { timeline: { limit: 2 } } } });
    assert.equal(f.status, 200);
    assertConformsToSpec("POST", "/_matrix/client/v3/user/{userId}/filter", 200, f.body);
    const since = (await sync(bert.access_token, { filter: f.body.filter_id })).next_batch;
    // Filter ids are per user: Bert's id means nothing for Anna, and an unknown id is an error.
    for (const [token, id] of [
      [anna.access_token, f.body.filter_id],
      [bert.access_token, "999999"],
    ]) {
      const bad = await api<Json>(server().url, "GET", `/_matrix/client/v3/sync?timeout=0&filter=${enc(id)}`, { token });
      assert.deepEqual([bad.status, bad.body.errcode], [400, "M_INVALID_PARAM"]);
    }
    const r = await api<Json>(server().url, "POST", "/_matrix/client/v3/createRoom", { token: anna.access_token, body: { invite: [bert.user_id], name: "Geheim" } });
    const roomId = r.body.room_id;
    const inv = await sync(bert.access_token, { since, filter: f.body.filter_id });
    const stripped = inv.rooms.invite[roomId].invite_state.events;
    assert.ok(stripped.some((e: Json) => e.type === "m.room.name" && e.content.name === "Geheim"));
    assert.ok(stripped.some((e: Json) => e.type === "m.room.member" && e.state_key === bert.user_id && e.content.membership === "invite"));
    await api(server().url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/join`, { token: bert.access_token, body: {} });
    const joined = await sync(bert.access_token, { since: inv.next_batch });
    assert.ok(joined.rooms.join[roomId].state.events.some((e: Json) => e.type === "m.room.create") || joined.rooms.join[roomId].timeline.events.some((e: Json) => e.type === "m.room.create"));
    await api(server().url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/leave`, { token: bert.access_token, body: {} });
    await api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/after-leave`, { token: anna.access_token, body: { msgtype: "m.text", body: "nach dem Verlassen" } });
    const left = await sync(bert.access_token, { since: joined.next_batch });
    const leaveRoom = left.rooms.leave[roomId];
    assert.ok(leaveRoom, "room is in rooms.leave");
    const bodies = leaveRoom.timeline.events.map((e: Json) => e.content.body);
    assert.ok(!bodies.includes("nach dem Verlassen"), "nothing after the leave is delivered");
    const msgs = await api<Json>(server().url, "GET", `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=50`, { token: bert.access_token });
    assert.ok(!msgs.body.chunk.some((e: Json) => e.content.body === "nach dem Verlassen"));
    const later = await sync(bert.access_token, { since: left.next_batch });
    assert.equal(later.rooms.leave[roomId], undefined);
  });

  test("a profile change is delivered as one member event, not as a re-join", async () => {
    const r = await api<Json>(server().url, "POST", "/_matrix/client/v3/createRoom", { token: anna.access_token, body: { preset: "public_chat" } });
    const roomId = r.body.room_id;
    await api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/pc1`, { token: anna.access_token, body: { msgtype: "m.text", body: "vorher" } });
    const since = (await sync(anna.access_token)).next_batch;
    await api(server().url, "PUT", `/_matrix/client/v3/profile/${enc(anna.user_id)}/displayname`, { token: anna.access_token, body: { displayname: "Anna (Leitstelle)" } });
    const body = await sync(anna.access_token, { since });
    const room = body.rooms.join[roomId];
    assert.deepEqual(room.timeline.events.map((e: Json) => [e.type, e.content.displayname]), [["m.room.member", "Anna (Leitstelle)"]]);
    assert.equal(room.timeline.limited, false);
    assert.deepEqual(room.state.events, []);
  });

  test("invalid tokens and filters are refused", async () => {
    const bad = await api<Json>(server().url, "GET", "/_matrix/client/v3/sync?since=garbage&timeout=0", { token: bert.access_token });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.errcode, "M_INVALID_PARAM");
    const badFilter = await api<Json>(server().url, "GET", `/_matrix/client/v3/sync?timeout=0&filter=${enc('{"room":{"timeline":{"limit":"ten"}}}')}`, { token: bert.access_token });
    assert.equal(badFilter.status, 400);
  });
});
