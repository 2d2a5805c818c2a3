import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { migrate, openSqlite, type Storage } from "../storage/database.js";
import { StreamWriter } from "../storage/stream.js";
import { LocalBus } from "../bus/local.js";
import { Metrics } from "../http/metrics.js";
import { ClientGone, Notifier, type CancelSignal, type WaitOutcome } from "./notifier.js";
import type { WakeUp } from "../bus/bus.js";

/** A wait as a promise: Notifier.park's outcome. */
function waitFor(notifier: Notifier, userId: string, rooms: ReadonlySet<string>, since: number, timeoutMs: number, signal?: CancelSignal, opts: { presence?: boolean; ephemeral?: boolean } = {}): Promise<WaitOutcome> {
  return new Promise((resolve) => notifier.park(userId, rooms, since, timeoutMs, signal, opts, resolve));
}

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
  async function woken(opts: { presence: boolean; ephemeral?: boolean }, act: () => Promise<void>): Promise<boolean> {
    const ac = new AbortController();
    let done = false;
    const waiting = waitFor(notifier, "@w:test", new Set(["!room:test"]), await stream.current(), 60_000, ac.signal, opts).then(() => (done = true));
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

  const receiptWrite = () =>
    stream.write(async (w) => {
      w.next();
      w.touch({ rooms: ["!room:test"], kind: "ephemeral" });
      w.touch({ users: ["@other:test"] });
    });

  test("receipts and typing alone pass by waiters whose filter leaves both out; in a small room the others wake at once", async () => {
    assert.equal(await woken({ presence: true, ephemeral: false }, receiptWrite), false);
    assert.equal(await woken({ presence: false, ephemeral: true }, receiptWrite), true);
    // With other news for the room in the same batch, the room is announced as such.
    assert.equal(await woken({ presence: true, ephemeral: false }, async () => void (await Promise.all([receiptWrite(), roomWrite()]))), true);
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

describe("Notifier: which positions it can vouch for", () => {
  const wake = (from: number | undefined, position: number, rooms: string[] = ["!elsewhere:test"], users: string[] = []): WakeUp => ({ from, position, rooms, users });
  let bus: LocalBus;
  let notifier: Notifier;
  let reads = 0;
  let committed = 0;
  const fresh = (opts: { gapGiveUpMs?: number } = {}) => {
    notifier?.close();
    bus = new LocalBus();
    notifier = new Notifier(bus, new Metrics(), opts);
    reads = 0;
    notifier.start(10, async () => {
      reads++;
      return committed;
    });
  };
  after(() => notifier.close());
  const timeout = (since: number) => waitFor(notifier, "@w:test", new Set(["!room:test"]), since, 5);

  test("a long-poll that times out with no news can answer the last announced position", async () => {
    fresh();
    const waiting = timeout(10);
    bus.publish(wake(10, 12));
    bus.publish(wake(12, 13));
    assert.deepEqual(await waiting, { reason: "timeout", quietThrough: 13 });
  });

  test("a long wait (the shared deadlines, not a timer of its own) times out the same way, and not early", async () => {
    fresh();
    const started = Date.now();
    const waiting = waitFor(notifier, "@w:test", new Set(["!room:test"]), 10, 2_000);
    bus.publish(wake(10, 12));
    assert.deepEqual(await waiting, { reason: "timeout", quietThrough: 12 });
    assert.ok(Date.now() - started >= 2_000, `timed out after ${Date.now() - started} ms`);
  });

  test("news for the waiter wakes it instead, saying where its news begins", async () => {
    fresh();
    const waiting = timeout(10);
    bus.publish(wake(10, 11));
    bus.publish(wake(11, 12, [], ["@other:test"]));
    bus.publish(wake(12, 14, ["!room:test"]));
    assert.deepEqual(await waiting, { reason: "woken", quietThrough: 12 }, "(10, 12] named neither the user nor its room");
  });

  test("woken out of order: nothing past a missing batch is vouched for", async () => {
    fresh();
    const waiting = timeout(10);
    bus.publish(wake(10, 11));
    // Another process's batch (13, 15] overtook (11, 13], which may hold news for the waiter too.
    bus.publish(wake(13, 15, ["!room:test"]));
    assert.deepEqual(await waiting, { reason: "woken", quietThrough: 11 });
  });

  test("a waiter woken at once (the stream had moved on) is vouched nothing", async () => {
    fresh();
    bus.publish(wake(10, 12));
    assert.deepEqual(await timeout(11), { reason: "woken", quietThrough: null });
  });

  test("a presence-only batch ends the quiet only for waiters that want presence", async () => {
    fresh();
    const rooms = new Set(["!room:test"]);
    const lean = waitFor(notifier, "@w:test", rooms, 10, 5_000, undefined, { presence: false });
    const full = waitFor(notifier, "@v:test", rooms, 10, 5_000, undefined, { presence: true });
    bus.publish({ from: 10, position: 11, rooms: ["!room:test"], users: ["@p:test"], presenceOnly: true });
    bus.publish(wake(11, 12, ["!room:test"]));
    assert.deepEqual(await full, { reason: "woken", quietThrough: 10 });
    assert.deepEqual(await lean, { reason: "woken", quietThrough: 11 });
  });

  test("a wait that began before the watermark started is vouched nothing when woken either", async () => {
    fresh();
    const waiting = waitFor(notifier, "@w:test", new Set(["!room:test"]), 8, 5_000);
    bus.publish(wake(10, 11, ["!room:test"]));
    assert.deepEqual(await waiting, { reason: "woken", quietThrough: null });
  });

  test("out of order: nothing past a missing batch is vouched for until it arrives", async () => {
    fresh();
    // Another process's batch (12, 15] overtook (10, 12], which may hold news for the waiter.
    bus.publish(wake(12, 15));
    let outcome = await timeout(10);
    assert.equal(outcome.reason, "woken", "position 15 was heard of, so the caller looks first");
    outcome = await waitFor(notifier, "@w:test", new Set(["!room:test"]), 15, 5);
    assert.deepEqual(outcome, { reason: "timeout", quietThrough: null }, "a wait from 15 cannot rely on (10, 12]");
    bus.publish(wake(10, 12));
    assert.deepEqual(await waitFor(notifier, "@w:test", new Set(["!room:test"]), 15, 5), { reason: "timeout", quietThrough: 15 });
  });

  test("heardNewsPosition: the newest heard position short of trailing presence-only batches", () => {
    fresh();
    bus.publish(wake(10, 12));
    bus.publish({ from: 12, position: 14, rooms: ["!room:test"], users: ["@p:test"], presenceOnly: true });
    assert.equal(notifier.heardPosition(), 14);
    assert.equal(notifier.heardNewsPosition(), 12);
    // A batch ahead of a gap is news, but nothing past the gap is vouched for.
    bus.publish(wake(15, 16));
    assert.equal(notifier.heardNewsPosition(), null);
    bus.publish({ from: 14, position: 15, rooms: [], users: ["@p:test"], presenceOnly: true });
    assert.deepEqual([notifier.heardPosition(), notifier.heardNewsPosition()], [16, 16]);
  });

  test("a wait that began before the watermark started is not vouched for", async () => {
    fresh();
    assert.deepEqual(await waitFor(notifier, "@w:test", new Set(["!room:test"]), 8, 5), { reason: "timeout", quietThrough: null });
  });

  test("a peer that does not announce ranges switches the shortcut off", async () => {
    fresh();
    bus.publish(wake(undefined, 11));
    assert.deepEqual(await timeout(11), { reason: "timeout", quietThrough: null });
    bus.publish(wake(11, 12));
    assert.deepEqual(await timeout(12), { reason: "timeout", quietThrough: null });
  });

  test("a batch that never arrives is given up on: the watermark starts again from the committed position", async () => {
    fresh({ gapGiveUpMs: 0 });
    committed = 20;
    bus.publish(wake(12, 15)); // (10, 12] is lost
    await new Promise((resolve) => setTimeout(resolve, 5));
    bus.publish(wake(15, 20)); // past the give-up time: read the committed position again
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(reads, 1);
    assert.deepEqual(await timeout(20), { reason: "timeout", quietThrough: 20 });
    bus.publish(wake(20, 21));
    assert.deepEqual(await waitFor(notifier, "@w:test", new Set(["!room:test"]), 21, 5), { reason: "timeout", quietThrough: 21 });
  });

  test("quietBetween: a window is quiet for a user when no batch in it named the user or one of its rooms", () => {
    fresh();
    const rooms = new Set(["!room:test"]);
    bus.publish(wake(10, 12));
    bus.publish({ from: 12, position: 13, rooms: ["!room:test"], users: [], presenceOnly: true });
    bus.publish({ from: 13, position: 14, rooms: [], users: ["@other:test"] });
    assert.equal(notifier.quietBetween("@w:test", rooms, 10, 14, false, false), true, "presence-only news passes a waiter without presence");
    assert.equal(notifier.quietBetween("@w:test", rooms, 10, 14, true, false), false, "but not one that wants presence");
    assert.equal(notifier.quietBetween("@w:test", rooms, 13, 14, true, false), true, "windows after it are quiet again");
    bus.publish({ from: 14, position: 15, rooms: [], users: ["@w:test"] });
    assert.equal(notifier.quietBetween("@w:test", rooms, 10, 15, false, false), false, "news naming the user");
    bus.publish(wake(15, 16, ["!room:test"]));
    assert.equal(notifier.quietBetween("@w:test", rooms, 15, 16, false, false), false, "news in one of its rooms");
    assert.equal(notifier.quietBetween("@w:test", rooms, 15, 17, false, false), false, "a window reaching past what was announced");
    assert.equal(notifier.quietBetween("@w:test", rooms, 8, 12, false, false), false, "a window from before the watermark started");
    assert.equal(notifier.quietBetween("@w:test", rooms, 16, 16, false, false), true);
    bus.publish({ from: 16, position: 17, rooms: [], users: ["@other:test"], ephemeralRooms: ["!room:test"] });
    assert.equal(notifier.quietBetween("@w:test", rooms, 16, 17, false, false), true, "receipts or typing alone pass a waiter that filters both out");
    assert.equal(notifier.quietBetween("@w:test", rooms, 16, 17, false, true), false, "but not one that wants them");
  });

  test("quietBetween: out of order, nothing is vouched for until the gap closes", () => {
    fresh();
    const rooms = new Set(["!room:test"]);
    bus.publish(wake(12, 15));
    assert.equal(notifier.quietBetween("@w:test", rooms, 10, 15, false, false), false);
    bus.publish(wake(10, 12, ["!room:test"]));
    assert.equal(notifier.quietBetween("@w:test", rooms, 10, 15, false, false), false, "the late batch named the room");
    assert.equal(notifier.quietBetween("@w:test", rooms, 12, 15, false, false), true);
  });

  test("park: the outcome comes once, from a microtask, not from inside the wake-up", async () => {
    fresh();
    const outcomes: WaitOutcome[] = [];
    const gone = new ClientGone();
    notifier.park("@w:test", new Set(["!room:test"]), 10, 60_000, gone, {}, (o) => outcomes.push(o));
    bus.publish(wake(10, 11, ["!room:test"]));
    gone.cancel();
    assert.equal(outcomes.length, 0, "not called while the wake-up is being handled");
    await Promise.resolve();
    assert.deepEqual(outcomes, [{ reason: "woken", quietThrough: 10 }], "woken once; the later abort is too late");
    // The cases answered without waiting come the same way.
    notifier.park("@w:test", new Set(["!room:test"]), 10, 60_000, undefined, {}, (o) => outcomes.push(o));
    assert.equal(outcomes.length, 1);
    await Promise.resolve();
    assert.deepEqual(outcomes[1], { reason: "woken", quietThrough: null });
  });

  test("two waits of one user (two devices) and of one room: one leaving keeps the others indexed", async () => {
    fresh();
    const phone = new ClientGone();
    const rooms = new Set(["!room:test"]);
    const first = waitFor(notifier, "@w:test", rooms, 10, 60_000, phone);
    const second = waitFor(notifier, "@w:test", rooms, 10, 60_000);
    const other = waitFor(notifier, "@v:test", rooms, 10, 60_000);
    phone.cancel();
    assert.deepEqual(await first, { reason: "aborted" });
    bus.publish(wake(10, 11, [], ["@w:test"]));
    assert.deepEqual(await second, { reason: "woken", quietThrough: 10 }, "the user's other wait still hears of the user");
    const third = waitFor(notifier, "@w:test", rooms, 11, 60_000);
    bus.publish(wake(11, 12, ["!room:test"]));
    assert.deepEqual(await Promise.all([other, third]), [
      { reason: "woken", quietThrough: 11 },
      { reason: "woken", quietThrough: 11 },
    ]);
  });

  test("aborting and closing say so", async () => {
    fresh();
    const ac = new AbortController();
    const waiting = waitFor(notifier, "@w:test", new Set(["!room:test"]), 10, 60_000, ac.signal);
    ac.abort();
    assert.deepEqual(await waiting, { reason: "aborted" });
    // The /sync route's own signal works the same way.
    const gone = new ClientGone();
    const waitingForClient = waitFor(notifier, "@w:test", new Set(["!room:test"]), 10, 60_000, gone);
    gone.cancel();
    assert.deepEqual(await waitingForClient, { reason: "aborted" });
    assert.deepEqual(await waitFor(notifier, "@w:test", new Set(["!room:test"]), 10, 60_000, gone), { reason: "aborted" }, "already gone");
    const open = waitFor(notifier, "@w:test", new Set(["!room:test"]), 10, 60_000);
    notifier.close();
    assert.deepEqual(await open, { reason: "closed" });
  });
});

describe("Notifier.heardPosition", () => {
  test("known only while no batch is missing", () => {
    const bus = new LocalBus();
    const notifier = new Notifier(bus, new Metrics());
    assert.equal(notifier.heardPosition(), null, "before start");
    notifier.start(10, async () => 10);
    assert.equal(notifier.heardPosition(), 10);
    bus.publish({ from: 12, position: 14, rooms: [], users: [] });
    assert.equal(notifier.heardPosition(), null, "(10, 12] is still on its way");
    bus.publish({ from: 10, position: 12, rooms: [], users: [] });
    assert.equal(notifier.heardPosition(), 14);
    notifier.close();
  });
});

describe("Notifier.paceWakes: a wave's waiters woken as there is room", () => {
  const turn = () => new Promise((resolve) => setImmediate(resolve));
  function paced(): { bus: LocalBus; notifier: Notifier; room: { n: number }; outcomes: Array<[number, string]>; waitAll: (count: number, timeoutMs?: number, signals?: ClientGone[]) => Promise<unknown> } {
    const bus = new LocalBus();
    const notifier = new Notifier(bus, new Metrics());
    notifier.start(10, async () => 10);
    const room = { n: 0 };
    notifier.paceWakes(() => room.n);
    const outcomes: Array<[number, string]> = [];
    const waitAll = (count: number, timeoutMs = 60_000, signals: ClientGone[] = []) =>
      Promise.all(
        Array.from({ length: count }, (_, i) =>
          waitFor(notifier, `@w${i}:test`, new Set(["!room:test"]), 10, timeoutMs, signals[i]).then((o) => {
            outcomes.push([i, o.reason]);
          }),
        ),
      );
    return { bus, notifier, room, outcomes, waitAll };
  }

  test("as many as there is room for, in the wake-up's order; more when a build says there is room again", async () => {
    const { bus, notifier, room, outcomes, waitAll } = paced();
    const all = waitAll(5);
    room.n = 2;
    bus.publish({ from: 10, position: 11, rooms: ["!room:test"], users: [] });
    room.n = 0;
    await turn();
    assert.deepEqual(outcomes, [[0, "woken"], [1, "woken"]]);
    assert.equal(notifier.wakesQueued, 3);
    await turn();
    assert.equal(outcomes.length, 2, "no room: nobody else is woken, and nothing spins");
    room.n = 2;
    notifier.resumeWakes();
    await turn();
    room.n = 0;
    await turn();
    assert.deepEqual(outcomes.map(([i]) => i), [0, 1, 2, 3]);
    room.n = 5;
    notifier.resumeWakes();
    await all;
    assert.deepEqual(outcomes, [[0, "woken"], [1, "woken"], [2, "woken"], [3, "woken"], [4, "woken"]]);
    assert.equal(notifier.wakesQueued, 0);
    notifier.close();
  });

  test("with room left after a batch (those woken had nothing to build), the next turn goes on by itself", async () => {
    const { bus, notifier, room, outcomes, waitAll } = paced();
    const all = waitAll(5);
    room.n = 1;
    bus.publish({ from: 10, position: 11, rooms: ["!room:test"], users: [] });
    await all;
    assert.deepEqual(outcomes.map(([i]) => i), [0, 1, 2, 3, 4]);
    notifier.close();
  });

  test("a waiter in line whose time is up is woken, not timed out: it had news", async () => {
    const { bus, notifier, outcomes, waitAll } = paced();
    const all = waitAll(3, 20);
    bus.publish({ from: 10, position: 11, rooms: ["!room:test"], users: [] });
    assert.equal(notifier.wakesQueued, 3, "no room: all in line");
    await all;
    assert.deepEqual(outcomes, [[0, "woken"], [1, "woken"], [2, "woken"]]);
    notifier.close();
  });

  test("a waiter woken from the line, or by its timeout while in line, keeps where its news began", async () => {
    const { bus, notifier, room } = paced();
    const fromLine = waitFor(notifier, "@w:test", new Set(["!room:test"]), 10, 60_000);
    const timedOut = waitFor(notifier, "@v:test", new Set(["!room:test"]), 10, 20);
    bus.publish({ from: 10, position: 11, rooms: ["!elsewhere:test"], users: [] });
    bus.publish({ from: 11, position: 12, rooms: ["!room:test"], users: [] });
    // Later news while they wait in line does not move it.
    bus.publish({ from: 12, position: 13, rooms: ["!room:test"], users: [] });
    assert.deepEqual(await timedOut, { reason: "woken", quietThrough: 11 });
    room.n = 1;
    notifier.resumeWakes();
    assert.deepEqual(await fromLine, { reason: "woken", quietThrough: 11 });
    notifier.close();
  });

  test("a waiter in line whose client left is let go at once; closing wakes the rest", async () => {
    const { bus, notifier, room, outcomes, waitAll } = paced();
    const gone = new ClientGone();
    const all = waitAll(3, 60_000, [new ClientGone(), gone]);
    bus.publish({ from: 10, position: 11, rooms: ["!room:test"], users: [] });
    gone.cancel();
    await turn();
    assert.deepEqual(outcomes, [[1, "aborted"]]);
    // A later wake-up naming the room does not line them up twice.
    bus.publish({ from: 11, position: 12, rooms: ["!room:test"], users: [] });
    assert.equal(notifier.wakesQueued, 3);
    room.n = 1;
    notifier.resumeWakes();
    await turn();
    room.n = 0;
    assert.deepEqual(outcomes, [[1, "aborted"], [0, "woken"]]);
    notifier.close();
    await all;
    assert.deepEqual(outcomes, [[1, "aborted"], [0, "woken"], [2, "closed"]]);
  });
});

describe("Notifier: receipts and typing in a big room wake its waiters together", () => {
  const turn = () => new Promise((resolve) => setImmediate(resolve));
  const room = new Set(["!channel:test"]);
  function setup(): { bus: LocalBus; notifier: Notifier } {
    const bus = new LocalBus();
    const notifier = new Notifier(bus, new Metrics());
    notifier.start(10, async () => 10);
    return { bus, notifier };
  }
  /** `n` members long-polling the room; `outcomes[i]` once member i's wait is over. */
  function members(notifier: Notifier, n: number, timeoutMs = 60_000, first = 0, since = 10) {
    const outcomes: Array<WaitOutcome | undefined> = [];
    const done = Array.from({ length: n }, (_, i) => waitFor(notifier, `@m${first + i}:test`, room, since, timeoutMs).then((o) => (outcomes[i] = o)));
    return { outcomes, done };
  }
  const receipts = (from: number, position: number) => ({ from, position, rooms: [], users: [`@reader${position}:test`], ephemeralRooms: ["!channel:test"] });

  test("many receipt batches in a room of 60 waiters: none woken at once, all woken once, shortly after", async () => {
    const { bus, notifier } = setup();
    const { outcomes, done } = members(notifier, 60);
    for (let p = 11; p <= 20; p++) bus.publish(receipts(p - 1, p));
    await turn();
    assert.equal(outcomes.filter(Boolean).length, 0, "nobody answered per batch");
    await Promise.all(done);
    // Each window starts where the first held batch began, so the members share it.
    assert.ok(outcomes.every((o) => o?.reason === "woken" && o.quietThrough === 10), JSON.stringify(outcomes[0]));
    notifier.close();
  });

  test("a message in the meantime wakes them at once, as always, with their windows starting before the held receipts", async () => {
    const { bus, notifier } = setup();
    const { outcomes, done } = members(notifier, 60);
    bus.publish({ from: 10, position: 11, rooms: ["!elsewhere:test"], users: [] });
    bus.publish(receipts(11, 12));
    bus.publish({ from: 12, position: 13, rooms: ["!channel:test"], users: [] });
    await turn();
    await turn();
    assert.equal(outcomes.filter(Boolean).length, 60);
    await Promise.all(done);
    // Woken by the message (from 12), but the receipts at 12 were held: quiet only through 11.
    assert.ok(outcomes.every((o) => o?.reason === "woken" && o.quietThrough === 11), JSON.stringify(outcomes[0]));
    notifier.close();
  });

  test("a held-back waiter whose time runs out is woken, not timed out: it had news", async () => {
    const { bus, notifier } = setup();
    // 60 waiters with a wait shorter than the pacing.
    const { outcomes, done } = members(notifier, 60, 100);
    bus.publish(receipts(10, 11));
    await Promise.all(done);
    assert.ok(outcomes.every((o) => o?.reason === "woken"), JSON.stringify(outcomes.find((o) => o?.reason !== "woken")));
    notifier.close();
  });

  // Whether the 60 were woken by a message (the room known big from its parked members alone) or
  // by receipts: once ten are parked again (the rest still being answered, say), their receipts
  // are held back too.
  const firstWakeUps: Array<[string, WakeUp]> = [
    ["a message", { from: 10, position: 11, rooms: ["!channel:test"], users: [] }],
    ["receipts", receipts(10, 11)],
  ];
  for (const [firstNews, wakeUp] of firstWakeUps) {
    test(`a room seen big stays paced while most of its members are being answered (first woken by ${firstNews})`, async () => {
      const { bus, notifier } = setup();
      const first = members(notifier, 60);
      bus.publish(wakeUp);
      await Promise.all(first.done);
      const { outcomes, done } = members(notifier, 10, 60_000, 100, 11);
      bus.publish(receipts(11, 12));
      await turn();
      assert.equal(outcomes.filter(Boolean).length, 0, "held, not woken at once");
      await Promise.all(done);
      assert.ok(outcomes.every((o) => o?.reason === "woken"));
      notifier.close();
    });
  }

  test("a long-poll back with only receipts of a big room to show is held back too; with anything else, it is not", async () => {
    const { bus, notifier } = setup();
    const parked = members(notifier, 60);
    bus.publish(receipts(10, 11));
    await Promise.all(parked.done);
    const mine = new Set(["!channel:test", "!dm:test"]);
    assert.deepEqual(notifier.pacedEphemeralNews("@m0:test", mine, 10, 11, true), ["!channel:test"]);
    bus.publish({ from: 11, position: 12, rooms: [], users: [], ephemeralRooms: ["!dm:test"] });
    assert.equal(notifier.pacedEphemeralNews("@m0:test", mine, 10, 12, true), null, "typing in a small room is answered at once");
    assert.deepEqual(notifier.pacedEphemeralNews("@m0:test", mine, 11, 11, true), null, "an empty window");
    bus.publish({ from: 12, position: 13, rooms: ["!channel:test"], users: [] });
    assert.equal(notifier.pacedEphemeralNews("@m0:test", new Set(["!channel:test"]), 10, 13, true), null, "a message is answered at once");
    bus.publish({ from: 13, position: 14, rooms: [], users: ["@m0:test"] });
    assert.equal(notifier.pacedEphemeralNews("@m0:test", new Set(["!channel:test"]), 13, 14, true), null, "so is news for the user");

    // Parked with the room to hold back in, the wait ends at the room's next flush, woken, even
    // though more receipts came between the look (14) and the wait (15).
    bus.publish(receipts(14, 15));
    let outcome: WaitOutcome | undefined;
    const parked2 = new Promise<WaitOutcome>((resolve) => notifier.park("@m0:test", new Set(["!channel:test"]), 14, 60_000, undefined, { holdBackIn: ["!channel:test"] }, resolve)).then((o) => (outcome = o));
    await turn();
    assert.equal(outcome, undefined, "held, not answered at once");
    await parked2;
    assert.deepEqual(outcome, { reason: "woken", quietThrough: null });
    // A message between the look and the wait is answered at once.
    bus.publish({ from: 15, position: 16, rooms: ["!channel:test"], users: [] });
    let atOnce: WaitOutcome | undefined;
    notifier.park("@m0:test", new Set(["!channel:test"]), 15, 60_000, undefined, { holdBackIn: ["!channel:test"] }, (o) => (atOnce = o));
    await turn();
    assert.deepEqual(atOnce, { reason: "woken", quietThrough: null });
    notifier.close();
  });

  test("waiters that filter receipts and typing out are not woken at all, and a small room is woken at once", async () => {
    const { bus, notifier } = setup();
    const lean = Array.from({ length: 60 }, (_, i) => waitFor(notifier, `@lean${i}:test`, room, 10, 800, undefined, { ephemeral: false }));
    const small = waitFor(notifier, "@dm:test", new Set(["!dm:test"]), 10, 60_000);
    bus.publish(receipts(10, 11));
    bus.publish({ from: 11, position: 12, rooms: [], users: [], ephemeralRooms: ["!dm:test"] });
    assert.deepEqual(await small, { reason: "woken", quietThrough: 11 });
    const leanOutcomes = await Promise.all(lean);
    assert.ok(leanOutcomes.every((o) => o.reason === "timeout"));
    notifier.close();
  });
});
