/**
 * `revier backup` while the server runs, `revier restore` into an empty data directory (and
 * database), and a server on the restored data: what was written before the backup is there
 * through HTTP (login, sync, messages, media bytes, account data), what came after is not, one-time
 * keys from before the restore are never handed out again, and sync tokens clients hold still work.
 */
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { cpSync, existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { createScratchDatabase, DB_KINDS, PG_SKIP_MESSAGE, postgresReachable } from "./support/databases.js";
import { startTestServer, type TestServer } from "./support/server.js";
import { FakeDevice } from "./support/crypto-clients.js";
import { call, enc, faultsTempDir, removeDir, revierCli, type Json } from "./faults-support.js";
import { restoreBackup, type Manifest } from "../src/ops/backup.js";
import { loadConfig } from "../src/config.js";

const pgOk = await postgresReachable();

for (const kind of DB_KINDS) {
  describe(`backup and restore [${kind}]`, { skip: kind === "postgres" && !pgOk ? PG_SKIP_MESSAGE : false }, () => {
    let root: string | undefined;
    let server: TestServer | undefined;
    const drops: Array<() => Promise<void>> = [];
    after(async () => {
      await server?.stop();
      removeDir(root);
      for (const d of drops) await d();
    });

    test("an online backup restores into an empty target; data before it is back, handed-out one-time keys never return", async () => {
      root = faultsTempDir("backup");
      const src = path.join(root, "src");
      const dst = path.join(root, "dst");
      const backupDir = path.join(root, "backup");
      let srcUrl: string | null = null;
      let dstUrl: string | null = null;
      if (kind === "postgres") {
        const a = await createScratchDatabase();
        const b = await createScratchDatabase();
        drops.push(a.drop, b.drop);
        srcUrl = a.url;
        dstUrl = b.url;
      }
      const srcEnv = { REVIER_DATA_DIR: src, REVIER_DATABASE_URL: srcUrl ?? "" };
      const dstEnv = { REVIER_DATA_DIR: dst, REVIER_DATABASE_URL: dstUrl ?? "" };

      // ---- an installation in use ------------------------------------------------------------------
      server = await startTestServer(kind, {}, { dataDir: src, databaseUrl: srcUrl });
      let s = server;
      await s.createUser("anna");
      await s.createUser("bert");
      const anna = await s.login("anna");
      const bert = await s.login("bert");
      const room = await call<Json>(s.url, "POST", "/_matrix/client/v3/createRoom", { token: anna.access_token, body: { preset: "private_chat", name: "Ermittlungsgruppe", invite: [bert.user_id] } });
      const roomId = room.body.room_id as string;
      assert.equal((await call(s.url, "POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: bert.access_token, body: {} })).status, 200);
      const send = async (srv: TestServer, body: string) => {
        const res = await call<Json>(srv.url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${enc(body)}`, { token: anna.access_token, body: { msgtype: "m.text", body } });
        assert.equal(res.status, 200, JSON.stringify(res.body));
        return res.body.event_id as string;
      };
      const before = ["vor der Sicherung 1", "vor der Sicherung 2", "vor der Sicherung 3"];
      for (const b of before) await send(s, b);
      const photo = randomBytes(300 * 1024);
      const uploaded = await call<Json>(s.url, "POST", "/_matrix/media/v3/upload?filename=tatort.jpg", { token: anna.access_token, rawBody: photo, headers: { "content-type": "image/jpeg" } });
      assert.equal(uploaded.status, 200);
      const mxc = uploaded.body.content_uri as string;
      assert.equal((await call(s.url, "PUT", `/_matrix/client/v3/user/${enc(anna.user_id)}/account_data/org.example.schicht`, { token: anna.access_token, body: { schicht: "Früh" } })).status, 200);

      // anna's device publishes keys; bert claims two one-time keys before the backup.
      const device = new FakeDevice(anna.user_id, anna.device_id);
      const otks = device.oneTimeKeys(6);
      const uploadKeys = await call<Json>(s.url, "POST", "/_matrix/client/v3/keys/upload", { token: anna.access_token, body: { device_keys: device.deviceKeys(), one_time_keys: otks, fallback_keys: device.fallbackKey() } });
      assert.equal(uploadKeys.status, 200, JSON.stringify(uploadKeys.body));
      const claim = async (srv: TestServer): Promise<string> => {
        const res = await call<Json>(srv.url, "POST", "/_matrix/client/v3/keys/claim", { token: bert.access_token, body: { one_time_keys: { [anna.user_id]: { [anna.device_id]: "signed_curve25519" } } } });
        assert.equal(res.status, 200, JSON.stringify(res.body));
        const keys = Object.keys(res.body.one_time_keys[anna.user_id]?.[anna.device_id] ?? {});
        assert.equal(keys.length, 1);
        return keys[0]!;
      };
      const handedOut = [await claim(s), await claim(s)];
      const tokenBefore = (await call<Json>(s.url, "GET", "/_matrix/client/v3/sync?timeout=0", { token: anna.access_token })).body.next_batch as string;

      // ---- backup while the server runs ------------------------------------------------------------
      const backup = await revierCli(["backup", backupDir], srcEnv);
      assert.equal(backup.code, 0, backup.stderr);
      assert.match(backup.stdout, /backup written/);

      // After the backup: two more claims (these keys are still in the backup), more messages.
      handedOut.push(await claim(s), await claim(s));
      for (let i = 1; i <= 3; i++) await send(s, `nach der Sicherung ${i}`);
      const tokenAfter = (await call<Json>(s.url, "GET", "/_matrix/client/v3/sync?timeout=0", { token: anna.access_token })).body.next_batch as string;
      await s.stop();
      server = undefined;

      // ---- what the backup holds ---------------------------------------------------------------------
      const manifest = JSON.parse(readFileSync(path.join(backupDir, "manifest.json"), "utf8")) as Manifest;
      assert.equal(manifest.database.dialect, kind);
      assert.ok(manifest.migrations.includes("001_initial"));
      const table = (name: string) => manifest.tables.find((t) => t.name === name);
      assert.ok((table("events")?.rows ?? 0) >= before.length);
      assert.equal(table("e2e_one_time_keys")?.rows, 4, "the backup holds the four keys not yet claimed when it was taken");
      assert.ok(manifest.tables.length >= 40, "every table of the schema, found in the catalogue");
      assert.ok(manifest.data_files.some((f) => f.name === "signing.key"));
      assert.equal(manifest.media.files, 1);
      assert.deepEqual(manifest.media.missing, []);
      assert.equal(statSync(backupDir).mode & 0o077, 0, "the backup directory is owner-only");
      for (const f of manifest.data_files) assert.equal(statSync(path.join(backupDir, "files", f.name)).mode & 0o077, 0);

      // ---- restore: refused unless the target is empty, refused when damaged ----------------------------
      const restored = await revierCli(["restore", backupDir], dstEnv);
      assert.equal(restored.code, 0, restored.stderr);
      assert.match(restored.stdout, /4 one-time keys dropped, 1 fallback keys marked used/);
      // The refusals are checked in-process (the CLI path is the same function, run above).
      const dstConfig = loadConfig({}, { data_dir: dst, database_url: dstUrl });
      const actor = { actor: "cli:test", actorRole: "cli" };
      await assert.rejects(restoreBackup(dstConfig, backupDir, { force: false, actor }), /not empty/);
      const damaged = path.join(root, "damaged");
      cpSync(backupDir, damaged, { recursive: true });
      const victim = kind === "sqlite" ? path.join(damaged, "revier.db") : path.join(damaged, "db", "events.jsonl");
      const bytes = readFileSync(victim);
      const middle = Math.floor(bytes.length / 2);
      bytes[middle] = bytes[middle]! ^ 0xff;
      writeFileSync(victim, bytes);
      await assert.rejects(restoreBackup(dstConfig, damaged, { force: true, actor }), /damaged/);
      assert.ok(existsSync(path.join(dst, "signing.key")), "a damaged backup is refused before anything is touched");
      const forced = await restoreBackup(dstConfig, backupDir, { force: true, actor });
      assert.equal(forced.fixups.oneTimeKeysDropped, 4);

      // ---- a server on the restored data -------------------------------------------------------------
      server = await startTestServer(kind, {}, { dataDir: dst, databaseUrl: dstUrl });
      s = server;
      const annaAgain = await s.login("anna");
      const first = await call<Json>(s.url, "GET", "/_matrix/client/v3/sync?timeout=0", { token: annaAgain.access_token });
      assert.equal(first.status, 200);
      const bodies = ((first.body.rooms.join[roomId].timeline.events ?? []) as Json[]).filter((e) => e.type === "m.room.message").map((e) => e.content.body);
      assert.deepEqual(bodies, before, "messages from before the backup, none from after");
      const messages = await call<Json>(s.url, "GET", `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=50`, { token: annaAgain.access_token });
      assert.deepEqual(
        (messages.body.chunk as Json[]).filter((e) => e.type === "m.room.message").map((e) => e.content.body),
        [...before].reverse(),
      );
      const [mediaServer, mediaId] = mxc.replace("mxc://", "").split("/");
      const download = await fetch(`${s.url}/_matrix/client/v1/media/download/${mediaServer}/${mediaId}`, { headers: { authorization: `Bearer ${annaAgain.access_token}` } });
      assert.equal(download.status, 200);
      assert.ok(Buffer.from(await download.arrayBuffer()).equals(photo), "media bytes are equal");
      const data = await call<Json>(s.url, "GET", `/_matrix/client/v3/user/${enc(anna.user_id)}/account_data/org.example.schicht`, { token: annaAgain.access_token });
      assert.deepEqual(data.body, { schicht: "Früh" });
      // Sessions from before the backup still work (their token digests were restored).
      assert.equal((await call(s.url, "GET", "/_matrix/client/v3/account/whoami", { token: bert.access_token })).status, 200);

      // One-time keys: none from before the restore is handed out, claimed or not. The device sees
      // its count at zero and its fallback key used, so it uploads fresh keys.
      assert.equal(first.body.device_one_time_keys_count?.signed_curve25519 ?? 0, 0);
      const annaOld = await call<Json>(s.url, "GET", "/_matrix/client/v3/sync?timeout=0", { token: anna.access_token });
      assert.equal(annaOld.body.device_one_time_keys_count?.signed_curve25519 ?? 0, 0);
      assert.deepEqual(annaOld.body.device_unused_fallback_key_types ?? [], []);
      const afterRestore = await claim(s);
      assert.ok(!Object.keys(otks).includes(afterRestore), `${afterRestore} is not one of the one-time keys from before`);
      assert.match(afterRestore, /^signed_curve25519:FB/, "only the fallback key is left until the device uploads");
      const fresh = device.oneTimeKeys(2);
      assert.equal((await call(s.url, "POST", "/_matrix/client/v3/keys/upload", { token: anna.access_token, body: { one_time_keys: fresh } })).status, 200);
      assert.ok(Object.keys(fresh).includes(await claim(s)), "freshly uploaded keys are handed out");
      for (const k of handedOut) assert.ok(Object.keys(otks).includes(k));

      // Sync tokens: one from before the backup works; one from after it (ahead of the restored
      // stream) does not hide new messages, however many are written after the restore.
      const fromBefore = await call<Json>(s.url, "GET", `/_matrix/client/v3/sync?timeout=0&since=${enc(tokenBefore)}`, { token: anna.access_token });
      assert.equal(fromBefore.status, 200);
      const afterTexts = Array.from({ length: 6 }, (_, i) => `nach der Wiederherstellung ${i + 1}`);
      for (const t of afterTexts) await send(s, t);
      const fromAfter = await call<Json>(s.url, "GET", `/_matrix/client/v3/sync?timeout=0&since=${enc(tokenAfter)}`, { token: anna.access_token });
      assert.equal(fromAfter.status, 200);
      const seen = ((fromAfter.body.rooms?.join?.[roomId]?.timeline?.events ?? []) as Json[]).map((e) => e.content?.body);
      for (const t of afterTexts) assert.ok(seen.includes(t), `a client holding a token from after the backup receives "${t}"`);

      // The restore is in the audit log, whose chain is intact.
      const audit = await s.services.audit.verify();
      assert.equal(audit.ok, true);
      const entries: string[] = [];
      for await (const line of s.services.audit.exportJsonl()) entries.push((JSON.parse(line) as { action: string }).action);
      assert.equal(entries.at(-1), "backup.restore");
    });

    test("a backup taken while clients write is one consistent snapshot", async () => {
      const dir = path.join(root!, "load");
      const backupDir = path.join(dir, "backup");
      let url: string | null = null;
      let restoreUrl: string | null = null;
      if (kind === "postgres") {
        const a = await createScratchDatabase();
        const b = await createScratchDatabase();
        drops.push(a.drop, b.drop);
        url = a.url;
        restoreUrl = b.url;
      }
      const busy = await startTestServer(kind, {}, { dataDir: path.join(dir, "src"), databaseUrl: url });
      try {
        const names = ["eins", "zwei", "drei", "vier"];
        await Promise.all(names.map((n) => busy.createUser(n)));
        const writers = await Promise.all(names.map((n) => busy.login(n)));
        const r = await call<Json>(busy.url, "POST", "/_matrix/client/v3/createRoom", { token: writers[0]!.access_token, body: { preset: "public_chat" } });
        const roomId = r.body.room_id as string;
        for (const w of writers.slice(1)) assert.equal((await call(busy.url, "POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: w.access_token, body: {} })).status, 200);
        let writing = true;
        let written = 0;
        const loops = writers.map(async (w, i) => {
          for (let n = 0; writing; n++) {
            const res = await call(busy.url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/l${n}`, { token: w.access_token, body: { msgtype: "m.text", body: `${i}/${n}` } });
            assert.equal(res.status, 200);
            written++;
          }
        });
        while (written < 20) await new Promise((res) => setTimeout(res, 20));
        const backup = await revierCli(["backup", backupDir], { REVIER_DATA_DIR: path.join(dir, "src"), REVIER_DATABASE_URL: url ?? "" });
        const atEnd = written;
        writing = false;
        await Promise.all(loops);
        assert.equal(backup.code, 0, backup.stderr);
        assert.ok(written > atEnd - 1 && atEnd > 20, "clients were writing while the backup ran");

        await restoreBackup(loadConfig({}, { data_dir: path.join(dir, "dst"), database_url: restoreUrl }), backupDir, { force: false, actor: { actor: "cli:test", actorRole: "cli" } });
        const manifest = JSON.parse(readFileSync(path.join(backupDir, "manifest.json"), "utf8")) as Manifest;
        const copy = await startTestServer(kind, {}, { dataDir: path.join(dir, "dst"), databaseUrl: restoreUrl });
        try {
          const db = copy.services.storage.db;
          // One snapshot: the graph is complete and linear, each event has its transaction record,
          // the room's head is its last event, and the stream position is the last one written.
          const events = await db.selectFrom("events").select(["event_id", "depth", "json", "stream_ordering", "type"]).where("room_id", "=", roomId).orderBy("stream_ordering").execute();
          for (let k = 1; k < events.length; k++) {
            assert.equal(Number(events[k]!.depth), Number(events[k - 1]!.depth) + 1);
            assert.deepEqual((JSON.parse(events[k]!.json) as { prev_events: string[] }).prev_events, [events[k - 1]!.event_id]);
          }
          const head = await db.selectFrom("rooms").select(["last_event_id", "last_stream"]).where("room_id", "=", roomId).executeTakeFirstOrThrow();
          assert.equal(head.last_event_id, events.at(-1)!.event_id);
          const messages = events.filter((e) => e.type === "m.room.message").length;
          const txns = await db.selectFrom("event_txns").select((eb) => eb.fn.countAll<number>().as("n")).where("scope", "=", "send").where("txn_id", "like", "l%").executeTakeFirstOrThrow();
          assert.equal(Number(txns.n), messages, "a transaction record for every message and no more");
          const maxEvent = await db.selectFrom("events").select((eb) => eb.fn.max("stream_ordering").as("m")).executeTakeFirstOrThrow();
          assert.ok(manifest.stream_position >= Number(maxEvent.m), "no event beyond the snapshot's stream position");
          assert.ok(messages > 0 && messages <= written);
        } finally {
          await copy.stop();
        }
      } finally {
        await busy.stop();
      }
    });
  });
}
