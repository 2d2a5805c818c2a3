import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { UIAuthCallback } from "matrix-js-sdk/lib/interactive-auth.js";
import { describeEachDatabase } from "./support/suite.js";
import { api, enc } from "./support/http.js";
import { waitFor } from "./support/sdk.js";
import { assertConformsToSpec } from "./support/spec.js";
import { createEncryptedRoom, dropClientConnections, passwordAuth, startCryptoClient, verifyWithSas, type CryptoClient } from "./support/crypto-clients.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** A UIA callback as an app would write it: try without auth, answer a password challenge. */
function passwordPrompt(c: CryptoClient): { callback: UIAuthCallback<void>; challenges: () => number } {
  let challenges = 0;
  const callback: UIAuthCallback<void> = async (makeRequest) => {
    try {
      await makeRequest(null);
    } catch (err) {
      const e = err as { httpStatus?: number; data?: { flows?: unknown; session?: string } };
      if (e.httpStatus !== 401 || !e.data?.flows) throw err;
      challenges++;
      await makeRequest({ ...passwordAuth(c.userId), session: e.data.session } as Parameters<typeof makeRequest>[0]);
    }
  };
  return { callback, challenges: () => challenges };
}

describeEachDatabase("cross-signing, secret storage, key backup and SAS verification with matrix-js-sdk", ({ server }) => {
  const clients: CryptoClient[] = [];
  let frida: CryptoClient;
  let gerd: CryptoClient;

  async function start(localpart: string): Promise<CryptoClient> {
    const c = await startCryptoClient(server(), localpart);
    clients.push(c);
    return c;
  }

  before(async () => {
    await server().createUser("frida");
    await server().createUser("gerd");
    frida = await start("frida");
    gerd = await start("gerd");
  });
  after(() => {
    for (const c of clients) c.stop();
    dropClientConnections(server());
  });

  test("cross-signing bootstrap, secret storage and key backup set-up succeed from a fresh account", async () => {
    const crypto = frida.client.getCrypto()!;
    const first = passwordPrompt(frida);
    await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: first.callback });
    assert.equal(first.challenges(), 0, "a fresh account publishes its first cross-signing keys without UIA");
    await crypto.bootstrapSecretStorage({ createSecretStorageKey: () => crypto.createRecoveryKeyFromPassphrase(), setupNewSecretStorage: true, setupNewKeyBackup: true });
    assert.ok(await crypto.isCrossSigningReady());
    assert.ok(await crypto.isSecretStorageReady());
    const version = await waitFor("the client uses the new backup", () => crypto.getActiveSessionBackupVersion());

    const backup = await api<Json>(server().url, "GET", "/_matrix/client/v3/room_keys/version", { token: frida.accessToken });
    assert.equal(backup.status, 200);
    assertConformsToSpec("GET", "/_matrix/client/v3/room_keys/version", 200, backup.body);
    assert.equal(backup.body.version, version);
    assert.equal(backup.body.algorithm, "m.megolm_backup.v1.curve25519-aes-sha2");
    // Secret storage lives in account data: the key description and the encrypted private keys.
    for (const type of ["m.secret_storage.default_key", "m.cross_signing.master", "m.cross_signing.self_signing", "m.cross_signing.user_signing", "m.megolm_backup.v1"]) {
      const res = await api<Json>(server().url, "GET", `/_matrix/client/v3/user/${enc(frida.userId)}/account_data/${type}`, { token: frida.accessToken });
      assert.equal(res.status, 200, `${type} is stored`);
    }

    // Others see the master key, and the device signed by the self-signing key.
    const q = await api<Json>(server().url, "POST", "/_matrix/client/v3/keys/query", { token: gerd.accessToken, body: { device_keys: { [frida.userId]: [] } } });
    assertConformsToSpec("POST", "/_matrix/client/v3/keys/query", 200, q.body);
    const ssk = Object.keys(q.body.self_signing_keys[frida.userId].keys)[0]!;
    assert.ok(q.body.master_keys[frida.userId]);
    assert.ok(q.body.device_keys[frida.userId][frida.deviceId].signatures[frida.userId][ssk], "the device is cross-signed");

    // Replacing existing cross-signing keys asks for the password.
    const reset = passwordPrompt(frida);
    await crypto.bootstrapCrossSigning({ setupNewCrossSigning: true, authUploadDeviceSigningKeys: reset.callback });
    assert.equal(reset.challenges(), 1, "replacing cross-signing keys needs user-interactive auth");
    assert.ok(await crypto.isCrossSigningReady());
    const after = await api<Json>(server().url, "POST", "/_matrix/client/v3/keys/query", { token: gerd.accessToken, body: { device_keys: { [frida.userId]: [] } } });
    assert.notDeepEqual(after.body.master_keys[frida.userId], q.body.master_keys[frida.userId]);
  });

  test("SAS (emoji) verification between two devices of one user", async () => {
    const second = await start("frida");
    await waitFor("the first device knows the second", async () => (await frida.client.getCrypto()!.getUserDeviceInfo([frida.userId])).get(frida.userId)?.has(second.deviceId));
    const { initiatorEmoji, responderEmoji } = await verifyWithSas(second, frida, () => second.client.getCrypto()!.requestOwnUserVerification());
    assert.equal(initiatorEmoji.length, 7);
    assert.deepEqual(initiatorEmoji, responderEmoji);
    // The verified device gets cross-signed (a signature upload) and everyone can see it.
    await waitFor("the first device sees the second as cross-signed", async () => (await frida.client.getCrypto()!.getDeviceVerificationStatus(frida.userId, second.deviceId))?.crossSigningVerified);
    await waitFor("gerd sees frida's second device as cross-signed", async () => {
      const q = await api<Json>(server().url, "POST", "/_matrix/client/v3/keys/query", { token: gerd.accessToken, body: { device_keys: { [frida.userId]: [second.deviceId] } } });
      const ssk = Object.keys(q.body.self_signing_keys[frida.userId].keys)[0]!;
      return q.body.device_keys[frida.userId][second.deviceId]?.signatures[frida.userId][ssk] !== undefined;
    });
    // The new device then asks the verified one for the private cross-signing keys, over to-device.
    await waitFor("the second device received the cross-signing keys", async () => (await second.client.getCrypto()!.getCrossSigningStatus()).privateKeysCachedLocally.selfSigningKey);
  });

  test("SAS (emoji) verification between two users", async () => {
    const prompt = passwordPrompt(gerd);
    await gerd.client.getCrypto()!.bootstrapCrossSigning({ authUploadDeviceSigningKeys: prompt.callback });
    // Clients track the devices of the people they share rooms with; a direct chat makes them track each other.
    await createEncryptedRoom(frida, [gerd], { direct: true });
    await waitFor("frida knows gerd's device", async () => (await frida.client.getCrypto()!.getUserDeviceInfo([gerd.userId])).get(gerd.userId)?.has(gerd.deviceId));
    await waitFor("frida knows gerd's cross-signing keys", () => frida.client.getCrypto()!.userHasCrossSigningKeys(gerd.userId));
    const { initiatorEmoji, responderEmoji } = await verifyWithSas(frida, gerd, () => frida.client.getCrypto()!.requestDeviceVerification(gerd.userId, gerd.deviceId));
    assert.deepEqual(initiatorEmoji, responderEmoji);
    await waitFor("frida trusts gerd", async () => (await frida.client.getCrypto()!.getUserVerificationStatus(gerd.userId)).isCrossSigningVerified());
    await waitFor("gerd trusts frida", async () => (await gerd.client.getCrypto()!.getUserVerificationStatus(frida.userId)).isCrossSigningVerified());
    // Frida's user-signing key signed gerd's master key; the server shows that signature to her.
    const q = await api<Json>(server().url, "POST", "/_matrix/client/v3/keys/query", { token: frida.accessToken, body: { device_keys: { [gerd.userId]: [] } } });
    assert.ok(q.body.master_keys[gerd.userId].signatures[frida.userId], "frida's signature on gerd's master key");
  });
});
