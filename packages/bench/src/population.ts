/**
 * Setting up many accounts, sessions and rooms for the sync, e2ee and idle scenarios. On a server
 * the bench started this uses the host's in-process fast paths (sessions without the argon2
 * verify; rooms through the event write path in batches); on any other homeserver it does the
 * same through plain Matrix HTTP (/login, /createRoom, /join), which is portable but slower.
 */
import { createRoom, join, login, type Session } from "./matrix.js";
import type { ScenarioContext } from "./scenario.js";
import type { Credentials } from "./target.js";
import { pool } from "./stats.js";

/** One room of a plan: indexes into the plan's account list; `members` includes the creator. */
export interface RoomPlan {
  creator: number;
  members: number[];
  name: string;
  encrypted?: boolean;
}

/** A deterministic pseudo-random generator (mulberry32), so a plan is the same on every run. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Room sizes that follow Zipf's law (size ∝ 1/rank), as channel sizes in an organisation do: a few
 * large channels (directorate-wide alerts), some hundreds-strong, most small team rooms. Scaled so
 * the sizes add up to about `users × perUser` memberships, each between 2 and `maxSize`.
 */
export function roomSizes(rooms: number, users: number, perUser: number, maxSize: number): number[] {
  const total = users * perUser;
  const cap = Math.max(2, Math.min(maxSize, users));
  let scale = total / Array.from({ length: rooms }, (_, i) => 1 / (i + 1)).reduce((a, b) => a + b, 0);
  let sizes: number[] = [];
  for (let iter = 0; iter < 40; iter++) {
    sizes = Array.from({ length: rooms }, (_, i) => Math.min(cap, Math.max(2, Math.round(scale / (i + 1)))));
    const sum = sizes.reduce((a, b) => a + b, 0);
    if (Math.abs(sum - total) <= total * 0.005) break;
    scale *= total / sum;
  }
  return sizes;
}

/**
 * Who is in which room: sizes from `roomSizes`, members drawn at random without repeats, then
 * every account that drew no room put into one of the small rooms, so each user is in a few rooms
 * (about `perUser` on average) and nobody in none.
 */
export function membershipPlan(opts: { users: number; rooms: number; perUser: number; maxSize: number; seed?: number; namePrefix?: string }): RoomPlan[] {
  const random = prng(opts.seed ?? 42);
  const sizes = roomSizes(opts.rooms, opts.users, opts.perUser, opts.maxSize);
  const inSome = new Uint8Array(opts.users);
  const plan: RoomPlan[] = sizes.map((size, r) => {
    const chosen = new Set<number>();
    while (chosen.size < size) chosen.add(Math.floor(random() * opts.users));
    const members = [...chosen];
    for (const m of members) inSome[m] = 1;
    return { creator: members[0]!, members, name: `${opts.namePrefix ?? "room"} ${r}` };
  });
  // The smallest rooms (the tail of the Zipf ranks) take the accounts that drew nothing.
  let tail = plan.length - 1;
  for (let u = 0; u < opts.users; u++) {
    if (inSome[u]) continue;
    plan[tail]!.members.push(u);
    tail = tail > Math.floor(plan.length / 2) ? tail - 1 : plan.length - 1;
  }
  return plan;
}

/** Rooms of `size` members each over accounts [0, users): the idle users' team rooms. */
export function groupPlan(users: number, size: number, namePrefix: string): RoomPlan[] {
  const plan: RoomPlan[] = [];
  for (let first = 0; first < users; first += size) {
    const members = Array.from({ length: Math.min(size, users - first) }, (_, i) => first + i);
    plan.push({ creator: members[0]!, members, name: `${namePrefix} ${plan.length}` });
  }
  return plan;
}

/**
 * One session (device) per account: minted in-process on a server the bench started, else by
 * password login over HTTP. Sessions go round-robin over the target's URLs.
 */
export async function openSessions(ctx: ScenarioContext, creds: readonly Credentials[], deviceName: string, label: string): Promise<Session[]> {
  const { target } = ctx;
  const urls = target.urls;
  const out: Session[] = [];
  const step = 1000;
  for (let i = 0; i < creds.length; i += step) {
    const batch = creds.slice(i, i + step);
    if (target.sessions) {
      const minted = await target.sessions(
        batch.map((c) => c.user),
        deviceName,
      );
      minted.forEach((m, j) => out.push({ baseUrl: urls[(i + j) % urls.length]!, userId: m.userId, accessToken: m.accessToken, deviceId: m.deviceId }));
    } else {
      const sessions = await pool(batch, 8, (c, j) => login(urls[(i + j) % urls.length]!, c.user, c.password));
      out.push(...sessions);
    }
    if (creds.length > step) ctx.progress(`  ${label}: ${out.length}/${creds.length} sessions`);
  }
  return out;
}

