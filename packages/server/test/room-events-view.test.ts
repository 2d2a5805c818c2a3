import { before, test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { api, enc } from "./support/http.js";
import { FakeDevice } from "./support/crypto-clients.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
type Login = { user_id: string; access_token: string; device_id: string };

type Server = Parameters<Parameters<typeof describeEachDatabase>[1]>[0]["server"];

/** anna, signed in, and a private room of hers; `send` puts a message into it over HTTP. */
function withAnnasRoom(server: Server, name: string) {
  const ctx = { anna: undefined as unknown as Login, roomId: "" };
  before(async () => {
    await server().createUser("anna");
    ctx.anna = await server().login("anna");
    const r = await api<Json>(server().url, "POST", "/_matrix/client/v3/createRoom", { token: ctx.anna.access_token, body: { preset: "private_chat", name } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    ctx.roomId = r.body.room_id;
  });
  const send = (txn: string, body: string) => api<Json>(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(ctx.roomId)}/send/m.room.message/${txn}`, { token: ctx.anna.access_token, body: { msgtype: "m.text", body } });
  return { ctx, send };
}

/**
 * The write path keeps a view of each room it writes (rooms/room-events.ts, RoomSnapshot). On
 * PostgreSQL a client's message is written on that view without reading the room first, on the
 * condition that the room's head is still the one the view names. A write that is rolled back
 * after its event was built leaves a view naming an event the database never kept: the next
 * message must notice, and follow the last event that was kept. Messages that share a commit run
 * there without savepoints first (storage/stream.ts, replayable writes): one refused among them
 * must leave the others as if it had never been sent.
 */
describeEachDatabase("room events: cached views of rooms, and messages sharing a commit", ({ server }) => {
  const { ctx, send } = withAnnasRoom(server, "Streife 12");
  const stored = (eventId: string) => server().services.storage.db.selectFrom("events").select(["stream_ordering", "depth", "json"]).where("event_id", "=", eventId).executeTakeFirstOrThrow();

  test("a message after a rolled-back one follows the last kept event, at the next position", async () => {
    // Two messages: the second finds the room where the first left it, so the third may be
    // written on the cached view.
    for (const i of [1, 2]) assert.equal((await send(`v${i}`, `Lage ${i}`)).status, 200);
    const last = (await send("v3", "Lage 3")).body.event_id as string;
    const before = await stored(last);

    let failed = 0;
    let refuse = true;
    server().services.roomEvents.onPersist(async (ctx) => {
      if (refuse && ctx.event.pdu.content.body === "verworfen") {
        failed++;
        throw new Error("a hook refuses this event after its rows were written");
      }
    });
    const refused = await send("v4", "verworfen");
    assert.equal(refused.status, 500, JSON.stringify(refused.body));
    assert.equal(failed, 1);
    assert.equal(await server().services.stream.current(), Number(before.stream_ordering), "the rolled-back message kept no position");

    const next = await send("v5", "Lage 5");
    assert.equal(next.status, 200, JSON.stringify(next.body));
    const after = await stored(next.body.event_id);
    assert.deepEqual((JSON.parse(after.json) as Json).prev_events, [last]);
    assert.equal(Number(after.depth), Number(before.depth) + 1);
    assert.equal(Number(after.stream_ordering), Number(before.stream_ordering) + 1);
    // The refused transaction id was not recorded: trying it again writes the message once.
    refuse = false;
    const retried = await send("v4", "verworfen");
    assert.equal(retried.status, 200, JSON.stringify(retried.body));
    assert.deepEqual((JSON.parse((await stored(retried.body.event_id)).json) as Json).prev_events, [next.body.event_id]);
  });

  test("an outsider's message among members' messages in one commit is refused alone", async () => {
    const outsider = await server().createUser("olaf");
    const events = server().services.roomEvents;
    const persisted = async () => (await server().services.metrics.eventsPersisted.get()).values[0]?.value ?? 0;
    const countedBefore = await persisted();
    const before = await server().services.stream.current();
    const msg = (sender: string, txnId: string) => ({ roomId: ctx.roomId, sender, type: "m.room.message", content: { msgtype: "m.text", body: txnId }, txn: { deviceId: "D", txnId } });
    // Queued in one tick, so they share one transaction (on PostgreSQL first run without
    // savepoints, then again with them once the outsider's write has failed).
    const results = await Promise.allSettled([events.send(msg(ctx.anna.user_id, "b1"), { asMember: true }), events.send(msg(outsider, "b2"), { asMember: true }), events.send(msg(ctx.anna.user_id, "b3"), { asMember: true })]);
    assert.equal(results[0]!.status, "fulfilled");
    assert.equal(results[2]!.status, "fulfilled");
    assert.equal(results[1]!.status, "rejected");
    assert.equal(((results[1] as PromiseRejectedResult).reason as { errcode?: string }).errcode, "M_FORBIDDEN");
    const [first, third] = [results[0], results[2]].map((r) => (r as PromiseFulfilledResult<{ eventId: string; streamOrdering: number }>).value);
    assert.deepEqual([first!.streamOrdering, third!.streamOrdering], [before + 1, before + 2]);
    assert.equal(await server().services.stream.current(), before + 2);
    assert.deepEqual((JSON.parse((await stored(third!.eventId)).json) as Json).prev_events, [first!.eventId]);
    const fromOutsider = await server().services.storage.db.selectFrom("events").select("event_id").where("sender", "=", outsider).execute();
    assert.deepEqual(fromOutsider, []);
    // Counted once each when committed, although on PostgreSQL the first ran twice; a repeat of a
    // transaction id stores nothing new and is not counted.
    assert.equal(await persisted(), countedBefore + 2);
    assert.equal((await events.send(msg(ctx.anna.user_id, "b1"), { asMember: true })).eventId, first!.eventId);
    assert.equal(await persisted(), countedBefore + 2);
  });
});

/**
 * A server of its own: after a batch had to run again, the stream keeps savepoints for a second
 * (StreamWriter.savepointsUntil), and the batch below must be the first to fail.
 */
describeEachDatabase("room events: a receipt and messages sharing a commit", ({ server }) => {
  const { ctx, send } = withAnnasRoom(server, "Quittungen");

  test("a receipt for an unknown event, in one commit with messages and a good receipt, is refused alone", async () => {
    const events = server().services.roomEvents;
    const ephemeral = server().services.ephemeral;
    const before = await server().services.stream.current();
    const msg = (txnId: string) => ({ roomId: ctx.roomId, sender: ctx.anna.user_id, type: "m.room.message", content: { msgtype: "m.text", body: txnId }, txn: { deviceId: "D", txnId } });
    const read = (await send("r0", "Lage vor den Quittungen")).body.event_id as string;
    // Queued in one tick: on PostgreSQL messages and receipts are both replayable, so the batch
    // first runs without savepoints and again with them once the bad receipt has failed.
    const [m1, bad, good, m2] = await Promise.allSettled([
      events.send(msg("q1"), { asMember: true }),
      ephemeral.setReceipt(ctx.anna.user_id, ctx.roomId, "m.read", "$nicht-vorhanden"),
      ephemeral.setReceipt(ctx.anna.user_id, ctx.roomId, "m.read", read),
      events.send(msg("q2"), { asMember: true }),
    ]);
    assert.equal(bad.status, "rejected");
    assert.equal(((bad as PromiseRejectedResult).reason as { errcode?: string }).errcode, "M_NOT_FOUND");
    assert.deepEqual(good, { status: "fulfilled", value: true });
    const [p1, p2] = [m1, m2].map((r) => {
      assert.equal(r.status, "fulfilled");
      return (r as PromiseFulfilledResult<{ streamOrdering: number }>).value.streamOrdering;
    });
    // The message r0 took before + 1; then q1, the good receipt and q2, with no gap.
    assert.deepEqual([p1, p2], [before + 2, before + 4]);
    assert.equal(await server().services.stream.current(), before + 4);
    const receipt = await server().services.storage.db.selectFrom("receipts").select(["event_id", "stream_pos"]).where("room_id", "=", ctx.roomId).where("user_id", "=", ctx.anna.user_id).where("receipt_type", "=", "m.read").executeTakeFirstOrThrow();
    assert.deepEqual([receipt.event_id, Number(receipt.stream_pos)], [read, before + 3]);
  });
});

/**
 * What clients write besides messages: in real traffic typing, presence, to-device messages,
 * account data, read markers and key uploads arrive between messages, and on PostgreSQL one write
 * not marked replayable keeps its whole batch's savepoints, a round trip per write under the
 * stream lock. A server of its own, so no rerun before it keeps savepoints (see above).
 */
describeEachDatabase("room events: what else clients write shares the messages' commit", ({ server, kind }) => {
  const { ctx, send } = withAnnasRoom(server, "Alltag");
  let device: FakeDevice;
  let read = "";
  before(async () => {
    device = new FakeDevice(ctx.anna.user_id, ctx.anna.device_id);
    await server().services.e2ee.keys.upload(ctx.anna.user_id, ctx.anna.device_id, { device_keys: device.deviceKeys() });
    read = (await send("a0", "vorher")).body.event_id as string;
  });

  const batches = async () => new Map((await server().services.metrics.streamBatches.get()).values.map((v) => [String(v.labels.run), v.value]));

  /**
   * Queues one of each kind of write (`round` keeps ids apart), plus `extra`, behind a write that
   * holds the stream until all of them have queued up, so they share the next batch. Returns
   * their outcomes, the position before them, and how many batches ran in each way meanwhile.
   */
  async function oneBatch(round: string, extra: Array<() => Promise<unknown>> = []) {
    const s = server().services;
    const anna = { userId: ctx.anna.user_id, deviceId: ctx.anna.device_id };
    const countsBefore = await batches();
    let started = false;
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const blocker = s.stream.write(async () => {
      started = true;
      await gate;
    });
    await until(() => started);
    const before = await s.stream.current();
    const msg = (txnId: string) => ({ roomId: ctx.roomId, sender: anna.userId, type: "m.room.message", content: { msgtype: "m.text", body: txnId }, txn: { deviceId: anna.deviceId, txnId } });
    const writes = [
      s.roomEvents.send(msg(`${round}1`), { asMember: true }),
      s.ephemeral.setTyping(ctx.roomId, anna.userId, true, 10_000),
      s.ephemeral.setPresence(anna.userId, round === "a" ? "unavailable" : "online", `im Einsatz ${round}`),
      s.e2ee.toDevice.send(anna, "org.revier.test", `td-${round}`, { [anna.userId]: { "*": { round } } }),
      s.accountData.set(anna.userId, null, "org.revier.test", { round }),
      s.accountData.update(anna.userId, ctx.roomId, "m.tag", (current) => ({ tags: { ...(current?.tags as object), [`u.${round}`]: {} } })),
      s.ephemeral.setReceipt(anna.userId, ctx.roomId, "m.fully_read", read),
      s.e2ee.keys.upload(anna.userId, anna.deviceId, { one_time_keys: device.oneTimeKeys(2) }),
      ...extra.map((f) => f()),
      s.roomEvents.send(msg(`${round}2`), { asMember: true }),
    ];
    await until(() => s.stream.queued === writes.length);
    open();
    await blocker;
    const results = await Promise.allSettled(writes);
    const counts = await batches();
    const delta = (run: string) => (counts.get(run) ?? 0) - (countsBefore.get(run) ?? 0);
    assert.equal(delta("single"), 1, "the blocker ran alone");
    return { results, before, delta };
  }

  async function assertStored(round: string, otks: number) {
    const s = server().services;
    const annaId = ctx.anna.user_id;
    const db = s.storage.db;
    assert.ok(await db.selectFrom("typing").select("expires_ts").where("room_id", "=", ctx.roomId).where("user_id", "=", annaId).where("expires_ts", ">", Date.now()).executeTakeFirst());
    assert.equal((await s.ephemeral.getPresence(annaId))?.status_msg, `im Einsatz ${round}`);
    const inbox = await db.selectFrom("device_inbox").select("content").where("user_id", "=", annaId).where("type", "=", "org.revier.test").execute();
    assert.deepEqual(
      inbox.filter((r) => (JSON.parse(r.content) as Json).round === round).length,
      1,
      "the to-device message is queued once",
    );
    assert.deepEqual(await s.accountData.get(annaId, null, "org.revier.test"), { round });
    assert.ok(((await s.accountData.get(annaId, ctx.roomId, "m.tag"))?.tags as Json)[`u.${round}`]);
    assert.deepEqual(await s.accountData.get(annaId, ctx.roomId, "m.fully_read"), { event_id: read });
    const keys = await db.selectFrom("e2e_one_time_keys").select("key_id").where("user_id", "=", annaId).where("device_id", "=", ctx.anna.device_id).execute();
    assert.equal(keys.length, otks);
  }

  test("typing, presence, to-device, account data, tags, read markers and key uploads run with messages in one batch, on PostgreSQL without savepoints", async () => {
    const { results, before, delta } = await oneBatch("a", [() => server().services.ephemeral.setReceipt(ctx.anna.user_id, ctx.roomId, "m.read", read)]);
    assert.deepEqual(
      results.map((r) => r.status),
      results.map(() => "fulfilled"),
      JSON.stringify(results.filter((r) => r.status === "rejected")),
    );
    // Every one of them took a position, with no gap.
    assert.equal(await server().services.stream.current(), before + results.length);
    assert.equal(delta("rerun"), 0);
    if (kind === "postgres") assert.deepEqual([delta("plain"), delta("savepoints")], [1, 0], "one batch, without savepoints");
    else assert.deepEqual([delta("plain"), delta("savepoints")], [0, 1], "SQLite keeps its savepoints");
    await assertStored("a", 2);
  });

  test("when one write of such a batch fails, the others still happen exactly once", async () => {
    // Last in this suite: after a rerun, batches keep their savepoints for a second.
    const { results, before, delta } = await oneBatch("b", [() => server().services.ephemeral.setReceipt(ctx.anna.user_id, ctx.roomId, "m.read", "$nicht-vorhanden")]);
    const failed = results.flatMap((r, i) => (r.status === "rejected" ? [i] : []));
    assert.deepEqual(failed, [8], JSON.stringify(results.filter((r) => r.status === "rejected")));
    assert.equal(((results[8] as PromiseRejectedResult).reason as { errcode?: string }).errcode, "M_NOT_FOUND");
    // Besides the failed receipt, the unchanged fully-read marker and the repeated typing notice
    // (only its expiry moves) take no position.
    assert.equal(await server().services.stream.current(), before + results.length - 3);
    if (kind === "postgres") assert.deepEqual([delta("plain"), delta("rerun"), delta("savepoints")], [0, 1, 0], "ran without savepoints, then again with them");
    else assert.deepEqual([delta("rerun"), delta("savepoints")], [0, 1]);
    await assertStored("b", 4);
  });
});

/** Waits (polling) until `check` holds; fails after 10 s. */
async function until(check: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out waiting for the writes to queue up");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
