import { Worker } from "node:worker_threads";

/**
 * SQLite's commits made durable by a thread of their own.
 *
 * With synchronous=FULL the connection that commits fsyncs the write-ahead log inside COMMIT, and
 * better-sqlite3 runs COMMIT on the event loop: while the disk takes its time, no request of
 * anyone is served, reads included. On this machine's shared disk a log sync usually takes a
 * quarter of a millisecond, but a competing writer (a backup, a log shipper) makes single syncs
 * take hundreds of milliseconds, and every /sync answer waited as long.
 *
 * So the writer connection commits with synchronous=NORMAL (the log stays consistent: SQLite
 * only leaves out the fsync) and the driver holds each commit's caller until this thread has
 * fdatasync'ed the log file. What a caller is told has been written is exactly as durable as
 * before; the event loop goes on serving meanwhile. Syncs are grouped: a commit made while one
 * runs waits for the next, which covers every commit made before it started.
 *
 * The price: for the moment between a commit and its sync, a read on another request may already
 * see the write. Only an operating-system crash or power loss in that moment loses it, and then
 * it was never acknowledged (see docs/architecture.md, "Durability").
 */
export interface LogSyncer {
  /** Resolves once every commit made before the call is on disk; rejects once a sync has failed. */
  sync(): Promise<void>;
  /**
   * Set when a sync failed. The log's unsynced pages may then be lost on disk although readers
   * saw them (Linux may drop them after a failed fsync), so nothing more is written: the process
   * must restart and read the file as it is on disk.
   */
  readonly failure: Error | null;
  readonly stats: LogSyncStats;
  /** Hears how long each sync took, in seconds (a metric). */
  observe(fn: (seconds: number) => void): void;
  stop(): Promise<void>;
}

export interface LogSyncStats {
  /** Syncs run (one covers every commit that waited for it). */
  syncs: number;
  /** Commits that waited for a sync. */
  waits: number;
}

/** Raised for every write once a log sync has failed. */
export class LogSyncFailed extends Error {
  constructor(cause: string) {
    super(`the database log could not be made durable (${cause}); writes are refused until the server restarts`);
    this.name = "LogSyncFailed";
  }
}

/**
 * Groups sync requests: at most one `once()` runs at a time, and requests made while it runs are
 * served together by the next one (a sync that started earlier may not cover their commits).
 */
export class GroupSync {
  private running = false;
  private next: { promise: Promise<void>; resolve: () => void; reject: (err: Error) => void } | null = null;
  failure: Error | null = null;
  readonly stats: LogSyncStats = { syncs: 0, waits: 0 };
  observer: ((seconds: number) => void) | null = null;

  constructor(
    private readonly once: () => Promise<void>,
    private readonly onFailure: (err: Error) => void = () => {},
  ) {}

  sync(): Promise<void> {
    if (this.failure !== null) return Promise.reject(this.failure);
    this.stats.waits++;
    if (this.next === null) {
      let resolve!: () => void;
      let reject!: (err: Error) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.next = { promise, resolve, reject };
    }
    const { promise } = this.next;
    if (!this.running) this.start();
    return promise;
  }

  private start(): void {
    const group = this.next!;
    this.next = null;
    this.running = true;
    this.stats.syncs++;
    const started = performance.now();
    this.once().then(
      () => {
        this.running = false;
        this.observer?.((performance.now() - started) / 1000);
        group.resolve();
        if (this.next !== null) this.start();
      },
      (err: unknown) => {
        this.running = false;
        this.fail(err instanceof Error ? err.message : String(err));
        group.reject(this.failure!);
      },
    );
  }

  /** Fails what waits and everything after it. */
  fail(cause: string): void {
    if (this.failure !== null) return;
    this.failure = new LogSyncFailed(cause);
    this.next?.reject(this.failure);
    this.next = null;
    this.onFailure(this.failure);
  }
}

/**
 * The worker's code, evaluated (as the checkpointer's is) so compiled JavaScript and the tests'
 * TypeScript share one string. It syncs whatever file is at the log's path: SQLite deletes the
 * log when the last connection closes and a restore brings another, so a file of another inode
 * is opened anew, and its directory synced once, since a log created since boot is only found
 * again after a power loss if its directory entry is on disk too. No log at all holds nothing
 * to sync.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const fs = require("node:fs");
const path = require("node:path");
const { file } = workerData;
let fd = -1;
let ino = -1;
function logFd() {
  let st;
  try {
    st = fs.statSync(file);
  } catch (err) {
    if (err && err.code === "ENOENT") return -1;
    throw err;
  }
  if (fd >= 0 && st.ino === ino) return fd;
  if (fd >= 0) fs.closeSync(fd);
  fd = -1;
  const opened = fs.openSync(file, "r");
  const dir = fs.openSync(path.dirname(file), "r");
  try {
    fs.fsyncSync(dir);
  } finally {
    fs.closeSync(dir);
  }
  fd = opened;
  ino = fs.fstatSync(fd).ino;
  return fd;
}
parentPort.on("message", (m) => {
  if (m === "stop") {
    if (fd >= 0) fs.closeSync(fd);
    parentPort.close();
    return;
  }
  try {
    const f = logFd();
    if (f >= 0) fs.fdatasyncSync(f);
    parentPort.postMessage({ ok: true });
  } catch (err) {
    parentPort.postMessage({ ok: false, error: String((err && err.message) || err) });
  }
});
`;

/**
 * Starts the sync thread for the write-ahead log at `walFile` (the database file's path plus
 * "-wal"). `onFailure` hears once, when a sync fails or the thread dies.
 */
export function startLogSyncer(walFile: string, onFailure: (err: Error) => void = () => {}): LogSyncer {
  // No execArgv: the worker needs none of the server's flags (nor a test's TypeScript loader).
  const worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [], workerData: { file: walFile } });
  // One sync at a time (GroupSync), so the one reply expected is the one outstanding.
  let waiting: { resolve: () => void; reject: (err: Error) => void } | null = null;
  const group = new GroupSync(
    () =>
      new Promise<void>((resolve, reject) => {
        waiting = { resolve, reject };
        // A sync in flight keeps the process alive (its callers wait); an idle thread does not.
        worker.ref();
        worker.postMessage("sync");
      }),
    onFailure,
  );
  let stopping = false;
  worker.on("message", (m: { ok: boolean; error?: string }) => {
    const w = waiting;
    waiting = null;
    worker.unref();
    if (m.ok) w?.resolve();
    else w?.reject(new Error(m.error ?? "fdatasync failed"));
  });
  const gone = (why: string) => {
    const w = waiting;
    waiting = null;
    if (w !== null) w.reject(new Error(why));
    else if (!stopping) group.fail(why);
  };
  worker.on("error", (err) => gone(`the log sync thread failed: ${err.message}`));
  worker.on("exit", () => gone("the log sync thread has stopped"));
  const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
  worker.unref();
  return {
    sync: () => group.sync(),
    get failure() {
      return group.failure;
    },
    stats: group.stats,
    observe(fn) {
      group.observer = fn;
    },
    stop() {
      stopping = true;
      worker.ref();
      worker.postMessage("stop");
      return exited;
    },
  };
}
