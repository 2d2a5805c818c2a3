/**
 * Native TLS (`tls.cert_file` / `tls.key_file`): TLS 1.2 and 1.3 only, and under 1.2 only ECDHE
 * (forward secrecy) with AEAD ciphers. Each refusal is checked against a deliberately permissive
 * control server first, so the test proves the client really offered what Revier must refuse
 * (otherwise a "refused" could just be the client's own OpenSSL policy).
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import path from "node:path";
import tls from "node:tls";
import { startTestServer, type TestServer } from "./support/server.js";
import { ConfigError, loadConfig } from "../src/config.js";
import { startServer } from "../src/server.js";
import { HSTS } from "../src/http/security-headers.js";
import pino from "pino";

function findOpenssl(): string | null {
  for (const p of ["/usr/bin/openssl", "/usr/local/bin/openssl", "/opt/homebrew/bin/openssl"]) if (existsSync(p)) return p;
  try {
    return execFileSync("sh", ["-c", "command -v openssl"], { encoding: "utf8" }).trim() || null;
  } catch {
    return null;
  }
}

const OPENSSL = findOpenssl();

interface Handshake {
  ok: boolean;
  protocol?: string | null;
  cipher?: string;
  error?: string;
}

function handshake(port: number, ca: Buffer, opts: tls.ConnectionOptions): Promise<Handshake> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: "127.0.0.1", port, servername: "localhost", ca, ...opts }, () => {
      const result = { ok: true, protocol: socket.getProtocol(), cipher: socket.getCipher().name };
      socket.end();
      resolve(result);
    });
    socket.on("error", (err) => resolve({ ok: false, error: (err as NodeJS.ErrnoException).code ?? err.message }));
  });
}

function get(url: string, ca: Buffer): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca, servername: "localhost" }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString("utf8")));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("error", reject);
  });
}

// Old protocol versions and non-forward-secret or CBC suites are what scanners (testssl.sh, the
// BSI TR-02102-2 checklist) flag on homeserver deployments; BEAST/POODLE/Lucky13 class.
const MUST_REFUSE: Array<{ what: string; opts: tls.ConnectionOptions }> = [
  { what: "TLS 1.0", opts: { minVersion: "TLSv1", maxVersion: "TLSv1", ciphers: "DEFAULT@SECLEVEL=0" } },
  { what: "TLS 1.1", opts: { minVersion: "TLSv1.1", maxVersion: "TLSv1.1", ciphers: "DEFAULT@SECLEVEL=0" } },
  { what: "TLS 1.2 with RSA key exchange (no forward secrecy)", opts: { minVersion: "TLSv1.2", maxVersion: "TLSv1.2", ciphers: "AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256" } },
  { what: "TLS 1.2 with ECDHE but CBC (not AEAD)", opts: { minVersion: "TLSv1.2", maxVersion: "TLSv1.2", ciphers: "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-SHA256" } },
];

describe("native TLS", { skip: OPENSSL ? false : "no openssl binary to make a test certificate; native TLS test skipped" }, () => {
  let dir: string;
  let cert: Buffer;
  let certFile: string;
  let keyFile: string;
  let server: TestServer;
  let control: https.Server;
  let controlPort: number;

  before(async () => {
    dir = mkdtempSync("/tmp/sec-tls-");
    certFile = path.join(dir, "cert.pem");
    keyFile = path.join(dir, "key.pem");
    // An RSA certificate, so that a server without a cipher policy could agree to RSA key exchange.
    execFileSync(OPENSSL!, ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keyFile, "-out", certFile, "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], { stdio: "ignore" });
    cert = readFileSync(certFile);
    server = await startTestServer("sqlite", { "tls.cert_file": certFile, "tls.key_file": keyFile });
    control = https.createServer({ cert, key: readFileSync(keyFile), minVersion: "TLSv1", ciphers: "ALL@SECLEVEL=0" }, (_req, res) => res.end("control"));
    await new Promise<void>((resolve) => control.listen(0, "127.0.0.1", resolve));
    controlPort = (control.address() as { port: number }).port;
  });

  after(async () => {
    await server?.destroy();
    await new Promise((resolve) => control?.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  test("the server listens with https and announces an https URL", async () => {
    assert.match(server.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    assert.match(server.config.publicBaseUrl, /^https:\/\//);
    const res = await get(`${server.url}/_matrix/client/versions`, cert);
    assert.equal(res.status, 200);
    assert.ok(Array.isArray((JSON.parse(res.body) as { versions: unknown }).versions));
    assert.equal(res.headers["strict-transport-security"], HSTS, "native TLS sends HSTS");
    assert.equal(res.headers["x-frame-options"], "DENY");
  });

  test("TLS 1.3 and TLS 1.2 with ECDHE + AEAD work", async () => {
    const port = Number(new URL(server.url).port);
    const v13 = await handshake(port, cert, { minVersion: "TLSv1.3", maxVersion: "TLSv1.3" });
    assert.ok(v13.ok, `TLS 1.3: ${v13.error}`);
    assert.equal(v13.protocol, "TLSv1.3");
    for (const cipher of ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"]) {
      const v12 = await handshake(port, cert, { minVersion: "TLSv1.2", maxVersion: "TLSv1.2", ciphers: cipher });
      assert.ok(v12.ok, `TLS 1.2 ${cipher}: ${v12.error}`);
      assert.equal(v12.protocol, "TLSv1.2");
      assert.equal(v12.cipher, cipher);
    }
    // A default client negotiates the best: TLS 1.3.
    const best = await handshake(port, cert, {});
    assert.equal(best.protocol, "TLSv1.3");
  });

  for (const { what, opts } of MUST_REFUSE) {
    test(`${what} is refused`, async () => {
      const probe = await handshake(controlPort, cert, opts);
      assert.ok(probe.ok, `the client must be able to offer ${what} (control server: ${probe.error}); otherwise this test proves nothing`);
      const res = await handshake(Number(new URL(server.url).port), cert, opts);
      assert.equal(res.ok, false, `${what} was accepted: ${res.protocol} ${res.cipher}`);
    });
  }

  test("settings: both files or neither, from YAML or the environment; an unreadable file stops start-up naming the setting", async () => {
    assert.throws(() => loadConfig({}, { "tls.cert_file": certFile }), (err: unknown) => err instanceof ConfigError && err.key === "tls.key_file");
    assert.throws(() => loadConfig({}, { "tls.key_file": keyFile }), (err: unknown) => err instanceof ConfigError && err.key === "tls.cert_file");
    const fromEnv = loadConfig({ REVIER_TLS_CERT_FILE: certFile, REVIER_TLS_KEY_FILE: keyFile });
    assert.deepEqual(fromEnv.tls, { certFile, keyFile });
    const yamlFile = path.join(dir, "revier.yaml");
    writeFileSync(yamlFile, `tls:\n  cert_file: ${certFile}\n  key_file: ${keyFile}\n`);
    assert.deepEqual(loadConfig({ REVIER_CONFIG: yamlFile }).tls, { certFile, keyFile });
    assert.deepEqual(loadConfig({}).tls, { certFile: null, keyFile: null });
    const missing = loadConfig({}, { port: 0, data_dir: path.join(dir, "data"), "tls.cert_file": path.join(dir, "nope.pem"), "tls.key_file": keyFile });
    await assert.rejects(startServer(missing, { log: pino({ level: "silent" }) }), (err: unknown) => err instanceof ConfigError && err.key === "tls.cert_file");
  });
});
