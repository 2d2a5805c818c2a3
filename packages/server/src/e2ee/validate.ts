import { MatrixError } from "@revier/protocol";
import { canonicalJson } from "../lib/canonical-json.js";
import { verifyJsonSignature } from "../rooms/event-crypto.js";

/**
 * Shape checks for uploaded key material. The server cannot judge the cryptography, but it can
 * make sure that what it relays is well formed and bounded, so one broken or hostile client cannot
 * hand other clients garbage or fill the database.
 */

export type Json = Record<string, unknown>;
export type Signatures = Record<string, Record<string, string>>;

export const LIMITS = {
  /** `<algorithm>:<id>` names, algorithm names, device ids. */
  idLength: 255,
  /** Encoded public keys and signatures; ed25519/curve25519 need 43 and 86 characters. */
  valueLength: 1024,
  signaturesPerObject: 32,
  algorithmsPerDevice: 32,
  deviceKeysBytes: 16 * 1024,
  keyObjectBytes: 4 * 1024,
  oneTimeKeysPerUpload: 200,
  /** Unclaimed one-time keys one device may hold; clients keep about 50. */
  oneTimeKeysPerDevice: 1000,
  fallbackKeysPerUpload: 8,
} as const;

const BASE64_32_BYTES = /^[A-Za-z0-9+/]{43}$/;
/** Algorithms whose public keys are 32-byte values in unpadded base64. */
const CURVE_KEYS = new Set(["ed25519", "curve25519", "signed_curve25519"]);

function bad(message: string): MatrixError {
  return new MatrixError("M_BAD_JSON", message);
}

export function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function byteLength(v: unknown, what: string): number {
  try {
    return Buffer.byteLength(canonicalJson(v), "utf8");
  } catch {
    throw bad(`${what} is not valid canonical JSON`);
  }
}

function requireString(v: unknown, what: string, max: number = LIMITS.idLength): string {
  if (typeof v !== "string" || v.length === 0) throw bad(`${what} must be a non-empty string`);
  if (v.length > max) throw bad(`${what} is longer than ${max} characters`);
  return v;
}

/** Splits `<algorithm>:<id>`; both parts must be present. */
export function splitKeyId(name: string, what: string): { algorithm: string; id: string } {
  requireString(name, what);
  const colon = name.indexOf(":");
  if (colon <= 0 || colon === name.length - 1) throw bad(`${what} '${name}' is not of the form <algorithm>:<id>`);
  return { algorithm: name.slice(0, colon), id: name.slice(colon + 1) };
}

function checkKeyValue(algorithm: string, value: unknown, what: string): string {
  const s = requireString(value, what, LIMITS.valueLength);
  if (CURVE_KEYS.has(algorithm) && !BASE64_32_BYTES.test(s)) throw bad(`${what} is not a 32-byte unpadded base64 key`);
  return s;
}

export function checkSignatures(v: unknown, what: string): Signatures {
  if (!isObject(v)) throw bad(`${what} must be an object`);
  let count = 0;
  for (const [user, byKey] of Object.entries(v)) {
    requireString(user, `${what} user id`);
    if (!user.startsWith("@")) throw bad(`${what} is keyed by '${user}', which is not a user id`);
    if (!isObject(byKey)) throw bad(`${what}.${user} must be an object`);
    for (const [keyId, sig] of Object.entries(byKey)) {
      splitKeyId(keyId, `${what} key id`);
      requireString(sig, `${what} signature`, LIMITS.valueLength);
      if (++count > LIMITS.signaturesPerObject) throw bad(`${what} holds more than ${LIMITS.signaturesPerObject} signatures`);
    }
  }
  return v as Signatures;
}

export interface DeviceKeys extends Json {
  user_id: string;
  device_id: string;
  algorithms: string[];
  keys: Record<string, string>;
  signatures: Signatures;
}

/**
 * Device identity keys: they must name the uploading user and device, carry its ed25519 key, and
 * be signed by that key (the only signature a device can always make about itself).
 */
export function checkDeviceKeys(v: unknown, userId: string, deviceId: string): { keys: DeviceKeys; ed25519: string } {
  if (!isObject(v)) throw bad("device_keys must be an object");
  if (byteLength(v, "device_keys") > LIMITS.deviceKeysBytes) throw bad(`device_keys is larger than ${LIMITS.deviceKeysBytes} bytes`);
  if (v.user_id !== userId) throw new MatrixError("M_INVALID_PARAM", "device_keys.user_id does not match the user you are logged in as");
  if (v.device_id !== deviceId) throw new MatrixError("M_INVALID_PARAM", "device_keys.device_id does not match the device you are logged in with");
  const algorithms = v.algorithms;
  if (!Array.isArray(algorithms) || algorithms.length === 0) throw bad("device_keys.algorithms must be a non-empty array");
  if (algorithms.length > LIMITS.algorithmsPerDevice) throw bad(`device_keys.algorithms lists more than ${LIMITS.algorithmsPerDevice} algorithms`);
  for (const a of algorithms) requireString(a, "device_keys.algorithms entry");
  if (!isObject(v.keys) || Object.keys(v.keys).length === 0) throw bad("device_keys.keys must be a non-empty object");
  for (const [name, value] of Object.entries(v.keys)) {
    const { algorithm, id } = splitKeyId(name, "device_keys.keys name");
    if (id !== deviceId) throw bad(`device_keys.keys name '${name}' does not end in the device id`);
    checkKeyValue(algorithm, value, `device_keys.keys['${name}']`);
  }
  const ed25519 = v.keys[`ed25519:${deviceId}`];
  if (typeof ed25519 !== "string") throw bad(`device_keys.keys must contain ed25519:${deviceId}`);
  checkSignatures(v.signatures, "device_keys.signatures");
  if (!verifyJsonSignature(v, userId, `ed25519:${deviceId}`, ed25519)) {
    throw new MatrixError("M_INVALID_SIGNATURE", "device_keys is not signed by the device's own ed25519 key");
  }
  const { unsigned: _dropped, ...keys } = v;
  return { keys: keys as DeviceKeys, ed25519 };
}

