import path from "node:path";
import type { Logger } from "pino";
import type { Config } from "./config.js";
import type { Storage } from "./storage/database.js";
import type { Bus } from "./bus/bus.js";
import { StreamWriter } from "./storage/stream.js";
import type { SigningKey } from "./rooms/signing-key.js";
import { Accounts } from "./users/accounts.js";
import { Tokens, type Session } from "./users/tokens.js";
import { SessionCache } from "./users/session-cache.js";
import { Devices } from "./users/devices.js";
import { lastSeenHook } from "./users/last-seen.js";
import { addressMatcher } from "./lib/address-list.js";
import { KeyedLock } from "./lib/keyed-lock.js";
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
import { createE2ee, type E2ee } from "./e2ee/index.js";
import { AuditLog } from "./governance/audit.js";
import { PolicyStore } from "./governance/policy.js";
import { Governance } from "./governance/governance.js";
import { governanceAuthHook, governanceLoginGuards } from "./governance/hooks.js";
import { enrollmentLoginFlow, enrollmentUiaStage } from "./governance/hooks.js";
import { Terms, termsAuthHook } from "./governance/terms.js";
import type { LoginFlowExtension } from "./api/client/session.js";
import { ENROLLMENT_UIA_STAGE } from "@revier/protocol";
import { DiskBlobStore } from "./media/blob-store.js";
import { MediaService } from "./media/media.js";
import { Thumbnailer } from "./media/thumbnails.js";
import type { PublishRoomGuard, RoomPublishedHook } from "./api/client/rooms.js";
import { Channels, channelCreateRoomGuard, channelPublishGuard, channelPublishedHook } from "./governance/channels.js";
import { Retention } from "./governance/retention.js";
import { PushDelivery } from "./push/delivery.js";
import { WebPushSender, type VapidKeys } from "./push/web-push.js";
import { PushDestinations } from "./push/destinations.js";
import { DutyService } from "./governance/duty.js";

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
  e2ee: E2ee;
  media: MediaService;
  /** Push delivery worker (HTTP pushers and Web Push); started with the sweepers. */
  pushDelivery: PushDelivery;
  /** Web Push with the server's VAPID keys; null where none were loaded (CLI commands). */
  webPush: WebPushSender | null;
  pushDestinations: PushDestinations;
  duty: DutyService;
  rateLimits: { login: RateLimiter; register: RateLimiter; send: RateLimiter; writes: RateLimiter };
  /** Serialises each user's logins (device-limit check and device creation) within this process. */
  loginLock: KeyedLock;
  /** Whether a client address may read /metrics (`metrics_allow_from`). */
  metricsAccess: (address: string) => boolean;
  authHooks: AuthHook[];
  loginGuards: LoginGuard[];
  createRoomGuards: CreateRoomGuard[];
  /** Run before a room is made public (directory or join rule); may refuse (channel policy). */
  publishRoomGuards: PublishRoomGuard[];
  /** Run after a room was listed in the directory (records the channel owner). */
  roomPublishedHooks: RoomPublishedHook[];
  loginFlowExtensions: LoginFlowExtension[];
  audit: AuditLog;
  policy: PolicyStore;
  governance: Governance;
  channels: Channels;
  retention: Retention;
  terms: Terms;
  close(): Promise<void>;
}

