import { STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";

/**
 * Security headers on every response (issue 7, "Hardening"). They are set when the request
 * arrives, so they are on the reply whatever happens next — a handler's answer, a Matrix error, a
 * 404, a refused body — and adjusted to the content type just before sending.
 */

/** JSON and everything else that is not a document: nothing may load, nothing may frame it. */
export const API_CSP = "default-src 'none'; frame-ancestors 'none'";

/**
 * Pages (and the scripts and workers they load) served by Revier itself: only same-origin
 * resources, no inline script, no plugins, no framing, no form posts elsewhere, no `<base>`
 * tricks. `'wasm-unsafe-eval'` lets the Rust crypto of matrix-js-sdk (WebAssembly) run without
 * allowing `eval` of JavaScript.
 */
export const HTML_CSP = [
  "default-src 'none'",
  "script-src 'self' 'wasm-unsafe-eval'",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "media-src 'self' blob:",
  "font-src 'self'",
  "connect-src 'self'",
  "worker-src 'self'",
  "manifest-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

/** Two years, subdomains included: the value HSTS preload lists ask for. */
export const HSTS = "max-age=63072000; includeSubDomains";

const STATIC_HEADERS = {
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "content-security-policy": API_CSP,
} as const;

/**
 * Whether the request reached us over TLS: natively, or — only when the operator said the proxy is
 * trusted (`trust_proxy`) — through a proxy that says so in `X-Forwarded-Proto`. Fastify's
 * `req.protocol` applies exactly that rule.
 */
export function cameOverTls(req: FastifyRequest): boolean {
  return req.protocol === "https";
}

/** Puts the headers on a reply; also used where a reply is built outside the hooks (URL errors). */
export function applySecurityHeaders(req: FastifyRequest, reply: FastifyReply): void {
  reply.headers(STATIC_HEADERS);
  // HSTS over plain HTTP means nothing to a browser and would only mislead; send it over TLS only.
  if (cameOverTls(req)) reply.header("strict-transport-security", HSTS);
}

function isDocumentOrScript(contentType: string): boolean {
  // Nearly every answer is JSON: said so without splitting and lower-casing its type.
  if (contentType.startsWith("application/json")) return false;
  const essence = (contentType.split(";")[0] ?? "").trim().toLowerCase();
  return essence === "text/html" || essence === "application/xhtml+xml" || essence === "text/javascript" || essence === "application/javascript" || essence === "application/manifest+json";
}

/** Registers the hooks on the root instance; encapsulated contexts (uploads) inherit them. */
export function registerSecurityHeaders(app: FastifyInstance): void {
  // Callback-style hooks: they run on every request, and an async hook costs Fastify a promise and
  // a microtask per call for nothing here.
  app.addHook("onRequest", (req, reply, done) => {
    applySecurityHeaders(req, reply);
    done();
  });
  app.addHook("onSend", (req, reply, payload, done) => {
    if (reply.getHeader("x-frame-options") === undefined) applySecurityHeaders(req, reply);
    // A handler that chose its own policy (media: a sandbox) keeps it; only the default is swapped.
    const csp = reply.getHeader("content-security-policy");
    const type = reply.getHeader("content-type");
    if ((csp === undefined || csp === API_CSP) && typeof type === "string" && isDocumentOrScript(type)) reply.header("content-security-policy", HTML_CSP);
    done(null, payload);
  });
}

/**
 * Requests Node's HTTP parser refuses before Fastify sees them (headers over 16 KiB, malformed
 * request lines, a slow client's timeout) are answered here: a Matrix error with the same headers.
 */
export function clientErrorHandler(err: Error & { code?: string }, socket: Socket): void {
  if (err.code === "ECONNRESET" || socket.destroyed) return;
  const [status, errcode, message] =
    err.code === "ERR_HTTP_REQUEST_TIMEOUT" ? [408, "M_UNKNOWN", "Request timed out"] : err.code === "HPE_HEADER_OVERFLOW" ? [431, "M_TOO_LARGE", "Request headers are too large"] : [400, "M_UNRECOGNIZED", "Malformed HTTP request"];
  const body = JSON.stringify({ errcode, error: message });
  const headers: Record<string, string | number> = { "content-type": "application/json", "content-length": Buffer.byteLength(body), connection: "close", ...STATIC_HEADERS };
  if ((socket as Socket & { encrypted?: boolean }).encrypted) headers["strict-transport-security"] = HSTS;
  if (socket.writable) socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}`).join("\r\n")}\r\n\r\n${body}`);
  socket.destroy(err);
}
