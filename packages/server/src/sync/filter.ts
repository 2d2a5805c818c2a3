/**
 * Event filters (spec: Client-Server API, "Filtering"; schemas Filter, RoomFilter, EventFilter,
 * RoomEventFilter): validation of uploaded or inline filters and the predicates /sync, /messages
 * and /context apply with them.
 */

import { MatrixError } from "@revier/protocol";
import { splitDottedPath } from "../push/evaluate.js";

export interface EventFilter {
  limit?: number;
  types?: string[];
  not_types?: string[];
  senders?: string[];
  not_senders?: string[];
}

export interface RoomEventFilter extends EventFilter {
  rooms?: string[];
  not_rooms?: string[];
  contains_url?: boolean;
  lazy_load_members?: boolean;
  include_redundant_members?: boolean;
  unread_thread_notifications?: boolean;
}

export interface RoomFilter {
  rooms?: string[];
  not_rooms?: string[];
  include_leave?: boolean;
  ephemeral?: RoomEventFilter;
  state?: RoomEventFilter;
  timeline?: RoomEventFilter;
  account_data?: RoomEventFilter;
}

export interface Filter {
  event_fields?: string[];
  event_format?: "client" | "federation";
  presence?: EventFilter;
  account_data?: EventFilter;
  room?: RoomFilter;
}

/** Timeline events per room when the filter sets no limit. */
export const DEFAULT_TIMELINE_LIMIT = 10;

/** Filters are checked against every event a sync returns, so their lists are bounded. */
export const MAX_FILTER_LIST_LENGTH = 1000;
export const MAX_FILTER_STRING_LENGTH = 1000;

export type FilterErrorCode = "M_BAD_JSON" | "M_INVALID_PARAM";

/**
 * An invalid filter: `M_BAD_JSON` when a field has the wrong JSON type, `M_INVALID_PARAM` when
 * it has the right type but an unacceptable value. The message starts with the field's path.
 */
export class FilterError extends MatrixError {
  constructor(
    errcode: FilterErrorCode,
    /** Dotted path of the offending field, e.g. `room.timeline.limit`; empty for the whole filter. */
    readonly field: string,
    message: string,
  ) {
    super(errcode, field ? `${field} ${message}` : message);
    this.name = "FilterError";
  }
}

/**
 * Validates the body of `POST /user/{userId}/filter` (or an inline `filter=` parameter) and
 * returns a copy holding only the fields the spec defines. Unknown keys are ignored, as is `null`
 * in place of an optional field.
 */
export function parseFilter(body: unknown): Filter {
  if (!isObject(body)) throw new FilterError("M_BAD_JSON", "", "The filter must be a JSON object");
  const out: Filter = {};
  const fields = stringList(body, "event_fields", "");
  if (fields) out.event_fields = fields;
  const format = present(body, "event_format");
  if (format !== undefined) {
    if (typeof format !== "string") throw new FilterError("M_BAD_JSON", "event_format", "must be a string");
    if (format !== "client" && format !== "federation") throw new FilterError("M_INVALID_PARAM", "event_format", "must be 'client' or 'federation'");
    out.event_format = format;
  }
  const presence = eventFilter(body, "presence", "", false);
  if (presence) out.presence = presence;
  const accountData = eventFilter(body, "account_data", "", false);
  if (accountData) out.account_data = accountData;
  const room = present(body, "room");
  if (room !== undefined) {
    if (!isObject(room)) throw new FilterError("M_BAD_JSON", "room", "must be an object");
    const rf: RoomFilter = {};
    const rooms = stringList(room, "rooms", "room.", "!");
    if (rooms) rf.rooms = rooms;
    const notRooms = stringList(room, "not_rooms", "room.", "!");
    if (notRooms) rf.not_rooms = notRooms;
    const includeLeave = bool(room, "include_leave", "room.");
    if (includeLeave !== undefined) rf.include_leave = includeLeave;
    for (const part of ["ephemeral", "state", "timeline", "account_data"] as const) {
      const f = eventFilter(room, part, "room.", true);
      if (f) rf[part] = f;
    }
    out.room = rf;
  }
  return out;
}

