import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { migrate, openSqlite, type Storage } from "../storage/database.js";
import { StreamWriter } from "../storage/stream.js";
import { LocalBus } from "../bus/local.js";
import { Metrics } from "../http/metrics.js";
import { Notifier } from "./notifier.js";

describe("Notifier", () => {
  let storage: Storage;
  let stream: StreamWriter;
  let notifier: Notifier;
  before(async () => {
    storage = openSqlite(":memory:");
    await migrate(storage);
    const bus = new LocalBus();
    stream = new StreamWriter(storage, bus);
    notifier = new Notifier(bus, new Metrics());
  });
  after(async () => {
    notifier.close();
    await storage.close();
  });

  /** Starts a long wait and reports whether it was woken (rather than still waiting) once `act` is done. */
  async function woken(opts: { presence: boolean }, act: () => Promise<void>): Promise<boolean> {
    const ac = new AbortController();
    let done = false;
    const waiting = notifier.wait("@w:test", new Set(["!room:test"]), await stream.current(), 60_000, ac.signal, opts).then(() => (done = true));
    await act();
    // The wake-up is published synchronously after the commit; let the waiter's promise settle.
    await new Promise((resolve) => setImmediate(resolve));
    const result = done;
    ac.abort();
    await waiting;
    return result;
  }

  const presenceWrite = () =>
    stream.write(async (w) => {
      w.next();
      w.touch({ users: ["@other:test"], rooms: ["!room:test"], kind: "presence" });
    });
  const roomWrite = () =>
    stream.write(async (w) => {
      w.next();
      w.touch({ rooms: ["!room:test"] });
    });

  test("a presence-only wake-up passes by waiters whose filter leaves presence out", async () => {
    assert.equal(await woken({ presence: false }, presenceWrite), false);
    assert.equal(await woken({ presence: true }, presenceWrite), true);
  });

  test("any other news wakes every waiter of the room", async () => {
    assert.equal(await woken({ presence: false }, roomWrite), true);
    assert.equal(await woken({ presence: true }, roomWrite), true);
  });

  test("a batch mixing presence with other news wakes everyone", async () => {
    assert.equal(
      await woken({ presence: false }, async () => {
        // Queued in one tick, so they commit together and share one wake-up.
        await Promise.all([presenceWrite(), roomWrite()]);
      }),
      true,
    );
  });

  test("a presence-only wake-up naming the waiter's own user passes it by too", async () => {
    assert.equal(
      await woken({ presence: false }, () =>
        stream.write(async (w) => {
          w.next();
          w.touch({ users: ["@w:test"], kind: "presence" });
        }),
      ),
      false,
    );
  });
});
