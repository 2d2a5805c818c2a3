/**
 * Request and response schemas of the admin API (`/_revier/admin/v1/…`). The server validates
 * against them and generates its OpenAPI document from them, so this file is the contract the
 * admin console and scripts rely on.
 */
import { Type, type Static } from "@sinclair/typebox";

export const ADMIN_PREFIX = "/_revier/admin/v1";

export const AdminRole = Type.Union([Type.Literal("admin"), Type.Literal("helpdesk"), Type.Literal("dpo"), Type.Literal("user")]);
export type AdminRole = Static<typeof AdminRole>;

/** A dotted version with up to four numeric parts and an optional pre-release suffix. */
const VersionString = Type.String({ pattern: "^[0-9]+(\\.[0-9]+){0,3}(-[0-9A-Za-z.-]+)?$", maxLength: 64 });
const RoomId = Type.String({ pattern: "^!", minLength: 2, maxLength: 255 });

/**
 * The organisation's policy. Every field has a default, so a PUT may leave fields out (they fall
 * back to the default: PUT replaces the whole object); unknown keys are refused so a typo never
 * silently does nothing.
 */
export const Policy = Type.Object(
  {
    max_devices: Type.Integer({ minimum: 1, maximum: 100, default: 3 }),
    enrollment_required: Type.Boolean({ default: false }),
    min_client_versions: Type.Record(Type.String({ minLength: 1, maxLength: 64, pattern: "^[^/\\s]+$" }), VersionString, { default: {}, maxProperties: 100 }),
    terms_required: Type.Boolean({ default: false }),
    emergency_rooms: Type.Array(RoomId, { default: [], maxItems: 1000, uniqueItems: true }),
    channel_creators: Type.Union([Type.Literal("everyone"), Type.Array(AdminRole, { minItems: 1, uniqueItems: true })], { default: "everyone" }),
    retention_days: Type.Union([Type.Null(), Type.Integer({ minimum: 1, maximum: 36500 })], { default: null }),
  },
  { additionalProperties: false },
);
export type Policy = Static<typeof Policy>;

export const PolicyBody = Type.Partial(Policy, { additionalProperties: false });

export const AdminUser = Type.Object({
  user_id: Type.String(),
  localpart: Type.String(),
  displayname: Type.Union([Type.String(), Type.Null()]),
  role: AdminRole,
  locked: Type.Boolean(),
  deactivated: Type.Boolean(),
  created_ts: Type.Integer(),
});
export type AdminUser = Static<typeof AdminUser>;

export const UserParams = Type.Object({ userId: Type.String({ minLength: 1, maxLength: 255 }) });
export const DeviceParams = Type.Object({ userId: Type.String({ minLength: 1, maxLength: 255 }), deviceId: Type.String({ minLength: 1, maxLength: 255 }) });

