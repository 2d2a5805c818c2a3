import { before, test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { api, enc } from "./support/http.js";
import { BUILDS_AT_ONCE } from "../src/sync/sync.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
type Login = { user_id: string; access_token: string; device_id: string };

/**
 * The newest timeline page of a room is read once per room and upper position and shared by
 * every member's /sync, whatever their `since` (sync.ts, roomTimelineAndState). Members asking
 * with different tokens at the same position must each get exactly the events after their own
 * token, with `limited` set where more happened than their filter's limit.
 */
describeEachDatabase("/sync shared timeline page", ({ server }) => {
  let anna: Login;
  let bert: Login;
  let carl: Login;
  let roomId: string;
  let sent = 0;

  const call = (method: string, path: string, token: string, body?: unknown) => api<Json>(server().url, method, path, { token, ...(body !== undefined ? { body } : {}) });
  const say = async (body: string) => {
    const res = await call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/st${++sent}`, anna.access_token, { msgtype: "m.text", body });
    assert.equal(res.status, 200);
  };
  const sync = async (who: Login, since?: string, limit?: number) => {
    const q = new URLSearchParams({ timeout: "0", ...(since ? { since } : {}), ...(limit ? { filter: JSON.stringify({ room: { timeline: { limit } } }) } : {}) });
    const res = await call("GET", `/_matrix/client/v3/sync?${q}`, who.access_token);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body;
  };
  const bodies = (body: Json) => (body.rooms.join[roomId]?.timeline.events ?? []).filter((e: Json) => e.type === "m.room.message").map((e: Json) => e.content.body);

  before(async () => {
    for (const name of ["st_anna", "st_bert", "st_carl"]) await server().createUser(name);
    anna = await server().login("st_anna");
    bert = await server().login("st_bert");
    carl = await server().login("st_carl");
    roomId = (await call("POST", "/_matrix/client/v3/createRoom", anna.access_token, { preset: "public_chat" })).body.room_id;
    for (const who of [bert, carl]) assert.equal((await call("POST", `/_matrix/client/v3/join/${enc(roomId)}`, who.access_token, {})).status, 200);
  });

  test("members with different tokens at the same position each get what is new to them", async () => {
    const bertSince = (await sync(bert)).next_batch;
    for (const b of ["eins", "zwei", "drei"]) await say(b);
    const carlSince = (await sync(carl)).next_batch;
    await say("vier");
    // Carl first, with the shortest window: the page he causes to be read must serve Bert too.
    const carlView = await sync(carl, carlSince);
    const bertView = await sync(bert, bertSince);
    assert.equal(carlView.next_batch, bertView.next_batch, "both answered at the same position");
    assert.deepEqual(bodies(carlView), ["vier"]);
    assert.equal(carlView.rooms.join[roomId].timeline.limited, false);
    assert.deepEqual(bodies(bertView), ["eins", "zwei", "drei", "vier"]);
    assert.equal(bertView.rooms.join[roomId].timeline.limited, false);
    // A small limit: the newest events and a gap to fill.
    const short = await sync(bert, bertSince, 2);
    assert.deepEqual(bodies(short), ["drei", "vier"]);
    assert.equal(short.rooms.join[roomId].timeline.limited, true);
  });

  test("a full shared page with nothing the filter wants reads on for the member", async () => {
    const since = (await sync(bert)).next_batch;
    for (const topic of ["Lage", "Einsatz", "Abschluss"]) {
      assert.equal((await call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.topic/`, anna.access_token, { topic })).status, 200);
    }
    // More messages than the page of a limit-3 filter (20 rows) holds, all after the topics.
    for (let i = 0; i < 25; i++) await say(`n${i}`);
    const q = new URLSearchParams({ timeout: "0", since, filter: JSON.stringify({ room: { timeline: { limit: 3, types: ["m.room.topic"] } } }) });
    const res = await call("GET", `/_matrix/client/v3/sync?${q}`, bert.access_token);
    assert.equal(res.status, 200);
    const timeline = res.body.rooms.join[roomId].timeline;
    assert.deepEqual(
      timeline.events.map((e: Json) => e.content.topic),
      ["Lage", "Einsatz", "Abschluss"],
    );
    assert.equal(timeline.limited, false);
  });

  test("a window longer than the shared page gets every event, or the newest with a gap", async () => {
    const since = (await sync(bert)).next_batch;
    const carlSince = (await sync(carl)).next_batch;
    for (let i = 0; i < 120; i++) await say(`m${i}`);
    const carlView = await sync(carl, carlSince, 150);
    assert.equal(bodies(carlView).length, 120);
    assert.equal(carlView.rooms.join[roomId].timeline.limited, false);
    const bertView = await sync(bert, since, 5);
    assert.deepEqual(bodies(bertView), ["m115", "m116", "m117", "m118", "m119"]);
    assert.equal(bertView.rooms.join[roomId].timeline.limited, true);
  });

  test("members with tokens from long ago, far apart, share one page and each gets its own part", async () => {
    // Hundreds of positions elsewhere in the stream (another user's account data), none in the room.
    const elsewhere = async (n: number) => {
      for (let i = 0; i < n; i++) {
        assert.equal((await call("PUT", `/_matrix/client/v3/user/${enc(anna.user_id)}/account_data/de.revier.test`, anna.access_token, { i })).status, 200);
      }
    };
    await say("vorher");
    const bertSince = (await sync(bert)).next_batch;
    await say("dazwischen");
    await elsewhere(150);
    const carlSince = (await sync(carl)).next_batch;
    await elsewhere(150);
    await say("nachher");
    const rooms = server().services.rooms;
    const original = rooms.eventsBetween;
    let reads = 0;
    rooms.eventsBetween = function (...args: Parameters<typeof original>) {
      if (args[0] === roomId) reads++;
      return original.apply(this, args);
    };
    try {
      assert.deepEqual(bodies(await sync(bert, bertSince)), ["dazwischen", "nachher"]);
      assert.deepEqual(bodies(await sync(carl, carlSince)), ["nachher"]);
    } finally {
      rooms.eventsBetween = original;
    }
    assert.equal(reads, 1, "one timeline read for both");
  });

  test("a long-poll waiting for its turn to be built answers with what was sent meanwhile", async () => {
    const bertSince = (await sync(bert)).next_batch;
    const carlSince = (await sync(carl)).next_batch;
    // Every build slot taken, as in a wave of thousands: the long-polls woken below queue up.
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const holders = Array.from({ length: BUILDS_AT_ONCE }, () => server().services.sync.building.run(() => gate));
    const longPoll = (who: Login, since: string) => call("GET", `/_matrix/client/v3/sync?${new URLSearchParams({ timeout: "20000", since })}`, who.access_token);
    const waiting = async () => (await server().services.metrics.syncWaiters.get()).values[0]?.value ?? 0;
    const before = await waiting();
    const answers = [longPoll(bert, bertSince), longPoll(carl, carlSince)];
    try {
      // Both park before anything is sent, so each is woken by the first message.
      for (let i = 0; i < 500 && (await waiting()) < before + 2; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(await waiting(), before + 2);
      await say("Lagemeldung");
      await say("Nachtrag");
      // Presence alone does not extend the answers: members woken together keep one upper
      // position, and with it their shared page, while presence refreshes trickle in.
      const status = await call("PUT", `/_matrix/client/v3/presence/${enc(anna.user_id)}/status`, anna.access_token, { presence: "unavailable", status_msg: "im Einsatz" });
      assert.equal(status.status, 200);
      // Woken by the first, queued behind the held slots while the second was acknowledged.
      assert.equal(server().services.sync.building.queued, 2);
    } finally {
      release();
      await Promise.all(holders);
    }
    const [bertAnswer, carlAnswer] = await Promise.all(answers);
    for (const res of [bertAnswer!, carlAnswer!]) {
      assert.equal(res.status, 200);
      assert.deepEqual(bodies(res.body), ["Lagemeldung", "Nachtrag"], "the second message rides along with the first");
    }
    assert.equal(bertAnswer!.body.next_batch, carlAnswer!.body.next_batch);
    const annaStatus = (body: Json) => body.presence.events.find((e: Json) => e.sender === anna.user_id)?.content.status_msg;
    assert.equal(annaStatus(bertAnswer!.body), undefined);
    assert.equal(annaStatus(await sync(bert, bertAnswer!.body.next_batch)), "im Einsatz", "the presence change comes with the next sync");
  });

  test("a wave wider than the build line: the rest wait in the notifier's line, and every member gets the message", async () => {
    const n = 2 * BUILDS_AT_ONCE + 8;
    const members: Login[] = [];
    for (let i = 0; i < n; i++) {
      await server().createUser(`st_wave${i}`);
      const who = await server().login(`st_wave${i}`);
      assert.equal((await call("POST", `/_matrix/client/v3/join/${enc(roomId)}`, who.access_token, {})).status, 200);
      members.push(who);
    }
    // Offline: a presence change per member would move the stream past the others' tokens.
    const quiet = async (who: Login) => (await call("GET", "/_matrix/client/v3/sync?timeout=0&set_presence=offline", who.access_token)).body.next_batch as string;
    await Promise.all(members.map(quiet));
    const tokens = await Promise.all(members.map(quiet));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const holders = Array.from({ length: BUILDS_AT_ONCE }, () => server().services.sync.building.run(() => gate));
    const waiting = async () => (await server().services.metrics.syncWaiters.get()).values[0]?.value ?? 0;
    const before = await waiting();
    const answers = members.map((who, i) => call("GET", `/_matrix/client/v3/sync?${new URLSearchParams({ timeout: "20000", since: tokens[i]!, set_presence: "offline" })}`, who.access_token));
    try {
      for (let i = 0; i < 500 && (await waiting()) < before + n; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(await waiting(), before + n);
      await say("Großlage");
      for (let i = 0; i < 100 && server().services.sync.building.queued < BUILDS_AT_ONCE; i++) await new Promise((r) => setTimeout(r, 10));
      // As many lined up for a build as the line holds; the others were not resumed yet.
      assert.equal(server().services.sync.building.queued, BUILDS_AT_ONCE);
      assert.equal(server().services.notifier.wakesQueued, n - BUILDS_AT_ONCE);
    } finally {
      release();
      await Promise.all(holders);
    }
    for (const res of await Promise.all(answers)) {
      assert.equal(res.status, 200);
      assert.deepEqual(bodies(res.body), ["Großlage"]);
    }
    assert.equal(server().services.notifier.wakesQueued, 0);
  });
});
