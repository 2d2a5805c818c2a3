import { before, test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { api, enc } from "./support/http.js";
import { loadWindowNews, toDeviceKey } from "../src/sync/window-news.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
type Login = { user_id: string; access_token: string; device_id: string };

/**
 * The shared per-window answers (sync/window-news.ts) must never hide news: for every window
 * between the steps of a busy scenario — joins, leaves, new devices, to-device messages, account
 * data — a user's device-list changes computed from them equal those computed by the user's own
 * queries, and every user or device with account data or to-device messages in the window is
 * named.
 */
describeEachDatabase("/sync shared window answers", ({ server }) => {
  const positions: number[] = [];
  const logins: Login[] = [];

  const call = (method: string, path: string, token: string, body?: unknown) => api<Json>(server().url, method, path, { token, ...(body !== undefined ? { body } : {}) });
  const mark = async () => positions.push(await server().services.stream.current());

  before(async () => {
    for (const name of ["wn_a", "wn_b", "wn_c", "wn_d"]) {
      await server().createUser(name);
      logins.push(await server().login(name));
    }
    const [a, b, c, d] = logins as [Login, Login, Login, Login];
    await mark();
    const room1 = (await call("POST", "/_matrix/client/v3/createRoom", a.access_token, { preset: "public_chat" })).body.room_id as string;
    const room2 = (await call("POST", "/_matrix/client/v3/createRoom", c.access_token, { preset: "public_chat" })).body.room_id as string;
    await mark();
    for (const who of [b, c]) assert.equal((await call("POST", `/_matrix/client/v3/join/${enc(room1)}`, who.access_token, {})).status, 200);
    await mark();
    assert.equal((await call("POST", `/_matrix/client/v3/join/${enc(room2)}`, d.access_token, {})).status, 200);
    logins.push(await server().login("wn_b")); // b's second device: a device-list change
    await mark();
    await call("PUT", `/_matrix/client/v3/sendToDevice/m.test/t1`, a.access_token, { messages: { [b.user_id]: { [b.device_id]: { n: 1 } }, [d.user_id]: { "*": { n: 2 } } } });
    await call("PUT", `/_matrix/client/v3/user/${enc(c.user_id)}/account_data/m.test`, c.access_token, { x: 1 });
    await mark();
    assert.equal((await call("POST", `/_matrix/client/v3/rooms/${enc(room1)}/leave`, c.access_token, {})).status, 200);
    await call("PUT", `/_matrix/client/v3/rooms/${enc(room1)}/send/m.room.message/m1`, a.access_token, { msgtype: "m.text", body: "x" });
    await mark();
    assert.equal((await call("POST", `/_matrix/client/v3/join/${enc(room2)}`, a.access_token, {})).status, 200);
    logins.push(await server().login("wn_c")); // c's new device, now sharing room2 with a and d
    await call("PUT", `/_matrix/client/v3/user/${enc(a.user_id)}/rooms/${enc(room1)}/account_data/m.test`, a.access_token, { y: 2 });
    await mark();
    assert.equal((await call("POST", `/_matrix/client/v3/rooms/${enc(room2)}/leave`, d.access_token, {})).status, 200);
    await mark();
  });

  test("every window between the steps: same device lists, nobody with news left out", async () => {
    const s = server().services;
    let windows = 0;
    let changedSeen = 0;
    let leftSeen = 0;
    for (let i = 0; i < positions.length; i++) {
      for (let j = i + 1; j < positions.length; j++) {
        const since = positions[i]!;
        const upto = positions[j]!;
        const news = await loadWindowNews(s.storage.db, since, upto);
        assert.ok(news.memberEvents !== null);
        for (const who of logins) {
          const alone = await s.e2ee.deviceLists.changes(who.user_id, since, upto, null);
          const shared = await s.e2ee.deviceLists.changes(who.user_id, since, upto, news);
          assert.deepEqual(shared, alone, `device lists of ${who.user_id} in (${since}, ${upto}]`);
          if (alone.changed.length > 0) changedSeen++;
          if (alone.left.length > 0) leftSeen++;
          const ad = await s.accountData.changedSince(who.user_id, since, upto);
          if (ad.global.length > 0 || ad.rooms.size > 0) assert.ok(news.accountData.has(who.user_id), `account data of ${who.user_id} in (${since}, ${upto}] is named`);
          const inbox = await s.storage.db.selectFrom("device_inbox").select("id").where("user_id", "=", who.user_id).where("device_id", "=", who.device_id).where("stream_pos", ">", since).where("stream_pos", "<=", upto).execute();
          if (inbox.length > 0) assert.ok(news.toDevice.has(toDeviceKey(who.user_id, who.device_id)), `to-device for ${who.device_id} in (${since}, ${upto}] is named`);
        }
        windows++;
      }
    }
    assert.equal(windows, (positions.length * (positions.length - 1)) / 2);
    // The scenario did produce each kind of news somewhere (else the comparison proves little).
    const all = await loadWindowNews(s.storage.db, positions[0]!, positions.at(-1)!);
    assert.ok(all.accountData.size >= 2 && all.toDevice.size >= 2 && all.deviceLists.size >= 2 && all.memberEvents!.length >= 5, JSON.stringify({ ad: all.accountData.size, td: all.toDevice.size, dl: all.deviceLists.size, me: all.memberEvents?.length }));
    assert.ok(changedSeen > 0 && leftSeen > 0, `windows with changed: ${changedSeen}, with left: ${leftSeen}`);
  });

  test("a window's receipts are shared: every member sees the public ones, each only their own private ones", async () => {
    const [a, b, c] = logins as [Login, Login, Login];
    const room = (await call("POST", "/_matrix/client/v3/createRoom", a.access_token, { preset: "public_chat" })).body.room_id as string;
    for (const who of [b, c]) assert.equal((await call("POST", `/_matrix/client/v3/join/${enc(room)}`, who.access_token, {})).status, 200);
    const sent = await call("PUT", `/_matrix/client/v3/rooms/${enc(room)}/send/m.room.message/r1`, a.access_token, { msgtype: "m.text", body: "gelesen?" });
    const eventId = sent.body.event_id as string;
    const sync = (who: Login, since: string) => call("GET", `/_matrix/client/v3/sync?${new URLSearchParams({ since, timeout: "0" })}`, who.access_token);
    // Each syncs once first: a first sync sets its user's presence, which would be a write between.
    for (const who of [b, c]) assert.equal((await call("GET", "/_matrix/client/v3/sync?timeout=0", who.access_token)).status, 200);
    const since = (await call("GET", "/_matrix/client/v3/sync?timeout=0", a.access_token)).body.next_batch as string;
    const receipt = async (who: Login, type: string) => assert.equal((await call("POST", `/_matrix/client/v3/rooms/${enc(room)}/receipt/${type}/${enc(eventId)}`, who.access_token, {})).status, 200);
    await receipt(a, "m.read.private");
    await receipt(b, "m.read");
    await receipt(c, "m.read.private");
    const shown = async (who: Login) => {
      const res = await sync(who, since);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const ev = (res.body.rooms.join[room].ephemeral.events as Json[]).find((e) => e.type === "m.receipt");
      return { next: res.body.next_batch as string, content: ev?.content[eventId] as Json };
    };
    // One window for all three (nothing written between their syncs): the first answer fills the
    // shared entry, the others are built from it.
    const seenByA = await shown(a);
    const seenByB = await shown(b);
    const seenByC = await shown(c);
    assert.equal(seenByB.next, seenByA.next);
    assert.equal(seenByC.next, seenByA.next);
    assert.deepEqual(Object.keys(seenByA.content["m.read"]), [b.user_id]);
    assert.deepEqual(Object.keys(seenByA.content["m.read.private"]), [a.user_id], "a sees its own private receipt only");
    assert.deepEqual(Object.keys(seenByB.content), ["m.read"], "b sees nobody's private receipt: a's copy did not leak into the shared entry");
    assert.deepEqual(Object.keys(seenByC.content["m.read.private"]), [c.user_id]);
    assert.deepEqual(Object.keys(seenByC.content["m.read"]), [b.user_id]);
  });
});
