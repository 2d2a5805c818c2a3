import { execFileSync, fork, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { HostReply, HostRequest, MintedSession, RoomSeed } from "./host.js";
import { SERVER_NODE_FLAGS } from "@revier/server/dist/runtime-flags.js";

export interface Credentials {
  user: string;
  password: string;
}

/** Where the load goes: Revier processes the bench started, or any homeserver given by URL. */
export interface Target {
  /** Client-API base URLs; clients are spread over them round-robin. */
  urls: string[];
  description: string;
  /** `count` accounts that can log in. */
  users(count: number, prefix: string): Promise<Credentials[]>;
  /** Resident memory of the server processes, where the bench can see it. */
  rssBytes(): Promise<number | null>;
  /** The collector's pause time so far (ms), summed over the server processes the bench started. */
  gcMs?(): Promise<number | null>;
  /** Server process ids whose /proc the bench may read (its own processes, or --server-pid). */
  readonly pids?: number[];
  /**
   * Fast path of a server the bench started: sessions minted in-process (device, device-list
   * change, access token, as a login does) without the password hash. Other targets log in.
   */
  sessions?(localparts: string[], deviceName: string): Promise<MintedSession[]>;
  /** Fast path: rooms created and joined in-process through the server's event write path. */
  seedRooms?(rooms: RoomSeed[]): Promise<string[]>;
  /**
   * With --cpu-prof DIR: starts or stops V8 CPU profiling in the (first) server process, so a
   * scenario profiles its measurement window rather than its set-up. Stop returns the file.
   */
  profile?(phase: "start" | "stop", label?: string): Promise<string | null>;
  /** Stops the server processes and starts them again on the same data (new URLs in `urls`). */
  restart?(): Promise<void>;
  close(): Promise<void>;
}

/** No homeserver, for scenarios that measure the machine itself (`floor`). */
export function noTarget(description: string): Target {
  return {
    urls: [],
    description,
    users: () => Promise.reject(new Error("this scenario runs against no homeserver")),
    rssBytes: async () => null,
    close: async () => {},
  };
}

const BENCH_PASSWORD = "bench-password-not-secret";

class Host {
  private waiters: ((m: HostReply) => void)[] = [];
  constructor(readonly child: ChildProcess) {
    child.on("message", (m: HostReply) => this.waiters.shift()?.(m));
  }
  request(m: HostRequest | null): Promise<HostReply> {
    return new Promise((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`server process exited (${code}) before answering`));
      this.child.once("exit", onExit);
      this.waiters.push((reply) => {
        this.child.off("exit", onExit);
        if (reply.type === "error") reject(new Error(reply.message));
        else resolve(reply);
      });
      if (m) this.child.send(m);
    });
  }
}

/**
 * The commit of the checkout whose server the bench starts (" at abc1234", "+changes" when
 * tracked files differ from it), so a result says which code it measured; empty outside a git
 * checkout. The built dist/ is taken to match the sources.
 */
