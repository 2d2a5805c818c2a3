import { before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readdirSync, statSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { deflateSync } from "node:zlib";
import sharp from "sharp";
import { describeEachDatabase } from "./support/suite.js";
import { api } from "./support/http.js";
import { waitFor } from "./support/sdk.js";
import { assertConformsToSpec } from "./support/spec.js";
import type { TestServer } from "./support/server.js";

const MAX_UPLOAD = 2 * 1024 * 1024;
const QUOTA = 6 * 1024 * 1024;

interface Uploaded {
  status: number;
  body: Record<string, unknown>;
  mediaId: string;
}

async function upload(server: TestServer, token: string, data: Buffer, opts: { contentType?: string; filename?: string } = {}): Promise<Uploaded> {
  const query = opts.filename !== undefined ? `?filename=${encodeURIComponent(opts.filename)}` : "";
  const res = await api(server.url, "POST", `/_matrix/media/v3/upload${query}`, { token, rawBody: data, headers: { "content-type": opts.contentType ?? "application/octet-stream" } });
  const uri = typeof res.body.content_uri === "string" ? res.body.content_uri : "";
  return { status: res.status, body: res.body, mediaId: uri.split("/").pop() ?? "" };
}

async function get(server: TestServer, urlPath: string, token?: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; bytes: Buffer; json: Record<string, unknown> | null }> {
  const res = await fetch(`${server.url}${urlPath}`, { headers: { ...headers, ...(token ? { authorization: `Bearer ${token}` } : {}) } });
  const bytes = Buffer.from(await res.arrayBuffer());
  let json: Record<string, unknown> | null = null;
  if (res.headers.get("content-type")?.startsWith("application/json")) json = JSON.parse(bytes.toString("utf8")) as Record<string, unknown>;
  return { status: res.status, headers: res.headers, bytes, json };
}

/**
 * A request written by hand, for what fetch cannot do: send a Content-Length it never fulfils,
 * stop writing without ending, or vanish mid-body. Resolves with the response as soon as one
 * arrives; the body writer stops at `stopAfter` bytes without ending the request.
 */
function rawRequest(
  server: TestServer,
  opts: { method: string; path: string; headers: Record<string, string>; body?: Buffer; stopAfter?: number },
): { response: Promise<{ status: number; body: Record<string, unknown> }>; req: http.ClientRequest; written: () => number } {
  const req = http.request(`${server.url}${opts.path}`, { method: opts.method, headers: opts.headers });
  let written = 0;
  const response = new Promise<{ status: number; body: Record<string, unknown> }>((resolve, reject) => {
    let answered = false;
    req.on("response", (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}") as Record<string, unknown> }));
      res.on("error", reject);
    });
    // Once the server has answered, a write into the closing connection may fail; that is fine.
    req.on("error", (err) => {
      if (!answered) reject(err);
    });
  });
  req.flushHeaders();
  void (async () => {
    const body = opts.body ?? Buffer.alloc(0);
    const limit = Math.min(body.length, opts.stopAfter ?? body.length);
    for (let i = 0; i < limit && !req.destroyed; i += 64 * 1024) {
      const chunk = body.subarray(i, Math.min(limit, i + 64 * 1024));
      written += chunk.length;
      if (!req.write(chunk)) await new Promise((r) => req.once("drain", r));
    }
    if (opts.stopAfter === undefined && !req.destroyed) req.end();
  })().catch(() => undefined);
  return { response, req, written: () => written };
}

function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.join(e.parentPath, e.name));
}

