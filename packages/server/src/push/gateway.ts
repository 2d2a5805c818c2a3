/**
 * HTTP pushers: the Push Gateway API's `POST /_matrix/push/v1/notify`.
 *
 * What leaves the server is deliberately small. By default every notification is in the
 * `event_id_only` format — event id, room id, unread count, priority and the device — whatever
 * format the pusher asked for, because push gateways and the platforms behind them (FCM, APNs)
 * are third parties. Only when the organisation sets `push.include_content` does a pusher that
 * asked for the full format get the event's type, sender, display names and content (which, in
 * an encrypted room, is still ciphertext).
 */

/** What became of one delivery attempt. */
export type DeliveryOutcome =
  | { result: "delivered" }
  /** The gateway or push service says this pushkey is dead: remove the pusher. */
  | { result: "rejected"; reason: string }
  /** Worth trying again later (network error, 429, 5xx). */
  | { result: "retry"; reason: string; retryAfterMs?: number }
  /** This notification cannot be delivered (a 4xx that will not change): drop it, keep the pusher. */
  | { result: "failed"; reason: string };

/** Event details for the full format; present only when the organisation allows content in pushes. */
export interface EventDetails {
  type: string;
  sender: string;
  sender_display_name?: string;
  room_name?: string;
  content: Record<string, unknown>;
  user_is_target?: boolean;
}

export interface PushNotification {
  eventId: string;
  roomId: string;
  /** Unread notifications of the user across their rooms. */
  unread: number;
  highlight: boolean;
  details?: EventDetails;
}

export interface StoredPusher {
  app_id: string;
  pushkey: string;
  /** Milliseconds, as stored. */
  created_ts: number;
  data: Record<string, unknown>;
}

/** The `notification` object without devices: shared by HTTP pushers and Web Push payloads. */
export function notificationFields(n: PushNotification): Record<string, unknown> {
  const out: Record<string, unknown> = { event_id: n.eventId, room_id: n.roomId };
  if (n.details) Object.assign(out, n.details);
  // Spec: counts whose value is zero are omitted.
  out.counts = n.unread > 0 ? { unread: n.unread } : {};
  // Every notification that passed the push rules is treated as urgent; in a police messenger a
  // late message is worse than a little battery.
  out.prio = "high";
  return out;
}

/** The body of `POST /_matrix/push/v1/notify` for one pusher. */
export function notifyBody(pusher: StoredPusher, n: PushNotification): { notification: Record<string, unknown> } {
  const { url: _url, ...data } = pusher.data;
  const device: Record<string, unknown> = { app_id: pusher.app_id, pushkey: pusher.pushkey, pushkey_ts: Math.floor(pusher.created_ts / 1000), data };
  if (n.highlight) device.tweaks = { highlight: true };
  return { notification: { ...notificationFields(n), devices: [device] } };
}

/** Whether a pusher asked for more than event ids (`format` absent or anything but event_id_only). */
export function wantsFullFormat(data: Record<string, unknown>): boolean {
  return data.format !== "event_id_only";
}

const MAX_RESPONSE_BYTES = 64 * 1024;

/** Reads at most `limit` bytes of a response body (a gateway must not make us buffer gigabytes). */
export async function readLimited(res: Response, limit = MAX_RESPONSE_BYTES): Promise<string> {
  if (!res.body) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = res.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > limit) break;
      chunks.push(value);
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** Retry-After as milliseconds (seconds or an HTTP date), if the response carries one. */
export function retryAfterMs(res: Response, now = Date.now()): number | undefined {
  const v = res.headers.get("retry-after");
  if (!v) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** Classifies a transport error or HTTP status that is not a success. */
export function classifyFailure(res: Response): DeliveryOutcome {
  if (res.status === 429 || res.status >= 500) {
    const after = retryAfterMs(res);
    return { result: "retry", reason: `HTTP ${res.status}`, ...(after !== undefined ? { retryAfterMs: after } : {}) };
  }
  return { result: "failed", reason: `HTTP ${res.status}` };
}

/** Posts one notification to a push gateway and reads its verdict. Redirects are not followed. */
export async function postToGateway(url: string, body: unknown, pushkey: string, signal: AbortSignal): Promise<DeliveryOutcome> {
  let res: Response;
  try {
    res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), redirect: "manual", signal });
  } catch (err) {
    return { result: "retry", reason: (err as Error).name === "TimeoutError" ? "timed out" : `network error: ${(err as Error).message}` };
  }
  const text = await readLimited(res).catch(() => "");
  if (res.status < 200 || res.status > 299) return classifyFailure(res);
  let rejected: unknown = [];
  try {
    rejected = (JSON.parse(text) as { rejected?: unknown }).rejected ?? [];
  } catch {
    // A gateway that accepted the request but answered something odd still delivered it.
  }
  if (Array.isArray(rejected) && rejected.includes(pushkey)) return { result: "rejected", reason: "the gateway rejected the pushkey" };
  return { result: "delivered" };
}
