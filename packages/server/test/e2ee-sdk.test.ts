import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { api } from "./support/http.js";
import { waitFor } from "./support/sdk.js";
import {
  createEncryptedRoom,
  decryptedBodies,
  passwordAuth,
  startCryptoClient,
  timelineEvent,
  waitForDecrypted,
  waitForDeviceList,
  dropClientConnections,
  type CryptoClient,
} from "./support/crypto-clients.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const USERS = ["anna", "bert", "carla", "dieter", "erik"];

describeEachDatabase("end-to-end encryption with matrix-js-sdk and its Rust crypto", ({ server }) => {
  /** Two devices per user, all syncing for the whole suite. */
  const devices = new Map<string, [CryptoClient, CryptoClient]>();
  const extra: CryptoClient[] = [];
  let groupRoom = "";
  const dev = (name: string, i: 0 | 1) => devices.get(name)![i];
  const all = () => [...devices.values()].flat();

  before(async () => {
    for (const u of USERS) await server().createUser(u);
    for (const u of USERS) devices.set(u, [await startCryptoClient(server(), u, { deviceName: `${u} Telefon` }), await startCryptoClient(server(), u, { deviceName: `${u} Laptop` })]);
  });
  after(() => {
    for (const c of [...all(), ...extra]) c.stop();
    dropClientConnections(server());
  });

  test("an encrypted direct chat: messages both ways decrypt on both devices of each side", async () => {
    const roomId = await createEncryptedRoom(dev("anna", 0), [dev("anna", 1), dev("bert", 0), dev("bert", 1)], { direct: true });
    await dev("anna", 0).client.sendTextMessage(roomId, "Treffpunkt Wache Süd, 14 Uhr");
    await dev("bert", 1).client.sendTextMessage(roomId, "Verstanden, bin da");
    for (const c of [dev("anna", 0), dev("anna", 1), dev("bert", 0), dev("bert", 1)]) {
      await waitForDecrypted(c, roomId, "Treffpunkt Wache Süd, 14 Uhr");
      await waitForDecrypted(c, roomId, "Verstanden, bin da");
    }
    // What the server stored is ciphertext.
    await dev("anna", 0).client.sendTextMessage(roomId, "Nur für euch");
    await waitForDecrypted(dev("bert", 0), roomId, "Nur für euch");
    const raw = await api<Json>(server().url, "GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=1`, { token: dev("bert", 0).accessToken });
    assert.equal(raw.body.chunk[0].type, "m.room.encrypted");
    assert.equal(JSON.stringify(raw.body.chunk[0]).includes("Nur für euch"), false);
  });

  test("an encrypted group room of 5 users with 2 devices each: every message decrypts on every device", async () => {
    groupRoom = await createEncryptedRoom(dev("anna", 0), all().filter((c) => c !== dev("anna", 0)));
    const sent: string[] = [];
    for (const [i, u] of USERS.entries()) {
      const body = `Lagemeldung ${i + 1} von ${u}`;
      await dev(u, (i % 2) as 0 | 1).client.sendTextMessage(groupRoom, body);
      sent.push(body);
    }
    for (const c of all()) for (const body of sent) await waitForDecrypted(c, groupRoom, body);
    // A sender shows its own message where it sent it (local echo), so compare contents, not order.
    for (const c of all()) assert.deepEqual([...decryptedBodies(c, groupRoom)].sort(), [...sent].sort(), `${c.userId}/${c.deviceId} shows exactly these messages`);
  });

  test("a device that signs in later reads what is sent after it joined, and after restoring the key backup also the history", async () => {
    assert.ok(groupRoom, "needs the group room");
    const carla = dev("carla", 0);
    // Carla turns on key backup on her phone; her existing room keys go into it.
    await carla.client.getCrypto()!.bootstrapSecretStorage({
      createSecretStorageKey: () => carla.client.getCrypto()!.createRecoveryKeyFromPassphrase(),
      setupNewSecretStorage: true,
      setupNewKeyBackup: true,
    });
    const info = await waitFor("the backup holds the group room's keys", async () => {
      const res = await api<Json>(server().url, "GET", "/_matrix/client/v3/room_keys/version", { token: carla.accessToken });
      return res.status === 200 && res.body.count >= USERS.length ? res.body : undefined;
    });
    const history = decryptedBodies(carla, groupRoom);

    // A new device: it cannot read the history yet, but what is sent now reaches it.
    const tablet = await startCryptoClient(server(), "carla", { deviceName: "carla Tablet" });
    extra.push(tablet);
    await waitFor("the tablet sees the room", () => tablet.client.getRoom(groupRoom)?.getMyMembership() === "join");
    for (const c of all()) await waitForDeviceList(c, tablet.userId, [dev("carla", 0).deviceId, dev("carla", 1).deviceId, tablet.deviceId]);
    await dev("dieter", 1).client.sendTextMessage(groupRoom, "Neue Lage ab 16 Uhr");
    await waitForDecrypted(tablet, groupRoom, "Neue Lage ab 16 Uhr");
    assert.equal(history.some((b) => decryptedBodies(tablet, groupRoom).includes(b)), false, "the new device cannot read older messages by itself");

    // With the recovery key (here: handed over from the phone) the tablet restores the backup.
    for (const [id, key] of carla.secretStorageKeys) tablet.secretStorageKeys.set(id, key);
    await tablet.client.getCrypto()!.loadSessionBackupPrivateKeyFromSecretStorage();
    const restored = await tablet.client.getCrypto()!.restoreKeyBackup();
    assert.ok(restored.imported >= USERS.length, `restored ${restored.imported} of ${restored.total} keys from backup version ${info.version}`);
    for (const body of history) await waitForDecrypted(tablet, groupRoom, body);
  });

  test("a removed device: its token dies, it leaves everyone's device list at their next sync, and the next message is not encrypted to it", async () => {
    assert.ok(groupRoom, "needs the group room");
    const [erik, lost] = devices.get("erik")!;
    const anna = dev("anna", 0);
    const others = [...all(), ...extra].filter((c) => c !== lost);
    for (const c of others) await waitForDeviceList(c, erik.userId, [erik.deviceId, lost.deviceId]);
    const before = await anna.client.sendTextMessage(groupRoom, "Vor dem Entfernen");
    for (const c of others) await waitForDecrypted(c, groupRoom, "Vor dem Entfernen");

    await erik.client.deleteDevice(lost.deviceId, passwordAuth(erik.userId));
    lost.stop();
    const dead = await api<Json>(server().url, "GET", "/_matrix/client/v3/account/whoami", { token: lost.accessToken });
    assert.equal(dead.status, 401);
    assert.equal(dead.body.errcode, "M_UNKNOWN_TOKEN");
    assert.equal(dead.body.soft_logout, false);
    for (const c of others) await waitForDeviceList(c, erik.userId, [erik.deviceId]);

    const mark = anna.sent.length;
    const afterId = (await anna.client.sendTextMessage(groupRoom, "Nach dem Entfernen")).event_id;
    for (const c of others) await waitForDecrypted(c, groupRoom, "Nach dem Entfernen");
    const toDevice = anna.sent.slice(mark).filter((r) => r.path.includes("/sendToDevice/"));
    const recipients = toDevice.flatMap((r) => Object.entries((r.body as Json).messages as Json).flatMap(([u, byDevice]) => Object.keys(byDevice as Json).map((d) => `${u}/${d}`)));
    assert.ok(recipients.includes(`${erik.userId}/${erik.deviceId}`), "the new room key went to Erik's remaining device");
    assert.equal(recipients.includes(`${erik.userId}/${lost.deviceId}`), false, "and not to the removed one");
    // The room key changed, so what the removed device knew does not decrypt the new message.
    const sessionOf = (id: string) => timelineEvent(dev("bert", 0), groupRoom, id)?.getWireContent().session_id as string | undefined;
    assert.notEqual(sessionOf(afterId), sessionOf(before.event_id));
  });
});
