import type { FastifyReply, FastifyRequest } from "fastify";
import type { Static, TSchema } from "@sinclair/typebox";
import type { Services } from "../services.js";

export type HttpMethod = "GET" | "POST" | "PUT" | "DELETE";

export interface AuthedUser {
  userId: string;
  deviceId: string;
  tokenHash: string;
}

export interface RouteSpec<B extends TSchema | undefined, Q extends TSchema | undefined, P extends TSchema | undefined> {
  method: HttpMethod;
  url: string;
  /** "required" (default): bearer token needed. "optional": used when present. "none": never read. */
  auth?: "required" | "optional" | "none";
  body?: B;
  query?: Q;
  params?: P;
  /**
   * Name of a rate limiter in services.rateLimits, applied per user (or per IP before login).
   * Unset, an authenticated POST, PUT or DELETE takes from "writes", so no endpoint that makes the
   * server write is unlimited; "none" exempts a route (reads sent as POST, logging out).
   */
  rateLimit?: "login" | "register" | "send" | "writes" | "none";
  /** Endpoints a user who has not accepted the current terms may still call. */
  allowWithoutConsent?: boolean;
  /**
   * The body is handed to the handler unread, as a stream in `req.body` (uploads), instead of being
   * parsed as JSON; the handler enforces its own size limit while reading.
   */
  rawBody?: boolean;
}

type In<T extends TSchema | undefined, D> = T extends TSchema ? Static<T> : D;

export interface RouteContext<B, Q, P, U> {
  user: U;
  body: B;
  query: Q;
  params: P;
  req: FastifyRequest;
  reply: FastifyReply;
}

/**
 * What a handler returns when it has arranged to send the reply itself, later (a long-poll parked
 * until there is news: see SyncService.answer). Not `reply`: a reply is a thenable, so an async
 * handler returning it would stay pending, with listeners on the response, until the answer.
 */
export const ANSWERED_LATER = Symbol("answered later");

/**
 * Sends a handler's outcome from outside Fastify's own handling of handler results: the JSON body,
 * or the error through the error handler (a thrown non-Error becomes one).
 */
export function sendOutcome(reply: FastifyReply, err: unknown, body?: unknown): void {
  if (reply.sent) return;
  if (body !== undefined) reply.type("application/json").send(body);
  else reply.send(err instanceof Error ? err : new Error(String(err)));
}

/** The rate limiter a route takes from: its own, or "writes" for an authenticated POST, PUT or DELETE. */
export function rateLimitOf(spec: Pick<RouteSpec<undefined, undefined, undefined>, "method" | "auth" | "rateLimit">): NonNullable<RouteSpec<undefined, undefined, undefined>["rateLimit"]> {
  return spec.rateLimit ?? ((spec.auth ?? "required") !== "none" && spec.method !== "GET" ? "writes" : "none");
}

export interface RouteDef {
  spec: RouteSpec<TSchema | undefined, TSchema | undefined, TSchema | undefined>;
  handler: (ctx: RouteContext<unknown, unknown, unknown, AuthedUser | null>, s: Services) => Promise<unknown>;
}

/**
 * One typed request in, one response out; authentication and validation are settled before the
 * handler runs. The handler returns the JSON body (status 200) or sets reply itself.
 */
export function route<
  B extends TSchema | undefined = undefined,
  Q extends TSchema | undefined = undefined,
  P extends TSchema | undefined = undefined,
  A extends "required" | "optional" | "none" = "required",
>(
  spec: RouteSpec<B, Q, P> & { auth?: A },
  handler: (
    ctx: RouteContext<In<B, undefined>, In<Q, Record<string, never>>, In<P, Record<string, never>>, A extends "required" ? AuthedUser : AuthedUser | null>,
    s: Services,
  ) => Promise<unknown>,
): RouteDef {
  return { spec: spec as RouteDef["spec"], handler: handler as RouteDef["handler"] };
}
