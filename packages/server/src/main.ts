import { readFileSync } from "node:fs";
import { ConfigError, describeSettings, loadConfig, type Config } from "./config.js";
import { createLogger, openStorage, startServer } from "./server.js";
import { migrate } from "./storage/database.js";
import { LocalBus } from "./bus/local.js";
import { loadOrCreateSigningKey } from "./rooms/signing-key.js";
import { createServices, type Services } from "./services.js";
import { deactivateAccount } from "./api/client/account.js";
import path from "node:path";
import { userInfo } from "node:os";
import type { Actor } from "./governance/policy.js";
import { isRole } from "./governance/roles.js";
import { createBackup, restoreBackup } from "./ops/backup.js";
import { portDb } from "./ops/port-db.js";

const USAGE = `Usage: revier <command>

  serve                                   run the server (what \`npm start\` does)
  migrate                                 apply database migrations
  user create <localpart> [--admin] [--password-stdin]
  user list
  user deactivate <user>
  user reset-password <user> [--password-stdin]
  user import <file.csv>                  create users from rows localpart,displayname,role,password
  user role <user> <admin|helpdesk|dpo|user>
  user enrollment-code <user>             one-time code for enrolling a new device (15 minutes)
  policy get                              print the organisation policy
  policy set <key=value>...               change policy fields (values are JSON, or plain strings)
  audit verify                            recompute the audit log's hash chain
  audit export                            print the audit log as JSON Lines
  config                                  list settings and their environment variables
  backup <dir>                            consistent online copy of database, signing key and media
  restore <dir> [--force]                 restore a backup into an empty data dir and database
  port-db --to <postgres://…>             move a SQLite installation to an empty PostgreSQL database

Settings come from REVIER_CONFIG (a YAML file) and REVIER_* environment variables.`;

async function readPassword(fromStdin: boolean, prompt: string): Promise<string> {
  if (fromStdin || !process.stdin.isTTY) {
    const text = readFileSync(0, "utf8");
    return text.replace(/\r?\n$/, "");
  }
  const { createInterface } = await import("node:readline/promises");
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  // Hide typed characters: readline echoes through _writeToOutput.
  (rl as unknown as { _writeToOutput: (s: string) => void })._writeToOutput = () => undefined;
  process.stderr.write(prompt);
  const answer = await rl.question("");
  rl.close();
  process.stderr.write("\n");
  return answer;
}

async function withServices<T>(config: Config, fn: (s: Services) => Promise<T>): Promise<T> {
  const storage = openStorage(config);
  await migrate(storage);
  const signingKey = loadOrCreateSigningKey(path.join(config.dataDir, "signing.key"));
  const s = createServices({ config, log: createLogger({ ...config, logLevel: "warn" }), storage, bus: new LocalBus(), signingKey });
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

function fail(message: string): never {
  console.error(`revier: ${message}`);
  process.exit(1);
}

export async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (!command || command === "help" || command === "--help" || command === "-h") {
    console.log(USAGE);
    return;
  }
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
  switch (command) {
    case "serve":
      return serve(config);
    case "migrate": {
      const storage = openStorage(config);
      const applied = await migrate(storage);
      await storage.close();
      console.log(applied.length ? `applied: ${applied.join(", ")}` : "database is up to date");
      return;
    }
    case "config":
      for (const s of describeSettings()) console.log(`${s.key.padEnd(34)} ${s.env.padEnd(36)} default: ${JSON.stringify(s.default)}`);
      return;
    case "user":
      return userCommand(config, rest);
    case "policy":
      return policyCommand(config, rest);
    case "backup":
    case "restore":
    case "port-db":
      return opsCommand(config, command, rest);
    case "audit":
      return auditCommand(config, rest);
    default:
      console.error(USAGE);
      fail(`unknown command ${command}`);
  }
}

