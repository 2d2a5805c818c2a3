/**
 * Media storage that refuses writes: full, or not writable. Each failure is a real one from the
 * kernel, not a simulated exception:
 *
 * - ENOSPC: the server process runs in its own mount namespace with a 2 MiB tmpfs over its media
 *   directory (needs root and `unshare`; skipped with the reason otherwise). The mount exists only
 *   for that process and disappears with it.
 * - ENOTDIR: the upload directory, then the blob directory, replaced by a plain file — what a
 *   broken or unmounted network share looks like, and it bites root too.
 * - EACCES: the directories made read-only with chmod 0500 (only when not running as root, since
 *   root ignores file modes).
 *
 * Every time: the upload fails with a clear Matrix error, nothing of it is kept (no row, no
 * reference, no quota used, no temporary file), the server keeps serving messages, and uploads
 * work again once the storage is back.
 */
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { createScratchDatabase, DB_KINDS, PG_SKIP_MESSAGE, postgresReachable } from "./support/databases.js";
import { startTestServer, type TestServer } from "./support/server.js";
import { call, enc, faultsTempDir, removeDir, spawnServer, type Json, type ServerProcess } from "./faults-support.js";

const pgOk = await postgresReachable();
const isRoot = process.getuid?.() === 0;

/** An upload written by hand: the server may answer before it has read the whole body. */
function upload(base: string, token: string, data: Buffer): Promise<{ status: number; body: Json }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}/_matrix/media/v3/upload`, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/octet-stream", "content-length": String(data.length) } });
    let answered = false;
    req.on("response", (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}") as Json }));
      res.on("error", reject);
    });
    // Once the server has answered, writing into the closing connection may fail; that is fine.
    req.on("error", (err) => {
      if (!answered) reject(err);
    });
    req.end(data);
  });
}

async function download(base: string, token: string, mxc: string): Promise<{ status: number; bytes: Buffer }> {
  const [serverName, mediaId] = mxc.replace("mxc://", "").split("/");
  const res = await fetch(`${base}/_matrix/client/v1/media/download/${serverName}/${mediaId}`, { headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, bytes: Buffer.from(await res.arrayBuffer()) };
}

function filesIn(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** The room keeps working: a message goes out and comes back through /sync. */
async function messagesFlow(base: string, token: string, roomId: string, body: string): Promise<void> {
  const sent = await call<Json>(base, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${enc(body)}`, { token, body: { msgtype: "m.text", body } });
  assert.equal(sent.status, 200, JSON.stringify(sent.body));
  const synced = await call<Json>(base, "GET", `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=1`, { token });
  assert.equal(synced.status, 200);
  assert.equal(synced.body.chunk[0].content.body, body);
}

function assertStorageError(res: { status: number; body: Json }, reason: RegExp): void {
  assert.ok(res.status === 503 || res.status === 507, `status ${res.status}: ${JSON.stringify(res.body)}`);
  assert.equal(res.body.errcode, "M_UNKNOWN");
  assert.match(String(res.body.error), reason);
  assert.match(String(res.body.error), /not stored/);
}

for (const kind of DB_KINDS) {
  describe(`media storage refuses writes [${kind}]`, { skip: kind === "postgres" && !pgOk ? PG_SKIP_MESSAGE : false }, () => {
    let server: TestServer | undefined;
    let dataDir: string | undefined;
    let drop: (() => Promise<void>) | undefined;
    after(async () => {
      await server?.stop();
      removeDir(dataDir);
      await drop?.();
    });

    test("upload or blob directory not writable: clear error, nothing kept, messages flow, recovers", async (t) => {
      dataDir = faultsTempDir("media");
      let databaseUrl: string | null = null;
      if (kind === "postgres") ({ url: databaseUrl, drop } = await createScratchDatabase());
      server = await startTestServer(kind, {}, { dataDir, databaseUrl });
      const s = server;
      await s.createUser("anna");
      const anna = await s.login("anna");
      const room = await call<Json>(s.url, "POST", "/_matrix/client/v3/createRoom", { token: anna.access_token, body: { preset: "private_chat" } });
      const roomId = room.body.room_id as string;
      const media = path.join(dataDir, "media");
      const tmp = path.join(media, "tmp");
      const blobs = path.join(media, "blobs");

      const photo = randomBytes(200 * 1024);
      const before = await upload(s.url, anna.access_token, photo);
      assert.equal(before.status, 200);
      const state = async () => ({
        media: Number((await s.services.storage.db.selectFrom("media").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirst())?.n),
        blobs: (await s.services.storage.db.selectFrom("media_blobs").select(["sha256", "refcount"]).orderBy("sha256").execute()).map((r) => `${r.sha256}:${r.refcount}`),
        used: await s.services.media.usedBytes(anna.user_id),
      });
      const clean = await state();

      const scenarios: Array<{ name: string; reason: RegExp; break: () => void; repair: () => void }> = [
        {
          name: "upload directory replaced by a file (ENOTDIR)",
          reason: /cannot write media/,
          break: () => {
            renameSync(tmp, `${tmp}.away`);
            writeFileSync(tmp, "not a directory");
          },
          repair: () => {
            rmSync(tmp);
            renameSync(`${tmp}.away`, tmp);
          },
        },
        {
          name: "blob directory replaced by a file (ENOTDIR on publish, after the database write)",
          reason: /cannot write media/,
          break: () => {
            renameSync(blobs, `${blobs}.away`);
            writeFileSync(blobs, "not a directory");
          },
          repair: () => {
            rmSync(blobs);
            renameSync(`${blobs}.away`, blobs);
          },
        },
      ];
      if (!isRoot) {
        scenarios.push(
          { name: "upload directory read-only (EACCES)", reason: /cannot write media/, break: () => chmodSync(tmp, 0o500), repair: () => chmodSync(tmp, 0o700) },
          {
            name: "blob directory read-only (EACCES on publish)",
            reason: /cannot write media/,
            break: () => {
              for (const d of readdirSync(blobs)) chmodSync(path.join(blobs, d), 0o500);
              chmodSync(blobs, 0o500);
            },
            repair: () => {
              chmodSync(blobs, 0o700);
              for (const d of readdirSync(blobs)) chmodSync(path.join(blobs, d), 0o700);
            },
          },
        );
      } else {
        t.diagnostic("running as root, which file modes do not restrict: the chmod 0500 variants are skipped; ENOTDIR and ENOSPC cover unwritable storage");
      }

      for (const sc of scenarios) {
        sc.break();
        try {
          const failed = await upload(s.url, anna.access_token, randomBytes(300 * 1024));
          assertStorageError(failed, sc.reason);
          assert.deepEqual(await state(), clean, `${sc.name}: no row, no reference, no quota used`);
          await messagesFlow(s.url, anna.access_token, roomId, `weiter trotz ${sc.name}`);
        } finally {
          sc.repair();
        }
        assert.deepEqual(filesIn(tmp), [], `${sc.name}: no temporary file left behind`);
        const old = await download(s.url, anna.access_token, before.body.content_uri);
        assert.equal(old.status, 200);
        assert.ok(old.bytes.equals(photo), "earlier media is intact");
      }

      // Storage is back: uploads work again, without a restart.
      const again = randomBytes(100 * 1024);
      const ok = await upload(s.url, anna.access_token, again);
      assert.equal(ok.status, 200, JSON.stringify(ok.body));
      assert.ok((await download(s.url, anna.access_token, ok.body.content_uri)).bytes.equals(again));
    });
  });
}

