import type { AuthHook } from "../services.js";
import type { Devices } from "./devices.js";

/**
 * Records when and from where each device was last used, for the user's own device list and the
 * admin API. Writing on every request would put a database write on every /sync, so each device is
 * written at most once per interval per process (per access token: a device has one at a time).
 */
export function lastSeenHook(devices: Devices, intervalMs = 5 * 60_000, now: () => number = Date.now): AuthHook {
  const written = new Map<string, number>();
  return async (session, { req }) => {
    // The token's digest, not a key built from user and device: the digest is a string the session
    // cache keeps, hashed once; a key built per request was a new string to hash every time (the
    // largest self time among the auth hooks in the 5,000-member fanout profile).
    const key = session.tokenHash;
    const t = now();
    const last = written.get(key);
    if (last !== undefined && t - last < intervalMs) return;
    if (written.size >= 200_000) written.clear();
    written.set(key, t);
    await devices.touch(session.userId, session.deviceId, req.ip);
  };
}
