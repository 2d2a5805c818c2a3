import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import FindMyWay from "find-my-way";
import { Ajv, type ValidateFunction } from "ajv";
import { OptionalKind } from "@sinclair/typebox";
import { MatrixError } from "@revier/protocol";
import type { Services } from "../services.js";
import { parseJsonBody } from "../lib/json-body.js";
import { randomToken } from "../lib/random.js";
import { toMatrixError } from "./errors.js";
import { ANSWERED_LATER, rateLimitOf, sendOutcome, type AuthedUser, type RouteDef } from "./route.js";
import { ALL_ROUTES } from "../api/index.js";
import { applySecurityHeaders, clientErrorHandler, registerSecurityHeaders } from "./security-headers.js";
import { httpsOptions } from "./tls.js";

const CORS_HEADERS = {
  "access-control-allow-origin": "*",
  "access-control-allow-methods": "GET, POST, PUT, DELETE, OPTIONS",
  "access-control-allow-headers": "X-Requested-With, Content-Type, Authorization, X-Revier-Client",
};

// Built once: every request sets them, before anything can fail.
const REQUEST_HEADERS = { ...CORS_HEADERS, "x-content-type-options": "nosniff", "cache-control": "no-store" };

// Bodies are validated strictly (a string where a number belongs is a client bug); query and path
// parameters arrive as strings and are coerced to the declared types.
const bodyAjv = new Ajv({ coerceTypes: false, useDefaults: true, removeAdditional: false, allErrors: false, strict: false });
const paramAjv = new Ajv({ coerceTypes: "array", useDefaults: true, removeAdditional: false, allErrors: false, strict: false });

/** Replies whose send() has been called; see the route handler. */
const SENDING = new WeakSet<FastifyReply>();

/**
 * A body declared `Type.Optional(…)` may be left out (a first `DELETE /devices/{id}` without `auth`
 * must get its 401 with flows, not a 400); Fastify hands the validator `null` for a missing body.
 */
function optionalBody(schema: unknown, validate: ValidateFunction): ValidateFunction {
  if ((schema as Record<symbol, unknown>)[OptionalKind] !== "Optional") return validate;
  const wrapped = ((data: unknown) => {
    if (data === null || data === undefined) return true;
    const ok = validate(data);
    wrapped.errors = validate.errors;
    return ok;
  }) as ValidateFunction;
  return wrapped;
}

