import type { Generated } from "kysely";

/**
 * The database schema, shared by SQLite and PostgreSQL. JSON is stored as text and booleans as
 * 0/1 integers so both dialects read back the same values; positions and timestamps fit in a
 * JavaScript number.
 */
export interface Database {
  counters: { name: string; value: number };
  users: {
    user_id: string;
    localpart: string;
    password_hash: string | null;
    role: string;
    deactivated: number;
    locked: number;
    created_ts: number;
    displayname: string | null;
    avatar_url: string | null;
  };
  devices: {
    user_id: string;
    device_id: string;
    display_name: string | null;
    created_ts: number;
    last_seen_ts: number | null;
    last_seen_ip: string | null;
    user_agent: string | null;
  };
  access_tokens: {
    token_hash: string;
    user_id: string;
    device_id: string;
    created_ts: number;
    expires_ts: number | null;
    refresh_token_hash: string | null;
  };
  /** Changes that invalidate cached sessions, read by every process (see users/session-cache.ts). */
  auth_changes: { pos: Generated<number>; user_id: string; ts: number };
  refresh_tokens: {
    token_hash: string;
    user_id: string;
    device_id: string;
    created_ts: number;
    /** set once this token was exchanged; the old one keeps working until the new pair is used */
    next_token_hash: string | null;
  };
  uia_sessions: {
    session_id: string;
    user_id: string | null;
    request_hash: string;
    completed: string;
    created_ts: number;
  };
  registration_tokens: {
    token_hash: string;
    uses_allowed: number | null;
    completed: number;
    expiry_ts: number | null;
    created_ts: number;
  };
  rooms: {
    room_id: string;
    room_version: string;
    creator: string;
    created_ts: number;
    visibility: string;
    last_event_id: string | null;
    last_depth: number;
    last_stream: number;
  };
  events: {
    stream_ordering: number;
    event_id: string;
    room_id: string;
    type: string;
    state_key: string | null;
    sender: string;
    origin_server_ts: number;
    depth: number;
    json: string;
    redacted_by: string | null;
    relates_to: string | null;
    rel_type: string | null;
    thread_id: string | null;
    membership: string | null;
    txn_device: string | null;
    txn_id: string | null;
  };
  event_txns: {
    user_id: string;
    device_id: string;
    scope: string;
    txn_id: string;
    result: string;
    created_ts: number;
  };
  room_state: { room_id: string; type: string; state_key: string; event_id: string; stream_ordering: number };
  room_members: {
    room_id: string;
    user_id: string;
    membership: string;
    event_id: string;
    stream_ordering: number;
    sender: string;
    displayname: string | null;
    avatar_url: string | null;
    forgotten: number;
    /** Position of the join that began the current stretch in the room; null when not joined. */
    joined_at: number | null;
  };
  room_aliases: { alias: string; room_id: string; creator: string; created_ts: number };
  receipts: {
    room_id: string;
    receipt_type: string;
    user_id: string;
    thread_id: string;
    event_id: string;
    ts: number;
    stream_pos: number;
  };
  account_data: { user_id: string; room_id: string; type: string; content: string; stream_pos: number };
  filters: { user_id: string; filter_id: string; json: string };
  push_rules: { user_id: string; json: string };
  pushers: {
    user_id: string;
    app_id: string;
    pushkey: string;
    kind: string;
    json: string;
    created_ts: number;
    /** The device that set the pusher; its removal removes the pusher (null for older pushers). */
    device_id: string | null;
  };
  event_push_actions: {
    room_id: string;
    user_id: string;
    event_id: string;
    stream_ordering: number;
    thread_id: string;
    notify: number;
    highlight: number;
  };
  event_push_shared: {
    stream_ordering: number;
    room_id: string;
    event_id: string;
    sender: string;
    thread_id: string;
    highlight: number;
  };
  presence: {
    user_id: string;
    state: string;
    status_msg: string | null;
    last_active_ts: number;
    currently_active: number;
    stream_pos: number;
  };
  typing: { room_id: string; user_id: string; expires_ts: number; stream_pos: number };
  device_inbox: {
    id: Generated<number>;
    user_id: string;
    device_id: string;
    stream_pos: number;
    sender: string;
    type: string;
    content: string;
  };
  device_list_changes: { user_id: string; stream_pos: number };
  /** Stored content, one row per distinct SHA-256; refcount counts media rows and thumbnails using it. */
  media_blobs: { sha256: string; size: number; refcount: number; created_ts: number };
  /** One row per mxc:// id; sha256 stays null until the content of a created id arrives. */
  media: {
    media_id: string;
    user_id: string;
    sha256: string | null;
    size: number | null;
    content_type: string | null;
    filename: string | null;
    created_ts: number;
    uploaded_ts: number | null;
    unused_expires_ts: number | null;
  };
  /** Thumbnails belong to the content they were made from, so identical uploads share them. */
  media_thumbnails: {
    source_sha256: string;
    width: number;
    height: number;
    method: string;
    sha256: string;
    content_type: string;
    size: number;
    created_ts: number;
  };
  /** Append-only, hash-chained record of privileged actions; never message content. */
  audit_log: {
    seq: number;
    ts: number;
    actor: string;
    actor_role: string;
    action: string;
    target: string | null;
    details: string;
    prev_hash: string;
    hash: string;
  };
  /** One row ('org') holding the organisation policy as JSON. */
  governance_policy: { name: string; json: string; updated_ts: number };
  /** Device ids that may never log in again (lost-device block). */
  blocked_devices: { user_id: string; device_id: string; blocked_ts: number; blocked_by: string };
  /** One-time enrollment codes, stored as SHA-256 digests. */
  enrollment_codes: { code_hash: string; user_id: string; issued_by: string; created_ts: number; expires_ts: number; used_ts: number | null };
  /** A device's identity keys as uploaded; `ed25519` is copied out to check signatures by the device. */
  e2e_device_keys: { user_id: string; device_id: string; key_json: string; ed25519: string };
  /** Unclaimed one-time keys; `id` orders them by upload. */
  e2e_one_time_keys: { id: Generated<number>; user_id: string; device_id: string; algorithm: string; key_id: string; key_json: string };
  /** At most one fallback key per device and algorithm; `used` is 1 once it was handed out. */
  e2e_fallback_keys: { user_id: string; device_id: string; algorithm: string; key_id: string; key_json: string; used: number };
  /** Cross-signing keys; key_type is master, self_signing or user_signing. */
  e2e_cross_signing_keys: { user_id: string; key_type: string; public_key: string; key_json: string };
  /** Signatures added through /keys/signatures/upload; target_key_id is a device id or a master public key. */
  e2e_signatures: { target_user_id: string; target_key_id: string; signer_user_id: string; signer_key_id: string; signature: string };
  /** The signer's devices must re-query target_user_id's keys (a signature only the signer sees). */
  e2e_signature_notices: { user_id: string; target_user_id: string; stream_pos: number };
  e2e_room_keys_versions: { user_id: string; version: number; algorithm: string; auth_data: string; etag: number; deleted: number };
  e2e_room_keys: {
    user_id: string;
    version: number;
    room_id: string;
    session_id: string;
    first_message_index: number;
    forwarded_count: number;
    is_verified: number;
    session_data: string;
  };
  /** Channels (public rooms): who owns each, whether its join rule is public, and its closure. */
  channels: {
    room_id: string;
    owner: string;
    created_ts: number;
    join_public: number;
    closed_ts: number | null;
    closed_by: string | null;
    close_reason: string | null;
  };
  /** How far retention has worked through the stream ('events': every expired event up to here is handled). */
  retention_progress: { name: string; position: number };
  /** Expired events kept without content because something still points at them (receipts, the room's newest event). */
  retention_stubs: { event_id: string; room_id: string };
  /** Notifications waiting for delivery to one pusher; `claim` is set while a process delivers it. */
  push_queue: {
    id: Generated<number>;
    user_id: string;
    app_id: string;
    pushkey: string;
    room_id: string;
    event_id: string;
    stream_ordering: number;
    highlight: number;
    attempts: number;
    next_attempt_ts: number;
    created_ts: number;
    claim: string | null;
  };
  /** A user's duty hours (JSON of DutySettings); `off_duty` is the state last applied to presence. */
  duty_settings: { user_id: string; mode: string; json: string; off_duty: number; updated_ts: number };
  /** Published terms-of-use versions; the highest seq is current. */
  terms_versions: { seq: number; version: string; text: string; published_ts: number; published_by: string };
  /** Who accepted which terms version, when, from which device, and how (consent_page, client_api). */
  terms_acceptances: { user_id: string; version: string; accepted_ts: number; device_id: string | null; via: string };
  /** One-time tokens of the consent page, stored as SHA-256 digests. */
  consent_tokens: { token_hash: string; user_id: string; device_id: string; created_ts: number; expires_ts: number; used_ts: number | null };
}

export type Dialect = "sqlite" | "postgres";