async function userCommand(config: Config, args: string[]): Promise<void> {
  const [sub, target, ...flags] = args;
  await withServices(config, async (s) => {
    switch (sub) {
      case "create": {
        if (!target) fail("user create needs a localpart");
        const password = await readPassword(flags.includes("--password-stdin"), `Password for ${target}: `);
        const user = await s.accounts.create(target.toLowerCase(), { password, role: flags.includes("--admin") ? "admin" : "user" });
        await s.audit.record({ ...cliActor(), action: "user.create", target: user.user_id, details: { role: user.role, with_password: true } });
        console.log(`created ${user.user_id}${user.role === "admin" ? " (admin)" : ""}`);
        return;
      }
      case "list": {
        for (const u of await s.accounts.list({ limit: 100000 })) {
          console.log([u.user_id, u.role, u.deactivated ? "deactivated" : u.locked ? "locked" : "active"].join("\t"));
        }
        return;
      }
      case "deactivate": {
        const userId = target ? s.accounts.resolveUserId(target) : null;
        if (!userId || !(await s.accounts.get(userId))) fail(`no such user: ${target ?? ""}`);
        await deactivateAccount(s, userId);
        await s.audit.record({ ...cliActor(), action: "user.deactivate", target: userId });
        console.log(`deactivated ${userId}`);
        return;
      }
      case "reset-password": {
        const userId = target ? s.accounts.resolveUserId(target) : null;
        if (!userId || !(await s.accounts.get(userId))) fail(`no such user: ${target ?? ""}`);
        const password = await readPassword(flags.includes("--password-stdin"), `New password for ${userId}: `);
        await s.governance.resetPassword(cliActor(), userId, password, true);
        console.log(`password reset for ${userId}; all devices signed out and removed`);
        return;
      }
      case "import": {
        if (!target) fail("user import needs a CSV file");
        const result = await s.governance.importCsv(cliActor(), readFileSync(target, "utf8"));
        for (const r of result.rows) console.log(r.user_id ? `line ${r.line}: created ${r.user_id}` : `line ${r.line}: ${r.localpart || "(empty)"}: ${r.error ?? ""}`);
        console.log(`${result.created} created, ${result.failed} failed`);
        if (result.failed > 0) process.exitCode = 1;
        return;
      }
      case "role": {
        const role = flags[0];
        if (!target || !role || !isRole(role)) fail("usage: revier user role <user> <admin|helpdesk|dpo|user>");
        await s.governance.setRole(cliActor(), target, role);
        console.log(`${s.accounts.resolveUserId(target) ?? target} is now ${role}`);
        return;
      }
      case "enrollment-code": {
        if (!target) fail("user enrollment-code needs a user");
        const { code, expires_ts } = await s.governance.issueEnrollmentCode(cliActor(), target);
        console.log(`${code}\t(valid until ${new Date(expires_ts).toISOString()})`);
        return;
      }
      default:
        fail(`unknown user command ${sub ?? ""}\n${USAGE}`);
    }
  }).catch((err: unknown) => {
    if (err instanceof Error && err.name === "MatrixError") fail(err.message);
    throw err;
  });
}

/** Host actions are audited under the operating-system account that ran them. */
function cliActor(): Actor {
  let name: string;
  try {
    name = userInfo().username;
  } catch {
    // Containers may run under a uid with no passwd entry.
    name = process.env.USER ?? `uid-${process.getuid?.() ?? "unknown"}`;
  }
  return { actor: `cli:${name}`, actorRole: "cli" };
}

function cliValue(raw: string): unknown {
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return raw;
  }
}

async function policyCommand(config: Config, args: string[]): Promise<void> {
  const [sub, ...pairs] = args;
  await withServices(config, async (s) => {
    if (sub === "get") {
      console.log(JSON.stringify(await s.policy.fresh(), null, 2));
      return;
    }
    if (sub === "set" && pairs.length > 0) {
      const next: Record<string, unknown> = { ...(await s.policy.fresh()) };
      for (const pair of pairs) {
        const eq = pair.indexOf("=");
        if (eq <= 0) fail(`expected key=value, got '${pair}'`);
        next[pair.slice(0, eq)] = cliValue(pair.slice(eq + 1));
      }
      console.log(JSON.stringify(await s.policy.set(next, cliActor()), null, 2));
      return;
    }
    fail("usage: revier policy get | revier policy set key=value...");
  }).catch((err: unknown) => {
    if (err instanceof Error && err.name === "MatrixError") fail(err.message);
    throw err;
  });
}

