import { MatrixError } from "@revier/protocol";
import type { Db } from "../storage/database.js";
import type { Ephemeral, PinnedPresence } from "../rooms/ephemeral.js";
import type { PolicyStore } from "./policy.js";
import { chunks } from "../lib/chunks.js";

/**
 * Duty hours. Each user is on duty, off duty, or follows a weekly schedule in their own IANA time
 * zone. Off duty, push notifications stay silent (except, for users who opted in, messages in the
 * organisation's emergency rooms) and presence shows `unavailable` with the status "off duty";
 * messages simply wait for the next sync.
 */

export const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] as const;
export type Day = (typeof DAYS)[number];
export type DutyMode = "on" | "off" | "schedule";

/** One on-duty slot in local wall-clock time. An end at or before the start runs past midnight into the next day. */
export interface DutySlot {
  day: Day;
  start: string;
  end: string;
}

export interface DutySettings {
  mode: DutyMode;
  /** IANA time zone the schedule is read in; required for `schedule`. */
  time_zone?: string;
  /** Kept in every mode, so switching to on/off for a day does not lose the plan. */
  schedule: DutySlot[];
  /** Opt-in: messages in the organisation's emergency rooms still notify while off duty. */
  emergency_notifications: boolean;
}

/** The status message others see while a user is off duty. */
export const OFF_DUTY_STATUS = "off duty";
export const MAX_SLOTS = 100;

const MINUTES_PER_DAY = 1440;
const MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY;
const TIME_RE = /^([01]\d|2[0-3]):([0-5]\d)$/;
// IANA names (Europe/Berlin, America/Argentina/Buenos_Aires, UTC, Etc/GMT-1). Raw offsets such as
// "+01:00" are refused: they know nothing of daylight saving time.
const ZONE_RE = /^[A-Za-z][A-Za-z0-9_+-]*(\/[A-Za-z0-9_+-]+){0,2}$/;
const KEYS = new Set(["mode", "time_zone", "schedule", "emergency_notifications"]);
const SLOT_KEYS = new Set(["day", "start", "end"]);

export function defaultDutySettings(): DutySettings {
  return { mode: "on", schedule: [], emergency_notifications: false };
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", { timeZone, weekday: "short", hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    if (formatters.size > 1000) formatters.clear();
    formatters.set(timeZone, f);
  }
  return f;
}

/**
 * A time zone name as stored: the user's own spelling (ICU maps some current names to older
 * aliases, e.g. America/Argentina/Buenos_Aires to America/Buenos_Aires, which would surprise
 * them), with only its letter case corrected. Unknown names get an error naming them.
 */
export function canonicalTimeZone(zone: string): string {
  if (!ZONE_RE.test(zone)) throw new MatrixError("M_INVALID_PARAM", `'${zone}' is not an IANA time zone name; use a name such as Europe/Berlin`);
  try {
    const resolved = new Intl.DateTimeFormat("en-US", { timeZone: zone }).resolvedOptions().timeZone;
    return resolved.toLowerCase() === zone.toLowerCase() ? resolved : zone;
  } catch {
    throw new MatrixError("M_INVALID_PARAM", `Unknown time zone '${zone}'; use an IANA name such as Europe/Berlin`);
  }
}

/** Minutes since Monday 00:00 of the local week in `timeZone` at `ts` (wall-clock time, so DST shifts apply). */
export function localMinuteOfWeek(ts: number, timeZone: string): number {
  let weekday = "";
  let hour = 0;
  let minute = 0;
  for (const p of formatter(timeZone).formatToParts(new Date(ts))) {
    if (p.type === "weekday") weekday = p.value.toLowerCase();
    else if (p.type === "hour") hour = Number(p.value) % 24;
    else if (p.type === "minute") minute = Number(p.value);
  }
  const day = DAYS.indexOf(weekday as Day);
  if (day < 0) throw new Error(`unexpected weekday ${weekday}`);
  return day * MINUTES_PER_DAY + hour * 60 + minute;
}

