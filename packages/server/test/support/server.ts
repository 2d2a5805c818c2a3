import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import pino from "pino";
import { loadConfig, type Config } from "../../src/config.js";
import { startServer, type RunningServer } from "../../src/server.js";
import { createScratchDatabase, type DbKind } from "./databases.js";

export interface TestServer extends RunningServer {
  config: Config;
  dataDir: string;
  /** Creates an account directly (as `revier user create` does) and returns its user id. */
  createUser(localpart: string, password?: string, role?: "admin" | "user"): Promise<string>;
  /** Logs in over HTTP and returns the login response. */
  login(localpart: string, password?: string, extra?: Record<string, unknown>): Promise<{ user_id: string; access_token: string; device_id: string; refresh_token?: string }>;
  /** Stops and starts the server on the same data (restart test). */
  restart(): Promise<TestServer>;
  /** Stops the server and removes its data. */
  destroy(): Promise<void>;
}

export const TEST_PASSWORD = "correct horse battery";

/** Rate limits raised so that tests which do not exercise them never trip them under load. */
export const UNLIMITED: Record<string, number> = {
  "limits.login_per_minute": 100000,
  "limits.register_per_minute": 100000,
  "limits.send_per_second": 100000,
  "limits.send_burst": 100000,
  "limits.writes_per_second": 100000,
  "limits.writes_burst": 100000,
};

/** Starts a real server on an ephemeral port with its own data dir (and database, for PostgreSQL). */
export async function startTestServer(kind: DbKind = "sqlite", overrides: Record<string, unknown> = {}, reuse?: { dataDir: string; databaseUrl: string | null; drop?: () => Promise<void> }): Promise<TestServer> {
  const dataDir = reuse?.dataDir ?? mkdtempSync(path.join(tmpdir(), "revier-test-"));
  let databaseUrl = reuse?.databaseUrl ?? null;
  let drop = reuse?.drop;
  if (kind === "postgres" && !databaseUrl) {
    const scratch = await createScratchDatabase();
    databaseUrl = scratch.url;
    drop = scratch.drop;
  }
  const config = loadConfig(
    {},
    {
      port: 0,
      data_dir: dataDir,
      database_url: databaseUrl,
      log_level: "silent",
      ...UNLIMITED,
      ...overrides,
    },
  );
  const running = await startServer(config, { log: pino({ level: "silent" }) });
  const server: TestServer = {
    ...running,
    config,
    dataDir,
    async createUser(localpart, password = TEST_PASSWORD, role = "user") {
      const u = await running.services.accounts.create(localpart, { password, role });
      return u.user_id;
    },
    async login(localpart, password = TEST_PASSWORD, extra = {}) {
      const res = await fetch(`${running.url}/_matrix/client/v3/login`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: localpart }, password, ...extra }),
      });
      const body = (await res.json()) as { user_id: string; access_token: string; device_id: string; refresh_token?: string; errcode?: string; error?: string };
      if (res.status !== 200) throw new Error(`login ${localpart} failed: ${res.status} ${JSON.stringify(body)}`);
      return body;
    },
    async restart() {
      await running.stop();
      return startTestServer(kind, overrides, { dataDir, databaseUrl, ...(drop ? { drop } : {}) });
    },
    async destroy() {
      await running.stop();
      rmSync(dataDir, { recursive: true, force: true });
      await drop?.();
    },
  };
  return server;
}