async function auditCommand(config: Config, args: string[]): Promise<void> {
  await withServices(config, async (s) => {
    if (args[0] === "verify") {
      const result = await s.audit.verify();
      if (result.ok) {
        console.log(`audit log intact: ${result.entries} entries`);
        return;
      }
      fail(`audit log broken at entry ${result.first_broken?.seq ?? "?"}: ${result.first_broken?.reason ?? ""}`);
    }
    if (args[0] === "export") {
      let bytes = 0;
      for await (const line of s.audit.exportJsonl()) {
        bytes += Buffer.byteLength(line);
        process.stdout.write(line);
      }
      await s.audit.record({ ...cliActor(), action: "audit.export", target: null, details: { bytes } });
      return;
    }
    fail("usage: revier audit verify | revier audit export");
  });
}

async function serve(config: Config): Promise<void> {
  const log = createLogger(config);
  let server;
  try {
    server = await startServer(config, { log });
  } catch (err) {
    log.fatal({ err: { message: (err as Error).message } }, "could not start");
    process.exit(1);
  }
  log.info({ url: server.url, serverName: config.serverName, database: config.databaseUrl ? "postgres" : "sqlite", dataDir: config.dataDir }, "Revier is listening");
  if ((await server.services.accounts.count()) === 0) {
    log.warn("No users yet. Create the first administrator with: npx revier user create <name> --admin");
  }
  const shutdown = (signal: string) => {
    log.info({ signal }, "shutting down");
    const timer = setTimeout(() => {
      log.error("shutdown grace period exceeded; exiting");
      process.exit(1);
    }, config.shutdownGraceMs);
    timer.unref();
    server
      .stop()
      .then(() => process.exit(0))
      .catch((err: unknown) => {
        log.error({ err: { message: (err as Error).message } }, "error during shutdown");
        process.exit(1);
      });
  };
  process.once("SIGTERM", () => shutdown("SIGTERM"));
  process.once("SIGINT", () => shutdown("SIGINT"));
}

async function opsCommand(config: Config, command: string, args: string[]): Promise<void> {
  const say = (line: string) => console.error(line);
  const positional = args.filter((a) => !a.startsWith("--"));
  try {
    if (command === "backup") {
      if (positional.length !== 1) fail("usage: revier backup <dir>");
      const m = await createBackup(config, positional[0]!, cliActor(), say);
      console.log(`backup written to ${positional[0]}: ${m.tables.length} tables, ${m.tables.reduce((n, t) => n + t.rows, 0)} rows, ${m.media.files} media files, stream position ${m.stream_position}`);
      if (m.media.missing.length > 0 || m.media.corrupt.length > 0) console.log(`warning: ${m.media.missing.length} media blobs referenced but missing, ${m.media.corrupt.length} corrupt (listed in manifest.json)`);
    } else if (command === "restore") {
      if (positional.length !== 1) fail("usage: revier restore <dir> [--force]");
      const r = await restoreBackup(config, positional[0]!, { force: args.includes("--force"), actor: cliActor() }, say);
      console.log(`restored ${r.tables} tables, ${r.rows} rows, ${r.mediaFiles} media files; ${r.fixups.oneTimeKeysDropped} one-time keys dropped, ${r.fixups.fallbackKeysMarked} fallback keys marked used; stream position ${r.fixups.streamBefore} -> ${r.fixups.streamAfter}`);
    } else {
      const i = args.indexOf("--to");
      const to = i >= 0 ? args[i + 1] : args.find((a) => a.startsWith("--to="))?.slice(5);
      if (!to) fail("usage: revier port-db --to postgres://…");
      const r = await portDb(config, to, cliActor(), (line) => console.log(line));
      console.log(`ported ${r.tables.length} tables, ${r.tables.reduce((n, t) => n + t.rows, 0)} rows to PostgreSQL; now set REVIER_DATABASE_URL and keep the data directory (signing key, media)`);
    }
  } catch (err) {
    fail((err as Error).message);
  }
}
