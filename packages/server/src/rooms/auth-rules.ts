import { verifyJsonSignature, type Pdu } from "./event-crypto.js";
import { DEFAULT_ROOM_VERSION, ROOM_VERSIONS, getRoomVersion, type RoomVersion } from "./room-versions.js";

/**
 * The authorization rules of room versions 10 and 11 (spec "Room Versions" → "Authorization
 * rules"). The rule numbers in comments refer to that list so the code can be checked against it.
 */

/** The parts of a state event the auth rules look at. */
export type AuthEvent = {
  event_id: string;
  type: string;
  state_key?: string;
  sender: string;
  content: Record<string, unknown>;
};

/** State an event is authorised against, keyed by `stateKeyOf(type, stateKey)`. */
export type AuthState = Map<string, AuthEvent>;

/** The event being authorised. */
export type AuthCheckEvent = Pick<Pdu, "room_id" | "sender" | "type" | "state_key" | "content" | "prev_events">;

export type AuthResult = { ok: true } | { ok: false; reason: string };

export interface AuthOptions {
  /**
   * Whether the event carries a valid signature from `serverName`. Needed for rule 4.2
   * (`join_authorised_via_users_server` must have signed the join). Without it that check is
   * skipped, which is right only for events this server is about to sign itself.
   */
  isSignedBy?: (serverName: string) => boolean;
}

/**
 * Map key for a (type, state_key) pair. The type's length in front keeps it unambiguous even for
 * types or state keys containing separator characters, which remote servers could choose; it is
 * built about a dozen times per event written, so it is not JSON-encoded.
 */
export function stateKeyOf(type: string, stateKey: string): string {
  return `${type.length}:${type}${stateKey}`;
}

const ALLOW: AuthResult = { ok: true };