function minutes(t: string): number {
  if (t === "24:00") return MINUTES_PER_DAY;
  const m = TIME_RE.exec(t)!;
  return Number(m[1]) * 60 + Number(m[2]);
}

/** A slot as a half-open interval of minutes on the circular week. */
function interval(s: DutySlot): { start: number; length: number } {
  const start = DAYS.indexOf(s.day) * MINUTES_PER_DAY + minutes(s.start);
  const end = minutes(s.end);
  const from = minutes(s.start);
  return { start, length: end > from ? end - from : end + MINUTES_PER_DAY - from };
}

function covers(iv: { start: number; length: number }, minute: number): boolean {
  return (((minute - iv.start) % MINUTES_PER_WEEK) + MINUTES_PER_WEEK) % MINUTES_PER_WEEK < iv.length;
}

function describeSlot(s: DutySlot, i: number): string {
  return `schedule[${i}] (${s.day} ${s.start}–${s.end})`;
}

/** Validates a PUT body completely; every error names the field and what is wrong with it. */
export function parseDutySettings(input: unknown): DutySettings {
  if (typeof input !== "object" || input === null || Array.isArray(input)) throw new MatrixError("M_BAD_JSON", "The duty settings must be a JSON object");
  const body = input as Record<string, unknown>;
  for (const k of Object.keys(body)) if (!KEYS.has(k)) throw new MatrixError("M_BAD_JSON", `Unknown key '${k}' (allowed: ${[...KEYS].join(", ")})`);
  const mode = body.mode;
  if (mode !== "on" && mode !== "off" && mode !== "schedule") throw new MatrixError("M_BAD_JSON", "mode must be one of on, off, schedule");
  const out: DutySettings = { mode, schedule: [], emergency_notifications: false };
  if (body.emergency_notifications !== undefined) {
    if (typeof body.emergency_notifications !== "boolean") throw new MatrixError("M_BAD_JSON", "emergency_notifications must be true or false");
    out.emergency_notifications = body.emergency_notifications;
  }
  if (body.time_zone !== undefined) {
    if (typeof body.time_zone !== "string" || body.time_zone === "") throw new MatrixError("M_BAD_JSON", "time_zone must be an IANA time zone name such as Europe/Berlin");
    out.time_zone = canonicalTimeZone(body.time_zone);
  }
  if (body.schedule !== undefined) {
    if (!Array.isArray(body.schedule)) throw new MatrixError("M_BAD_JSON", "schedule must be a list of slots {day, start, end}");
    if (body.schedule.length > MAX_SLOTS) throw new MatrixError("M_BAD_JSON", `schedule has ${body.schedule.length} slots; at most ${MAX_SLOTS} are allowed`);
    body.schedule.forEach((raw: unknown, i) => {
      const at = `schedule[${i}]`;
      if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new MatrixError("M_BAD_JSON", `${at} must be an object {day, start, end}`);
      const slot = raw as Record<string, unknown>;
      for (const k of Object.keys(slot)) if (!SLOT_KEYS.has(k)) throw new MatrixError("M_BAD_JSON", `Unknown key '${at}.${k}' (allowed: day, start, end)`);
      if (typeof slot.day !== "string" || !(DAYS as readonly string[]).includes(slot.day)) throw new MatrixError("M_BAD_JSON", `${at}.day must be one of ${DAYS.join(", ")}`);
      if (typeof slot.start !== "string" || !TIME_RE.test(slot.start)) throw new MatrixError("M_BAD_JSON", `${at}.start must be a time HH:MM from 00:00 to 23:59`);
      if (typeof slot.end !== "string" || (slot.end !== "24:00" && !TIME_RE.test(slot.end))) throw new MatrixError("M_BAD_JSON", `${at}.end must be a time HH:MM from 00:00 to 24:00`);
      if (minutes(slot.end) === minutes(slot.start)) {
        throw new MatrixError("M_INVALID_PARAM", `${at} is empty or ambiguous: it starts and ends at ${slot.start}; for a whole day use 00:00–24:00`);
      }
      out.schedule.push({ day: slot.day as Day, start: slot.start, end: slot.end });
    });
    const ivs = out.schedule.map(interval);
    for (let i = 0; i < ivs.length; i++) {
      for (let j = i + 1; j < ivs.length; j++) {
        // Two arcs of a circle overlap exactly when one of them contains the other's start.
        if (covers(ivs[i]!, ivs[j]!.start) || covers(ivs[j]!, ivs[i]!.start)) {
          throw new MatrixError("M_INVALID_PARAM", `${describeSlot(out.schedule[i]!, i)} overlaps ${describeSlot(out.schedule[j]!, j)}`);
        }
      }
    }
  }
  if (mode === "schedule" && out.time_zone === undefined) throw new MatrixError("M_BAD_JSON", "time_zone is required with mode 'schedule' (an IANA name such as Europe/Berlin)");
  return out;
}

