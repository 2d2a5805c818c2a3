/**
 * Runs one Revier process for a benchmark, in its own Node process so the server and the load
 * generator do not share an event loop (as they would not in production). The parent talks to it
 * over the IPC channel: it reports its URL, creates users directly, reports its memory, and stops.
 */
import { writeFileSync } from "node:fs";
import { Session as InspectorSession } from "node:inspector";
import { createRequire } from "node:module";
import path from "node:path";
import { constants as perfConstants, monitorEventLoopDelay, PerformanceObserver, type IntervalHistogram } from "node:perf_hooks";
import { loadConfig } from "@revier/server/dist/config.js";
import { startServer } from "@revier/server/dist/server.js";

/** A room the bench wants: created by `creator`, then joined by `members` (localparts). */
export interface RoomSeed {
  creator: string;
  members: string[];
  name: string;
  encrypted?: boolean;
}

export interface MintedSession {
  userId: string;
  deviceId: string;
  accessToken: string;
}

export type HostRequest =
  | { type: "createUsers"; prefix: string; count: number; password: string }
  | { type: "sessions"; localparts: string[]; deviceName: string }
  | { type: "seedRooms"; rooms: RoomSeed[] }
  | { type: "profile"; phase: "start" }
  | { type: "profile"; phase: "stop"; label: string }
  | { type: "stats" }
  | { type: "stop" };
export type HostReply =
  | { type: "ready"; url: string }
  | { type: "users"; localparts: string[] }
  | { type: "sessions"; sessions: MintedSession[] }
  | { type: "rooms"; roomIds: string[] }
  | { type: "profile"; file: string | null }
  | { type: "stats"; rssBytes: number; gcMs: number }
  | { type: "error"; message: string };

const dataDir = process.env.REVIER_BENCH_DATA_DIR;
if (!dataDir || !process.send) throw new Error("host.ts runs as a child of the bench CLI");
const send = (m: HostReply) => process.send!(m);

const config = loadConfig(
  {},
  {
    port: 0,
    data_dir: dataDir,
    database_url: process.env.REVIER_BENCH_DATABASE_URL || null,
    bus_url: process.env.REVIER_BENCH_BUS_URL || null,
    log_level: "warn",
    // The benchmark measures the server's work, not its abuse limits.
    "limits.login_per_minute": 1_000_000,
    "limits.register_per_minute": 1_000_000,
    "limits.send_per_second": 1_000_000,
    "limits.send_burst": 1_000_000,
    "limits.writes_per_second": 1_000_000,
    "limits.writes_burst": 1_000_000,
    // The media scenario uploads 1 GiB; the default ceiling is 512 MiB.
    "media.max_upload_bytes": 2 * 1024 * 1024 * 1024,
  },
);
const server = await startServer(config);
const { accounts, storage, devices, tokens, rooms, roomEvents } = server.services;

// CPU profiles of a scenario's measurement window (V8's profiler through node:inspector), written
// to REVIER_BENCH_PROFILE_DIR; the bench asks for them with --cpu-prof DIR.
const profileDir = process.env.REVIER_BENCH_PROFILE_DIR || null;
/**
 * With --heap-live the allocation profile keeps only objects still alive when it stops (after a full
 * collection): what the requests waiting at that moment hold, by where it was allocated. Those are
 * what the scavenger copies twice before promoting them.
 */
const heapLive = process.env.REVIER_BENCH_HEAP_LIVE === "1";

