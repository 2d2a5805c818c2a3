import { createHash, createPublicKey, hash, verify as cryptoVerify } from "node:crypto";
import { canonicalJson } from "../lib/canonical-json.js";
import { decodeBase64, encodeUnpaddedBase64, encodeUrlSafeUnpaddedBase64 } from "../lib/base64.js";
import type { RoomVersion } from "./room-versions.js";
import type { SigningKey } from "./signing-key.js";

/** `signatures[serverName][keyId] = unpadded base64 signature`. */
export type Signatures = Record<string, Record<string, string>>;

/** A room event as exchanged over federation (room versions 4 to 11). */
export type Pdu = {
  room_id: string;
  sender: string;
  type: string;
  state_key?: string;
  content: Record<string, unknown>;
  origin_server_ts: number;
  prev_events: string[];
  auth_events: string[];
  depth: number;
  hashes: { sha256: string };
  signatures: Signatures;
  unsigned?: Record<string, unknown>;
  /** Target of an `m.room.redaction` up to v10; v11 moves it into `content.redacts`. */
  redacts?: string;
};

type JsonObject = Record<string, unknown>;

function withoutKeys(obj: object, keys: readonly string[]): JsonObject {
  const out: JsonObject = { ...(obj as JsonObject) };
  for (const k of keys) delete out[k];
  return out;
}

function sha256(data: string): Buffer {
  return createHash("sha256").update(data, "utf8").digest();
}

function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Content hash (server-server "Calculating the content hash"): sha256 of the canonical JSON of
 * the full, unredacted event without `unsigned`, `signatures` and `hashes`; unpadded base64.
 */
export function computeContentHash(pdu: object): string {
  return encodeUnpaddedBase64(sha256(canonicalJson(withoutKeys(pdu, ["unsigned", "signatures", "hashes"]))));
}

/** Whether `hashes.sha256` matches the event; a mismatch means we were sent a redacted copy. */
export function verifyContentHash(pdu: object): boolean {
  const hashes = (pdu as JsonObject).hashes;
  if (!isObject(hashes) || typeof hashes.sha256 !== "string") return false;
  let claimed: Buffer;
  try {
    claimed = decodeBase64(hashes.sha256);
  } catch {
    return false;
  }
  return claimed.equals(sha256(canonicalJson(withoutKeys(pdu, ["unsigned", "signatures", "hashes"]))));
}

const TOP_LEVEL_KEPT = ["event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures", "depth", "prev_events", "auth_events", "origin_server_ts"];
const TOP_LEVEL_KEPT_LEGACY = ["origin", "membership", "prev_state"];

function pick(obj: JsonObject, keys: readonly string[]): JsonObject {
  const out: JsonObject = {};
  for (const k of keys) if (Object.hasOwn(obj, k)) out[k] = obj[k];
  return out;
}

function redactContent(type: unknown, content: JsonObject, rules: RoomVersion["redaction"]): JsonObject {
  switch (type) {
    case "m.room.member": {
      const out = pick(content, rules.keepJoinAuthorisedViaUsersServer ? ["membership", "join_authorised_via_users_server"] : ["membership"]);
      const tpi = content.third_party_invite;
      if (rules.keepThirdPartyInviteSigned && isObject(tpi)) {
        // Only `signed` survives, but the (possibly empty) object itself is kept, as other servers do.
        out.third_party_invite = Object.hasOwn(tpi, "signed") ? { signed: tpi.signed } : {};
      }
      return out;
    }
    case "m.room.create":
      return rules.keepAllCreateContent ? { ...content } : pick(content, ["creator"]);
    case "m.room.join_rules":
      return pick(content, rules.keepJoinRulesAllow ? ["join_rule", "allow"] : ["join_rule"]);
    case "m.room.power_levels": {
      const keys = ["ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"];
      if (rules.keepPowerLevelsInvite) keys.push("invite");
      return pick(content, keys);
    }
    case "m.room.history_visibility":
      return pick(content, ["history_visibility"]);
    case "m.room.redaction":
      return rules.keepRedactionContentRedacts ? pick(content, ["redacts"]) : {};
    default:
      return {};
  }
}

