import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { migrate, openSqlite, type Storage } from "../storage/database.js";
import { StreamWriter } from "../storage/stream.js";
import { LocalBus } from "../bus/local.js";
import { Metrics } from "../http/metrics.js";
import { Notifier } from "../sync/notifier.js";
import { DeviceSyncCache } from "./device-sync-cache.js";

const STATE = { counts: { signed_curve25519: 5 }, fallbacks: ["signed_curve25519"] };

describe("DeviceSyncCache", () => {
  let storage: Storage;
  let bus: LocalBus;
  let stream: StreamWriter;
  let notifier: Notifier;
  let clock = 0;
  let cache: DeviceSyncCache;

  before(async () => {
    storage = openSqlite(":memory:");
    await migrate(storage);
    bus = new LocalBus();
    stream = new StreamWriter(storage, bus);
    notifier = new Notifier(bus, new Metrics(), { gapGiveUpMs: 60_000 });
    notifier.start(await stream.current(), () => stream.current());
    cache = new DeviceSyncCache(notifier, { maxAgeMs: 1000, maxEntries: 3, now: () => clock });
    notifier.observe((w) => cache.observe(w));
  });
  after(async () => {
    notifier.close();
    await storage.close();
  });

  /** A stream write taking one position, announcing what `announce` says. */
  const write = (announce: (w: Parameters<Parameters<StreamWriter["write"]>[0]>[0]) => void) =>
    stream.write(async (w) => {
      w.next();
      announce(w);
    });

  /** Reads nothing (the caller's statement is not the point here) and keeps `STATE` at the current position. */
  async function fill(userId: string, deviceId: string): Promise<number> {
    const at = await stream.current();
    cache.keep(userId, deviceId, at, STATE);
    return at;
  }

  test("a copy holds at later positions while nothing about the device was announced", async () => {
    const at = await fill("@a:x", "D1");
    assert.deepEqual(cache.get("@a:x", "D1", at), STATE);
    await write((w) => w.touch({ rooms: ["!room:x"] }));
    await write((w) => w.touch({ users: ["@a:x"], rooms: ["!room:x"], kind: "presence" }));
    await write((w) => w.touch({ users: ["@other:x"] }));
    await write((w) => w.keysChanged(["@other:x"]));
    const now = await stream.current();
    assert.deepEqual(cache.get("@a:x", "D1", now), STATE, "a message, presence and other users' news leave it");
    assert.equal(cache.get("@a:x", "D2", now), undefined, "another device of the user has no copy");
    assert.equal(cache.get("@a:x", "D1", at - 1), undefined, "an answer up to an earlier position is not covered");
    assert.deepEqual(cache.get("@a:x", "D1", now), STATE, "and does not lose the copy");
  });

  test("key changes and news of the user's own drop the copies of all the user's devices", async () => {
    await fill("@b:x", "D1");
    await fill("@b:x", "D2");
    await write((w) => w.keysChanged(["@b:x"]));
    const now = await stream.current();
    assert.equal(cache.get("@b:x", "D1", now), undefined);
    assert.equal(cache.get("@b:x", "D2", now), undefined);

    await fill("@b:x", "D1");
    await write((w) => w.touch({ users: ["@b:x"] }));
    assert.equal(cache.get("@b:x", "D1", await stream.current()), undefined, "a to-device message names the user");
  });

  test("a state read up to a position is not kept when an announcement above it has been heard", async () => {
    // A build answering up to `at` (it may have waited its turn while more was heard) reads the
    // state; a to-device message and a claim for the user were announced above `at` before it
    // keeps what it read, even before its read began.
    const at = await stream.current();
    await write((w) => w.touch({ users: ["@c:x"] }));
    cache.keep("@c:x", "D1", at, STATE);
    assert.equal(cache.get("@c:x", "D1", await stream.current()), undefined, "the to-device message would be lost");
    const at2 = await stream.current();
    await write((w) => w.keysChanged(["@c:x"]));
    cache.keep("@c:x", "D1", at2, STATE);
    assert.equal(cache.get("@c:x", "D1", await stream.current()), undefined, "the claim would be missed");
    // Announcements at or below the read's position were read with it; other users' do not count.
    await write((w) => w.touch({ users: ["@other:x"] }));
    await fill("@c:x", "D1");
    assert.deepEqual(cache.get("@c:x", "D1", await stream.current()), STATE);
  });

  test("not across a batch that was not heard, and not past its age", async () => {
    const at = await fill("@d:x", "D1");
    // Another process's batch (at+1, at+2] is on its way; (at+2, at+3] arrived first.
    bus.publish({ position: at + 3, from: at + 2, rooms: [], users: [] });
    assert.equal(cache.get("@d:x", "D1", at + 3), undefined, "the missing batch may have changed the keys");
    bus.publish({ position: at + 2, from: at + 1, rooms: [], users: [] });
    assert.equal(cache.get("@d:x", "D1", at + 3), undefined, "still one missing");
    bus.publish({ position: at + 1, from: at, rooms: [], users: [] });
    assert.deepEqual(cache.get("@d:x", "D1", at + 3), STATE, "every batch heard, none named the user");

    clock += 1001;
    const before = cache.entries;
    assert.equal(cache.get("@d:x", "D1", at + 3), undefined, "read again after its age");
    assert.equal(cache.entries, before - 1, "and forgotten");
  });

  test("nothing is kept from before the log of announcements reaches back", async () => {
    const at = await stream.current();
    for (let i = 0; i < 1025; i++) await write((w) => w.touch({ users: [`@busy${i}:x`] }));
    cache.keep("@f:x", "D1", at, STATE);
    assert.equal(cache.get("@f:x", "D1", await stream.current()), undefined, "an announcement for @f:x could have left the log");
    await fill("@f:x", "D1");
    assert.deepEqual(cache.get("@f:x", "D1", await stream.current()), STATE);
  });

  test("keeps at most maxEntries devices, dropping the users refreshed longest ago", async () => {
    await fill("@e1:x", "D1");
    await fill("@e2:x", "D1");
    await fill("@e3:x", "D1");
    await fill("@e1:x", "D2");
    assert.equal(cache.entries, 3);
    const now = await stream.current();
    assert.equal(cache.get("@e2:x", "D1", now), undefined, "the oldest user went");
    assert.deepEqual(cache.get("@e1:x", "D1", now), STATE);
    assert.deepEqual(cache.get("@e3:x", "D1", now), STATE);
  });
});
