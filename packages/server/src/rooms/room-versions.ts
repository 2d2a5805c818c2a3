/**
 * What changes between the room versions we support. Code that depends on the room version asks
 * for a behaviour flag here instead of comparing version strings, so adding a version is a matter
 * of describing it.
 */

/** Which keys the redaction algorithm keeps beyond the ones every version keeps. */
export interface RedactionRules {
  /** Top-level `origin`, `membership` and `prev_state` survive redaction (dropped in v11). */
  keepOriginMembershipPrevState: boolean;
  /** `m.room.create` keeps its whole content (v11) instead of only `creator`. */
  keepAllCreateContent: boolean;
  /** `m.room.power_levels` keeps `invite` (v11). */
  keepPowerLevelsInvite: boolean;
  /** `m.room.redaction` keeps `content.redacts` (v11). */
  keepRedactionContentRedacts: boolean;
  /** `m.room.member` keeps `third_party_invite.signed` (v11). */
  keepThirdPartyInviteSigned: boolean;
  /** `m.room.member` keeps `join_authorised_via_users_server` (v9+). */
  keepJoinAuthorisedViaUsersServer: boolean;
  /** `m.room.join_rules` keeps `allow` (v8+). */
  keepJoinRulesAllow: boolean;
}

export interface RoomVersion {
  id: string;
  stable: boolean;
  /** Event ids are `$` + URL-safe unpadded base64 of the reference hash (v4+). */
  eventIdFormat: "reference-hash-url-safe";
  stateResolution: "v2";
  /**
   * The room creator is the create event's `sender`; `content.creator` no longer exists and is
   * not required (v11). Otherwise the creator is `content.creator`, which must be present.
   */
  implicitRoomCreator: boolean;
  /** `m.room.redaction` names its target in `content.redacts` (v11) rather than top-level `redacts`. */
  redactsInContent: boolean;
  /** Power level values must be JSON integers; numeric strings are rejected (v10+). */
  integerPowerLevels: boolean;
  /** `notifications` levels are covered by the power level change rules (v6+). */
  limitNotificationsPowerLevels: boolean;
  /** The `knock` join rule and `knock` membership exist (v7+). */
  knockJoinRule: boolean;
  /** The `restricted` join rule and `join_authorised_via_users_server` exist (v8+). */
  restrictedJoinRule: boolean;
  /** The `knock_restricted` join rule exists (v10+). */
  knockRestrictedJoinRule: boolean;
  /** Signing keys must be valid at the event's origin_server_ts (v5+). */
  enforceKeyValidity: boolean;
  redaction: RedactionRules;
}

const V10: RoomVersion = Object.freeze({
  id: "10",
  stable: true,
  eventIdFormat: "reference-hash-url-safe",
  stateResolution: "v2",
  implicitRoomCreator: false,
  redactsInContent: false,
  integerPowerLevels: true,
  limitNotificationsPowerLevels: true,
  knockJoinRule: true,
  restrictedJoinRule: true,
  knockRestrictedJoinRule: true,
  enforceKeyValidity: true,
  redaction: Object.freeze({
    keepOriginMembershipPrevState: true,
    keepAllCreateContent: false,
    keepPowerLevelsInvite: false,
    keepRedactionContentRedacts: false,
    keepThirdPartyInviteSigned: false,
    keepJoinAuthorisedViaUsersServer: true,
    keepJoinRulesAllow: true,
  }),
});

const V11: RoomVersion = Object.freeze({
  ...V10,
  id: "11",
  implicitRoomCreator: true,
  redactsInContent: true,
  redaction: Object.freeze({
    ...V10.redaction,
    keepOriginMembershipPrevState: false,
    keepAllCreateContent: true,
    keepPowerLevelsInvite: true,
    keepRedactionContentRedacts: true,
    keepThirdPartyInviteSigned: true,
  }),
});

/**
 * Supported room versions by id. The map has no prototype so that a client-supplied version such
 * as "constructor" or "toString" is simply unknown (`version in ROOM_VERSIONS` stays honest).
 */
export const ROOM_VERSIONS: Readonly<Record<string, RoomVersion>> = Object.freeze(Object.assign(Object.create(null) as Record<string, RoomVersion>, { "10": V10, "11": V11 }));

export const DEFAULT_ROOM_VERSION = "10";

/** The descriptor for a version id, or undefined when we do not support it. */
export function getRoomVersion(id: string): RoomVersion | undefined {
  return Object.hasOwn(ROOM_VERSIONS, id) ? ROOM_VERSIONS[id] : undefined;
}