/** Builds every service in one place, wiring dependencies downward; nothing is global. */
export function createServices(deps: { config: Config; log: Logger; storage: Storage; bus: Bus; signingKey: SigningKey; vapidKeys?: VapidKeys }): Services {
  const { config, log, storage, bus, signingKey } = deps;
  const db = storage.db;
  const metrics = new Metrics();
  storage.logSyncer?.observe((seconds) => metrics.logSyncs.observe(seconds));
  const stream = new StreamWriter(storage, bus, { onBatch: (run) => metrics.streamBatches.inc({ run }) });
  const sessions = new SessionCache(db);
  const accounts = new Accounts(db, config.serverName, sessions);
  const tokens = new Tokens(db, config.tokens.accessTokenLifetimeMs, sessions);
  const devices = new Devices(db, tokens, stream);
  // Password attempts in user-interactive auth share the login limit (keyed per user).
  const uia = new Uia(db, accounts, () => services.rateLimits.login);
  const roomEvents = new RoomEvents(db, storage.dialect, stream, config.serverName, signingKey);
  roomEvents.onCommitted((count) => metrics.eventsPersisted.inc(count));
  const rooms = new Rooms(db, roomEvents, accounts, config.serverName, stream);
  const accountData = new AccountData(db, stream);
  const ephemeral = new Ephemeral(db, stream, accountData);
  const push = new PushService(db, stream, bus);
  roomEvents.onPersist((ctx) => push.recordActions(ctx));
  const notifier = new Notifier(bus, metrics);
  const sync = new SyncService({ db, stream, rooms, accountData, push, ephemeral, notifier, devices });
  const e2ee = createE2ee({ storage, stream, serverName: config.serverName, notifier });
  sync.extend(e2ee.syncExtension);
  devices.onRemoved(e2ee.onDeviceRemoved);
  devices.onRemoved((userId, deviceId) => push.removeDevicePushers(userId, deviceId));
  const blobs = new DiskBlobStore(path.join(config.dataDir, "media"), {
    onStorageError: (err) => log.error({ code: err.osCode, syscall: err.syscall, reason: err.reason }, "media storage refused a write; uploads fail until it is fixed"),
  });
  blobs.sweepTemp().catch((err: Error) => log.warn({ err: err.message }, "could not sweep unfinished uploads"));
  // 50 megapixels covers every camera's default output; larger images get no thumbnail.
  const media = new MediaService(db, storage.dialect, blobs, new Thumbnailer(50_000_000), config.media);
  const audit = new AuditLog(db, stream);
  const policy = new PolicyStore(db, audit);
  const governance = new Governance(db, accounts, devices, audit);
  const channels = new Channels(db, rooms, roomEvents, accounts, policy, audit);
  // Inside every event write: tracks public join rules and refuses entering closed channels atomically.
  roomEvents.onPersist(channels.persistHook);
  rooms.onMembershipChange(channels.membershipGuard);
  const retention = new Retention(db, stream, rooms, media, policy, audit, config.serverName);
  const webPush = deps.vapidKeys ? new WebPushSender(deps.vapidKeys, config.push.vapidSubject) : null;
  const pushDestinations = new PushDestinations(config.push.gatewayAllowlist);
  const pushDelivery = new PushDelivery({ storage, stream, bus, log: log.child({ module: "push" }), webPush, includeContent: config.push.includeContent, destinations: pushDestinations });
  push.onNotifications((ctx) => pushDelivery.noteNotifications(ctx.event.streamOrdering));
  const duty = new DutyService(db, ephemeral, policy);
  const terms = new Terms(db, accounts, audit, policy, config.publicBaseUrl);
  const perMinute = (n: number) => new RateLimiter(n / 60, Math.max(1, Math.ceil(n / 6)));
  const services: Services = {
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
    e2ee,
    media,
    pushDelivery,
    webPush,
    pushDestinations,
    duty,
    rateLimits: {
      login: perMinute(config.limits.loginPerMinute),
      register: perMinute(config.limits.registerPerMinute),
      send: new RateLimiter(config.limits.sendPerSecond, config.limits.sendBurst),
      writes: new RateLimiter(config.limits.writesPerSecond, config.limits.writesBurst),
    },
    loginLock: new KeyedLock(),
    metricsAccess: addressMatcher(config.metricsAllowFrom),
    authHooks: [],
    loginGuards: [],
    createRoomGuards: [],
    publishRoomGuards: [],
    roomPublishedHooks: [],
    loginFlowExtensions: [],
    audit,
    policy,
    governance,
    channels,
    retention,
    terms,
    async close() {
      await pushDelivery.stop();
      notifier.close();
      await bus.close();
      await storage.close();
    },
  };
  // Governance hooks in at the edges; core modules never import it.
  services.authHooks.push(governanceAuthHook(services));
  services.authHooks.push(lastSeenHook(devices));
  services.loginGuards.push(...governanceLoginGuards());
  services.createRoomGuards.push(channelCreateRoomGuard, retention.createRoomGuard);
  services.publishRoomGuards.push(channelPublishGuard);
  services.roomPublishedHooks.push(channelPublishedHook);
  // Duty hours: off duty pins presence and silences pushes (except opted-in emergency rooms).
  ephemeral.setPresenceOverride(
    (userId) => duty.presenceOverride(userId),
    (userId) => duty.presenceOverrideNow(userId),
  );
  pushDelivery.addFilter((userIds) => duty.silencer(userIds));
  // After the governance hook, so a locked account hears M_USER_LOCKED rather than a consent request.
  services.authHooks.push(termsAuthHook(services));
  services.loginFlowExtensions.push(enrollmentLoginFlow);
  uia.registerStage(ENROLLMENT_UIA_STAGE, enrollmentUiaStage(services));
  return services;
}
