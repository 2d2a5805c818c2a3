import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, existsSync } from "node:fs";
import path from "node:path";
import { sql } from "kysely";
import { startTestServer, type TestServer } from "./support/server.js";
import { api, enc } from "./support/http.js";

// A redacted message must be gone from the database files themselves, not only from API answers:
// no copy in another table or column, and no readable leftover in the page it was stored in.
let server: TestServer;
before(async () => {
  server = await startTestServer("sqlite");
});
after(async () => {
  await server.destroy();
});

test("a redacted message's text is not left in the SQLite files", async () => {
  await server.createUser("rita");
  const { access_token: token } = await server.login("rita");
  const room = await api<{ room_id: string }>(server.url, "POST", "/_matrix/client/v3/createRoom", { token, body: {} });
  const marker = `Zeugenaussage-${Date.now()}-VERTRAULICH`;
  // The message sits between others, as in real rooms: its row shares a page with theirs.
  const send = (txn: string, body: string) => api<{ event_id: string }>(server.url, "PUT", `/_matrix/client/v3/rooms/${enc(room.body.room_id)}/send/m.room.message/${txn}`, { token, body: { msgtype: "m.text", body } });
  for (let i = 0; i < 5; i++) assert.equal((await send(`before${i}`, `Lagemeldung ${i}`)).status, 200);
  const sent = await send("t1", marker);
  assert.equal(sent.status, 200);
  for (let i = 0; i < 5; i++) assert.equal((await send(`after${i}`, `Lagemeldung ${i + 5}`)).status, 200);
  const db = server.services.storage.db;
  await sql`pragma wal_checkpoint(TRUNCATE)`.execute(db);
  const file = path.join(server.dataDir, "revier.db");
  const contains = () => [file, `${file}-wal`].some((f) => existsSync(f) && readFileSync(f).includes(Buffer.from(marker)));
  assert.ok(contains(), "the marker should be in the file before redaction (otherwise this test proves nothing)");
  const redacted = await api(server.url, "PUT", `/_matrix/client/v3/rooms/${enc(room.body.room_id)}/redact/${enc(sent.body.event_id)}/r1`, { token, body: { reason: "Falscher Raum" } });
  assert.equal(redacted.status, 200);
  await sql`pragma wal_checkpoint(TRUNCATE)`.execute(db);
  assert.equal(contains(), false, "the redacted text is still readable in the database file");
});
