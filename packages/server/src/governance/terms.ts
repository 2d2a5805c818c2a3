import MarkdownIt from "markdown-it";
import { MatrixError, TERMS_MAX_CHARS } from "@revier/protocol";
import type { Static } from "@sinclair/typebox";
import type { TermsOverview, TermsVersionDetails } from "@revier/protocol";
import type { Db, Tx } from "../storage/database.js";
import type { Accounts } from "../users/accounts.js";
import { randomToken, sha256Hex } from "../lib/random.js";
import type { AuthHook, Services } from "../services.js";
import type { AuditLog, AuditRecorder } from "./audit.js";
import type { Actor, PolicyStore } from "./policy.js";
import { ROUTE_ACTIONS } from "./hooks.js";

/** The consent page, served by the server itself (HTML). */
export const CONSENT_PATH = "/_revier/consent";
/** A consent link works for this long and for one acceptance. */
export const CONSENT_TOKEN_LIFETIME_MS = 15 * 60_000;
// Another process may publish a version; like the policy, this one notices within this time.
const CACHE_MS = 5_000;
// Bounds of the in-process caches; past them they start over (they only save database reads).
const MAX_CACHED = 50_000;

export interface TermsVersion {
  seq: number;
  version: string;
  text: string;
  published_ts: number;
  published_by: string;
}

export type AcceptVia = "consent_page" | "client_api";

// ---- Markdown ------------------------------------------------------------------------------------

/**
 * markdown-it with `html: false` turns raw HTML in the source into text (`<script>` shows as
 * `&lt;script&gt;`), escapes every attribute value, and runs each link through `validateLink`.
 * Images are off: a terms page must not load anything from elsewhere (the CSP forbids it too).
 */
const markdown = new MarkdownIt({ html: false, linkify: false, typographer: false });
markdown.disable(["image"]);
markdown.validateLink = (url: string) => /^(https?:\/\/|mailto:)/i.test(url);
markdown.renderer.rules.link_open = (tokens, idx, options, _env, self) => {
  tokens[idx]!.attrSet("rel", "noopener noreferrer nofollow");
  return self.renderToken(tokens, idx, options);
};

/** The terms' Markdown as HTML that is safe to embed: no raw HTML, only http(s) and mailto links. */
export function renderTermsMarkdown(text: string): string {
  return markdown.render(text);
}

// ---- the service ---------------------------------------------------------------------------------

type Row = { seq: number; version: string; text: string; published_ts: number; published_by: string };

function fromRow(r: Row): TermsVersion {
  return { seq: Number(r.seq), version: r.version, text: r.text, published_ts: Number(r.published_ts), published_by: r.published_by };
}

/**
 * Terms of use: published versions (never replaced; the newest is current), acceptances, and the
 * one-time tokens of the consent page. Users are held to the current version while the policy's
 * `terms_required` is on; publishing and every acceptance are audited.
 */
export class Terms {
  private cached: { current: TermsVersion | null; at: number } | null = null;
  /** `user \n version` pairs known to be accepted; acceptances are never withdrawn, so this never goes stale. */
  private readonly accepted = new Set<string>();
  /** Consent links handed out recently, per device, so a client retrying /sync does not mint a token per request. */
  private readonly links = new Map<string, { uri: string; expires: number }>();

  constructor(
    private readonly db: Db,
    private readonly accounts: Accounts,
    private readonly audit: AuditLog,
    private readonly policy: PolicyStore,
    private readonly publicBaseUrl: string,
    private readonly now: () => number = Date.now,
  ) {}

  async current(): Promise<TermsVersion | null> {
    if (this.cached && this.now() - this.cached.at < CACHE_MS) return this.cached.current;
    return this.fresh();
  }

  async fresh(): Promise<TermsVersion | null> {
    const row = await this.db.selectFrom("terms_versions").selectAll().orderBy("seq", "desc").limit(1).executeTakeFirst();
    const current = row ? fromRow(row) : null;
    this.cached = { current, at: this.now() };
    return current;
  }

  /** The version users must have accepted right now: the current one while the policy requires terms. */
  async enforced(): Promise<TermsVersion | null> {
    if (!(await this.policy.get()).terms_required) return null;
    return this.current();
  }

