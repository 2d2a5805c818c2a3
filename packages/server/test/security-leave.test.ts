/**
 * After leaving a room — by leaving, being kicked or being banned — nothing that happens in it
 * later may reach the former member, on any path: the history-visibility class that homeservers
 * have repeatedly got wrong on side paths (/context, /relations, /event, room summaries,
 * device-list updates, notifications) rather than on /sync itself. Two such leaks were found here
 * and fixed: /sync's `device_lists.left` named users who joined after the viewer left, and the
 * room summary of a left room listed current members.
 */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { api, enc } from "./support/http.js";
import { ALL_ROUTES } from "../src/api/index.js";
import { createRoom, join, sendMessage } from "./security-helpers.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const hasRoute = (method: string, url: string) => ALL_ROUTES.some((r) => r.spec.method === method && r.spec.url === url);

describeEachDatabase("nothing reaches a user after they left a room", ({ server, kind }) => {
  let anna: string;
  let annaId: string;
  const sn = () => server().config.serverName;

  before(async () => {
    annaId = await server().createUser("anna");
    await server().createUser("carl");
    anna = (await server().login("anna")).access_token;
  });

  for (const how of ["leave", "kick", "ban"] as const) {
    test(`after a ${how}: /sync, /messages, /context, /relations, /event, state, members, presence, device lists, search and push all stop at the ${how}`, async () => {
      const localpart = `${how}r`;
      const viewerId = await server().createUser(localpart);
      const viewer = (await server().login(localpart)).access_token;
      const roomId = await createRoom(server(), anna, { preset: "private_chat", name: "Vor dem Verlassen", invite: [viewerId] });
      await join(server(), viewer, roomId);
      const before = await sendMessage(server(), anna, roomId, "vorher", `${how}-m1`);
      const sync0 = await api<Json>(server().url, "GET", "/_matrix/client/v3/sync?timeout=0", { token: viewer });
      const since = sync0.body.next_batch as string;

      if (how === "leave") assert.equal((await api(server().url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/leave`, { token: viewer, body: {} })).status, 200);
      else assert.equal((await api(server().url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/${how}`, { token: anna, body: { user_id: viewerId, reason: "raus" } })).status, 200);
      const leftAt = (await server().services.rooms.membership(roomId, viewerId))!;
      assert.equal(leftAt.membership, how === "ban" ? "ban" : "leave");

      // Everything that happens afterwards carries a marker that must never reach the viewer.
      const marker = `GEHEIM-${how}-${kind}`;
      const markers = [marker, `@carl:${sn()}`];
      const later: string[] = [];
      later.push(await sendMessage(server(), anna, roomId, `${marker} Nachricht nach dem Verlassen, ${localpart}!`, `${how}-m2`));
      const putState = async (type: string, content: Json) => {
        const res = await api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/${type}`, { token: anna, body: content });
        assert.equal(res.status, 200, JSON.stringify(res.body));
        later.push(res.body.event_id as string);
      };
      await putState("m.room.name", { name: `${marker} neuer Name` });
      await putState("m.room.topic", { topic: `${marker} neues Thema` });
      const react = await api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.reaction/${how}-r`, { token: anna, body: { "m.relates_to": { rel_type: "m.annotation", event_id: before, key: `${marker}👍` } } });
      later.push(react.body.event_id as string);
      later.push(await sendMessage(server(), anna, roomId, `* ${marker} edit`, `${how}-e`, { "m.new_content": { msgtype: "m.text", body: `${marker} edit` }, "m.relates_to": { rel_type: "m.replace", event_id: before } }));
      later.push(await sendMessage(server(), anna, roomId, `${marker} im Thread`, `${how}-t`, { "m.relates_to": { rel_type: "m.thread", event_id: before } }));
      // Someone joins later; their device list change must not be announced to the viewer either.
      assert.equal((await api(server().url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/invite`, { token: anna, body: { user_id: `@carl:${sn()}` } })).status, 200);
      const carl = (await server().login("carl")).access_token;
      await join(server(), carl, roomId);
      later.push(await sendMessage(server(), carl, roomId, `${marker} von carl`, `${how}-c`));
      assert.equal((await api(server().url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/receipt/m.read/${enc(later[later.length - 1]!)}`, { token: anna, body: {} })).status, 200);
      assert.equal((await api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/typing/${enc(annaId)}`, { token: anna, body: { typing: true, timeout: 30000 } })).status, 200);
      assert.equal((await api(server().url, "PUT", `/_matrix/client/v3/presence/${enc(annaId)}/status`, { token: anna, body: { presence: "online", status_msg: `${marker} Status` } })).status, 200);
      const current = (await api<Json>(server().url, "GET", "/_matrix/client/v3/sync?timeout=0", { token: anna })).body.next_batch as string;

      const seen: string[] = [];
      const get = async (p: string, expectOk = true): Promise<{ status: number; body: Json }> => {
        const res = await api<Json>(server().url, "GET", p, { token: viewer });
        const text = JSON.stringify(res.body);
        seen.push(`${p} → ${text}`);
        if (expectOk) assert.equal(res.status, 200, `${p}: ${res.status} ${text}`);
        for (const m of markers) assert.ok(!text.includes(m), `${p} leaks ${m}: …${text.slice(Math.max(0, text.indexOf(m) - 300), text.indexOf(m) + 200)}`);
        for (const id of later) assert.ok(!text.includes(id), `${p} leaks the later event ${id}`);
        return res;
      };

      // /sync: incremental from before the leave shows the room as left, up to the leave and no further.
      const incremental = await get(`/_matrix/client/v3/sync?timeout=0&since=${since}`);
      assert.equal(incremental.body.rooms.join[roomId], undefined);
      const left = incremental.body.rooms.leave[roomId];
      assert.ok(left, "the room is in the leave section");
      const timeline = left.timeline.events as Json[];
      assert.equal(timeline[timeline.length - 1]!.event_id, (await server().services.storage.db.selectFrom("room_members").select("event_id").where("room_id", "=", roomId).where("user_id", "=", viewerId).executeTakeFirstOrThrow()).event_id);
      const next = incremental.body.next_batch as string;
      const afterwards = await get(`/_matrix/client/v3/sync?timeout=0&since=${next}`);
      assert.equal(afterwards.body.rooms.leave[roomId], undefined, "nothing more about the room once the leave was delivered");
      const leaveFilter = encodeURIComponent(JSON.stringify({ room: { include_leave: true } }));
      const initial = await get(`/_matrix/client/v3/sync?timeout=0&filter=${leaveFilter}`);
      assert.ok(initial.body.rooms.leave[roomId], "an initial sync with include_leave lists the room as left");
      await get(`/_matrix/client/v3/sync?timeout=0&full_state=true&since=${since}&filter=${leaveFilter}`);
      await get(`/_matrix/client/v3/sync?timeout=0&since=${since}&filter=${encodeURIComponent(JSON.stringify({ room: { include_leave: true, timeline: { limit: 50 }, state: { lazy_load_members: true } } }))}`);

      // /messages in both directions, from before the leave and from "now".
      const back = await get(`/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=100`);
      assert.ok((back.body.chunk as Json[]).some((e) => e.event_id === before), "history up to the leave stays readable");
      await get(`/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=100&from=${current}`);
      await get(`/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=f&limit=100&from=${since}`);
      await get(`/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=f&limit=100&from=s0&to=${current}`);
      await get(`/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=100&filter=${encodeURIComponent(JSON.stringify({ lazy_load_members: true }))}`);

      // /context around an earlier event: nothing after the leave, and the state as it was then.
      const ctx = await get(`/_matrix/client/v3/rooms/${enc(roomId)}/context/${enc(before)}?limit=50`);
      assert.ok((ctx.body.state as Json[]).some((e) => e.type === "m.room.name" && e.content.name === "Vor dem Verlassen"));

      // Later events by id: /event, /context and /relations answer 404 as for an unknown event.
      for (const id of later) {
        for (const p of [`/_matrix/client/v3/rooms/${enc(roomId)}/event/${enc(id)}`, `/_matrix/client/v3/rooms/${enc(roomId)}/context/${enc(id)}`, `/_matrix/client/v1/rooms/${enc(roomId)}/relations/${enc(id)}`]) {
          const res = await get(p, false);
          assert.equal(res.status, 404, `${p}: ${res.status}`);
        }
      }
      // Relations of an earlier event: the later reaction, edit and thread reply stay hidden.
      for (const suffix of ["", "/m.annotation", "/m.replace", "/m.thread", "/m.thread/m.room.message"]) {
        const rel = await get(`/_matrix/client/v1/rooms/${enc(roomId)}/relations/${enc(before)}${suffix}?limit=50`);
        assert.deepEqual(rel.body.chunk, [], suffix);
      }
      await get(`/_matrix/client/v1/rooms/${enc(roomId)}/relations/${enc(before)}?dir=f&from=${since}`);

      // State and members as of the leave.
      await get(`/_matrix/client/v3/rooms/${enc(roomId)}/state`);
      const name = await get(`/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.name`);
      assert.equal(name.body.name, "Vor dem Verlassen");
      assert.equal((await get(`/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.member/${enc(`@carl:${sn()}`)}`, false)).status, 404);
      await get(`/_matrix/client/v3/rooms/${enc(roomId)}/members`);
      await get(`/_matrix/client/v3/rooms/${enc(roomId)}/members?at=${current}`);
      assert.equal((await get(`/_matrix/client/v3/rooms/${enc(roomId)}/joined_members`, false)).status, 403);
      assert.equal((await get(`/_matrix/client/v3/rooms/${enc(roomId)}/aliases`, false)).status, 403);

      // Presence and device lists of people the viewer no longer shares a room with.
      assert.equal((await get(`/_matrix/client/v3/presence/${enc(annaId)}/status`, false)).status, 403);
      await get(`/_matrix/client/v3/keys/changes?from=${since}&to=${current}`);

      // Search, where implemented.
      if (hasRoute("POST", "/_matrix/client/v3/search")) {
        const res = await api<Json>(server().url, "POST", "/_matrix/client/v3/search", { token: viewer, body: { search_categories: { room_events: { search_term: marker } } } });
        assert.ok(!JSON.stringify(res.body).includes(marker), "search finds nothing from after the leave");
      }

      // Push: no notification was recorded for the viewer after the leave (the later message even
      // names them), no unread count, and the notifications endpoint (where implemented) is empty.
      const s = server().services;
      const afterLeave = await s.storage.db.selectFrom("events").select("stream_ordering").where("room_id", "=", roomId).where("stream_ordering", ">", leftAt.streamOrdering).execute();
      assert.ok(afterLeave.length > 0);
      for (const { stream_ordering } of afterLeave) {
        const notified = await s.push.notifiedAt(Number(stream_ordering));
        assert.ok(!notified.some((n) => n.user_id === viewerId), `notification recorded for the viewer at ${stream_ordering}, after the leave`);
      }
      const earlier = await s.storage.db.selectFrom("events").select("stream_ordering").where("room_id", "=", roomId).where("stream_ordering", "<=", leftAt.streamOrdering).execute();
      let notifiedBefore = 0;
      for (const { stream_ordering } of earlier) if ((await s.push.notifiedAt(Number(stream_ordering))).some((n) => n.user_id === viewerId)) notifiedBefore++;
      const counts = await s.push.unreadCounts(viewerId, roomId);
      assert.ok(counts.notify <= notifiedBefore, `unread count ${counts.notify} counts more than the ${notifiedBefore} notifications from before the leave`);
      if (hasRoute("GET", "/_matrix/client/v3/notifications")) await get("/_matrix/client/v3/notifications?limit=100");

      // And rejoining an invite-only room is not a way back in.
      const rejoin = await api(server().url, "POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: viewer, body: {} });
      assert.equal(rejoin.status, 403);
      assert.ok(seen.length > 30);
    });
  }
});
