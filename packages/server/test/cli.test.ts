import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { api } from "./support/http.js";

const ENTRY = fileURLToPath(new URL("../src/cli-entry.ts", import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function revier(args: string[], env: Record<string, string>, stdin?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", ENTRY, ...args], { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.stdin.end(stdin ?? "");
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

test("revier user create/list/reset-password/deactivate manage accounts in the data dir", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "revier-cli-"));
  try {
    const env = { REVIER_DATA_DIR: dir };
    const created = await revier(["user", "create", "Chefin", "--admin", "--password-stdin"], env, "ein sicheres Passwort\n");
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /created @chefin:localhost \(admin\)/);
    const weak = await revier(["user", "create", "kurz", "--password-stdin"], env, "abc\n");
    assert.equal(weak.code, 1);
    assert.match(weak.stderr, /at least 8 characters/);
    const dup = await revier(["user", "create", "chefin", "--password-stdin"], env, "ein sicheres Passwort\n");
    assert.equal(dup.code, 1);
    assert.match(dup.stderr, /taken/);
    const list = await revier(["user", "list"], env);
    assert.equal(list.stdout.trim(), "@chefin:localhost\tadmin\tactive");
    const reset = await revier(["user", "reset-password", "chefin", "--password-stdin"], env, "ein anderes Passwort\n");
    assert.equal(reset.code, 0, reset.stderr);
    const deactivated = await revier(["user", "deactivate", "@chefin:localhost"], env);
    assert.equal(deactivated.code, 0, deactivated.stderr);
    assert.match((await revier(["user", "list"], env)).stdout, /@chefin:localhost\tadmin\tdeactivated/);
    const missing = await revier(["user", "deactivate", "niemand"], env);
    assert.equal(missing.code, 1);
    // Secrets on disk are owner-only.
    assert.equal(statSync(path.join(dir, "signing.key")).mode & 0o077, 0);
    assert.equal(statSync(path.join(dir, "revier.db")).mode & 0o077, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("an invalid setting stops start-up with a message naming it; the environment overrides the file", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "revier-cli-"));
  try {
    const bad = await revier(["serve"], { REVIER_DATA_DIR: dir, REVIER_PORT: "achtzig" });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /REVIER_PORT/);
    const file = path.join(dir, "revier.yaml");
    writeFileSync(file, "server_name: polizei.example\nlimits:\n  login_per_minut: 5\n");
    const typo = await revier(["serve"], { REVIER_DATA_DIR: dir, REVIER_CONFIG: file });
    assert.equal(typo.code, 1);
    assert.match(typo.stderr, /limits\.login_per_minut/);
    writeFileSync(file, "server_name: polizei.example\nport: 1\n");
    const config = await revier(["config"], { REVIER_DATA_DIR: dir, REVIER_CONFIG: file });
    assert.equal(config.code, 0);
    assert.match(config.stdout, /REVIER_SERVER_NAME/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("serve announces how to create the first admin, serves, and exits 0 on SIGTERM", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "revier-cli-"));
  try {
    const child = spawn(process.execPath, ["--import", "tsx", ENTRY, "serve"], { env: { ...process.env, REVIER_DATA_DIR: dir, REVIER_PORT: "0", REVIER_SERVER_NAME: "polizei.example" }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    const listening = new Promise<string>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        const m = /"url":"(http:\/\/[^"]+)"/.exec(out);
        if (m && out.includes("revier user create")) resolve(m[1]!);
      });
      child.on("exit", (code) => reject(new Error(`exited early with ${code}: ${out}`)));
    });
    const url = await listening;
    const versions = await api(url, "GET", "/_matrix/client/versions");
    assert.equal(versions.status, 200);
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    child.kill("SIGTERM");
    assert.equal(await exited, 0);
    const lines = out.trim().split("\n").map((l) => JSON.parse(l) as { msg: string });
    assert.ok(lines.some((l) => l.msg === "shutting down"));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