function codeRevision(): string {
  const cwd = path.dirname(fileURLToPath(import.meta.url));
  try {
    const commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    const changed = execFileSync("git", ["status", "--porcelain", "--untracked-files=no", "--", ":/packages"], { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim() !== "";
    return ` at ${commit}${changed ? "+changes" : ""}`;
  } catch {
    return "";
  }
}

/** Starts `processes` Revier servers on a fresh data dir (SQLite, or `databaseUrl` with NATS). */
export async function localTarget(opts: { processes: number; databaseUrl: string | null; busUrl: string | null; cpuProfDir?: string | null; heapLive?: boolean }): Promise<Target> {
  if (opts.processes > 1 && !opts.databaseUrl) throw new Error("--processes > 1 needs --database-url (an empty PostgreSQL database) and NATS");
  const dataDir = mkdtempSync(path.join(tmpdir(), "bench-revier-"));
  const hostScript = new URL("./host.js", import.meta.url);
  let hosts: Host[] = [];
  const urls: string[] = [];
  const start = async () => {
    const started: Host[] = [];
    const startedUrls: string[] = [];
    // One after another, so only the first runs the migrations.
    for (let i = 0; i < opts.processes; i++) {
      const child = fork(hostScript, [], {
        // The flags `npm start` runs the server with, so the bench measures what operators run.
        execArgv: [...process.execArgv, ...SERVER_NODE_FLAGS],
        env: {
          ...process.env,
          REVIER_BENCH_DATA_DIR: dataDir,
          REVIER_BENCH_DATABASE_URL: opts.databaseUrl ?? "",
          REVIER_BENCH_BUS_URL: opts.processes > 1 ? (opts.busUrl ?? "nats://127.0.0.1:4222") : "",
          REVIER_BENCH_PROFILE_DIR: opts.cpuProfDir ?? "",
          REVIER_BENCH_HEAP_LIVE: opts.heapLive === true ? "1" : "",
        },
        stdio: ["ignore", "ignore", "inherit", "ipc"],
      });
      const host = new Host(child);
      const ready = await host.request(null);
      if (ready.type !== "ready") throw new Error("server process did not start");
      started.push(host);
      startedUrls.push(ready.url);
    }
    hosts = started;
    urls.splice(0, urls.length, ...startedUrls);
  };
  // A server that has not exited well after its shutdown grace period is killed, so a hung stop
  // cannot hold the bench (and its results) forever.
  const stop = () =>
    Promise.all(
      hosts.map(
        (h) =>
          new Promise<void>((resolve) => {
            if (h.child.exitCode !== null || h.child.signalCode !== null) return resolve();
            const kill = setTimeout(() => {
              console.error(`server process ${h.child.pid} did not stop within 30 s; killing it`);
              h.child.kill("SIGKILL");
            }, 30_000);
            h.child.once("exit", () => {
              clearTimeout(kill);
              resolve();
            });
            h.child.send({ type: "stop" });
          }),
      ),
    );
  await start();
  let made = 0;
  /** One field of every server process's stats, summed. */
  const sumStats = async (field: (r: Extract<HostReply, { type: "stats" }>) => number): Promise<number> => {
    let sum = 0;
    for (const h of hosts) {
      const r = await h.request({ type: "stats" });
      if (r.type === "stats") sum += field(r);
    }
    return sum;
  };
  return {
    urls,
    description: `revier ×${opts.processes} (${opts.databaseUrl ? "PostgreSQL" : "SQLite"}${opts.processes > 1 ? " + NATS" : ""})${codeRevision()}, started by the bench`,
    async users(count, prefix) {
      const reply = await hosts[0]!.request({ type: "createUsers", prefix: `${prefix}${made++}_`, count, password: BENCH_PASSWORD });
      if (reply.type !== "users") throw new Error("unexpected reply");
      return reply.localparts.map((user) => ({ user, password: BENCH_PASSWORD }));
    },
    rssBytes: () => sumStats((r) => r.rssBytes),
    gcMs: () => sumStats((r) => r.gcMs),
    get pids() {
      return hosts.map((h) => h.child.pid!).filter((p) => p !== undefined);
    },
    async sessions(localparts, deviceName) {
      const reply = await hosts[0]!.request({ type: "sessions", localparts, deviceName });
      if (reply.type !== "sessions") throw new Error("unexpected reply");
      return reply.sessions;
    },
    async seedRooms(rooms) {
      const reply = await hosts[0]!.request({ type: "seedRooms", rooms });
      if (reply.type !== "rooms") throw new Error("unexpected reply");
      return reply.roomIds;
    },
    ...(opts.cpuProfDir
      ? {
          async profile(phase: "start" | "stop", label = "window") {
            mkdirSync(opts.cpuProfDir!, { recursive: true });
            const reply = await hosts[0]!.request(phase === "start" ? { type: "profile", phase } : { type: "profile", phase, label });
            return reply.type === "profile" ? reply.file : null;
          },
        }
      : {}),
    async restart() {
      await stop();
      await start();
    },
    async close() {
      await stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Any homeserver: accounts come from a file of `user:password` lines (created beforehand). */
export function remoteTarget(urls: string[], usersFile: string | null, serverPid: number | null = null): Target {
  const creds: Credentials[] = usersFile
    ? readFileSync(usersFile, "utf8")
        .split("\n")
        .map((l) => l.trim())
        .filter((l) => l && !l.startsWith("#"))
        .map((l) => {
          const at = l.indexOf(":", l.startsWith("@") ? l.indexOf(":") + 1 : 0);
          return { user: l.slice(0, at), password: l.slice(at + 1) };
        })
    : [];
  let used = 0;
  return {
    urls,
    description: urls.join(", "),
    async users(count) {
      if (used + count > creds.length) throw new Error(`the scenario needs ${used + count} accounts; --users gave ${creds.length}`);
      const out = creds.slice(used, used + count);
      used += count;
      return out;
    },
    rssBytes: async () => null,
    // A server on this machine can still be measured through /proc (--server-pid).
    ...(serverPid !== null ? { pids: [serverPid] } : {}),
    close: async () => undefined,
  };
}
