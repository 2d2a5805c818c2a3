import type { Pdu } from "./event-crypto.js";

export interface ClientEvent {
  event_id: string;
  room_id?: string;
  sender: string;
  type: string;
  state_key?: string;
  content: Record<string, unknown>;
  origin_server_ts: number;
  redacts?: string;
  unsigned?: Record<string, unknown>;
}

export interface EventRow {
  event_id: string;
  json: string;
  stream_ordering: number;
  redacted_by: string | null;
  sender: string;
  txn_device: string | null;
  txn_id: string | null;
}

/** Columns to select for toClientEvent. */
export const EVENT_COLUMNS = ["events.event_id", "events.json", "events.stream_ordering", "events.redacted_by", "events.sender", "events.txn_device", "events.txn_id"] as const;

export interface Viewer {
  userId: string;
  deviceId: string;
}

/** A stored event's JSON as parsed. */
export type StoredPdu = Pdu & { unsigned?: Record<string, unknown>; redacts?: string };

/**
 * The stored JSON parsed once, frozen all the way down, for formatting the same row for many
 * viewers (toClientEvent's `parsed`): their events share its content, so nothing may change it.
 */
export function parseFrozen(json: string): StoredPdu {
  return deepFreeze(JSON.parse(json)) as StoredPdu;
}

function deepFreeze(value: unknown): unknown {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/**
 * Formats a stored PDU for clients (spec "ClientEvent"); the sending device also sees its
 * transaction id. `parsed`: the row's JSON already parsed (parseFrozen), shared by the callers.
 */
export function toClientEvent(row: EventRow, opts: { now?: number; withRoomId?: boolean; viewer?: Viewer } = {}, parsed?: StoredPdu): ClientEvent {
  const pdu = parsed ?? (JSON.parse(row.json) as StoredPdu);
  const now = opts.now ?? Date.now();
  const unsigned: Record<string, unknown> = { ...(pdu.unsigned ?? {}), age: Math.max(0, now - pdu.origin_server_ts) };
  if (row.redacted_by) unsigned.redacted_because = { event_id: row.redacted_by, type: "m.room.redaction", content: {}, sender: pdu.sender, origin_server_ts: pdu.origin_server_ts };
  if (row.txn_id && opts.viewer && opts.viewer.userId === row.sender && opts.viewer.deviceId === row.txn_device) unsigned.transaction_id = row.txn_id;
  const ev: ClientEvent = {
    event_id: row.event_id,
    sender: pdu.sender,
    type: pdu.type,
    content: pdu.content,
    origin_server_ts: pdu.origin_server_ts,
    unsigned,
  };
  if (opts.withRoomId !== false) ev.room_id = pdu.room_id;
  if (pdu.state_key !== undefined) ev.state_key = pdu.state_key;
  if (pdu.type === "m.room.redaction") {
    const target = pdu.redacts ?? (typeof pdu.content.redacts === "string" ? pdu.content.redacts : undefined);
    if (target) ev.redacts = target;
  }
  return ev;
}
