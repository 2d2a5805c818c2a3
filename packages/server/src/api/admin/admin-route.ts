import type { Static, TSchema } from "@sinclair/typebox";
import { ADMIN_PREFIX } from "@revier/protocol";
import { route, type AuthedUser, type RouteContext, type RouteDef, type RouteSpec } from "../../http/route.js";
import type { Services } from "../../services.js";
import { actorOf, ROUTE_ACTIONS } from "../../governance/hooks.js";
import type { Actor } from "../../governance/policy.js";
import { requirePermission, type AdminAction } from "../../governance/roles.js";

/** What the OpenAPI document says about a route beyond its request schemas. */
export interface AdminRouteDoc {
  summary: string;
  response: TSchema;
  /** The documented request body, when the route validates it itself for better messages. */
  request?: TSchema;
  /** Content type of a non-JSON response (JSONL export). */
  produces?: string;
  /** Content type of a non-JSON request body (CSV import). */
  consumes?: string;
}

export const ROUTE_DOCS = new WeakMap<object, AdminRouteDoc>();

type In<T extends TSchema | undefined, D> = T extends TSchema ? Static<T> : D;

/**
 * An admin API route: the path is relative to `/_revier/admin/v1`, a bearer token is required and
 * the caller's role must permit `action` in the permission table. The auth hook checks the role
 * before the body is validated; the handler receives the checked actor for the audit entry.
 */
export function adminRoute<B extends TSchema | undefined = undefined, Q extends TSchema | undefined = undefined, P extends TSchema | undefined = undefined>(
  spec: Omit<RouteSpec<B, Q, P>, "auth"> & { action: AdminAction },
  doc: AdminRouteDoc,
  handler: (ctx: RouteContext<In<B, undefined>, In<Q, Record<string, never>>, In<P, Record<string, never>>, AuthedUser> & { actor: Actor }, s: Services) => Promise<unknown>,
): RouteDef {
  const { action, ...rest } = spec;
  const def = route<B, Q, P, "required">({ ...rest, url: `${ADMIN_PREFIX}${spec.url}`, auth: "required" } as RouteSpec<B, Q, P> & { auth: "required" }, async (ctx, s) => {
    let actor = actorOf(ctx.req);
    if (!actor) {
      // Only reached if the governance auth hook was not installed; never skip the check.
      const role = (await s.accounts.get(ctx.user.userId))?.role ?? "user";
      requirePermission(role, action);
      actor = { actor: ctx.user.userId, actorRole: role };
    }
    return handler({ ...(ctx as unknown as RouteContext<In<B, undefined>, In<Q, Record<string, never>>, In<P, Record<string, never>>, AuthedUser>), actor }, s);
  });
  ROUTE_ACTIONS.set(def.spec, action);
  ROUTE_DOCS.set(def.spec, doc);
  return def;
}