function deny(reason: string): AuthResult {
  return { ok: false, reason };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Own property with a value: `undefined` never reaches the stored JSON, so it counts as absent. */
function has(obj: Record<string, unknown>, key: string): boolean {
  return Object.hasOwn(obj, key) && obj[key] !== undefined;
}

/** The server name part of a user or room id (everything after the first colon). */
export function domainOf(id: string): string {
  const i = id.indexOf(":");
  return i < 0 ? "" : id.slice(i + 1);
}

function isValidUserId(id: string): boolean {
  const colon = id.indexOf(":");
  return id.startsWith("@") && colon > 1 && colon < id.length - 1;
}

function stateEvent(authState: AuthState, type: string, stateKey = ""): AuthEvent | undefined {
  return authState.get(stateKeyOf(type, stateKey));
}

function membershipOf(userId: string, authState: AuthState): string | undefined {
  const m = stateEvent(authState, "m.room.member", userId)?.content.membership;
  return typeof m === "string" ? m : undefined;
}

/**
 * The auth events selection (server-server "Auth events selection"): the state an event needs to
 * be authorised, and exactly what its `auth_events` should reference.
 */
export function authEventTypesFor(event: { type: string; state_key?: string; sender: string; content: Record<string, unknown> }): Array<[string, string]> {
  if (event.type === "m.room.create") return [];
  const out: Array<[string, string]> = [
    ["m.room.create", ""],
    ["m.room.power_levels", ""],
    ["m.room.member", event.sender],
  ];
  if (event.type === "m.room.member" && event.state_key !== undefined) {
    const membership = event.content.membership;
    out.push(["m.room.member", event.state_key]);
    // Knocks need the join rule too; the spec's list omits it but the knock rule reads it, and
    // Synapse selects it as well.
    if (membership === "join" || membership === "invite" || membership === "knock") out.push(["m.room.join_rules", ""]);
    if (membership === "invite") {
      const tpi = event.content.third_party_invite;
      const token = isObject(tpi) && isObject(tpi.signed) ? tpi.signed.token : undefined;
      if (typeof token === "string") out.push(["m.room.third_party_invite", token]);
    }
    // Only joins are authorised via another user; other homeservers select it for joins only.
    const authoriser = event.content.join_authorised_via_users_server;
    if (membership === "join" && typeof authoriser === "string") out.push(["m.room.member", authoriser]);
  }
  const seen = new Set<string>();
  return out.filter(([t, k]) => {
    const key = stateKeyOf(t, k);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/**
 * Rule 2 on an event's actual `auth_events`: no duplicate (type, state_key), nothing outside the
 * selection, and a create event present. For events received over federation.
 */
export function checkAuthEventsSelection(event: AuthCheckEvent, authEvents: readonly AuthEvent[]): AuthResult {
  if (event.type === "m.room.create") return authEvents.length === 0 ? ALLOW : deny("m.room.create must not have auth events");
  const allowed = new Set(authEventTypesFor(event).map(([t, k]) => stateKeyOf(t, k)));
  const seen = new Set<string>();
  for (const ae of authEvents) {
    if (ae.state_key === undefined) return deny(`auth event ${ae.event_id} is not a state event`);
    const key = stateKeyOf(ae.type, ae.state_key);
    if (seen.has(key)) return deny(`duplicate auth events for (${ae.type}, ${ae.state_key})`);
    seen.add(key);
    if (!allowed.has(key)) return deny(`auth event (${ae.type}, ${ae.state_key}) is not needed to authorise this event`);
  }
  if (!seen.has(stateKeyOf("m.room.create", ""))) return deny("auth events do not include m.room.create");
  return ALLOW;
}

function versionFor(authState: AuthState, roomVersion?: RoomVersion): RoomVersion {
  if (roomVersion) return roomVersion;
  const declared = stateEvent(authState, "m.room.create")?.content.room_version;
  return (typeof declared === "string" ? getRoomVersion(declared) : undefined) ?? (ROOM_VERSIONS[DEFAULT_ROOM_VERSION] as RoomVersion);
}

/** The room creator: the create event's sender from v11, `content.creator` before. */
export function roomCreatorOf(authState: AuthState, roomVersion?: RoomVersion): string | undefined {
  const create = stateEvent(authState, "m.room.create");
  if (!create) return undefined;
  if (versionFor(authState, roomVersion).implicitRoomCreator) return create.sender;
  const creator = create.content.creator;
  return typeof creator === "string" ? creator : undefined;
}

/**
 * A power level value, or undefined if it is absent or not a valid level. From v10 only JSON
 * integers count; older versions also accepted integer strings.
 */
function levelValue(v: unknown, integersOnly: boolean): number | undefined {
  if (typeof v === "number" && Number.isInteger(v)) return v;
  if (!integersOnly && typeof v === "string" && /^\s*[+-]?\d+\s*$/.test(v)) return Number.parseInt(v, 10);
  return undefined;
}

function isLevel(v: unknown, integersOnly: boolean): boolean {
  return levelValue(v, integersOnly) !== undefined;
}

function powerLevelsContent(authState: AuthState): Record<string, unknown> | undefined {
  return stateEvent(authState, "m.room.power_levels")?.content;
}

/** A user's power level: `users[userId]`, else `users_default`; without a power levels event the creator has 100. */
export function powerLevelOf(userId: string, authState: AuthState, roomVersion?: RoomVersion): number {
  const rv = versionFor(authState, roomVersion);
  const pl = powerLevelsContent(authState);
  if (!pl) return roomCreatorOf(authState, rv) === userId ? 100 : 0;
  return userLevelIn(userId, pl, rv.integerPowerLevels);
}

function userLevelIn(userId: string, pl: Record<string, unknown>, integersOnly: boolean): number {
  const users = pl.users;
  if (isObject(users) && has(users, userId)) {
    const own = levelValue(users[userId], integersOnly);
    if (own !== undefined) return own;
  }
  return levelValue(pl.users_default, integersOnly) ?? 0;
}

const NAMED_DEFAULTS = { invite: 0, kick: 50, ban: 50, redact: 50 } as const;

/** `invite`, `kick`, `ban` or `redact` level; invite defaults to 0, the others to 50. */
export function namedPowerLevel(name: keyof typeof NAMED_DEFAULTS, authState: AuthState, roomVersion?: RoomVersion): number {
  const pl = powerLevelsContent(authState);
  if (!pl) return NAMED_DEFAULTS[name];
  return levelValue(pl[name], versionFor(authState, roomVersion).integerPowerLevels) ?? NAMED_DEFAULTS[name];
}

/** Level needed to send an event type: `events[type]`, else `state_default` (50) or `events_default` (0). */
export function requiredPowerLevel(eventType: string, isState: boolean, authState: AuthState, roomVersion?: RoomVersion): number {
  const pl = powerLevelsContent(authState) ?? {};
  const integersOnly = versionFor(authState, roomVersion).integerPowerLevels;
  const events = pl.events;
  if (isObject(events) && has(events, eventType)) {
    const level = levelValue(events[eventType], integersOnly);
    if (level !== undefined) return level;
  }
  return isState ? (levelValue(pl.state_default, integersOnly) ?? 50) : (levelValue(pl.events_default, integersOnly) ?? 0);
}

/**
 * Whether a user may redact an event, as clients see it: their own events always (subject only to
 * the `m.room.redaction` send level, which checkEventAuth enforces), anyone else's only with at
 * least the `redact` level (default 50). `powerLevels` is either the room's auth state or the
 * content of its `m.room.power_levels` event (absent: nobody has redact power).
 */
export function mayRedact(redactionSender: string, targetEventSender: string, powerLevels: AuthState | Record<string, unknown> | undefined): boolean {
  if (redactionSender === targetEventSender) return true;
  if (powerLevels instanceof Map) return powerLevelOf(redactionSender, powerLevels) >= namedPowerLevel("redact", powerLevels);
  const pl = powerLevels ?? {};
  // Only v10+ rooms exist here, so only integer levels count.
  const redactLevel = levelValue(pl.redact, true) ?? NAMED_DEFAULTS.redact;
  return userLevelIn(redactionSender, pl, true) >= redactLevel;
}

/**
 * When a server applies a received redaction (rooms v3+ "Handling redactions"): the sender has the
 * `redact` level, or is on the same server as the redacted event's sender. Servers vouch for their
 * own users; the per-user check is mayRedact, done when the redaction is sent.
 */
export function mayApplyRedaction(redactionSender: string, targetEventSender: string, authState: AuthState, roomVersion?: RoomVersion): boolean {
  if (domainOf(redactionSender) === domainOf(targetEventSender)) return true;
  return powerLevelOf(redactionSender, authState, roomVersion) >= namedPowerLevel("redact", authState, roomVersion);
}

/**
 * Runs the authorization rules for `event` against `authState` (the state selected by
 * authEventTypesFor, or any larger state such as the room's current state).
 */
export function checkEventAuth(event: AuthCheckEvent, authState: AuthState, roomVersion: RoomVersion, opts: AuthOptions = {}): AuthResult {
  // 1. m.room.create
  if (event.type === "m.room.create") return checkCreate(event, roomVersion);

  // 2.4 (rules 2.1-2.3 concern the auth_events list itself: see checkAuthEventsSelection)
  const create = stateEvent(authState, "m.room.create");
  if (!create) return deny("the room has no m.room.create event");

  // 3. m.federate
  if (create.content["m.federate"] === false && domainOf(event.sender) !== domainOf(create.sender)) {
    return deny("the room does not allow users from other servers (m.federate is false)");
  }

  // 4. m.room.member
  if (event.type === "m.room.member") return checkMember(event, authState, create, roomVersion, opts);

  // 5.
  if (membershipOf(event.sender, authState) !== "join") return deny(`${event.sender} is not joined to the room`);

  const senderLevel = powerLevelOf(event.sender, authState, roomVersion);

  // 6. m.room.third_party_invite
  if (event.type === "m.room.third_party_invite") {
    const invite = namedPowerLevel("invite", authState, roomVersion);
    return senderLevel >= invite ? ALLOW : deny(`sending third-party invites needs power level ${invite}, ${event.sender} has ${senderLevel}`);
  }

  // 7.
  const required = requiredPowerLevel(event.type, event.state_key !== undefined, authState, roomVersion);
  if (required > senderLevel) return deny(`sending ${event.type} needs power level ${required}, ${event.sender} has ${senderLevel}`);

  // 8.
  if (event.state_key !== undefined && event.state_key.startsWith("@") && event.state_key !== event.sender) {
    return deny("state keys starting with @ are reserved for the user they name");
  }

  // 9. m.room.power_levels
  if (event.type === "m.room.power_levels") return checkPowerLevels(event, authState, senderLevel, roomVersion);

  // 10. Redactions also land here: from v3 they are authorised when applied (mayApplyRedaction).
  return ALLOW;
}

function checkCreate(event: AuthCheckEvent, rv: RoomVersion): AuthResult {
  if (event.state_key !== "") return deny("m.room.create must have an empty state key");
  // 1.1
  if (event.prev_events.length > 0) return deny("m.room.create must not have prev_events");
  // 1.2
  const roomDomain = domainOf(event.room_id);
  if (!roomDomain || roomDomain !== domainOf(event.sender)) return deny("the room id's server name must match the creator's server");
  // 1.3
  const declared = event.content.room_version;
  if (declared !== undefined && (typeof declared !== "string" || !getRoomVersion(declared))) return deny(`unsupported room version ${JSON.stringify(declared)}`);
  // Not an auth rule, but checking a create event under another version's rules is a bug.
  const effective = declared ?? "1";
  if (effective !== rv.id) return deny(`m.room.create declares room version ${effective} but is checked as version ${rv.id}`);
  // 1.4 (v10): the creator is named in content; v11 uses the sender.
  if (!rv.implicitRoomCreator && !has(event.content, "creator")) return deny("m.room.create content has no creator");
  return ALLOW;
}

function joinRuleOf(authState: AuthState): unknown {
  const jr = stateEvent(authState, "m.room.join_rules");
  // With no join rules event the room behaves as invite-only, as other homeservers treat it.
  return jr ? jr.content.join_rule : "invite";
}

function checkMember(event: AuthCheckEvent, authState: AuthState, create: AuthEvent, rv: RoomVersion, opts: AuthOptions): AuthResult {
  // 4.1
  const target = event.state_key;
  const membership = event.content.membership;
  if (target === undefined) return deny("m.room.member must have a state key");
  if (typeof membership !== "string") return deny("m.room.member content has no membership");

  // 4.2
  const hasAuthoriser = rv.restrictedJoinRule && has(event.content, "join_authorised_via_users_server");
  const authoriser = event.content.join_authorised_via_users_server;
  if (hasAuthoriser) {
    if (typeof authoriser !== "string" || !isValidUserId(authoriser)) return deny("join_authorised_via_users_server is not a user id");
    if (opts.isSignedBy && !opts.isSignedBy(domainOf(authoriser))) return deny(`the event is not signed by ${domainOf(authoriser)}, the server of join_authorised_via_users_server`);
  }

  const sender = event.sender;
  const senderMembership = membershipOf(sender, authState);
  const targetMembership = membershipOf(target, authState);
  const senderLevel = () => powerLevelOf(sender, authState, rv);
  const targetLevel = () => powerLevelOf(target, authState, rv);
  const joinRule = joinRuleOf(authState);
  const knockRules = [...(rv.knockJoinRule ? ["knock"] : []), ...(rv.knockRestrictedJoinRule ? ["knock_restricted"] : [])];
  const restrictedRules = [...(rv.restrictedJoinRule ? ["restricted"] : []), ...(rv.knockRestrictedJoinRule ? ["knock_restricted"] : [])];

  switch (membership) {
    case "join": {
      // 4.3.1: the creator's own join right after the create event.
      if (event.prev_events.length === 1 && event.prev_events[0] === create.event_id && target === roomCreatorOf(authState, rv)) return ALLOW;
      // 4.3.2
      if (sender !== target) return deny("users can only join on their own behalf");
      // 4.3.3
      if (senderMembership === "ban") return deny(`${sender} is banned from the room`);
      const invitedOrJoined = senderMembership === "invite" || senderMembership === "join";
      // 4.3.4
      if (joinRule === "invite" || (rv.knockJoinRule && joinRule === "knock")) {
        return invitedOrJoined ? ALLOW : deny(`the room's join rule is ${joinRule} and ${sender} has not been invited`);
      }
      // 4.3.5
      if (typeof joinRule === "string" && restrictedRules.includes(joinRule)) {
        if (invitedOrJoined) return ALLOW;
        if (typeof authoriser !== "string") return deny(`the room's join rule is ${joinRule}: the join must be authorised via a member who can invite`);
        // The authorising user must be in the room to vouch for the join.
        if (membershipOf(authoriser, authState) !== "join") return deny(`${authoriser} cannot authorise joins: not joined to the room`);
        const inviteLevel = namedPowerLevel("invite", authState, rv);
        if (powerLevelOf(authoriser, authState, rv) < inviteLevel) return deny(`${authoriser} cannot authorise joins: needs power level ${inviteLevel} to invite`);
        return ALLOW;
      }
      // 4.3.6
      if (joinRule === "public") return ALLOW;
      // 4.3.7
      return deny(`the room's join rule (${String(joinRule)}) does not allow ${sender} to join`);
    }

    case "invite": {
      // 4.4.1
      if (has(event.content, "third_party_invite")) return checkThirdPartyInvite(event, target, targetMembership, authState);
      // 4.4.2
      if (senderMembership !== "join") return deny(`${sender} is not joined to the room`);
      // 4.4.3
      if (targetMembership === "join") return deny(`${target} is already in the room`);
      if (targetMembership === "ban") return deny(`${target} is banned from the room`);
      // 4.4.4
      const inviteLevel = namedPowerLevel("invite", authState, rv);
      const level = senderLevel();
      return level >= inviteLevel ? ALLOW : deny(`inviting needs power level ${inviteLevel}, ${sender} has ${level}`);
    }

    case "leave": {
      // 4.5.1: leaving, rejecting an invite or withdrawing a knock.
      if (sender === target) {
        return senderMembership === "invite" || senderMembership === "join" || senderMembership === "knock" ? ALLOW : deny(`${sender} cannot leave: membership is ${senderMembership ?? "none"}`);
      }
      // 4.5.2
      if (senderMembership !== "join") return deny(`${sender} is not joined to the room`);
      const level = senderLevel();
      // 4.5.3: unbanning needs the ban level as well as the kick level.
      const banLevel = namedPowerLevel("ban", authState, rv);
      if (targetMembership === "ban" && level < banLevel) return deny(`unbanning needs power level ${banLevel}, ${sender} has ${level}`);
      // 4.5.4
      const kickLevel = namedPowerLevel("kick", authState, rv);
      if (level < kickLevel) return deny(`kicking needs power level ${kickLevel}, ${sender} has ${level}`);
      if (targetLevel() >= level) return deny(`${sender} cannot kick ${target}: their power level is not lower than ${sender}'s`);
      return ALLOW;
    }

    case "ban": {
      // 4.6.1
      if (senderMembership !== "join") return deny(`${sender} is not joined to the room`);
      // 4.6.2
      const level = senderLevel();
      const banLevel = namedPowerLevel("ban", authState, rv);
      if (level < banLevel) return deny(`banning needs power level ${banLevel}, ${sender} has ${level}`);
      if (targetLevel() >= level) return deny(`${sender} cannot ban ${target}: their power level is not lower than ${sender}'s`);
      return ALLOW;
    }

    case "knock": {
      if (!rv.knockJoinRule) break;
      // 4.7.1
      if (typeof joinRule !== "string" || !knockRules.includes(joinRule)) return deny(`the room's join rule (${String(joinRule)}) does not allow knocking`);
      // 4.7.2
      if (sender !== target) return deny("users can only knock on their own behalf");
      // 4.7.3
      if (senderMembership === "ban" || senderMembership === "invite" || senderMembership === "join") return deny(`${sender} cannot knock: membership is ${senderMembership}`);
      return ALLOW;
    }
  }
  // 4.8
  return deny(`unknown membership ${JSON.stringify(membership)}`);
}

function checkThirdPartyInvite(event: AuthCheckEvent, target: string, targetMembership: string | undefined, authState: AuthState): AuthResult {
  // 4.4.1.1
  if (targetMembership === "ban") return deny(`${target} is banned from the room`);
  // 4.4.1.2-3
  const tpi = event.content.third_party_invite;
  if (!isObject(tpi) || !isObject(tpi.signed)) return deny("third_party_invite has no signed object");
  const signed = tpi.signed;
  if (typeof signed.mxid !== "string" || typeof signed.token !== "string") return deny("third_party_invite.signed needs mxid and token");
  // 4.4.1.4
  if (signed.mxid !== target) return deny("third_party_invite.signed.mxid does not match the invited user");
  // 4.4.1.5
  const inviteEvent = stateEvent(authState, "m.room.third_party_invite", signed.token);
  if (!inviteEvent) return deny("no m.room.third_party_invite matches the token");
  // 4.4.1.6
  if (inviteEvent.sender !== event.sender) return deny("only the sender of the third-party invite can complete it");
  // 4.4.1.7
  const publicKeys: string[] = [];
  if (typeof inviteEvent.content.public_key === "string") publicKeys.push(inviteEvent.content.public_key);
  if (Array.isArray(inviteEvent.content.public_keys)) {
    for (const pk of inviteEvent.content.public_keys) if (isObject(pk) && typeof pk.public_key === "string") publicKeys.push(pk.public_key);
  }
  const signatures = signed.signatures;
  if (isObject(signatures)) {
    for (const [server, byKey] of Object.entries(signatures)) {
      if (!isObject(byKey)) continue;
      for (const keyId of Object.keys(byKey)) {
        for (const pk of publicKeys) if (verifyJsonSignature(signed, server, keyId, pk)) return ALLOW;
      }
    }
  }
  // 4.4.1.8
  return deny("third_party_invite.signed is not signed by any of the invite's public keys");
}

const PL_NAMED_KEYS = ["users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"] as const;

function checkPowerLevels(event: AuthCheckEvent, authState: AuthState, senderLevel: number, rv: RoomVersion): AuthResult {
  const ints = rv.integerPowerLevels;
  const next = event.content;
  const levelMaps = rv.limitNotificationsPowerLevels ? (["events", "notifications"] as const) : (["events"] as const);

  // 9.1
  for (const k of PL_NAMED_KEYS) {
    if (has(next, k) && !isLevel(next[k], ints)) return deny(`power levels: ${k} must be an integer`);
  }
  // 9.2
  for (const k of ["events", "notifications"] as const) {
    if (!has(next, k)) continue;
    const m = next[k];
    if (!isObject(m) || !Object.values(m).every((v) => isLevel(v, ints))) return deny(`power levels: ${k} must be an object of integers`);
  }
  // 9.3
  if (has(next, "users")) {
    const users = next.users;
    if (!isObject(users)) return deny("power levels: users must be an object");
    for (const [userId, v] of Object.entries(users)) {
      if (!isValidUserId(userId)) return deny(`power levels: ${JSON.stringify(userId)} in users is not a user id`);
      if (!isLevel(v, ints)) return deny(`power levels: level of ${userId} must be an integer`);
    }
  }

  // 9.4
  const prev = powerLevelsContent(authState);
  if (!prev) return ALLOW;
  const lv = (v: unknown) => levelValue(v, ints);

  // 9.5: a key missing on either side is not compared against the sender's level.
  for (const k of PL_NAMED_KEYS) {
    const before = lv(prev[k]);
    const after = lv(next[k]);
    if (before === after) continue;
    if (before !== undefined && before > senderLevel) return deny(`power levels: cannot change ${k} from ${before}, above your level ${senderLevel}`);
    if (after !== undefined && after > senderLevel) return deny(`power levels: cannot set ${k} to ${after}, above your level ${senderLevel}`);
  }

  // 9.6-9.7
  for (const m of levelMaps) {
    const before = isObject(prev[m]) ? prev[m] : {};
    const after = isObject(next[m]) ? next[m] : {};
    for (const k of new Set([...Object.keys(before), ...Object.keys(after)])) {
      const b = has(before, k) ? lv(before[k]) : undefined;
      const a = has(after, k) ? lv(after[k]) : undefined;
      if (b === a) continue;
      if (b !== undefined && b > senderLevel) return deny(`power levels: cannot change ${m}.${k} from ${b}, above your level ${senderLevel}`);
      if (a !== undefined && a > senderLevel) return deny(`power levels: cannot set ${m}.${k} to ${a}, above your level ${senderLevel}`);
    }
  }

  // 9.8-9.9
  const usersBefore = isObject(prev.users) ? prev.users : {};
  const usersAfter = isObject(next.users) ? next.users : {};
  for (const userId of new Set([...Object.keys(usersBefore), ...Object.keys(usersAfter)])) {
    const b = has(usersBefore, userId) ? lv(usersBefore[userId]) : undefined;
    const a = has(usersAfter, userId) ? lv(usersAfter[userId]) : undefined;
    if (b === a) continue;
    if (userId !== event.sender && b !== undefined && b >= senderLevel) return deny(`power levels: cannot change the level of ${userId} (${b}), not below your level ${senderLevel}`);
    if (a !== undefined && a > senderLevel) return deny(`power levels: cannot give ${userId} level ${a}, above your level ${senderLevel}`);
  }

  // 9.10
  return ALLOW;
}
