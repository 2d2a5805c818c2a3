/**
 * `revier port-db --to postgres://…`: a SQLite installation in use moves to an empty PostgreSQL
 * database. Row counts match table by table (checked here independently of the tool's own
 * verification), a server on PostgreSQL with the same data directory serves the same data, and
 * writes continue where the SQLite installation stopped (stream positions, serial ids).
 */
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import path from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { createScratchDatabase, PG_SKIP_MESSAGE, postgresReachable } from "./support/databases.js";
import { startTestServer, type TestServer } from "./support/server.js";
import { FakeDevice } from "./support/crypto-clients.js";
import { call, enc, faultsTempDir, removeDir, revierCli, type Json } from "./faults-support.js";

const pgOk = await postgresReachable();

describe("port-db: SQLite to PostgreSQL", { skip: pgOk ? false : PG_SKIP_MESSAGE }, () => {
  let dataDir: string | undefined;
  let server: TestServer | undefined;
  const drops: Array<() => Promise<void>> = [];
  after(async () => {
    await server?.stop();
    removeDir(dataDir);
    for (const d of drops) await d();
  });

  test("moves every table with verified row counts; the server carries on on PostgreSQL", async () => {
    dataDir = faultsTempDir("port");
    const target = await createScratchDatabase();
    drops.push(target.drop);

    // ---- a SQLite installation in use ------------------------------------------------------------
    server = await startTestServer("sqlite", {}, { dataDir, databaseUrl: null });
    let s = server;
    await s.createUser("anna");
    await s.createUser("bert");
    const anna = await s.login("anna");
    const bert = await s.login("bert");
    const room = await call<Json>(s.url, "POST", "/_matrix/client/v3/createRoom", { token: anna.access_token, body: { preset: "public_chat", name: "Lage" } });
    const roomId = room.body.room_id as string;
    assert.equal((await call(s.url, "POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: bert.access_token, body: {} })).status, 200);
    const texts = Array.from({ length: 25 }, (_, i) => `Meldung ${i + 1}`);
    for (const t of texts) assert.equal((await call(s.url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${enc(t)}`, { token: anna.access_token, body: { msgtype: "m.text", body: t } })).status, 200);
    const photo = randomBytes(150 * 1024);
    const up = await call<Json>(s.url, "POST", "/_matrix/media/v3/upload", { token: anna.access_token, rawBody: photo, headers: { "content-type": "image/png" } });
    assert.equal(up.status, 200);
    const device = new FakeDevice(anna.user_id, anna.device_id);
    const otks = device.oneTimeKeys(5);
    assert.equal((await call(s.url, "POST", "/_matrix/client/v3/keys/upload", { token: anna.access_token, body: { device_keys: device.deviceKeys(), one_time_keys: otks } })).status, 200);
    // A to-device message waits in bert's inbox (a table with a serial id).
    assert.equal((await call(s.url, "PUT", `/_matrix/client/v3/sendToDevice/org.example.hinweis/t1`, { token: anna.access_token, body: { messages: { [bert.user_id]: { [bert.device_id]: { n: 1 } } } } })).status, 200);
    await s.stop();
    server = undefined;

    // ---- refusals ----------------------------------------------------------------------------------
    const env = { REVIER_DATA_DIR: dataDir };
    const noTo = await revierCli(["port-db"], env);
    assert.equal(noTo.code, 1);
    assert.match(noTo.stderr, /--to/);
    const fromPg = await revierCli(["port-db", "--to", target.url], { ...env, REVIER_DATABASE_URL: target.url });
    assert.equal(fromPg.code, 1);
    assert.match(fromPg.stderr, /SQLite/);

    // ---- the port --------------------------------------------------------------------------------------
    const ported = await revierCli(["port-db", "--to", target.url], env);
    assert.equal(ported.code, 0, ported.stderr);
    assert.match(ported.stdout, /events\s+\d+ rows\s+verified/);
    assert.match(ported.stdout, /stream counter \d+ verified/);
    const again = await revierCli(["port-db", "--to", target.url], env);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /not empty/);

    // Row counts per table, compared here, straight from both databases.
    const sqlite = new Database(path.join(dataDir, "revier.db"), { readonly: true });
    const client = new pg.Client({ connectionString: target.url });
    await client.connect();
    let streamInSqlite = 0;
    try {
      const tables = (sqlite.prepare("select name from sqlite_master where type = 'table' and name not like 'sqlite_%'").all() as Array<{ name: string }>).map((t) => t.name);
      assert.ok(tables.length >= 40);
      for (const t of tables) {
        const inSqlite = (sqlite.prepare(`select count(*) as n from "${t}"`).get() as { n: number }).n;
        const inPg = Number((await client.query(`select count(*) as n from "${t}"`)).rows[0].n);
        // The port appends its own audit entry after verifying.
        assert.equal(inPg, t === "audit_log" ? inSqlite + 1 : inSqlite, `rows in ${t}`);
      }
      streamInSqlite = (sqlite.prepare("select value from counters where name = 'stream'").get() as { value: number }).value;
      assert.equal(Number((await client.query("select value from counters where name = 'stream'")).rows[0].value), streamInSqlite);
    } finally {
      sqlite.close();
      await client.end();
    }

    // ---- the server on PostgreSQL ----------------------------------------------------------------------
    server = await startTestServer("postgres", {}, { dataDir, databaseUrl: target.url });
    s = server;
    const synced = await call<Json>(s.url, "GET", "/_matrix/client/v3/sync?timeout=0&filter=" + enc(JSON.stringify({ room: { timeline: { limit: 100 } } })), { token: bert.access_token });
    assert.equal(synced.status, 200, "sessions moved along");
    const bodies = ((synced.body.rooms.join[roomId].timeline.events ?? []) as Json[]).filter((e) => e.type === "m.room.message").map((e) => e.content.body);
    assert.deepEqual(bodies, texts);
    assert.deepEqual(((synced.body.to_device?.events ?? []) as Json[]).map((e) => e.content), [{ n: 1 }], "the waiting to-device message arrives");
    const [mediaServer, mediaId] = String(up.body.content_uri).replace("mxc://", "").split("/");
    const dl = await fetch(`${s.url}/_matrix/client/v1/media/download/${mediaServer}/${mediaId}`, { headers: { authorization: `Bearer ${anna.access_token}` } });
    assert.ok(Buffer.from(await dl.arrayBuffer()).equals(photo));
    assert.ok((await s.login("anna")).access_token, "password hashes moved along");

    // Writes continue: the next event takes the next stream position; serial ids do not collide.
    const position = await s.services.stream.current();
    assert.ok(position >= streamInSqlite, "the stream carries on from SQLite's position");
    const next = await call<Json>(s.url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/after`, { token: anna.access_token, body: { msgtype: "m.text", body: "auf PostgreSQL" } });
    assert.equal(next.status, 200);
    const row = await s.services.storage.db.selectFrom("events").select("stream_ordering").where("event_id", "=", next.body.event_id).executeTakeFirstOrThrow();
    assert.equal(Number(row.stream_ordering), position + 1);
    assert.equal((await call(s.url, "PUT", `/_matrix/client/v3/sendToDevice/org.example.hinweis/t2`, { token: anna.access_token, body: { messages: { [bert.user_id]: { [bert.device_id]: { n: 2 } } } } })).status, 200);
    const more = device.oneTimeKeys(2);
    assert.equal((await call(s.url, "POST", "/_matrix/client/v3/keys/upload", { token: anna.access_token, body: { one_time_keys: more } })).status, 200);
    const claimed = await call<Json>(s.url, "POST", "/_matrix/client/v3/keys/claim", { token: bert.access_token, body: { one_time_keys: { [anna.user_id]: { [anna.device_id]: "signed_curve25519" } } } });
    assert.deepEqual(Object.keys(claimed.body.one_time_keys[anna.user_id][anna.device_id]), [Object.keys(otks)[0]], "keys are handed out oldest first, as before the port");
    const audit = await s.services.audit.verify();
    assert.equal(audit.ok, true);
  });
});
