import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeBase64, encodeUnpaddedBase64, encodeUrlSafeUnpaddedBase64 } from "./base64.js";

// The spec appendix "Unpadded Base64" examples.
const SPEC_EXAMPLES: Array<[string, string]> = [
  ["", ""],
  ["f", "Zg"],
  ["fo", "Zm8"],
  ["foo", "Zm9v"],
  ["foob", "Zm9vYg"],
  ["fooba", "Zm9vYmE"],
  ["foobar", "Zm9vYmFy"],
];

test("encodeUnpaddedBase64 matches the spec examples", () => {
  for (const [raw, encoded] of SPEC_EXAMPLES) assert.equal(encodeUnpaddedBase64(Buffer.from(raw)), encoded);
});

test("encoders use the right alphabet and honour Uint8Array views", () => {
  const bytes = Uint8Array.from([0xfb, 0xff, 0xbf]);
  assert.equal(encodeUnpaddedBase64(bytes), "+/+/");
  assert.equal(encodeUrlSafeUnpaddedBase64(bytes), "-_-_");
  assert.equal(encodeUrlSafeUnpaddedBase64(Uint8Array.from([0xff])), "_w");
  const view = new Uint8Array(Buffer.from("xxfoo").buffer, Buffer.from("xxfoo").byteOffset + 2, 3);
  assert.equal(encodeUnpaddedBase64(view), "Zm9v");
});

test("decodeBase64 accepts padded, unpadded, standard and URL-safe input", () => {
  for (const [raw, encoded] of SPEC_EXAMPLES) assert.equal(decodeBase64(encoded).toString(), raw);
  assert.equal(decodeBase64("Zg==").toString(), "f");
  assert.equal(decodeBase64("Zm8=").toString(), "fo");
  assert.deepEqual([...decodeBase64("+/+/")], [0xfb, 0xff, 0xbf]);
  assert.deepEqual([...decodeBase64("-_-_")], [0xfb, 0xff, 0xbf]);
});

test("decodeBase64 rejects malformed input instead of skipping characters", () => {
  for (const bad of ["Zm9v!", "Zm 9v", "Z", "Zm9vY", "Zg=", "Zg===", "=Zg", "Zm=8"]) {
    assert.throws(() => decodeBase64(bad), /Invalid base64/, bad);
  }
});
