import { createPrivateKey, createPublicKey, randomBytes, sign as cryptoSign, type KeyObject } from "node:crypto";
import { decodeBase64, encodeUnpaddedBase64 } from "../lib/base64.js";
import { loadOrCreateSecretFile } from "../lib/secret-file.js";

/** The server's ed25519 signing key. */
export interface SigningKey {
  /** Algorithm and version, e.g. `ed25519:a_AbCd`. */
  keyId: string;
  /** The 32-byte ed25519 seed: the secret. */
  seed: Buffer;
  /** The 32-byte public key, unpadded base64, as published in server keys. */
  publicKeyBase64: string;
  /** Raw ed25519 signature (64 bytes) over `data`. */
  sign(data: Uint8Array): Buffer;
}

// DER prefix of a PKCS#8 ed25519 private key; the 32-byte seed follows it.
const PKCS8_ED25519_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

const VERSION_RE = /^[A-Za-z0-9_]+$/;

/** Builds a SigningKey from a seed and key version (the part of the key id after `ed25519:`). */
export function signingKeyFromSeed(seed: Uint8Array, version: string): SigningKey {
  if (seed.length !== 32) throw new Error(`ed25519 seed must be 32 bytes, got ${seed.length}`);
  if (!VERSION_RE.test(version)) throw new Error(`Invalid signing key version ${JSON.stringify(version)}`);
  const seedBuf = Buffer.from(seed);
  const privateKey: KeyObject = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seedBuf]), format: "der", type: "pkcs8" });
  const jwk = createPublicKey(privateKey).export({ format: "jwk" });
  if (typeof jwk.x !== "string") throw new Error("Could not derive ed25519 public key");
  return {
    keyId: `ed25519:${version}`,
    seed: seedBuf,
    publicKeyBase64: encodeUnpaddedBase64(Buffer.from(jwk.x, "base64url")),
    sign: (data) => cryptoSign(null, data, privateKey),
  };
}

/** A new random key with a Synapse-style version (`a_` and four random letters/digits). */
export function generateSigningKey(): SigningKey {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = randomBytes(4);
  let suffix = "";
  for (const b of bytes) suffix += alphabet[b % alphabet.length];
  return signingKeyFromSeed(randomBytes(32), `a_${suffix}`);
}

/**
 * Parses a key file in Synapse's format: one key per line, `ed25519 <version> <base64 seed>`.
 * The first key signs; every line must still be well formed so a damaged file is noticed.
 */
export function parseSigningKeyFile(text: string): SigningKey {
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0);
  if (lines.length === 0) throw new Error("signing key file is empty");
  const keys = lines.map((line, i) => {
    const parts = line.split(/\s+/);
    if (parts.length !== 3) throw new Error(`line ${i + 1}: expected "ed25519 <version> <base64 seed>"`);
    const [alg, version, seedB64] = parts as [string, string, string];
    if (alg !== "ed25519") throw new Error(`line ${i + 1}: unsupported key algorithm ${JSON.stringify(alg)}`);
    let seed: Buffer;
    try {
      seed = decodeBase64(seedB64);
    } catch {
      throw new Error(`line ${i + 1}: seed is not valid base64`);
    }
    if (seed.length !== 32) throw new Error(`line ${i + 1}: seed must be 32 bytes, got ${seed.length}`);
    if (!VERSION_RE.test(version)) throw new Error(`line ${i + 1}: invalid key version ${JSON.stringify(version)}`);
    return signingKeyFromSeed(seed, version);
  });
  return keys[0] as SigningKey;
}

export function formatSigningKeyFile(key: SigningKey): string {
  const version = key.keyId.slice(key.keyId.indexOf(":") + 1);
  return `ed25519 ${version} ${encodeUnpaddedBase64(key.seed)}\n`;
}

/**
 * Loads the server's signing key, creating it on first start. Losing or replacing this key makes
 * every event and key response we signed unverifiable by others, so anything unexpected stops
 * startup instead of silently generating a new one.
 */
export function loadOrCreateSigningKey(file: string): SigningKey {
  return loadOrCreateSecretFile(file, "Signing key", parseSigningKeyFile, () => {
    const key = generateSigningKey();
    return { value: key, text: formatSigningKeyFile(key) };
  });
}