/**
 * Creates the rooms of `plan` over the accounts `creds` and joins their members. `sessions` is
 * asked for only when the plan has to go over HTTP (it needs a session per member). Returns the
 * room ids in plan order.
 */
export async function seedRooms(ctx: ScenarioContext, creds: readonly Credentials[], plan: readonly RoomPlan[], sessions: () => Promise<Session[]>, label: string): Promise<string[]> {
  const { target } = ctx;
  const roomIds: string[] = [];
  const memberships = plan.reduce((n, r) => n + r.members.length, 0);
  let done = 0;
  let reported = 0;
  const report = () => {
    if (done - reported >= Math.max(1000, memberships / 10) || done === memberships) {
      reported = done;
      ctx.progress(`  ${label}: ${roomIds.length}/${plan.length} rooms, ${done}/${memberships} memberships`);
    }
  };
  if (target.seedRooms) {
    // Batches of about 2,000 memberships keep each host request short enough to report progress.
    let batch: RoomPlan[] = [];
    let size = 0;
    const flush = async () => {
      if (batch.length === 0) return;
      const ids = await target.seedRooms!(
        batch.map((r) => ({ creator: creds[r.creator]!.user, members: r.members.map((m) => creds[m]!.user), name: r.name, ...(r.encrypted ? { encrypted: true } : {}) })),
      );
      roomIds.push(...ids);
      done += size;
      batch = [];
      size = 0;
      report();
    };
    for (const r of plan) {
      batch.push(r);
      size += r.members.length;
      if (size >= 2000) await flush();
    }
    await flush();
    return roomIds;
  }
  const all = await sessions();
  for (const r of plan) {
    const creator = all[r.creator]!;
    const roomId = await createRoom(creator, {
      preset: "public_chat",
      name: r.name,
      ...(r.encrypted ? { initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }] } : {}),
    });
    await pool(
      r.members.filter((m) => m !== r.creator),
      8,
      (m) => join(all[m]!, roomId),
    );
    roomIds.push(roomId);
    done += r.members.length;
    report();
  }
  return roomIds;
}

/** A counter or gauge from Revier's /metrics, or null for servers without it. */
async function serverMetric(baseUrl: string, name: string): Promise<number | null> {
  try {
    const res = await fetch(`${baseUrl}/metrics`);
    if (!res.ok) return null;
    const m = new RegExp(`^${name}\\s+(\\d+(?:\\.\\d+)?)`, "m").exec(await res.text());
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** What the server's collector did, by kind (major, minor, incremental, weakcb): from /metrics. */
export interface GcReading {
  count: number;
  seconds: number;
  /** Collections that took 10 ms or longer, and 100 ms or longer (the histogram's buckets). */
  over10ms: number;
  over100ms: number;
}

/** What the server's runtime reported on /metrics: its collector, and its event loop's delay. */
export interface RuntimeReading {
  gc: Map<string, GcReading> | null;
  loopDelay: LoopDelay | null;
}

/**
 * The collector's work so far (prom-client's default `nodejs_gc_duration_seconds` histogram on
 * Revier's /metrics) and the event loop's delay since the previous read of /metrics; nulls for
 * servers without them. Two readings subtract (see gcBetween): a latency tail that comes with
 * pauses of 100 ms or more is the collector's, not the code's.
 */
export async function serverRuntime(baseUrl: string): Promise<RuntimeReading> {
  let text: string;
  try {
    const res = await fetch(`${baseUrl}/metrics`);
    if (!res.ok) return { gc: null, loopDelay: null };
    text = await res.text();
  } catch {
    return { gc: null, loopDelay: null };
  }
  return { gc: parseGcMetrics(text), loopDelay: parseLoopDelay(text) };
}

/**
 * How late the event loop ran a check it schedules every 10 ms (prom-client's
 * `nodejs_eventloop_lag_*`, from Node's monitorEventLoopDelay), in seconds. prom-client resets
 * the histogram at each read of /metrics, so a reading covers the time since the previous one.
 * Node records the whole interval between checks: the 10 ms themselves are included.
 */
export interface LoopDelay {
  p50: number;
  p99: number;
  max: number;
}

export function parseLoopDelay(text: string): LoopDelay | null {
  const value = (name: string) => {
    const m = new RegExp(`^\\w*nodejs_eventloop_lag_${name}_seconds(?:\\{[^}]*\\})?\\s+(\\S+)$`, "m").exec(text);
    const v = m ? Number(m[1]) : Number.NaN;
    return Number.isFinite(v) ? v : null;
  };
  const p50 = value("p50");
  const p99 = value("p99");
  const max = value("max");
  return p50 === null || p99 === null || max === null ? null : { p50, p99, max };
}

/** A loop-delay reading as bench figures in ms, less the 10-ms check interval it includes. */
export function loopDelayFigures(d: LoopDelay | null, prefix: string, intervalMs = 10): Record<string, number> {
  if (d === null) return {};
  const ms = (s: number) => Math.max(0, Math.round((s * 1000 - intervalMs) * 10) / 10);
  return { [`${prefix}_p50_ms`]: ms(d.p50), [`${prefix}_p99_ms`]: ms(d.p99), [`${prefix}_max_ms`]: ms(d.max) };
}

export function parseGcMetrics(text: string): Map<string, GcReading> | null {
  const out = new Map<string, GcReading>();
  const of = (kind: string) => {
    let r = out.get(kind);
    if (!r) out.set(kind, (r = { count: 0, seconds: 0, over10ms: 0, over100ms: 0 }));
    return r;
  };
  // Buckets are cumulative: those at or above 10 ms are the count less the 10-ms bucket.
  const under10 = new Map<string, number>();
  const under100 = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^\w*nodejs_gc_duration_seconds_(bucket|sum|count)\{([^}]*)\}\s+(\S+)$/.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...m[2]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1]!, l[2]!]));
    const kind = labels.kind;
    if (kind === undefined) continue;
    const value = Number(m[3]);
    if (m[1] === "sum") of(kind).seconds = value;
    else if (m[1] === "count") of(kind).count = value;
    else if (labels.le === "0.01") under10.set(kind, value);
    else if (labels.le === "0.1") under100.set(kind, value);
  }
  if (out.size === 0) return null;
  for (const [kind, r] of out) {
    r.over10ms = r.count - (under10.get(kind) ?? r.count);
    r.over100ms = r.count - (under100.get(kind) ?? r.count);
  }
  return out;
}

