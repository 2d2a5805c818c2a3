/**
 * `kill -9` of a real server process while 20 clients send messages, to-device messages and read
 * receipts with transaction ids. After a restart on the same data: every acknowledged event is
 * there exactly once, retried transactions get the original event ids, to-device messages and
 * receipts survive, and sync tokens handed out before the crash carry on without gaps or repeats.
 */
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import Database from "better-sqlite3";
import path from "node:path";
import { createScratchDatabase, DB_KINDS, PG_SKIP_MESSAGE, postgresReachable } from "./support/databases.js";
import { startTestServer } from "./support/server.js";
import { call, enc, faultsTempDir, removeDir, sleep, spawnServer, type Json, type ServerProcess } from "./faults-support.js";

const pgOk = await postgresReachable();
const CLIENTS = 20;
/** Acknowledged sends after which the process is killed (the in-flight ones are what matters). */
const KILL_AFTER_ACKS = 150;
const TIMELINE_FILTER = JSON.stringify({ room: { timeline: { limit: 1000, types: ["m.room.message"] }, state: { lazy_load_members: true } }, presence: { not_types: ["*"] } });

interface Session {
  user_id: string;
  access_token: string;
  device_id: string;
}

for (const kind of DB_KINDS) {
  describe(`kill -9 under load [${kind}]`, { skip: kind === "postgres" && !pgOk ? PG_SKIP_MESSAGE : false }, () => {
    let dataDir: string | undefined;
    let drop: (() => Promise<void>) | undefined;
    let proc: ServerProcess | undefined;
    after(async () => {
      await proc?.kill();
      removeDir(dataDir);
      await drop?.();
    });

    test("acknowledged writes survive exactly once; retries are idempotent; old sync tokens work", async () => {
      dataDir = faultsTempDir("kill");
      let databaseUrl: string | null = null;
      if (kind === "postgres") ({ url: databaseUrl, drop } = await createScratchDatabase());

      // Accounts, sessions and the room are made by an in-process server on the same data, which
      // then stops; the process under test starts on what it left.
      const seed = await startTestServer(kind, {}, { dataDir, databaseUrl });
      const names = [...Array.from({ length: CLIENTS }, (_, i) => `streife${i}`), "leitstelle"];
      await Promise.all(names.map((n) => seed.createUser(n)));
      const sessions: Session[] = await Promise.all(names.map((n) => seed.login(n)));
      const clients = sessions.slice(0, CLIENTS);
      const watcher = sessions[CLIENTS]!;
      const room = await call(seed.url, "POST", "/_matrix/client/v3/createRoom", { token: watcher.access_token, body: { preset: "public_chat", name: "Einsatz" } });
      const roomId = room.body.room_id as string;
      for (const c of clients) assert.equal((await call(seed.url, "POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: c.access_token, body: {} })).status, 200);
      await seed.stop();

      const env: Record<string, string> = { REVIER_DATA_DIR: dataDir, ...(databaseUrl ? { REVIER_DATABASE_URL: databaseUrl } : {}) };
      proc = await spawnServer(env);
      const base = proc.url;

      const syncOnce = async (token: string, since?: string) => {
        const res = await call(base, "GET", `/_matrix/client/v3/sync?timeout=0&filter=${enc(TIMELINE_FILTER)}${since ? `&since=${enc(since)}` : ""}`, { token });
        return res;
      };
      const t0 = await syncOnce(watcher.access_token);
      assert.equal(t0.status, 200);
      const tokenBeforeLoad = t0.body.next_batch as string;

      // ---- load, then kill -9 ------------------------------------------------------------------
      const acked = new Map<string, string>(); // body -> event id
      const attempted: string[][] = clients.map(() => []); // per client: bodies in order
      const toDeviceAcked = new Set<string>(); // "from:n"
      const toDeviceAttempted: Array<Array<{ txn: string; n: number }>> = clients.map(() => []);
      const receiptAcked: Array<string | null> = clients.map(() => null);
      const receiptTried: Array<string | null> = clients.map(() => null);
      let killed = false;
      const unexpected: string[] = [];

      const runClient = async (i: number) => {
        const me = clients[i]!;
        const next = clients[(i + 1) % CLIENTS]!;
        for (let n = 0; !killed; n++) {
          const body = `c${i}-${n}`;
          attempted[i]!.push(body);
          const sent = await call<Json>(base, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/m${n}`, { token: me.access_token, body: { msgtype: "m.text", body } });
          if (sent.status === 0) return; // the process is gone
          if (sent.status !== 200) {
            unexpected.push(`send ${body}: ${sent.status} ${JSON.stringify(sent.body)}`);
            return;
          }
          acked.set(body, sent.body.event_id as string);
          if (n % 3 === 0) {
            const txn = `t${n}`;
            toDeviceAttempted[i]!.push({ txn, n });
            const td = await call(base, "PUT", `/_matrix/client/v3/sendToDevice/org.example.lage/${txn}`, { token: me.access_token, body: { messages: { [next.user_id]: { [next.device_id]: { from: i, n } } } } });
            if (td.status === 0) return;
            if (td.status === 200) toDeviceAcked.add(`${i}:${n}`);
            else unexpected.push(`to-device ${i}:${n}: ${td.status}`);
          }
          if (n % 2 === 1) {
            const eventId = sent.body.event_id as string;
            receiptTried[i] = eventId;
            const rc = await call(base, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/receipt/m.read/${enc(eventId)}`, { token: me.access_token, body: {} });
            if (rc.status === 0) return;
            if (rc.status === 200) receiptAcked[i] = eventId;
            else unexpected.push(`receipt ${i}: ${rc.status}`);
          }
        }
      };

      // The watcher syncs along, as a client on duty would.
      const seenBefore = new Set<string>();
      let lastToken = tokenBeforeLoad;
      const runWatcher = async () => {
        while (!killed) {
          const res = await syncOnce(watcher.access_token, lastToken);
          if (res.status !== 200) return;
          const tl = res.body.rooms?.join?.[roomId]?.timeline;
          if (tl) {
            assert.equal(tl.limited, false, "the watcher's timeline is complete");
            for (const e of tl.events as Json[]) {
              assert.ok(!seenBefore.has(e.event_id), `event ${e.event_id} delivered twice before the crash`);
              seenBefore.add(e.event_id);
            }
          }
          lastToken = res.body.next_batch;
          await sleep(50);
        }
      };

      const loops = [...clients.map((_, i) => runClient(i)), runWatcher()];
      const started = Date.now();
      while (acked.size < KILL_AFTER_ACKS && Date.now() - started < 20_000) await sleep(10);
      killed = true;
      proc.child.kill("SIGKILL");
      const exit = await proc.exited;
      assert.equal(exit.signal, "SIGKILL");
      await Promise.all(loops);
      assert.deepEqual(unexpected, [], "before the kill every request succeeded");
      assert.ok(acked.size >= KILL_AFTER_ACKS, `load reached ${acked.size} acknowledged sends`);

      // ---- restart on the same data and port ---------------------------------------------------
      proc = await spawnServer({ ...env, REVIER_PORT: String(new URL(base).port) });
      assert.equal(proc.url, base);

      if (kind === "sqlite") {
        const raw = new Database(path.join(dataDir, "revier.db"), { readonly: true });
        assert.equal(raw.pragma("integrity_check", { simple: true }), "ok");
        raw.close();
      }

      const roomMessages = async (): Promise<Map<string, string[]>> => {
        const byBody = new Map<string, string[]>();
        let from: string | undefined;
        for (;;) {
          const page = await call<Json>(base, "GET", `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=100${from ? `&from=${enc(from)}` : ""}`, { token: watcher.access_token });
          assert.equal(page.status, 200, JSON.stringify(page.body));
          for (const e of page.body.chunk as Json[]) {
            if (e.type !== "m.room.message") continue;
            const list = byBody.get(e.content.body) ?? [];
            list.push(e.event_id);
            byBody.set(e.content.body, list);
          }
          if (!page.body.end || (page.body.chunk as Json[]).length === 0) break;
          from = page.body.end;
        }
        return byBody;
      };

      // Every acknowledged event is there exactly once, under the id the client was given.
      const afterCrash = await roomMessages();
      for (const [body, eventId] of acked) assert.deepEqual(afterCrash.get(body), [eventId], `acknowledged ${body}`);
      for (const [body, ids] of afterCrash) assert.equal(ids.length, 1, `${body} stored ${ids.length} times`);
      const committedUnacked = [...afterCrash.keys()].filter((b) => !acked.has(b));
      assert.ok(committedUnacked.length <= CLIENTS, "at most one in-flight send per client may have committed unacknowledged");

      // Sync tokens from before the crash: the watcher carries on from its last token and from the
      // token before the load; together with what it saw, that is every message, each once.
      const allIds = new Set([...afterCrash.values()].flat());
      const resumed = await syncOnce(watcher.access_token, lastToken);
      assert.equal(resumed.status, 200, JSON.stringify(resumed.body));
      const resumedTl = resumed.body.rooms?.join?.[roomId]?.timeline ?? { events: [], limited: false };
      assert.equal(resumedTl.limited, false);
      for (const e of resumedTl.events as Json[]) assert.ok(!seenBefore.has(e.event_id), `${e.event_id} delivered again after the restart`);
      assert.deepEqual(new Set([...seenBefore, ...(resumedTl.events as Json[]).map((e) => e.event_id as string)]), allIds, "nothing skipped, nothing repeated");
      const fromStart = await syncOnce(watcher.access_token, tokenBeforeLoad);
      assert.equal(fromStart.status, 200);
      assert.deepEqual(new Set((fromStart.body.rooms.join[roomId].timeline.events as Json[]).map((e) => e.event_id as string)), allIds);

      // Receipts: each client's latest acknowledged receipt (or the one in flight at the kill).
      const receiptSync = await call<Json>(base, "GET", `/_matrix/client/v3/sync?timeout=0&filter=${enc(TIMELINE_FILTER)}`, { token: watcher.access_token });
      const receiptContent = ((receiptSync.body.rooms.join[roomId].ephemeral?.events ?? []) as Json[]).find((e) => e.type === "m.receipt")?.content ?? {};
      const readBy = new Map<string, string>();
      for (const [eventId, types] of Object.entries(receiptContent as Json)) for (const userId of Object.keys(types["m.read"] ?? {})) readBy.set(userId, eventId);
      clients.forEach((c, i) => {
        if (receiptAcked[i] === null) return;
        assert.ok([receiptAcked[i], receiptTried[i]].includes(readBy.get(c.user_id) ?? null), `receipt of client ${i}: ${readBy.get(c.user_id)} (acknowledged ${receiptAcked[i]})`);
      });
      assert.ok(receiptAcked.filter((r) => r !== null).length >= CLIENTS / 2, "most clients had a receipt acknowledged");

      // Clients retry every transaction they started: acknowledged ones get their event ids back,
      // and nothing is stored twice.
      const retried = new Map<string, string>();
      await Promise.all(
        clients.map(async (c, i) => {
          for (const [n, body] of attempted[i]!.entries()) {
            const res = await call<Json>(base, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/m${n}`, { token: c.access_token, body: { msgtype: "m.text", body } });
            assert.equal(res.status, 200, JSON.stringify(res.body));
            retried.set(body, res.body.event_id as string);
            if (acked.has(body)) assert.equal(res.body.event_id, acked.get(body), `retry of ${body} returns the original event id`);
            else if (afterCrash.has(body)) assert.equal(res.body.event_id, afterCrash.get(body)![0], `retry of committed-but-unacknowledged ${body}`);
          }
          for (const { txn, n } of toDeviceAttempted[i]!) {
            const next = clients[(i + 1) % CLIENTS]!;
            const res = await call(base, "PUT", `/_matrix/client/v3/sendToDevice/org.example.lage/${txn}`, { token: c.access_token, body: { messages: { [next.user_id]: { [next.device_id]: { from: i, n } } } } });
            assert.equal(res.status, 200);
          }
        }),
      );
      const afterRetry = await roomMessages();
      for (const [body, eventId] of retried) assert.deepEqual(afterRetry.get(body), [eventId], `${body} exactly once after retries`);
      assert.equal([...afterRetry.values()].flat().length, retried.size);

      // To-device messages: every acknowledged one arrives, exactly once, retries included.
      await Promise.all(
        clients.map(async (c, j) => {
          const from = (j - 1 + CLIENTS) % CLIENTS;
          const got: string[] = [];
          let since: string | undefined;
          for (let round = 0; round < 20; round++) {
            const res = await call<Json>(base, "GET", `/_matrix/client/v3/sync?timeout=0&filter=${enc(TIMELINE_FILTER)}${since ? `&since=${enc(since)}` : ""}`, { token: c.access_token });
            assert.equal(res.status, 200);
            const events = (res.body.to_device?.events ?? []) as Json[];
            for (const e of events) if (e.type === "org.example.lage") got.push(`${e.content.from}:${e.content.n}`);
            since = res.body.next_batch;
            if (events.length === 0) break;
          }
          assert.equal(new Set(got).size, got.length, `client ${j} received a to-device message twice: ${got.join(" ")}`);
          for (const key of toDeviceAcked) if (key.startsWith(`${from}:`)) assert.ok(got.includes(key), `to-device ${key} reached client ${j}`);
          const expected = toDeviceAttempted[from]!.map(({ n }) => `${from}:${n}`);
          assert.deepEqual(got.sort(), expected.sort(), `client ${j} got each retried to-device message once`);
        }),
      );
    });
  });
}
