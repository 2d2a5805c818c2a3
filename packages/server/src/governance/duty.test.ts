import { test } from "node:test";
import assert from "node:assert/strict";
import { MatrixError } from "@revier/protocol";
import { canonicalTimeZone, isOnDuty, localMinuteOfWeek, parseDutySettings, type DutySettings } from "./duty.js";

function refused(input: unknown, errcode: string, message: RegExp): void {
  assert.throws(
    () => parseDutySettings(input),
    (err: unknown) => err instanceof MatrixError && err.toJSON().errcode === errcode && message.test(err.message),
  );
}

const berlin = (schedule: DutySettings["schedule"]): DutySettings => ({ mode: "schedule", time_zone: "Europe/Berlin", schedule, emergency_notifications: false });
const at = (iso: string) => Date.parse(iso);

test("a valid schedule is accepted with defaults filled and the zone canonical", () => {
  const s = parseDutySettings({ mode: "schedule", time_zone: "utc", schedule: [{ day: "mon", start: "07:00", end: "15:30" }] });
  assert.deepEqual(s, { mode: "schedule", time_zone: "UTC", schedule: [{ day: "mon", start: "07:00", end: "15:30" }], emergency_notifications: false });
  assert.deepEqual(parseDutySettings({ mode: "off", emergency_notifications: true }), { mode: "off", schedule: [], emergency_notifications: true });
  // The user's spelling is kept (ICU would turn this one into an older alias); only case is fixed.
  assert.equal(canonicalTimeZone("America/Argentina/Buenos_Aires"), "America/Argentina/Buenos_Aires");
  assert.equal(canonicalTimeZone("europe/berlin"), "Europe/Berlin");
});

test("bad time zones are refused with a message naming them", () => {
  refused({ mode: "schedule", time_zone: "Europe/Berln", schedule: [] }, "M_INVALID_PARAM", /Unknown time zone 'Europe\/Berln'.*Europe\/Berlin/);
  refused({ mode: "schedule", time_zone: "+01:00", schedule: [] }, "M_INVALID_PARAM", /not an IANA time zone name/);
  refused({ mode: "schedule", time_zone: "", schedule: [] }, "M_BAD_JSON", /time_zone must be/);
  refused({ mode: "schedule", schedule: [] }, "M_BAD_JSON", /time_zone is required/);
});

test("ill-formed bodies and slots are refused, naming the field", () => {
  refused([], "M_BAD_JSON", /JSON object/);
  refused({ mode: "sometimes" }, "M_BAD_JSON", /mode must be one of on, off, schedule/);
  refused({ mode: "on", colour: "blue" }, "M_BAD_JSON", /Unknown key 'colour'/);
  refused({ mode: "on", emergency_notifications: "yes" }, "M_BAD_JSON", /emergency_notifications/);
  refused({ mode: "on", schedule: {} }, "M_BAD_JSON", /schedule must be a list/);
  refused({ mode: "on", schedule: ["mon"] }, "M_BAD_JSON", /schedule\[0\] must be an object/);
  refused({ mode: "on", schedule: [{ day: "monday", start: "07:00", end: "08:00" }] }, "M_BAD_JSON", /schedule\[0\]\.day must be one of mon, tue/);
  refused({ mode: "on", schedule: [{ day: "mon", start: "7:00", end: "08:00" }] }, "M_BAD_JSON", /schedule\[0\]\.start must be a time HH:MM/);
  refused({ mode: "on", schedule: [{ day: "mon", start: "24:00", end: "08:00" }] }, "M_BAD_JSON", /schedule\[0\]\.start/);
  refused({ mode: "on", schedule: [{ day: "mon", start: "07:00", end: "24:30" }] }, "M_BAD_JSON", /schedule\[0\]\.end must be a time HH:MM from 00:00 to 24:00/);
  refused({ mode: "on", schedule: [{ day: "mon", start: "07:00", end: "08:00", note: "x" }] }, "M_BAD_JSON", /Unknown key 'schedule\[0\]\.note'/);
  refused({ mode: "on", schedule: [{ day: "mon", start: "08:00", end: "08:00" }] }, "M_INVALID_PARAM", /schedule\[0\] is empty or ambiguous/);
  refused({ mode: "on", schedule: [{ day: "mon", start: "00:00", end: "24:00" }, { day: "tue", start: "00:00", end: "00:00" }] }, "M_INVALID_PARAM", /schedule\[1\]/);
  refused({ mode: "on", schedule: Array.from({ length: 101 }, () => ({ day: "mon", start: "07:00", end: "08:00" })) }, "M_BAD_JSON", /at most 100/);
});

