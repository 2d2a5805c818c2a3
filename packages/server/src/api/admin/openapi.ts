import type { TSchema } from "@sinclair/typebox";
import { ADMIN_PREFIX } from "@revier/protocol";
import { route, type RouteDef } from "../../http/route.js";
import { ROUTE_ACTIONS } from "../../governance/hooks.js";
import { ROUTE_DOCS } from "./admin-route.js";

const MATRIX_ERROR = {
  type: "object",
  required: ["errcode", "error"],
  properties: { errcode: { type: "string" }, error: { type: "string" } },
  additionalProperties: true,
};

/** TypeBox schemas are JSON Schema; a JSON round trip drops TypeBox's symbol-keyed metadata. */
function plain(schema: TSchema): Record<string, unknown> {
  return JSON.parse(JSON.stringify(schema)) as Record<string, unknown>;
}

function parameters(schema: TSchema | undefined, where: "path" | "query"): Record<string, unknown>[] {
  if (!schema) return [];
  const s = plain(schema) as { properties?: Record<string, Record<string, unknown>>; required?: string[] };
  return Object.entries(s.properties ?? {}).map(([name, prop]) => ({ name, in: where, required: where === "path" || (s.required ?? []).includes(name), schema: prop }));
}

/** Builds the OpenAPI 3.1 document from the admin routes' own schemas, so it cannot drift from them. */
export function buildOpenApi(routes: RouteDef[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const { spec } of routes) {
    const doc = ROUTE_DOCS.get(spec);
    if (!doc) continue;
    const path = spec.url.replace(/:([A-Za-z]+)/g, "{$1}");
    const op: Record<string, unknown> = {
      summary: doc.summary,
      "x-revier-permission": ROUTE_ACTIONS.get(spec),
      security: [{ bearer: [] }],
      parameters: [...parameters(spec.params, "path"), ...parameters(spec.query, "query")],
      responses: {
        "200": { description: "OK", content: { [doc.produces ?? "application/json"]: { schema: plain(doc.response) } } },
        default: { description: "Matrix error", content: { "application/json": { schema: MATRIX_ERROR } } },
      },
    };
    const body = doc.request ?? spec.body;
    if (body) op.requestBody = { required: true, content: { "application/json": { schema: plain(body) } } };
    else if (doc.consumes) op.requestBody = { required: true, content: { [doc.consumes]: { schema: { type: "string" } } } };
    (paths[path] ??= {})[spec.method.toLowerCase()] = op;
  }
  return {
    openapi: "3.1.0",
    info: { title: "Revier admin API", version: "1" },
    components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
    paths,
  };
}

export function openApiRoute(routes: RouteDef[]): RouteDef {
  let cached: Record<string, unknown> | undefined;
  return route({ method: "GET", url: `${ADMIN_PREFIX}/openapi.json`, auth: "none" }, async () => (cached ??= buildOpenApi(routes)));
}