/** A PNG of 20000 × 20000 pixels that compresses to a few kilobytes: it would need 400 MB decoded. */
function decompressionBomb(): Buffer {
  const width = 20_000;
  const height = 20_000;
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc32 = (buf: Buffer) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff]! ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const typed = Buffer.concat([Buffer.from(type, "latin1"), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(typed));
    return Buffer.concat([len, typed, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 1; // bit depth
  ihdr[9] = 0; // greyscale
  // Each row: filter byte 0, then width/8 zero bytes.
  const raw = Buffer.alloc(height * (1 + width / 8));
  const idat = deflateSync(raw, { level: 9 });
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", ihdr), chunk("IDAT", idat), chunk("IEND", Buffer.alloc(0))]);
}

describeEachDatabase(
  "media over HTTP",
  ({ server }) => {
    let anna: string;
    let bert: string;
    const mediaDir = () => path.join(server().dataDir, "media");
    const tempFiles = () => filesUnder(path.join(mediaDir(), "tmp"));
    const blobFiles = () => filesUnder(path.join(mediaDir(), "blobs"));
    const mediaRows = async (userId: string) => (await server().services.storage.db.selectFrom("media").select("media_id").where("user_id", "=", userId).execute()).length;
    const dl = (id: string, suffix = "") => `/_matrix/client/v1/media/download/${server().config.serverName}/${id}${suffix}`;
    const thumb = (id: string, q: string) => `/_matrix/client/v1/media/thumbnail/${server().config.serverName}/${id}?${q}`;

    before(async () => {
      await server().createUser("anna");
      await server().createUser("bert");
      await server().createUser("quota");
      anna = (await server().login("anna")).access_token;
      bert = (await server().login("bert")).access_token;
    });

    test("upload, config and download conform to the spec and are served safely", async () => {
      const config = await api(server().url, "GET", "/_matrix/client/v1/media/config", { token: anna });
      assert.equal(config.status, 200);
      assertConformsToSpec("GET", "/_matrix/client/v1/media/config", 200, config.body);
      assert.equal(config.body["m.upload.size"], MAX_UPLOAD);
      const legacyConfig = await api(server().url, "GET", "/_matrix/media/v3/config", { token: anna });
      assertConformsToSpec("GET", "/_matrix/media/v3/config", 200, legacyConfig.body);

      const html = Buffer.from("<html><script>alert(document.cookie)</script></html>");
      const page = await upload(server(), anna, html, { contentType: "text/html", filename: "Übergabe Bericht.html" });
      assert.equal(page.status, 200);
      assertConformsToSpec("POST", "/_matrix/media/v3/upload", 200, page.body);
      assert.match(String(page.body.content_uri), new RegExp(`^mxc://${server().config.serverName}/[A-Za-z0-9_-]+$`));
      const got = await get(server(), dl(page.mediaId), bert);
      assert.equal(got.status, 200);
      assert.deepEqual(got.bytes, html);
      assert.equal(got.headers.get("content-type"), "text/html");
      assert.equal(got.headers.get("content-disposition"), "attachment; filename=\"_bergabe Bericht.html\"; filename*=UTF-8''%C3%9Cbergabe%20Bericht.html");
      assert.equal(got.headers.get("x-content-type-options"), "nosniff");
      assert.match(got.headers.get("content-security-policy") ?? "", /^sandbox; default-src 'none'/);
      assert.equal(got.headers.get("content-length"), String(html.length));
      assert.equal(got.headers.get("etag"), `"${createHash("sha256").update(html).digest("hex")}"`);
      assert.match(got.headers.get("cache-control") ?? "", /immutable/);
      const named = await get(server(), dl(page.mediaId, "/anders.txt"), bert);
      assert.equal(named.headers.get("content-disposition"), 'attachment; filename="anders.txt"');
      const again = await get(server(), dl(page.mediaId), bert, { "if-none-match": got.headers.get("etag")! });
      assert.equal(again.status, 304);
      assert.equal(again.bytes.length, 0);

      const png = await sharp({ create: { width: 4, height: 4, channels: 3, background: "#336699" } }).png().toBuffer();
      const image = await upload(server(), anna, png, { contentType: "image/png" });
      const shown = await get(server(), dl(image.mediaId), bert);
      assert.equal(shown.headers.get("content-disposition"), "inline");
      assert.equal(shown.headers.get("content-type"), "image/png");
      const svg = await upload(server(), anna, Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"/>'), { contentType: "image/svg+xml", filename: "x.svg" });
      assert.equal((await get(server(), dl(svg.mediaId), bert)).headers.get("content-disposition"), 'attachment; filename="x.svg"');
      const untyped = await api(server().url, "POST", "/_matrix/media/v3/upload", { token: anna, rawBody: Buffer.from("plain bytes") });
      assert.equal(untyped.status, 200);
      const untypedId = String(untyped.body.content_uri).split("/").pop()!;
      assert.equal((await get(server(), dl(untypedId), bert)).headers.get("content-type"), "application/octet-stream");

      const missing = await get(server(), dl("doesNotExist"), bert);
      assert.equal(missing.status, 404);
      assert.equal(missing.json?.errcode, "M_NOT_FOUND");
      const remote = await get(server(), `/_matrix/client/v1/media/download/elsewhere.example/${page.mediaId}`, bert);
      assert.equal(remote.status, 404);
    });

    test("without an access token: 401; the legacy unauthenticated endpoints are off unless configured", async () => {
      const { mediaId } = await upload(server(), anna, Buffer.from("geheim"), { contentType: "text/plain" });
      const sn = server().config.serverName;
      const anonymous: Array<[string, string, object?]> = [
        ["POST", "/_matrix/media/v3/upload"],
        ["POST", "/_matrix/media/v1/create", {}],
        ["PUT", `/_matrix/media/v3/upload/${sn}/${mediaId}`],
        ["GET", `/_matrix/client/v1/media/download/${sn}/${mediaId}`],
        ["GET", `/_matrix/client/v1/media/download/${sn}/${mediaId}/x.txt`],
        ["GET", `/_matrix/client/v1/media/thumbnail/${sn}/${mediaId}?width=32&height=32`],
        ["GET", "/_matrix/client/v1/media/config"],
        ["GET", "/_matrix/media/v3/config"],
      ];
      for (const [method, p, json] of anonymous) {
        const body = json !== undefined ? { body: json } : method === "GET" ? {} : { rawBody: Buffer.from("x"), headers: { "content-type": "text/plain" } };
        const res = await api(server().url, method, p, body);
        assert.equal(res.status, 401, `${method} ${p}`);
        assert.equal(res.body.errcode, "M_MISSING_TOKEN");
      }
      const bad = await api(server().url, "GET", dl(mediaId), { token: "not-a-token" });
      assert.equal(bad.status, 401);

      const legacy = await api(server().url, "GET", `/_matrix/media/v3/download/${sn}/${mediaId}`);
      assert.equal(legacy.status, 404);
      assert.equal(legacy.body.errcode, "M_NOT_FOUND");
      const legacyThumb = await api(server().url, "GET", `/_matrix/media/v3/thumbnail/${sn}/${mediaId}?width=32&height=32`);
      assert.equal(legacyThumb.status, 404);

      // An operator may turn them on for old clients.
      const media = server().services.config.media;
      media.legacyUnauthenticated = true;
      try {
        const open = await get(server(), `/_matrix/media/v3/download/${sn}/${mediaId}`);
        assert.equal(open.status, 200);
        assert.equal(open.bytes.toString(), "geheim");
      } finally {
        media.legacyUnauthenticated = false;
      }
    });

    test("create, then upload to the id: waits, 504 before, 409 twice, 403 for another user, 404 unknown", async () => {
      const created = await api(server().url, "POST", "/_matrix/media/v1/create", { token: anna, body: {} });
      assert.equal(created.status, 200);
      assertConformsToSpec("POST", "/_matrix/media/v1/create", 200, created.body);
      assert.ok((created.body.unused_expires_at as number) > Date.now());
      const mxc = String(created.body.content_uri);
      const [sn, mediaId] = mxc.slice("mxc://".length).split("/") as [string, string];

      const early = await api(server().url, "GET", `${dl(mediaId)}?timeout_ms=300`, { token: bert });
      assert.equal(early.status, 504);
      assertConformsToSpec("GET", "/_matrix/client/v1/media/download/{serverName}/{mediaId}", 504, early.body);
      assert.equal(early.body.errcode, "M_NOT_YET_UPLOADED");

      const stranger = await api(server().url, "PUT", `/_matrix/media/v3/upload/${sn}/${mediaId}`, { token: bert, rawBody: Buffer.from("x"), headers: { "content-type": "text/plain" } });
      assert.equal(stranger.status, 403);
      assertConformsToSpec("PUT", "/_matrix/media/v3/upload/{serverName}/{mediaId}", 403, stranger.body);

      // A download that starts before the content arrives is answered once it does.
      const waiting = get(server(), `${dl(mediaId)}?timeout_ms=10000`, bert);
      await new Promise((r) => setTimeout(r, 150));
      const put = await api(server().url, "PUT", `/_matrix/media/v3/upload/${sn}/${mediaId}?filename=lage.txt`, { token: anna, rawBody: Buffer.from("Lagebild 06:00"), headers: { "content-type": "text/plain" } });
      assert.equal(put.status, 200);
      assertConformsToSpec("PUT", "/_matrix/media/v3/upload/{serverName}/{mediaId}", 200, put.body);
      const waited = await waiting;
      assert.equal(waited.status, 200);
      assert.equal(waited.bytes.toString(), "Lagebild 06:00");
      assert.equal(waited.headers.get("content-disposition"), 'attachment; filename="lage.txt"');

      const twice = await api(server().url, "PUT", `/_matrix/media/v3/upload/${sn}/${mediaId}`, { token: anna, rawBody: Buffer.from("anders"), headers: { "content-type": "text/plain" } });
      assert.equal(twice.status, 409);
      assertConformsToSpec("PUT", "/_matrix/media/v3/upload/{serverName}/{mediaId}", 409, twice.body);
      assert.equal(twice.body.errcode, "M_CANNOT_OVERWRITE_MEDIA");
      const unknown = await api(server().url, "PUT", `/_matrix/media/v3/upload/${sn}/neverCreated`, { token: anna, rawBody: Buffer.from("x"), headers: { "content-type": "text/plain" } });
      assert.equal(unknown.status, 404);
      assertConformsToSpec("PUT", "/_matrix/media/v3/upload/{serverName}/{mediaId}", 404, unknown.body);
    });

    test("too large: 413 from Content-Length up front and while streaming, and nothing is left on disk", async () => {
      const blobsBefore = blobFiles().length;
      const rowsBefore = await mediaRows(`@anna:${server().config.serverName}`);

      const declared = rawRequest(server(), {
        method: "POST",
        path: "/_matrix/media/v3/upload",
        headers: { authorization: `Bearer ${anna}`, "content-type": "application/octet-stream", "content-length": String(MAX_UPLOAD + 1) },
        stopAfter: 0,
      });
      const early = await declared.response;
      declared.req.destroy();
      assert.equal(early.status, 413);
      assertConformsToSpec("POST", "/_matrix/media/v3/upload", 413, early.body);
      assert.equal(early.body.errcode, "M_TOO_LARGE");
      assert.match(String(early.body.error), /2 MiB/);

      // Chunked: the size is only known while reading. Exactly one byte too many is sent.
      const streamed = rawRequest(server(), {
        method: "POST",
        path: "/_matrix/media/v3/upload",
        headers: { authorization: `Bearer ${anna}`, "content-type": "application/octet-stream", "transfer-encoding": "chunked" },
        body: randomBytes(MAX_UPLOAD + 1),
        stopAfter: MAX_UPLOAD + 1,
      });
      const late = await streamed.response;
      streamed.req.destroy();
      assert.equal(late.status, 413);
      assert.equal(late.body.errcode, "M_TOO_LARGE");

      await waitFor("temporary files to be removed", () => tempFiles().length === 0);
      assert.equal(blobFiles().length, blobsBefore);
      assert.equal(await mediaRows(`@anna:${server().config.serverName}`), rowsBefore);

      // Exactly at the limit is fine.
      const atLimit = await upload(server(), anna, randomBytes(MAX_UPLOAD));
      assert.equal(atLimit.status, 200);
    });

    test("over quota: 403 naming the quota, before and while streaming", async () => {
      const user = `@quota:${server().config.serverName}`;
      const token = (await server().login("quota")).access_token;
      for (let i = 0; i < 3; i++) assert.equal((await upload(server(), token, randomBytes(MAX_UPLOAD - 1024))).status, 200);
      const used = await server().services.media.usedBytes(user);
      assert.equal(used, 3 * (MAX_UPLOAD - 1024));

      const refused = await upload(server(), token, randomBytes(MAX_UPLOAD - 1024));
      assert.equal(refused.status, 403);
      assertConformsToSpec("POST", "/_matrix/media/v3/upload", 403, refused.body);
      assert.equal(refused.body.errcode, "M_FORBIDDEN");
      assert.match(String(refused.body.error), /quota of 6 MiB \(6291456 bytes\)/);

      const streamed = rawRequest(server(), {
        method: "POST",
        path: "/_matrix/media/v3/upload",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/octet-stream", "transfer-encoding": "chunked" },
        body: randomBytes(QUOTA - used + 1),
        stopAfter: QUOTA - used + 1,
      });
      const late = await streamed.response;
      streamed.req.destroy();
      assert.equal(late.status, 403);
      assert.match(String(late.body.error), /quota/);
      await waitFor("temporary files to be removed", () => tempFiles().length === 0);

      // What still fits is accepted.
      assert.equal((await upload(server(), token, randomBytes(QUOTA - used))).status, 200);
      assert.equal((await upload(server(), token, Buffer.from("x"))).status, 403);
    });

    test("media ids outside [A-Za-z0-9_-] are refused before the blob store is touched", async () => {
      const media = server().services.media;
      const blobs = media.blobs;
      let opened = 0;
      const originalOpen = blobs.open.bind(blobs);
      blobs.open = async (...args) => {
        opened++;
        return originalOpen(...args);
      };
      try {
        const sn = server().config.serverName;
        const evil = [
          "..%2F..%2Fsigning.key",
          "%2E%2E%2F%2E%2E%2Frevier.db",
          "..",
          "..%5C..%5Cx",
          "%EF%BC%8E%EF%BC%8E%EF%BC%8Fsigning.key", // fullwidth ．．／
          "%E2%80%A4%E2%80%A4%2Fx", // one dot leaders
          "abc%00def",
          "abc%20def",
          "a.b",
        ];
        for (const id of evil) {
          for (const p of [`/_matrix/client/v1/media/download/${sn}/${id}`, `/_matrix/client/v1/media/download/${sn}/${id}/f.txt`, `/_matrix/client/v1/media/thumbnail/${sn}/${id}?width=32&height=32`]) {
            const res = await api(server().url, "GET", p, { token: anna });
            assert.ok(res.status === 400 || res.status === 404, `${p}: ${res.status}`);
            assert.ok(["M_INVALID_PARAM", "M_NOT_FOUND", "M_UNRECOGNIZED"].includes(String(res.body.errcode)), `${p}: ${JSON.stringify(res.body)}`);
          }
          const put = await api(server().url, "PUT", `/_matrix/media/v3/upload/${sn}/${id}`, { token: anna, rawBody: Buffer.from("x"), headers: { "content-type": "text/plain" } });
          assert.ok(put.status === 400 || put.status === 404, `PUT ${id}: ${put.status}`);
        }
        // Overlong UTF-8 is not even a valid URL to the router.
        const overlong = await api(server().url, "GET", `/_matrix/client/v1/media/download/${sn}/%C0%AE%C0%AE%2Fsigning.key`, { token: anna });
        assert.equal(overlong.status, 400);
        const plain = await api(server().url, "GET", `/_matrix/client/v1/media/download/${sn}/..%2F..%2Fsigning.key`, { token: anna });
        assert.equal(plain.status, 400);
        assert.equal(plain.body.errcode, "M_INVALID_PARAM");
        assert.equal(opened, 0);
        assert.equal(tempFiles().length, 0);
      } finally {
        blobs.open = originalOpen;
      }
    });

    test("range requests: 206 with the right bytes, 416 when unsatisfiable", async () => {
      const data = randomBytes(10_000);
      const { mediaId } = await upload(server(), anna, data, { contentType: "audio/ogg", filename: "sprachnachricht.ogg" });
      const full = await get(server(), dl(mediaId), bert);
      assert.equal(full.status, 200);
      assert.equal(full.headers.get("accept-ranges"), "bytes");
      assert.equal(full.headers.get("content-disposition"), 'inline; filename="sprachnachricht.ogg"');
      const cases: Array<[string, number, number]> = [
        ["bytes=0-99", 0, 99],
        ["bytes=5000-5009", 5000, 5009],
        ["bytes=9990-", 9990, 9999],
        ["bytes=-25", 9975, 9999],
        ["bytes=9000-20000", 9000, 9999],
      ];
      for (const [range, start, end] of cases) {
        const part = await get(server(), dl(mediaId), bert, { range });
        assert.equal(part.status, 206, range);
        assert.equal(part.headers.get("content-range"), `bytes ${start}-${end}/10000`);
        assert.equal(part.headers.get("content-length"), String(end - start + 1));
        assert.deepEqual(part.bytes, data.subarray(start, end + 1), range);
      }
      const beyond = await get(server(), dl(mediaId), bert, { range: "bytes=10000-" });
      assert.equal(beyond.status, 416);
      assert.equal(beyond.headers.get("content-range"), "bytes */10000");
      // An If-Range naming other content means: send it all.
      const stale = await get(server(), dl(mediaId), bert, { range: "bytes=0-9", "if-range": '"0000"' });
      assert.equal(stale.status, 200);
      assert.equal(stale.bytes.length, 10_000);
    });

    test("the same content uploaded twice is stored once; deleting frees it only with its last reference", async () => {
      const data = randomBytes(50_000);
      const sha256 = createHash("sha256").update(data).digest("hex");
      const before = blobFiles().length;
      const first = await upload(server(), anna, data, { filename: "eins.bin" });
      const second = await upload(server(), bert, data, { filename: "zwei.bin" });
      assert.notEqual(first.mediaId, second.mediaId);
      assert.equal(blobFiles().length, before + 1);
      assert.ok(blobFiles().some((f) => path.basename(f) === sha256));
      const db = server().services.storage.db;
      const blob = await db.selectFrom("media_blobs").selectAll().where("sha256", "=", sha256).executeTakeFirstOrThrow();
      assert.equal(blob.refcount, 2);
      assert.equal(blob.size, 50_000);
      // Each keeps its own name.
      assert.equal((await get(server(), dl(second.mediaId), anna)).headers.get("content-disposition"), 'attachment; filename="zwei.bin"');

      const media = server().services.media;
      const annasMedia = await media.list(`@anna:${server().config.serverName}`);
      assert.ok(annasMedia.some((m) => m.media_id === first.mediaId && m.sha256 === sha256));
      assert.equal(await media.delete(first.mediaId), true);
      assert.equal(await media.delete(first.mediaId), false);
      assert.equal((await get(server(), dl(first.mediaId), anna)).status, 404);
      assert.deepEqual((await get(server(), dl(second.mediaId), anna)).bytes, data);
      assert.ok(blobFiles().some((f) => path.basename(f) === sha256));
      assert.equal(await media.delete(second.mediaId), true);
      assert.ok(!blobFiles().some((f) => path.basename(f) === sha256));
      assert.equal(await db.selectFrom("media_blobs").select("sha256").where("sha256", "=", sha256).executeTakeFirst(), undefined);
    });

    test("a client that disconnects halfway leaves no partial file and no row", async () => {
      const user = `@bert:${server().config.serverName}`;
      const rowsBefore = await mediaRows(user);
      const blobsBefore = blobFiles().length;
      const body = randomBytes(MAX_UPLOAD - 10);
      const interrupted = rawRequest(server(), {
        method: "POST",
        path: "/_matrix/media/v3/upload",
        headers: { authorization: `Bearer ${bert}`, "content-type": "application/octet-stream", "content-length": String(body.length) },
        body,
        stopAfter: 512 * 1024,
      });
      interrupted.response.catch(() => undefined);
      await waitFor("the upload to reach the disk", () => tempFiles().some((f) => statSync(f).size > 0));
      interrupted.req.destroy();
      await waitFor("the partial file to be removed", () => tempFiles().length === 0);
      assert.equal(await mediaRows(user), rowsBefore);
      assert.equal(blobFiles().length, blobsBefore);
      // The server is unharmed and the next upload works.
      assert.equal((await upload(server(), bert, Buffer.from("danach"))).status, 200);
    });

    test("thumbnails: crop and scale at several sizes have the right dimensions and are made once", async () => {
      const png = await sharp({ create: { width: 1000, height: 500, channels: 3, background: "#c81e1e" } }).png().toBuffer();
      const { mediaId } = await upload(server(), anna, png, { contentType: "image/png", filename: "lage.png" });
      const cases: Array<[string, number, number, number, number]> = [
        ["scale", 32, 32, 32, 16],
        ["scale", 96, 96, 96, 48],
        ["scale", 320, 240, 320, 160],
        ["scale", 640, 480, 640, 320],
        ["scale", 2000, 2000, 800, 400],
        ["crop", 32, 32, 32, 32],
        ["crop", 96, 96, 96, 96],
        ["crop", 100, 100, 320, 320],
        ["crop", 320, 240, 320, 240],
        ["crop", 640, 360, 640, 360],
        ["crop", 800, 600, 667, 500],
      ];
      for (const [method, w, h, ew, eh] of cases) {
        const res = await get(server(), thumb(mediaId, `width=${w}&height=${h}&method=${method}`), bert);
        assert.equal(res.status, 200, `${method} ${w}x${h}`);
        assert.equal(res.headers.get("content-type"), "image/png");
        assert.equal(res.headers.get("content-disposition"), 'inline; filename="thumbnail.png"');
        assert.match(res.headers.get("content-security-policy") ?? "", /^sandbox/);
        const meta = await sharp(res.bytes).metadata();
        assert.deepEqual([meta.width, meta.height], [ew, eh], `${method} ${w}x${h}`);
      }
      const db = server().services.storage.db;
      const sha256 = createHash("sha256").update(png).digest("hex");
      const rows = await db.selectFrom("media_thumbnails").select(["width", "height", "method"]).where("source_sha256", "=", sha256).execute();
      assert.equal(rows.length, cases.length);
      const decoder = server().services.media.thumbnailer;
      const render = decoder.render.bind(decoder);
      let renders = 0;
      decoder.render = async (...args) => {
        renders++;
        return render(...args);
      };
      try {
        for (const [method, w, h] of cases) assert.equal((await get(server(), thumb(mediaId, `width=${w}&height=${h}&method=${method}`), bert)).status, 200);
        assert.equal(renders, 0, "cached thumbnails are not rendered again");
      } finally {
        decoder.render = render;
      }

      const jpeg = await sharp({ create: { width: 300, height: 400, channels: 3, background: "#204080" } }).jpeg().toBuffer();
      const photo = await upload(server(), anna, jpeg, { contentType: "image/jpeg" });
      const small = await get(server(), thumb(photo.mediaId, "width=96&height=96&method=scale"), bert);
      assert.equal(small.headers.get("content-type"), "image/jpeg");
      const meta = await sharp(small.bytes).metadata();
      assert.deepEqual([meta.width, meta.height], [72, 96]);

      const tiny = await sharp({ create: { width: 20, height: 10, channels: 4, background: "#00000000" } }).webp().toBuffer();
      const icon = await upload(server(), anna, tiny, { contentType: "image/webp" });
      const notEnlarged = await get(server(), thumb(icon.mediaId, "width=320&height=240&method=scale"), bert);
      assert.equal(notEnlarged.headers.get("content-type"), "image/webp");
      const iconMeta = await sharp(notEnlarged.bytes).metadata();
      assert.deepEqual([iconMeta.width, iconMeta.height], [20, 10]);

      const invalid = await api(server().url, "GET", thumb(mediaId, "width=0&height=32"), { token: bert });
      assert.equal(invalid.status, 400);
      const missingHeight = await api(server().url, "GET", thumb(mediaId, "width=32"), { token: bert });
      assert.equal(missingHeight.status, 400);
    });

    test("SVG, TIFF and a disguised PNG are never decoded; a decompression bomb is refused", async () => {
      const decoder = server().services.media.thumbnailer;
      const render = decoder.render.bind(decoder);
      let renders = 0;
      decoder.render = async (...args) => {
        renders++;
        return render(...args);
      };
      try {
        const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><image href="http://169.254.169.254/latest"/></svg>');
        const tiff = await sharp({ create: { width: 64, height: 64, channels: 3, background: "#00ff00" } }).tiff().toBuffer();
        const refused: Array<[string, Buffer, string]> = [
          ["svg", svg, "image/svg+xml"],
          ["tiff", tiff, "image/tiff"],
          ["svg claiming to be png", svg, "image/png"],
          ["tiff claiming to be jpeg", tiff, "image/jpeg"],
          ["text", Buffer.from("kein Bild"), "image/png"],
          ["empty", Buffer.alloc(0), "image/png"],
        ];
        for (const [what, data, type] of refused) {
          const { mediaId, status } = await upload(server(), anna, data, { contentType: type });
          assert.equal(status, 200, what);
          const res = await api(server().url, "GET", thumb(mediaId, "width=32&height=32&method=crop"), { token: bert });
          assert.equal(res.status, 400, what);
          assertConformsToSpec("GET", "/_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}", 400, res.body);
          assert.equal(res.body.errcode, "M_UNKNOWN", what);
        }
        assert.equal(renders, 0, "nothing was handed to the decoder");

        const bomb = decompressionBomb();
        assert.ok(bomb.length < 200_000);
        const { mediaId } = await upload(server(), anna, bomb, { contentType: "image/png" });
        const rss = process.memoryUsage().rss;
        const res = await api(server().url, "GET", thumb(mediaId, "width=96&height=96&method=scale"), { token: bert });
        assert.equal(res.status, 413);
        assertConformsToSpec("GET", "/_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}", 413, res.body);
        assert.equal(res.body.errcode, "M_TOO_LARGE");
        assert.ok(process.memoryUsage().rss - rss < 100 * 1024 * 1024, "the bomb was not decoded");
      } finally {
        decoder.render = render;
      }
      // The server still thumbnails real images afterwards.
      const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: "#123456" } }).png().toBuffer();
      const ok = await upload(server(), anna, png, { contentType: "image/png" });
      assert.equal((await get(server(), thumb(ok.mediaId, "width=32&height=32"), bert)).status, 200);
    });
  },
  { "media.max_upload_bytes": MAX_UPLOAD, "media.user_quota_bytes": QUOTA },
);