// The CPU profile cannot say which SQL statement the time in better-sqlite3 belongs to (queries
// run in microtasks, away from their callers), so during a profile window every statement is timed
// too, by its SQL text: <label>-<pid>.sql.json beside the profile.
// The longest call and the calls of 10 ms or more, per statement: a statement that holds the
// event loop now and then (a commit's fsync) shows in the latency tail, not in its average.
const sqlTimes = new Map<string, { calls: number; ms: number; maxMs: number; over10ms: number }>();
const timed = (key: string, ms: number) => {
  const entry = sqlTimes.get(key) ?? { calls: 0, ms: 0, maxMs: 0, over10ms: 0 };
  entry.calls++;
  entry.ms += ms;
  if (ms > entry.maxMs) entry.maxMs = ms;
  if (ms >= 10) entry.over10ms++;
  sqlTimes.set(key, entry);
};
// Lists of placeholders (SQLite's `?`, PostgreSQL's `$n`) differ in length per call; one statement
// shape is one line.
const sqlShapes = new Map<string, string>();
const sqlShape = (source: string) => {
  let shape = sqlShapes.get(source);
  if (shape === undefined) sqlShapes.set(source, (shape = source.replace(/\s+/g, " ").replace(/\?(, \?)+/g, "?, …").replace(/\$\d+(, \$\d+)+/g, "$n, …")));
  return shape;
};
let timingSql = false;
if (profileDir && !config.databaseUrl) {
  const requireFromServer = createRequire(import.meta.resolve("@revier/server/dist/storage/database.js"));
  const SqliteDatabase = requireFromServer("better-sqlite3") as new (file: string) => { prepare(sql: string): object; close(): void };
  const probe = new SqliteDatabase(":memory:");
  const proto = Object.getPrototypeOf(probe.prepare("select 1")) as Record<string, (...args: unknown[]) => unknown>;
  probe.close();
  for (const method of ["all", "get", "run", "iterate"]) {
    const original = proto[method]!;
    proto[method] = function (this: { source: string }, ...args: unknown[]) {
      if (!timingSql) return original.apply(this, args);
      const t0 = performance.now();
      try {
        return original.apply(this, args);
      } finally {
        timed(sqlShape(this.source), performance.now() - t0);
      }
    };
  }
}
// On PostgreSQL the same, per statement from sending it to its result (the round trip, which the
// CPU profile shows only as idle time and socket writes). Kysely calls `query(text, values)` and
// awaits the promise it returns.
if (profileDir && config.databaseUrl) {
  const requireFromServer = createRequire(import.meta.resolve("@revier/server/dist/storage/database.js"));
  const pg = requireFromServer("pg") as { Client: { prototype: Record<string, (...args: unknown[]) => unknown> } };
  const proto = pg.Client.prototype;
  const original = proto.query!;
  proto.query = function (this: unknown, ...args: unknown[]) {
    const result = original.apply(this, args);
    if (!timingSql || typeof args[0] !== "string" || !(result instanceof Promise)) return result;
    const t0 = performance.now();
    const key = sqlShape(args[0]);
    const done = () => timed(key, performance.now() - t0);
    result.then(done, done);
    return result;
  };
}
let inspector: InspectorSession | null = null;

/**
 * Beside the CPU profile: how long the event loop was held up (what every request waiting in
 * line behind it feels as latency) and how much of that was garbage collection.
 */
let loopDelay: IntervalHistogram | null = null;
const gcPauses: number[] = [];
/** Pause time by kind of collection: young-generation scavenges and old-generation (major, incremental) work differ in what fixes them. */
const gcByKind = new Map<string, { count: number; ms: number }>();
const GC_KINDS: Record<number, string> = {
  [perfConstants.NODE_PERFORMANCE_GC_MINOR]: "minor",
  [perfConstants.NODE_PERFORMANCE_GC_MAJOR]: "major",
  [perfConstants.NODE_PERFORMANCE_GC_INCREMENTAL]: "incremental",
  [perfConstants.NODE_PERFORMANCE_GC_WEAKCB]: "weak callbacks",
};
const gcObserver = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    gcPauses.push(e.duration);
    const kind = GC_KINDS[((e as { detail?: { kind?: number } }).detail)?.kind ?? 0] ?? "other";
    const k = gcByKind.get(kind) ?? { count: 0, ms: 0 };
    k.count++;
    k.ms += e.duration;
    gcByKind.set(kind, k);
  }
});
/**
 * The collector's pause time since start, always counted (a few entries a second): scenarios
 * report it per answer without a CPU profile, whose sampling inflates what it measures.
 */
let gcTotalMs = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcTotalMs += e.duration;
}).observe({ entryTypes: ["gc"] });
const post = (method: string, params?: object) =>
  new Promise<unknown>((resolve, reject) => inspector!.post(method, params ?? {}, (err, result) => (err ? reject(err) : resolve(result))));

