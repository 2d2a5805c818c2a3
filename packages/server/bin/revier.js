#!/usr/bin/env node
// The compiled CLI lives in dist/ (built by `npm install` through the root `prepare` script).
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
const entry = new URL("../dist/cli-entry.js", import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  console.error("revier: the server is not built yet — run `npm install` (or `npm run build`) in the repository root.");
  process.exit(1);
}
await import(entry.href);
