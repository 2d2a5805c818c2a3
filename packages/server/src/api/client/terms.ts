import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import type { FastifyReply, FastifyRequest } from "fastify";
import { Type } from "@sinclair/typebox";
import { AcceptTermsBody, MatrixError } from "@revier/protocol";
import { route } from "../../http/route.js";
import type { Services } from "../../services.js";
import { CONSENT_PATH, renderTermsMarkdown, type TermsVersion } from "../../governance/terms.js";

/**
 * Terms of use for clients: a JSON API for Revier's own app, and the consent page that
 * `M_CONSENT_NOT_GIVEN` points standard clients (Element, FluffyChat …) to.
 *
 * The page is reached through a one-time consent token in its URL, never the access token. It
 * renders the Markdown without raw HTML, allows no script at all (CSP), cannot be framed, and its
 * form posts the token back: the token is the proof of who accepts, so a cross-site form cannot
 * forge an acceptance; a foreign `Origin` is refused as well.
 */

// ---- JSON API --------------------------------------------------------------------------------------

const jsonRoutes = [
  route({ method: "GET", url: "/_revier/client/v1/terms", allowWithoutConsent: true }, async ({ user }, s) => {
    const current = await s.terms.fresh();
    if (!current) return { required: false, current: null, accepted: false };
    const required = (await s.policy.get()).terms_required;
    const acceptedTs = await s.terms.acceptedTs(user.userId, current.version);
    return {
      required,
      current: { version: current.version, text: current.text, html: renderTermsMarkdown(current.text), published_ts: current.published_ts },
      accepted: acceptedTs !== undefined,
      ...(acceptedTs !== undefined ? { accepted_ts: acceptedTs } : {}),
    };
  }),

  route({ method: "POST", url: "/_revier/client/v1/terms", body: AcceptTermsBody, allowWithoutConsent: true }, async ({ user, body }, s) =>
    s.terms.accept(user.userId, user.deviceId, body.version, "client_api"),
  ),
];

// ---- the consent page --------------------------------------------------------------------------------

type Lang = "de" | "en";

const TEXT: Record<Lang, Record<string, string>> = {
  de: {
    title: "Nutzungsbedingungen",
    version: "Version",
    published: "veröffentlicht am",
    intro: "Bitte lesen Sie die Nutzungsbedingungen. Sie können den Messenger erst wieder nutzen, wenn Sie ihnen zugestimmt haben.",
    accept: "Ich habe die Nutzungsbedingungen gelesen und stimme zu",
    done: "Vielen Dank. Ihre Zustimmung ist gespeichert. Sie können dieses Fenster schließen und zur App zurückkehren.",
    already: "Sie haben dieser Version bereits zugestimmt. Sie können dieses Fenster schließen und zur App zurückkehren.",
    invalid: "Dieser Link ist ungültig, abgelaufen oder wurde schon benutzt. Öffnen Sie die App erneut: Sie zeigt Ihnen einen neuen Link.",
    none: "Es sind keine Nutzungsbedingungen veröffentlicht.",
    newer: "Inzwischen wurde eine neue Version veröffentlicht. Bitte lesen Sie diese und stimmen Sie ihr zu.",
    foreign: "Diese Zustimmung wurde nicht von dieser Seite abgeschickt und deshalb nicht gespeichert.",
    bad: "Die Anfrage war fehlerhaft. Öffnen Sie den Link aus der App erneut.",
    blocked: "Für dieses Konto kann keine Zustimmung gespeichert werden. Wenden Sie sich an den Helpdesk.",
    other: "English",
  },
  en: {
    title: "Terms of use",
    version: "Version",
    published: "published on",
    intro: "Please read the terms of use. You can use the messenger again once you have accepted them.",
    accept: "I have read the terms of use and accept them",
    done: "Thank you. Your acceptance has been recorded. You can close this window and return to the app.",
    already: "You have already accepted this version. You can close this window and return to the app.",
    invalid: "This link is invalid, has expired or has been used. Open the app again: it will show you a new link.",
    none: "No terms of use have been published.",
    newer: "A new version has been published in the meantime. Please read it and accept it.",
    foreign: "This acceptance was not sent from this page and has not been recorded.",
    bad: "The request was malformed. Open the link from the app again.",
    blocked: "No acceptance can be recorded for this account. Please contact the helpdesk.",
    other: "Deutsch",
  },
};

