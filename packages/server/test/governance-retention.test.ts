import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { describeEachDatabase } from "./support/suite.js";
import { TEST_PASSWORD } from "./support/server.js";
import { api, enc } from "./support/http.js";
import { startClient, timelineBodies, waitFor, type Client } from "./support/sdk.js";
import type { Role } from "../src/users/accounts.js";
import { Retention } from "../src/governance/retention.js";

const ADMIN = "/_revier/admin/v1";
const V3 = "/_matrix/client/v3";
const DAY = 86_400_000;

interface Ev {
  event_id: string;
  type: string;
  state_key?: string;
  content: Record<string, unknown>;
  unsigned?: Record<string, unknown>;
}

function people(server: () => { services: { accounts: { create(l: string, o: { password: string; role: Role }): Promise<{ user_id: string }> } }; login(l: string): Promise<{ access_token: string }> }) {
  const tokens = new Map<string, string>();
  const ids = new Map<string, string>();
  return {
    async create(list: Array<[string, Role]>) {
      for (const [localpart, role] of list) {
        ids.set(localpart, (await server().services.accounts.create(localpart, { password: TEST_PASSWORD, role })).user_id);
        tokens.set(localpart, (await server().login(localpart)).access_token);
      }
    },
    tok: (who: string) => tokens.get(who)!,
    uid: (who: string) => ids.get(who)!,
  };
}

