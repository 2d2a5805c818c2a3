import { before, test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { api, enc } from "./support/http.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
type Login = { user_id: string; access_token: string; device_id: string };

/**
 * A long-poll woken by news starts its windows where the news begins, not at its own token
 * (SyncService.sync, Notifier.quietBefore): members of a wave last answered at positions of their
 * own then ask the same windows. What it answers must be what a build from its token gives: for
 * every kind of news, each member's long-poll answer is compared with an immediate /sync from the
 * same token, made once nothing else has happened.
 */
describeEachDatabase("/sync: windows start where a wave's news begins", ({ server }) => {
  let anna: Login;
  let bert: Login;
  let carl: Login;
  let roomId: string;
  let annasRoom: string;
  let n = 0;

  const call = (method: string, path: string, token: string, body?: unknown) => api<Json>(server().url, method, path, { token, ...(body !== undefined ? { body } : {}) });
  const ok = async (res: Promise<{ status: number; body: Json }>) => {
    const r = await res;
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  };
  // Offline throughout: a presence change per request would be news of its own.
  const syncNow = async (who: Login, since?: string) => ok(call("GET", `/_matrix/client/v3/sync?${new URLSearchParams({ timeout: "0", set_presence: "offline", ...(since ? { since } : {}) })}`, who.access_token));
  const longPoll = (who: Login, since: string) => ok(call("GET", `/_matrix/client/v3/sync?${new URLSearchParams({ timeout: "20000", set_presence: "offline", since })}`, who.access_token));
  const waiting = async () => (await server().services.metrics.syncWaiters.get()).values[0]?.value ?? 0;
  const position = () => server().services.stream.current();
  /** Stream positions that name neither Bert nor Carl nor their room: Anna's account data, her own room. */
  const elsewhere = async (count: number) => {
    for (let i = 0; i < count; i++) {
      await ok(call("PUT", `/_matrix/client/v3/user/${enc(anna.user_id)}/account_data/de.revier.test`, anna.access_token, { i: ++n }));
      await ok(call("PUT", `/_matrix/client/v3/rooms/${enc(annasRoom)}/send/m.room.message/ww${++n}`, anna.access_token, { msgtype: "m.text", body: "anderswo" }));
    }
  };
  /** What an answer says, without what differs between two builds of it (ages). */
  const content = (body: Json) => {
    const rooms: Json = {};
    for (const [id, r] of Object.entries<Json>(body.rooms.join)) {
      rooms[id] = {
        timeline: r.timeline.events.map((e: Json) => [e.event_id, e.type, e.content]),
        limited: r.timeline.limited,
        state: r.state.events.map((e: Json) => e.event_id),
        ephemeral: r.ephemeral.events,
        account_data: r.account_data.events,
        unread: r.unread_notifications,
      };
    }
    return {
      next_batch: body.next_batch,
      rooms,
      account_data: body.account_data.events,
      to_device: body.to_device.events,
      device_lists: { changed: [...body.device_lists.changed].sort(), left: body.device_lists.left },
    };
  };

  before(async () => {
    for (const name of ["ww_anna", "ww_bert", "ww_carl"]) await server().createUser(name);
    anna = await server().login("ww_anna");
    bert = await server().login("ww_bert");
    carl = await server().login("ww_carl");
    roomId = (await ok(call("POST", "/_matrix/client/v3/createRoom", anna.access_token, { preset: "public_chat" }))).room_id;
    annasRoom = (await ok(call("POST", "/_matrix/client/v3/createRoom", anna.access_token, {}))).room_id;
    for (const who of [bert, carl]) await ok(call("POST", `/_matrix/client/v3/join/${enc(roomId)}`, who.access_token, {}));
  });

  const kinds: Array<[string, () => Promise<unknown>, (who: Login) => boolean]> = [
    ["a message in the room", () => ok(call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/ww${++n}`, anna.access_token, { msgtype: "m.text", body: "Lage" })), () => true],
    ["a to-device message for Bert", () => ok(call("PUT", `/_matrix/client/v3/sendToDevice/m.test/ww${++n}`, anna.access_token, { messages: { [bert.user_id]: { [bert.device_id]: { n } } } })), (who) => who === bert],
    ["Bert's account data", () => ok(call("PUT", `/_matrix/client/v3/user/${enc(bert.user_id)}/account_data/de.revier.test`, bert.access_token, { n })), (who) => who === bert],
    ["a new device of Anna, who shares the room", () => server().login("ww_anna"), () => true],
    ["Anna typing in the room", () => ok(call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/typing/${enc(anna.user_id)}`, anna.access_token, { typing: true, timeout: 30000 })), () => true],
    [
      "Anna's read receipt in the room",
      async () => {
        const last = (await ok(call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=1`, anna.access_token))).chunk[0].event_id as string;
        return ok(call("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/receipt/m.read/${enc(last)}`, anna.access_token, {}));
      },
      () => true,
    ],
  ];

  for (const [kind, act, concerns] of kinds) {
    test(`${kind}: the long-polls of members with tokens of their own answer as a build from their tokens would`, async () => {
      const bertSince = (await syncNow(bert)).next_batch as string;
      await elsewhere(2);
      const carlSince = (await syncNow(carl)).next_batch as string;
      await elsewhere(2);
      const before = await waiting();
      const answers = [longPoll(bert, bertSince), longPoll(carl, carlSince)];
      for (let i = 0; i < 500 && (await waiting()) < before + 2; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(await waiting(), before + 2, "both long-polls wait");
      await elsewhere(2);
      const quietUntil = await position();
      // Which windows the builds ask about (who has news of which kind).
      const sync = server().services.sync as unknown as { windowNews: (since: number, upto: number) => Promise<unknown> };
      const original = sync.windowNews;
      const asked: number[] = [];
      let comparing = false;
      sync.windowNews = function (since: number, upto: number) {
        if (!comparing) asked.push(since);
        return original.call(this, since, upto);
      };
      const members = [
        { who: bert, since: bertSince, answer: answers[0]! },
        { who: carl, since: carlSince, answer: answers[1]! },
      ];
      const compare = async (group: typeof members) => {
        for (const m of group) {
          const body = await m.answer;
          // Once the answers are out and nothing else happened: a build from the member's token.
          comparing = true;
          const fresh = await syncNow(m.who, m.since).finally(() => (comparing = false));
          assert.deepEqual(content(body), content(fresh), `${m.who.user_id}'s long-poll answer equals a build from its token`);
        }
      };
      try {
        await act();
        await compare(members.filter((m) => concerns(m.who)));
        // Whom the news does not concern is still waiting: a message of its own answers it.
        const rest = members.filter((m) => !concerns(m.who));
        if (rest.length > 0) {
          assert.equal(await waiting(), before + rest.length, "the news woke only whom it concerns");
          await ok(call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/ww${++n}`, anna.access_token, { msgtype: "m.text", body: "auch" }));
          await compare(rest);
        }
      } finally {
        sync.windowNews = original;
      }
      assert.ok(asked.length > 0, "the long-polls' builds asked the window's news");
      for (const since of asked) assert.ok(since >= quietUntil, `a window from ${since}, not from a member's token (the quiet stretch ends at ${quietUntil})`);
      if (kind === "a message in the room") {
        assert.equal(asked.length, 2);
        assert.equal(new Set(asked).size, 1, "both members asked one window");
        for (const m of members) assert.equal((await m.answer).rooms.join[roomId].timeline.events.at(-1).content.body, "Lage");
      }
      // Acknowledge what the answers carried, as a client does with its next request.
      for (const m of members) await syncNow(m.who, (await m.answer).next_batch);
    });
  }
});
