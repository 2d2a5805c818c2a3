import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { SERVER_NODE_FLAGS } from "./runtime-flags.js";

const root = new URL("../../../", import.meta.url);

test("npm start passes the server's Node flags", () => {
  const pkg = JSON.parse(readFileSync(new URL("package.json", root), "utf8")) as { scripts: Record<string, string> };
  assert.equal(pkg.scripts.start, `node ${SERVER_NODE_FLAGS.join(" ")} packages/server/bin/revier.js serve`);
});

test("the systemd unit in docs/operations.md passes them too", () => {
  const doc = readFileSync(new URL("docs/operations.md", root), "utf8");
  const line = doc.split("\n").find((l) => l.startsWith("ExecStart="));
  assert.equal(line, `ExecStart=/usr/bin/node ${SERVER_NODE_FLAGS.join(" ")} packages/server/bin/revier.js serve`);
});

test("this Node accepts them: a larger young generation than without", () => {
  // The new space's capacity after allocating enough to make V8 grow it to its maximum.
  const script = `const v8=require("node:v8");let k=[];for(let i=0;i<4e6;i++){k.push({i});if(k.length>2e5)k=[];}console.log(v8.getHeapSpaceStatistics().find(s=>s.space_name==="new_space").space_size)`;
  const size = (flags: readonly string[]) => Number(execFileSync(process.execPath, [...flags, "-e", script], { encoding: "utf8" }).trim());
  const plain = size([]);
  const flagged = size(SERVER_NODE_FLAGS);
  assert.ok(flagged > plain, `new space ${flagged} bytes with the flags, ${plain} without`);
});