  /** Publishes a new version, which becomes current at once; the label must be new. */
  async publish(by: Actor, input: { version: string; text: string }): Promise<Static<typeof TermsVersionDetails>> {
    const text = input.text.replace(/\r\n?/g, "\n");
    if (text.trim() === "") throw new MatrixError("M_INVALID_PARAM", "The terms text is empty");
    if (text.length > TERMS_MAX_CHARS) throw new MatrixError("M_TOO_LARGE", `The terms text is longer than ${TERMS_MAX_CHARS} characters`);
    const published = await this.audit.transact(async (tx, record) => {
      const taken = await tx.selectFrom("terms_versions").select("seq").where("version", "=", input.version).executeTakeFirst();
      if (taken) throw new MatrixError("M_INVALID_PARAM", `Version '${input.version}' was published already; published terms are never replaced, so give the new text a new version label`);
      const last = await tx.selectFrom("terms_versions").select("seq").orderBy("seq", "desc").limit(1).executeTakeFirst();
      const row: TermsVersion = { seq: last ? Number(last.seq) + 1 : 1, version: input.version, text, published_ts: this.now(), published_by: by.actor };
      await tx.insertInto("terms_versions").values(row).execute();
      // The text itself is in terms_versions; its digest here ties the entry to exactly that text.
      await record({ ...by, action: "terms.publish", target: "terms", details: { version: row.version, sha256: sha256Hex(text), chars: text.length } });
      return row;
    });
    this.cached = { current: published, at: this.now() };
    this.accepted.clear();
    this.links.clear();
    return { version: published.version, published_ts: published.published_ts, published_by: published.published_by, acceptances: 0, text: published.text, pending: await this.pending(published.version) };
  }

  async hasAccepted(userId: string, version: string): Promise<boolean> {
    const key = `${userId}\n${version}`;
    if (this.accepted.has(key)) return true;
    const ts = await this.acceptedTs(userId, version);
    if (ts === undefined) return false;
    this.remember(key);
    return true;
  }

  async acceptedTs(userId: string, version: string): Promise<number | undefined> {
    const row = await this.db.selectFrom("terms_acceptances").select("accepted_ts").where("user_id", "=", userId).where("version", "=", version).executeTakeFirst();
    return row ? Number(row.accepted_ts) : undefined;
  }

  /**
   * Records that `userId` accepts `version`, which must be the current version. Accepting again is
   * harmless: it returns the first acceptance and writes no second audit entry.
   */
  async accept(userId: string, deviceId: string | null, version: string, via: AcceptVia): Promise<{ version: string; accepted_ts: number }> {
    const role = (await this.accounts.get(userId))?.role ?? "user";
    await this.requireCurrent(version);
    return this.audit.transact((tx, record) => this.recordAcceptance(tx, record, { userId, role, deviceId, version, via }));
  }

  private async requireCurrent(version: string): Promise<TermsVersion> {
    const current = await this.fresh();
    if (!current) throw new MatrixError("M_NOT_FOUND", "No terms of use have been published");
    if (current.version !== version) throw new MatrixError("M_INVALID_PARAM", `Version '${version}' is not the current version of the terms ('${current.version}'); read and accept that one`);
    return current;
  }

  private async recordAcceptance(tx: Tx, record: AuditRecorder, a: { userId: string; role: string; deviceId: string | null; version: string; via: AcceptVia }): Promise<{ version: string; accepted_ts: number }> {
    const existing = await tx.selectFrom("terms_acceptances").select("accepted_ts").where("user_id", "=", a.userId).where("version", "=", a.version).executeTakeFirst();
    if (existing) return { version: a.version, accepted_ts: Number(existing.accepted_ts) };
    const ts = this.now();
    await tx.insertInto("terms_acceptances").values({ user_id: a.userId, version: a.version, accepted_ts: ts, device_id: a.deviceId, via: a.via }).execute();
    await record({ actor: a.userId, actorRole: a.role, action: "terms.accept", target: a.userId, details: { version: a.version, via: a.via, device_id: a.deviceId } });
    this.remember(`${a.userId}\n${a.version}`);
    return { version: a.version, accepted_ts: ts };
  }

  private remember(key: string): void {
    if (this.accepted.size >= MAX_CACHED) this.accepted.clear();
    this.accepted.add(key);
  }

  /** Active accounts that have not accepted `version`. */
  private async pending(version: string): Promise<number> {
    const active = await this.db.selectFrom("users").select((eb) => eb.fn.countAll<number>().as("n")).where("deactivated", "=", 0).executeTakeFirst();
    const done = await this.db
      .selectFrom("terms_acceptances")
      .innerJoin("users", "users.user_id", "terms_acceptances.user_id")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .where("terms_acceptances.version", "=", version)
      .where("users.deactivated", "=", 0)
      .executeTakeFirst();
    return Number(active?.n ?? 0) - Number(done?.n ?? 0);
  }

  /** The admin view: policy switch, current version with its text and counts, and the history. */
  async overview(): Promise<Static<typeof TermsOverview>> {
    const required = (await this.policy.fresh()).terms_required;
    const rows = await this.db.selectFrom("terms_versions").selectAll().orderBy("seq", "desc").limit(100).execute();
    const counts = new Map<string, number>();
    if (rows.length > 0) {
      const grouped = await this.db
        .selectFrom("terms_acceptances")
        .select(["version", (eb) => eb.fn.countAll<number>().as("n")])
        .where(
          "version",
          "in",
          rows.map((r) => r.version),
        )
        .groupBy("version")
        .execute();
      for (const g of grouped) counts.set(g.version, Number(g.n));
    }
    const versions = rows.map((r) => ({ version: r.version, published_ts: Number(r.published_ts), published_by: r.published_by, acceptances: counts.get(r.version) ?? 0 }));
    const head = rows[0];
    const current = head ? { ...versions[0]!, text: head.text, pending: await this.pending(head.version) } : null;
    return { required, enforced: required && current !== null, current, versions };
  }

