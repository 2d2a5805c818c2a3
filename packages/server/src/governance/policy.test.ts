import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { migrate, openSqlite, type Storage } from "../storage/database.js";
import { StreamWriter } from "../storage/stream.js";
import { LocalBus } from "../bus/local.js";
import { AuditLog } from "./audit.js";
import { PolicyStore } from "./policy.js";

let storage: Storage;
let audit: AuditLog;
before(async () => {
  storage = openSqlite(":memory:");
  await migrate(storage);
  audit = new AuditLog(storage.db, new StreamWriter(storage, new LocalBus()));
});
after(() => storage.close());

test("a policy changed elsewhere is seen after at most 5 s, and an unchanged one is not rebuilt", async () => {
  let now = 1_000_000;
  const clock = () => now;
  // Two processes' stores on one database.
  const here = new PolicyStore(storage.db, audit, clock);
  const there = new PolicyStore(storage.db, audit, clock);
  const defaults = await here.get();
  assert.equal(defaults.max_devices, 3);
  now += 5_000;
  assert.equal(await here.get(), defaults, "no stored policy: the defaults are not filled in again");

  await there.set({ max_devices: 5 }, { actor: "@admin:test", actorRole: "admin" });
  assert.equal((await there.get()).max_devices, 5);
  now += 4_999;
  assert.equal((await here.get()).max_devices, 3, "cached for 5 s");
  now += 1;
  const changed = await here.get();
  assert.equal(changed.max_devices, 5);
  now += 60_000;
  assert.equal(await here.get(), changed, "the stored text is unchanged: the same object");

  // A row written by an older version, without today's keys: the defaults fill them in.
  await storage.db.updateTable("governance_policy").set({ json: JSON.stringify({ max_devices: 2 }) }).where("name", "=", "org").execute();
  now += 5_000;
  const older = await here.get();
  assert.equal(older.max_devices, 2);
  assert.deepEqual({ ...older, max_devices: 3 }, defaults);
});