/** Whether this process may give a child its own mount namespace with a tmpfs. */
function canMountPrivately(): string | false {
  if (!isRoot) return "needs root to mount a tmpfs in a private mount namespace";
  const probe = spawnSync("unshare", ["--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt && umount /mnt"], { stdio: "ignore" });
  return probe.status === 0 ? false : "unshare --mount with a tmpfs is not permitted here";
}

const cannotMount = canMountPrivately();

describe("media storage full (ENOSPC on a 2 MiB tmpfs)", { skip: cannotMount ? `${cannotMount} — ENOSPC variant skipped` : false }, () => {
  let dataDir: string | undefined;
  let proc: ServerProcess | undefined;
  after(async () => {
    await proc?.kill();
    removeDir(dataDir);
  });

  test("a full disk fails the upload with a clear error, frees what it wrote, and messages keep flowing", async () => {
    dataDir = faultsTempDir("enospc");
    const seed = await startTestServer("sqlite", {}, { dataDir, databaseUrl: null });
    await seed.createUser("anna");
    const anna = await seed.login("anna");
    const room = await call<Json>(seed.url, "POST", "/_matrix/client/v3/createRoom", { token: anna.access_token, body: { preset: "private_chat" } });
    const roomId = room.body.room_id as string;
    await seed.stop();
    const media = path.join(dataDir, "media");
    mkdirSync(media, { recursive: true });

    // The server sees a 2 MiB tmpfs at its media directory; the database stays on the real disk.
    proc = await spawnServer({ REVIER_DATA_DIR: dataDir }, { wrap: ["unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount -t tmpfs -o size=2m,mode=0700 tmpfs "$0" && exec "$@"', media] });
    const base = proc.url;
    // The mount is visible only inside the server's namespace: look through its root.
    const tmpInside = `/proc/${proc.child.pid}/root${media}/tmp`;
    assert.ok(existsSync(tmpInside), "the server's private media directory is reachable through /proc");

    const first = randomBytes(1024 * 1024);
    const stored = await upload(base, anna.access_token, first);
    assert.equal(stored.status, 200, JSON.stringify(stored.body));

    const full = await upload(base, anna.access_token, randomBytes(3 * 1024 * 1024));
    assert.equal(full.status, 507, JSON.stringify(full.body));
    assertStorageError(full, /full/);
    assert.deepEqual(filesIn(tmpInside), [], "the partial upload was removed");
    await messagesFlow(base, anna.access_token, roomId, "Speicher voll, Funk geht");

    // What the failed upload wrote was freed: a file that fits only into that space is accepted.
    const fits = randomBytes(700 * 1024);
    const second = await upload(base, anna.access_token, fits);
    assert.equal(second.status, 200, `space was freed after the failure: ${JSON.stringify(second.body)}`);
    assert.ok((await download(base, anna.access_token, stored.body.content_uri)).bytes.equals(first));
    assert.ok((await download(base, anna.access_token, second.body.content_uri)).bytes.equals(fits));
    const log = proc.output();
    assert.match(log, /ENOSPC/, "the operator's log names the cause");
  });
});
