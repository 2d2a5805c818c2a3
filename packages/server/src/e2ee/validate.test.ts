import { test } from "node:test";
import assert from "node:assert/strict";
import { MatrixError } from "@revier/protocol";
import { FakeCrossSigning, FakeDevice } from "../../test/support/crypto-clients.js";
import { checkCrossSigningKey, checkDeviceKeys, checkKeyMap, splitKeyId } from "./validate.js";

const USER = "@anna:example.org";
const DEVICE = "ABCDEFGHIJ";

function code(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    assert.ok(err instanceof MatrixError, String(err));
    return err.errcode;
  }
}

test("device keys: accepted when they name the caller and carry the device's own signature", () => {
  const d = new FakeDevice(USER, DEVICE);
  const { keys, ed25519 } = checkDeviceKeys({ ...d.deviceKeys(), unsigned: { device_display_name: "x" } }, USER, DEVICE);
  assert.equal(ed25519, d.ed25519.publicKey);
  assert.equal(keys.unsigned, undefined, "a client's unsigned block is not stored");
});

test("device keys: each kind of malformation has its own refusal", () => {
  const d = new FakeDevice(USER, DEVICE);
  const resign = (k: Record<string, unknown>) => d.ed25519.sign({ ...k, signatures: {} }, USER, d.keyId);
  assert.equal(code(() => checkDeviceKeys(d.deviceKeys(), "@bert:example.org", DEVICE)), "M_INVALID_PARAM");
  assert.equal(code(() => checkDeviceKeys(d.deviceKeys(), USER, "OTHER")), "M_INVALID_PARAM");
  assert.equal(code(() => checkDeviceKeys(resign({ ...d.deviceKeys(), algorithms: [] }), USER, DEVICE)), "M_BAD_JSON");
  assert.equal(code(() => checkDeviceKeys(resign({ ...d.deviceKeys(), keys: { [`ed25519:${DEVICE}`]: "short" } }), USER, DEVICE)), "M_BAD_JSON");
  assert.equal(code(() => checkDeviceKeys(resign({ ...d.deviceKeys(), keys: { "ed25519:OTHER": d.ed25519.publicKey } }), USER, DEVICE)), "M_BAD_JSON");
  assert.equal(code(() => checkDeviceKeys({ ...d.deviceKeys(), algorithms: ["m.megolm.v1.aes-sha2"] }, USER, DEVICE)), "M_INVALID_SIGNATURE", "changed after signing");
  assert.equal(code(() => checkDeviceKeys("keys", USER, DEVICE)), "M_BAD_JSON");
});

test("one-time keys: signed keys need the device's signature; sizes and counts are bounded", () => {
  const d = new FakeDevice(USER, DEVICE);
  const opts = { userId: USER, deviceId: DEVICE, ed25519: d.ed25519.publicKey, max: 3 };
  assert.equal(checkKeyMap(d.oneTimeKeys(3), "one_time_keys", opts).length, 3);
  assert.equal(code(() => checkKeyMap(d.oneTimeKeys(4), "one_time_keys", opts)), "M_BAD_JSON");
  assert.equal(code(() => checkKeyMap(new FakeDevice(USER, DEVICE).oneTimeKeys(1), "one_time_keys", opts)), "M_INVALID_SIGNATURE");
  assert.equal(code(() => checkKeyMap({ "signed_curve25519:A": d.curve25519 }, "one_time_keys", opts)), "M_BAD_JSON");
  assert.equal(code(() => checkKeyMap({ nocolon: d.curve25519 }, "one_time_keys", opts)), "M_BAD_JSON");
  const padded = d.ed25519.sign({ key: d.curve25519, padding: "x".repeat(5000) }, USER, d.keyId);
  assert.equal(code(() => checkKeyMap({ "signed_curve25519:B": padded }, "one_time_keys", opts)), "M_BAD_JSON");
  // Unsigned curve25519 keys (an older algorithm) are plain strings.
  assert.equal(checkKeyMap({ "curve25519:C": d.curve25519 }, "one_time_keys", opts).length, 1);
});

test("cross-signing keys: one ed25519 key named after itself, for the stated usage", () => {
  const cs = new FakeCrossSigning(USER);
  assert.equal(checkCrossSigningKey(cs.masterKey(), "master_key", USER, "master").publicKey, cs.master.publicKey);
  assert.equal(code(() => checkCrossSigningKey(cs.masterKey(), "master_key", USER, "self_signing")), "M_BAD_JSON");
  assert.equal(code(() => checkCrossSigningKey(cs.masterKey(), "master_key", "@bert:example.org", "master")), "M_INVALID_PARAM");
  const twoKeys = { ...cs.masterKey(), keys: { [`ed25519:${cs.master.publicKey}`]: cs.master.publicKey, [`ed25519:${cs.selfSigning.publicKey}`]: cs.selfSigning.publicKey } };
  assert.equal(code(() => checkCrossSigningKey(twoKeys, "master_key", USER, "master")), "M_BAD_JSON");
  const misnamed = { ...cs.masterKey(), keys: { "ed25519:other": cs.master.publicKey } };
  assert.equal(code(() => checkCrossSigningKey(misnamed, "master_key", USER, "master")), "M_BAD_JSON");
});

test("key ids split at the first colon", () => {
  assert.deepEqual(splitKeyId("signed_curve25519:AAAA:B", "x"), { algorithm: "signed_curve25519", id: "AAAA:B" });
  assert.throws(() => splitKeyId(":A", "x"));
  assert.throws(() => splitKeyId("alg:", "x"));
});
