/**
 * Secrets in URLs and logs (CWE-598, CWE-532; the replaced messenger's advisories listed "secrets
 * in URLs" and cleartext secrets): access tokens in the query string were long accepted by Matrix
 * servers (deprecated in spec v1.11) and end up in proxy logs and browser history; request logging
 * of full URLs, bodies or connection strings leaks tokens, passwords and codes.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { loadConfig } from "../src/config.js";
import { createLogger, startServer, type RunningServer } from "../src/server.js";
import { sha256Hex } from "../src/lib/random.js";
import { DB_KINDS, PG_SKIP_MESSAGE, createScratchDatabase, postgresReachable } from "./support/databases.js";
import { api } from "./support/http.js";
import { Capture, createRoom, loginBody, passwordAuth, sendMessage } from "./security-helpers.js";

const pgOk = await postgresReachable();
const ADMIN = "/_revier/admin/v1";

function secret(label: string): string {
  return `${label}-${randomBytes(9).toString("base64url")}`;
}

for (const kind of DB_KINDS) {
  describe(`tokens never in URLs or logs [${kind}]`, { skip: kind === "postgres" && !pgOk ? PG_SKIP_MESSAGE : false }, () => {
    const capture = new Capture();
    let server: RunningServer;
    let dataDir: string;
    let drop: (() => Promise<void>) | undefined;
    /** Every secret string the test handled; none may appear in the captured log. */
    const secrets = new Map<string, string>();
    const keep = (label: string, value: string | undefined): string => {
      assert.ok(value && value.length >= 8, `${label} should be a real secret: ${value}`);
      secrets.set(label, value);
      return value;
    };
    const call = (method: string, p: string, opts: Parameters<typeof api>[3] = {}) => api(server.url, method, p, opts);

    before(async () => {
      dataDir = mkdtempSync(path.join(tmpdir(), "revier-test-"));
      let databaseUrl: string | null = null;
      if (kind === "postgres") {
        const scratch = await createScratchDatabase();
        databaseUrl = scratch.url;
        drop = scratch.drop;
      }
      const config = loadConfig({}, { port: 0, data_dir: dataDir, database_url: databaseUrl, log_level: "trace", "registration.enabled": true, "limits.login_per_minute": 100000, "limits.register_per_minute": 100000 });
      server = await startServer(config, { log: createLogger(config, capture) });
    });

    after(async () => {
      await server?.stop();
      rmSync(dataDir, { recursive: true, force: true });
      await drop?.();
    });

    test("an access token in the query string is refused, even with a valid Authorization header and in encoded spellings", async () => {
      const password = keep("password of quinn", secret("pw-quinn"));
      await server.services.accounts.create("quinn", { password });
      const login = await call("POST", "/_matrix/client/v3/login", { body: loginBody("quinn", password) });
      const token = keep("access token of quinn", login.body.access_token as string);
      const spellings = [`access_token=${token}`, `foo=1&access_token=${token}`, `access%5Ftoken=${token}`, `access_token=${encodeURIComponent(token)}&timeout=0`, `a=b&access%5ftoken=${token}&c=d`];
      for (const path of ["/_matrix/client/v3/account/whoami", "/_matrix/client/v3/sync", "/_matrix/client/v3/joined_rooms", `${ADMIN}/users`]) {
        for (const q of spellings) {
          const anonymous = await call("GET", `${path}?${q}`);
          assert.equal(anonymous.status, 401, `${path}?${q}: the query token is never used to authenticate`);
          assert.equal(anonymous.body.errcode, "M_MISSING_TOKEN");
          const withHeader = await call("GET", `${path}?${q}`, { token });
          assert.equal(withHeader.status, 401, `${path}?${q} with a header: a client that puts tokens in URLs is told so`);
          assert.equal(withHeader.body.errcode, "M_MISSING_TOKEN");
        }
      }
      // The token is still good in the header.
      assert.equal((await call("GET", "/_matrix/client/v3/account/whoami", { token })).status, 200);
    });

    test("no access token, refresh token, password, enrollment or registration code ever reaches the log, at trace level", async () => {
      const sn = server.services.config.serverName;
      const adminPw = keep("admin password", secret("pw-admin"));
      const annaPw = keep("anna password", secret("pw-anna"));
      const bertPw = keep("bert password", secret("pw-bert"));
      await server.services.accounts.create("root", { password: adminPw, role: "admin" });
      await server.services.accounts.create("anna", { password: annaPw });
      await server.services.accounts.create("bert", { password: bertPw });

      // Logins: right, wrong, unknown user, with refresh tokens.
      const anna = await call("POST", "/_matrix/client/v3/login", { body: loginBody("anna", annaPw, { refresh_token: true }) });
      assert.equal(anna.status, 200);
      keep("anna access token", anna.body.access_token as string);
      const annaRefresh = keep("anna refresh token", anna.body.refresh_token as string);
      assert.equal((await call("POST", "/_matrix/client/v3/login", { body: loginBody("anna", keep("wrong password", secret("pw-wrong"))) })).status, 403);
      assert.equal((await call("POST", "/_matrix/client/v3/login", { body: loginBody("nobody", keep("unknown user's password", secret("pw-nobody"))) })).status, 403);
      // A broken body carrying a password (the parser's error message quotes its input).
      const brokenPw = keep("password in a malformed body", secret("pw-broken"));
      assert.equal((await call("POST", "/_matrix/client/v3/login", { rawBody: `{"type":"m.login.password","password":"${brokenPw}",`, headers: { "content-type": "application/json" } })).status, 400);
      const refreshed = await call("POST", "/_matrix/client/v3/refresh", { body: { refresh_token: annaRefresh } });
      assert.equal(refreshed.status, 200);
      const annaToken = keep("anna refreshed access token", refreshed.body.access_token as string);
      keep("anna refreshed refresh token", refreshed.body.refresh_token as string);
      assert.equal((await call("POST", "/_matrix/client/v3/refresh", { body: { refresh_token: keep("bogus refresh token", `rvr_${secret("bogus")}`) } })).status, 401);
      assert.equal((await call("GET", "/_matrix/client/v3/account/whoami", { token: keep("bogus access token", `rva_${secret("bogus")}`) })).status, 401);
      assert.equal((await call("GET", `/_matrix/client/v3/account/whoami?access_token=${annaToken}`)).status, 401);
      const bert = await call("POST", "/_matrix/client/v3/login", { body: loginBody("bert", bertPw) });
      const bertToken = keep("bert access token", bert.body.access_token as string);

      // Ordinary use: rooms, messages, sync, media, errors.
      const roomId = await createRoom(server, annaToken, { invite: [`@bert:${sn}`], name: "Lage" });
      assert.equal((await call("POST", `/_matrix/client/v3/join/${encodeURIComponent(roomId)}`, { token: bertToken, body: {} })).status, 200);
      await sendMessage(server, annaToken, roomId, keep("message body", secret("geheime-nachricht")), "t1");
      assert.equal((await call("GET", "/_matrix/client/v3/sync?timeout=0", { token: bertToken })).status, 200);
      const upload = await call("POST", `/_matrix/media/v3/upload?filename=${encodeURIComponent("bericht.txt")}`, { token: annaToken, rawBody: Buffer.from("Anlage"), headers: { "content-type": "text/plain" } });
      assert.equal(upload.status, 200);
      const mediaId = String(upload.body.content_uri).split("/").pop()!;
      assert.equal((await call("GET", `/_matrix/client/v1/media/download/${sn}/${mediaId}`, { token: bertToken })).status, 200);
      assert.equal((await call("GET", "/_matrix/client/v3/no/such/endpoint", { token: bertToken })).status, 404);
      assert.equal((await call("POST", "/_matrix/client/v3/createRoom", { token: bertToken, body: { name: 42 } })).status, 400);

      // User-interactive auth with passwords: a device deletion and a password change.
      const second = await call("POST", "/_matrix/client/v3/login", { body: loginBody("bert", bertPw) });
      keep("bert second access token", second.body.access_token as string);
      const del = await call("DELETE", `/_matrix/client/v3/devices/${second.body.device_id as string}`, { token: bertToken, body: { auth: passwordAuth("bert", bertPw) } });
      assert.equal(del.status, 200);
      const bertNewPw = keep("bert new password", secret("pw-bert-new"));
      assert.equal((await call("POST", "/_matrix/client/v3/account/password", { token: bertToken, body: { new_password: bertNewPw, logout_devices: false, auth: passwordAuth("bert", keep("bert wrong UIA password", secret("pw-uia-wrong"))) } })).status, 401);
      assert.equal((await call("POST", "/_matrix/client/v3/account/password", { token: bertToken, body: { new_password: bertNewPw, logout_devices: false, auth: passwordAuth("bert", bertPw) } })).status, 200);

      // Admin work: password reset, CSV import with passwords, enrollment codes and their use.
      const admin = await call("POST", "/_matrix/client/v3/login", { body: loginBody("root", adminPw) });
      const adminToken = keep("admin access token", admin.body.access_token as string);
      const resetPw = keep("reset password", secret("pw-reset"));
      assert.equal((await call("POST", `${ADMIN}/users/${encodeURIComponent(`@anna:${sn}`)}/password`, { token: adminToken, body: { password: resetPw, logout_devices: false } })).status, 200);
      const csvPw = keep("CSV password", secret("pw-csv"));
      const imported = await call("POST", `${ADMIN}/users/import`, { token: adminToken, rawBody: `carla,Carla,user,${csvPw}\nbad name!,X,user,${csvPw}\n`, headers: { "content-type": "text/csv" } });
      assert.equal(imported.status, 200);
      const created = await call("POST", `${ADMIN}/users`, { token: adminToken, body: { localpart: "dieter", password: keep("created user's password", secret("pw-dieter")) } });
      assert.equal(created.status, 200);
      const code = await call("POST", `${ADMIN}/users/${encodeURIComponent(`@anna:${sn}`)}/enrollment_codes`, { token: adminToken });
      assert.equal(code.status, 200);
      const enrollment = keep("enrollment code", code.body.code as string);
      keep("enrollment code, normalised", enrollment.replace(/-/g, ""));
      const own = await call("POST", "/_revier/client/v1/enrollment_codes", { token: bertToken, body: {} });
      assert.equal(own.status, 200);
      keep("self-issued enrollment code", own.body.code as string);
      assert.equal((await call("PUT", `${ADMIN}/policy`, { token: adminToken, body: { enrollment_required: true } })).status, 200);
      const enrolled = await call("POST", "/_matrix/client/v3/login", { body: loginBody("anna", resetPw, { "org.revier.enrollment_code": enrollment }) });
      assert.equal(enrolled.status, 200, JSON.stringify(enrolled.body));
      keep("enrolled device's token", enrolled.body.access_token as string);
      const wrongCode = await call("POST", "/_matrix/client/v3/login", { body: loginBody("anna", resetPw, { "org.revier.enrollment_code": keep("wrong enrollment code", "ZZZZ-YYYY-XXXX") }) });
      assert.notEqual(wrongCode.status, 200);
      assert.equal((await call("PUT", `${ADMIN}/policy`, { token: adminToken, body: { enrollment_required: false } })).status, 200);
      for (const p of ["/users?limit=50", "/audit?limit=100", "/audit/export", "/stats", "/policy"]) assert.equal((await call("GET", `${ADMIN}${p}`, { token: adminToken })).status, 200, p);

      // Registration with a registration token.
      const regToken = keep("registration token", secret("regtoken"));
      await server.services.storage.db.insertInto("registration_tokens").values({ token_hash: sha256Hex(regToken), uses_allowed: 1, completed: 0, expiry_ts: null, created_ts: Date.now() }).execute();
      assert.equal((await call("GET", `/_matrix/client/v1/register/m.login.registration_token/validity?token=${encodeURIComponent(regToken)}`)).status, 200);
      const reg = await call("POST", "/_matrix/client/v3/register", { body: { username: "neu", password: keep("registered password", secret("pw-neu")), auth: { type: "m.login.registration_token", token: regToken } } });
      assert.equal(reg.status, 200, JSON.stringify(reg.body));
      keep("registered access token", reg.body.access_token as string);

      assert.equal((await call("POST", "/_matrix/client/v3/logout", { token: bertToken })).status, 200);

      // The log is real: every request above left a line with its route pattern and status.
      const text = capture.text();
      const lines = text.split("\n").filter((l) => l.trim() !== "");
      const requests = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === "request");
      assert.ok(requests.length >= 40, `expected the request log, got ${requests.length} lines`);
      assert.ok(requests.some((r) => r.route === "/_matrix/client/v3/login" && r.status === 403));
      assert.ok(requests.some((r) => r.route === "/_revier/admin/v1/users/:userId/enrollment_codes"));
      for (const [label, value] of secrets) {
        assert.ok(!text.includes(value), `${label} appears in the log`);
        // Also not percent-encoded, as it would be in a logged URL.
        assert.ok(!text.includes(encodeURIComponent(value)), `${label} appears URL-encoded in the log`);
      }
      assert.ok(!/[?&]access_token=/.test(text), "no URL with a query token is logged");
      assert.ok(!/"url":/.test(text), "request URLs (with their query strings) are not logged, only route patterns");
    });
  });
}

// Credentials in the bus URL (nats://user:password@host) are secrets too; the start-up warning when
// NATS is unreachable names the URL. SQLite only: the bus does not depend on the database.
describe("credentials in the NATS URL stay out of the log", () => {
  test("an unreachable NATS with credentials: the warning names the host, not the password", async () => {
    const capture = new Capture();
    const dataDir = mkdtempSync(path.join(tmpdir(), "revier-test-"));
    const password = secret("nats-pw");
    const config = loadConfig({}, { port: 0, data_dir: dataDir, log_level: "trace", bus_url: `nats://revier:${password}@127.0.0.1:1` });
    const server = await startServer(config, { log: createLogger(config, capture) });
    try {
      await new Promise((r) => setTimeout(r, 200));
      const text = capture.text();
      assert.match(text, /NATS/, "the log does mention the unreachable bus");
      assert.match(text, /127\.0\.0\.1:1/, "and where it is");
      assert.ok(!text.includes(password), "the NATS password appears in the log");
    } finally {
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