function eventFilter(parent: Record<string, unknown>, key: string, prefix: string, room: boolean): RoomEventFilter | undefined {
  const raw = present(parent, key);
  if (raw === undefined) return undefined;
  const path = prefix + key;
  if (!isObject(raw)) throw new FilterError("M_BAD_JSON", path, "must be an object");
  const p = `${path}.`;
  const out: RoomEventFilter = {};
  const limit = present(raw, "limit");
  if (limit !== undefined) {
    if (typeof limit !== "number" || !Number.isInteger(limit)) throw new FilterError("M_BAD_JSON", `${p}limit`, "must be an integer");
    if (limit <= 0 || !Number.isSafeInteger(limit)) throw new FilterError("M_INVALID_PARAM", `${p}limit`, "must be a positive integer");
    out.limit = limit;
  }
  const types = stringList(raw, "types", p);
  if (types) out.types = types;
  const notTypes = stringList(raw, "not_types", p);
  if (notTypes) out.not_types = notTypes;
  const senders = stringList(raw, "senders", p, "@");
  if (senders) out.senders = senders;
  const notSenders = stringList(raw, "not_senders", p, "@");
  if (notSenders) out.not_senders = notSenders;
  if (room) {
    const rooms = stringList(raw, "rooms", p, "!");
    if (rooms) out.rooms = rooms;
    const notRooms = stringList(raw, "not_rooms", p, "!");
    if (notRooms) out.not_rooms = notRooms;
    for (const flag of ["contains_url", "lazy_load_members", "include_redundant_members", "unread_thread_notifications"] as const) {
      const v = bool(raw, flag, p);
      if (v !== undefined) out[flag] = v;
    }
  }
  return out;
}

function stringList(parent: Record<string, unknown>, key: string, prefix: string, sigil?: string): string[] | undefined {
  const raw = present(parent, key);
  if (raw === undefined) return undefined;
  const path = prefix + key;
  if (!Array.isArray(raw)) throw new FilterError("M_BAD_JSON", path, "must be an array of strings");
  if (raw.length > MAX_FILTER_LIST_LENGTH) throw new FilterError("M_INVALID_PARAM", path, `has more than ${MAX_FILTER_LIST_LENGTH} entries`);
  return raw.map((v, i) => {
    if (typeof v !== "string") throw new FilterError("M_BAD_JSON", `${path}[${i}]`, "must be a string");
    if (v.length > MAX_FILTER_STRING_LENGTH) throw new FilterError("M_INVALID_PARAM", `${path}[${i}]`, `is longer than ${MAX_FILTER_STRING_LENGTH} characters`);
    if (sigil !== undefined && !v.startsWith(sigil)) throw new FilterError("M_INVALID_PARAM", `${path}[${i}]`, sigil === "@" ? "must be a user id" : "must be a room id");
    return v;
  });
}

function bool(parent: Record<string, unknown>, key: string, prefix: string): boolean | undefined {
  const raw = present(parent, key);
  if (raw === undefined) return undefined;
  if (typeof raw !== "boolean") throw new FilterError("M_BAD_JSON", prefix + key, "must be a boolean");
  return raw;
}

/** An own property's value, with `null` treated like absence. */
function present(obj: Record<string, unknown>, key: string): unknown {
  if (!Object.prototype.hasOwnProperty.call(obj, key)) return undefined;
  const v = obj[key];
  return v === null ? undefined : v;
}

/**
 * Resolves the `filter` query parameter of /sync and friends: a value starting with `{` is an
 * inline filter in JSON (filter ids can never start with `{`, the spec guarantees), anything else
 * is the id of a filter the user uploaded, looked up with `loadStored`. Absent or empty means no
 * filter. An unknown id is `M_INVALID_PARAM`; malformed inline JSON is `M_BAD_JSON`.
 */
export function parseFilterParam(raw: string | undefined, loadStored: (filterId: string) => Filter | undefined): Filter | undefined {
  if (raw === undefined || raw === "") return undefined;
  if (raw.trimStart().startsWith("{")) {
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch {
      throw new FilterError("M_BAD_JSON", "filter", "is not valid JSON");
    }
    return parseFilter(json);
  }
  const stored = loadStored(raw);
  if (stored === undefined) throw new FilterError("M_INVALID_PARAM", "filter", "names no known filter");
  return stored;
}

