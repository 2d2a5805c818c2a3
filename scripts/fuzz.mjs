#!/usr/bin/env node
// The long fuzzing run: the same properties as packages/server/test/fuzz-endpoints.test.ts (every
// route, random and hostile segments, queries and bodies), with a bigger budget than CI's.
//
//   npm run fuzz                         # 500 runs per property, a fresh random seed (printed)
//   npm run fuzz -- --runs 2000          # more runs
//   npm run fuzz -- --seed 20261126      # replay a seed (CI uses 20261126 with 12 runs)
//   npm run fuzz -- --only pushrules     # only routes whose pattern contains the text
//
// A failure prints fast-check's counterexample and the seed; rerun with that seed to reproduce.
// Runs on SQLite and, when reachable, on PostgreSQL (REVIER_TEST_DATABASE_URL), like the tests.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const opts = { runs: "500", seed: "random", only: "" };
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  const value = () => {
    const v = args[++i];
    if (v === undefined) usage(`${a} needs a value`);
    return v;
  };
  if (a === "--runs") opts.runs = value();
  else if (a === "--seed") opts.seed = value();
  else if (a === "--only") opts.only = value();
  else if (a === "--help" || a === "-h") usage();
  else usage(`unknown argument ${a}`);
}

function usage(error) {
  if (error) console.error(error);
  console.error("usage: npm run fuzz -- [--runs N] [--seed N|random] [--only TEXT]");
  process.exit(error ? 2 : 0);
}

if (!/^\d+$/.test(opts.runs) || Number(opts.runs) < 1) usage("--runs must be a positive integer");
const seed = opts.seed === "random" ? String(Math.floor(Math.random() * 2 ** 31)) : opts.seed;
if (!/^-?\d+$/.test(seed)) usage("--seed must be an integer or 'random'");

console.log(`fuzzing every route: ${opts.runs} runs per property, seed ${seed}${opts.only ? `, routes matching "${opts.only}"` : ""}`);
console.log(`reproduce with: npm run fuzz -- --runs ${opts.runs} --seed ${seed}${opts.only ? ` --only ${opts.only}` : ""}`);
const started = Date.now();
const child = spawn(process.execPath, ["--import", "tsx", "--test", "--test-force-exit", "--test-reporter=spec", "packages/server/test/fuzz-endpoints.test.ts"], {
  cwd: root,
  stdio: "inherit",
  env: { ...process.env, REVIER_FUZZ_RUNS: opts.runs, REVIER_FUZZ_SEED: seed, ...(opts.only ? { REVIER_FUZZ_ONLY: opts.only } : {}) },
});
child.on("exit", (code, signal) => {
  console.log(`fuzzing ${code === 0 ? "passed" : "FAILED"} after ${Math.round((Date.now() - started) / 1000)} s (seed ${seed})`);
  process.exit(code ?? (signal ? 1 : 0));
});
