#!/usr/bin/env node
// Runs every test file with Node's test runner. Node 20 has no glob support in --test, so the files
// are found here. Files run in parallel (one process each, two at a time on a 2-core machine);
// each integration file shares one server across its tests.
import { spawn } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import path from "node:path";

const roots = ["packages", "scripts"];
const files = [];
function walk(dir) {
  for (const name of readdirSync(dir)) {
    if (name === "node_modules" || name === "dist") continue;
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (/\.test\.ts$/.test(name)) files.push(p);
  }
}
for (const r of roots) walk(r);
const only = process.argv.slice(2);
const selected = only.length ? files.filter((f) => only.some((o) => f.includes(o))) : files;
selected.sort();
const concurrency = process.env.REVIER_TEST_CONCURRENCY ?? "2";
const child = spawn(process.execPath, ["--import", "tsx", "--test", "--test-force-exit", `--test-concurrency=${concurrency}`, "--test-reporter=spec", ...selected], { stdio: "inherit" });
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
