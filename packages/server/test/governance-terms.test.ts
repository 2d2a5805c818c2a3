import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { AuditEntry } from "@revier/protocol";
import { describeEachDatabase } from "./support/suite.js";
import { TEST_PASSWORD } from "./support/server.js";
import { api } from "./support/http.js";
import { sdk, waitFor, type Client } from "./support/sdk.js";
import type { Role } from "../src/users/accounts.js";

const ADMIN = "/_revier/admin/v1";
const CLIENT_TERMS = "/_revier/client/v1/terms";

interface ConsentError {
  errcode?: string;
  error?: string;
  consent_uri?: string;
}

/** What a browser sees of the consent page: the form's hidden fields and the page itself. */
interface ConsentPage {
  status: number;
  html: string;
  headers: Headers;
  fields: Record<string, string>;
  action: string | undefined;
}

function sha256(s: string): string {
  return createHash("sha256").update(s).digest("hex");
}

function decodeEntities(s: string): string {
  return s.replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
}

describeEachDatabase("governance: terms of use", ({ server }) => {
  const tokens = new Map<Role, string>();
  let adminId: string;
  let versionCounter = 0;
  const clients: Client[] = [];

  before(async () => {
    for (const role of ["admin", "helpdesk", "dpo", "user"] as Role[]) {
      const id = (await server().services.accounts.create(`terms_${role}`, { password: TEST_PASSWORD, role })).user_id;
      if (role === "admin") adminId = id;
      tokens.set(role, (await server().login(`terms_${role}`)).access_token);
    }
  });
  after(() => {
    for (const c of clients) c.stopClient();
  });

  const admin = () => tokens.get("admin")!;

  async function createUser(localpart: string): Promise<{ userId: string; token: string; deviceId: string }> {
    const userId = (await server().services.accounts.create(localpart, { password: TEST_PASSWORD })).user_id;
    const login = await server().login(localpart);
    return { userId, token: login.access_token, deviceId: login.device_id };
  }

  async function setTermsRequired(on: boolean): Promise<void> {
    const current = await api<Record<string, unknown>>(server().url, "GET", `${ADMIN}/policy`, { token: admin() });
    const res = await api(server().url, "PUT", `${ADMIN}/policy`, { token: admin(), body: { ...current.body, terms_required: on } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  }

  async function publish(text = "# Nutzungsbedingungen\n\nDienstliche Nutzung only."): Promise<string> {
    const version = `v${++versionCounter}-${Date.now()}`;
    const res = await api(server().url, "POST", `${ADMIN}/terms`, { token: admin(), body: { version, text } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return version;
  }

  async function lastSeq(): Promise<number> {
    const all = await api<{ entries: AuditEntry[] }>(server().url, "GET", `${ADMIN}/audit?limit=1000`, { token: admin() });
    let entries = all.body.entries;
    let last = entries.length ? entries[entries.length - 1]!.seq : 0;
    while (entries.length === 1000) {
      entries = (await api<{ entries: AuditEntry[] }>(server().url, "GET", `${ADMIN}/audit?from=${last}&limit=1000`, { token: admin() })).body.entries;
      if (entries.length) last = entries[entries.length - 1]!.seq;
    }
    return last;
  }

  async function entriesAfter(seq: number): Promise<AuditEntry[]> {
    return (await api<{ entries: AuditEntry[] }>(server().url, "GET", `${ADMIN}/audit?from=${seq}&limit=1000`, { token: admin() })).body.entries;
  }

  /** The consent URI points at the configured public URL; the test server listens elsewhere. */
  function consentPath(uri: string): string {
    const u = new URL(uri);
    assert.equal(u.origin, new URL(server().config.publicBaseUrl).origin);
    return `${u.pathname}${u.search}`;
  }

  async function openConsentPage(pathAndQuery: string, headers: Record<string, string> = {}): Promise<ConsentPage> {
    const res = await fetch(`${server().url}${pathAndQuery}`, { headers });
    const html = await res.text();
    const fields: Record<string, string> = {};
    for (const m of html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)) fields[m[1]!] = decodeEntities(m[2]!);
    const action = /<form method="post" action="([^"]*)">/.exec(html)?.[1];
    return { status: res.status, html, headers: res.headers, fields, action: action === undefined ? undefined : decodeEntities(action) };
  }

  /** Submits the page's form as a browser would: urlencoded, with our own Origin. */
  async function submitConsent(form: Record<string, string>, headers: Record<string, string> = { origin: server().url }, action = "/_revier/consent"): Promise<{ status: number; html: string }> {
    const res = await fetch(`${server().url}${action}`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
      body: new URLSearchParams(form).toString(),
    });
    return { status: res.status, html: await res.text() };
  }

  async function whoami(token: string) {
    return api<ConsentError>(server().url, "GET", "/_matrix/client/v3/account/whoami", { token });
  }

  test("publishing is validated and audited once; the admin view shows text, time and acceptance counts", async () => {
    const bad: [unknown, string][] = [
      [{ version: "", text: "x" }, "M_BAD_JSON"],
      [{ version: "mit Leerzeichen", text: "x" }, "M_BAD_JSON"],
      [{ version: "ok-1", text: "" }, "M_BAD_JSON"],
      [{ version: "ok-1", text: "   \n\t" }, "M_INVALID_PARAM"],
      [{ version: "ok-1", text: "x".repeat(65_537) }, "M_BAD_JSON"],
      [{ version: "ok-1", text: "x", extra: true }, "M_BAD_JSON"],
      [{ text: "x" }, "M_MISSING_PARAM"],
    ];
    const before = await lastSeq();
    for (const [body, errcode] of bad) {
      const res = await api<ConsentError>(server().url, "POST", `${ADMIN}/terms`, { token: admin(), body });
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(res.body.errcode, errcode, JSON.stringify(res.body));
    }
    assert.equal(await lastSeq(), before, "refused publications leave no audit entry");

    const empty = await api<{ required: boolean; enforced: boolean; current: unknown; versions: unknown[] }>(server().url, "GET", `${ADMIN}/terms`, { token: admin() });
    assert.equal(empty.status, 200);
    assert.deepEqual(empty.body, { required: false, enforced: false, current: null, versions: [] });

    const text = "# Nutzungsbedingungen\r\n\r\nNur dienstlich.";
    const res = await api<{ version: string; text: string; published_ts: number; published_by: string; acceptances: number; pending: number }>(server().url, "POST", `${ADMIN}/terms`, {
      token: admin(),
      body: { version: "2025-01", text },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.version, "2025-01");
    assert.equal(res.body.text, "# Nutzungsbedingungen\n\nNur dienstlich.", "line endings are normalised");
    assert.ok(Math.abs(res.body.published_ts - Date.now()) < 60_000);
    assert.equal(res.body.published_by, adminId);
    assert.equal(res.body.acceptances, 0);
    const added = await entriesAfter(before);
    assert.equal(added.length, 1);
    assert.equal(added[0]!.action, "terms.publish");
    assert.equal(added[0]!.actor, adminId);
    assert.equal(added[0]!.actor_role, "admin");
    assert.equal(added[0]!.target, "terms");
    assert.deepEqual(added[0]!.details, { version: "2025-01", sha256: sha256(res.body.text), chars: res.body.text.length });

    // A published version is never replaced.
    const again = await api<ConsentError>(server().url, "POST", `${ADMIN}/terms`, { token: admin(), body: { version: "2025-01", text: "anders" } });
    assert.equal(again.status, 400);
    assert.equal(again.body.errcode, "M_INVALID_PARAM");
    assert.equal(await lastSeq(), before + 1);

    // Not enforced while the policy does not require terms: nobody is blocked.
    assert.equal((await whoami(tokens.get("user")!)).status, 200);

    const view = await api<{ required: boolean; enforced: boolean; current: { version: string; text: string; pending: number; acceptances: number }; versions: { version: string }[] }>(
      server().url,
      "GET",
      `${ADMIN}/terms`,
      { token: admin() },
    );
    assert.equal(view.body.required, false);
    assert.equal(view.body.enforced, false);
    assert.equal(view.body.current.version, "2025-01");
    assert.equal(view.body.current.text, res.body.text);
    assert.equal(view.body.current.acceptances, 0);
    const active = await server().services.storage.db.selectFrom("users").select((eb) => eb.fn.countAll<number>().as("n")).where("deactivated", "=", 0).executeTakeFirst();
    assert.equal(view.body.current.pending, Number(active?.n));
    assert.deepEqual(
      view.body.versions.map((v) => v.version),
      ["2025-01"],
    );
  });

  test("raw HTTP: a new version blocks every client call with M_CONSENT_NOT_GIVEN until accepted through the JSON endpoint; logout still works", async () => {
    const anna = await createUser("terms_anna");
    const bert = await createUser("terms_bert");
    const version = await publish("# Regeln\n\n<script>alert('x')</script> **Pflicht**");
    await setTermsRequired(true);
    try {
      for (const [method, path, body] of [
        ["GET", "/_matrix/client/v3/account/whoami", undefined],
        ["GET", "/_matrix/client/v3/sync?timeout=0", undefined],
        ["POST", "/_matrix/client/v3/createRoom", {}],
        ["GET", "/_matrix/client/v3/devices", undefined],
        ["POST", "/_revier/client/v1/enrollment_codes", {}],
      ] as const) {
        const res = await api<ConsentError>(server().url, method, path, { token: anna.token, ...(body ? { body } : {}) });
        assert.equal(res.status, 403, `${method} ${path}: ${JSON.stringify(res.body)}`);
        assert.equal(res.body.errcode, "M_CONSENT_NOT_GIVEN");
        assert.match(res.body.error ?? "", new RegExp(version));
        assert.ok(res.body.consent_uri?.startsWith(`${server().config.publicBaseUrl}/_revier/consent?consent_token=`), res.body.consent_uri);
        assert.ok(!(res.body.consent_uri ?? "").includes(anna.token), "the access token is never in the consent URI");
      }
      // Unauthenticated endpoints are not affected, and neither is the admin API.
      assert.equal((await api(server().url, "GET", "/_matrix/client/versions")).status, 200);
      assert.equal((await api(server().url, "GET", `${ADMIN}/terms`, { token: admin() })).status, 200);

      const shown = await api<{ required: boolean; accepted: boolean; current: { version: string; text: string; html: string } }>(server().url, "GET", CLIENT_TERMS, { token: anna.token });
      assert.equal(shown.status, 200, JSON.stringify(shown.body));
      assert.equal(shown.body.required, true);
      assert.equal(shown.body.accepted, false);
      assert.equal(shown.body.current.version, version);
      assert.match(shown.body.current.text, /<script>/, "the Markdown source is returned as written");
      assert.match(shown.body.current.html, /&lt;script&gt;alert\(&#39;x&#39;\)&lt;\/script&gt;|&lt;script&gt;alert\('x'\)&lt;\/script&gt;/);
      assert.match(shown.body.current.html, /<strong>Pflicht<\/strong>/);
      assert.doesNotMatch(shown.body.current.html, /<script/);

      const wrong = await api<ConsentError>(server().url, "POST", CLIENT_TERMS, { token: anna.token, body: { version: "2025-01" } });
      assert.equal(wrong.status, 400);
      assert.equal(wrong.body.errcode, "M_INVALID_PARAM");
      assert.equal((await api<ConsentError>(server().url, "POST", CLIENT_TERMS, { token: anna.token, body: {} })).status, 400);

      const before = await lastSeq();
      const accepted = await api<{ version: string; accepted_ts: number }>(server().url, "POST", CLIENT_TERMS, { token: anna.token, body: { version } });
      assert.equal(accepted.status, 200, JSON.stringify(accepted.body));
      assert.equal(accepted.body.version, version);
      const added = await entriesAfter(before);
      assert.equal(added.length, 1, "one acceptance, one audit entry");
      assert.equal(added[0]!.action, "terms.accept");
      assert.equal(added[0]!.actor, anna.userId);
      assert.equal(added[0]!.actor_role, "user");
      assert.equal(added[0]!.target, anna.userId);
      assert.deepEqual(added[0]!.details, { version, via: "client_api", device_id: anna.deviceId });
      // Accepting again changes nothing and is not audited again.
      const twice = await api<{ accepted_ts: number }>(server().url, "POST", CLIENT_TERMS, { token: anna.token, body: { version } });
      assert.equal(twice.status, 200);
      assert.equal(twice.body.accepted_ts, accepted.body.accepted_ts);
      assert.equal(await lastSeq(), before + 1);

      const stored = await server().services.storage.db.selectFrom("terms_acceptances").selectAll().where("user_id", "=", anna.userId).where("version", "=", version).execute();
      assert.deepEqual(
        stored.map((r) => ({ ...r, accepted_ts: Number(r.accepted_ts) })),
        [{ user_id: anna.userId, version, accepted_ts: accepted.body.accepted_ts, device_id: anna.deviceId, via: "client_api" }],
      );

      assert.equal((await whoami(anna.token)).status, 200);
      assert.equal((await api(server().url, "GET", "/_matrix/client/v3/sync?timeout=0", { token: anna.token })).status, 200);
      const after = await api<{ accepted: boolean; accepted_ts: number }>(server().url, "GET", CLIENT_TERMS, { token: anna.token });
      assert.equal(after.body.accepted, true);
      assert.equal(after.body.accepted_ts, accepted.body.accepted_ts);
      const view = await api<{ enforced: boolean; current: { acceptances: number } }>(server().url, "GET", `${ADMIN}/terms`, { token: admin() });
      assert.equal(view.body.enforced, true);
      assert.equal(view.body.current.acceptances, 1);

      // Bert never accepted: he is still blocked, and may still log out.
      assert.equal((await whoami(bert.token)).body.errcode, "M_CONSENT_NOT_GIVEN");
      assert.equal((await api(server().url, "POST", "/_matrix/client/v3/logout", { token: bert.token })).status, 200);
      assert.equal((await whoami(bert.token)).body.errcode, "M_UNKNOWN_TOKEN");
      const bertAgain = await server().login("terms_bert");
      assert.equal((await api(server().url, "POST", "/_matrix/client/v3/logout/all", { token: bertAgain.access_token })).status, 200);
      assert.equal((await whoami(bertAgain.access_token)).body.errcode, "M_UNKNOWN_TOKEN");

      // Yet another version blocks Anna again.
      await publish();
      assert.equal((await whoami(anna.token)).body.errcode, "M_CONSENT_NOT_GIVEN");
    } finally {
      await setTermsRequired(false);
    }
    // With terms no longer required nobody is held to them.
    assert.equal((await whoami(anna.token)).status, 200);
  });

  test("the consent page: one-time hashed token, escaped Markdown, no script, German and English, refuses foreign origins, records the acceptance once", async () => {
    const carl = await createUser("terms_carl");
    const version = await publish('# Dienstvorschrift\n\n<script>document.location="https://evil.example"</script>\n\n[Datenschutz](https://polizei.example/ds) [böse](javascript:alert(1))');
    await setTermsRequired(true);
    try {
      const refused = await whoami(carl.token);
      assert.equal(refused.body.errcode, "M_CONSENT_NOT_GIVEN");
      const uri = refused.body.consent_uri!;
      // A client retrying does not mint a new token per request.
      assert.equal((await whoami(carl.token)).body.consent_uri, uri);
      const raw = new URL(uri).searchParams.get("consent_token")!;
      assert.ok(raw.length >= 40);
      const rows = await server().services.storage.db.selectFrom("consent_tokens").selectAll().where("user_id", "=", carl.userId).execute();
      assert.equal(rows.length, 1);
      assert.equal(rows[0]!.token_hash, sha256(raw), "only the digest is stored");
      assert.equal(rows[0]!.device_id, carl.deviceId);
      assert.ok(Number(rows[0]!.expires_ts) - Date.now() <= 15 * 60_000 && Number(rows[0]!.expires_ts) - Date.now() > 14 * 60_000);

      const pagePath = consentPath(uri);
      const pageDe = await openConsentPage(pagePath);
      assert.equal(pageDe.status, 200);
      assert.match(pageDe.headers.get("content-type") ?? "", /^text\/html; charset=utf-8/);
      const csp = pageDe.headers.get("content-security-policy") ?? "";
      assert.match(csp, /default-src 'none'/);
      assert.match(csp, /frame-ancestors 'none'/);
      assert.match(csp, /form-action 'self'/);
      assert.doesNotMatch(csp, /script-src|unsafe-inline/);
      assert.equal(pageDe.headers.get("x-frame-options"), "DENY");
      assert.equal(pageDe.headers.get("referrer-policy"), "no-referrer", "the token in the URL never leaks through a link");
      assert.equal(pageDe.headers.get("cache-control"), "no-store");
      assert.match(pageDe.html, /<html lang="de">/);
      assert.match(pageDe.html, /Nutzungsbedingungen/);
      assert.match(pageDe.html, /Ich habe die Nutzungsbedingungen gelesen und stimme zu/);
      assert.match(pageDe.html, /&lt;script&gt;document\.location=&quot;https:\/\/evil\.example&quot;&lt;\/script&gt;/);
      assert.equal((pageDe.html.match(/<script/gi) ?? []).length, 0, "no script element at all");
      assert.match(pageDe.html, /<a href="https:\/\/polizei\.example\/ds" rel="noopener noreferrer nofollow">Datenschutz<\/a>/);
      assert.doesNotMatch(pageDe.html, /href="javascript:/i);
      assert.ok(!pageDe.html.includes(carl.token), "the access token is not on the page");
      assert.deepEqual(pageDe.fields, { consent_token: raw, version, lang: "de" });
      assert.equal(pageDe.action, "/_revier/consent");

      const pageEn = await openConsentPage(pagePath, { "accept-language": "en-GB,en;q=0.9" });
      assert.match(pageEn.html, /<html lang="en">/);
      assert.match(pageEn.html, /<h1>Terms of use<\/h1>/);
      assert.match(pageEn.html, /I have read the terms of use and accept them/);
      assert.equal(pageEn.fields.lang, "en");
      assert.match((await openConsentPage(`${pagePath}&lang=en`)).html, /<html lang="en">/);

      const before = await lastSeq();
      // A form posted from another site is refused, even with the right token.
      const foreign = await submitConsent(pageDe.fields, { origin: "https://evil.example" });
      assert.equal(foreign.status, 403);
      assert.match(foreign.html, /nicht von dieser Seite/);
      assert.equal((await submitConsent(pageDe.fields, { origin: "null", "sec-fetch-site": "cross-site" })).status, 403);
      assert.equal((await submitConsent(pageDe.fields, { "sec-fetch-site": "same-site" })).status, 403);
      // A guessed or missing token, a stale version or a non-form body record nothing.
      assert.equal((await submitConsent({ ...pageDe.fields, consent_token: "erraten" })).status, 403);
      assert.equal((await submitConsent({ version, lang: "de" })).status, 403);
      const stale = await submitConsent({ ...pageDe.fields, version: "2025-01" });
      assert.equal(stale.status, 409);
      assert.match(stale.html, /neue Version/);
      assert.match(stale.html, new RegExp(`name="version" value="${version}"`));
      const json = await fetch(`${server().url}/_revier/consent`, { method: "POST", headers: { "content-type": "application/json", origin: server().url }, body: JSON.stringify(pageDe.fields) });
      assert.equal(json.status, 415);
      const huge = await submitConsent({ ...pageDe.fields, padding: "x".repeat(10_000) });
      assert.equal(huge.status, 413);
      assert.equal(await lastSeq(), before, "nothing refused is audited");
      assert.equal((await whoami(carl.token)).body.errcode, "M_CONSENT_NOT_GIVEN");

      // What a browser sends for this page's own form under Referrer-Policy no-referrer.
      const done = await submitConsent(pageDe.fields, { origin: "null", "sec-fetch-site": "same-origin" });
      assert.equal(done.status, 200, done.html);
      assert.match(done.html, /Vielen Dank/);
      const added = await entriesAfter(before);
      assert.equal(added.length, 1);
      assert.equal(added[0]!.action, "terms.accept");
      assert.equal(added[0]!.actor, carl.userId);
      assert.deepEqual(added[0]!.details, { version, via: "consent_page", device_id: carl.deviceId });
      assert.equal((await whoami(carl.token)).status, 200);

      // The token worked once.
      assert.equal((await submitConsent(pageDe.fields)).status, 403);
      const usedPage = await openConsentPage(pagePath);
      assert.equal(usedPage.status, 403);
      assert.match(usedPage.html, /ungültig, abgelaufen oder wurde schon benutzt/);
      assert.equal(await lastSeq(), before + 1);

      // An expired link shows nothing.
      const dora = await createUser("terms_dora");
      const doraUri = (await whoami(dora.token)).body.consent_uri!;
      assert.equal((await openConsentPage(consentPath(doraUri))).status, 200);
      await server()
        .services.storage.db.updateTable("consent_tokens")
        .set({ expires_ts: Date.now() - 1 })
        .where("token_hash", "=", sha256(new URL(doraUri).searchParams.get("consent_token")!))
        .execute();
      const expired = await openConsentPage(consentPath(doraUri));
      assert.equal(expired.status, 403);
      assert.deepEqual(expired.fields, {});
      assert.equal((await openConsentPage("/_revier/consent")).status, 403);
    } finally {
      await setTermsRequired(false);
    }
  });

  test("matrix-js-sdk: the client hears M_CONSENT_NOT_GIVEN with a consent_uri, works after the consent page, and is blocked again by the next version", async () => {
    const erik = await createUser("terms_erik");
    await publish();
    await setTermsRequired(true);
    try {
      const client = sdk.createClient({ baseUrl: server().url, accessToken: erik.token, userId: erik.userId, deviceId: erik.deviceId });
      clients.push(client);
      const noConsent: { message: string; uri: string }[] = [];
      client.on(sdk.HttpApiEvent.NoConsent, (message, uri) => noConsent.push({ message, uri }));

      await assert.rejects(client.getDevices(), (e: sdk.MatrixError) => {
        assert.equal(e.errcode, "M_CONSENT_NOT_GIVEN");
        assert.equal(e.httpStatus, 403);
        assert.equal(typeof e.data.consent_uri, "string");
        return true;
      });
      assert.equal(noConsent.length, 1);
      assert.match(noConsent[0]!.uri, /\/_revier\/consent\?consent_token=/);

      // The user follows the link in a browser and presses the button.
      const page = await openConsentPage(consentPath(noConsent[0]!.uri));
      assert.equal(page.status, 200);
      assert.equal((await submitConsent(page.fields)).status, 200);

      assert.ok((await client.getDevices()).devices.some((d) => d.device_id === erik.deviceId));
      const synced = new Promise<void>((resolve) => {
        const onSync = (state: string) => {
          if (state === "PREPARED" || state === "SYNCING") {
            client.off(sdk.ClientEvent.Sync, onSync);
            resolve();
          }
        };
        client.on(sdk.ClientEvent.Sync, onSync);
      });
      await client.startClient({ initialSyncLimit: 5, pollTimeout: 2_000 });
      await synced;
      const { room_id: roomId } = await client.createRoom({ name: "Lage" });
      await waitFor("the room to arrive through /sync", () => client.getRoom(roomId));

      // The next version blocks the same client again until accepted (here through the JSON API).
      const next = await publish("# Version 3\n\nNeu.");
      await assert.rejects(client.createRoom({ name: "blockiert" }), (e: sdk.MatrixError) => e.errcode === "M_CONSENT_NOT_GIVEN");
      assert.equal(noConsent.length >= 2, true);
      const accepted = await client.http.authedRequest<{ version: string }>(sdk.Method.Post, "/terms", undefined, { version: next }, { prefix: "/_revier/client/v1" });
      assert.equal(accepted.version, next);
      const again = await client.createRoom({ name: "wieder frei" });
      assert.match(again.room_id, /^!/);

      // Logging out never needs consent.
      await publish("# Version 4");
      client.stopClient();
      await client.logout(true);
      assert.equal((await whoami(erik.token)).body.errcode, "M_UNKNOWN_TOKEN");
    } finally {
      await setTermsRequired(false);
    }
  });

  test("role checks: terms are read by admin and DPO, published by admin only", async () => {
    const cases: { method: string; path: string; allowed: Role[]; body?: () => unknown }[] = [
      { method: "GET", path: `${ADMIN}/terms`, allowed: ["admin", "dpo"] },
      { method: "POST", path: `${ADMIN}/terms`, allowed: ["admin"], body: () => ({ version: `rolle-${++versionCounter}`, text: "Text" }) },
    ];
    for (const c of cases) {
      for (const caller of ["admin", "helpdesk", "dpo", "user", "none"] as const) {
        const before = await lastSeq();
        const token = caller === "none" ? undefined : tokens.get(caller);
        const res = await api<ConsentError>(server().url, c.method, c.path, { ...(token ? { token } : {}), ...(c.body ? { body: c.body() } : {}) });
        const label = `${c.method} ${c.path} as ${caller}: ${res.status} ${JSON.stringify(res.body)}`;
        if (caller === "none") {
          assert.equal(res.status, 401, label);
          assert.equal(res.body.errcode, "M_MISSING_TOKEN", label);
        } else if (c.allowed.includes(caller)) {
          assert.equal(res.status, 200, label);
        } else {
          assert.equal(res.status, 403, label);
          assert.equal(res.body.errcode, "M_FORBIDDEN", label);
        }
        const written = (await lastSeq()) - before;
        assert.equal(written, c.method === "POST" && caller === "admin" ? 1 : 0, `${label}: ${written} audit entries`);
      }
    }
    // Both endpoints are in the OpenAPI document with their permission.
    const doc = await api<{ paths: Record<string, Record<string, { "x-revier-permission": string; requestBody?: unknown }>> }>(server().url, "GET", `${ADMIN}/openapi.json`);
    assert.equal(doc.body.paths[`${ADMIN}/terms`]?.get?.["x-revier-permission"], "policy.read");
    assert.equal(doc.body.paths[`${ADMIN}/terms`]?.post?.["x-revier-permission"], "policy.write");
    assert.ok(doc.body.paths[`${ADMIN}/terms`]?.post?.requestBody);
  });
});