export const ListUsersQuery = Type.Object({
  search: Type.Optional(Type.String({ maxLength: 255 })),
  from: Type.Optional(Type.String({ maxLength: 255 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
});
export const ListUsersResponse = Type.Object({ users: Type.Array(AdminUser), next_from: Type.Optional(Type.String()) });

export const CreateUserBody = Type.Object(
  {
    localpart: Type.String({ minLength: 1, maxLength: 255 }),
    displayname: Type.Optional(Type.String({ maxLength: 255 })),
    password: Type.Optional(Type.String({ maxLength: 1024 })),
    role: Type.Optional(AdminRole),
  },
  { additionalProperties: false },
);

export const UserDetails = Type.Composite([AdminUser, Type.Object({ device_count: Type.Integer() })]);

export const PasswordBody = Type.Object(
  {
    password: Type.String({ minLength: 1, maxLength: 1024 }),
    /** Log out every session of the user (default true: a reset usually means the password leaked). */
    logout_devices: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

export const RoleBody = Type.Object({ role: AdminRole }, { additionalProperties: false });

export const ImportRowResult = Type.Object({
  line: Type.Integer(),
  localpart: Type.String(),
  user_id: Type.Optional(Type.String()),
  errcode: Type.Optional(Type.String()),
  error: Type.Optional(Type.String()),
});
export const ImportResponse = Type.Object({ created: Type.Integer(), failed: Type.Integer(), rows: Type.Array(ImportRowResult) });
export type ImportResponse = Static<typeof ImportResponse>;

export const AdminDevice = Type.Object({
  device_id: Type.String(),
  display_name: Type.Optional(Type.String()),
  last_seen_ip: Type.Optional(Type.String()),
  last_seen_ts: Type.Optional(Type.Integer()),
});
export const DeviceListResponse = Type.Object({ devices: Type.Array(AdminDevice), blocked: Type.Array(Type.String()) });

export const WipeQuery = Type.Object({ block: Type.Optional(Type.Boolean()) });

export const AuditEntry = Type.Object({
  seq: Type.Integer(),
  ts: Type.Integer(),
  actor: Type.String(),
  actor_role: Type.String(),
  action: Type.String(),
  target: Type.Union([Type.String(), Type.Null()]),
  details: Type.Record(Type.String(), Type.Unknown()),
  prev_hash: Type.String(),
  hash: Type.String(),
});
export type AuditEntry = Static<typeof AuditEntry>;

export const AuditQuery = Type.Object({
  from: Type.Optional(Type.Integer({ minimum: 0 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
});
export const AuditListResponse = Type.Object({ entries: Type.Array(AuditEntry), next_from: Type.Optional(Type.Integer()) });

export const AuditVerifyResponse = Type.Object({
  ok: Type.Boolean(),
  entries: Type.Integer(),
  first_broken: Type.Optional(Type.Object({ seq: Type.Integer(), reason: Type.String() })),
});
export type AuditVerifyResponse = Static<typeof AuditVerifyResponse>;

export const StatsResponse = Type.Object({
  users: Type.Object({ total: Type.Integer(), active: Type.Integer(), locked: Type.Integer(), deactivated: Type.Integer() }),
  devices: Type.Object({ total: Type.Integer(), active_30d: Type.Integer() }),
  public_channels: Type.Integer(),
  /** Messages (plain and encrypted) across all rooms per UTC day, last 30 days; no per-room figures. */
  messages_per_day: Type.Array(Type.Object({ day: Type.String(), count: Type.Integer() })),
});
export type StatsResponse = Static<typeof StatsResponse>;

export const EnrollmentCodeResponse = Type.Object({ code: Type.String(), expires_ts: Type.Integer() });

export const EmptyResponse = Type.Object({});

// ---- terms of use ---------------------------------------------------------------------------

/** A terms version label, in the Matrix opaque-identifier grammar (e.g. `2025-03` or `1.2`). */
export const TermsVersionId = Type.String({ minLength: 1, maxLength: 64, pattern: "^[0-9A-Za-z._~-]+$" });

/** Largest terms text accepted, in characters of Markdown. */
export const TERMS_MAX_CHARS = 65_536;

export const PublishTermsBody = Type.Object(
  {
    /** New label; a published version is never replaced, so the label must be unused. */
    version: TermsVersionId,
    /** The terms as Markdown; raw HTML in it is shown as text, never interpreted. */
    text: Type.String({ minLength: 1, maxLength: TERMS_MAX_CHARS }),
  },
  { additionalProperties: false },
);

export const TermsVersionSummary = Type.Object({
  version: Type.String(),
  published_ts: Type.Integer(),
  published_by: Type.String(),
  /** Users who accepted this version (deactivated accounts included: the record stays). */
  acceptances: Type.Integer(),
});

export const TermsVersionDetails = Type.Composite([
  TermsVersionSummary,
  Type.Object({
    text: Type.String(),
    /** Active (not deactivated) accounts that have not accepted this version yet. */
    pending: Type.Integer(),
  }),
]);

export const TermsOverview = Type.Object({
  /** The policy's `terms_required`. */
  required: Type.Boolean(),
  /** True when users are actually held to the terms: required and a version is published. */
  enforced: Type.Boolean(),
  current: Type.Union([TermsVersionDetails, Type.Null()]),
  /** Every published version, newest first (at most 100). */
  versions: Type.Array(TermsVersionSummary),
});

/** `GET /_revier/client/v1/terms`: what Revier's own app shows before use. */
export const ClientTermsResponse = Type.Object({
  /** True when the user must accept `current` before using the service. */
  required: Type.Boolean(),
  current: Type.Union([Type.Object({ version: Type.String(), text: Type.String(), html: Type.String(), published_ts: Type.Integer() }), Type.Null()]),
  accepted: Type.Boolean(),
  accepted_ts: Type.Optional(Type.Integer()),
});

export const AcceptTermsBody = Type.Object({ version: TermsVersionId }, { additionalProperties: false });
export const AcceptTermsResponse = Type.Object({ version: Type.String(), accepted_ts: Type.Integer() });

// ---- device enrollment ------------------------------------------------------------------------

/** The user-interactive-auth stage that carries an enrollment code (`{type, code, session}`). */
export const ENROLLMENT_UIA_STAGE = "org.revier.enrollment";
/** The plain login parameter that carries an enrollment code. */
export const ENROLLMENT_CODE_PARAM = "org.revier.enrollment_code";

/** A channel (public room) as the admin API lists it: metadata and counts, never content. */
export const ChannelSummary = Type.Object({
  room_id: Type.String(),
  name: Type.Union([Type.String(), Type.Null()]),
  canonical_alias: Type.Union([Type.String(), Type.Null()]),
  /** The user who made the room a channel (created it public or published it). */
  owner: Type.String(),
  member_count: Type.Integer(),
  created_ts: Type.Integer(),
  /** Time of the newest event still stored in the room. */
  last_activity_ts: Type.Union([Type.Integer(), Type.Null()]),
  /** Listed in the public room directory. */
  published: Type.Boolean(),
  /** The join rule is `public`. */
  join_public: Type.Boolean(),
  /** Read-only broadcast channel: ordinary members (power level 0) may not post. */
  broadcast: Type.Boolean(),
});
export type ChannelSummary = Static<typeof ChannelSummary>;

export const ListChannelsQuery = Type.Object({
  /** Room id to continue after (the `next_from` of the previous page). */
  from: Type.Optional(Type.String({ maxLength: 255 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
});
export const ChannelListResponse = Type.Object({ channels: Type.Array(ChannelSummary), next_from: Type.Optional(Type.String()) });

export const ChannelParams = Type.Object({ roomId: Type.String({ minLength: 1, maxLength: 255 }) });

export const CloseChannelBody = Type.Object(
  {
    /** Shown to the members in the closing notice and as the reason of their removal; audited. */
    reason: Type.String({ minLength: 1, maxLength: 1000 }),
  },
  { additionalProperties: false },
);

export const CloseChannelResponse = Type.Object({
  room_id: Type.String(),
  /** Members removed (joined, invited or knocking), the closing member included. */
  removed: Type.Integer(),
  /** Whether the closing notice could be posted (someone in the room had the power to post it). */
  notice_sent: Type.Boolean(),
});
export type CloseChannelResponse = Static<typeof CloseChannelResponse>;