/**
 * The redaction algorithm of the given room version: strips every top-level key and content key
 * that is not needed to keep authorising the room. Returns a deep copy; the input is untouched.
 */
export function redactEvent(event: object, roomVersion: RoomVersion): Record<string, unknown> {
  return cloneJson(redactedView(event, roomVersion)) as Record<string, unknown>;
}

/** The redacted form, sharing the values it keeps with `event`: only for encoding, never to modify. */
function redactedView(event: object, roomVersion: RoomVersion): JsonObject {
  const ev = event as JsonObject;
  const rules = roomVersion.redaction;
  const out = pick(ev, rules.keepOriginMembershipPrevState ? [...TOP_LEVEL_KEPT, ...TOP_LEVEL_KEPT_LEGACY] : TOP_LEVEL_KEPT);
  // Events always have content; a redacted copy must too, even if the original was malformed.
  out.content = redactContent(ev.type, isObject(ev.content) ? ev.content : {}, rules);
  return out;
}

/** Deep copy of JSON-shaped data, so callers can modify a redacted copy without touching the original. */
function cloneJson(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(cloneJson);
  if (typeof v === "object" && v !== null) {
    const out: JsonObject = {};
    for (const [k, item] of Object.entries(v)) out[k] = cloneJson(item);
    return out;
  }
  return v;
}

/**
 * Reference hash (server-server "Calculating the reference hash"): sha256 of the canonical JSON
 * of the redacted event without `signatures`, `age_ts` and `unsigned`. Raw 32 bytes.
 */
export function computeReferenceHash(pdu: object, roomVersion: RoomVersion): Buffer {
  const redacted = withoutKeys(redactEvent(pdu, roomVersion), ["signatures", "age_ts", "unsigned"]);
  return sha256(canonicalJson(redacted));
}

/** Event id of room versions 4 and later: `$` + URL-safe unpadded base64 of the reference hash. */
export function eventIdFor(pdu: object, roomVersion: RoomVersion): string {
  return `$${encodeUrlSafeUnpaddedBase64(computeReferenceHash(pdu, roomVersion))}`;
}

function mergeSignature(existing: unknown, serverName: string, keyId: string, signature: string): Signatures {
  const sigs: Signatures = {};
  if (isObject(existing)) {
    for (const [server, byKey] of Object.entries(existing)) if (isObject(byKey)) sigs[server] = { ...(byKey as Record<string, string>) };
  }
  sigs[serverName] = { ...(sigs[serverName] ?? {}), [keyId]: signature };
  return sigs;
}

/**
 * Signs JSON (appendix "Signing JSON"): the signature covers the canonical JSON of the object
 * without `signatures` and `unsigned`. Returns a copy with the signature added next to any
 * existing ones.
 */
export function signJson<T extends object>(obj: T, serverName: string, key: SigningKey): T & { signatures: Signatures } {
  const signature = encodeUnpaddedBase64(key.sign(Buffer.from(canonicalJson(withoutKeys(obj, ["signatures", "unsigned"])), "utf8")));
  return { ...obj, signatures: mergeSignature((obj as JsonObject).signatures, serverName, key.keyId, signature) };
}

// DER prefix of an SPKI ed25519 public key; the 32 raw key bytes follow it.
const SPKI_ED25519_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

/**
 * Checks `obj.signatures[serverName][keyId]` against an ed25519 public key (unpadded base64).
 * Any malformation (missing signature, bad base64, wrong key length, non-canonical JSON) is a
 * failed check, never an exception.
 */
