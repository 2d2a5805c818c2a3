import { test } from "node:test";
import assert from "node:assert/strict";
import { checkDeviceKeys, checkKeyMap } from "@revier/server/dist/e2ee/validate.js";
import { canonicalJson, DeviceIdentity } from "./keys.js";

test("canonicalJson sorts keys at every level and drops whitespace", () => {
  assert.equal(canonicalJson({ b: 1, a: { d: [true, null], c: "x" } }), '{"a":{"c":"x","d":[true,null]},"b":1}');
  assert.throws(() => canonicalJson({ a: 1.5 }));
});

test("each device gets its own 32-byte keys in unpadded base64", () => {
  const a = new DeviceIdentity("@bob:localhost", "BOBDEV");
  const b = new DeviceIdentity("@bob:localhost", "BOBDEV2");
  for (const key of [a.ed25519, a.curve25519, b.ed25519, b.curve25519]) assert.match(key, /^[A-Za-z0-9+/]{43}$/);
  assert.equal(new Set([a.ed25519, a.curve25519, b.ed25519, b.curve25519]).size, 4);
});

test("generated device and one-time keys pass the server's checks, signatures included", () => {
  const device = new DeviceIdentity("@alice:localhost", "ALICEDEV");
  const body = device.uploadBody(3);
  const { ed25519 } = checkDeviceKeys(body.device_keys, "@alice:localhost", "ALICEDEV");
  assert.equal(ed25519, device.ed25519);
  const otks = checkKeyMap(body.one_time_keys, "one_time_keys", { userId: "@alice:localhost", deviceId: "ALICEDEV", ed25519, max: 200 });
  assert.equal(otks.length, 3);
  assert.equal(checkKeyMap(body.fallback_keys, "fallback_keys", { userId: "@alice:localhost", deviceId: "ALICEDEV", ed25519, max: 8 }).length, 1);
  // Another device's signature does not pass as this one's.
  const mallory = new DeviceIdentity("@alice:localhost", "ALICEDEV");
  assert.throws(() => checkDeviceKeys({ ...mallory.deviceKeys(), signatures: (body.device_keys as { signatures: unknown }).signatures }, "@alice:localhost", "ALICEDEV"));
});
