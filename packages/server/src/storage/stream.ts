import { sql } from "kysely";
import type { Storage, Tx } from "./database.js";
import type { Bus, WakeUp } from "../bus/bus.js";
import { prepared } from "./prepared.js";

// Asked by every /sync (twice per long-poll cycle): compiled once, see prepared.ts.
const selectPosition = prepared((db, name: string) => db.selectFrom("counters").select("value").where("name", "=", name));

export interface StreamWrite {
  tx: Tx;
  /** Next stream position; every persisted stream item (event, receipt, account data…) takes one. */
  next(): number;
  /**
   * Hands back `position`, the last one `next` gave, when nothing was written at it (a write that
   * found its cached view out of date and starts over): positions stay gap-free.
   */
  giveBack(position: number): void;
  /**
   * Rooms and users whose sync waiters must wake once this write commits. `kind: "presence"`
   * says the news is only a presence change, so long-polls whose filter leaves out presence
   * need not wake (see isPresenceOnly); `kind: "ephemeral"` says the rooms' news is only receipts
   * or typing (see WakeUp.ephemeralRooms; users named with it are touched as usual). Without a
   * kind, the news may be anything.
   */
  touch(target: { rooms?: Iterable<string>; users?: Iterable<string>; kind?: "presence" | "ephemeral" }): void;
  /**
   * Announces, once this write commits, that these users' one-time or fallback keys changed.
   * Wakes nobody (the counts ride along with their next answer); every process drops what it
   * remembers of them (see DeviceSyncCache). The write must take a position (`next`).
   */
  keysChanged(users: Iterable<string>): void;
}

/**
 * Whether a wake-up announces nothing but presence changes. Every online user re-announces
 * presence every minute and each announcement names all of the user's rooms, so in a room of
 * thousands, waking only the long-polls that asked for presence is the difference between a
 * handful of wake-ups and thousands per second.
 */
export function isPresenceOnly(w: WakeUp): boolean {
  return w.presenceOnly === true;
}

interface Pending {
  fn: (w: StreamWrite) => Promise<unknown>;
  /** See WriteOptions.replayable. */
  replayable: boolean;
  /** See WriteOptions.presence. */
  presence: boolean;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
  outcome?: { ok: true; value: unknown } | { ok: false; err: unknown };
  rooms?: Set<string>;
  /** Rooms touched with receipts or typing only (see StreamWrite.touch). */
  ephemeralRooms?: Set<string>;
  users?: Set<string>;
  keys?: Set<string>;
  /** Whether everything it touched was touched as presence news. */
  presenceOnly?: boolean;
  /** The last position taken once it had run (the one before its first, if it took none). */
  upto?: number;
}

export interface WriteOptions {
  /**
   * The write function has no effect outside its transaction that running it again would repeat
   * wrongly (caches checked against the database are fine), so it may be run a second time after
   * a rollback. On PostgreSQL a batch of such writes first runs without savepoints, which saves a
   * round trip per write under the stream lock; if one of them fails, the whole batch is rolled
   * back and run again with them, so each write still succeeds or fails on its own.
   */
  replayable?: boolean;
  /**
   * The write announces nothing but presence (StreamWrite.touch with `kind: "presence"`). A batch
   * runs such writes before the others and announces them apart, so the others do not make the
   * rooms of everyone whose presence changed ordinary news. A presence change names all of the
   * user's rooms; in a batch with any message or receipt it would wake every long-poll of every
   * one of them and drop what their answers share. (Refreshes of an active user take no
   * position; changes come in waves: a shift coming online, the idle sweep after an outage.)
   */
  presence?: boolean;
}

/**
 * How a batch ran: a lone write ("single"), each write of several in a savepoint of its own
 * ("savepoints"), without savepoints (PostgreSQL, replayable writes: "plain"), or again with
 * savepoints after one write of a plain run failed ("rerun").
 */
export type BatchRun = "single" | "savepoints" | "plain" | "rerun";

/** How long batches keep their savepoints after one had to be run again (see savepointsUntil). */
const REPLAY_PAUSE_MS = 1000;

/** Thrown inside a savepoint-free run when a write failed: the run is rolled back and repeated with savepoints. */
class RunAgainWithSavepoints extends Error {}

