/**
 * The bench side of poller-child.ts: starts enough child processes for the connections wanted,
 * hands each its share of sessions, sums their counters, and opens connections in steps so the
 * scenarios can read the server's memory per 1,000 open long-polls.
 */
import { fork, type ChildProcess } from "node:child_process";
import type { Session } from "./matrix.js";
import type { PollerOptions, PollerReply, PollerRequest, PollerStatus } from "./poller-child.js";
import { isLoopback } from "./http.js";

export interface PoolOptions {
  /** Connections each child holds at most; keep well below `ulimit -n`. */
  perProcess: number;
  timeoutMs: number;
  presence: PollerOptions["presence"];
  filter: string;
  /** See PollerOptions.filterId. */
  filterId?: boolean;
  initialConcurrency?: number;
}

/** Omit over each member of a union (plain Omit would merge them). */
type WithoutId<T> = T extends unknown ? Omit<T, "id"> : never;

class Child {
  private next = 0;
  private readonly pending = new Map<number, { resolve: (s: PollerStatus) => void; reject: (e: Error) => void }>();
  assigned = 0;

  constructor(readonly proc: ChildProcess) {
    proc.on("message", (m: PollerReply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if ("error" in m) p.reject(new Error(m.error));
      else p.resolve(m.status);
    });
    proc.on("exit", (code) => {
      for (const p of this.pending.values()) p.reject(new Error(`poller process exited (${code})`));
      this.pending.clear();
    });
  }

  request(m: WithoutId<PollerRequest>): Promise<PollerStatus> {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.proc.send({ ...m, id } as PollerRequest);
    });
  }
}

export class PollerPool {
  private readonly children: Child[] = [];

  private constructor(
    private readonly opts: PoolOptions,
    private readonly loopback: boolean,
  ) {}

  static create(opts: PoolOptions, baseUrl: string): PollerPool {
    return new PollerPool(opts, isLoopback(baseUrl));
  }

  get processes(): number {
    return this.children.length;
  }

  private spawn(): Child {
    const i = this.children.length;
    const options: PollerOptions = {
      // 127.0.0.2, .3, …: each source address has its own ~28,000 ephemeral ports.
      ...(this.loopback ? { localAddress: `127.0.0.${2 + (i % 250)}` } : {}),
      timeoutMs: this.opts.timeoutMs,
      presence: this.opts.presence,
      filter: this.opts.filter,
      filterId: this.opts.filterId === true,
      initialConcurrency: this.opts.initialConcurrency ?? 16,
    };
    const proc = fork(new URL("./poller-child.js", import.meta.url), [], { env: { ...process.env, REVIER_POLLER_OPTIONS: JSON.stringify(options) }, stdio: ["ignore", "inherit", "inherit", "ipc"] });
    const child = new Child(proc);
    this.children.push(child);
    return child;
  }

  /** Hands `sessions` to the children, filling each up to `perProcess` before starting another. */
  async add(sessions: readonly Session[]): Promise<void> {
    let rest = [...sessions];
    while (rest.length > 0) {
      let child = this.children.find((c) => c.assigned < this.opts.perProcess);
      if (!child) child = this.spawn();
      const take = rest.slice(0, this.opts.perProcess - child.assigned);
      rest = rest.slice(take.length);
      child.assigned += take.length;
      await child.request({ type: "add", sessions: take.map((s) => ({ baseUrl: s.baseUrl, accessToken: s.accessToken, userId: s.userId })) });
    }
  }

  async status(): Promise<PollerStatus> {
    const all = await Promise.all(this.children.map((c) => c.request({ type: "status" })));
    const sum: PollerStatus = { sessions: 0, polling: 0, waiting: 0, empty: 0, withNews: 0, errors: 0, lastError: null };
    for (const s of all) {
      sum.sessions += s.sessions;
      sum.polling += s.polling;
      sum.waiting += s.waiting;
      sum.empty += s.empty;
      sum.withNews += s.withNews;
      sum.errors += s.errors;
      sum.lastError = s.lastError ?? sum.lastError;
    }
    return sum;
  }

  async stop(): Promise<PollerStatus | null> {
    if (this.children.length === 0) return null;
    const last = await this.status().catch(() => null);
    await Promise.all(
      this.children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.proc.exitCode !== null) return resolve();
            c.proc.once("exit", () => resolve());
            c.request({ type: "stop" }).catch(() => undefined);
          }),
      ),
    );
    return last;
  }
}

export interface ConnectionStep {
  connections: number;
  rssBytes: number | null;
  /** Waiting long-polls as the server counts them (Revier's /metrics), where it says. */
  serverWaiters: number | null;
  /** Seconds since the first step began. */
  at_s: number;
}

/**
 * Opens the sessions' long-polls `step` at a time; after each step waits until they are all
 * waiting (by the pollers' count, and by the server's where /metrics tells), lets the server
 * settle, and reads its resident memory. The first point is the server before any connection.
 * When a step does not get all its long-polls going within its deadline the server is saturated:
 * no further steps are opened (the ones open keep polling) and `saturated` says so.
 */
export async function connectInSteps(opts: {
  pool: PollerPool;
  sessions: readonly Session[];
  step: number;
  rss: () => Promise<number | null>;
  waiters: () => Promise<number | null>;
  progress: (m: string) => void;
  settleMs?: number;
}): Promise<{ steps: ConnectionStep[]; saturated: boolean }> {
  const { pool, sessions, step } = opts;
  const started = Date.now();
  const at = () => Math.round((Date.now() - started) / 100) / 10;
  const steps: ConnectionStep[] = [{ connections: 0, rssBytes: await opts.rss(), serverWaiters: await opts.waiters(), at_s: 0 }];
  for (let open = 0; open < sessions.length; ) {
    const next = Math.min(sessions.length, open + step);
    await pool.add(sessions.slice(open, next));
    open = next;
    // Generous: initial syncs queue behind each other on a loaded server.
    const deadline = Date.now() + 30_000 + step * 10;
    let st = await pool.status();
    while ((st.polling < open || st.waiting < open * 0.98) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      st = await pool.status();
    }
    let serverWaiters = await opts.waiters();
    while (serverWaiters !== null && serverWaiters < open * 0.98 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      serverWaiters = await opts.waiters();
    }
    await new Promise((r) => setTimeout(r, opts.settleMs ?? 1000));
    const rssBytes = await opts.rss();
    const saturated = st.polling < open * 0.98;
    steps.push({ connections: saturated ? st.polling : open, rssBytes, serverWaiters, at_s: at() });
    opts.progress(
      `  ${open} connections${saturated ? " (saturated)" : ""}: ${st.polling} polling, ${st.waiting} waiting${serverWaiters !== null ? ` (server: ${serverWaiters})` : ""}, ${st.errors} errors${rssBytes !== null ? `, server RSS ${Math.round(rssBytes / 1048576)} MiB` : ""}${st.lastError && st.errors > 0 ? ` — last error: ${st.lastError}` : ""}`,
    );
    if (saturated) return { steps, saturated: true };
  }
  return { steps, saturated: false };
}
