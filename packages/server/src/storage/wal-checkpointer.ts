import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";

/**
 * SQLite's write-ahead log, copied back into the database file by a thread of its own.
 *
 * By default the connection that commits copies the log into the database file whenever the log
 * passes 1,000 pages, and with synchronous=FULL it then fsyncs the database file: all of it inside
 * a commit, on the event loop, since better-sqlite3 is synchronous, and every request waiting
 * meanwhile is late by as much. A PASSIVE checkpoint from another connection waits for nobody and
 * blocks nobody, so it runs in a worker thread, where its copying and fsync hold up no request. In
 * the `send` bench with CPU profiles (2026-12-02), commits of 10 ms or more fell from 110–124 per
 * run to 19–25.
 *
 * The writer keeps a checkpoint of its own only as a backstop (BACKSTOP_PAGES): the log starts
 * over from its beginning only at a write that finds every page of it copied, and under writes
 * without a pause the worker may not catch a moment in between. Then the writer checkpoints at
 * the backstop, finding nearly everything already copied, and the log starts over.
 */
export interface WalCheckpointerOptions {
  /** Pause between checkpoints once one has copied everything. */
  intervalMs: number;
  /** A checkpoint that left pages uncopied (commits came meanwhile) is tried again this soon, up to `retries` times. */
  retryMs: number;
  retries: number;
}

export const DEFAULT_WAL_CHECKPOINTER: WalCheckpointerOptions = { intervalMs: 500, retryMs: 5, retries: 8 };

/** The writer's own checkpoint threshold while the worker runs (SQLite's default is 1,000 pages). */
export const BACKSTOP_PAGES = 10_000;

/** What the worker has done so far. */
export interface CheckpointStats {
  /** Checkpoints that copied at least one page. */
  runs: number;
  /** Pages copied into the database file (counted from the log's reports; a log that started over between two checkpoints is undercounted). */
  pages: number;
  /** Checkpoints that copied everything in the log at the time. */
  complete: number;
  errors: number;
  lastError: string | null;
}

export interface WalCheckpointer {
  readonly stats: CheckpointStats;
  /** Stops the worker after the checkpoint under way, if any; the last connection's close checkpoints the rest. */
  stop(): Promise<void>;
}

/**
 * The worker's code. Evaluated rather than loaded from a file: the server runs from compiled
 * JavaScript and its tests from TypeScript source, and one string works for both. It is given the
 * driver's resolved path, so it loads the same better-sqlite3 as the server.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const Database = require(workerData.driver);
const { file, intervalMs, retryMs, retries } = workerData;
let db;
try {
  db = new Database(file, { fileMustExist: true });
  // The database file is synced after copying, as the writer's own checkpoints do.
  db.pragma("synchronous = FULL");
} catch (err) {
  // Posted rather than thrown: better-sqlite3's error class loses its message on the way out.
  parentPort.postMessage({ error: String((err && err.message) || err) });
  process.exit(1);
}
let timer = null;
let stopped = false;
let again = 0;
// The pragma reports the log's pages and how many of them are in the database file so far; a log
// that started over (fewer of either) counts from zero again.
let lastLog = 0;
let lastCopied = 0;
function run() {
  timer = null;
  if (stopped) return;
  let delay = intervalMs;
  try {
    const [r] = db.pragma("wal_checkpoint(PASSIVE)");
    if (r.log < lastLog || r.checkpointed < lastCopied) lastCopied = 0;
    const complete = r.checkpointed >= r.log;
    if (r.checkpointed > lastCopied) parentPort.postMessage({ pages: r.checkpointed - lastCopied, complete });
    lastLog = r.log;
    lastCopied = r.checkpointed;
    if (!complete && again < retries) {
      again++;
      delay = retryMs;
    } else {
      again = 0;
    }
  } catch (err) {
    parentPort.postMessage({ error: String((err && err.message) || err) });
  }
  timer = setTimeout(run, delay);
}
timer = setTimeout(run, intervalMs);
parentPort.on("message", () => {
  stopped = true;
  if (timer !== null) clearTimeout(timer);
  db.close();
  parentPort.close();
});
`;

/**
 * Starts the checkpoint worker for the database `file` (already in WAL mode). Its work and errors
 * are counted in `stats`; `onError` hears of each error (a checkpoint that failed is retried at
 * the next interval, and the writer's backstop still bounds the log).
 */
export function startWalCheckpointer(file: string, opts: WalCheckpointerOptions = DEFAULT_WAL_CHECKPOINTER, onError: (message: string) => void = () => {}): WalCheckpointer {
  const driver = createRequire(import.meta.url).resolve("better-sqlite3");
  // No execArgv: the worker needs none of the server's flags (nor a test's TypeScript loader).
  const worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [], workerData: { file, driver, ...opts } });
  const stats: CheckpointStats = { runs: 0, pages: 0, complete: 0, errors: 0, lastError: null };
  worker.on("message", (m: { pages?: number; complete?: boolean; error?: string }) => {
    if (m.error !== undefined) {
      stats.errors++;
      stats.lastError = m.error;
      onError(m.error);
      return;
    }
    stats.runs++;
    stats.pages += m.pages ?? 0;
    if (m.complete === true) stats.complete++;
  });
  worker.on("error", (err) => {
    stats.errors++;
    stats.lastError = err.message;
    onError(err.message);
  });
  const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
  // Never what keeps a process alive: the last connection to close checkpoints what is left.
  worker.unref();
  return {
    stats,
    stop() {
      // Held until it has gone, which a caller awaiting this waits for. (Ignored by a worker
      // that has already gone, after an error.)
      worker.ref();
      worker.postMessage("stop");
      return exited;
    },
  };
}
