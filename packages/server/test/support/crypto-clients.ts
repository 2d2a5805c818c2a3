/**
 * End-to-end encryption test support: matrix-js-sdk clients with the Rust crypto stack, and
 * hand-made device and cross-signing keys for tests that speak raw HTTP.
 */
import { generateKeyPairSync, randomBytes, sign as edSign, type KeyObject } from "node:crypto";
import * as RustCrypto from "@matrix-org/matrix-sdk-crypto-wasm";
import { canonicalJson } from "../../src/lib/canonical-json.js";
import { logger as sdkRootLogger, type Logger } from "matrix-js-sdk/lib/logger.js";
import { CryptoEvent } from "matrix-js-sdk/lib/crypto-api/index.js";
import { VerificationPhase, VerifierEvent, type ShowSasCallbacks, type VerificationRequest } from "matrix-js-sdk/lib/crypto-api/verification.js";
import { sdk, waitFor, type Client } from "./sdk.js";
import type { TestServer } from "./server.js";
import { TEST_PASSWORD } from "./server.js";

/** Key objects as tests poke at them; `any` keeps deep property access in assertions terse. */
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

// ---- matrix-js-sdk with Rust crypto -------------------------------------------------------------

export interface CryptoClient {
  client: Client;
  userId: string;
  deviceId: string;
  accessToken: string;
  /** Secret storage keys this client created or was given, by key id. */
  secretStorageKeys: Map<string, Uint8Array>;
  /** Every request other than GET this client made, oldest first (to see what it sent to whom). */
  sent: SentRequest[];
  stop(): void;
}

export interface SentRequest {
  method: string;
  path: string;
  body: unknown;
}

type MethodFactory = (this: unknown, methodName: string, level: number, loggerName: string | symbol) => (...msg: unknown[]) => void;

// The SDK's crypto code logs through child loggers of its root logger, created per room at debug
// level; they copy the root's method factory when created, so this keeps all but errors quiet.
{
  const root = sdkRootLogger as unknown as { methodFactory: MethodFactory; rebuild(): void };
  const original = root.methodFactory;
  root.methodFactory = function (this: unknown, methodName, level, loggerName) {
    return methodName === "error" ? original.call(this, methodName, level, loggerName) : () => undefined;
  };
  root.rebuild();
}

/** Keeps matrix-js-sdk's chatter out of the test output but lets errors through. */
const quietLogger: Logger = {
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: (...msg: unknown[]) => console.error(...msg),
  getChild: () => quietLogger,
};

/** Auth for user-interactive auth prompts (cross-signing reset, device deletion). */
export function passwordAuth(userId: string, password = TEST_PASSWORD): Record<string, unknown> {
  return { type: "m.login.password", identifier: { type: "m.id.user", user: userId }, password };
}

/**
 * Logs in as a new device and starts a syncing client with Rust crypto (in-memory store). Secret
 * storage keys are kept in memory so the client can open secret storage once given its key.
 */
export async function startCryptoClient(server: TestServer, localpart: string, opts: { secretStorageKeys?: Map<string, Uint8Array>; deviceName?: string } = {}): Promise<CryptoClient> {
  const login = await server.login(localpart, TEST_PASSWORD, opts.deviceName ? { initial_device_display_name: opts.deviceName } : {});
  const secretStorageKeys = new Map(opts.secretStorageKeys ?? []);
  const sent: SentRequest[] = [];
  const recordingFetch: typeof fetch = async (input, init) => {
    const method = init?.method ?? "GET";
    if (method !== "GET") {
      const url = new URL(typeof input === "string" ? input : input instanceof URL ? input.href : input.url);
      let body: unknown = init?.body;
      try {
        body = typeof body === "string" ? JSON.parse(body) : body;
      } catch {
        // not JSON: keep as is
      }
      sent.push({ method, path: url.pathname, body });
    }
    return fetch(input, init);
  };
  const client = sdk.createClient({
    baseUrl: server.url,
    fetchFn: recordingFetch,
    logger: quietLogger,
    accessToken: login.access_token,
    userId: login.user_id,
    deviceId: login.device_id,
    cryptoCallbacks: {
      getSecretStorageKey: async ({ keys }) => {
        for (const id of Object.keys(keys)) {
          const key = secretStorageKeys.get(id);
          if (key) return [id, key];
        }
        return null;
      },
      cacheSecretStorageKey: (keyId, _info, key) => {
        secretStorageKeys.set(keyId, key);
      },
    },
  });
  await client.initRustCrypto({ useIndexedDB: false });
  // initRustCrypto turns the Rust side's tracing on at debug level for the whole process; keep
  // only warnings so test output stays readable.
  new RustCrypto.Tracing(RustCrypto.LoggerLevel.Warn).turnOn();
  const ready = new Promise<void>((resolve, reject) => {
    const onSync = (state: string, _prev: unknown, data?: { error?: Error }) => {
      if (state === "PREPARED" || state === "SYNCING") {
        client.off(sdk.ClientEvent.Sync, onSync);
        resolve();
      } else if (state === "ERROR") {
        client.off(sdk.ClientEvent.Sync, onSync);
        reject(data?.error ?? new Error("sync failed"));
      }
    };
    client.on(sdk.ClientEvent.Sync, onSync);
  });
  // Short long-polls keep teardown quick: a stopped client's last /sync stays open on the server
  // until its timeout, and the test server waits for it before it stops.
  await client.startClient({ initialSyncLimit: 20, lazyLoadMembers: false, pollTimeout: 5_000 });
  await ready;
  return {
    client,
    userId: login.user_id,
    deviceId: login.device_id,
    accessToken: login.access_token,
    secretStorageKeys,
    sent,
    stop: () => client.stopClient(),
  };
}