/** Whether the settings put the user on duty at `ts`. */
export function isOnDuty(settings: DutySettings, ts: number): boolean {
  if (settings.mode === "on") return true;
  if (settings.mode === "off") return false;
  const minute = localMinuteOfWeek(ts, settings.time_zone ?? "UTC");
  return settings.schedule.some((s) => covers(interval(s), minute));
}

export type DutyView = DutySettings & { on_duty: boolean };

/** Decides for notifications of many users at once: true means "do not push". */
export type Silencer = (userId: string, roomId: string) => boolean;

// Presence asks on every /sync and push on every notification, so settings are cached; longer
// than a long-poll, or most syncs would miss. The process that takes a PUT updates its copy at
// once; other processes (several behind a load balancer) follow within this time.
const CACHE_MS = 60_000;
const CACHE_LIMIT = 50_000;

const OFF_DUTY_PRESENCE: PinnedPresence = Object.freeze({ state: "unavailable", statusMsg: OFF_DUTY_STATUS });

/** Duty settings per user, the presence they imply, and the push silencer. */
export class DutyService {
  /** The clock duty hours are evaluated against; tests set it to a fixed instant. */
  clock: () => number = Date.now;
  private readonly cache = new Map<string, { settings: DutySettings | null; at: number }>();

  constructor(
    private readonly db: Db,
    private readonly ephemeral: Ephemeral,
    private readonly policy: PolicyStore,
  ) {}

  /** The user's settings as cached while fresh (null: none stored); undefined when they have to be read. */
  private cached(userId: string, now: number): DutySettings | null | undefined {
    const hit = this.cache.get(userId);
    return hit && now - hit.at < CACHE_MS ? hit.settings : undefined;
  }

  private async settingsOf(userId: string): Promise<DutySettings | null> {
    const now = Date.now();
    const hit = this.cached(userId, now);
    if (hit !== undefined) return hit;
    const row = await this.db.selectFrom("duty_settings").select("json").where("user_id", "=", userId).executeTakeFirst();
    const settings = row ? (JSON.parse(row.json) as DutySettings) : null;
    if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
    this.cache.set(userId, { settings, at: now });
    return settings;
  }

  /** Like settingsOf for many users, reading the uncached ones in a few queries. */
  private async settingsOfMany(userIds: Set<string>): Promise<Map<string, DutySettings | null>> {
    const now = Date.now();
    const out = new Map<string, DutySettings | null>();
    const missing: string[] = [];
    for (const u of userIds) {
      const hit = this.cached(u, now);
      if (hit !== undefined) out.set(u, hit);
      else missing.push(u);
    }
    for (const ids of chunks(missing)) {
      const rows = await this.db.selectFrom("duty_settings").select(["user_id", "json"]).where("user_id", "in", ids).execute();
      const found = new Map(rows.map((r) => [r.user_id, JSON.parse(r.json) as DutySettings]));
      if (this.cache.size + ids.length >= CACHE_LIMIT) this.cache.clear();
      for (const u of ids) {
        const settings = found.get(u) ?? null;
        this.cache.set(u, { settings, at: now });
        out.set(u, settings);
      }
    }
    return out;
  }

  async get(userId: string): Promise<DutyView> {
    const settings = (await this.settingsOf(userId)) ?? defaultDutySettings();
    return { ...settings, on_duty: isOnDuty(settings, this.clock()) };
  }