export async function buildApp(s: Services, routes: RouteDef[] = ALL_ROUTES): Promise<FastifyInstance> {
  const tls = httpsOptions(s.config.tls);
  // Request ids only tie log lines together: a random prefix per app and a counter keep them
  // unique across processes, without the randomBytes call per request that send profiles showed.
  const reqIdPrefix = `${randomToken(6)}-`;
  let reqCount = 0;
  // Native TLS when configured; Fastify's https variant has a different server type but the same API.
  const app = Fastify({
    ...(tls ? { https: tls } : {}),
    logger: false,
    bodyLimit: s.config.limits.maxBodyBytes,
    trustProxy: s.config.trustProxy,
    genReqId: () => reqIdPrefix + (++reqCount).toString(36),
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 1000 },
    return503OnClosing: true,
    clientErrorHandler,
    // Malformed URLs (e.g. overlong UTF-8 escapes) fail before routing; answer them as Matrix errors too.
    frameworkErrors: (_err, req, reply) => {
      const error = new MatrixError("M_UNRECOGNIZED", "Malformed request URL", { status: 400 });
      applySecurityHeaders(req as unknown as FastifyRequest, reply as unknown as FastifyReply);
      (reply as unknown as FastifyReply).code(400).headers(CORS_HEADERS).type("application/json").send(error.toJSON());
    },
  });
  // First onSend hook: it runs inside reply.send(), so it marks replies as started. The hooks of
  // every request are callback-style: an async hook costs Fastify a promise and a microtask per call.
  app.addHook("onSend", (_req, reply, payload, done) => {
    SENDING.add(reply);
    done(null, payload);
  });
  registerSecurityHeaders(app);
  const shadow = FindMyWay();
  app.addHook("onRoute", (r) => {
    for (const m of ([] as string[]).concat(r.method)) if (m !== "HEAD" && m !== "OPTIONS") shadow.on(m as "GET", r.url, () => undefined);
  });

  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === "body" ? optionalBody(schema, bodyAjv.compile(schema)) : paramAjv.compile(schema)));
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("application/json", { parseAs: "buffer" }, (_req, body, done) => {
    try {
      done(null, parseJsonBody(body as Buffer, s.config.limits.maxJsonDepth));
    } catch (err) {
      done(err as Error, undefined);
    }
  });
  // Some clients post JSON without a content type; try it as JSON rather than refusing.
  app.addContentTypeParser("*", { parseAs: "buffer" }, (_req, body, done) => {
    try {
      done(null, parseJsonBody(body as Buffer, s.config.limits.maxJsonDepth));
    } catch (err) {
      done(err as Error, undefined);
    }
  });

  app.addHook("onRequest", (req, reply, done) => {
    reply.headers(REQUEST_HEADERS);
    (req as FastifyRequest & { startedAt: bigint }).startedAt = process.hrtime.bigint();
    if (req.method === "OPTIONS") {
      // Answered here: the request goes no further (a callback hook that sends does not call done).
      reply.code(204).send();
      return;
    }
    if (/%00/.test(req.url)) return done(new MatrixError("M_INVALID_PARAM", "The URL may not contain U+0000"));
    const q = req.url.indexOf("?");
    // Names decoded, not pattern-matched: `access%5Ftoken=` is the same parameter.
    if (q >= 0 && hasQueryParam(req.url.slice(q + 1), "access_token")) {
      // Tokens in URLs end up in proxy logs and browser history (CWE-598); the spec deprecated them.
      return done(new MatrixError("M_MISSING_TOKEN", "Access tokens are not accepted in the URL; send them in the Authorization header", { status: 401 }));
    }
    done();
  });

  // server.close() closes only the keep-alive connections idle at that moment. One still finishing
  // a streamed response (a download the client has already read to the end) would otherwise hold
  // the shutdown until its keep-alive timeout; keep closing connections as they fall idle.
  app.addHook("preClose", async () => {
    const timer = setInterval(() => app.server.closeIdleConnections(), 50);
    timer.unref();
    app.server.once("close", () => clearInterval(timer));
  });

  app.addHook("onResponse", (req, reply, done) => {
    const started = (req as FastifyRequest & { startedAt?: bigint }).startedAt;
    const routeUrl = req.routeOptions.url ?? "unmatched";
    const seconds = started ? Number(process.hrtime.bigint() - started) / 1e9 : 0;
    s.metrics.observeRequest(req.method, routeUrl, reply.statusCode, seconds);
    s.log.info({ reqId: req.id, method: req.method, route: routeUrl, status: reply.statusCode, ms: Math.round(seconds * 1000) }, "request");
    done();
  });

  app.setErrorHandler(async (err, req, reply) => {
    const { error, unexpected } = toMatrixError(err);
    if (unexpected) s.log.error({ reqId: req.id, route: req.routeOptions.url, err: { message: (err as Error).message, stack: (err as Error).stack } }, "unexpected error");
    reply.code(error.status).headers(error.headers).type("application/json").send(error.toJSON());
  });

  app.setNotFoundHandler(async (req, reply) => {
    const path = req.url.split("?")[0] ?? "/";
    const other = ["GET", "POST", "PUT", "DELETE"].some((m) => m !== req.method && shadow.find(m as "GET", path) !== null);
    const error = other
      ? new MatrixError("M_UNRECOGNIZED", "Method not allowed on this endpoint", { status: 405 })
      : new MatrixError("M_UNRECOGNIZED", "Unrecognized request");
    reply.code(error.status).type("application/json").send(error.toJSON());
  });

  for (const def of routes) if (!def.spec.rawBody) registerRoute(app, s, def);
  // Uploads stream to disk and may be far larger than any JSON body, so their routes live in a
  // context whose only parser hands the body over unread; the handler enforces the media limit.
  await app.register(async (uploads) => {
    uploads.removeAllContentTypeParsers();
    uploads.addContentTypeParser("*", (_req, payload, done) => done(null, payload));
    // A refused upload (401, 413, quota) must not make the server read the rest of the body first.
    uploads.addHook("onSend", async (req, reply) => {
      if (!req.raw.complete) reply.header("connection", "close");
    });
    for (const def of routes) if (def.spec.rawBody) registerRoute(uploads, s, def, { bodyLimit: s.config.media.maxUploadBytes });
  });
  return app;
}

