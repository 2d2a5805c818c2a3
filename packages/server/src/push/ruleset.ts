/**
 * A user's push rules as stored (only what differs from the server defaults) and the operations
 * behind the `/pushrules` endpoints. Everything here is pure: each operation takes the stored
 * object and returns a new one, leaving persistence and the `m.push_rules` account-data update
 * to the caller.
 */

import { MatrixError } from "@revier/protocol";
import { DEFAULT_RULE_IDS, defaultRules, isRuleKind, MASTER_RULE_ID, type PushAction, type PushCondition, type PushRule, type RuleKind, type Ruleset, type TweakAction } from "./default-rules.js";
import { MAX_GLOB_PATTERN_LENGTH } from "./glob.js";
import { isValidMemberCountIs } from "./evaluate.js";

export type PushRuleErrorCode = "M_INVALID_PARAM" | "M_NOT_FOUND" | "M_UNKNOWN" | "M_BAD_JSON";

/** A rejected push rule request; a MatrixError, so routes may let it propagate as the response. */
export class PushRuleError extends MatrixError {
  constructor(errcode: PushRuleErrorCode, message: string) {
    super(errcode, message);
    this.name = "PushRuleError";
  }
}

/** A user-defined rule as stored; `default` is implied false. */
export interface StoredPushRule {
  rule_id: string;
  enabled: boolean;
  actions: PushAction[];
  /** override and underride rules. */
  conditions?: PushCondition[];
  /** content rules. */
  pattern?: string;
}

/** What a user changed on a server-default rule; absent fields keep the default. */
export interface DefaultRuleChange {
  enabled?: boolean;
  actions?: PushAction[];
}

/**
 * A user's push rule customisations, JSON-serialisable. Defaults are not stored, so a server
 * upgrade that changes the predefined rules reaches every user, keeping only their explicit
 * enable/disable and action choices.
 */
export interface UserPushRules {
  /** User-defined rules per kind, most important first. */
  custom: Record<RuleKind, StoredPushRule[]>;
  /** Changes to server-default rules, per kind and rule id. */
  defaults: Record<RuleKind, Record<string, DefaultRuleChange>>;
}

/** Bounds what one user can make every incoming event be checked against. */
export const MAX_CUSTOM_RULES_PER_KIND = 1000;
export const MAX_RULE_JSON_BYTES = 8192;
export const MAX_RULE_ID_LENGTH = 255;
export const MAX_CONDITIONS = 32;
export const MAX_ACTIONS = 32;

export function emptyPushRules(): UserPushRules {
  return {
    custom: { override: [], content: [], room: [], sender: [], underride: [] },
    defaults: { override: {}, content: {}, room: {}, sender: {}, underride: {} },
  };
}

/**
 * The full ruleset for `GET /pushrules/` (answered as `{ global: ruleset }`) and for evaluation.
 * User-defined rules outrank server defaults of the same kind, except `.m.rule.master`, which
 * the spec places above everything.
 */
export function buildRuleset(userId: string, localpart: string, stored: UserPushRules | undefined): Ruleset {
  const s = stored ?? emptyPushRules();
  const d = defaultRules(userId, localpart);
  const withChanges = (kind: RuleKind, rules: PushRule[]): PushRule[] =>
    rules.map((r) => {
      const change = ownValue(s.defaults[kind], r.rule_id);
      if (!change) return r;
      return { ...r, ...(change.enabled !== undefined ? { enabled: change.enabled } : {}), ...(change.actions ? { actions: clone(change.actions) } : {}) };
    });
  const custom = (kind: RuleKind): PushRule[] => (s.custom[kind] ?? []).map((r) => toPushRule(kind, r));
  const overrides = withChanges("override", d.override);
  const master = overrides.filter((r) => r.rule_id === MASTER_RULE_ID);
  return {
    override: [...master, ...custom("override"), ...overrides.filter((r) => r.rule_id !== MASTER_RULE_ID)],
    content: [...custom("content"), ...withChanges("content", d.content)],
    room: custom("room"),
    sender: custom("sender"),
    underride: [...custom("underride"), ...withChanges("underride", d.underride)],
  };
}

/** `GET /pushrules/global/{kind}/{ruleId}` (and its `/enabled`, `/actions`) from a built ruleset. */
export function getRule(ruleset: Ruleset, kind: string, ruleId: string): PushRule {
  const k = checkKind(kind);
  const r = ruleset[k].find((x) => x.rule_id === ruleId);
  if (!r) throw notFound();
  return clone(r);
}

