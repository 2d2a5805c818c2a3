/**
 * Real-looking end-to-end key material for the `e2ee` scenario: ed25519 and curve25519 key pairs
 * from node:crypto, device keys and one-time keys signed the way Matrix clients sign them
 * (ed25519 over canonical JSON), and olm/megolm-shaped ciphertext of realistic size. The server
 * checks key shapes and self-signatures; it cannot check ciphertext, so that is random bytes.
 */
import { createPrivateKey, createPublicKey, randomBytes, sign, type KeyObject } from "node:crypto";

type Json = Record<string, unknown>;

/** Matrix canonical JSON: object keys sorted by code point, no insignificant whitespace, integers only. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new Error(`canonical JSON allows integers only, got ${value}`);
    return String(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (typeof value === "object") {
    const entries = Object.entries(value as Json).filter(([, v]) => v !== undefined);
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  throw new Error(`cannot encode ${typeof value} as JSON`);
}

export const unpaddedBase64 = (b: Buffer): string => b.toString("base64").replace(/=+$/, "");

// PKCS#8 wrappings of a raw 32-byte private key (RFC 8410), for Ed25519 and X25519.
const PKCS8_PREFIX = { ed25519: Buffer.from("302e020100300506032b657004220420", "hex"), x25519: Buffer.from("302e020100300506032b656e04220420", "hex") };

/**
 * A key pair from 32 random bytes. Not generateKeyPairSync: on Node 20 thousands of those followed
 * by a JWK export can deadlock the process (the export holds the key's mutex while allocating; the
 * garbage collection that allocation triggers destroys the finished KeyGenJob, which takes the
 * same mutex — seen here as a bench hanging at 0% CPU in futex_wait under ExportJWKEdKey).
 */
function keyPair(type: "ed25519" | "x25519"): { privateKey: KeyObject; publicKey: string } {
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX[type], randomBytes(32)]), format: "der", type: "pkcs8" });
  // The SubjectPublicKeyInfo of both ends in the raw 32-byte public key.
  const spki = createPublicKey(privateKey).export({ format: "der", type: "spki" });
  return { privateKey, publicKey: unpaddedBase64(spki.subarray(spki.length - 32)) };
}

/** One device's identity: an ed25519 signing key and a curve25519 identity key. */
export class DeviceIdentity {
  readonly ed25519: string;
  readonly curve25519: string;
  private readonly signingKey: KeyObject;
  private otkCounter = 0;

  constructor(
    readonly userId: string,
    readonly deviceId: string,
  ) {
    const ed = keyPair("ed25519");
    this.signingKey = ed.privateKey;
    this.ed25519 = ed.publicKey;
    this.curve25519 = keyPair("x25519").publicKey;
  }

  /** `obj` with this device's signature added, over everything but `signatures` and `unsigned`. */
  signed<T extends Json>(obj: T): T & { signatures: Record<string, Record<string, string>> } {
    const { signatures, unsigned: _unsigned, ...rest } = obj as Json;
    const sig = unpaddedBase64(sign(null, Buffer.from(canonicalJson(rest), "utf8"), this.signingKey));
    const existing = (signatures ?? {}) as Record<string, Record<string, string>>;
    return { ...obj, signatures: { ...existing, [this.userId]: { ...(existing[this.userId] ?? {}), [`ed25519:${this.deviceId}`]: sig } } };
  }

  deviceKeys(): Json {
    return this.signed({
      user_id: this.userId,
      device_id: this.deviceId,
      algorithms: ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
      keys: { [`curve25519:${this.deviceId}`]: this.curve25519, [`ed25519:${this.deviceId}`]: this.ed25519 },
    });
  }

  /** `count` signed curve25519 one-time keys, ids as libolm makes them (base64 of a counter). */
  oneTimeKeys(count: number): Json {
    const out: Json = {};
    for (let i = 0; i < count; i++) {
      const id = unpaddedBase64(Buffer.from(String(++this.otkCounter).padStart(6, "0")));
      out[`signed_curve25519:${id}`] = this.signed({ key: keyPair("x25519").publicKey });
    }
    return out;
  }

  fallbackKey(): Json {
    return { [`signed_curve25519:fb${this.deviceId}`]: this.signed({ key: keyPair("x25519").publicKey, fallback: true }) };
  }

  /** The body of POST /keys/upload a fresh device sends: identity keys, a few one-time keys, a fallback key. */
  uploadBody(oneTimeKeys: number): Json {
    return { device_keys: this.deviceKeys(), one_time_keys: this.oneTimeKeys(oneTimeKeys), fallback_keys: this.fallbackKey() };
  }

  /**
   * An olm pre-key message (type 0) to one device, of the size a megolm room-key share has: the
   * encrypted m.room_key (room id, session id, a 229-byte session key, sender and recipient keys)
   * comes to about 900 base64 characters.
   */
  olmMessage(recipientCurve25519: string, bodyChars = 900): Json {
    return {
      algorithm: "m.olm.v1.curve25519-aes-sha2",
      sender_key: this.curve25519,
      ciphertext: { [recipientCurve25519]: { type: 0, body: randomBase64(bodyChars) } },
      "org.matrix.msgid": randomBase64(22),
    };
  }

  /** The room event: megolm ciphertext of a short text message. */
  megolmEvent(sessionId: string, bodyChars = 300): Json {
    return { algorithm: "m.megolm.v1.aes-sha2", sender_key: this.curve25519, ciphertext: randomBase64(bodyChars), session_id: sessionId, device_id: this.deviceId };
  }
}

export function randomBase64(chars: number): string {
  return unpaddedBase64(randomBytes(Math.ceil((chars * 3) / 4))).slice(0, chars);
}
