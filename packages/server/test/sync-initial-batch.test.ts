import { before, test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { api, enc } from "./support/http.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
type Login = { user_id: string; access_token: string; device_id: string };

/**
 * An initial /sync asks some questions for all rooms at once (visible ranges, typing, unread
 * counts). The answers must be exactly what the per-room questions give (typing: who types), for every kind of room:
 * each history visibility, joined, left, invited, with and without notifications and receipts.
 */
describeEachDatabase("initial /sync batched per-room answers", ({ server }) => {
  let a: Login;
  let b: Login;
  const rooms: string[] = [];
  const call = (method: string, path: string, token: string, body?: unknown) => api<Json>(server().url, method, path, { token, ...(body !== undefined ? { body } : {}) });

  before(async () => {
    await server().createUser("ib_a");
    await server().createUser("ib_b");
    a = await server().login("ib_a");
    b = await server().login("ib_b");
    for (const hv of ["shared", "joined", "invited", "world_readable"]) {
      const roomId = (await call("POST", "/_matrix/client/v3/createRoom", a.access_token, { preset: "public_chat", initial_state: [{ type: "m.room.history_visibility", state_key: "", content: { history_visibility: hv } }] })).body.room_id as string;
      rooms.push(roomId);
      await call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/before-${hv}`, a.access_token, { msgtype: "m.text", body: "before" });
    }
    const [shared, joined, invited, world] = rooms as [string, string, string, string];
    for (const r of [shared, joined, world]) assert.equal((await call("POST", `/_matrix/client/v3/join/${enc(r)}`, b.access_token, {})).status, 200);
    assert.equal((await call("POST", `/_matrix/client/v3/rooms/${enc(invited)}/invite`, a.access_token, { user_id: b.user_id })).status, 200);
    for (const r of rooms) {
      for (let i = 0; i < 3; i++) await call("PUT", `/_matrix/client/v3/rooms/${enc(r)}/send/m.room.message/n${i}-${r.slice(1, 9)}`, a.access_token, { msgtype: "m.text", body: `hello ${b.user_id} ${i}` });
    }
    // b read the first message in `shared`, types in `joined`, and left `world`.
    const first = (await call("GET", `/_matrix/client/v3/rooms/${enc(shared)}/messages?dir=f&limit=50`, b.access_token)).body.chunk.find((e: Json) => e.content?.body?.endsWith(" 0"));
    assert.equal((await call("POST", `/_matrix/client/v3/rooms/${enc(shared)}/receipt/m.read/${enc(first.event_id)}`, b.access_token, {})).status, 200);
    assert.equal((await call("PUT", `/_matrix/client/v3/rooms/${enc(joined)}/typing/${enc(b.user_id)}`, b.access_token, { typing: true, timeout: 30000 })).status, 200);
    assert.equal((await call("POST", `/_matrix/client/v3/rooms/${enc(world)}/leave`, b.access_token, {})).status, 200);
  });

  test("visible ranges and unread counts equal the per-room answers; typing is who types", async () => {
    const s = server().services;
    const ranges = await s.rooms.visibleRanges(b.user_id, rooms);
    const typing = await s.ephemeral.typingIn(rooms);
    const unread = await s.push.unreadCountsFor(b.user_id);
    let unreadRooms = 0;
    for (const r of rooms) {
      assert.deepEqual(ranges.get(r), await s.rooms.visibleRange(r, b.user_id), `range in ${r}`);
      const one = await s.push.unreadCounts(b.user_id, r);
      assert.deepEqual(unread.get(r) ?? { notify: 0, highlight: 0, threads: {} }, one, `unread in ${r}`);
      if (one.notify > 0) unreadRooms++;
    }
    // The scenario covers what it claims: different ranges, someone typing, partly read rooms.
    assert.ok(new Set([...ranges.values()].map((v) => `${v.from}:${v.to}`)).size >= 3);
    assert.deepEqual([...typing], [[rooms[1]!, [b.user_id]]], "b types in the second room, nobody anywhere else");
    assert.ok(unreadRooms >= 2);
    assert.ok((unread.get(rooms[0]!)?.notify ?? 0) < (unread.get(rooms[1]!)?.notify ?? 0), "the read receipt in the first room counts");
    // And the initial sync that uses them reports the same numbers.
    const body = (await call("GET", "/_matrix/client/v3/sync?timeout=0", b.access_token)).body;
    for (const r of [rooms[0]!, rooms[1]!]) {
      const one = await s.push.unreadCounts(b.user_id, r);
      assert.deepEqual(body.rooms.join[r].unread_notifications, { notification_count: one.notify, highlight_count: one.highlight });
    }
    assert.deepEqual(body.rooms.join[rooms[1]!].ephemeral.events.find((e: Json) => e.type === "m.typing")?.content, { user_ids: [b.user_id] });
  });
});