const CSS = [
  "body{font-family:system-ui,sans-serif;line-height:1.5;margin:0;background:#f4f5f7;color:#1b1f24}",
  "main{max-width:46rem;margin:0 auto;padding:1.5rem;background:#fff;min-height:100vh;box-sizing:border-box}",
  "nav{text-align:right;font-size:.9rem}",
  ".meta{color:#555;font-size:.9rem}",
  "article{border-top:1px solid #ddd;border-bottom:1px solid #ddd;margin:1rem 0;padding:.5rem 0;overflow-wrap:anywhere}",
  "button{font-size:1rem;padding:.7rem 1.2rem;border:0;border-radius:.3rem;background:#0b5394;color:#fff;cursor:pointer}",
  ".notice{background:#fff4ce;padding:.6rem .8rem;border-radius:.3rem}",
].join("");

/** Only this exact stylesheet may apply; nothing may run, load, frame the page or post elsewhere. */
const PAGE_CSP = [
  "default-src 'none'",
  `style-src 'sha256-${createHash("sha256").update(CSS).digest("base64")}'`,
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join("; ");

const MAX_FORM_BYTES = 8192;

export function escapeHtml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

/** `de` unless asked otherwise: an explicit `lang`, else the first of de/en in Accept-Language by weight. */
export function pickLang(explicit: unknown, acceptLanguage: string | undefined): Lang {
  if (explicit === "de" || explicit === "en") return explicit;
  const ranked = (acceptLanguage ?? "")
    .split(",")
    .map((part, i) => {
      const [tag = "", ...params] = part.trim().split(";");
      const q = params.map((p) => /^\s*q=([0-9.]+)\s*$/.exec(p)?.[1]).find((v) => v !== undefined);
      return { primary: tag.trim().toLowerCase().split("-")[0], q: q === undefined ? 1 : Number(q), i };
    })
    .filter((l) => (l.primary === "de" || l.primary === "en") && l.q > 0)
    .sort((a, b) => b.q - a.q || a.i - b.i);
  return (ranked[0]?.primary as Lang | undefined) ?? "de";
}

function basePath(s: Services): string {
  return new URL(s.config.publicBaseUrl).pathname.replace(/\/+$/, "");
}

function page(lang: Lang, body: string, switchHref?: string): string {
  const t = TEXT[lang];
  const nav = switchHref ? `<nav><a href="${escapeHtml(switchHref)}" hreflang="${lang === "de" ? "en" : "de"}">${t.other}</a></nav>` : "";
  return `<!doctype html>
<html lang="${lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>${t.title}</title>
<style>${CSS}</style>
</head>
<body><main>
${nav}<h1>${t.title}</h1>
${body}
</main></body>
</html>
`;
}

function send(reply: FastifyReply, status: number, html: string): void {
  reply
    .code(status)
    .headers({
      "content-type": "text/html; charset=utf-8",
      "content-security-policy": PAGE_CSP,
      "x-frame-options": "DENY",
      // Nothing, least of all the token in this page's URL, leaks to a site a link in the terms points to.
      "referrer-policy": "no-referrer",
      "cache-control": "no-store",
    })
    .send(html);
}

function message(lang: Lang, key: string): string {
  return `<p class="notice">${TEXT[lang][key]}</p>`;
}

function termsPage(s: Services, lang: Lang, terms: TermsVersion, token: string, notice?: string): string {
  const t = TEXT[lang];
  const other: Lang = lang === "de" ? "en" : "de";
  const self = `${basePath(s)}${CONSENT_PATH}`;
  const body = `${notice ? message(lang, notice) : ""}<p class="meta">${t.version} ${escapeHtml(terms.version)} · ${t.published} ${new Date(terms.published_ts).toISOString().slice(0, 10)}</p>
<p>${t.intro}</p>
<article>
${renderTermsMarkdown(terms.text)}</article>
<form method="post" action="${escapeHtml(self)}">
<input type="hidden" name="consent_token" value="${escapeHtml(token)}">
<input type="hidden" name="version" value="${escapeHtml(terms.version)}">
<input type="hidden" name="lang" value="${lang}">
<button type="submit">${t.accept}</button>
</form>`;
  return page(lang, body, `${self}?consent_token=${encodeURIComponent(token)}&lang=${other}`);
}

/**
 * Defence in depth against cross-site form posts (the token is what really decides): a browser
 * that says the post came from another site is refused, and so is a foreign Origin. Under the
 * page's `Referrer-Policy: no-referrer` browsers send `Origin: null` with the form, so "null" is
 * left to Sec-Fetch-Site, which they send alongside; a missing Origin is a non-browser client.
 */
function fromOurOrigin(req: FastifyRequest, s: Services): boolean {
  const origin = req.headers.origin;
  if (req.headers["sec-fetch-site"] === "cross-site" || req.headers["sec-fetch-site"] === "same-site") return false;
  if (origin === undefined || origin === "null") return true;
  const ours = new Set([new URL(s.config.publicBaseUrl).origin]);
  if (req.headers.host) ours.add(`${req.protocol}://${req.headers.host}`);
  return ours.has(origin);
}

async function readForm(stream: Readable): Promise<URLSearchParams | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
    size += buf.length;
    if (size > MAX_FORM_BYTES) return null;
    chunks.push(buf);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
}

