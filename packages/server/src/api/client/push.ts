import { Type } from "@sinclair/typebox";
import { MatrixError } from "@revier/protocol";
import { route } from "../../http/route.js";
import { deleteRule, getRule, putRule, setActions, setEnabled } from "../../push/ruleset.js";
import { validateWebPushPusher, WEBPUSH_KIND } from "../../push/web-push.js";

const RuleParams = Type.Object({ scope: Type.String({ maxLength: 64 }), kind: Type.String({ maxLength: 64 }), ruleId: Type.String({ minLength: 1, maxLength: 255 }) });

function checkScope(scope: string): void {
  if (scope !== "global") throw new MatrixError("M_INVALID_PARAM", "Only the global scope exists");
}

export const pushRoutes = [
  route({ method: "GET", url: "/_matrix/client/v3/pushrules/" }, async ({ user }, s) => ({ global: await s.push.ruleset(user.userId) })),
  route({ method: "GET", url: "/_matrix/client/v3/pushrules/global/" }, async ({ user }, s) => s.push.ruleset(user.userId)),

  route({ method: "GET", url: "/_matrix/client/v3/pushrules/:scope/:kind/:ruleId", params: RuleParams }, async ({ user, params }, s) => {
    checkScope(params.scope);
    return getRule(await s.push.ruleset(user.userId), params.kind, params.ruleId);
  }),

  route(
    { method: "PUT", url: "/_matrix/client/v3/pushrules/:scope/:kind/:ruleId", params: RuleParams, query: Type.Object({ before: Type.Optional(Type.String({ maxLength: 255 })), after: Type.Optional(Type.String({ maxLength: 255 })) }), body: Type.Unknown() },
    async ({ user, params, query, body }, s) => {
      checkScope(params.scope);
      await s.push.update(user.userId, (stored) => putRule(stored, params.kind, params.ruleId, body, { before: query.before, after: query.after }));
      return {};
    },
  ),

  route({ method: "DELETE", url: "/_matrix/client/v3/pushrules/:scope/:kind/:ruleId", params: RuleParams }, async ({ user, params }, s) => {
    checkScope(params.scope);
    await s.push.update(user.userId, (stored) => deleteRule(stored, params.kind, params.ruleId));
    return {};
  }),

  route({ method: "GET", url: "/_matrix/client/v3/pushrules/:scope/:kind/:ruleId/enabled", params: RuleParams }, async ({ user, params }, s) => {
    checkScope(params.scope);
    return { enabled: getRule(await s.push.ruleset(user.userId), params.kind, params.ruleId).enabled };
  }),

  route({ method: "PUT", url: "/_matrix/client/v3/pushrules/:scope/:kind/:ruleId/enabled", params: RuleParams, body: Type.Object({ enabled: Type.Boolean() }) }, async ({ user, params, body }, s) => {
    checkScope(params.scope);
    await s.push.update(user.userId, (stored) => setEnabled(stored, params.kind, params.ruleId, body.enabled));
    return {};
  }),

  route({ method: "GET", url: "/_matrix/client/v3/pushrules/:scope/:kind/:ruleId/actions", params: RuleParams }, async ({ user, params }, s) => {
    checkScope(params.scope);
    return { actions: getRule(await s.push.ruleset(user.userId), params.kind, params.ruleId).actions };
  }),

  route({ method: "PUT", url: "/_matrix/client/v3/pushrules/:scope/:kind/:ruleId/actions", params: RuleParams, body: Type.Object({ actions: Type.Array(Type.Unknown(), { maxItems: 32 }) }) }, async ({ user, params, body }, s) => {
    checkScope(params.scope);
    await s.push.update(user.userId, (stored) => setActions(stored, params.kind, params.ruleId, body.actions));
    return {};
  }),

  route({ method: "GET", url: "/_matrix/client/v3/pushers" }, async ({ user }, s) => ({ pushers: await s.push.pushers(user.userId) })),

  route(
    {
      method: "POST",
      url: "/_matrix/client/v3/pushers/set",
      body: Type.Object(
        {
          pushkey: Type.String({ minLength: 1, maxLength: 512 }),
          kind: Type.Union([Type.Literal("http"), Type.Literal("email"), Type.Literal(WEBPUSH_KIND), Type.Null()]),
          app_id: Type.String({ minLength: 1, maxLength: 64 }),
          app_display_name: Type.Optional(Type.String({ maxLength: 255 })),
          device_display_name: Type.Optional(Type.String({ maxLength: 255 })),
          profile_tag: Type.Optional(Type.String({ maxLength: 255 })),
          lang: Type.Optional(Type.String({ maxLength: 64 })),
          data: Type.Optional(Type.Object({ url: Type.Optional(Type.String({ maxLength: 2048 })), format: Type.Optional(Type.String({ maxLength: 64 })) }, { additionalProperties: true })),
          append: Type.Optional(Type.Boolean()),
        },
        { additionalProperties: true },
      ),
    },
    async ({ user, body }, s) => {
      if (body.kind === "email") throw new MatrixError("M_INVALID_PARAM", "Email pushers are not supported");
      if (body.kind === "http") {
        const url = body.data?.url;
        if (typeof url !== "string") throw new MatrixError("M_MISSING_PARAM", "data.url is required for http pushers");
        let parsed: URL;
        try {
          parsed = new URL(url);
        } catch {
          throw new MatrixError("M_INVALID_PARAM", "data.url is not a URL");
        }
        if ((parsed.protocol !== "https:" && parsed.protocol !== "http:") || !parsed.pathname.endsWith("/_matrix/push/v1/notify")) {
          throw new MatrixError("M_INVALID_PARAM", "data.url must be an http(s) URL ending in /_matrix/push/v1/notify");
        }
        for (const f of ["app_display_name", "device_display_name", "lang"] as const) if (body[f] === undefined) throw new MatrixError("M_MISSING_PARAM", `${f} is required`);
      }
      if (body.kind === WEBPUSH_KIND) {
        if (!s.webPush) throw new MatrixError("M_INVALID_PARAM", "Web Push is not available on this server");
        validateWebPushPusher(body.pushkey, body.data);
        for (const f of ["app_display_name", "device_display_name", "lang"] as const) if (body[f] === undefined) throw new MatrixError("M_MISSING_PARAM", `${f} is required`);
      }
      if (body.kind !== null && typeof body.data?.url === "string") await s.pushDestinations.check(body.data.url);
      await s.push.setPusher(user.userId, user.deviceId, { ...body, kind: body.kind }, body.append === true);
      return {};
    },
  ),

  /** Revier's web app subscribes its service worker with this key (Web Push pushers, kind org.revier.webpush). */
  route({ method: "GET", url: "/_revier/client/v1/push/vapid" }, async (_ctx, s) => {
    if (!s.webPush) throw new MatrixError("M_NOT_FOUND", "Web Push is not available on this server");
    return { public_key: s.webPush.keys.publicKey, pusher_kind: WEBPUSH_KIND };
  }),
];