/** Whether a room passes a room filter's `rooms` / `not_rooms` (`not_rooms` wins). */
export function roomAllowed(roomFilter: RoomFilter | undefined, roomId: string): boolean {
  if (!roomFilter) return true;
  if (roomFilter.not_rooms?.includes(roomId)) return false;
  if (roomFilter.rooms && !roomFilter.rooms.includes(roomId)) return false;
  return true;
}

export interface FilterableEvent {
  type: string;
  sender: string;
  room_id?: string | undefined;
  content?: unknown;
}

/**
 * Whether an event passes an (event or room event) filter. Every `not_*` list wins over its
 * inclusive counterpart; an absent list includes everything, an empty one nothing. Room lists are
 * only checked when the event carries a `room_id`.
 */
export function matchesEventFilter(filter: EventFilter | RoomEventFilter | undefined, event: FilterableEvent): boolean {
  if (!filter) return true;
  const f: RoomEventFilter = filter;
  if (event.room_id !== undefined) {
    if (f.not_rooms?.includes(event.room_id)) return false;
    if (f.rooms && !f.rooms.includes(event.room_id)) return false;
  }
  if (f.not_senders?.includes(event.sender)) return false;
  if (f.senders && !f.senders.includes(event.sender)) return false;
  if (f.not_types?.some((p) => typeMatches(p, event.type))) return false;
  if (f.types && !f.types.some((p) => typeMatches(p, event.type))) return false;
  if (f.contains_url !== undefined) {
    const hasUrl = isObject(event.content) && typeof event.content.url === "string";
    if (hasUrl !== f.contains_url) return false;
  }
  return true;
}

/**
 * Event type patterns: `*` matches any run of characters (anywhere in the pattern, so `m.room.*`
 * and `*.call.*` both work); nothing else is special and the comparison is case-sensitive. Greedy
 * leftmost placement of the literal pieces is exact for star-only patterns, so this is linear.
 */
export function typeMatches(pattern: string, type: string): boolean {
  if (!pattern.includes("*")) return pattern === type;
  const parts = pattern.split("*");
  const first = parts[0]!;
  const last = parts[parts.length - 1]!;
  if (first.length + last.length > type.length || !type.startsWith(first) || !type.endsWith(last)) return false;
  let pos = first.length;
  const limit = type.length - last.length;
  for (let i = 1; i < parts.length - 1; i++) {
    const piece = parts[i]!;
    if (piece === "") continue;
    const at = type.indexOf(piece, pos);
    if (at < 0 || at + piece.length > limit) return false;
    pos = at + piece.length;
  }
  return true;
}

/**
 * Applies a filter's `event_fields`: a copy of `event` holding only the listed dot-separated paths
 * (`\.` for a literal dot, `\\` for a backslash). Paths that are absent, or that run through
 * a non-object, contribute nothing. Without `event_fields` the event is returned unchanged.
 * Selected values are shared with the input, not copied.
 */
export function applyEventFields(event: object, fields: readonly string[] | undefined): Record<string, unknown> {
  if (!fields) return event as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const field of fields) {
    const parts = splitDottedPath(field);
    // Resolve the whole path first, so a path that leads nowhere leaves no empty objects behind.
    const chain: Record<string, unknown>[] = [event as Record<string, unknown>];
    let ok = true;
    for (let i = 0; i < parts.length; i++) {
      const src = chain[i]!;
      if (!Object.prototype.hasOwnProperty.call(src, parts[i]!)) {
        ok = false;
        break;
      }
      if (i === parts.length - 1) break;
      const value = src[parts[i]!];
      if (!isObject(value)) {
        ok = false;
        break;
      }
      chain.push(value);
    }
    if (!ok) continue;
    let dst = out;
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i]!;
      const value = chain[i]![part];
      if (i === parts.length - 1) {
        setOwn(dst, part, value);
        break;
      }
      const existing = Object.prototype.hasOwnProperty.call(dst, part) ? dst[part] : undefined;
      // Already copied whole by a shorter path: the deeper one adds nothing, and descending would
      // write into the caller's event.
      if (existing === value) break;
      let child: Record<string, unknown>;
      if (isObject(existing)) {
        child = existing;
      } else {
        child = {};
        setOwn(dst, part, child);
      }
      dst = child;
    }
  }
  return out;
}

/** Plain assignment of `__proto__` would replace the prototype instead of adding a key. */
function setOwn(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
