import { test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createPublicKey, verify } from "node:crypto";
import { tmpdir } from "node:os";
import path from "node:path";
import { decodeBase64 } from "../lib/base64.js";
import { formatSigningKeyFile, generateSigningKey, loadOrCreateSigningKey, parseSigningKeyFile, signingKeyFromSeed } from "./signing-key.js";

const SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
const SPEC_PUBLIC = "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI";
const posix = process.platform !== "win32";

function withTempDir(fn: (dir: string) => void): void {
  const dir = mkdtempSync(path.join(tmpdir(), "revier-key-"));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("generateSigningKey makes a Synapse-style key that signs verifiably", () => {
  const key = generateSigningKey();
  assert.match(key.keyId, /^ed25519:a_[A-Za-z0-9]{4}$/);
  assert.equal(key.seed.length, 32);
  assert.match(key.publicKeyBase64, /^[A-Za-z0-9+/]{43}$/);
  const data = Buffer.from("hello");
  const sig = key.sign(data);
  assert.equal(sig.length, 64);
  const pub = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: decodeBase64(key.publicKeyBase64).toString("base64url") }, format: "jwk" });
  assert.equal(verify(null, data, pub, sig), true);
  assert.notEqual(generateSigningKey().publicKeyBase64, key.publicKeyBase64);
});

test("parseSigningKeyFile reads Synapse's format", () => {
  const key = parseSigningKeyFile(`ed25519 a_Ab9_ ${SPEC_SEED}\n`);
  assert.equal(key.keyId, "ed25519:a_Ab9_");
  assert.equal(key.publicKeyBase64, SPEC_PUBLIC);
  assert.deepEqual(key.seed, decodeBase64(SPEC_SEED));
  // Padded seeds, CRLF and surrounding blank lines are tolerated; the first key is the signing key.
  const other = formatSigningKeyFile(generateSigningKey());
  assert.equal(parseSigningKeyFile(`\r\n  ed25519 1 ${SPEC_SEED}=  \r\n${other}`).keyId, "ed25519:1");
});

test("formatSigningKeyFile round-trips", () => {
  const key = signingKeyFromSeed(decodeBase64(SPEC_SEED), "a_XyZ1");
  // The spec writes the seed with non-zero trailing bits; the canonical encoding ends in "0".
  assert.equal(formatSigningKeyFile(key), "ed25519 a_XyZ1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA0\n");
  const back = parseSigningKeyFile(formatSigningKeyFile(key));
  assert.equal(back.keyId, key.keyId);
  assert.equal(back.publicKeyBase64, SPEC_PUBLIC);
});

test("parseSigningKeyFile rejects malformed files", () => {
  const bad = [
    "",
    "\n\n",
    `ed25519 1`,
    `ed25519 1 ${SPEC_SEED} extra`,
    `rsa 1 ${SPEC_SEED}`,
    `ed25519 1 not*base64`,
    `ed25519 1 ${SPEC_SEED.slice(0, 40)}`,
    `ed25519 bad:version ${SPEC_SEED}`,
    `ed25519 1 ${SPEC_SEED}\ngarbage`,
  ];
  for (const text of bad) assert.throws(() => parseSigningKeyFile(text), Error, JSON.stringify(text));
});

test("loadOrCreateSigningKey creates a private key file once and reuses it", () => {
  withTempDir((dir) => {
    const file = path.join(dir, "nested", "signing.key");
    const created = loadOrCreateSigningKey(file);
    const text = readFileSync(file, "utf8");
    assert.match(text, /^ed25519 a_[A-Za-z0-9]{4} [A-Za-z0-9+/]{43}\n$/);
    if (posix) assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.deepEqual(readdirSync(path.dirname(file)), ["signing.key"], "no temporary file left behind");

    const loaded = loadOrCreateSigningKey(file);
    assert.equal(loaded.keyId, created.keyId);
    assert.equal(loaded.publicKeyBase64, created.publicKeyBase64);
    assert.equal(readFileSync(file, "utf8"), text, "an existing key is never rewritten");
  });
});

test("loadOrCreateSigningKey loads an existing Synapse key file", () => {
  withTempDir((dir) => {
    const file = path.join(dir, "signing.key");
    writeFileSync(file, `ed25519 1 ${SPEC_SEED}\n`, { mode: 0o600 });
    const key = loadOrCreateSigningKey(file);
    assert.equal(key.keyId, "ed25519:1");
    assert.equal(key.publicKeyBase64, SPEC_PUBLIC);
  });
});

test("loadOrCreateSigningKey refuses a malformed key file, naming it", () => {
  withTempDir((dir) => {
    const file = path.join(dir, "signing.key");
    writeFileSync(file, "ed25519 1 tooshort\n", { mode: 0o600 });
    assert.throws(() => loadOrCreateSigningKey(file), (err: unknown) => err instanceof Error && err.message.includes(file) && /malformed/.test(err.message));
    assert.equal(readFileSync(file, "utf8"), "ed25519 1 tooshort\n", "the broken file is left for the operator");
  });
});

test("loadOrCreateSigningKey refuses a key file others can read, naming it", { skip: !posix }, () => {
  withTempDir((dir) => {
    const file = path.join(dir, "signing.key");
    writeFileSync(file, `ed25519 1 ${SPEC_SEED}\n`);
    for (const mode of [0o644, 0o640, 0o604]) {
      chmodSync(file, mode);
      assert.throws(() => loadOrCreateSigningKey(file), (err: unknown) => err instanceof Error && err.message.includes(file) && /group or others/.test(err.message), mode.toString(8));
    }
    chmodSync(file, 0o400);
    assert.equal(loadOrCreateSigningKey(file).keyId, "ed25519:1");
  });
});

test("loadOrCreateSigningKey refuses a directory in place of the key", () => {
  withTempDir((dir) => {
    assert.throws(() => loadOrCreateSigningKey(dir), (err: unknown) => err instanceof Error && err.message.includes(dir));
  });
});
