import type { WakeUp } from "../bus/bus.js";
import { isPresenceOnly } from "../storage/stream.js";

/** What /sync reports about a device's keys: its one-time key counts and unused fallback key types. */
export interface DeviceKeyState {
  readonly counts: Readonly<Record<string, number>>;
  readonly fallbacks: readonly string[];
}

/** The notifier's side of the bargain (see DeviceSyncCache). */
export interface AnnouncementWatermark {
  /** Whether every batch in (since, upto] has been announced here and its observers have run. */
  heardAllBetween(since: number, upto: number): boolean;
}

interface Entry {
  readonly state: DeviceKeyState;
  /** The stream position up to which the state was read (the answer's `upto`). */
  readonly at: number;
  readonly born: number;
}

/** A copy is read again after this long whatever was announced: a bound on staleness should an announcement never come. */
export const DEVICE_STATE_MAX_AGE_MS = 60_000;
/** Devices remembered per process; beyond this the oldest entries go. */
export const DEVICE_STATE_MAX_ENTRIES = 100_000;
/** Recent announcements naming users, checked before a copy is kept (see keep). */
const NAMED_LOG_SIZE = 1024;

/**
 * Per device, what its last /sync answer here found: its key counts and fallback key types, and
 * that its to-device inbox was empty up to the answer's position. Every /sync asked the database
 * for these (one statement), a round trip per answer on PostgreSQL, and in a wave of thousands of
 * members woken by one message nothing of it has changed for any of them.
 *
 * A copy is used only while the notifier vouches that every batch since the copy's position has
 * been announced here, and it is dropped by every announcement that could change it:
 * - `keys` of a wake-up: one-time or fallback keys uploaded, claimed or deleted (see
 *   StreamWrite.keysChanged), from any process;
 * - `users` of a wake-up that is not presence alone: to-device messages arrive this way (and
 *   other news of the user's own, which merely costs a read).
 * A write is announced after it commits, at a position above everything committed when it did,
 * so a change after a copy was read is announced at a position above the copy's, and the
 * watermark says whether that announcement has been heard. One heard before the copy is kept
 * (even before its read began: a build may answer up to a position older than what has been
 * heard by then) is found in a log of recent announcements, and the copy is not kept.
 */
export class DeviceSyncCache {
  /** user → device → entry; a Map keeps insertion order, the oldest user first. */
  private readonly byUser = new Map<string, Map<string, Entry>>();
  private size = 0;
  /** The last NAMED_LOG_SIZE announcements that named users (a ring), with their positions. */
  private readonly named: Array<{ position: number; users: readonly string[] }> = [];
  private namedNext = 0;
  /** The highest position among announcements that have left the ring. */
  private namedEvicted = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly watermark: AnnouncementWatermark,
    private readonly opts: { maxAgeMs?: number; maxEntries?: number; now?: () => number } = {},
  ) {}

  /** Call with every wake-up, before the waiters it wakes run (Notifier.observe). */
  observe(w: WakeUp): void {
    const users = isPresenceOnly(w) ? (w.keys ?? []) : w.keys === undefined ? w.users : [...w.users, ...w.keys];
    if (users.length === 0) return;
    for (const u of users) this.forget(u);
    const entry = { position: w.position, users };
    if (this.named.length < NAMED_LOG_SIZE) {
      this.named.push(entry);
      return;
    }
    const evicted = this.named[this.namedNext]!;
    if (evicted.position > this.namedEvicted) this.namedEvicted = evicted.position;
    this.named[this.namedNext] = entry;
    this.namedNext = (this.namedNext + 1) % NAMED_LOG_SIZE;
  }

  /** The device's state if a copy is known to hold at `upto`, or undefined. */
  get(userId: string, deviceId: string, upto: number): DeviceKeyState | undefined {
    const devices = this.byUser.get(userId);
    const e = devices?.get(deviceId);
    // A request answering up to an older position (a token from another process that is behind)
    // is not covered by a copy read later; the copy stays for the next.
    if (e === undefined || upto < e.at) return undefined;
    if (this.now() - e.born > (this.opts.maxAgeMs ?? DEVICE_STATE_MAX_AGE_MS)) {
      devices!.delete(deviceId);
      this.size--;
      if (devices!.size === 0) this.byUser.delete(userId);
      return undefined;
    }
    // While a batch is missing (several processes) the copy may be stale; the read that follows
    // replaces it.
    return this.watermark.heardAllBetween(e.at, upto) ? e.state : undefined;
  }

  /**
   * Keeps the state a build read, as it holds at `at` (the build's upper position), unless an
   * announcement above `at` that could have changed it has already been heard, or the log of
   * announcements no longer reaches back to `at`.
   */
  keep(userId: string, deviceId: string, at: number, state: DeviceKeyState): void {
    if (this.namedEvicted > at) return;
    for (const n of this.named) if (n.position > at && n.users.includes(userId)) return;
    this.store(userId, deviceId, at, state);
  }

  /** Devices remembered (for tests and metrics). */
  get entries(): number {
    return this.size;
  }

  private store(userId: string, deviceId: string, at: number, state: DeviceKeyState): void {
    let devices = this.byUser.get(userId);
    if (devices === undefined) {
      this.byUser.set(userId, (devices = new Map()));
    } else {
      // Refreshed users move to the back of the eviction order.
      this.byUser.delete(userId);
      this.byUser.set(userId, devices);
    }
    if (!devices.has(deviceId)) this.size++;
    // Frozen: the answers built from it share it.
    devices.set(deviceId, { state: Object.freeze({ counts: Object.freeze({ ...state.counts }), fallbacks: Object.freeze([...state.fallbacks]) }), at, born: this.now() });
    const max = this.opts.maxEntries ?? DEVICE_STATE_MAX_ENTRIES;
    for (const [oldest, list] of this.byUser) {
      if (this.size <= max) break;
      this.size -= list.size;
      this.byUser.delete(oldest);
    }
  }

  private forget(userId: string): void {
    const devices = this.byUser.get(userId);
    if (devices === undefined) return;
    this.size -= devices.size;
    this.byUser.delete(userId);
  }

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }
}
