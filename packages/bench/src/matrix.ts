/**
 * The few Matrix client-server calls the scenarios need, in plain HTTP, so the same workload runs
 * against any homeserver. No SDK: an SDK's own processing would be measured along with the server.
 */
import { LeanConnection } from "./lean-client.js";

export interface Session {
  baseUrl: string;
  userId: string;
  accessToken: string;
  deviceId: string;
  /**
   * The session's own kept-alive connection, if it has one (see withLeanConnection): its calls
   * then go over it, one at a time, instead of through fetch.
   */
  lean?: LeanConnection;
}

export class MatrixHttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
    what: string,
  ) {
    super(`${what}: HTTP ${status} ${body.slice(0, 200)}`);
  }
}

type Json = Record<string, unknown>;

export async function call<T = Json>(baseUrl: string, method: string, path: string, opts: { token?: string; body?: unknown; signal?: AbortSignal } = {}): Promise<T> {
  const headers: Record<string, string> = {};
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${baseUrl}${path}`, {
    method,
    headers,
    ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  return answer<T>(res.status, await res.text(), method, path);
}

/** A call's parsed JSON answer; a status outside 2xx is a MatrixHttpError. */
function answer<T>(status: number, text: string, method: string, path: string): T {
  if (status < 200 || status >= 300) throw new MatrixHttpError(status, text, `${method} ${path.split("?")[0]}`);
  return (text ? JSON.parse(text) : {}) as T;
}

/**
 * The session with a connection of its own over plain http (https keeps fetch), for a loop that
 * calls back to back and one call at a time: fetch cost the bench more CPU per message than the
 * server spent on it, on the two cores they share (see lean-client.ts). Close it with
 * `s.lean?.close()`.
 */
export function withLeanConnection(s: Session): Session {
  const url = new URL(s.baseUrl);
  if (url.protocol !== "http:") return s;
  return { ...s, lean: new LeanConnection(url.hostname.replace(/^\[(.*)\]$/, "$1"), Number(url.port || 80)) };
}

/** A call as the session's user, over its own connection if it has one. */
async function callAs<T = Json>(s: Session, method: string, path: string, body: unknown): Promise<T> {
  if (!s.lean) return call<T>(s.baseUrl, method, path, { token: s.accessToken, body });
  const res = await s.lean.request(method, path, `authorization: Bearer ${s.accessToken}\r\n`, JSON.stringify(body));
  return answer<T>(res.status, res.body.toString("utf8"), method, path);
}

const enc = encodeURIComponent;

export async function login(baseUrl: string, user: string, password: string): Promise<Session> {
  const r = await call<{ user_id: string; access_token: string; device_id: string }>(baseUrl, "POST", "/_matrix/client/v3/login", {
    body: { type: "m.login.password", identifier: { type: "m.id.user", user }, password, initial_device_display_name: "revier-bench" },
  });
  return { baseUrl, userId: r.user_id, accessToken: r.access_token, deviceId: r.device_id };
}

export async function logout(s: Session): Promise<void> {
  await call(s.baseUrl, "POST", "/_matrix/client/v3/logout", { token: s.accessToken, body: {} });
}

export async function createRoom(s: Session, body: Json = {}): Promise<string> {
  const r = await call<{ room_id: string }>(s.baseUrl, "POST", "/_matrix/client/v3/createRoom", { token: s.accessToken, body });
  return r.room_id;
}

export async function join(s: Session, roomId: string): Promise<void> {
  await call(s.baseUrl, "POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: s.accessToken, body: {} });
}

export async function sendMessage(s: Session, roomId: string, txnId: string, content: Json): Promise<string> {
  const r = await callAs<{ event_id: string }>(s, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${enc(txnId)}`, content);
  return r.event_id;
}

/** A typing notice, as clients send while the user types (`typing` false when they stop). */
export async function setTyping(s: Session, roomId: string, typing: boolean): Promise<void> {
  await callAs(s, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/typing/${enc(s.userId)}`, typing ? { typing, timeout: 30_000 } : { typing });
}

/** A public read receipt for `eventId`. */
export async function sendReceipt(s: Session, roomId: string, eventId: string): Promise<void> {
  await callAs(s, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/receipt/m.read/${enc(eventId)}`, {});
}

export interface SyncResponse {
  next_batch: string;
  rooms?: { join?: Record<string, { timeline?: { events?: { event_id: string; type: string; content?: Json }[] } }> };
}

/**
 * A filter that keeps sync responses to what the scenarios look at. The timeline limit is high so
 * a member that falls behind gets every message rather than a limited (gapped) timeline.
 */
export const LEAN_FILTER = JSON.stringify({
  presence: { not_types: ["*"] },
  account_data: { not_types: ["*"] },
  room: { timeline: { limit: 100 }, state: { lazy_load_members: true }, ephemeral: { not_types: ["*"] }, account_data: { not_types: ["*"] } },
});

/** LEAN_FILTER, but with read receipts, as a client that shows who has read a message asks. */
export const LEAN_FILTER_WITH_RECEIPTS = (() => {
  const lean = JSON.parse(LEAN_FILTER) as { room: Record<string, unknown> };
  return JSON.stringify({ ...lean, room: { ...lean.room, ephemeral: { types: ["m.receipt"] } } });
})();

/** Stores a filter for the user (POST /user/{userId}/filter), as clients do once; returns its id. */
export async function uploadFilter(s: Session, filter: string): Promise<string> {
  const r = await call<{ filter_id: string }>(s.baseUrl, "POST", `/_matrix/client/v3/user/${enc(s.userId)}/filter`, { token: s.accessToken, body: JSON.parse(filter) });
  return r.filter_id;
}

export async function sync(s: Session, params: { since?: string; timeout?: number; filter?: string }, signal?: AbortSignal): Promise<SyncResponse> {
  const q = new URLSearchParams({ timeout: String(params.timeout ?? 0), filter: params.filter ?? LEAN_FILTER });
  if (params.since) q.set("since", params.since);
  return call<SyncResponse>(s.baseUrl, "GET", `/_matrix/client/v3/sync?${q}`, { token: s.accessToken, ...(signal ? { signal } : {}) });
}