export interface RulePosition {
  before?: string | undefined;
  after?: string | undefined;
}

/**
 * `PUT /pushrules/global/{kind}/{ruleId}`: creates or replaces a user-defined rule. A new rule
 * without `before`/`after` becomes the most important of its kind; a replaced one keeps its place
 * and its enabled state. `before` wins when both are given, as the spec says.
 */
export function putRule(stored: UserPushRules | undefined, kind: string, ruleId: string, body: unknown, position: RulePosition = {}): UserPushRules {
  const k = checkKind(kind);
  checkNewRuleId(k, ruleId);
  if (!isObject(body)) throw new PushRuleError("M_BAD_JSON", "The push rule must be a JSON object");
  if (body.actions === undefined) throw new PushRuleError("M_BAD_JSON", "actions is required");
  const actions = validateActions(body.actions);
  const rule: StoredPushRule = { rule_id: ruleId, enabled: true, actions };
  if (k === "override" || k === "underride") {
    rule.conditions = body.conditions === undefined ? [] : validateConditions(body.conditions);
  } else if (k === "content") {
    if (typeof body.pattern !== "string") throw new PushRuleError("M_BAD_JSON", "pattern is required for content rules and must be a string");
    if (body.pattern.length > MAX_GLOB_PATTERN_LENGTH) throw new PushRuleError("M_INVALID_PARAM", `pattern is longer than ${MAX_GLOB_PATTERN_LENGTH} characters`);
    rule.pattern = body.pattern;
  }
  if (Buffer.byteLength(JSON.stringify(rule)) > MAX_RULE_JSON_BYTES) throw new PushRuleError("M_INVALID_PARAM", `The push rule is larger than ${MAX_RULE_JSON_BYTES} bytes`);

  const s = stored ?? emptyPushRules();
  const list = [...(s.custom[k] ?? [])];
  const existingIndex = list.findIndex((r) => r.rule_id === ruleId);
  if (existingIndex >= 0) {
    rule.enabled = list[existingIndex]!.enabled;
    list.splice(existingIndex, 1);
  } else if (list.length >= MAX_CUSTOM_RULES_PER_KIND) {
    throw new PushRuleError("M_INVALID_PARAM", `Too many ${k} push rules (at most ${MAX_CUSTOM_RULES_PER_KIND})`);
  }

  let at: number;
  const anchor = position.before ?? position.after;
  if (anchor !== undefined) {
    // Only user-defined rules can be anchors; the spec forbids placing relative to a server default.
    const i = list.findIndex((r) => r.rule_id === anchor);
    if (i < 0) throw new PushRuleError("M_UNKNOWN", `before/after rule not found: ${anchor}`);
    at = position.before !== undefined ? i : i + 1;
  } else {
    at = existingIndex >= 0 ? existingIndex : 0;
  }
  list.splice(at, 0, rule);
  return { ...s, custom: { ...s.custom, [k]: list } };
}

/** `DELETE /pushrules/global/{kind}/{ruleId}`. Server-default rules can only be disabled. */
export function deleteRule(stored: UserPushRules | undefined, kind: string, ruleId: string): UserPushRules {
  const k = checkKind(kind);
  const s = stored ?? emptyPushRules();
  const list = s.custom[k] ?? [];
  if (!list.some((r) => r.rule_id === ruleId)) {
    if (DEFAULT_RULE_IDS[k].includes(ruleId)) throw new PushRuleError("M_INVALID_PARAM", "Server-default push rules cannot be deleted");
    throw notFound();
  }
  return { ...s, custom: { ...s.custom, [k]: list.filter((r) => r.rule_id !== ruleId) } };
}

/** `PUT /pushrules/global/{kind}/{ruleId}/enabled`. */
export function setEnabled(stored: UserPushRules | undefined, kind: string, ruleId: string, enabled: unknown): UserPushRules {
  const k = checkKind(kind);
  if (typeof enabled !== "boolean") throw new PushRuleError("M_BAD_JSON", "enabled must be a boolean");
  return changeRule(stored, k, ruleId, { enabled });
}

/** `PUT /pushrules/global/{kind}/{ruleId}/actions`; also allowed on server-default rules. */
export function setActions(stored: UserPushRules | undefined, kind: string, ruleId: string, actions: unknown): UserPushRules {
  const k = checkKind(kind);
  if (actions === undefined) throw new PushRuleError("M_BAD_JSON", "actions is required");
  return changeRule(stored, k, ruleId, { actions: validateActions(actions) });
}