/**
 * Closes the sockets the stopped clients left open. Their HTTP agent opens spare connections that
 * never carry a request; Node's server.close() does not count those as idle and waits for the
 * headers timeout (about a minute) before it lets the test server stop.
 */
export function dropClientConnections(server: TestServer): void {
  server.app.server.closeAllConnections();
}

/** Creates a room with encryption on from the start and has every invitee join it. */
export async function createEncryptedRoom(creator: CryptoClient, members: CryptoClient[], opts: { direct?: boolean } = {}): Promise<string> {
  const invite = [...new Set(members.map((m) => m.userId).filter((u) => u !== creator.userId))];
  const { room_id: roomId } = await creator.client.createRoom({
    preset: opts.direct ? sdk.Preset.TrustedPrivateChat : sdk.Preset.PrivateChat,
    is_direct: opts.direct === true,
    invite,
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
  });
  const joined = new Set<string>([creator.userId]);
  for (const m of members) {
    if (joined.has(m.userId)) continue;
    await waitFor(`${m.userId} sees the invite`, () => m.client.getRoom(roomId)?.getMyMembership() === "invite");
    await m.client.joinRoom(roomId);
    joined.add(m.userId);
  }
  for (const m of [creator, ...members]) {
    await waitFor(`${m.userId}/${m.deviceId} sees everyone joined`, () => {
      const room = m.client.getRoom(roomId);
      return room !== null && room.getMyMembership() === "join" && [...joined].every((u) => room.getMember(u)?.membership === "join");
    });
    await waitFor(`${m.userId}/${m.deviceId} knows the room is encrypted`, () => m.client.getCrypto()!.isEncryptionEnabledInRoom(roomId));
  }
  return roomId;
}

/** Text bodies of the room's messages as this client sees them, decrypted where it could. */
export function decryptedBodies(c: CryptoClient, roomId: string): string[] {
  const room = c.client.getRoom(roomId);
  if (!room) return [];
  return room
    .getLiveTimeline()
    .getEvents()
    .filter((e) => e.getType() === "m.room.message" && !e.isDecryptionFailure())
    .map((e) => String(e.getContent().body ?? ""));
}

/** The live timeline event with this id, once the client has it. */
export function timelineEvent(c: CryptoClient, roomId: string, eventId: string): sdk.MatrixEvent | undefined {
  return c.client.getRoom(roomId)?.findEventById(eventId);
}

/** Waits until the client shows `body` as a decrypted message in the room. */
export async function waitForDecrypted(c: CryptoClient, roomId: string, body: string, timeoutMs = 20_000): Promise<void> {
  await waitFor(`${c.userId}/${c.deviceId} decrypts "${body}"`, () => decryptedBodies(c, roomId).includes(body), timeoutMs);
}

/** Waits until the client knows exactly these devices of `userId` (it re-queries keys when told to). */
export async function waitForDeviceList(c: CryptoClient, userId: string, expected: string[], timeoutMs = 20_000): Promise<void> {
  const want = [...expected].sort().join(",");
  await waitFor(
    `${c.userId}/${c.deviceId} sees devices [${want}] of ${userId}`,
    async () => {
      const map = await c.client.getCrypto()!.getUserDeviceInfo([userId]);
      return [...(map.get(userId)?.keys() ?? [])].sort().join(",") === want;
    },
    timeoutMs,
  );
}

/**
 * Runs an emoji SAS verification to the end: `start` sends the request from `initiator`, the
 * responder accepts, the initiator picks SAS, both sides compare the emoji and confirm. Returns
 * the emoji each side showed.
 */
