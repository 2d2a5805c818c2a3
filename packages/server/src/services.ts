import type { Logger } from "pino";
import type { Config } from "./config.js";
import type { Storage } from "./storage/database.js";
import type { Bus } from "./bus/bus.js";
import { StreamWriter } from "./storage/stream.js";
import type { SigningKey } from "./rooms/signing-key.js";
import { Accounts } from "./users/accounts.js";
import { Tokens, type Session } from "./users/tokens.js";
import { Devices } from "./users/devices.js";
import { Uia } from "./users/uia.js";
import { RoomEvents } from "./rooms/room-events.js";
import { Rooms } from "./rooms/rooms.js";
import { Notifier } from "./sync/notifier.js";
import { SyncService } from "./sync/sync.js";
import { Metrics } from "./http/metrics.js";
import { RateLimiter } from "./lib/rate-limiter.js";
import type { RouteSpec } from "./http/route.js";
import type { FastifyRequest } from "fastify";
import type { TSchema } from "@sinclair/typebox";
import { AccountData } from "./users/account-data.js";
import { PushService } from "./push/push-service.js";
import { Ephemeral } from "./rooms/ephemeral.js";
import type { LoginGuard } from "./api/client/session.js";
import type { CreateRoomGuard } from "./api/client/rooms.js";

/** Runs after a token is accepted, before the handler: governance (locks, consent, client version) hooks in here. */
export type AuthHook = (session: Session, ctx: { req: FastifyRequest; route: RouteSpec<TSchema | undefined, TSchema | undefined, TSchema | undefined> }) => Promise<void>;

export interface Services {
  config: Config;
  log: Logger;
  storage: Storage;
  bus: Bus;
  stream: StreamWriter;
  signingKey: SigningKey;
  metrics: Metrics;
  accounts: Accounts;
  tokens: Tokens;
  devices: Devices;
  uia: Uia;
  roomEvents: RoomEvents;
  rooms: Rooms;
  accountData: AccountData;
  push: PushService;
  ephemeral: Ephemeral;
  notifier: Notifier;
  sync: SyncService;
  rateLimits: { login: RateLimiter; register: RateLimiter; send: RateLimiter };
  authHooks: AuthHook[];
  loginGuards: LoginGuard[];
  createRoomGuards: CreateRoomGuard[];
  close(): Promise<void>;
}

/** Builds every service in one place, wiring dependencies downward; nothing is global. */
export function createServices(deps: { config: Config; log: Logger; storage: Storage; bus: Bus; signingKey: SigningKey }): Services {
  const { config, log, storage, bus, signingKey } = deps;
  const db = storage.db;
  const metrics = new Metrics();
  const stream = new StreamWriter(storage, bus);
  const accounts = new Accounts(db, config.serverName);
  const tokens = new Tokens(db, config.tokens.accessTokenLifetimeMs);
  const devices = new Devices(db, tokens, stream);
  const uia = new Uia(db, accounts);
  const roomEvents = new RoomEvents(db, stream, config.serverName, signingKey);
  roomEvents.onPersist(async () => metrics.eventsPersisted.inc());
  const rooms = new Rooms(db, roomEvents, accounts, config.serverName);
  const accountData = new AccountData(db, stream);
  const ephemeral = new Ephemeral(db, stream, accountData);
  const push = new PushService(db, stream, ephemeral);
  roomEvents.onPersist((ctx) => push.recordActions(ctx));
  const notifier = new Notifier(bus, metrics);
  const sync = new SyncService({ db, stream, rooms, accountData, push, ephemeral, notifier, devices });
  const perMinute = (n: number) => new RateLimiter(n / 60, Math.max(1, Math.ceil(n / 6)));
  return {
    config,
    log,
    storage,
    bus,
    stream,
    signingKey,
    metrics,
    accounts,
    tokens,
    devices,
    uia,
    roomEvents,
    rooms,
    accountData,
    push,
    ephemeral,
    notifier,
    sync,
    rateLimits: {
      login: perMinute(config.limits.loginPerMinute),
      register: perMinute(config.limits.registerPerMinute),
      send: new RateLimiter(config.limits.sendPerSecond, config.limits.sendBurst),
    },
    authHooks: [],
    loginGuards: [],
    createRoomGuards: [],
    async close() {
      notifier.close();
      await bus.close();
      await storage.close();
    },
  };
}
