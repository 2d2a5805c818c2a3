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
}

export type Dialect = "sqlite" | "postgres";