const pageRoutes = [
  route(
    {
      method: "GET",
      url: CONSENT_PATH,
      auth: "none",
      query: Type.Object({ consent_token: Type.Optional(Type.String({ maxLength: 256 })), lang: Type.Optional(Type.String({ maxLength: 16 })) }, { additionalProperties: true }),
    },
    async ({ query, req, reply }, s) => {
      const lang = pickLang(query.lang, req.headers["accept-language"]);
      const token = query.consent_token ?? "";
      const session = await s.terms.consentSession(token);
      if (!session) return send(reply, 403, page(lang, message(lang, "invalid")));
      const current = await s.terms.fresh();
      if (!current) return send(reply, 404, page(lang, message(lang, "none")));
      if (await s.terms.hasAccepted(session.userId, current.version)) return send(reply, 200, page(lang, message(lang, "already")));
      send(reply, 200, termsPage(s, lang, current, token));
    },
  ),

  // The form posts application/x-www-form-urlencoded, which the JSON body parser does not take:
  // the route reads its small body itself.
  route({ method: "POST", url: CONSENT_PATH, auth: "none", rawBody: true, rateLimit: "login" }, async ({ req, reply }, s) => {
    const type = String(req.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
    const form = type === "application/x-www-form-urlencoded" ? await readForm(req.body as Readable) : null;
    const lang = pickLang(form?.get("lang"), req.headers["accept-language"]);
    if (!form) return send(reply, type === "application/x-www-form-urlencoded" ? 413 : 415, page(lang, message(lang, "bad")));
    if (!fromOurOrigin(req, s)) return send(reply, 403, page(lang, message(lang, "foreign")));
    const token = form.get("consent_token") ?? "";
    const version = form.get("version") ?? "";
    try {
      await s.terms.acceptWithConsentToken(token, version);
      return send(reply, 200, page(lang, message(lang, "done")));
    } catch (err) {
      if (!(err instanceof MatrixError)) throw err;
      if (err.errcode === "M_INVALID_PARAM") {
        // A newer version was published while the page was open: show that one, same token.
        const current = await s.terms.fresh();
        if (current) return send(reply, 409, termsPage(s, lang, current, token, "newer"));
      }
      if (err.errcode === "M_NOT_FOUND") return send(reply, 404, page(lang, message(lang, "none")));
      const session = await s.terms.consentSession(token);
      return send(reply, 403, page(lang, message(lang, session ? "blocked" : "invalid")));
    }
  }),
];

export const termsRoutes = [...jsonRoutes, ...pageRoutes];