/**
 * Most writes one commit carries. Large enough to absorb every concurrent sender of a busy
 * process; small enough that the first write of a batch is not kept waiting long for its commit
 * (and, on PostgreSQL, that other processes get the counter lock regularly).
 */
const MAX_BATCH = 256;

/**
 * The one ordered write path, with group commit.
 *
 * Positions: a transaction that allocates stream positions holds the lock on the stream counter
 * until it commits, so positions become visible strictly in order: a reader that sees position N
 * has seen everything below N. SQLite has a single writer anyway; on PostgreSQL the row lock on
 * `counters` serialises the writers of all processes.
 *
 * Group commit: committing is the expensive part of a small write (a sync of the log on SQLite,
 * a WAL flush and a round trip on PostgreSQL, and on PostgreSQL the counter lock is held across
 * it). Writes that arrive while a commit is in progress queue up and
 * then run together in the next transaction, one after another, each inside its own SAVEPOINT:
 *
 * - atomicity and error isolation per write: a write that throws is rolled back to its savepoint
 *   and gets its own error; the others in the batch commit as if it had never run, and the
 *   positions it took are handed out again, so the stream stays gap-free;
 * - ordering: writes run in arrival order and take positions in that order, except that a
 *   batch's presence writes (WriteOptions.presence) run before its other writes and are
 *   announced apart from them;
 * - durability: a write's promise settles only after the batch's commit is on disk (on SQLite
 *   the driver waits for the log syncer, see log-syncer.ts), so every acknowledged write has
 *   been made durable; if the commit fails, every write of the batch fails with that error and
 *   none is acknowledged. Its wake-up is published only then, and `current()` stays short of
 *   the batch until then.
 *
 * On PostgreSQL each savepoint statement is a round trip under the lock, so a batch of writes
 * that may run twice (WriteOptions.replayable) first runs without them, and only if one of its
 * writes fails runs again with them.
 *
 * Batching needs no timer: a batch takes whatever has queued up by the time it starts (see
 * `drain`), so batches grow exactly as fast as writes arrive, and a lone write waits only for
 * one turn of the event loop.
 *
 * A write function must not call `write` itself (it would wait for its own batch), and must do
 * its database work through `w.tx` — as before batching.
 */
export class StreamWriter {
  private readonly queue: Pending[] = [];
  private draining = false;

  /**
   * Until when (performance.now()) batches keep their savepoints from the start, after one had
   * to be run again. A stream of failing writes (a client sending into a room it left, or
   * receipts for events that do not exist) would otherwise make every batch it lands in run
   * twice; this way such a stream costs what savepoints cost, and at most one repeat per pause.
   */
  private savepointsUntil = 0;
  private readonly replayPauseMs: number;
  /** Where the batch being written started, from its first read until it has been made durable. */
  private runningFrom: number | null = null;
  private readonly onBatch: ((run: BatchRun) => void) | undefined;

  /** `onBatch`: told how each batch ran, once it has committed or failed (a metric). */
  constructor(
    private readonly storage: Storage,
    private readonly bus: Bus,
    opts: { replayPauseMs?: number; onBatch?: (run: BatchRun) => void } = {},
  ) {
    this.replayPauseMs = opts.replayPauseMs ?? REPLAY_PAUSE_MS;
    this.onBatch = opts.onBatch;
  }

  /** Writes waiting for a batch to take them (not counting the batch running now). */
  get queued(): number {
    return this.queue.length;
  }

