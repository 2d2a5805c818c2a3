import { after, test } from "node:test";
import assert from "node:assert/strict";
import { describe } from "node:test";
import { DB_KINDS, PG_SKIP_MESSAGE, postgresReachable } from "./support/databases.js";
import { startTestServer, type TestServer } from "./support/server.js";
import { api } from "./support/http.js";

const pgOk = await postgresReachable();

for (const kind of DB_KINDS) {
  describe(`restart on the same data [${kind}]`, { skip: kind === "postgres" && !pgOk ? PG_SKIP_MESSAGE : false }, () => {
    let server: TestServer | undefined;
    after(async () => server?.destroy());

    test("clients carry on with their old sync tokens and miss nothing; transaction ids stay idempotent", async () => {
      server = await startTestServer(kind);
      await server.createUser("anna");
      await server.createUser("bert");
      const a = await server.login("anna");
      const b = await server.login("bert");
      const room = await api(server.url, "POST", "/_matrix/client/v3/createRoom", { token: a.access_token, body: { preset: "public_chat" } });
      const roomId = room.body.room_id as string;
      await api(server.url, "POST", `/_matrix/client/v3/join/${encodeURIComponent(roomId)}`, { token: b.access_token, body: {} });
      const first = await api(server.url, "PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/txn-1`, { token: a.access_token, body: { msgtype: "m.text", body: "vor dem Neustart" } });
      const sync1 = await api(server.url, "GET", "/_matrix/client/v3/sync?timeout=0", { token: b.access_token });
      const since = sync1.body.next_batch as string;

      server = await server.restart();
      const retry = await api(server.url, "PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/txn-1`, { token: a.access_token, body: { msgtype: "m.text", body: "vor dem Neustart" } });
      assert.equal(retry.status, 200);
      assert.equal(retry.body.event_id, first.body.event_id, "a retried transaction returns the original event id");
      await api(server.url, "PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/txn-2`, { token: a.access_token, body: { msgtype: "m.text", body: "nach dem Neustart" } });
      const sync2 = await api(server.url, "GET", `/_matrix/client/v3/sync?timeout=0&since=${encodeURIComponent(since)}`, { token: b.access_token });
      assert.equal(sync2.status, 200);
      const timeline = ((sync2.body.rooms as { join: Record<string, { timeline: { events: Array<{ content: { body?: string } }> } }> }).join[roomId]!.timeline.events).map((e) => e.content.body);
      assert.deepEqual(timeline, ["nach dem Neustart"]);
      const count = await server.services.storage.db.selectFrom("events").select((eb) => eb.fn.countAll<number>().as("n")).where("room_id", "=", roomId).where("type", "=", "m.room.message").executeTakeFirst();
      assert.equal(Number(count?.n), 2, "the retried send stored nothing new");
    });
  });
}
