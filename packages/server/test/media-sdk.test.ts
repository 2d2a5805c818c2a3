import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import path from "node:path";
import sharp from "sharp";
import { describeEachDatabase } from "./support/suite.js";
import { sdk, sendRaw, startClient, waitFor, type Client } from "./support/sdk.js";

/** The `file` object of an encrypted attachment (spec: "Sending encrypted attachments"). */
interface EncryptedFile {
  url: string;
  key: { kty: "oct"; key_ops: string[]; alg: "A256CTR"; k: string; ext: true };
  iv: string;
  hashes: { sha256: string };
  v: "v2";
}

const unpadded = (b: Buffer) => b.toString("base64").replace(/=+$/, "");

/**
 * Encrypts as a client does before uploading: AES-256-CTR under a fresh key, the upper half of the
 * IV random and the lower half (the block counter) zero, and a SHA-256 of the ciphertext so the
 * receiver can check what the server handed back.
 */
function encryptAttachment(plaintext: Buffer): { ciphertext: Buffer; info: Omit<EncryptedFile, "url"> } {
  const key = randomBytes(32);
  const iv = Buffer.concat([randomBytes(8), Buffer.alloc(8)]);
  const cipher = createCipheriv("aes-256-ctr", key, iv);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return {
    ciphertext,
    info: {
      key: { kty: "oct", key_ops: ["encrypt", "decrypt"], alg: "A256CTR", k: key.toString("base64url"), ext: true },
      iv: unpadded(iv),
      hashes: { sha256: unpadded(createHash("sha256").update(ciphertext).digest()) },
      v: "v2",
    },
  };
}

function decryptAttachment(ciphertext: Buffer, file: EncryptedFile): Buffer {
  assert.equal(unpadded(createHash("sha256").update(ciphertext).digest()), file.hashes.sha256, "ciphertext hash");
  const decipher = createDecipheriv("aes-256-ctr", Buffer.from(file.key.k, "base64url"), Buffer.from(file.iv, "base64"));
  return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
}

function messageContent(client: Client, roomId: string, body: string): Record<string, unknown> | undefined {
  return client
    .getRoom(roomId)
    ?.getLiveTimeline()
    .getEvents()
    .find((e) => e.getType() === "m.room.message" && e.getContent().body === body)
    ?.getContent();
}

async function fetchAuthed(client: Client, url: string): Promise<{ status: number; bytes: Buffer; headers: Headers }> {
  const res = await fetch(url, { headers: { authorization: `Bearer ${client.getAccessToken()}` } });
  return { status: res.status, bytes: Buffer.from(await res.arrayBuffer()), headers: res.headers };
}