export async function verifyWithSas(initiator: CryptoClient, responder: CryptoClient, start: () => Promise<VerificationRequest>): Promise<{ initiatorEmoji: string[]; responderEmoji: string[] }> {
  const incoming = new Promise<VerificationRequest>((resolve) => responder.client.once(CryptoEvent.VerificationRequestReceived, resolve));
  const outgoing = await start();
  const theirs = await incoming;
  await theirs.accept();
  await waitFor("the request is ready on both sides", () => outgoing.phase === VerificationPhase.Ready && theirs.phase === VerificationPhase.Ready);
  const ourVerifier = await outgoing.startVerification("m.sas.v1");
  const theirVerifier = await waitFor("the responder sees the SAS start", () => theirs.verifier);
  const sas = (v: typeof ourVerifier) => new Promise<ShowSasCallbacks>((resolve) => v.once(VerifierEvent.ShowSas, resolve));
  const [ourSas, theirSas] = [sas(ourVerifier), sas(theirVerifier)];
  const done = Promise.all([ourVerifier.verify(), theirVerifier.verify()]);
  const [a, b] = await Promise.all([ourSas, theirSas]);
  const emoji = (s: ShowSasCallbacks) => (s.sas.emoji ?? []).map(([e]) => e);
  await Promise.all([a.confirm(), b.confirm()]);
  await done;
  await waitFor("both sides finish", () => outgoing.phase === VerificationPhase.Done && theirs.phase === VerificationPhase.Done);
  return { initiatorEmoji: emoji(a), responderEmoji: emoji(b) };
}

// ---- hand-made keys for raw HTTP tests ---------------------------------------------------------

function rawPublicKey(key: KeyObject): string {
  const der = key.export({ format: "der", type: "spki" });
  return der.subarray(der.length - 32).toString("base64").replace(/=+$/, "");
}

export function unpaddedBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64").replace(/=+$/, "");
}

/** An ed25519 key pair that signs JSON the way Matrix does (canonical JSON without signatures/unsigned). */
export class Ed25519Signer {
  readonly publicKey: string;
  private readonly privateKey: KeyObject;

  constructor() {
    const pair = generateKeyPairSync("ed25519");
    this.privateKey = pair.privateKey;
    this.publicKey = rawPublicKey(pair.publicKey);
  }

  signature(obj: Json): string {
    const { signatures: _s, unsigned: _u, ...rest } = obj;
    return unpaddedBase64(edSign(null, Buffer.from(canonicalJson(rest), "utf8"), this.privateKey));
  }

  /** A copy of `obj` with this key's signature added under `userId` / `keyId`. */
  sign<T extends Json>(obj: T, userId: string, keyId: string): T {
    const sigs = { ...((obj.signatures as Record<string, Record<string, string>> | undefined) ?? {}) };
    sigs[userId] = { ...(sigs[userId] ?? {}), [keyId]: this.signature(obj) };
    return { ...obj, signatures: sigs };
  }
}

/** A device as a client would present it: identity keys, signed one-time and fallback keys. */
export class FakeDevice {
  readonly ed25519 = new Ed25519Signer();
  readonly curve25519 = unpaddedBase64(randomBytes(32));
  private keyCounter = 0;

  constructor(
    readonly userId: string,
    readonly deviceId: string,
  ) {}

  get keyId(): string {
    return `ed25519:${this.deviceId}`;
  }

  deviceKeys(overrides: Json = {}): Json {
    const keys = {
      user_id: this.userId,
      device_id: this.deviceId,
      algorithms: ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
      keys: { [`curve25519:${this.deviceId}`]: this.curve25519, [`ed25519:${this.deviceId}`]: this.ed25519.publicKey },
      ...overrides,
    };
    return this.ed25519.sign(keys, this.userId, this.keyId);
  }

  /** `n` signed curve25519 one-time keys with fresh ids. */
  oneTimeKeys(n: number): Record<string, Json> {
    const out: Record<string, Json> = {};
    for (let i = 0; i < n; i++) {
      const id = `AAAA${(++this.keyCounter).toString(36).padStart(6, "0")}`;
      out[`signed_curve25519:${id}`] = this.ed25519.sign({ key: unpaddedBase64(randomBytes(32)) }, this.userId, this.keyId);
    }
    return out;
  }

  fallbackKey(): Record<string, Json> {
    const id = `FB${(++this.keyCounter).toString(36).padStart(6, "0")}`;
    return { [`signed_curve25519:${id}`]: this.ed25519.sign({ key: unpaddedBase64(randomBytes(32)), fallback: true }, this.userId, this.keyId) };
  }
}

/** A user's three cross-signing keys, the self-signing and user-signing keys signed by the master key. */
export class FakeCrossSigning {
  readonly master = new Ed25519Signer();
  readonly selfSigning = new Ed25519Signer();
  readonly userSigning = new Ed25519Signer();

  constructor(readonly userId: string) {}

  private key(usage: string, signer: Ed25519Signer): Json {
    return { user_id: this.userId, usage: [usage], keys: { [`ed25519:${signer.publicKey}`]: signer.publicKey } };
  }

  masterKey(): Json {
    return this.key("master", this.master);
  }

  selfSigningKey(): Json {
    return this.master.sign(this.key("self_signing", this.selfSigning), this.userId, `ed25519:${this.master.publicKey}`);
  }

  userSigningKey(): Json {
    return this.master.sign(this.key("user_signing", this.userSigning), this.userId, `ed25519:${this.master.publicKey}`);
  }

  upload(): Json {
    return { master_key: this.masterKey(), self_signing_key: this.selfSigningKey(), user_signing_key: this.userSigningKey() };
  }
}
