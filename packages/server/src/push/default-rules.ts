/**
 * The push rule data model (spec: PushRule, PushCondition, PushRuleset) and the server-default
 * rules the spec predefines (Client-Server API, "Push Rules" → "Predefined Rules", v1.19).
 */

export const RULE_KINDS = ["override", "content", "room", "sender", "underride"] as const;
/** The rule kinds, listed in the priority order in which they are evaluated. */
export type RuleKind = (typeof RULE_KINDS)[number];

export function isRuleKind(kind: string): kind is RuleKind {
  return (RULE_KINDS as readonly string[]).includes(kind);
}

export interface TweakAction {
  set_tweak: string;
  value?: unknown;
}

/**
 * `dont_notify` and `coalesce` are historical: still accepted from clients and kept in stored
 * rules so they round-trip, but ignored when deciding what to do.
 */
export type PushAction = "notify" | "dont_notify" | "coalesce" | TweakAction;

/**
 * One condition of an override/underride rule. Kept as the spec's loose shape rather than a
 * union so that conditions of kinds we do not know can be stored and returned unchanged; they
 * simply never match.
 */
export interface PushCondition {
  kind: string;
  key?: string;
  pattern?: string;
  is?: string;
  value?: string | number | boolean | null;
  /** Parameters of condition kinds outside the spec, kept so they round-trip. */
  [param: string]: unknown;
}

export interface PushRule {
  rule_id: string;
  default: boolean;
  enabled: boolean;
  actions: PushAction[];
  /** Present on override and underride rules. */
  conditions?: PushCondition[];
  /** Present on content rules. */
  pattern?: string;
}

/** One push ruleset (the spec's `global` scope), each kind in priority order. */
export type Ruleset = Record<RuleKind, PushRule[]>;

const SOUND_DEFAULT: TweakAction = { set_tweak: "sound", value: "default" };
const HIGHLIGHT: TweakAction = { set_tweak: "highlight" };

function rule(rule_id: string, conditions: PushCondition[], actions: PushAction[], enabled = true): PushRule {
  return { rule_id, default: true, enabled, conditions, actions };
}

function typeIs(pattern: string): PushCondition {
  return { kind: "event_match", key: "type", pattern };
}

/**
 * The predefined rules for one user, fresh objects on every call so callers may modify them.
 * `userId` feeds `.m.rule.invite_for_me` and `.m.rule.is_user_mention`, `localpart` the pattern of
 * `.m.rule.contains_user_name`.
 */
export function defaultRules(userId: string, localpart: string): Ruleset {
  return {
    override: [
      rule(".m.rule.master", [], [], false),
      rule(".m.rule.suppress_notices", [{ kind: "event_match", key: "content.msgtype", pattern: "m.notice" }], []),
      rule(
        ".m.rule.invite_for_me",
        [typeIs("m.room.member"), { kind: "event_match", key: "content.membership", pattern: "invite" }, { kind: "event_match", key: "state_key", pattern: userId }],
        ["notify", { ...SOUND_DEFAULT }],
      ),
      rule(".m.rule.member_event", [typeIs("m.room.member")], []),
      rule(".m.rule.is_user_mention", [{ kind: "event_property_contains", key: "content.m\\.mentions.user_ids", value: userId }], ["notify", { ...SOUND_DEFAULT }, { ...HIGHLIGHT }]),
      rule(".m.rule.contains_display_name", [{ kind: "contains_display_name" }], ["notify", { ...SOUND_DEFAULT }, { ...HIGHLIGHT }]),
      rule(
        ".m.rule.is_room_mention",
        [
          { kind: "event_property_is", key: "content.m\\.mentions.room", value: true },
          { kind: "sender_notification_permission", key: "room" },
        ],
        ["notify", { ...HIGHLIGHT }],
      ),
      rule(
        ".m.rule.roomnotif",
        [
          { kind: "event_match", key: "content.body", pattern: "@room" },
          { kind: "sender_notification_permission", key: "room" },
        ],
        ["notify", { ...HIGHLIGHT }],
      ),
      // Both state-event rules pin state_key: push rules have no implicit state-event condition.
      rule(".m.rule.tombstone", [typeIs("m.room.tombstone"), { kind: "event_match", key: "state_key", pattern: "" }], ["notify", { ...HIGHLIGHT }]),
      rule(".m.rule.reaction", [typeIs("m.reaction")], []),
      rule(".m.rule.room.server_acl", [typeIs("m.room.server_acl"), { kind: "event_match", key: "state_key", pattern: "" }], []),
      rule(".m.rule.suppress_edits", [{ kind: "event_property_is", key: "content.m\\.relates_to.rel_type", value: "m.replace" }], []),
    ],
    content: [
      {
        rule_id: ".m.rule.contains_user_name",
        default: true,
        enabled: true,
        pattern: localpart,
        actions: ["notify", { ...SOUND_DEFAULT }, { ...HIGHLIGHT }],
      },
    ],
    room: [],
    sender: [],
    underride: [
      rule(".m.rule.call", [typeIs("m.call.invite")], ["notify", { set_tweak: "sound", value: "ring" }]),
      rule(".m.rule.encrypted_room_one_to_one", [{ kind: "room_member_count", is: "2" }, typeIs("m.room.encrypted")], ["notify", { ...SOUND_DEFAULT }]),
      rule(".m.rule.room_one_to_one", [{ kind: "room_member_count", is: "2" }, typeIs("m.room.message")], ["notify", { ...SOUND_DEFAULT }]),
      rule(".m.rule.message", [typeIs("m.room.message")], ["notify"]),
      rule(".m.rule.encrypted", [typeIs("m.room.encrypted")], ["notify"]),
    ],
  };
}

/**
 * Ids of the predefined rules per kind; they do not depend on the user, so stored customisations
 * can be checked against them without building a ruleset.
 */
export const DEFAULT_RULE_IDS: Readonly<Record<RuleKind, readonly string[]>> = (() => {
  const r = defaultRules("@_:_", "_");
  return {
    override: r.override.map((x) => x.rule_id),
    content: r.content.map((x) => x.rule_id),
    room: r.room.map((x) => x.rule_id),
    sender: r.sender.map((x) => x.rule_id),
    underride: r.underride.map((x) => x.rule_id),
  };
})();

/**
 * Legacy mention rules the spec says apply only to events without `m.mentions`, so that a client
 * using intentional mentions is not also pinged by its display name or `@room` appearing in text.
 */
export const LEGACY_MENTION_RULE_IDS: ReadonlySet<string> = new Set([".m.rule.contains_display_name", ".m.rule.contains_user_name", ".m.rule.roomnotif"]);

/** The `.m.rule.master` rule outranks even user-defined override rules. */
export const MASTER_RULE_ID = ".m.rule.master";
