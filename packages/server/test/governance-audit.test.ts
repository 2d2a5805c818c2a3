import { before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import SqliteDatabase from "better-sqlite3";
import type { AuditEntry } from "@revier/protocol";
import { describeEachDatabase } from "./support/suite.js";
import { TEST_PASSWORD } from "./support/server.js";
import { api, enc } from "./support/http.js";

const ADMIN = "/_revier/admin/v1";
const ENTRY = fileURLToPath(new URL("../src/cli-entry.ts", import.meta.url));

describeEachDatabase("governance: audit log, policy, stats", ({ server }) => {
  let admin: string;
  let adminId: string;

  before(async () => {
    adminId = (await server().services.accounts.create("leitung", { password: TEST_PASSWORD, role: "admin" })).user_id;
    admin = (await server().login("leitung")).access_token;
  });

  async function call(method: string, p: string, body?: unknown, rawBody?: string) {
    return api(server().url, method, `${ADMIN}${p}`, { token: admin, ...(body !== undefined ? { body } : {}), ...(rawBody !== undefined ? { rawBody, headers: { "content-type": "text/csv" } } : {}) });
  }

  async function entriesAfter(seq: number): Promise<AuditEntry[]> {
    const res = await call("GET", `/audit?from=${seq}&limit=1000`);
    return (res.body as { entries: AuditEntry[] }).entries;
  }

  async function lastSeq(): Promise<number> {
    const all = await entriesAfter(0);
    return all.length ? all[all.length - 1]!.seq : 0;
  }

  test("each privileged action leaves exactly one entry naming actor, role, action and target", async () => {
    const target = (await server().services.accounts.create("wache1", { password: TEST_PASSWORD })).user_id;
    await server().services.devices.upsert(target, "TABLET", null, {});
    await server().services.devices.upsert(target, "OLDPHONE", null, {});
    const actions: [string, () => Promise<{ status: number; body: unknown }>, string | null][] = [
      ["user.create", () => call("POST", "/users", { localpart: "neu1", password: TEST_PASSWORD }), "@neu1:localhost"],
      ["user.lock", () => call("POST", `/users/${enc(target)}/lock`), target],
      ["user.unlock", () => call("POST", `/users/${enc(target)}/unlock`), target],
      ["user.password_reset", () => call("POST", `/users/${enc(target)}/password`, { password: "ganz neues Passwort", logout_devices: false }), target],
      ["user.role", () => call("PUT", `/users/${enc(target)}/role`, { role: "helpdesk" }), target],
      ["user.import", () => call("POST", "/users/import", undefined, "localpart,displayname,role,password\nimp1,Imp Eins,dpo,\nBAD NAME,x,user,\nimp2,Imp Zwei,chief,\n"), null],
      ["device.wipe", () => call("DELETE", `/users/${enc(target)}/devices/TABLET`), target],
      ["device.block", () => call("DELETE", `/users/${enc(target)}/devices/OLDPHONE?block=true`), target],
      ["enrollment_code.issue", () => call("POST", `/users/${enc(target)}/enrollment_codes`), target],
      ["policy.update", () => call("PUT", "/policy", { max_devices: 5, retention_days: 90 }), "policy"],
      ["audit.export", () => call("GET", "/audit/export"), null],
    ];
    for (const [action, run, expectedTarget] of actions) {
      const before = await lastSeq();
      const res = await run();
      assert.equal(res.status, 200, `${action}: ${JSON.stringify(res.body)}`);
      const added = await entriesAfter(before);
      assert.equal(added.length, 1, `${action} wrote ${added.length} entries`);
      const e = added[0]!;
      assert.equal(e.action, action);
      assert.equal(e.actor, adminId);
      assert.equal(e.actor_role, "admin");
      assert.equal(e.target, expectedTarget);
      assert.doesNotMatch(JSON.stringify(e.details), /ganz neues Passwort|correct horse/, "no secrets in the audit log");
    }
    // Reads are not privileged changes and leave no entry.
    const before = await lastSeq();
    for (const p of ["/users", `/users/${enc(target)}`, "/policy", "/audit", "/audit/verify", "/stats"]) assert.equal((await call("GET", p)).status, 200);
    assert.equal(await lastSeq(), before);

    const entries = await entriesAfter(0);
    const policy = entries.find((e) => e.action === "policy.update")!;
    assert.deepEqual(policy.details, { old: { max_devices: 3, retention_days: null }, new: { max_devices: 5, retention_days: 90 } });
    const imported = entries.find((e) => e.action === "user.import")!;
    assert.deepEqual(imported.details, { created: ["@imp1:localhost"], failed: 2 });
    await call("PUT", "/policy", {});
  });

  test("CSV import reports per-row errors and creates the valid rows with their roles", async () => {
    const res = await call("POST", "/users/import", undefined, 'csv1,"Meier, Anna",helpdesk,sicheres Passwort 1\ncsv1,dup,user,\ncsv2,,user,kurz\n"csv3","Quote ""Q""",user\n');
    assert.equal(res.status, 200);
    const body = res.body as { created: number; failed: number; rows: { line: number; user_id?: string; errcode?: string }[] };
    assert.equal(body.created, 2);
    assert.equal(body.failed, 2);
    assert.deepEqual(
      body.rows.map((r) => [r.line, r.user_id ?? r.errcode]),
      [
        [1, "@csv1:localhost"],
        [2, "M_USER_IN_USE"],
        [3, "M_WEAK_PASSWORD"],
        [4, "@csv3:localhost"],
      ],
    );
    const user = await call("GET", `/users/${enc("@csv1:localhost")}`);
    assert.equal((user.body as { role: string; displayname: string }).role, "helpdesk");
    assert.equal((user.body as { displayname: string }).displayname, "Meier, Anna");
    assert.equal((await server().login("csv1", "sicheres Passwort 1")).user_id, "@csv1:localhost");
  });

  test("the policy is validated as a whole: unknown keys and bad values are refused, defaults fill gaps", async () => {
    const typo = await call("PUT", "/policy", { max_device: 4 });
    assert.equal(typo.status, 400);
    assert.match((typo.body as { error: string }).error, /max_device/);
    assert.equal((await call("PUT", "/policy", { max_devices: 0 })).status, 400);
    assert.equal((await call("PUT", "/policy", { channel_creators: ["admin", "sheriff"] })).status, 400);
    assert.equal((await call("PUT", "/policy", { min_client_versions: { "revier-web": "neu" } })).status, 400);
    const ok = await call("PUT", "/policy", { channel_creators: ["admin", "helpdesk"], emergency_rooms: ["!alarm:localhost"] });
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.body, {
      max_devices: 3,
      enrollment_required: false,
      min_client_versions: {},
      terms_required: false,
      emergency_rooms: ["!alarm:localhost"],
      channel_creators: ["admin", "helpdesk"],
      retention_days: null,
    });
    assert.deepEqual((await server().services.policy.get()).channel_creators, ["admin", "helpdesk"]);
    await call("PUT", "/policy", {});
  });

  test("concurrent records chain correctly", async () => {
    await Promise.all(Array.from({ length: 40 }, (_, i) => server().services.audit.record({ actor: "test", actorRole: "admin", action: "test.concurrent", target: String(i) })));
    const verify = await call("GET", "/audit/verify");
    assert.equal((verify.body as { ok: boolean }).ok, true, JSON.stringify(verify.body));
  });

  test("export is JSON Lines; changing one stored entry makes verify fail and name it", async () => {
    const exported = await api(server().url, "GET", `${ADMIN}/audit/export`, { token: admin });
    assert.match(exported.headers.get("content-type") ?? "", /application\/x-ndjson/);
    const lines = (exported.body as unknown as string).trim().split("\n").map((l) => JSON.parse(l) as AuditEntry);
    assert.ok(lines.length > 3);
    assert.deepEqual(lines.map((l) => l.seq), lines.map((_, i) => i + 1));
    const victim = lines[2]!;
    await server().services.storage.db.updateTable("audit_log").set({ details: JSON.stringify({ ...victim.details, forged: true }) }).where("seq", "=", victim.seq).execute();
    const res = await call("GET", "/audit/verify");
    assert.equal(res.status, 200);
    assert.deepEqual((res.body as { ok: boolean; first_broken: unknown }).ok, false);
    assert.equal((res.body as { first_broken: { seq: number } }).first_broken.seq, victim.seq);
    // Restoring the row restores the chain.
    await server().services.storage.db.updateTable("audit_log").set({ details: JSON.stringify(victim.details) }).where("seq", "=", victim.seq).execute();
    assert.equal(((await call("GET", "/audit/verify")).body as { ok: boolean }).ok, true);
  });

  test("stats count users, devices and messages without naming rooms", async () => {
    const res = await call("GET", "/stats");
    assert.equal(res.status, 200);
    const stats = res.body as { users: { total: number }; devices: { total: number }; public_channels: number; messages_per_day: unknown[] };
    assert.ok(stats.users.total >= 5);
    assert.ok(stats.devices.total >= 1);
    assert.equal(typeof stats.public_channels, "number");
    assert.doesNotMatch(JSON.stringify(stats), /![A-Za-z]/, "no room ids");
  });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function revier(args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", ENTRY, ...args], { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.stdin.end("");
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

test("CLI: user import, role, policy get/set and audit verify/export, audited as cli:<os user>", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "revier-gov-cli-"));
  try {
    const env = { REVIER_DATA_DIR: dir };
    const csv = path.join(dir, "users.csv");
    writeFileSync(csv, "localpart,displayname,role,password\nkommissar,Kommissar Rex,admin,ein sicheres Passwort\nhelfer,,helpdesk,\nbad name,,user,\n");
    const imported = await revier(["user", "import", csv], env);
    assert.equal(imported.code, 1, "a failed row makes the exit code non-zero");
    assert.match(imported.stdout, /line 2: created @kommissar:localhost/);
    assert.match(imported.stdout, /line 4: bad name: /);
    assert.match(imported.stdout, /2 created, 1 failed/);

    const role = await revier(["user", "role", "helfer", "dpo"], env);
    assert.equal(role.code, 0, role.stderr);
    assert.equal((await revier(["user", "role", "helfer", "sheriff"], env)).code, 1);

    const set = await revier(["policy", "set", "max_devices=2", "channel_creators=everyone", 'min_client_versions={"revier-web":"1.4.0"}'], env);
    assert.equal(set.code, 0, set.stderr);
    const got = JSON.parse((await revier(["policy", "get"], env)).stdout) as Record<string, unknown>;
    assert.equal(got.max_devices, 2);
    assert.deepEqual(got.min_client_versions, { "revier-web": "1.4.0" });
    const bad = await revier(["policy", "set", "max_devicez=2"], env);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /max_devicez/);

    const ok = await revier(["audit", "verify"], env);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /intact: 3 entries/);
    const exported = await revier(["audit", "export"], env);
    const entries = exported.stdout.trim().split("\n").map((l) => JSON.parse(l) as AuditEntry);
    assert.deepEqual(entries.map((e) => e.action), ["user.import", "user.role", "policy.update"]);
    assert.ok(entries.every((e) => e.actor === `cli:${userInfo().username}` && e.actor_role === "cli"));

    const raw = new SqliteDatabase(path.join(dir, "revier.db"));
    raw.prepare("update audit_log set target = ? where seq = 2").run("@kommissar:localhost");
    raw.close();
    const broken = await revier(["audit", "verify"], env);
    assert.equal(broken.code, 1);
    assert.match(broken.stderr, /broken at entry 2/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