function changeRule(stored: UserPushRules | undefined, k: RuleKind, ruleId: string, change: DefaultRuleChange): UserPushRules {
  const s = stored ?? emptyPushRules();
  const list = s.custom[k] ?? [];
  const i = list.findIndex((r) => r.rule_id === ruleId);
  if (i >= 0) {
    const next = [...list];
    next[i] = { ...list[i]!, ...change };
    return { ...s, custom: { ...s.custom, [k]: next } };
  }
  if (!DEFAULT_RULE_IDS[k].includes(ruleId)) throw notFound();
  const prev = ownValue(s.defaults[k], ruleId) ?? {};
  return { ...s, defaults: { ...s.defaults, [k]: { ...(s.defaults[k] ?? {}), [ruleId]: { ...prev, ...change } } } };
}

/** Validates an `actions` array from a client, returning a detached, normalised copy. */
export function validateActions(raw: unknown): PushAction[] {
  if (!Array.isArray(raw)) throw new PushRuleError("M_BAD_JSON", "actions must be an array");
  if (raw.length > MAX_ACTIONS) throw new PushRuleError("M_INVALID_PARAM", `actions has more than ${MAX_ACTIONS} entries`);
  return raw.map((a, i): PushAction => {
    if (typeof a === "string") {
      if (a === "notify" || a === "dont_notify" || a === "coalesce") return a;
      throw new PushRuleError("M_INVALID_PARAM", `actions[${i}]: unrecognised action "${a}"`);
    }
    if (!isObject(a)) throw new PushRuleError("M_BAD_JSON", `actions[${i}] must be a string or an object`);
    if (typeof a.set_tweak !== "string" || a.set_tweak === "") throw new PushRuleError("M_INVALID_PARAM", `actions[${i}]: only set_tweak actions may be objects`);
    if (a.set_tweak === "highlight" && a.value !== undefined && typeof a.value !== "boolean") throw new PushRuleError("M_INVALID_PARAM", `actions[${i}]: the highlight tweak takes a boolean`);
    if (a.set_tweak === "sound" && a.value !== undefined && typeof a.value !== "string") throw new PushRuleError("M_INVALID_PARAM", `actions[${i}]: the sound tweak takes a string`);
    const tweak: TweakAction = { set_tweak: a.set_tweak };
    if (a.value !== undefined) tweak.value = clone(a.value);
    return tweak;
  });
}

/**
 * Validates override/underride conditions. Known kinds must carry their parameters; unknown kinds
 * are kept as sent (the spec makes them never match rather than invalid).
 */
export function validateConditions(raw: unknown): PushCondition[] {
  if (!Array.isArray(raw)) throw new PushRuleError("M_BAD_JSON", "conditions must be an array");
  if (raw.length > MAX_CONDITIONS) throw new PushRuleError("M_INVALID_PARAM", `conditions has more than ${MAX_CONDITIONS} entries`);
  return raw.map((c, i): PushCondition => {
    const where = `conditions[${i}]`;
    if (!isObject(c)) throw new PushRuleError("M_BAD_JSON", `${where} must be an object`);
    if (typeof c.kind !== "string") throw new PushRuleError("M_BAD_JSON", `${where}.kind must be a string`);
    const str = (field: string): string => {
      const v = c[field];
      if (typeof v !== "string") throw new PushRuleError("M_BAD_JSON", `${where}.${field} must be a string`);
      return v;
    };
    switch (c.kind) {
      case "event_match": {
        const pattern = str("pattern");
        if (pattern.length > MAX_GLOB_PATTERN_LENGTH) throw new PushRuleError("M_INVALID_PARAM", `${where}.pattern is longer than ${MAX_GLOB_PATTERN_LENGTH} characters`);
        return { kind: c.kind, key: str("key"), pattern };
      }
      case "event_property_is":
      case "event_property_contains": {
        const key = str("key");
        if (!("value" in c)) throw new PushRuleError("M_BAD_JSON", `${where}.value is required`);
        const v = c.value;
        const simple = v === null || typeof v === "string" || typeof v === "boolean" || (typeof v === "number" && Number.isSafeInteger(v));
        if (!simple) throw new PushRuleError("M_INVALID_PARAM", `${where}.value must be a string, an integer, a boolean or null`);
        return { kind: c.kind, key, value: v as string | number | boolean | null };
      }
      case "room_member_count": {
        const is = str("is");
        if (!isValidMemberCountIs(is)) throw new PushRuleError("M_INVALID_PARAM", `${where}.is must be an integer, optionally prefixed by ==, <, >, <= or >=`);
        return { kind: c.kind, is };
      }
      case "sender_notification_permission":
        return { kind: c.kind, key: str("key") };
      case "contains_display_name":
        return { kind: c.kind };
      default:
        return clone(c) as PushCondition;
    }
  });
}