  async isOnDuty(userId: string): Promise<boolean> {
    const settings = await this.settingsOf(userId);
    return settings === null || isOnDuty(settings, this.clock());
  }

  /**
   * Replaces the user's settings and shows the result in their presence at once: off duty as
   * `unavailable` "off duty"; back on duty as online (they just used their app to say so).
   */
  async set(userId: string, input: unknown): Promise<DutyView> {
    const settings = parseDutySettings(input);
    const offNow = !isOnDuty(settings, this.clock());
    const json = JSON.stringify(settings);
    const prev = await this.db.selectFrom("duty_settings").select("off_duty").where("user_id", "=", userId).executeTakeFirst();
    const now = Date.now();
    await this.db
      .insertInto("duty_settings")
      .values({ user_id: userId, mode: settings.mode, json, off_duty: offNow ? 1 : 0, updated_ts: now })
      .onConflict((oc) => oc.column("user_id").doUpdateSet({ mode: settings.mode, json, off_duty: offNow ? 1 : 0, updated_ts: now }))
      .execute();
    this.cache.set(userId, { settings, at: now });
    if (offNow) await this.ephemeral.setPresence(userId, "unavailable", OFF_DUTY_STATUS);
    else if (prev?.off_duty === 1) await this.ephemeral.setPresence(userId, "online", null);
    return { ...settings, on_duty: !offNow };
  }

  /** Presence hook: what an off-duty user's presence is pinned to, or undefined while on duty. */
  async presenceOverride(userId: string): Promise<PinnedPresence | undefined> {
    return this.pinFor(await this.settingsOf(userId));
  }

  /** presenceOverride where the user's settings are cached; null when they would have to be read. */
  presenceOverrideNow(userId: string): PinnedPresence | undefined | null {
    const settings = this.cached(userId, Date.now());
    return settings === undefined ? null : this.pinFor(settings);
  }

  private pinFor(settings: DutySettings | null): PinnedPresence | undefined {
    return settings === null || isOnDuty(settings, this.clock()) ? undefined : OFF_DUTY_PRESENCE;
  }

  /**
   * Push hook: for the given recipients, which notifications to drop. Off-duty users get none,
   * except in emergency rooms when they opted in.
   */
  async silencer(userIds: Iterable<string>): Promise<Silencer> {
    const now = this.clock();
    const off = new Map<string, DutySettings>();
    for (const [u, s] of await this.settingsOfMany(new Set(userIds))) {
      if (s && !isOnDuty(s, now)) off.set(u, s);
    }
    if (off.size === 0) return () => false;
    const emergency = new Set((await this.policy.get()).emergency_rooms);
    return (userId, roomId) => {
      const s = off.get(userId);
      return s !== undefined && !(s.emergency_notifications && emergency.has(roomId));
    };
  }

  /**
   * Announces schedule transitions in presence: users whose duty state changed since it was last
   * applied go `unavailable` "off duty", or back to `offline` without a status (their next /sync
   * makes them online again). Returns how many users changed.
   */
  async sweep(): Promise<number> {
    const now = this.clock();
    const rows = await this.db
      .selectFrom("duty_settings")
      .select(["user_id", "json", "off_duty"])
      .where((eb) => eb.or([eb("mode", "!=", "on"), eb("off_duty", "=", 1)]))
      .execute();
    let changed = 0;
    for (const r of rows) {
      const settings = JSON.parse(r.json) as DutySettings;
      const offNow = !isOnDuty(settings, now);
      if (offNow === (r.off_duty === 1)) continue;
      this.cache.set(r.user_id, { settings, at: Date.now() });
      if (offNow) await this.ephemeral.setPresence(r.user_id, "unavailable", OFF_DUTY_STATUS);
      else await this.ephemeral.setPresence(r.user_id, "offline", null);
      await this.db.updateTable("duty_settings").set({ off_duty: offNow ? 1 : 0 }).where("user_id", "=", r.user_id).execute();
      changed++;
    }
    return changed;
  }
}