process.on("message", (m: HostRequest) => {
  void (async () => {
    try {
      if (m.type === "createUsers") {
        // One argon2 hash shared by all accounts: hashing thousands of passwords would dominate
        // the set-up and is what the `login` scenario measures anyway.
        const localparts = Array.from({ length: m.count }, (_, i) => `${m.prefix}${i}`);
        const first = await accounts.create(localparts[0]!, { password: m.password });
        for (let i = 1; i < localparts.length; i += 500) {
          const batch = localparts.slice(i, i + 500);
          await Promise.all(batch.map((l) => accounts.create(l, { password: null })));
          await storage.db.updateTable("users").set({ password_hash: first.password_hash }).where("localpart", "in", batch).execute();
        }
        send({ type: "users", localparts });
      } else if (m.type === "sessions") {
        // What a password login does after the password check (device, device-list change, access
        // token), without the argon2 verify: the `login` scenario measures that, and tens of
        // thousands of verifies would dominate the set-up of the sync and idle scenarios.
        const sessions: MintedSession[] = [];
        for (const localpart of m.localparts) {
          const userId = accounts.userIdFor(localpart);
          const deviceId = devices.newDeviceId();
          await devices.upsert(userId, deviceId, m.deviceName, {});
          const issued = await tokens.issue(userId, deviceId, false);
          sessions.push({ userId, deviceId, accessToken: issued.access_token });
        }
        send({ type: "sessions", sessions });
      } else if (m.type === "seedRooms") {
        // Rooms through the same event write path as /createRoom and /join (auth rules, hashes,
        // signatures, push actions), minus HTTP and per-join transactions: joins go in batches.
        const roomIds: string[] = [];
        for (const seed of m.rooms) {
          const creator = accounts.userIdFor(seed.creator);
          const { roomId } = await rooms.create(creator, {
            preset: "public_chat",
            name: seed.name,
            ...(seed.encrypted ? { initial_state: [{ type: "m.room.encryption", content: { algorithm: "m.megolm.v1.aes-sha2" } }] } : {}),
          });
          const joiners = seed.members.filter((l) => l !== seed.creator);
          for (let i = 0; i < joiners.length; i += 250) {
            await roomEvents.sendBatch(
              joiners.slice(i, i + 250).map((localpart) => {
                const userId = accounts.userIdFor(localpart);
                return { roomId, sender: userId, type: "m.room.member", stateKey: userId, content: { membership: "join", displayname: localpart } };
              }),
            );
          }
          roomIds.push(roomId);
        }
        send({ type: "rooms", roomIds });
      } else if (m.type === "profile") {
        if (!profileDir) return send({ type: "profile", file: null });
        if (m.phase === "start") {
          inspector = new InspectorSession();
          inspector.connect();
          await post("Profiler.enable");
          await post("Profiler.setSamplingInterval", { interval: 1000 });
          await post("Profiler.start");
          // Where the garbage comes from: a sampling allocation profile that keeps the samples of
          // objects the collector has already freed (those are most of the collector's work).
          await post("HeapProfiler.enable");
          await post("HeapProfiler.startSampling", heapLive ? { samplingInterval: 512 } : { samplingInterval: 64 * 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
          sqlTimes.clear();
          timingSql = true;
          loopDelay = monitorEventLoopDelay({ resolution: 10 });
          loopDelay.enable();
          gcPauses.length = 0;
          gcByKind.clear();
          gcObserver.observe({ entryTypes: ["gc"] });
          send({ type: "profile", file: null });
        } else {
          if (!inspector) return send({ type: "profile", file: null });
          const { profile } = (await post("Profiler.stop")) as { profile: unknown };
          if (heapLive) await post("HeapProfiler.collectGarbage");
          const { profile: allocations } = (await post("HeapProfiler.stopSampling")) as { profile: unknown };
          inspector.disconnect();
          inspector = null;
          const file = path.join(profileDir, `${m.label}-${process.pid}.cpuprofile`);
          writeFileSync(file, JSON.stringify(profile));
          writeFileSync(file.replace(/\.cpuprofile$/, ".heapprofile"), JSON.stringify(allocations));
          timingSql = false;
          if (loopDelay) {
            loopDelay.disable();
            gcObserver.disconnect();
            const ms = (ns: number) => Math.round(ns / 1e4) / 100;
            const sorted = [...gcPauses].sort((a, b) => a - b);
            const at = (q: number) => Math.round((sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0) * 100) / 100;
            writeFileSync(
              file.replace(/\.cpuprofile$/, ".loop.json"),
              JSON.stringify(
                {
                  event_loop_delay_ms: { p50: ms(loopDelay.percentile(50)), p99: ms(loopDelay.percentile(99)), max: ms(loopDelay.max) },
                  gc_pauses: { count: sorted.length, total_ms: Math.round(sorted.reduce((a, b) => a + b, 0)), p99_ms: at(0.99), max_ms: Math.round((sorted.at(-1) ?? 0) * 100) / 100,
                    by_kind: Object.fromEntries([...gcByKind].map(([kind, k]) => [kind, { count: k.count, total_ms: Math.round(k.ms) }])),
                  },
                },
                null,
                1,
              ),
            );
            loopDelay = null;
          }
          if (sqlTimes.size > 0) {
            const rows = [...sqlTimes.entries()].map(([sql, t]) => ({ sql, calls: t.calls, ms: Math.round(t.ms), max_ms: Math.round(t.maxMs * 10) / 10, calls_10ms_plus: t.over10ms })).sort((a, b) => b.ms - a.ms);
            writeFileSync(file.replace(/\.cpuprofile$/, ".sql.json"), JSON.stringify(rows, null, 1));
          }
          send({ type: "profile", file });
        }
      } else if (m.type === "stats") {
        send({ type: "stats", rssBytes: process.memoryUsage().rss, gcMs: gcTotalMs });
      } else if (m.type === "stop") {
        await server.stop();
        process.exit(0);
      }
    } catch (err) {
      send({ type: "error", message: err instanceof Error ? err.message : String(err) });
    }
  })();
});
// A bench that died (or was interrupted) leaves no server behind.
process.on("disconnect", () => void server.stop().finally(() => process.exit(0)));
send({ type: "ready", url: server.url });