/** What the collector did between two readings, as bench figures (prefix_major_ms and so on). */
export function gcBetween(before: Map<string, GcReading> | null, after: Map<string, GcReading> | null, prefix: string): Record<string, number> {
  if (before === null || after === null) return {};
  const figures: Record<string, number> = {};
  let over10 = 0;
  let over100 = 0;
  for (const kind of ["major", "minor", "incremental"]) {
    const a = after.get(kind);
    if (!a) continue;
    const b = before.get(kind) ?? { count: 0, seconds: 0, over10ms: 0, over100ms: 0 };
    figures[`${prefix}_${kind}_count`] = a.count - b.count;
    figures[`${prefix}_${kind}_ms`] = Math.round((a.seconds - b.seconds) * 1000);
    over10 += a.over10ms - b.over10ms;
    over100 += a.over100ms - b.over100ms;
  }
  figures[`${prefix}_pauses_10ms_plus`] = over10;
  figures[`${prefix}_pauses_100ms_plus`] = over100;
  return figures;
}

/** The count of waiting /sync long-polls from Revier's /metrics, or null for servers without it. */
export function syncWaiters(baseUrl: string): Promise<number | null> {
  return serverMetric(baseUrl, "revier_sync_waiters");
}

/**
 * Waits, after a burst of seeding, until the server has given back what the burst left in its
 * heap, so that memory read next is what it holds. Without this the first reading of a
 * connection series carries the seeding's garbage, a collection during the series takes it away,
 * and the memory per connection comes out negative (the `sync` runs of 2026-12-01 and -02).
 * Revier compacts once it has been quiet for a while (memory.idle_reclaim_mb): wait until its
 * reclaim counter moves, at most `maxS` (none comes if the heap did not grow enough), and
 * `graceS` more. A server without the counter gets `fallbackS`.
 */
export async function settleAfterBurst(ctx: Pick<ScenarioContext, "progress">, baseUrl: string, burst: string, maxS = 30, fallbackS = 10, graceS = 3): Promise<{ waitedS: number; reclaimed: boolean | null }> {
  const started = Date.now();
  const done = (reclaimed: boolean | null) => {
    const waitedS = (Date.now() - started) / 1000;
    ctx.progress(`settled after ${burst}: ${waitedS.toFixed(1)} s${reclaimed === true ? ", heap compacted" : reclaimed === false ? ", no compaction came" : ""}`);
    return { waitedS, reclaimed };
  };
  const before = await serverMetric(baseUrl, "revier_heap_reclaims_total");
  if (before === null) {
    await new Promise((r) => setTimeout(r, fallbackS * 1000));
    return done(null);
  }
  while (Date.now() - started < maxS * 1000) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = await serverMetric(baseUrl, "revier_heap_reclaims_total");
    if (now !== null && now > before) {
      // The pages go back to the system as V8's sweepers finish, after the count moved: read
      // right then, resident memory was 374 MB, and 308 MB five seconds and 2,000 connections later.
      await new Promise((r) => setTimeout(r, graceS * 1000));
      return done(true);
    }
  }
  return done(false);
}
