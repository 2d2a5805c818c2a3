/**
 * Push rule evaluation (spec: Client-Server API, "Push Rules" → kinds, actions, conditions).
 * Pure functions: the caller supplies the ruleset, the event and the room facts the conditions
 * need (member count, power levels, display name), so this can run for every recipient of an
 * event without touching storage.
 */

import { compileGlob, containsWord, type CompiledGlob } from "./glob.js";
import { LEGACY_MENTION_RULE_IDS, RULE_KINDS, type PushAction, type PushCondition, type PushRule, type RuleKind, type Ruleset } from "./default-rules.js";

/** The parts of a client-format event the conditions can look at; other keys are reachable by `event_match`. */
export interface ClientEventLike {
  type: string;
  sender: string;
  room_id?: string;
  state_key?: string;
  content: Record<string, unknown>;
  [key: string]: unknown;
}

export interface PushContext {
  /** The user whose rules these are. */
  userId: string;
  /** The user's display name in the room, for `contains_display_name`. */
  displayName?: string;
  /** Joined members of the room, for `room_member_count`. */
  roomMemberCount: number;
  /** The sender's power level in the room. */
  senderPowerLevel: number;
  /** `content.notifications` of the room's power levels; a missing key requires 50. */
  notificationPowerLevels: Record<string, number>;
}

export interface PushMatch {
  ruleId: string;
  kind: RuleKind;
  /** The rule's actions with the historical `dont_notify` / `coalesce` stripped, as the spec requires. */
  actions: PushAction[];
}

/** Power level a sender needs for a notification key the room's power levels do not list. */
const DEFAULT_NOTIFICATION_LEVEL = 50;

/**
 * Glob work a recipient's own (non-default) rules may cost per event, in units of
 * ⌈pattern length / 32⌉ × value length — the NFA's bit-set words times characters, ~10 ns each.
 * Each glob is linear, but a user may store 1,000 content rules and 2 × 1,000 rules of 32
 * conditions with 1,000-character patterns: against a 60 KB body that is minutes of CPU inside
 * the event's write transaction, for every message in every room that user is in. 4 M units is
 * tens of milliseconds: hundreds of ordinary rules on a long message, thousands on a normal one.
 * Past it the remaining custom rules count as not matching; the server-default rules still run.
 */
export const MAX_CUSTOM_RULE_WORK = 4_000_000;

interface Budget {
  left: number;
}

/** Spends the cost of matching `pattern` against `value`; false when the budget cannot pay for it. */
function afford(budget: Budget | null, pattern: string, value: string): boolean {
  if (budget === null) return true;
  budget.left -= Math.ceil((pattern.length + 1) / 32) * Math.max(1, value.length);
  return budget.left >= 0;
}

/**
 * The first enabled rule matching `event`, in priority order override → content → room → sender
 * → underride (and within a kind, array order), or null when none matches. Events the user sent
 * themselves never match: the spec forbids notifying anyone of their own events.
 */
export function evaluatePushRules(ruleset: Ruleset, event: ClientEventLike, ctx: PushContext): PushMatch | null {
  if (event.sender === ctx.userId) return null;
  const content: Record<string, unknown> = isObject(event.content) ? event.content : {};
  const hasMentions = Object.prototype.hasOwnProperty.call(content, "m.mentions");
  const body = typeof content.body === "string" ? content.body : undefined;
  const budget: Budget = { left: MAX_CUSTOM_RULE_WORK };
  for (const kind of RULE_KINDS) {
    for (const r of ruleset[kind] ?? []) {
      if (!r.enabled) continue;
      if (hasMentions && r.default && LEGACY_MENTION_RULE_IDS.has(r.rule_id)) continue;
      if (!r.default && budget.left < 0) continue;
      if (ruleMatches(kind, r, event, body, ctx, r.default ? null : budget)) return { ruleId: r.rule_id, kind, actions: effectiveActions(r.actions) };
    }
  }
  return null;
}

function ruleMatches(kind: RuleKind, r: PushRule, event: ClientEventLike, body: string | undefined, ctx: PushContext, budget: Budget | null): boolean {
  switch (kind) {
    case "override":
    case "underride":
      return (r.conditions ?? []).every((c) => conditionMatches(c, event, ctx, budget));
    case "content":
      return typeof r.pattern === "string" && body !== undefined && afford(budget, r.pattern, body) && glob(r.pattern).matches(body, "word");
    case "room":
      return event.room_id !== undefined && r.rule_id === event.room_id;
    case "sender":
      return r.rule_id === event.sender;
  }
}

