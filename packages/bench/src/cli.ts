#!/usr/bin/env node
/**
 * revier-bench — `npm run bench -- --scenario send|fanout|login|sync|e2ee|media|idle|floor
 * [--target URL[,URL…] --users FILE [--server-pid PID]] [--quick] [--processes N --database-url URL]
 * [--cpu-prof DIR] [--senders N] [--members N] …`
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { localTarget, noTarget, remoteTarget, type Target } from "./target.js";
import type { Scenario, ScenarioResult } from "./scenario.js";
import { send } from "./scenarios/send.js";
import { fanout } from "./scenarios/fanout.js";
import { loginScenario } from "./scenarios/login.js";
import { syncScenario } from "./scenarios/sync.js";
import { e2ee } from "./scenarios/e2ee.js";
import { media } from "./scenarios/media.js";
import { idle } from "./scenarios/idle.js";
import { floor } from "./scenarios/floor.js";
import { summariseProfiles } from "./profile.js";

const scenarios: Record<string, Scenario> = { send, fanout, login: loginScenario, sync: syncScenario, e2ee, media, idle, floor };

const { values } = parseArgs({
  options: {
    scenario: { type: "string" },
    target: { type: "string" },
    users: { type: "string" },
    quick: { type: "boolean", default: false },
    processes: { type: "string" },
    "database-url": { type: "string" },
    "bus-url": { type: "string" },
    "server-pid": { type: "string" },
    "cpu-prof": { type: "string" },
    "heap-live": { type: "boolean" },
    out: { type: "string" },
    set: { type: "string", multiple: true },
    help: { type: "boolean", default: false },
  },
  strict: false,
  allowPositionals: true,
});

const usage = `usage: npm run bench -- --scenario ${Object.keys(scenarios).join("|")} [--quick]
  [--target URL[,URL…] --users FILE]   any homeserver; FILE holds user:password lines
  [--processes N --database-url URL]    Revier processes the bench starts (N > 1: PostgreSQL + NATS)
  [--bus-url nats://…] [--out DIR]
  [--server-pid PID]                    with --target: read that server's memory from /proc
  [--cpu-prof DIR]                      CPU and allocation profiles of the server during the measurement window, written there
  [--heap-live]                         with --cpu-prof: the allocation profile keeps only what is still alive at the end (what waiting requests hold)
  scenario knobs: --senders N --seconds N --typing 1 (send), --members N --messages N --rate N --receipts 1|2 (fanout),
                  --logins N --concurrency N (login),
                  --rooms N --connections N --rate N --seconds N --poll-timeout S --presence-online 1 --poll-filter-id 1 (sync),
                  --members N --devices N --otks N (e2ee), --max-mib N (media: 1, 50, 1024 MiB up to N),
                  --users N --rooms N --per-user N --max-room N --connections N --step N --settle S (idle),
                  --members N --messages N --rate N (floor: the fanout wave against a bare server, no Revier)`;

const name = typeof values.scenario === "string" ? values.scenario : "";
const scenario = scenarios[name];
if (values.help || !scenario) {
  console.error(usage);
  process.exit(values.help ? 0 : 2);
}

// Any other `--knob value` is a numeric scenario parameter.
const knobs = new Map<string, number>();
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const m = /^--([a-z-]+)$/.exec(argv[i]!);
  const v = argv[i + 1];
  if (m && v !== undefined && /^\d+(\.\d+)?$/.test(v)) knobs.set(m[1]!, Number(v));
}

const repoRoot = path.resolve(fileURLToPath(new URL("../../../", import.meta.url)));
const outDir = typeof values.out === "string" ? values.out : path.join(repoRoot, "bench", "results");
const str = (v: unknown) => (typeof v === "string" ? v : null);

const started = new Date();
// `floor` measures the machine, not a homeserver: it starts its own bare server.
const target: Target =
  name === "floor"
    ? noTarget("no homeserver: a bare long-poll server (node:http, then Fastify)")
    : str(values.target)
  ? remoteTarget(str(values.target)!.split(","), str(values.users), str(values["server-pid"]) ? Number(str(values["server-pid"])) : null)
  : await localTarget({ processes: Number(str(values.processes) ?? 1), databaseUrl: str(values["database-url"]), busUrl: str(values["bus-url"]), cpuProfDir: str(values["cpu-prof"]), heapLive: values["heap-live"] === true });

let result: ScenarioResult;
try {
  console.log(`revier-bench ${name}${values.quick ? " --quick" : ""} against ${target.description}`);
  result = await scenario({
    target,
    quick: values.quick === true,
    num: (k, fallback) => knobs.get(k) ?? fallback,
    progress: (m) => console.log(`  [${((Date.now() - started.getTime()) / 1000).toFixed(1)} s] ${m}`),
  });
} catch (err) {
  // Said before the servers stop, which can take their grace period.
  console.error(`${name} failed:`, err);
  throw err;
} finally {
  await target.close();
}

const durationS = Math.round((Date.now() - started.getTime()) / 1000);
const cpuProfDir = str(values["cpu-prof"]);
const profiles = cpuProfDir && existsSync(cpuProfDir) ? readdirSync(cpuProfDir).map((f) => path.join(cpuProfDir, f)).filter((f) => f.endsWith(".cpuprofile") && statSync(f).mtimeMs >= started.getTime()) : [];
const record = {
  scenario: name,
  quick: values.quick === true,
  target: target.description,
  started: started.toISOString(),
  duration_s: durationS,
  machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model ?? "unknown", memory_gb: Math.round(os.totalmem() / 1e9), node: process.version },
  ...result,
  ...(profiles.length > 0 ? { cpu_profiles: profiles } : {}),
};

const figures = Object.entries(result.figures)
  .map(([k, v]) => `${k}=${v}`)
  .join(" ");
const checks = result.checks.length > 0 ? result.checks.map((c) => `${c.what} ${c.target}: ${c.pass ? "pass" : "MISS"}`).join("; ") : "none (a calibration)";
const notes = result.notes?.length ? `notes: ${result.notes.join("; ")}` : "";
console.log(`\n${figures}\ntargets: ${checks}\n${notes ? `${notes}\n` : ""}`);
if (profiles.length > 0) console.log(summariseProfiles(profiles, 25));

mkdirSync(outDir, { recursive: true });
const stamp = started.toISOString().replace(/[:.]/g, "-");
const file = path.join(outDir, `${name}${values.quick ? "-quick" : ""}-${stamp}.json`);
writeFileSync(file, JSON.stringify(record, null, 2) + "\n");
const summary = path.join(outDir, "summary.md");
if (!existsSync(summary)) writeFileSync(summary, "# Benchmark results\n\nOne line per run of `npm run bench`; the JSON beside this file has the details.\n\n| date | scenario | target | parameters | figures | targets |\n|---|---|---|---|---|---|\n");
const params = Object.entries(result.parameters)
  .map(([k, v]) => `${k}=${v}`)
  .join(" ");
const cell = (t: string) => t.replace(/\|/g, "\\|");
appendFileSync(summary, `| ${started.toISOString().slice(0, 16)}Z | ${name}${values.quick ? " (quick)" : ""} | ${target.description} | ${params} | ${figures} | ${cell(checks)}${notes ? ` — ${cell(notes)}` : ""} |\n`);
console.log(`wrote ${path.relative(process.cwd(), file)} and a line in ${path.relative(process.cwd(), summary)}`);