  // ---- consent page links ------------------------------------------------------------------------

  /**
   * A link to the consent page for this device's session. The link carries a one-time token (not
   * the access token): it only shows the terms to this user and records one acceptance, expires
   * after CONSENT_TOKEN_LIFETIME_MS, and only its SHA-256 digest is stored. A client retrying gets
   * the same link while most of its lifetime is left.
   */
  async consentUri(userId: string, deviceId: string, version: string): Promise<string> {
    // Keyed by version too: a process that missed a publication elsewhere still hands out a fresh link.
    const key = `${userId}\n${deviceId}\n${version}`;
    const now = this.now();
    const known = this.links.get(key);
    if (known && known.expires - now > CONSENT_TOKEN_LIFETIME_MS / 2) return known.uri;
    const raw = randomToken(32);
    const expires = now + CONSENT_TOKEN_LIFETIME_MS;
    await this.db.deleteFrom("consent_tokens").where("expires_ts", "<", now).execute();
    await this.db.insertInto("consent_tokens").values({ token_hash: sha256Hex(raw), user_id: userId, device_id: deviceId, created_ts: now, expires_ts: expires, used_ts: null }).execute();
    const uri = `${this.publicBaseUrl}${CONSENT_PATH}?consent_token=${raw}`;
    if (this.links.size >= MAX_CACHED) this.links.clear();
    this.links.set(key, { uri, expires });
    return uri;
  }

  /** Whose consent link this is, while it is unused and unexpired; null otherwise. */
  async consentSession(raw: string): Promise<{ userId: string; deviceId: string } | null> {
    if (raw === "" || raw.length > 256) return null;
    const row = await this.db
      .selectFrom("consent_tokens")
      .select(["user_id", "device_id"])
      .where("token_hash", "=", sha256Hex(raw))
      .where("used_ts", "is", null)
      .where("expires_ts", ">", this.now())
      .executeTakeFirst();
    return row ? { userId: row.user_id, deviceId: row.device_id } : null;
  }

  /**
   * The consent page's accept button: spends the token and records the acceptance in one
   * transaction. Refused when the link is unknown, used or expired, when the account is locked or
   * deactivated, and when `version` is no longer current (the page then shows the new one).
   */
  async acceptWithConsentToken(raw: string, version: string): Promise<{ userId: string; version: string; accepted_ts: number }> {
    const session = await this.consentSession(raw);
    if (!session) throw new MatrixError("M_FORBIDDEN", "This consent link is invalid, expired or used");
    const user = await this.accounts.get(session.userId);
    if (!user || user.deactivated || user.locked) throw new MatrixError("M_FORBIDDEN", "This account cannot accept terms");
    await this.requireCurrent(version);
    const result = await this.audit.transact(async (tx, record) => {
      const spent = await tx
        .updateTable("consent_tokens")
        .set({ used_ts: this.now() })
        .where("token_hash", "=", sha256Hex(raw))
        .where("used_ts", "is", null)
        .where("expires_ts", ">", this.now())
        .executeTakeFirst();
      if (Number(spent.numUpdatedRows) !== 1) throw new MatrixError("M_FORBIDDEN", "This consent link is invalid, expired or used");
      return this.recordAcceptance(tx, record, { userId: session.userId, role: user.role, deviceId: session.deviceId, version, via: "consent_page" });
    });
    for (const [key] of this.links) if (key.startsWith(`${session.userId}\n`)) this.links.delete(key);
    return { userId: session.userId, ...result };
  }
}

// ---- enforcement ---------------------------------------------------------------------------------

/**
 * While the policy requires terms and the user has not accepted the current version, every
 * authenticated request is answered 403 M_CONSENT_NOT_GIVEN with a `consent_uri`, except routes
 * marked `allowWithoutConsent` (logout, the terms endpoints) and the admin API: an administrator
 * must be able to correct the terms without first accepting them, and the admin API is not the
 * Client-Server API the terms govern.
 */
export function termsAuthHook(s: Services): AuthHook {
  return async (session, { route }) => {
    if (route.allowWithoutConsent || ROUTE_ACTIONS.has(route)) return;
    const due = await s.terms.enforced();
    if (!due || (await s.terms.hasAccepted(session.userId, due.version))) return;
    throw new MatrixError("M_CONSENT_NOT_GIVEN", `Please read and accept the terms of use (version ${due.version}) before you continue: open the consent_uri.`, {
      extra: { consent_uri: await s.terms.consentUri(session.userId, session.deviceId, due.version) },
    });
  };
}
