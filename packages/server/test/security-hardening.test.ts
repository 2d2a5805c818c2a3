/**
 * Hardening: security headers on every response (clickjacking, MIME sniffing, referrer leaks),
 * HSTS only over TLS, a strict CSP for pages, and secrets at rest with owner-only file modes.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { startTestServer, type TestServer } from "./support/server.js";
import { api } from "./support/http.js";
import { ALL_ROUTES } from "../src/api/index.js";
import { buildApp } from "../src/http/app.js";
import { route } from "../src/http/route.js";
import { API_CSP, HSTS, HTML_CSP } from "../src/http/security-headers.js";
import { loadOrCreateSigningKey } from "../src/rooms/signing-key.js";
import { fillRoute } from "./security-helpers.js";
import { loadConfig } from "../src/config.js";

function assertSecurityHeaders(headers: Headers, label: string): void {
  assert.equal(headers.get("x-content-type-options"), "nosniff", `${label}: nosniff`);
  assert.equal(headers.get("x-frame-options"), "DENY", `${label}: X-Frame-Options`);
  assert.equal(headers.get("referrer-policy"), "no-referrer", `${label}: Referrer-Policy`);
  assert.match(headers.get("content-security-policy") ?? "", /(^|;\s*)frame-ancestors 'none'(;|$)/, `${label}: CSP frame-ancestors`);
}

describe("hardening: security headers and secret file modes", () => {
  let server: TestServer;
  let token: string;

  before(async () => {
    server = await startTestServer("sqlite", { "limits.max_body_bytes": 4096 });
    await server.createUser("hanna");
    token = (await server.login("hanna")).access_token;
  });
  after(async () => {
    await server.destroy();
  });

  // Clickjacking of pages the server serves (homeservers' SSO and consent pages were framable),
  // referrer leaks of tokens in page URLs, and MIME sniffing of API responses.
  test("every route answers with nosniff, X-Frame-Options DENY, Referrer-Policy no-referrer and CSP frame-ancestors 'none'", async () => {
    let checked = 0;
    for (const def of ALL_ROUTES) {
      const { method, url } = def.spec;
      const p = fillRoute(url, { serverName: server.config.serverName, userId: "@hanna:localhost", roomId: "!nowhere:localhost" });
      for (const auth of [undefined, "rva_not-a-token", token]) {
        // Logging out would kill the token the rest of the loop uses.
        if (auth === token && url.includes("/logout")) continue;
        const res = await api(server.url, method, p, { ...(auth ? { token: auth } : {}), ...(method === "GET" ? {} : { rawBody: "{}", headers: { "content-type": "application/json" } }) });
        assert.ok(res.status < 500, `${method} ${p}: ${res.status} ${JSON.stringify(res.body)}`);
        assertSecurityHeaders(res.headers, `${method} ${p} (${auth === undefined ? "anonymous" : auth === token ? "authenticated" : "bad token"}) → ${res.status}`);
        assert.equal(res.headers.get("strict-transport-security"), null, `${method} ${p}: no HSTS over plain HTTP`);
        checked++;
      }
    }
    assert.ok(checked >= ALL_ROUTES.length * 2);
  });

  test("so do errors raised before routing: 404, 405, malformed URLs, U+0000, tokens in the query, oversized bodies, CORS preflight", async () => {
    const cases: Array<[string, string, Record<string, unknown>]> = [
      ["GET", "/_matrix/client/v3/no/such/thing", {}],
      ["DELETE", "/_matrix/client/v3/createRoom", { token }],
      ["GET", "/_matrix/client/v3/profile/%C0%AE%C0%AE", { token }],
      ["GET", "/_matrix/client/v3/profile/a%00b", { token }],
      ["GET", `/_matrix/client/v3/account/whoami?access_token=${token}`, {}],
      ["POST", "/_matrix/client/v3/createRoom", { token, rawBody: JSON.stringify({ name: "x".repeat(8192) }), headers: { "content-type": "application/json" } }],
      ["POST", "/_matrix/client/v3/createRoom", { token, rawBody: "{nope", headers: { "content-type": "application/json" } }],
      ["OPTIONS", "/_matrix/client/v3/sync", { headers: { origin: "https://app.example", "access-control-request-method": "GET" } }],
      ["GET", "/", {}],
    ];
    for (const [method, p, opts] of cases) {
      const res = await api(server.url, method, p, opts as Parameters<typeof api>[3]);
      assertSecurityHeaders(res.headers, `${method} ${p.slice(0, 60)} → ${res.status}`);
    }
    // Refused by Node's HTTP parser before any route: headers over 16 KiB.
    const huge = await api(server.url, "GET", "/_matrix/client/versions", { headers: { "x-padding": "x".repeat(20_000) } });
    assert.equal(huge.status, 431);
    assert.equal(huge.body.errcode, "M_TOO_LARGE");
    assertSecurityHeaders(huge.headers, "431 from the HTTP parser");
  });

  test("media keeps its own sandboxing CSP, which also forbids framing", async () => {
    const up = await api(server.url, "POST", "/_matrix/media/v3/upload?filename=x.html", { token, rawBody: Buffer.from("<script>alert(1)</script>"), headers: { "content-type": "text/html" } });
    assert.equal(up.status, 200);
    const id = String(up.body.content_uri).split("/").pop()!;
    const res = await fetch(`${server.url}/_matrix/client/v1/media/download/${server.config.serverName}/${id}`, { headers: { authorization: `Bearer ${token}` } });
    await res.arrayBuffer();
    assertSecurityHeaders(res.headers, "media download");
    const csp = res.headers.get("content-security-policy") ?? "";
    assert.match(csp, /^sandbox;/, "an HTML upload is not given the page CSP: it stays sandboxed");
    assert.notEqual(csp, HTML_CSP);
    assert.match(res.headers.get("content-disposition") ?? "", /^attachment/);
  });

  test("HSTS only when the request came over TLS: a trusted proxy's X-Forwarded-Proto counts, an untrusted one does not", async () => {
    const untrusted = await api(server.url, "GET", "/_matrix/client/versions", { headers: { "x-forwarded-proto": "https" } });
    assert.equal(untrusted.headers.get("strict-transport-security"), null, "without trust_proxy anyone could send the header");
    const proxied = await startTestServer("sqlite", { trust_proxy: true });
    try {
      for (const p of ["/_matrix/client/versions", "/_matrix/client/v3/no/such/thing", "/_matrix/client/v3/account/whoami"]) {
        const https = await api(proxied.url, "GET", p, { headers: { "x-forwarded-proto": "https" } });
        assert.equal(https.headers.get("strict-transport-security"), HSTS, p);
        assertSecurityHeaders(https.headers, p);
        const http = await api(proxied.url, "GET", p, { headers: { "x-forwarded-proto": "http" } });
        assert.equal(http.headers.get("strict-transport-security"), null, p);
      }
    } finally {
      await proxied.destroy();
    }
  });

  test("trust_proxy as a list trusts forwarding headers only from the listed proxies", async () => {
    const lastSeenIp = async (srv: TestServer, localpart: string) => {
      await srv.createUser(localpart);
      const { access_token, device_id } = await srv.login(localpart);
      await api(srv.url, "GET", "/_matrix/client/v3/account/whoami", { token: access_token, headers: { "x-forwarded-for": "198.51.100.23" } });
      return (await srv.services.devices.get(`@${localpart}:localhost`, device_id))?.last_seen_ip;
    };
    const listed = await startTestServer("sqlite", { trust_proxy: ["127.0.0.1", "::1"] });
    const other = await startTestServer("sqlite", { trust_proxy: "10.0.0.0/8" });
    try {
      assert.equal(await lastSeenIp(listed, "proxied"), "198.51.100.23", "a listed proxy's X-Forwarded-For names the client");
      const direct = await lastSeenIp(other, "direct");
      assert.notEqual(direct, "198.51.100.23", "a peer that is not a listed proxy cannot choose its address");
      assert.match(direct ?? "", /127\.0\.0\.1|::1/);
      assert.throws(() => loadConfig({}, { trust_proxy: "nginx.intern" }), /trust_proxy/);
    } finally {
      await listed.destroy();
      await other.destroy();
    }
  });

  test("HTML pages the server serves get the strict page CSP; JSON keeps default-src 'none'", async () => {
    // A page route like the ones the web app and the consent page will add, on the real app.
    const page = route({ method: "GET", url: "/_revier/test-page", auth: "none" }, async ({ reply }) => {
      reply.type("text/html; charset=utf-8").send("<!doctype html><title>Revier</title>");
    });
    // The same for a form post with a raw body (another async onSend hook): the page must not be
    // relabelled as JSON by the route wrapper after the handler answered by itself.
    const form = route({ method: "POST", url: "/_revier/test-page", auth: "none", rawBody: true }, async ({ reply }) => {
      reply.code(415).headers({ "content-type": "text/html; charset=utf-8" }).send("<!doctype html><p>Formular erwartet</p>");
    });
    const app = await buildApp(server.services, [...ALL_ROUTES, page, form]);
    try {
      const posted = await app.inject({ method: "POST", url: "/_revier/test-page", payload: "{}", headers: { "content-type": "application/json" } });
      assert.equal(posted.statusCode, 415);
      assert.equal(posted.headers["content-type"], "text/html; charset=utf-8", "a page answered by the handler keeps its content type");
      assert.equal(posted.headers["content-security-policy"], HTML_CSP);
      assert.match(posted.body, /^<!doctype html>/);
      const html = await app.inject({ method: "GET", url: "/_revier/test-page" });
      assert.equal(html.statusCode, 200);
      const csp = String(html.headers["content-security-policy"]);
      assert.equal(csp, HTML_CSP);
      for (const directive of ["default-src 'none'", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'", "form-action 'self'"]) assert.ok(csp.includes(directive), directive);
      assert.ok(!/unsafe-inline|unsafe-eval'|\*/.test(csp.replace("'wasm-unsafe-eval'", "")), `no inline script, eval or wildcards: ${csp}`);
      assert.equal(html.headers["x-frame-options"], "DENY");
      const json = await app.inject({ method: "GET", url: "/_matrix/client/versions" });
      assert.equal(json.headers["content-security-policy"], API_CSP);
    } finally {
      await app.close();
    }
  });

  // Secrets readable by other local users (the replaced messenger's advisories listed cleartext
  // secrets on disk): the signing key is created 0600 in a 0700 data directory, and a key file
  // that others can read is refused at start-up rather than used.
  test("the signing key and the database are owner-only; a group-readable key stops start-up", async () => {
    const keyFile = path.join(server.dataDir, "signing.key");
    assert.equal(statSync(keyFile).mode & 0o777, 0o600, "signing.key is 0600");
    assert.equal(statSync(server.dataDir).mode & 0o077, 0, "the data directory is closed to group and others");
    const db = path.join(server.dataDir, "revier.db");
    assert.equal(statSync(db).mode & 0o077, 0, "the SQLite file is closed to group and others");
    // Other secrets written there (VAPID keys for web push, …) follow the same rule.
    for (const name of readdirSync(server.dataDir)) {
      if (/key|secret|vapid/i.test(name)) assert.equal(statSync(path.join(server.dataDir, name)).mode & 0o077, 0, `${name} is owner-only`);
    }
    chmodSync(keyFile, 0o640);
    try {
      assert.throws(() => loadOrCreateSigningKey(keyFile), /accessible by group or others/);
    } finally {
      chmodSync(keyFile, 0o600);
    }
  });
});
