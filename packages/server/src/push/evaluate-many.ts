/**
 * Push rules of every recipient of one event. A message into a channel of thousands is evaluated
 * for each member inside the event's write transaction, and almost all of them use the server's
 * default rules unchanged. Those rules differ between users only where they name the user: their
 * ID in `m.mentions` (`.m.rule.is_user_mention`), their localpart or display name in the body
 * (`.m.rule.contains_user_name`, `.m.rule.contains_display_name`) and invites to them
 * (`.m.rule.invite_for_me`, a state event). Every other default rule looks only at the event and
 * at facts of the room that are the same for all recipients. So for a recipient with untouched
 * defaults whom the event cannot single out, the outcome is the one any other such recipient
 * gets: evaluated once per event, not once per member.
 */
import type { Ruleset } from "./default-rules.js";
import { evaluatePushRules, type ClientEventLike, type PushContext, type PushMatch } from "./evaluate.js";

export interface PushRecipient {
  userId: string;
  /** The localpart the user's `.m.rule.contains_user_name` matches. */
  localpart: string;
  /**
   * The localpart lower-cased, or null when it holds glob syntax (historical user IDs may) and
   * is then no literal: see singledOut. Kept with the user's cached rules rather than worked out
   * for each of a channel's members on every message.
   */
  localpartNeedle: string | null;
  displayName?: string;
  ruleset: Ruleset;
  /** The user has no rules of their own and has changed no default rule. */
  defaultsOnly: boolean;
}

/** The facts about the room every recipient's conditions share. */
export type RoomFacts = Omit<PushContext, "userId" | "displayName">;

/** evaluatePushRules for each recipient, in order; the same result for each as evaluated alone. */
export function evaluateForRecipients(recipients: readonly PushRecipient[], event: ClientEventLike, room: RoomFacts): Array<PushMatch | null> {
  const content = event.content !== null && typeof event.content === "object" && !Array.isArray(event.content) ? event.content : {};
  // Glob and word matching lower-case both sides (glob.ts); a substring of the lower-cased body
  // is therefore necessary for any of the name rules to match, and its absence rules them out.
  const lowerBody = typeof content.body === "string" ? content.body.toLowerCase() : undefined;
  const mentioned = mentionedUserIds(content);
  // Any state event (invites, tombstones, ACLs) takes the full evaluation for everybody.
  const stateEvent = event.state_key !== undefined;
  let shared: { match: PushMatch | null } | undefined;
  // The context is made only for an evaluation: for most of a channel's members there is none.
  const contextOf = (r: PushRecipient): PushContext => ({ ...room, userId: r.userId, ...(r.displayName ? { displayName: r.displayName } : {}) });
  return recipients.map((r) => {
    if (!r.defaultsOnly || stateEvent || r.userId === event.sender || singledOut(r, lowerBody, mentioned)) return evaluatePushRules(r.ruleset, { ...event }, contextOf(r));
    shared ??= { match: evaluatePushRules(r.ruleset, { ...event }, contextOf(r)) };
    return shared.match;
  });
}

/** Whether a name rule could match this recipient (conservatively: true when unsure). */
function singledOut(r: PushRecipient, lowerBody: string | undefined, mentioned: ReadonlySet<unknown> | null): boolean {
  if (mentioned?.has(r.userId)) return true;
  if (lowerBody === undefined) return false;
  if (r.localpartNeedle === null || lowerBody.includes(r.localpartNeedle)) return true;
  return r.displayName !== undefined && r.displayName !== "" && lowerBody.includes(r.displayName.toLowerCase());
}

/** `content["m.mentions"].user_ids` as a set, or null when there is none. */
function mentionedUserIds(content: Record<string, unknown>): ReadonlySet<unknown> | null {
  const mentions = content["m.mentions"];
  if (mentions === null || typeof mentions !== "object") return null;
  const ids = (mentions as Record<string, unknown>).user_ids;
  return Array.isArray(ids) ? new Set<unknown>(ids) : null;
}

/** PushRecipient.localpartNeedle for a localpart: a localpart is a literal glob unless it holds glob syntax. */
export function localpartNeedle(localpart: string): string | null {
  return /[*?[\]]/.test(localpart) ? null : localpart.toLowerCase();
}
