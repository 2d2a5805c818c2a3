/**
 * SIGTERM to a real server process (REVIER_SHUTDOWN_GRACE_MS=4000) while it has work in flight and
 * idle connections open: in-flight requests finish, long-polls return at once, a request that
 * would not finish in time is cut, nothing half-written stays behind, and the process exits 0
 * within the grace period — also with idle keep-alive sockets and half-sent requests open.
 */
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { startTestServer } from "./support/server.js";
import { call, faultsTempDir, removeDir, sleep, spawnServer, type Json, type ServerProcess } from "./faults-support.js";

const GRACE_MS = 4_000;

/** An upload whose body is written by the test at its own pace. */
function slowUpload(base: string, token: string, data: Buffer) {
  const req = http.request(`${base}/_matrix/media/v3/upload`, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/octet-stream", "content-length": String(data.length) } });
  const response = new Promise<{ status: number; body: Json } | { error: string }>((resolve) => {
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}") as Json }));
      res.on("error", (err) => resolve({ error: err.message }));
    });
    req.on("error", (err) => resolve({ error: (err as NodeJS.ErrnoException).code ?? err.message }));
  });
  req.flushHeaders();
  return { req, response };
}

describe("SIGTERM with work in flight", () => {
  let dataDir: string | undefined;
  let proc: ServerProcess | undefined;
  after(async () => {
    await proc?.kill();
    removeDir(dataDir);
  });

  test("in-flight requests finish, long-polls return, stuck ones are cut, exit 0 within the grace period", async () => {
    dataDir = faultsTempDir("sigterm");
    const seed = await startTestServer("sqlite", {}, { dataDir, databaseUrl: null });
    await seed.createUser("anna");
    const anna = await seed.login("anna");
    await seed.stop();

    proc = await spawnServer({ REVIER_DATA_DIR: dataDir, REVIER_SHUTDOWN_GRACE_MS: String(GRACE_MS) });
    const base = proc.url;
    const { port } = proc;

    // Idle connections: bare sockets that never send a byte, one that sent half a request line,
    // and a keep-alive connection resting after a completed request.
    const idle: net.Socket[] = [];
    for (let i = 0; i < 3; i++) idle.push(net.connect({ host: "127.0.0.1", port }));
    const partial = net.connect({ host: "127.0.0.1", port }, () => partial.write("GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n"));
    idle.push(partial);
    for (const s of idle) s.on("error", () => undefined);
    const agent = new http.Agent({ keepAlive: true });
    await new Promise<void>((resolve, reject) => {
      http
        .get(`${base}/_matrix/client/versions`, { agent }, (res) => {
          res.resume();
          res.on("end", () => resolve());
        })
        .on("error", reject);
    });
    assert.equal(Object.values(agent.freeSockets).flat().length, 1, "a keep-alive socket rests in the agent");

    // In flight: a long-poll, an upload that finishes during the grace period, one that never would.
    const first = await call<Json>(base, "GET", "/_matrix/client/v3/sync?timeout=0", { token: anna.access_token });
    const longPoll = call<Json>(base, "GET", `/_matrix/client/v3/sync?timeout=30000&since=${first.body.next_batch}`, { token: anna.access_token, timeoutMs: 40_000 }).then((r) => ({ ...r, at: Date.now() }));
    const photo = randomBytes(256 * 1024);
    const finishing = slowUpload(base, anna.access_token, photo);
    finishing.req.write(photo.subarray(0, 100 * 1024));
    const stuckData = randomBytes(256 * 1024);
    const stuck = slowUpload(base, anna.access_token, stuckData);
    stuck.req.write(stuckData.subarray(0, 64 * 1024));
    await sleep(500);
    const tmpDir = path.join(dataDir, "media", "tmp");
    assert.equal(readdirSync(tmpDir).length, 2, "both uploads are being received");

    const signalled = Date.now();
    proc.child.kill("SIGTERM");

    // The long-poll answers at once instead of at its timeout.
    const polled = await longPoll;
    assert.equal(polled.status, 200);
    assert.ok(polled.at - signalled < 2_500, `long-poll returned ${polled.at - signalled} ms after SIGTERM (its timeout is 30 s)`);

    // The listener is closed: a new connection is refused (or answered 503 while closing).
    const late = await call(base, "GET", "/_matrix/client/versions", { timeoutMs: 2_000 });
    assert.ok(late.status === 0 || late.status === 503, `new request after SIGTERM: ${late.status} ${late.error ?? ""}`);

    // The in-flight upload finishes and is answered.
    await sleep(300);
    finishing.req.end(photo.subarray(100 * 1024));
    const done = await finishing.response;
    assert.ok("status" in done && done.status === 200, `in-flight upload: ${JSON.stringify(done)}`);
    const mediaId = String((done as { body: Json }).body.content_uri).split("/").pop()!;

    // Idle sockets and the stuck upload are cut before the grace period runs out; exit is clean.
    const exit = await proc.exited;
    const took = Date.now() - signalled;
    assert.equal(exit.code, 0, `exit code ${exit.code} (signal ${exit.signal}):\n${proc.output().slice(-1500)}`);
    assert.ok(took <= GRACE_MS, `exited ${took} ms after SIGTERM; the grace period is ${GRACE_MS} ms`);
    const cut = await stuck.response;
    assert.ok("error" in cut || cut.status >= 500, `the stuck upload was cut: ${JSON.stringify(cut)}`);
    for (const s of idle) assert.ok(s.destroyed || s.readableEnded, "idle socket closed by the server");
    agent.destroy();
    const lines = proc.output().trim().split("\n").flatMap((l) => {
      try {
        return [JSON.parse(l) as { msg: string }];
      } catch {
        return [];
      }
    });
    assert.ok(lines.some((l) => l.msg === "shutting down"));
    assert.ok(!lines.some((l) => l.msg === "shutdown grace period exceeded; exiting"));

    // The finished upload is stored, whole; the cut one left nothing.
    const db = new Database(path.join(dataDir, "revier.db"), { readonly: true });
    const row = db.prepare("select sha256, size from media where media_id = ?").get(mediaId) as { sha256: string; size: number } | undefined;
    const uploads = (db.prepare("select count(*) as n from media").get() as { n: number }).n;
    db.close();
    assert.ok(row, "the upload that finished during shutdown is recorded");
    assert.equal(row.size, photo.length);
    assert.ok(readFileSync(path.join(dataDir, "media", "blobs", row.sha256.slice(0, 2), row.sha256.slice(2, 4), row.sha256)).equals(photo));
    assert.equal(uploads, 1, "only the finished upload is recorded");
    assert.deepEqual(readdirSync(tmpDir), [], "the cut upload's temporary file is gone");
  });
});