export function verifyJsonSignature(obj: object, serverName: string, keyId: string, publicKeyBase64: string): boolean {
  if (!keyId.startsWith("ed25519:")) return false;
  const sigs = (obj as JsonObject).signatures;
  if (!isObject(sigs)) return false;
  const byKey = sigs[serverName];
  if (!isObject(byKey)) return false;
  const sigB64 = byKey[keyId];
  if (typeof sigB64 !== "string") return false;
  try {
    const signature = decodeBase64(sigB64);
    const rawKey = decodeBase64(publicKeyBase64);
    if (signature.length !== 64 || rawKey.length !== 32) return false;
    const publicKey = createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, rawKey]), format: "der", type: "spki" });
    const data = Buffer.from(canonicalJson(withoutKeys(obj, ["signatures", "unsigned"])), "utf8");
    return cryptoVerify(null, data, publicKey, signature);
  } catch {
    return false;
  }
}

/**
 * Signs an event (server-server "Signing Events"): the signature covers the redacted event, so
 * it still verifies after redaction; `hashes` must already be set since it protects the rest.
 * Returns a copy with the signature added.
 */
export function signEvent<T extends object>(pdu: T, serverName: string, key: SigningKey, roomVersion: RoomVersion): T {
  const signed = signJson(withoutKeys(redactEvent(pdu, roomVersion), ["signatures"]), serverName, key);
  const signature = signed.signatures[serverName]?.[key.keyId] as string;
  return { ...pdu, signatures: mergeSignature((pdu as JsonObject).signatures, serverName, key.keyId, signature) };
}

/**
 * What an origin server does to a new event, in one pass: sets the content hash, signs, and
 * derives the event id (room versions 4 and later). Same result as computeContentHash, then
 * signEvent, then eventIdFor, with each canonical encoding made once: the signature and the
 * reference hash cover the same bytes (the redacted event without `signatures` and `unsigned`;
 * `age_ts` never survives redaction), and `contentJson`, if given, is the event's content already
 * encoded by canonicalJsonMember("content", …) and is spliced in rather than encoded again.
 * `pdu` must not carry `unsigned` yet, since the event id is computed here.
 */
export function finishNewEvent<T extends Pdu>(pdu: T, serverName: string, key: SigningKey, roomVersion: RoomVersion, contentJson?: string): { event: T; eventId: string } {
  const known = contentJson !== undefined ? new Map<object, string>([[pdu.content, contentJson]]) : undefined;
  // One-shot hashing (crypto.hash): no Hash object per digest.
  const contentHash = hash("sha256", canonicalJson(withoutKeys(pdu, ["unsigned", "signatures", "hashes"]), undefined, known), "base64").replace(/=+$/, "");
  const hashed = { ...pdu, hashes: { sha256: contentHash } };
  const signedBytes = canonicalJson(withoutKeys(redactedView(hashed, roomVersion), ["signatures", "age_ts", "unsigned"]));
  const signature = encodeUnpaddedBase64(key.sign(Buffer.from(signedBytes, "utf8")));
  const event = { ...hashed, signatures: mergeSignature(hashed.signatures, serverName, key.keyId, signature) };
  return { event, eventId: `$${hash("sha256", signedBytes, "base64url")}` };
}

/** Computes the content hash, then signs: what an origin server does to a new event. */
export function hashAndSignEvent<T extends object>(pdu: T, serverName: string, key: SigningKey, roomVersion: RoomVersion): T & { hashes: { sha256: string }; signatures: Signatures } {
  const hashed = { ...pdu, hashes: { sha256: computeContentHash(pdu) } };
  return signEvent(hashed, serverName, key, roomVersion) as T & { hashes: { sha256: string }; signatures: Signatures };
}

/** Checks an event's signature by `serverName`'s key over its redacted form (full or redacted copy). */
export function verifyEventSignature(pdu: object, serverName: string, keyId: string, publicKeyBase64: string, roomVersion: RoomVersion): boolean {
  let redacted: JsonObject;
  try {
    redacted = redactEvent(pdu, roomVersion);
  } catch {
    return false;
  }
  return verifyJsonSignature(redacted, serverName, keyId, publicKeyBase64);
}
