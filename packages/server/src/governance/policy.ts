import { Value, ValueErrorType } from "@sinclair/typebox/value";
import { MatrixError, Policy } from "@revier/protocol";
import type { Db } from "../storage/database.js";
import type { AuditLog } from "./audit.js";

export type { Policy } from "@revier/protocol";

const ROW = "org";

// Another process (the CLI, a second server) may change the policy; a short lifetime bounds how
// long this one enforces a stale copy without a database read on every request.
const CACHE_MS = 5_000;

export function defaultPolicy(): Policy {
  return Value.Default(Policy, {}) as Policy;
}

/** Fills defaults for missing fields and validates the whole object; unknown keys are refused. */
export function validatePolicy(input: unknown): Policy {
  if (typeof input !== "object" || input === null || Array.isArray(input)) throw new MatrixError("M_BAD_JSON", "The policy must be a JSON object");
  const candidate = Value.Default(Policy, structuredClone(input)) as unknown;
  const first = Value.Errors(Policy, candidate).First();
  if (first) {
    const where = first.path.replace(/^\//, "").replace(/\//g, ".") || "(root)";
    const unknown = first.type === ValueErrorType.ObjectAdditionalProperties;
    throw new MatrixError("M_BAD_JSON", unknown ? `Unknown policy key '${where}'` : `Invalid policy field '${where}': ${first.message}`);
  }
  return candidate as Policy;
}

export interface Actor {
  actor: string;
  actorRole: string;
}

/** The organisation policy: one validated object in the database, cached, every change audited. */
export class PolicyStore {
  /** `json`: the stored text it came from (null: no row, the defaults). */
  private cached: { policy: Policy; json: string | null; at: number } | null = null;

  constructor(
    private readonly db: Db,
    private readonly audit: AuditLog,
    private readonly now: () => number = Date.now,
  ) {}

  async get(): Promise<Policy> {
    if (this.cached && this.now() - this.cached.at < CACHE_MS) return this.cached.policy;
    const row = await this.db.selectFrom("governance_policy").select("json").where("name", "=", ROW).executeTakeFirst();
    const json = row?.json ?? null;
    // Unchanged, as nearly always: filling in the defaults walks the whole schema, and a profile
    // of the sync bench caught one refresh holding the event loop for 13 ms.
    if (this.cached && this.cached.json === json) {
      this.cached.at = this.now();
      return this.cached.policy;
    }
    // A stored policy written by an older version may lack newer fields: defaults fill them.
    const policy = json !== null ? (Value.Default(Policy, JSON.parse(json) as unknown) as Policy) : defaultPolicy();
    this.cached = { policy, json, at: this.now() };
    return policy;
  }

  /** Replaces the whole policy; the audit entry carries old and new value of every changed key. */
  async set(input: unknown, by: Actor): Promise<Policy> {
    const next = validatePolicy(input);
    const json = JSON.stringify(next);
    await this.audit.transact(async (tx, record) => {
      const row = await tx.selectFrom("governance_policy").select("json").where("name", "=", ROW).executeTakeFirst();
      const prev = row ? (Value.Default(Policy, JSON.parse(row.json) as unknown) as Policy) : defaultPolicy();
      await tx
        .insertInto("governance_policy")
        .values({ name: ROW, json, updated_ts: Date.now() })
        .onConflict((oc) => oc.column("name").doUpdateSet({ json, updated_ts: Date.now() }))
        .execute();
      const before: Record<string, unknown> = {};
      const after: Record<string, unknown> = {};
      for (const key of Object.keys(next) as (keyof Policy)[]) {
        if (JSON.stringify(prev[key]) !== JSON.stringify(next[key])) {
          before[key] = prev[key];
          after[key] = next[key];
        }
      }
      await record({ ...by, action: "policy.update", target: "policy", details: { old: before, new: after } });
    });
    // The text that was stored: the next refresh finds it unchanged and keeps this object.
    this.cached = { policy: next, json, at: this.now() };
    return next;
  }

  /** Sets one key (the CLI's `policy set key=value`), validating the result as a whole. */
  async setKey(key: string, value: unknown, by: Actor): Promise<Policy> {
    const current = await this.fresh();
    return this.set({ ...current, [key]: value }, by);
  }

  async fresh(): Promise<Policy> {
    this.cached = null;
    return this.get();
  }
}