  write<T>(fn: (w: StreamWrite) => Promise<T>, opts: WriteOptions = {}): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ fn, replayable: opts.replayable === true, presence: opts.presence === true, resolve: resolve as (v: unknown) => void, reject });
      if (!this.draining) {
        this.draining = true;
        setImmediate(() => void this.drain());
      }
    });
  }

  /**
   * Runs batches until the queue is empty. Each batch starts from a macrotask (setImmediate):
   * SQLite queries complete synchronously, so a request runs from its socket read to
   * `write` without yielding, and a transaction started right there would run to its commit
   * before the next request is even parsed — batches of one. Waiting for the check phase lets
   * every request the last I/O poll delivered join the batch first.
   */
  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        await this.runBatch(presenceFirst(this.queue.splice(0, MAX_BATCH)));
        if (this.queue.length > 0) await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } finally {
      this.draining = false;
    }
  }

  private async runBatch(batch: Pending[]): Promise<void> {
    const postgres = this.storage.dialect === "postgres";
    // A lone write needs no savepoint: its failure rolls back the whole transaction, which is
    // exactly its own work. On PostgreSQL, neither does a batch of replayable writes at first.
    let savepoints = batch.length > 1 && !(postgres && performance.now() >= this.savepointsUntil && batch.every((p) => p.replayable));
    let run: BatchRun = batch.length === 1 ? "single" : savepoints ? "savepoints" : "plain";
    let positions: { start: number; pos: number };
    for (;;) {
      try {
        positions = await this.runTransaction(batch, savepoints);
        break;
      } catch (err) {
        if (err instanceof RunAgainWithSavepoints) {
          savepoints = true;
          run = "rerun";
          this.savepointsUntil = performance.now() + this.replayPauseMs;
          // What the rolled-back run recorded must not outlive it: a write that succeeded there
          // may fail in the second run, and must then name no one in the wake-up.
          for (const item of batch) {
            delete item.outcome;
            delete item.rooms;
            delete item.ephemeralRooms;
            delete item.users;
            delete item.keys;
            delete item.presenceOnly;
            delete item.upto;
          }
          continue;
        }
        // Nothing of this batch committed. A write that failed on its own keeps its own error.
        this.onBatch?.(run);
        for (const item of batch) item.reject(item.outcome?.ok === false ? item.outcome.err : err);
        return;
      } finally {
        // Committed and durable, or rolled back: current() may go past it now.
        this.runningFrom = null;
      }
    }
    this.onBatch?.(run);
    const { start, pos } = positions;
    // Presence writes ran first (presenceFirst): they are announced up to where they ended, the
    // others from there. Each announcement covers its own positions, so together they tile the
    // batch as one would.
    const others = batch.findIndex((item) => !item.presence);
    const split = others < 0 ? pos : others === 0 ? start : batch[others - 1]!.upto!;
    const [presence, rest] = others < 0 ? [batch, []] : [batch.slice(0, others), batch.slice(others)];
    for (const wake of [wakeUp(presence, start, split), wakeUp(rest, split, pos)]) {
      if (wake === null) continue;
      try {
        this.bus.publish(wake);
      } catch (err) {
        // The batch is committed whatever a subscriber does; its writers must still hear so.
        process.emitWarning(`stream wake-up subscriber failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    for (const item of batch) {
      const o = item.outcome!;
      if (o.ok) item.resolve(o.value);
      else item.reject(o.err);
    }
  }

  /**
   * Runs the batch's writes in one transaction and commits it; returns the positions it took.
   * `savepoints`: each write of several runs inside its own, so a failing one is undone alone.
   * Without them, a failing write (of a batch of several) rolls back the whole run, which then
   * throws RunAgainWithSavepoints.
   */
  private async runTransaction(batch: Pending[], savepoints: boolean): Promise<{ start: number; pos: number }> {
    const postgres = this.storage.dialect === "postgres";
    let start = 0;
    let pos = 0;
    await this.storage.db.transaction().execute(async (tx) => {
      const locked = postgres
        ? await sql<{ value: number }>`select value from counters where name = 'stream' for update`.execute(tx)
        : await sql<{ value: number }>`select value from counters where name = 'stream'`.execute(tx);
      start = Number(locked.rows[0]?.value ?? 0);
      pos = start;
      this.runningFrom = start;
      // Whether no savepoint is open between two writes (see below).
      let released = true;
      for (const [i, item] of batch.entries()) {
        const before = pos;
        const rooms = new Set<string>();
        const ephemeralRooms = new Set<string>();
        const users = new Set<string>();
        const keys = new Set<string>();
        let presenceOnly = true;
        const w: StreamWrite = {
          tx,
          next: () => ++pos,
          giveBack: (p) => {
            if (p !== pos) throw new Error(`stream position ${p} handed back, but the last one given was ${pos}`);
            pos--;
          },
          touch: (t) => {
            for (const r of t.rooms ?? []) (t.kind === "ephemeral" ? ephemeralRooms : rooms).add(r);
            for (const u of t.users ?? []) users.add(u);
            if (t.kind !== "presence") presenceOnly = false;
          },
          keysChanged: (u) => {
            for (const x of u) keys.add(x);
          },
        };
        if (!savepoints) {
          try {
            item.outcome = { ok: true, value: await item.fn(w) };
          } catch (err) {
            item.outcome = { ok: false, err };
            // A lone write's failure is the transaction's; in a batch, the others run again.
            if (batch.length > 1) throw new RunAgainWithSavepoints();
            throw err;
          }
        } else {
          if (released) await sql`savepoint stream_write`.execute(tx);
          released = false;
          try {
            item.outcome = { ok: true, value: await item.fn(w) };
          } catch (err) {
            // Undo this write only; a failure to do so (a broken connection) fails the batch.
            await sql`rollback to savepoint stream_write`.execute(tx);
            await sql`release savepoint stream_write`.execute(tx);
            released = true;
            pos = before;
            item.outcome = { ok: false, err };
            item.upto = pos;
            continue;
          }
          if (!postgres) {
            await sql`release savepoint stream_write`.execute(tx);
            released = true;
          } else if (i < batch.length - 1) {
            // On PostgreSQL every statement is a round trip under the counter lock, which
            // serialises the writers of every process: one write's release and the next one's
            // savepoint go as one simple-protocol query (no parameters), and the last write's
            // savepoint is left to the commit, which releases it.
            await sql`release savepoint stream_write; savepoint stream_write`.execute(tx);
          }
        }
        item.rooms = rooms;
        item.ephemeralRooms = ephemeralRooms;
        item.users = users;
        item.keys = keys;
        item.presenceOnly = presenceOnly;
        item.upto = pos;
      }
      if (pos !== start) await tx.updateTable("counters").set({ value: pos }).where("name", "=", "stream").execute();
    });
    return { start, pos };
  }

  /**
   * Announces key changes committed by a transaction of their own (see StreamWrite.keysChanged):
   * the announcement takes a position after that commit, so it lies above every position a
   * reader could have seen before the change.
   */
  async announceKeyChanges(users: Iterable<string>): Promise<void> {
    const list = [...users];
    if (list.length === 0) return;
    await this.write(async (w) => {
      w.next();
      w.keysChanged(list);
    });
  }

  /**
   * The highest committed position (read from the database so other processes' writes count),
   * short of the batch this process is writing: its commit may be visible before it is durable
   * (see log-syncer.ts), and a /sync answer must not hand out what a power loss could take back.
   */
  async current(): Promise<number> {
    const [row] = await selectPosition(this.storage.db, "stream");
    const committed = Number(row?.value ?? 0);
    return this.runningFrom === null ? committed : Math.min(committed, this.runningFrom);
  }
}

/** The batch with its presence writes first (see WriteOptions.presence), each part in arrival order. */
function presenceFirst(batch: Pending[]): Pending[] {
  if (!batch.some((p) => p.presence) || batch.every((p) => p.presence)) return batch;
  return [...batch.filter((p) => p.presence), ...batch.filter((p) => !p.presence)];
}

/** The announcement of `items`, which took the positions (from, to]; null if they took none. */
function wakeUp(items: Pending[], from: number, to: number): WakeUp | null {
  if (to === from) return null;
  const rooms = new Set<string>();
  const ephemeralRooms = new Set<string>();
  const users = new Set<string>();
  const keys = new Set<string>();
  let presenceOnly = true;
  for (const item of items) {
    for (const r of item.rooms ?? []) rooms.add(r);
    for (const r of item.ephemeralRooms ?? []) ephemeralRooms.add(r);
    for (const u of item.users ?? []) users.add(u);
    for (const u of item.keys ?? []) keys.add(u);
    // Writes that touched nobody name no waiter, so only the others decide.
    if (item.outcome?.ok && item.presenceOnly === false) presenceOnly = false;
  }
  // One wake-up for the items: waiters compare positions, and every item is at or below it.
  const wake: WakeUp = { position: to, from, rooms: [...rooms], users: [...users] };
  if (presenceOnly) wake.presenceOnly = true;
  if (keys.size > 0) wake.keys = [...keys];
  // A room with other news in the batch is announced as such.
  for (const r of rooms) ephemeralRooms.delete(r);
  if (ephemeralRooms.size > 0) wake.ephemeralRooms = [...ephemeralRooms];
  return wake;
}
