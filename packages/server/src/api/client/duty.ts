import { Type } from "@sinclair/typebox";
import { route } from "../../http/route.js";

/**
 * Duty hours (`/_revier/client/v1/duty`): the caller's own settings. The body is validated in
 * governance/duty.ts so every error names the field (a bad time zone, an ill-formed or
 * overlapping slot) in words an officer's app can show.
 *
 * ```json
 * { "mode": "schedule", "time_zone": "Europe/Berlin", "emergency_notifications": true,
 *   "schedule": [{ "day": "mon", "start": "07:00", "end": "15:30" }, { "day": "fri", "start": "22:00", "end": "06:00" }] }
 * ```
 * `mode` is `on`, `off` or `schedule`; slots are local wall-clock times, an end at or before the
 * start runs into the next day. GET adds `on_duty`, the state right now.
 */
export const dutyRoutes = [
  route({ method: "GET", url: "/_revier/client/v1/duty" }, async ({ user }, s) => s.duty.get(user.userId)),
  route({ method: "PUT", url: "/_revier/client/v1/duty", body: Type.Unknown() }, async ({ user, body }, s) => s.duty.set(user.userId, body)),
];
