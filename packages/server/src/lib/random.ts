import { hash, randomBytes, randomInt } from "node:crypto";

const ALPHA = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/** URL-safe random string carrying `bytes` bytes of entropy. */
export function randomToken(bytes = 32): string {
  return randomBytes(bytes).toString("base64url");
}

/** Letters only, for ids users may have to read out (device ids). */
export function randomLetters(length: number): string {
  let out = "";
  for (let i = 0; i < length; i++) out += ALPHA[randomInt(ALPHA.length)];
  return out;
}

// Every authenticated request hashes its token: one-shot hashing skips a Hash object per call.
export function sha256Hex(value: string | Uint8Array): string {
  return hash("sha256", value, "hex");
}
