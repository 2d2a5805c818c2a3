import { after, before, describe, test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { MatrixError } from "@revier/protocol";
import { migrate, openPostgres, openSqlite, type Storage } from "../storage/database.js";
import { StreamWriter } from "../storage/stream.js";
import { LocalBus } from "../bus/local.js";
import type { WakeUp } from "../bus/bus.js";
import { AccountData } from "../users/account-data.js";
import { Ephemeral, MAX_TYPING_MS } from "./ephemeral.js";
import { DB_KINDS, PG_SKIP_MESSAGE, createScratchDatabase, postgresReachable, type DbKind } from "../../test/support/databases.js";

interface Env {
  storage: Storage;
  stream: StreamWriter;
  eph: Ephemeral;
  ad: AccountData;
  wakes: WakeUp[];
  close(): Promise<void>;
}

async function openEnv(kind: DbKind): Promise<Env | null> {
  let storage: Storage;
  let drop = async (): Promise<void> => undefined;
  if (kind === "sqlite") {
    storage = openSqlite(":memory:");
  } else {
    if (!(await postgresReachable())) return null;
    const scratch = await createScratchDatabase();
    storage = openPostgres(scratch.url);
    drop = scratch.drop;
  }
  await migrate(storage);
  const bus = new LocalBus();
  const wakes: WakeUp[] = [];
  // What a wake-up names; its range and presence mark are covered by the notifier and stream tests.
  bus.subscribe(({ position, rooms, users, ephemeralRooms }) => wakes.push({ position, rooms, users, ...(ephemeralRooms ? { ephemeralRooms } : {}) }));
  const stream = new StreamWriter(storage, bus);
  const ad = new AccountData(storage.db, stream);
  return {
    storage,
    stream,
    ad,
    eph: new Ephemeral(storage.db, stream, ad),
    wakes,
    close: async () => {
      await storage.close();
      await drop();
    },
  };
}

/** Persists a bare event row (enough for receipts) and returns its stream ordering. */
async function addEvent(e: Env, roomId: string, eventId: string, threadId: string | null = null): Promise<number> {
  return e.stream.write(async (w) => {
    const pos = w.next();
    await w.tx
      .insertInto("events")
      .values({
        stream_ordering: pos,
        event_id: eventId,
        room_id: roomId,
        type: "m.room.message",
        state_key: null,
        sender: "@sender:test",
        origin_server_ts: Date.now(),
        depth: pos,
        json: "{}",
        redacted_by: null,
        relates_to: threadId,
        rel_type: threadId !== null ? "m.thread" : null,
        thread_id: threadId,
        membership: null,
        txn_device: null,
        txn_id: null,
      })
      .execute();
    return pos;
  });
}

async function addMember(e: Env, roomId: string, userId: string, membership: string): Promise<void> {
  await e.storage.db
    .insertInto("room_members")
    .values({ room_id: roomId, user_id: userId, membership, event_id: `$m-${roomId}-${userId}`, stream_ordering: 0, sender: userId, displayname: null, avatar_url: null, forgotten: 0 })
    .execute();
}

function isMatrixError(code: string): (err: unknown) => boolean {
  return (err) => err instanceof MatrixError && err.errcode === code;
}

for (const kind of DB_KINDS) {
  describe(`Ephemeral on ${kind}`, () => {
    let env: Env | null = null;
    before(async () => {
      env = await openEnv(kind);
    });
    after(async () => {
      await env?.close();
    });

    function use(t: TestContext): Env | null {
      if (!env) t.skip(PG_SKIP_MESSAGE);
      return env;
    }

    // ---- receipts ---------------------------------------------------------------------------

    test("public receipts reach everyone, private ones only their owner", async (t) => {
      const e = use(t);
      if (!e) return;
      const room = "!rcpt:test";
      await addEvent(e, room, "$r1");
      const ev2 = await addEvent(e, room, "$r2");
      const since = await e.stream.current();

      assert.equal(await e.eph.setReceipt("@alice:test", room, "m.read", "$r1"), true);
      const pPublic = await e.stream.current();
      assert.equal(pPublic, since + 1);
      // The room's members as receipt news (long-polls that filter receipts out stay asleep), the
      // owner as any news: the receipt lowers their unread counts.
      assert.deepEqual(e.wakes.at(-1), { position: pPublic, rooms: [], users: ["@alice:test"], ephemeralRooms: [room] });

      assert.equal(await e.eph.setReceipt("@alice:test", room, "m.read.private", "$r2"), true);
      const pPrivate = await e.stream.current();
      assert.equal(pPrivate, since + 2);
      // Nobody else in the room is woken for a private receipt.
      assert.deepEqual(e.wakes.at(-1), { position: pPrivate, rooms: [], users: ["@alice:test"] });

      const forBob = await e.eph.receiptsSince([room], since, pPrivate, "@bob:test");
      const bobContent = forBob.get(room);
      assert.ok(bobContent);
      assert.deepEqual(Object.keys(bobContent), ["$r1"]);
      assert.deepEqual(Object.keys(bobContent.$r1 ?? {}), ["m.read"]);
      assert.equal(typeof bobContent.$r1?.["m.read"]?.["@alice:test"]?.ts, "number");
      assert.equal(bobContent.$r1?.["m.read"]?.["@alice:test"]?.thread_id, undefined);

      const forAlice = (await e.eph.receiptsSince([room], since, pPrivate, "@alice:test")).get(room);
      assert.ok(forAlice?.$r2?.["m.read.private"]?.["@alice:test"]);
      assert.ok(forAlice?.$r1?.["m.read"]?.["@alice:test"]);

      // Windows: only the public receipt lies in (since, pPublic]; nothing after pPrivate.
      assert.deepEqual(Object.keys((await e.eph.receiptsSince([room], since, pPublic, "@alice:test")).get(room) ?? {}), ["$r1"]);
      assert.equal((await e.eph.receiptsSince([room], pPrivate, pPrivate, "@alice:test")).size, 0);

      // Initial sync view: the same filtering applies.
      assert.deepEqual(Object.keys((await e.eph.receiptsFor([room], "@bob:test")).get(room) ?? {}), ["$r1"]);
      assert.deepEqual(Object.keys((await e.eph.receiptsFor([room], "@alice:test")).get(room) ?? {}).sort(), ["$r1", "$r2"]);

      assert.equal(await e.eph.lastReadStream("@alice:test", room), ev2);
    });

    test("threaded receipts are kept apart from unthreaded and main-timeline ones", async (t) => {
      const e = use(t);
      if (!e) return;
      const room = "!threads:test";
      const root = await addEvent(e, room, "$root");
      const inThread = await addEvent(e, room, "$t1", "$root");
      const main2 = await addEvent(e, room, "$m2");
      const since = await e.stream.current();
      const u = "@reader:test";

      await e.eph.setReceipt(u, room, "m.read", "$root");
      await e.eph.setReceipt(u, room, "m.read", "$t1", "$root");
      await e.eph.setReceipt(u, room, "m.read", "$m2", "main");
      const upto = await e.stream.current();
      assert.equal(upto, since + 3);

      const rows = await e.storage.db.selectFrom("receipts").select(["thread_id", "event_id"]).where("room_id", "=", room).where("user_id", "=", u).orderBy("thread_id").execute();
      assert.deepEqual(rows, [
        { thread_id: "", event_id: "$root" },
        { thread_id: "$root", event_id: "$t1" },
        { thread_id: "main", event_id: "$m2" },
      ]);

      const content = (await e.eph.receiptsSince([room], since, upto, "@other:test")).get(room);
      assert.deepEqual(Object.keys(content ?? {}).sort(), ["$m2", "$root", "$t1"]);
      assert.equal(content?.$root?.["m.read"]?.[u]?.thread_id, undefined);
      assert.equal(content?.$t1?.["m.read"]?.[u]?.thread_id, "$root");
      assert.equal(content?.$m2?.["m.read"]?.[u]?.thread_id, "main");

      // Main timeline: the further of the unthreaded and `main` receipts; the thread: its own or unthreaded.
      assert.equal(await e.eph.lastReadStream(u, room), main2);
      assert.equal(await e.eph.lastReadStream(u, room, "$root"), inThread);
      assert.equal(await e.eph.lastReadStream(u, room, "$elsewhere"), root);
      assert.equal(await e.eph.lastReadStream("@never:test", room), null);
    });

    test("receipts never move backwards and must point at an event of the room", async (t) => {
      const e = use(t);
      if (!e) return;
      const room = "!back:test";
      await addEvent(e, room, "$b1");
      const b2 = await addEvent(e, room, "$b2");
      await addEvent(e, "!elsewhere:test", "$foreign");
      const threadEvent = await addEvent(e, room, "$bt", "$b1");
      const u = "@back:test";

      await e.eph.setReceipt(u, room, "m.read", "$b2");
      const pos = await e.stream.current();
      assert.equal(await e.eph.setReceipt(u, room, "m.read", "$b1"), false);
      assert.equal(await e.eph.setReceipt(u, room, "m.read", "$b2"), false);
      assert.equal(await e.stream.current(), pos);
      assert.equal(await e.eph.lastReadStream(u, room), b2);

      await assert.rejects(e.eph.setReceipt(u, room, "m.read", "$missing"), isMatrixError("M_NOT_FOUND"));
      await assert.rejects(e.eph.setReceipt(u, room, "m.read", "$foreign"), isMatrixError("M_NOT_FOUND"));
      await assert.rejects(e.eph.setReceipt(u, room, "m.read", "$bt", "main"), isMatrixError("M_INVALID_PARAM"));
      await assert.rejects(e.eph.setReceipt(u, room, "m.read", "$bt", "$other-root"), isMatrixError("M_INVALID_PARAM"));
      await assert.rejects(e.eph.setReceipt(u, room, "m.fully_read", "$b2", "main"), isMatrixError("M_INVALID_PARAM"));
      assert.equal(await e.stream.current(), pos);

      // A threaded receipt in the thread does not move the main timeline.
      await e.eph.setReceipt(u, room, "m.read.private", "$bt", "$b1");
      assert.equal(await e.eph.lastReadStream(u, room), b2);
      assert.equal(await e.eph.lastReadStream(u, room, "$b1"), threadEvent);
    });

    test("m.fully_read is room account data, moves only forward, never an m.receipt", async (t) => {
      const e = use(t);
      if (!e) return;
      const room = "!fully:test";
      await addEvent(e, room, "$f1");
      await addEvent(e, room, "$f2");
      const u = "@fully:test";
      const since = await e.stream.current();

      assert.equal(await e.eph.setReceipt(u, room, "m.fully_read", "$f2"), true);
      const p = await e.stream.current();
      assert.equal(p, since + 1);
      assert.deepEqual(await e.ad.get(u, room, "m.fully_read"), { event_id: "$f2" });
      assert.deepEqual((await e.ad.changedSince(u, since, p)).rooms.get(room), [{ type: "m.fully_read", content: { event_id: "$f2" } }]);
      assert.equal((await e.eph.receiptsSince([room], since, p, u)).size, 0);

      assert.equal(await e.eph.setReceipt(u, room, "m.fully_read", "$f1"), false);
      assert.equal(await e.eph.setReceipt(u, room, "m.fully_read", "$f2"), false);
      assert.equal(await e.stream.current(), p);
      assert.deepEqual(await e.ad.get(u, room, "m.fully_read"), { event_id: "$f2" });
      assert.equal(await e.eph.lastReadStream(u, room), null);
    });

    test("receipt queries only cover the rooms asked for", async (t) => {
      const e = use(t);
      if (!e) return;
      await addEvent(e, "!qa:test", "$qa");
      await addEvent(e, "!qb:test", "$qb");
      const since = await e.stream.current();
      await e.eph.setReceipt("@q:test", "!qa:test", "m.read", "$qa");
      await e.eph.setReceipt("@q:test", "!qb:test", "m.read", "$qb");
      const upto = await e.stream.current();
      assert.deepEqual([...(await e.eph.receiptsSince(["!qa:test"], since, upto, "@x:test")).keys()], ["!qa:test"]);
      assert.equal((await e.eph.receiptsSince([], since, upto, "@x:test")).size, 0);
    });

    // ---- typing -----------------------------------------------------------------------------

    test("typing starts, repeats silently, stops, and shows up as changes", async (t) => {
      const e = use(t);
      if (!e) return;
      const room = "!typing:test";
      const quiet = "!quiet:test";
      const p0 = await e.stream.current();

      await e.eph.setTyping(room, "@t1:test", true, 10_000);
      const p1 = await e.stream.current();
      assert.equal(p1, p0 + 1);
      assert.deepEqual(e.wakes.at(-1), { position: p1, rooms: [], users: [], ephemeralRooms: [room] });
      assert.deepEqual(await e.eph.typingSince([room, quiet], p0, p1), new Map([[room, ["@t1:test"]]]));
      assert.deepEqual((await e.eph.typingIn([room])).get(room) ?? [], ["@t1:test"]);

      // Still typing: the expiry moves, the stream does not.
      await e.eph.setTyping(room, "@t1:test", true, 20_000);
      assert.equal(await e.stream.current(), p1);

      await e.eph.setTyping(room, "@t2:test", true, 10_000);
      const p2 = await e.stream.current();
      assert.deepEqual(await e.eph.typingSince([room], p1, p2), new Map([[room, ["@t1:test", "@t2:test"]]]));

      await e.eph.setTyping(room, "@t1:test", false, 0);
      const p3 = await e.stream.current();
      assert.equal(p3, p2 + 1);
      assert.deepEqual(await e.eph.typingSince([room], p2, p3), new Map([[room, ["@t2:test"]]]));

      await e.eph.setTyping(room, "@t1:test", false, 0);
      await e.eph.setTyping(room, "@never-typed:test", false, 0);
      assert.equal(await e.stream.current(), p3);

      await e.eph.setTyping(room, "@t2:test", false, 0);
      const p4 = await e.stream.current();
      assert.deepEqual(await e.eph.typingSince([room], p3, p4), new Map([[room, []]]));
      assert.equal((await e.eph.typingSince([room], p4, p4)).size, 0);
      assert.deepEqual((await e.eph.typingIn([room])).get(room) ?? [], []);
    });

    test("typing timeouts are capped and expiry is announced with an empty list", async (t) => {
      const e = use(t);
      if (!e) return;
      const room = "!expiry:test";
      const before = Date.now();
      await e.eph.setTyping(room, "@slow:test", true, 10 * 60_000);
      const row = await e.storage.db.selectFrom("typing").select("expires_ts").where("room_id", "=", room).executeTakeFirstOrThrow();
      assert.ok(row.expires_ts <= Date.now() + MAX_TYPING_MS && row.expires_ts >= before + MAX_TYPING_MS, "timeout capped at 30 s");

      const p1 = await e.stream.current();
      assert.equal(await e.eph.expireTyping(Date.now()), 0);
      assert.equal(await e.stream.current(), p1);

      const later = Date.now() + MAX_TYPING_MS + 1000;
      assert.equal(await e.eph.expireTyping(later), 1);
      const p2 = await e.stream.current();
      assert.equal(p2, p1 + 1);
      assert.deepEqual(e.wakes.at(-1)?.ephemeralRooms, [room]);
      assert.deepEqual(await e.eph.typingSince([room], p1, p2), new Map([[room, []]]));
      assert.equal(await e.eph.expireTyping(later), 0);
      assert.equal(await e.stream.current(), p2);

      // Once expired, typing again is a visible change again.
      await e.eph.setTyping(room, "@slow:test", true, 5000);
      assert.equal(await e.stream.current(), p2 + 1);
    });

    test("a lapsed but unswept typing entry is hidden and its stop is still announced", async (t) => {
      const e = use(t);
      if (!e) return;
      const room = "!lapsed:test";
      await e.eph.setTyping(room, "@lapse:test", true, 5000);
      await e.storage.db.updateTable("typing").set({ expires_ts: Date.now() - 1 }).where("room_id", "=", room).execute();
      assert.deepEqual((await e.eph.typingIn([room])).get(room) ?? [], []);
      const p = await e.stream.current();
      await e.eph.setTyping(room, "@lapse:test", false, 0);
      assert.equal(await e.stream.current(), p + 1);
      assert.equal(await e.eph.expireTyping(Date.now()), 0);
    });

    test("the typing sweeper expires entries on its own and stops", async (t) => {
      const e = use(t);
      if (!e) return;
      const room = "!sweep:test";
      await e.eph.setTyping(room, "@sweep:test", true, 1);
      const p = await e.stream.current();
      const errors: unknown[] = [];
      const stop = e.eph.startTypingSweeper(10, (err) => errors.push(err));
      try {
        for (let i = 0; i < 200 && (await e.stream.current()) === p; i++) await sleep(10);
      } finally {
        stop();
      }
      const q = await e.stream.current();
      assert.ok(q > p, "sweeper announced the expiry");
      assert.deepEqual(await e.eph.typingSince([room], p, q), new Map([[room, []]]));
      assert.deepEqual(errors, []);
    });

    // ---- presence ---------------------------------------------------------------------------

    test("presence read for a /sync is remembered until a change is announced (forgetPresence)", async (t) => {
      const e = use(t);
      if (!e) return;
      const u = "@pres-memo:test";
      await addMember(e, "!pm:test", u, "join");
      // A second instance over the same database stands in for another process.
      const other = new Ephemeral(e.storage.db, e.stream, e.ad);
      assert.equal(await e.eph.setPresence(u, "online"), true);
      assert.equal(await e.eph.setPresence(u, "online"), false, "remembered as online");
      assert.equal(await other.setPresence(u, "unavailable"), true);
      // Without hearing of that change, this instance still believes its remembered row.
      assert.equal(await e.eph.setPresence(u, "online"), false);
      assert.equal((await e.eph.getPresence(u))?.presence, "unavailable");
      // The wake-up of the change makes it look again.
      e.eph.forgetPresence(u);
      assert.equal(await e.eph.setPresence(u, "online"), true);
      assert.equal((await e.eph.getPresence(u))?.presence, "online");
    });

    test("presenceIsCurrent tells without waiting only what setPresence would not change", async (t) => {
      const e = use(t);
      if (!e) return;
      const u = "@pres-now:test";
      await addMember(e, "!pn:test", u, "join");
      // Nothing read yet: not known.
      assert.equal(e.eph.presenceIsCurrent(u, "online"), false);
      assert.equal(await e.eph.setPresence(u, "online"), true);
      // The change made it forget the row; the next set reads it again.
      assert.equal(e.eph.presenceIsCurrent(u, "online"), false);
      assert.equal(await e.eph.setPresence(u, "online"), false);
      assert.equal(e.eph.presenceIsCurrent(u, "online"), true);
      assert.equal(e.eph.presenceIsCurrent(u, "unavailable"), false, "a different state is a change");
      // An old last_active needs its refresh (see the test below): not current.
      await e.storage.db.updateTable("presence").set({ last_active_ts: Date.now() - 61_000 }).where("user_id", "=", u).execute();
      e.eph.forgetPresence(u);
      await e.eph.getPresence(u);
      const p0 = await e.stream.current();
      assert.equal(await e.eph.setPresence(u, "online"), false);
      assert.equal(await e.stream.current(), p0);
      assert.equal(e.eph.presenceIsCurrent(u, "online"), false, "the refresh made it forget the row");
      assert.equal(await e.eph.setPresence(u, "online"), false);
      assert.equal(e.eph.presenceIsCurrent(u, "online"), true);

      // A pinned presence (off duty) wins over the state asked for, once the pin is known at once.
      const pinned = new Ephemeral(e.storage.db, e.stream, e.ad);
      let peek: { state: "unavailable"; statusMsg: string } | undefined | null = null;
      pinned.setPresenceOverride(
        async () => ({ state: "unavailable", statusMsg: "off duty" }),
        () => peek,
      );
      assert.equal(await pinned.setPresence(u, "online"), true, "pinned to unavailable");
      assert.equal(await pinned.setPresence(u, "online"), false);
      assert.equal(pinned.presenceIsCurrent(u, "online"), false, "the pin is not known without waiting");
      peek = { state: "unavailable", statusMsg: "off duty" };
      assert.equal(pinned.presenceIsCurrent(u, "online"), true);
      peek = undefined;
      assert.equal(pinned.presenceIsCurrent(u, "online"), false, "not pinned: online would be a change");
      // An override without a way to peek is never known at once.
      const noPeek = new Ephemeral(e.storage.db, e.stream, e.ad);
      noPeek.setPresenceOverride(async () => undefined);
      assert.equal(await noPeek.setPresence(u, "unavailable"), false);
      assert.equal(noPeek.presenceIsCurrent(u, "unavailable"), false);
    });

    test("presence takes a stream position only when it changes", async (t) => {
      const e = use(t);
      if (!e) return;
      const u = "@pres:test";
      await addMember(e, "!pj:test", u, "join");
      await addMember(e, "!pl:test", u, "leave");
      const p0 = await e.stream.current();

      assert.equal(await e.eph.setPresence(u, "online"), true);
      const p1 = await e.stream.current();
      assert.equal(p1, p0 + 1);
      assert.deepEqual(e.wakes.at(-1), { position: p1, rooms: ["!pj:test"], users: [u] });

      assert.equal(await e.eph.setPresence(u, "online"), false);
      assert.equal(await e.eph.setPresence(u, "online", undefined), false);
      assert.equal(await e.stream.current(), p1);

      assert.equal(await e.eph.setPresence(u, "online", "at lunch"), true);
      const p2 = await e.stream.current();
      assert.equal(p2, p1 + 1);
      // Leaving the message out keeps it; null clears it.
      assert.equal(await e.eph.setPresence(u, "online"), false);
      assert.equal((await e.eph.getPresence(u))?.status_msg, "at lunch");
      assert.equal(await e.eph.setPresence(u, "online", null), true);
      assert.equal((await e.eph.getPresence(u))?.status_msg, undefined);

      assert.equal(await e.eph.setPresence(u, "unavailable"), true);
      const got = await e.eph.getPresence(u);
      assert.equal(got?.presence, "unavailable");
      assert.equal(got?.currently_active, false);
      assert.equal(typeof got?.last_active_ago, "number");
      assert.equal(await e.eph.getPresence("@unknown:test"), undefined);
    });

    test("an unchanged online presence gets a fresh last_active once a minute, silently", async (t) => {
      const e = use(t);
      if (!e) return;
      const u = "@refresh:test";
      await e.eph.setPresence(u, "online");
      const p1 = await e.stream.current();
      const before = await e.storage.db.selectFrom("presence").select("stream_pos").where("user_id", "=", u).executeTakeFirstOrThrow();
      await e.storage.db.updateTable("presence").set({ last_active_ts: Date.now() - 61_000 }).where("user_id", "=", u).execute();
      e.eph.forgetPresence(u);
      // Brought up to date, but announced to nobody: no stream position, nothing in presenceSince.
      assert.equal(await e.eph.setPresence(u, "online"), false);
      assert.ok(((await e.eph.getPresence(u))?.last_active_ago ?? Infinity) < 5000);
      assert.equal(await e.stream.current(), p1);
      const after = await e.storage.db.selectFrom("presence").select("stream_pos").where("user_id", "=", u).executeTakeFirstOrThrow();
      assert.equal(after.stream_pos, before.stream_pos);
      // So the idle sweep keeps them online.
      assert.equal(await e.eph.expirePresence(Date.now(), 30_000), 0);
      assert.equal((await e.eph.getPresence(u))?.presence, "online");
      // A status message change is news again.
      assert.equal(await e.eph.setPresence(u, "online", "im Einsatz"), true);
      assert.equal(await e.stream.current(), p1 + 1);

      // Being away is not activity: an old last_active alone does not re-announce it.
      await e.eph.setPresence(u, "unavailable");
      await e.storage.db.updateTable("presence").set({ last_active_ts: Date.now() - 120_000 }).where("user_id", "=", u).execute();
      const p2 = await e.stream.current();
      assert.equal(await e.eph.setPresence(u, "unavailable"), false);
      assert.equal(await e.stream.current(), p2);
      assert.ok(((await e.eph.getPresence(u))?.last_active_ago ?? 0) >= 120_000);
    });

    test("presenceSince returns changes of the requested users in the window", async (t) => {
      const e = use(t);
      if (!e) return;
      await e.storage.db
        .insertInto("users")
        .values({ user_id: "@named:test", localpart: "named", password_hash: null, role: "user", deactivated: 0, locked: 0, created_ts: 0, displayname: "Named", avatar_url: null })
        .execute();
      const p0 = await e.stream.current();
      await e.eph.setPresence("@named:test", "online", "hi");
      const p1 = await e.stream.current();
      await e.eph.setPresence("@other-pres:test", "unavailable");
      const p2 = await e.stream.current();

      const both = await e.eph.presenceSince(["@named:test", "@other-pres:test"], p0, p2);
      assert.deepEqual(
        both.map((ev) => [ev.type, ev.sender, ev.content.presence]),
        [
          ["m.presence", "@named:test", "online"],
          ["m.presence", "@other-pres:test", "unavailable"],
        ],
      );
      assert.equal(both[0]?.content.status_msg, "hi");
      assert.equal(both[0]?.content.displayname, "Named");
      assert.equal(both[0]?.content.currently_active, true);

      assert.deepEqual((await e.eph.presenceSince(["@named:test", "@other-pres:test"], p1, p2)).map((ev) => ev.sender), ["@other-pres:test"]);
      assert.deepEqual((await e.eph.presenceSince(["@other-pres:test"], p0, p1)).map((ev) => ev.sender), []);
      assert.deepEqual(await e.eph.presenceSince([], p0, p2), []);
    });

    test("expirePresence takes users who went quiet offline", async (t) => {
      const e = use(t);
      if (!e) return;
      const u = "@quiet:test";
      await e.eph.setPresence(u, "online");
      await e.eph.setPresence("@lively:test", "online");
      await e.storage.db.updateTable("presence").set({ last_active_ts: Date.now() - 10 * 60_000 }).where("user_id", "=", u).execute();
      const p = await e.stream.current();
      assert.equal(await e.eph.expirePresence(Date.now(), 5 * 60_000), 1);
      assert.equal(await e.stream.current(), p + 1);
      assert.equal((await e.eph.getPresence(u))?.presence, "offline");
      assert.equal((await e.eph.getPresence("@lively:test"))?.presence, "online");
      assert.equal(await e.eph.expirePresence(Date.now(), 5 * 60_000), 0);
    });
  });
}