/** Whether a single condition holds. Unknown kinds and malformed parameters never match. */
export function conditionMatches(c: PushCondition, event: ClientEventLike, ctx: PushContext, budget: Budget | null = null): boolean {
  switch (c.kind) {
    case "event_match": {
      if (typeof c.key !== "string" || typeof c.pattern !== "string") return false;
      const found = lookupPath(event, c.key);
      if (!found.found || typeof found.value !== "string") return false;
      if (!afford(budget, c.pattern, found.value)) return false;
      // The spec special-cases exactly this key to word-boundary substring matching.
      return glob(c.pattern).matches(found.value, c.key === "content.body" ? "word" : "whole");
    }
    case "event_property_is": {
      if (typeof c.key !== "string" || !isSimpleValue(c.value)) return false;
      const found = lookupPath(event, c.key);
      return found.found && isSimpleValue(found.value) && found.value === c.value;
    }
    case "event_property_contains": {
      if (typeof c.key !== "string" || !isSimpleValue(c.value)) return false;
      const found = lookupPath(event, c.key);
      if (!found.found || !Array.isArray(found.value)) return false;
      return found.value.some((item) => isSimpleValue(item) && item === c.value);
    }
    case "contains_display_name": {
      const name = ctx.displayName;
      const body = isObject(event.content) ? event.content.body : undefined;
      // An empty display name would match every message. The name is matched literally, so
      // `*` or `?` in someone's name are not wildcards.
      if (!name || typeof body !== "string") return false;
      return containsWord(body, name);
    }
    case "room_member_count": {
      if (typeof c.is !== "string") return false;
      return memberCountMatches(c.is, ctx.roomMemberCount);
    }
    case "sender_notification_permission": {
      if (typeof c.key !== "string") return false;
      const levels = ctx.notificationPowerLevels;
      const own = Object.prototype.hasOwnProperty.call(levels, c.key) ? levels[c.key] : undefined;
      const required = typeof own === "number" && Number.isFinite(own) ? own : DEFAULT_NOTIFICATION_LEVEL;
      return ctx.senderPowerLevel >= required;
    }
    default:
      return false;
  }
}

/** `room_member_count`'s `is`: an optional `==`, `<`, `>`, `<=`, `>=` and a decimal integer. */
const MEMBER_COUNT_IS = /^(==|<=|>=|<|>)?([0-9]{1,15})$/;

export function isValidMemberCountIs(is: string): boolean {
  return MEMBER_COUNT_IS.test(is);
}

export function memberCountMatches(is: string, count: number): boolean {
  const m = MEMBER_COUNT_IS.exec(is);
  if (!m) return false;
  const n = Number(m[2]);
  switch (m[1]) {
    case "<":
      return count < n;
    case ">":
      return count > n;
    case "<=":
      return count <= n;
    case ">=":
      return count >= n;
    default:
      return count === n;
  }
}

/** What a list of actions amounts to for counting and pushing. */
export interface ActionSummary {
  notify: boolean;
  highlight: boolean;
  sound?: string;
}

/**
 * Highlight and sound only count alongside `notify`: unread highlight counts are a subset of
 * notification counts, and a rule without `notify` sends nothing to the push gateway anyway.
 * When a tweak is set twice, the last one wins.
 */
export function summariseActions(actions: readonly PushAction[]): ActionSummary {
  let notify = false;
  let highlight = false;
  let sound: string | undefined;
  for (const a of actions) {
    if (a === "notify") notify = true;
    else if (typeof a === "object" && a !== null) {
      if (a.set_tweak === "highlight") highlight = a.value === undefined || a.value === true;
      else if (a.set_tweak === "sound") sound = typeof a.value === "string" ? a.value : undefined;
    }
  }
  if (!notify) return { notify: false, highlight: false };
  return sound === undefined ? { notify, highlight } : { notify, highlight, sound };
}

function effectiveActions(actions: readonly PushAction[]): PushAction[] {
  return actions.filter((a) => a !== "dont_notify" && a !== "coalesce");
}

/**
 * Splits a dot-separated property path (spec appendix "Dot-separated property paths"): `.`
 * separates keys, `\.` is a literal dot and `\\` a literal backslash; a backslash before anything
 * else is kept as-is together with that character.
 */
export function splitDottedPath(path: string): string[] {
  const parts: string[] = [];
  let cur = "";
  for (let i = 0; i < path.length; i++) {
    const ch = path[i]!;
    if (ch === "\\") {
      const nx = path[i + 1];
      if (nx === "." || nx === "\\") {
        cur += nx;
        i++;
      } else {
        cur += ch;
      }
    } else if (ch === ".") {
      parts.push(cur);
      cur = "";
    } else {
      cur += ch;
    }
  }
  parts.push(cur);
  return parts;
}

/** Parsed keys are reused: the same few condition keys are looked up for every event. */
const pathCache = new Map<string, string[]>();
const PATH_CACHE_LIMIT = 1024;

function parsedPath(key: string): string[] {
  let parts = pathCache.get(key);
  if (!parts) {
    parts = splitDottedPath(key);
    if (pathCache.size >= PATH_CACHE_LIMIT) pathCache.clear();
    pathCache.set(key, parts);
  }
  return parts;
}

/**
 * Follows a dotted path through nested objects. Only own properties of plain objects are followed
 * (never arrays or prototypes), so `constructor` or `__proto__` in a key finds nothing.
 */
export function lookupPath(root: unknown, key: string): { found: boolean; value?: unknown } {
  let cur: unknown = root;
  for (const part of parsedPath(key)) {
    if (!isObject(cur) || !Object.prototype.hasOwnProperty.call(cur, part)) return { found: false };
    cur = cur[part];
  }
  return { found: true, value: cur };
}

const globCache = new Map<string, CompiledGlob>();
const GLOB_CACHE_LIMIT = 4096;

function glob(pattern: string): CompiledGlob {
  let g = globCache.get(pattern);
  if (!g) {
    g = compileGlob(pattern);
    if (globCache.size >= GLOB_CACHE_LIMIT) globCache.clear();
    globCache.set(pattern, g);
  }
  return g;
}

/** Spec: only strings, integers in the canonical-JSON range, booleans and null compare. */
function isSimpleValue(v: unknown): v is string | number | boolean | null {
  return v === null || typeof v === "string" || typeof v === "boolean" || (typeof v === "number" && Number.isSafeInteger(v));
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
