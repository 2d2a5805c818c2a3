/**
 * Runs one Revier process for a benchmark, in its own Node process so the server and the load
 * generator do not share an event loop (as they would not in production). The parent talks to it
 * over the IPC channel: it reports its URL, creates users directly, reports its memory, and stops.
 */
import { loadConfig } from "@revier/server/dist/config.js";
import { startServer } from "@revier/server/dist/server.js";

export type HostRequest = { type: "createUsers"; prefix: string; count: number; password: string } | { type: "stats" } | { type: "stop" };
export type HostReply = { type: "ready"; url: string } | { type: "users"; localparts: string[] } | { type: "stats"; rssBytes: number } | { type: "error"; message: string };

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
  },
);
const server = await startServer(config);
const { accounts, storage } = server.services;

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
      } else if (m.type === "stats") {
        send({ type: "stats", rssBytes: process.memoryUsage().rss });
      } else if (m.type === "stop") {
        await server.stop();
        process.exit(0);
      }
    } catch (err) {
      send({ type: "error", message: err instanceof Error ? err.message : String(err) });
    }
  })();
});
send({ type: "ready", url: server.url });
