import path from "node:path";
import { mkdirSync } from "node:fs";
import pino, { type Logger } from "pino";
import type { FastifyInstance } from "fastify";
import type { Config } from "./config.js";
import { migrate, openPostgres, openSqlite, type Storage } from "./storage/database.js";
import { LocalBus } from "./bus/local.js";
import { NatsBus, loggableUrl } from "./bus/nats.js";
import type { Bus } from "./bus/bus.js";
import { loadOrCreateSigningKey } from "./rooms/signing-key.js";
import { loadOrCreateVapidKeys } from "./push/web-push.js";
import { createServices, type Services } from "./services.js";
import { buildApp } from "./http/app.js";
import { startSweepers } from "./sweepers.js";
import { prepareDummyHash } from "./users/passwords.js";

export function openStorage(config: Config, log?: Logger): Storage {
  if (config.databaseUrl) return openPostgres(config.databaseUrl);
  const onCheckpointError = log ? (message: string) => log.error({ err: message }, "SQLite log checkpoint failed; the writer checkpoints itself once the log passes its backstop") : undefined;
  const onLogSyncFailure = log ? (err: Error) => log.fatal({ err: err.message }, "SQLite log sync failed; writes are refused until the server restarts") : undefined;
  return openSqlite(path.join(config.dataDir, "revier.db"), { ...(onCheckpointError ? { onCheckpointError } : {}), ...(onLogSyncFailure ? { onLogSyncFailure } : {}) });
}

/** The server's logger; `destination` defaults to stdout (tests capture the output to scan it for secrets). */
export function createLogger(config: Config, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level: config.logLevel,
    // Defence in depth: nothing we log should carry these, but if it ever does, pino blanks it.
    redact: { paths: ["*.password", "*.access_token", "*.refresh_token", "*.authorization", "headers.authorization", "*.token"], censor: "[redacted]" },
  };
  return destination ? pino(options, destination) : pino(options);
}

export interface RunningServer {
  services: Services;
  app: FastifyInstance;
  url: string;
  stop(): Promise<void>;
}

/** Opens storage, migrates, builds services and the HTTP app, and listens. */
export async function startServer(config: Config, opts: { log?: Logger; bus?: Bus; storage?: Storage } = {}): Promise<RunningServer> {
  const log = opts.log ?? createLogger(config);
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const storage = opts.storage ?? openStorage(config, log);
  await migrate(storage);
  const signingKey = loadOrCreateSigningKey(path.join(config.dataDir, "signing.key"));
  const bus = opts.bus ?? (config.busUrl ? await openNatsBus(config.busUrl, log) : new LocalBus());
  // Web Push subscriptions are bound to this key pair; it is created on first start (mode 0600).
  const vapidKeys = loadOrCreateVapidKeys(path.join(config.dataDir, "vapid.json"));
  const services = createServices({ config, log, storage, bus, signingKey, vapidKeys });
  // From here on the notifier knows which positions it has heard of (idle long-polls answer
  // without a lookup, see Notifier.quietThrough).
  const readPosition = () => services.stream.current();
  services.notifier.start(await readPosition(), readPosition);
  const app = await buildApp(services);
  await prepareDummyHash();
  const stopSweepers = startSweepers(services);
  await app.listen({ host: config.bind, port: config.port });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : config.port;
  const host = config.bind.includes(":") ? `[${config.bind}]` : config.bind;
  const url = `${config.tls.certFile !== null ? "https" : "http"}://${host}:${port}`;
  let stopping: Promise<void> | null = null;
  return {
    services,
    app,
    url,
    stop: () =>
      (stopping ??= (async () => {
        // Long-polls return first so closing the listener does not wait for their timeouts.
        stopSweepers();
        services.notifier.close();
        // In-flight requests get most of the grace period to finish. After that every connection
        // is cut: clients open spare keep-alive sockets that never carry a request, and Node counts
        // those as busy, so a plain close would wait for its headers timeout (about a minute).
        const cutoff = setTimeout(() => app.server.closeAllConnections(), Math.max(0, config.shutdownGraceMs - 1000));
        cutoff.unref();
        try {
          await app.close();
        } finally {
          clearTimeout(cutoff);
        }
        // Uploads cut off above remove their temporary files before the process goes (bounded).
        await Promise.race([services.media.blobs.settle?.(), new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
        await services.close();
      })()),
  };
}

/**
 * Several processes share wake-ups over NATS. Start-up waits a moment for the connection so the
 * first writes already reach the other processes, but an unreachable NATS never stops this process
 * from serving its own clients: the bus keeps retrying in the background.
 */
async function openNatsBus(url: string, log: Logger): Promise<Bus> {
  const bus = new NatsBus(url, log.child({ module: "bus" }));
  if (!(await bus.waitConnected(3000))) log.warn({ url: loggableUrl(url) }, "starting without NATS; wake-ups from other processes resume once it is reachable");
  return bus;
}