describeEachDatabase("media between matrix-js-sdk clients", ({ server }) => {
  let anna: Client;
  let bert: Client;

  before(async () => {
    for (const u of ["anna", "bert"]) await server().createUser(u);
    anna = await startClient(server(), "anna");
    bert = await startClient(server(), "bert");
  });
  after(() => {
    for (const c of [anna, bert]) c?.stopClient();
  });

  test("the server advertises v1.11, so the SDK may use authenticated media", async () => {
    assert.ok(await bert.isVersionSupported("v1.11"));
  });

  test("a photo and a voice message sent as encrypted attachments decrypt to the original bytes", async () => {
    const { room_id: roomId } = await anna.createRoom({ preset: sdk.Preset.PrivateChat, name: "Ermittlung 4711", invite: [bert.getUserId()!] });
    await waitFor("bert's invite", () => bert.getRoom(roomId)?.getMyMembership() === "invite");
    await bert.joinRoom(roomId);

    const photo = await sharp({ create: { width: 640, height: 480, channels: 3, background: "#556b2f" } })
      .composite([{ input: await sharp({ create: { width: 200, height: 100, channels: 3, background: "#ffffff" } }).png().toBuffer(), left: 50, top: 60 }])
      .jpeg({ quality: 90 })
      .toBuffer();
    // An Ogg Opus voice message as far as the server could ever tell: it only sees ciphertext.
    const voice = Buffer.concat([Buffer.from("OggS\0\x02", "latin1"), randomBytes(48_000)]);

    const sent: Array<{ body: string; plaintext: Buffer; ciphertext: Buffer }> = [];
    for (const [body, plaintext, msgtype, info, extra] of [
      ["tatort.jpg", photo, "m.image", { mimetype: "image/jpeg", size: photo.length, w: 640, h: 480 }, {}],
      ["Sprachnachricht.ogg", voice, "m.audio", { mimetype: "audio/ogg", size: voice.length, duration: 3000 }, { "org.matrix.msc3245.voice": {} }],
    ] as const) {
      const { ciphertext, info: enc } = encryptAttachment(plaintext);
      // Clients upload ciphertext as opaque bytes, without a file name the server could read.
      const { content_uri: url } = await anna.uploadContent(new Uint8Array(ciphertext), { type: "application/octet-stream", includeFilename: false });
      assert.match(url, /^mxc:\/\//);
      await sendRaw(anna, roomId, "m.room.message", { msgtype, body, info, file: { url, ...enc }, ...extra });
      sent.push({ body, plaintext, ciphertext });
    }

    for (const { body, plaintext, ciphertext } of sent) {
      const content = await waitFor(`bert receives ${body}`, () => messageContent(bert, roomId, body));
      const file = content.file as EncryptedFile;
      const httpUrl = bert.mxcUrlToHttp(file.url, undefined, undefined, undefined, false, true, true);
      assert.ok(httpUrl);
      assert.match(new URL(httpUrl).pathname, /^\/_matrix\/client\/v1\/media\/download\//);
      const res = await fetchAuthed(bert, httpUrl);
      assert.equal(res.status, 200, body);
      assert.equal(res.headers.get("content-type"), "application/octet-stream");
      assert.equal(res.headers.get("content-disposition"), "attachment");
      assert.deepEqual(decryptAttachment(res.bytes, file), plaintext, body);

      // The server holds the ciphertext and nothing else.
      const blobs = path.join(server().dataDir, "media", "blobs");
      const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
      assert.ok(existsSync(path.join(blobs, sha(ciphertext).slice(0, 2), sha(ciphertext).slice(2, 4), sha(ciphertext))));
      assert.ok(!existsSync(path.join(blobs, sha(plaintext).slice(0, 2), sha(plaintext).slice(2, 4), sha(plaintext))));

      const anonymous = await fetch(httpUrl);
      assert.equal(anonymous.status, 401);
    }
  });

  test("an image in a channel: the receiving SDK gets thumbnails of the right size through authenticated URLs", async () => {
    const { room_id: roomId } = await anna.createRoom({ visibility: sdk.Visibility.Public, preset: sdk.Preset.PublicChat, name: "Lage Nord" });
    await bert.joinRoom(roomId);
    const image = await sharp({ create: { width: 1200, height: 900, channels: 3, background: "#1e50c8" } }).png().toBuffer();
    const { content_uri: url } = await anna.uploadContent(new Uint8Array(image), { type: "image/png", name: "Karte Einsatzraum.png" });
    await sendRaw(anna, roomId, "m.room.message", { msgtype: "m.image", body: "Karte Einsatzraum.png", url, info: { mimetype: "image/png", size: image.length, w: 1200, h: 900 } });
    const content = await waitFor("bert receives the image", () => messageContent(bert, roomId, "Karte Einsatzraum.png"));

    const full = await fetchAuthed(bert, bert.mxcUrlToHttp(String(content.url), undefined, undefined, undefined, false, true, true)!);
    assert.equal(full.status, 200);
    assert.deepEqual(full.bytes, image);
    assert.equal(full.headers.get("content-disposition"), 'inline; filename="Karte Einsatzraum.png"');

    for (const [w, h, method, ew, eh] of [
      [32, 32, "crop", 32, 32],
      [96, 96, "crop", 96, 96],
      [320, 240, "scale", 320, 240],
      [800, 600, "scale", 800, 600],
      [400, 400, "scale", 640, 480],
    ] as const) {
      const thumbUrl = bert.mxcUrlToHttp(String(content.url), w, h, method, false, true, true)!;
      assert.match(new URL(thumbUrl).pathname, /^\/_matrix\/client\/v1\/media\/thumbnail\//);
      const res = await fetchAuthed(bert, thumbUrl);
      assert.equal(res.status, 200, `${method} ${w}x${h}`);
      const meta = await sharp(res.bytes).metadata();
      assert.deepEqual([meta.width, meta.height], [ew, eh], `${method} ${w}x${h}`);
    }
  });
});
