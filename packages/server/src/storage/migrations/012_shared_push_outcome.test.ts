import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { sql, type Kysely } from "kysely";
import { migrate, openPostgres, openSqlite, type Storage } from "../database.js";
import { MIGRATIONS } from "./index.js";
import { unreadInRoom } from "../../push/notifications.js";
import { DB_KINDS, PG_SKIP_MESSAGE, createScratchDatabase, postgresReachable } from "../../../test/support/databases.js";

const pgOk = await postgresReachable();

for (const kind of DB_KINDS) {
  describe(`migration 012 on a database of 011 [${kind}]`, { skip: kind === "postgres" && !pgOk ? PG_SKIP_MESSAGE : false }, () => {
    let storage: Storage;
    let drop = async (): Promise<void> => undefined;
    after(async () => {
      await storage?.close();
      await drop();
    });

    test("members joined before the upgrade count the shared notifications that follow it; others do not", async () => {
      if (kind === "sqlite") storage = openSqlite(":memory:");
      else {
        const scratch = await createScratchDatabase();
        storage = openPostgres(scratch.url);
        drop = scratch.drop;
      }
      // The database as 011 left it.
      const raw = storage.db as unknown as Kysely<unknown>;
      await sql`create table revier_migrations (name text primary key, applied_ts bigint not null)`.execute(raw);
      const upTo011 = MIGRATIONS.slice(0, MIGRATIONS.findIndex((m) => m.name === "012_shared_push_outcome"));
      assert.equal(upTo011.at(-1)!.name, "011_push_actions_by_user");
      for (const m of upTo011) {
        await m.up(raw, storage.dialect);
        await sql`insert into revier_migrations (name, applied_ts) values (${m.name}, ${0})`.execute(raw);
      }
      const member = (user: string, membership: string, pos: number) =>
        sql`insert into room_members (room_id, user_id, membership, event_id, stream_ordering, sender, displayname, avatar_url, forgotten)
            values ('!r:t', ${user}, ${membership}, ${`$m${pos}`}, ${pos}, ${user}, null, null, 0)`.execute(raw);
      await member("@joined:t", "join", 5);
      await member("@left:t", "leave", 6);
      await member("@invited:t", "invite", 7);

      // 012 and whatever came after it.
      assert.deepEqual(await migrate(storage), MIGRATIONS.slice(upTo011.length).map((m) => m.name));
      assert.equal(MIGRATIONS[upTo011.length]!.name, "012_shared_push_outcome");
      const rows = await storage.db.selectFrom("room_members").select(["user_id", "joined_at"]).orderBy("user_id").execute();
      assert.deepEqual(
        rows.map((r) => [r.user_id, r.joined_at === null ? null : Number(r.joined_at)]),
        [
          ["@invited:t", null],
          ["@joined:t", 5],
          ["@left:t", null],
        ],
      );
      // A shared notification after the upgrade reaches the member who was joined before it.
      await storage.db.insertInto("event_push_shared").values({ room_id: "!r:t", stream_ordering: 10, event_id: "$e10", sender: "@other:t", thread_id: "main", highlight: 0 }).execute();
      assert.equal((await unreadInRoom(storage.db, "@joined:t", "!r:t", 100)).notify, 1);
      assert.equal((await unreadInRoom(storage.db, "@left:t", "!r:t", 100)).notify, 0);
    });
  });
}
