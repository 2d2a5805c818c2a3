import { readFileSync } from "node:fs";
import { ConfigError, describeSettings, loadConfig, type Config } from "./config.js";
import { createLogger, openStorage, startServer } from "./server.js";
import { migrate } from "./storage/database.js";
import { LocalBus } from "./bus/local.js";
import { loadOrCreateSigningKey } from "./rooms/signing-key.js";
import { createServices, type Services } from "./services.js";
import { deactivateAccount } from "./api/client/account.js";
import path from "node:path";

const USAGE = `Usage: revier <command>

  serve                                   run the server (what \`npm start\` does)
  migrate                                 apply database migrations
  user create <localpart> [--admin] [--password-stdin]
  user list
  user deactivate <user>
  user reset-password <user> [--password-stdin]
  config                                  list settings and their environment variables

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
        console.log(`deactivated ${userId}`);
        return;
      }
      case "reset-password": {
        const userId = target ? s.accounts.resolveUserId(target) : null;
        if (!userId || !(await s.accounts.get(userId))) fail(`no such user: ${target ?? ""}`);
        const password = await readPassword(flags.includes("--password-stdin"), `New password for ${userId}: `);
        await s.accounts.setPassword(userId, password);
        await s.tokens.revokeAll(userId);
        console.log(`password reset for ${userId}; all sessions logged out`);
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