function toPushRule(kind: RuleKind, r: StoredPushRule): PushRule {
  const out: PushRule = { rule_id: r.rule_id, default: false, enabled: r.enabled, actions: clone(r.actions) };
  if (kind === "override" || kind === "underride") out.conditions = clone(r.conditions ?? []);
  if (kind === "content") out.pattern = r.pattern ?? "";
  return out;
}

function checkKind(kind: string): RuleKind {
  if (!isRuleKind(kind)) throw new PushRuleError("M_INVALID_PARAM", `Unknown push rule kind: ${kind}`);
  return kind;
}

function checkNewRuleId(kind: RuleKind, ruleId: string): void {
  if (ruleId === "" || ruleId.length > MAX_RULE_ID_LENGTH) throw new PushRuleError("M_INVALID_PARAM", `Rule ids must be 1 to ${MAX_RULE_ID_LENGTH} characters`);
  if (ruleId.startsWith(".")) throw new PushRuleError("M_INVALID_PARAM", "Rule ids starting with '.' are reserved for server-default rules");
  if (ruleId.includes("/") || ruleId.includes("\\")) throw new PushRuleError("M_INVALID_PARAM", "Rule ids may not contain '/' or '\\'");
  // Room and sender rules are keyed by the id they apply to.
  if (kind === "room" && !ruleId.startsWith("!")) throw new PushRuleError("M_INVALID_PARAM", "The rule id of a room rule must be a room id");
  if (kind === "sender" && !ruleId.startsWith("@")) throw new PushRuleError("M_INVALID_PARAM", "The rule id of a sender rule must be a user id");
}

function notFound(): PushRuleError {
  return new PushRuleError("M_NOT_FOUND", "The push rule was not found.");
}

/**
 * Reads a stored value defensively: anything malformed (an older shape, a hand-edited row) is
 * dropped rather than failing every push evaluation for the user.
 */
export function parseStoredPushRules(raw: unknown): UserPushRules {
  const out = emptyPushRules();
  if (!isObject(raw)) return out;
  const custom = isObject(raw.custom) ? raw.custom : {};
  const defaults = isObject(raw.defaults) ? raw.defaults : {};
  for (const kind of Object.keys(out.custom) as RuleKind[]) {
    const list = ownValue(custom, kind);
    if (Array.isArray(list)) {
      const seen = new Set<string>();
      for (const r of list) {
        if (!isObject(r) || typeof r.rule_id !== "string" || typeof r.enabled !== "boolean" || !Array.isArray(r.actions)) continue;
        if (seen.has(r.rule_id) || r.rule_id.startsWith(".")) continue;
        seen.add(r.rule_id);
        const rule: StoredPushRule = { rule_id: r.rule_id, enabled: r.enabled, actions: clone(r.actions) as PushAction[] };
        if ((kind === "override" || kind === "underride") && Array.isArray(r.conditions)) rule.conditions = clone(r.conditions) as PushCondition[];
        if (kind === "content") {
          if (typeof r.pattern !== "string") continue;
          rule.pattern = r.pattern;
        }
        out.custom[kind].push(rule);
      }
    }
    const changes = ownValue(defaults, kind);
    if (isObject(changes)) {
      for (const id of DEFAULT_RULE_IDS[kind]) {
        const ch = ownValue(changes, id);
        if (!isObject(ch)) continue;
        const change: DefaultRuleChange = {};
        if (typeof ch.enabled === "boolean") change.enabled = ch.enabled;
        if (Array.isArray(ch.actions)) change.actions = clone(ch.actions) as PushAction[];
        out.defaults[kind][id] = change;
      }
    }
  }
  return out;
}

function ownValue<T>(obj: Record<string, T> | undefined, key: string): T | undefined {
  return obj !== undefined && Object.prototype.hasOwnProperty.call(obj, key) ? obj[key] : undefined;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Values here are JSON from request bodies or storage, so a JSON round trip is a faithful copy. */
function clone<T>(v: T): T {
  return v === undefined ? v : (JSON.parse(JSON.stringify(v)) as T);
}