describeEachDatabase("governance: retention", ({ server }) => {
  const p = people(server);
  const clients: Client[] = [];
  let n = 0;

  before(async () => {
    await p.create([
      ["chefin", "admin"],
      ["anna", "user"],
      ["bert", "user"],
    ]);
  });
  after(() => {
    for (const c of clients) c.stopClient();
  });

  async function call<T = Record<string, unknown>>(who: string | null, method: string, path: string, body?: unknown) {
    return api<T>(server().url, method, path, { ...(who ? { token: p.tok(who) } : {}), ...(body !== undefined ? { body } : {}) });
  }
  async function ok<T = Record<string, unknown>>(who: string, method: string, path: string, body?: unknown): Promise<T> {
    const res = await call<T>(who, method, path, body);
    assert.equal(res.status, 200, `${method} ${path}: ${JSON.stringify(res.body)}`);
    return res.body;
  }
  async function send(who: string, roomId: string, content: Record<string, unknown>): Promise<string> {
    return (await ok<{ event_id: string }>(who, "PUT", `${V3}/rooms/${enc(roomId)}/send/m.room.message/t${++n}`, content)).event_id;
  }
  async function state(who: string, roomId: string, type: string, content: Record<string, unknown>): Promise<string> {
    return (await ok<{ event_id: string }>(who, "PUT", `${V3}/rooms/${enc(roomId)}/state/${type}`, content)).event_id;
  }
  async function upload(who: string, text: string): Promise<{ uri: string; id: string }> {
    const res = await api<{ content_uri: string }>(server().url, "POST", "/_matrix/media/v3/upload", { token: p.tok(who), rawBody: Buffer.from(text), headers: { "content-type": "text/plain" } });
    assert.equal(res.status, 200);
    return { uri: res.body.content_uri, id: res.body.content_uri.split("/").pop()! };
  }
  async function download(id: string): Promise<number> {
    return (await call("bert", "GET", `/_matrix/client/v1/media/download/${server().config.serverName}/${id}`)).status;
  }
  async function rowExists(eventId: string): Promise<boolean> {
    return (await server().services.storage.db.selectFrom("events").select("event_id").where("event_id", "=", eventId).executeTakeFirst()) !== undefined;
  }

  test("while the policy has no retention, the job deletes nothing", async () => {
    const before = await server().services.audit.count();
    assert.equal(await server().services.retention.purge(Date.now() + 10_000 * DAY), null);
    assert.equal(await server().services.audit.count(), before);
  });

  test("events and media older than the limit are gone after the job runs, newer ones remain; /messages and /sync still work; the audit entry has counts only", async () => {
    await ok("chefin", "PUT", `${ADMIN}/policy`, { retention_days: 30 });

    // ---- before the cutoff -------------------------------------------------------------
    const oldMedia = await upload("anna", "alter Tatortbericht");
    const avatar = await upload("anna", "Profilbild");
    const roomId = (await ok<{ room_id: string }>("anna", "POST", `${V3}/createRoom`, { preset: "private_chat", name: "Alt", invite: [p.uid("bert")] })).room_id;
    await ok("bert", "POST", `${V3}/rooms/${enc(roomId)}/join`, {});
    // A profile change rewrites anna's member event: the creation one becomes superseded history.
    await ok("anna", "PUT", `${V3}/profile/${enc(p.uid("anna"))}/avatar_url`, { avatar_url: avatar.uri });
    const topic1 = await state("anna", roomId, "m.room.topic", { topic: "Thema eins" });
    const topic2 = await state("anna", roomId, "m.room.topic", { topic: "Thema zwei" });
    const nameOld = (await server().services.rooms.stateEvent(roomId, "m.room.name", ""))!.event_id;
    const alt1 = await send("anna", roomId, { msgtype: "m.file", body: "Tatort alt eins", url: oldMedia.uri });
    const alt2 = await send("anna", roomId, { msgtype: "m.text", body: "Tatort alt zwei" });
    await ok("bert", "POST", `${V3}/rooms/${enc(roomId)}/receipt/m.read/${enc(alt2)}`, {});
    const oldSince = (await ok<{ next_batch: string }>("bert", "GET", `${V3}/sync?timeout=0`)).next_batch;
    const annaCreationJoin = (await server().services.storage.db
      .selectFrom("events")
      .select("event_id")
      .where("room_id", "=", roomId)
      .where("type", "=", "m.room.member")
      .where("state_key", "=", p.uid("anna"))
      .orderBy("stream_ordering")
      .executeTakeFirst())!.event_id;
    const bertInvite = (await server().services.storage.db.selectFrom("events").select("event_id").where("room_id", "=", roomId).where("state_key", "=", p.uid("bert")).where("membership", "=", "invite").executeTakeFirst())!.event_id;

    await sleep(5);
    const cutoff = Date.now();
    await sleep(5);

    // ---- after the cutoff --------------------------------------------------------------
    const newMedia = await upload("anna", "neuer Bericht");
    const neu1 = await send("anna", roomId, { msgtype: "m.file", body: "Frisch eins", url: newMedia.uri });
    const nameNew = await state("anna", roomId, "m.room.name", { name: "Neu" });

    const seq = await server().services.audit.count();
    const result = await server().services.retention.purge(cutoff + 30 * DAY);
    assert.deepEqual(result, { events_deleted: 4, events_redacted: 1, media_deleted: 1, cutoff_ts: cutoff });

    // Gone: the old message, the superseded topic and member events. Kept: current state, and the
    // name that was in force at the cutoff (the state of every retained position needs it).
    for (const gone of [alt1, topic1, annaCreationJoin, bertInvite]) assert.equal(await rowExists(gone), false, gone);
    for (const kept of [topic2, nameOld, nameNew, neu1]) assert.equal(await rowExists(kept), true, kept);
    assert.equal((await call("bert", "GET", `${V3}/rooms/${enc(roomId)}/event/${enc(alt1)}`)).status, 404);
    // Nor do the rows that name removed events: push actions and send-idempotency records.
    const db = server().services.storage.db;
    for (const table of ["event_push_actions", "event_push_shared"] as const) {
      assert.equal((await db.selectFrom(table).select("event_id").where("event_id", "in", [alt1, alt2]).execute()).length, 0, table);
    }
    const neu1Pos = (await db.selectFrom("events").select("stream_ordering").where("event_id", "=", neu1).executeTakeFirstOrThrow()).stream_ordering;
    assert.deepEqual(await server().services.push.notifiedAt(Number(neu1Pos)), [{ user_id: p.uid("bert"), highlight: 0 }], "bert's notification for the new message stays");
    const txns = (await db.selectFrom("event_txns").select("result").where("user_id", "=", p.uid("anna")).execute()).map((r) => r.result).join();
    assert.ok(!txns.includes(alt1) && txns.includes(neu1));
    // The read receipt still points at alt2: its row stays as a stub without content.
    const stub = await ok<Ev>("bert", "GET", `${V3}/rooms/${enc(roomId)}/event/${enc(alt2)}`);
    assert.deepEqual(stub.content, {});
    assert.ok(stub.unsigned?.redacted_because, "clients see the stub as redacted");

    assert.equal(await download(oldMedia.id), 404);
    assert.equal(await download(newMedia.id), 200);
    assert.equal(await download(avatar.id), 200, "an avatar in use is kept");

    const entries = await server().services.audit.list({ from: seq });
    assert.equal(entries.length, 1);
    assert.equal(entries[0]!.action, "retention.purge");
    assert.equal(entries[0]!.actor, "system:retention");
    assert.equal(entries[0]!.target, null);
    assert.deepEqual(entries[0]!.details, { retention_days: 30, cutoff_ts: cutoff, events_deleted: 4, events_redacted: 1, media_deleted: 1 });
    assert.ok(Object.values(entries[0]!.details).every((v) => typeof v === "number"), "counts only");

    // /messages: the retained history, then the end; nothing of the old content.
    const messages = await ok<{ chunk: Ev[]; end?: string }>("bert", "GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=100`);
    const text = JSON.stringify(messages);
    assert.doesNotMatch(text, /Tatort alt|Thema eins/);
    assert.ok(messages.chunk.some((e) => e.content.body === "Frisch eins"));
    assert.equal(messages.end, undefined, "pagination reaches the start");
    assert.equal((await call("bert", "GET", `${V3}/rooms/${enc(roomId)}/context/${enc(neu1)}?limit=10`)).status, 200);

    // /sync: initial and incremental from a token older than the purge.
    const initial = await ok<{ next_batch: string; rooms: { join: Record<string, { timeline: { events: Ev[] }; state: { events: Ev[] } }> } }>("bert", "GET", `${V3}/sync?timeout=0`);
    assert.doesNotMatch(JSON.stringify(initial), /Tatort alt|Thema eins/);
    const room = initial.rooms.join[roomId]!;
    const all = [...room.state.events, ...room.timeline.events];
    assert.ok(all.some((e) => e.type === "m.room.topic" && e.content.topic === "Thema zwei"));
    assert.ok(all.some((e) => e.type === "m.room.member" && e.state_key === p.uid("anna") && e.content.membership === "join"));
    assert.ok(room.timeline.events.some((e) => e.content.body === "Frisch eins"));
    const incremental = await ok<{ rooms: { join: Record<string, { timeline: { events: Ev[] } }> } }>("bert", "GET", `${V3}/sync?timeout=0&since=${oldSince}`);
    assert.ok(incremental.rooms.join[roomId]!.timeline.events.some((e) => e.content.body === "Frisch eins"));
    // Stream positions go on: a new message reaches the next incremental sync.
    await send("anna", roomId, { msgtype: "m.text", body: "Frisch zwei" });
    const next = await ok<{ rooms: { join: Record<string, { timeline: { events: Ev[] } }> } }>("bert", "GET", `${V3}/sync?timeout=0&since=${initial.next_batch}`);
    assert.deepEqual(next.rooms.join[roomId]!.timeline.events.map((e) => e.content.body), ["Frisch zwei"]);
    const client = await startClient(server(), "bert");
    clients.push(client);
    await waitFor("a matrix-js-sdk client syncs the purged room", () => timelineBodies(client, roomId).includes("Frisch zwei"));

    // A second run finds nothing and writes no entry; once the receipt moves on, the stub goes too.
    assert.deepEqual(await server().services.retention.purge(cutoff + 30 * DAY), { events_deleted: 0, events_redacted: 0, media_deleted: 0, cutoff_ts: cutoff });
    assert.equal(await server().services.audit.count(), seq + 1);
    await ok("bert", "POST", `${V3}/rooms/${enc(roomId)}/receipt/m.read/${enc(neu1)}`, {});
    assert.deepEqual(await server().services.retention.purge(cutoff + 30 * DAY), { events_deleted: 1, events_redacted: 0, media_deleted: 0, cutoff_ts: cutoff });
    assert.equal(await rowExists(alt2), false);
    assert.equal(await server().services.audit.count(), seq + 2);
    await ok("chefin", "PUT", `${ADMIN}/policy`, {});
  });
});

describeEachDatabase(
  "governance: rooms show the retention policy as m.room.retention",
  ({ server }) => {
    const p = people(server);

    before(async () => {
      await p.create([
        ["chefin", "admin"],
        ["anna", "user"],
      ]);
    });

    async function retentionOf(roomId: string): Promise<Record<string, unknown> | undefined> {
      const res = await api<Record<string, unknown>>(server().url, "GET", `${V3}/rooms/${enc(roomId)}/state/m.room.retention`, { token: p.tok("anna") });
      return res.status === 200 ? res.body : undefined;
    }
    async function createRoom(body: Record<string, unknown>): Promise<string> {
      const res = await api<{ room_id: string }>(server().url, "POST", `${V3}/createRoom`, { token: p.tok("anna"), body });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return res.body.room_id;
    }
    async function setPolicy(policy: Record<string, unknown>): Promise<void> {
      const res = await api(server().url, "PUT", `${ADMIN}/policy`, { token: p.tok("chefin"), body: policy });
      assert.equal(res.status, 200);
    }

    test("existing rooms follow policy changes, new rooms start with it, and the policy change is the one audit entry", async () => {
      const existing = await createRoom({ preset: "private_chat" });
      assert.equal(await retentionOf(existing), undefined);

      const seq = await server().services.audit.count();
      await setPolicy({ retention_days: 7 });
      await waitFor("the existing room shows 7 days", async () => (await retentionOf(existing))?.max_lifetime === 7 * DAY);
      const fresh = await createRoom({ preset: "private_chat", initial_state: [{ type: "m.room.retention", content: { max_lifetime: DAY } }] });
      assert.deepEqual(await retentionOf(fresh), { max_lifetime: 7 * DAY }, "the organisation's value, not the requested one");
      const entries = await server().services.audit.list({ from: seq });
      assert.deepEqual(
        entries.map((e) => e.action),
        ["policy.update"],
      );

      await setPolicy({});
      await waitFor("rooms show no retention once it is off", async () => JSON.stringify(await retentionOf(existing)) === "{}" && JSON.stringify(await retentionOf(fresh)) === "{}");
      assert.equal(await retentionOf(await createRoom({ preset: "private_chat" })), undefined);
    });
  },
  { "retention.interval_ms": 1000 },
);

describeEachDatabase("governance: retention works in small batches", ({ server }) => {
  const p = people(server);

  before(async () => {
    await p.create([
      ["chefin", "admin"],
      ["anna", "user"],
      ["bert", "user"],
    ]);
  });

  test("many expired events and media across batch boundaries: all of them go, the state at the cutoff and everything newer stays", async () => {
    const s = server().services;
    const token = p.tok("anna");
    const v3 = async (method: string, path: string, body?: unknown) => {
      const res = await api<{ event_id: string; room_id: string; content_uri: string }>(server().url, method, `${V3}${path}`, { token, ...(body !== undefined ? { body } : {}) });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return res.body;
    };
    const upload = async (text: string) => {
      const res = await api<{ content_uri: string }>(server().url, "POST", "/_matrix/media/v3/upload", { token, rawBody: Buffer.from(text), headers: { "content-type": "text/plain" } });
      return res.body.content_uri.split("/").pop()!;
    };
    assert.equal((await api(server().url, "PUT", `${ADMIN}/policy`, { token: p.tok("chefin"), body: { retention_days: 1 } })).status, 200);
    const roomId = (await v3("POST", "/createRoom", { preset: "private_chat", name: "Viel", invite: [p.uid("bert")] })).room_id;
    const bert = await api(server().url, "POST", `${V3}/rooms/${enc(roomId)}/join`, { token: p.tok("bert"), body: {} });
    assert.equal(bert.status, 200);
    const oldMedia: string[] = [];
    for (let i = 0; i < 5; i++) oldMedia.push(await upload(`alt ${i}`));
    for (let i = 0; i < 23; i++) await v3("PUT", `/rooms/${enc(roomId)}/send/m.room.message/old${i}`, { msgtype: "m.text", body: `alte Nachricht ${i}` });
    for (let i = 0; i < 6; i++) await v3("PUT", `/rooms/${enc(roomId)}/state/m.room.topic`, { topic: `altes Thema ${i}` });
    await sleep(5);
    const cutoff = Date.now();
    await sleep(5);
    const newMedia = await upload("neu");
    for (let i = 0; i < 4; i++) await v3("PUT", `/rooms/${enc(roomId)}/send/m.room.message/new${i}`, { msgtype: "m.text", body: `neue Nachricht ${i}` });
    const before = await s.storage.db.selectFrom("events").select("event_id").where("room_id", "=", roomId).execute();

    const retention = new Retention(s.storage.db, s.stream, s.rooms, s.media, s.policy, s.audit, server().config.serverName, { eventBatch: 3, mediaBatch: 2 });
    const result = await retention.purge(cutoff + 1 * DAY);
    // 23 messages, 5 superseded topics, bert's invite; 5 media.
    assert.deepEqual(result, { events_deleted: 29, events_redacted: 0, media_deleted: 5, cutoff_ts: cutoff });

    const after = await s.storage.db.selectFrom("events").select(["event_id", "json"]).where("room_id", "=", roomId).orderBy("stream_ordering").execute();
    assert.equal(after.length, before.length - 29);
    const text = after.map((r) => r.json).join("\n");
    assert.doesNotMatch(text, /alte Nachricht|altes Thema [0-4]/);
    assert.match(text, /altes Thema 5/, "the current topic stays");
    for (let i = 0; i < 4; i++) assert.match(text, new RegExp(`neue Nachricht ${i}`));
    for (const id of oldMedia) assert.equal(await s.media.get(id), undefined);
    assert.ok(await s.media.get(newMedia));
    const progress = await s.storage.db.selectFrom("retention_progress").select("position").executeTakeFirst();
    const firstNew = await s.storage.db.selectFrom("events").select("stream_ordering").where("origin_server_ts", ">=", cutoff).orderBy("stream_ordering").limit(1).executeTakeFirst();
    assert.ok(progress && firstNew && progress.position < firstNew.stream_ordering, "the walk stops before the first retained event");
    // The service's own job, with its normal batches, finds nothing left.
    assert.deepEqual(await s.retention.purge(cutoff + 1 * DAY), { events_deleted: 0, events_redacted: 0, media_deleted: 0, cutoff_ts: cutoff });
  });
});