export interface CheckedKey {
  algorithm: string;
  keyId: string;
  /** `<algorithm>:<key id>` as uploaded. */
  name: string;
  value: unknown;
}

/**
 * One-time or fallback keys: a map `<algorithm>:<key id>` → key. Signed keys (objects) must carry
 * a valid-looking key and the device's signature, which is verified when the device's ed25519 key
 * is known.
 */
export function checkKeyMap(v: unknown, what: string, opts: { userId: string; deviceId: string; ed25519: string | undefined; max: number }): CheckedKey[] {
  if (!isObject(v)) throw bad(`${what} must be an object`);
  const entries = Object.entries(v);
  if (entries.length > opts.max) throw bad(`${what} holds more than ${opts.max} keys`);
  const out: CheckedKey[] = [];
  for (const [name, value] of entries) {
    const { algorithm, id } = splitKeyId(name, `${what} name`);
    if (typeof value === "string") {
      checkKeyValue(algorithm, value, `${what}['${name}']`);
      if (algorithm.startsWith("signed_")) throw bad(`${what}['${name}'] must be a signed key object`);
    } else if (isObject(value)) {
      if (byteLength(value, `${what}['${name}']`) > LIMITS.keyObjectBytes) throw bad(`${what}['${name}'] is larger than ${LIMITS.keyObjectBytes} bytes`);
      checkKeyValue(algorithm, value.key, `${what}['${name}'].key`);
      checkSignatures(value.signatures, `${what}['${name}'].signatures`);
      if (value.fallback !== undefined && typeof value.fallback !== "boolean") throw bad(`${what}['${name}'].fallback must be a boolean`);
      const keyId = `ed25519:${opts.deviceId}`;
      const signed = (value.signatures as Signatures)[opts.userId]?.[keyId];
      if (signed === undefined) throw new MatrixError("M_INVALID_SIGNATURE", `${what}['${name}'] is not signed by this device`);
      if (opts.ed25519 !== undefined && !verifyJsonSignature(value, opts.userId, keyId, opts.ed25519)) {
        throw new MatrixError("M_INVALID_SIGNATURE", `${what}['${name}'] has an invalid signature`);
      }
    } else {
      throw bad(`${what}['${name}'] must be a string or a key object`);
    }
    out.push({ algorithm, keyId: id, name, value });
  }
  return out;
}

export type CrossSigningUsage = "master" | "self_signing" | "user_signing";

export interface CrossSigningKey extends Json {
  user_id: string;
  usage: string[];
  keys: Record<string, string>;
  signatures?: Signatures;
}

/** A cross-signing key: the caller's, for the stated usage, holding exactly one ed25519 key. */
export function checkCrossSigningKey(v: unknown, what: string, userId: string, usage: CrossSigningUsage): { key: CrossSigningKey; publicKey: string } {
  if (!isObject(v)) throw bad(`${what} must be an object`);
  if (byteLength(v, what) > LIMITS.keyObjectBytes) throw bad(`${what} is larger than ${LIMITS.keyObjectBytes} bytes`);
  if (v.user_id !== userId) throw new MatrixError("M_INVALID_PARAM", `${what}.user_id does not match the user you are logged in as`);
  if (!Array.isArray(v.usage) || !v.usage.includes(usage) || v.usage.some((u) => typeof u !== "string")) throw bad(`${what}.usage must contain '${usage}'`);
  if (!isObject(v.keys)) throw bad(`${what}.keys must be an object`);
  const entries = Object.entries(v.keys);
  if (entries.length !== 1) throw bad(`${what}.keys must hold exactly one key`);
  const [name, value] = entries[0]!;
  const { algorithm, id } = splitKeyId(name, `${what}.keys name`);
  if (algorithm !== "ed25519") throw bad(`${what} must be an ed25519 key`);
  checkKeyValue(algorithm, value, `${what}.keys['${name}']`);
  if (id !== value) throw bad(`${what}.keys name must be ed25519:<the public key>`);
  if (v.signatures !== undefined) checkSignatures(v.signatures, `${what}.signatures`);
  const { unsigned: _dropped, ...key } = v;
  return { key: key as CrossSigningKey, publicKey: id };
}

/** The object without `signatures` and `unsigned`: what signatures cover, as canonical JSON. */
export function signedPart(v: Json): string {
  const { signatures: _s, unsigned: _u, ...rest } = v;
  return canonicalJson(rest);
}