function registerRoute(app: FastifyInstance, s: Services, def: RouteDef, opts: { bodyLimit?: number } = {}): void {
  const { spec } = def;
  const auth = spec.auth ?? "required";
  const limit = rateLimitOf(spec);
  app.route({
    method: spec.method,
    url: spec.url,
    ...opts,
    schema: {
      ...(spec.body ? { body: spec.body } : {}),
      ...(spec.query ? { querystring: spec.query } : {}),
      ...(spec.params ? { params: spec.params } : {}),
    },
    // Authentication runs before body validation: an anonymous caller learns nothing about shapes.
    preValidation: async (req) => {
      let user: AuthedUser | null = null;
      if (auth !== "none") {
        const header = req.headers.authorization;
        if (header === undefined) {
          if (auth === "required") throw new MatrixError("M_MISSING_TOKEN", "Missing access token");
        } else {
          const m = /^Bearer\s+(\S+)$/i.exec(header);
          if (!m) throw new MatrixError("M_UNKNOWN_TOKEN", "Malformed Authorization header", { extra: { soft_logout: false } });
          const session = await s.tokens.authenticate(m[1]!);
          user = session;
          for (const hook of s.authHooks) await hook(session, { req, route: spec });
        }
      }
      (req as FastifyRequest & { revierUser?: AuthedUser | null }).revierUser = user;
      if (limit !== "none") {
        const limiter = s.rateLimits[limit];
        const wait = limiter.take(user?.userId ?? `ip:${req.ip}`);
        if (wait > 0) {
          throw new MatrixError("M_LIMIT_EXCEEDED", "Too many requests, slow down", {
            extra: { retry_after_ms: wait },
            headers: { "retry-after": String(Math.ceil(wait / 1000)) },
          });
        }
      }
    },
    // Callback style, not an async function: its promise would stay pending until the answer, and
    // with it whatever its frame holds, for as long as a parked long-poll waits (see ANSWERED_LATER).
    handler: (req, reply) => {
      const user = (req as FastifyRequest & { revierUser?: AuthedUser | null }).revierUser ?? null;
      let result: Promise<unknown>;
      try {
        result = def.handler({ user, body: req.body, query: req.query, params: req.params, req, reply }, s);
      } catch (err) {
        result = Promise.reject(err);
      }
      result.then(
        (body) => {
          // A handler that answered itself (downloads, pages, metrics) has started the reply. With
          // async onSend hooks it may not have ended yet, so `reply.sent` alone would miss it and a
          // second, JSON send would relabel the first answer.
          if (body === ANSWERED_LATER || body === reply || reply.sent || reply.raw.headersSent || SENDING.has(reply)) return;
          sendOutcome(reply, null, body ?? {});
        },
        // As Fastify does for a rejected handler: its error handler answers (or, once the headers
        // are out, ends the response).
        (err: unknown) => sendOutcome(reply, err),
      );
    },
  });
}

/**
 * Whether a query string has a parameter of this name, decoded as URLSearchParams decodes it.
 * Only the names are decoded: every long-poll carries its filter, URL-encoded, as a value, and
 * decoding that on every request to look for one name was measurable.
 */
export function hasQueryParam(query: string, name: string): boolean {
  for (const part of query.split("&")) {
    const eq = part.indexOf("=");
    const raw = eq >= 0 ? part.slice(0, eq) : part;
    if (raw === name) return true;
    if (!raw.includes("%") && !raw.includes("+")) continue;
    if (new URLSearchParams(`${raw}=`).has(name)) return true;
  }
  return false;
}