test("overlapping slots are refused, also across midnight and across the week's end", () => {
  refused(
    { mode: "schedule", time_zone: "UTC", schedule: [{ day: "mon", start: "07:00", end: "15:00" }, { day: "mon", start: "14:00", end: "22:00" }] },
    "M_INVALID_PARAM",
    /schedule\[0\] \(mon 07:00–15:00\) overlaps schedule\[1\] \(mon 14:00–22:00\)/,
  );
  // Friday night shift into Saturday morning.
  refused({ mode: "schedule", time_zone: "UTC", schedule: [{ day: "fri", start: "22:00", end: "06:00" }, { day: "sat", start: "05:00", end: "07:00" }] }, "M_INVALID_PARAM", /overlaps/);
  // Sunday night into Monday.
  refused({ mode: "schedule", time_zone: "UTC", schedule: [{ day: "mon", start: "00:30", end: "02:00" }, { day: "sun", start: "23:00", end: "01:00" }] }, "M_INVALID_PARAM", /overlaps/);
  // A slot inside another.
  refused({ mode: "schedule", time_zone: "UTC", schedule: [{ day: "tue", start: "00:00", end: "24:00" }, { day: "tue", start: "10:00", end: "11:00" }] }, "M_INVALID_PARAM", /overlaps/);
  // Touching is not overlapping.
  const ok = parseDutySettings({
    mode: "schedule",
    time_zone: "UTC",
    schedule: [
      { day: "mon", start: "06:00", end: "14:00" },
      { day: "mon", start: "14:00", end: "22:00" },
      { day: "sun", start: "22:00", end: "06:00" },
    ],
  });
  assert.equal(ok.schedule.length, 3);
});

test("the schedule is read in the user's time zone across the spring DST change (Europe/Berlin)", () => {
  const s = berlin([{ day: "sun", start: "07:00", end: "15:00" }]);
  // 30 March 2025: clocks went from 02:00 CET to 03:00 CEST. 05:30 UTC is 07:30 local (UTC+2).
  assert.equal(isOnDuty(s, at("2025-03-30T05:30:00Z")), true);
  // 04:30 UTC is 06:30 local: a fixed UTC+1 would wrongly say 05:30 → still off either way, but
  // 13:30 UTC is 15:30 local (off), where a fixed UTC+1 would say 14:30 (on).
  assert.equal(isOnDuty(s, at("2025-03-30T04:30:00Z")), false);
  assert.equal(isOnDuty(s, at("2025-03-30T13:30:00Z")), false);
  assert.equal(isOnDuty(s, at("2025-03-30T12:59:00Z")), true);
  // One week earlier (CET, UTC+1) the same UTC instant 05:30 is 06:30 local: off duty.
  assert.equal(isOnDuty(s, at("2025-03-23T05:30:00Z")), false);
  assert.equal(isOnDuty(s, at("2025-03-23T06:30:00Z")), true);
});

test("the schedule follows the autumn DST change and overnight slots", () => {
  const s = berlin([{ day: "sun", start: "07:00", end: "15:00" }]);
  // 26 October 2025: back to CET (UTC+1). 05:30 UTC is 06:30 local.
  assert.equal(isOnDuty(s, at("2025-10-26T05:30:00Z")), false);
  assert.equal(isOnDuty(s, at("2025-10-26T06:30:00Z")), true);
  const night = berlin([{ day: "fri", start: "22:00", end: "06:00" }]);
  assert.equal(isOnDuty(night, at("2025-06-06T19:59:00Z")), false); // Fri 21:59 CEST
  assert.equal(isOnDuty(night, at("2025-06-06T20:00:00Z")), true); // Fri 22:00
  assert.equal(isOnDuty(night, at("2025-06-07T03:59:00Z")), true); // Sat 05:59
  assert.equal(isOnDuty(night, at("2025-06-07T04:00:00Z")), false); // Sat 06:00
  const weekEnd = berlin([{ day: "sun", start: "23:00", end: "01:00" }]);
  assert.equal(isOnDuty(weekEnd, at("2025-06-08T22:30:00Z")), true); // Mon 00:30 CEST
});

test("on and off ignore the schedule; local time at midnight is hour 0", () => {
  const s: DutySettings = { mode: "on", time_zone: "UTC", schedule: [{ day: "mon", start: "07:00", end: "08:00" }], emergency_notifications: false };
  assert.equal(isOnDuty(s, at("2025-06-08T12:00:00Z")), true);
  assert.equal(isOnDuty({ ...s, mode: "off" }, at("2025-06-09T07:30:00Z")), false);
  assert.equal(isOnDuty({ ...s, mode: "schedule" }, at("2025-06-09T07:30:00Z")), true);
  // Monday 00:00 in New York (EDT, UTC-4) is minute 0 of the week.
  assert.equal(localMinuteOfWeek(at("2025-06-09T04:00:00Z"), "America/New_York"), 0);
  assert.equal(localMinuteOfWeek(at("2025-06-09T03:59:00Z"), "America/New_York"), 7 * 1440 - 1);
});
