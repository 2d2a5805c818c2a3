import { fork, type ChildProcess } from "node:child_process";
import { SERVER_NODE_FLAGS } from "@revier/server/dist/runtime-flags.js";
import { LeanConnection } from "../lean-client.js";
import { percentile, round, sleep } from "../stats.js";
import { procCpuSeconds } from "../proc.js";
import type { Scenario } from "../scenario.js";
import type { FloorReply, FloorRequest } from "../floor-server.js";

/** A token as long as Revier's (`rva_` and 43 characters), so requests are the size they are there. */
const AUTH_HEADER = `authorization: Bearer rva_${"x".repeat(43)}\r\n`;

class FloorServer {
  private waiters: ((m: FloorReply) => void)[] = [];
  private readonly waves: ((at: number) => void)[] = [];

  constructor(readonly child: ChildProcess) {
    child.on("message", (m: FloorReply) => {
      if (m.type === "waved") this.waves.shift()?.(m.at);
      else this.waiters.shift()?.(m);
    });
  }

  static async start(framework: "node" | "fastify"): Promise<{ server: FloorServer; port: number }> {
    // Beside this module: compiled (.js) when run by the bench, the source (.ts, through the test
    // runner's loader, which fork passes on) in the tests.
    const script = new URL(`../floor-server${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url);
    // With the Node flags Revier's server runs with (runtime-flags.ts), so the floor stays its floor.
    const child = fork(script, [], { execArgv: [...process.execArgv, ...SERVER_NODE_FLAGS], env: { ...process.env, REVIER_FLOOR_FRAMEWORK: framework }, stdio: ["ignore", "inherit", "inherit", "ipc"] });
    const server = new FloorServer(child);
    const ready = await server.reply(null);
    if (ready.type !== "ready") throw new Error("floor server did not start");
    return { server, port: ready.port };
  }

  reply(m: FloorRequest | null): Promise<FloorReply> {
    return new Promise((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`floor server exited (${code})`));
      this.child.once("exit", onExit);
      this.waiters.push((r) => {
        this.child.off("exit", onExit);
        resolve(r);
      });
      if (m) this.child.send(m);
    });
  }

  /** Announces a message; resolves with the server's clock when it began answering. */
  wave(): Promise<number> {
    return new Promise((resolve) => {
      this.waves.push(resolve);
      this.child.send({ type: "wave" } satisfies FloorRequest);
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.send({ type: "stop" } satisfies FloorRequest);
    const kill = setTimeout(() => this.child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(kill);
  }
}

/** One framework's wave: `members` long-polls, `messages` announcements at `rate`/s. */
async function measure(framework: "node" | "fastify", members: number, messages: number, rate: number, progress: (m: string) => void) {
  const { server, port } = await FloorServer.start(framework);
  const pid = server.child.pid!;
  const waveAt = new Map<number, number>();
  const latencies: number[] = [];
  let stop = false;
  let errors = 0;
  const conns = Array.from({ length: members }, () => new LeanConnection("127.0.0.1", port));
  const loops = conns.map(async (c) => {
    let since = 0;
    while (!stop) {
      let res;
      try {
        res = await c.get(`/_matrix/client/v3/sync?since=s${since}&timeout=30000&filter=0`, AUTH_HEADER);
      } catch {
        if (!stop) errors++;
        return;
      }
      const at = Date.now();
      const next = Number((JSON.parse(res.body.toString("utf8")) as { next_batch: string }).next_batch.slice(1));
      for (let p = since + 1; p <= next; p++) {
        const sent = waveAt.get(p);
        if (sent !== undefined) latencies.push(Math.max(0, at - sent));
      }
      since = next;
    }
  });
  // Every member waiting before the first message, as in the fanout scenario.
  for (;;) {
    const w = await server.reply({ type: "waiting" });
    if (w.type === "waiting" && w.n >= members) break;
    await sleep(100);
  }
  progress(`${framework}: ${members} long-polls waiting; ${messages} messages at ${rate}/s`);
  const cpu0 = procCpuSeconds(pid);
  const main0 = procCpuSeconds(pid, pid);
  const system0 = procCpuSeconds(pid, pid, "system");
  const before = await server.reply({ type: "waiting" });
  const started = Date.now();
  for (let m = 0; m < messages; m++) {
    const due = started + (m * 1000) / rate;
    if (due > Date.now()) await sleep(due - Date.now());
    waveAt.set(m + 1, await server.wave());
  }
  const expected = members * messages;
  const deadline = Date.now() + 10_000;
  while (latencies.length < expected && Date.now() < deadline) await sleep(50);
  const cpu1 = procCpuSeconds(pid);
  const main1 = procCpuSeconds(pid, pid);
  const system1 = procCpuSeconds(pid, pid, "system");
  const after = await server.reply({ type: "waiting" });
  const answers = after.type === "waiting" && before.type === "waiting" ? after.answers - before.answers : 0;
  const gcMs = after.type === "waiting" && before.type === "waiting" ? after.gcMs - before.gcMs : Number.NaN;
  stop = true;
  for (const c of conns) c.close();
  await Promise.allSettled(loops);
  await server.stop();
  const perAnswer = (a: number | null, b: number | null) => (a !== null && b !== null && answers > 0 ? round(((b - a) * 1e6) / answers) : Number.NaN);
  return {
    [`${framework}_delivery_p50_ms`]: round(percentile(latencies, 50)),
    [`${framework}_delivery_p99_ms`]: round(percentile(latencies, 99)),
    [`${framework}_delivery_max_ms`]: round(latencies.reduce((a, b) => (b > a ? b : a), 0)),
    [`${framework}_undelivered`]: expected - latencies.length,
    [`${framework}_answers`]: answers,
    [`${framework}_cpu_us_per_answer`]: perAnswer(cpu0, cpu1),
    [`${framework}_main_thread_us_per_answer`]: perAnswer(main0, main1),
    [`${framework}_main_thread_system_us_per_answer`]: perAnswer(system0, system1),
    [`${framework}_gc_us_per_answer`]: answers > 0 ? round((gcMs * 1000) / answers) : Number.NaN,
    [`${framework}_errors`]: errors,
  };
}

/**
 * What this machine allows any Node long-poll server: the fanout scenario's wave (K members
 * long-polling, one message at a time) against a server that does no work of its own, first
 * node:http alone, then Fastify with one route. Starts no Revier. Revier's fanout CPU per answer
 * and p99 are read against these figures: the gap is Revier's own work (authentication,
 * assembling the answer, its hooks, the garbage of both), the floor is Node, the kernel and the
 * loopback on this machine, which differ from day to day.
 */
export const floor: Scenario = async (ctx) => {
  const members = ctx.num("members", ctx.quick ? 1000 : 5000);
  const messages = ctx.num("messages", ctx.quick ? 10 : 20);
  const rate = ctx.num("rate", 1);
  const figures: Record<string, number> = {};
  for (const framework of ["node", "fastify"] as const) Object.assign(figures, await measure(framework, members, messages, rate, ctx.progress));
  return {
    parameters: { members, messages, rate },
    figures,
    // A calibration, not one of the targets: it has none.
    checks: [],
    notes: ["no Revier: a long-poll server that only answers, to read the fanout figures against"],
  };
};
