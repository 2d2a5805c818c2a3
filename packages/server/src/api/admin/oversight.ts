import { AuditListResponse, AuditQuery, AuditVerifyResponse, Policy, PolicyBody, StatsResponse } from "@revier/protocol";
import { Type } from "@sinclair/typebox";
import { adminRoute } from "./admin-route.js";

export const adminOversightRoutes = [
  adminRoute({ method: "GET", url: "/policy", action: "policy.read" }, { summary: "The organisation policy", response: Policy }, async (_ctx, s) => s.policy.fresh()),

  adminRoute(
    // The store validates the whole object itself, so an unknown key is named in the error.
    { method: "PUT", url: "/policy", body: Type.Record(Type.String(), Type.Unknown()), action: "policy.write" },
    { summary: "Replace the whole policy (missing fields take their defaults; unknown keys are refused)", response: Policy, request: PolicyBody },
    async ({ body, actor }, s) => s.policy.set(body, actor),
  ),

  adminRoute({ method: "GET", url: "/audit", query: AuditQuery, action: "audit.read" }, { summary: "Audit log entries after sequence `from`", response: AuditListResponse }, async ({ query }, s) => {
    const limit = query.limit ?? 100;
    const entries = await s.audit.list({ from: query.from ?? 0, limit });
    return { entries, ...(entries.length === limit ? { next_from: entries[entries.length - 1]!.seq } : {}) };
  }),

  adminRoute({ method: "GET", url: "/audit/verify", action: "audit.read" }, { summary: "Recompute the hash chain; names the first broken entry", response: AuditVerifyResponse }, async (_ctx, s) => s.audit.verify()),

  adminRoute(
    { method: "GET", url: "/audit/export", action: "audit.read" },
    { summary: "The whole audit log as JSON Lines", response: Type.String(), produces: "application/x-ndjson" },
    async ({ reply, actor }, s) => {
      let body = "";
      for await (const line of s.audit.exportJsonl()) body += line;
      // The export is recorded after it was read, so the file ends with the entry before this one.
      await s.audit.record({ ...actor, action: "audit.export", target: null, details: { bytes: Buffer.byteLength(body) } });
      reply.type("application/x-ndjson").header("content-disposition", 'attachment; filename="revier-audit.jsonl"').send(body);
      return undefined;
    },
  ),

  adminRoute({ method: "GET", url: "/stats", action: "stats.read" }, { summary: "Counts of users, devices, public channels and messages per day; no per-room figures", response: StatsResponse }, async (_ctx, s) => s.governance.stats()),
];
