/**
 * Answers that many /sync requests share: when one message reaches a room of thousands, every
 * member's long-poll wakes at once and asks the same questions about the same stream positions
 * ("which events did this room get in (P, Q]?", "who are its members?", "whose presence changed in
 * (P, Q]?"). Each question is asked of the database once and the answer (a promise, so requests
 * arriving while it is computed wait for the same query) is handed to every request that asks it.
 *
 * Entries are keyed by stream positions, so an answer stays right for its key except where rows
 * at those positions are changed afterwards: a redaction rewrites an event's JSON, retention
 * removes events. Both come with a write to the room, and the room's wake-up drops every entry
 * filed under that room (`dropRoom`); entries also expire after a short time, which bounds what a
 * wake-up lost between processes could leave behind. A failed computation is not kept.
 */
export class SharedSyncCache {
  private readonly entries = new Map<string, { expires: number; value: Promise<unknown>; room: string | undefined; bytes: number }>();
  private readonly byRoom = new Map<string, Set<string>>();
  private bytes = 0;

  constructor(
    private readonly ttlMs = 2000,
    private readonly limit = 4096,
    /** Bound on what the answers hold (as their `weigh` says), so odd windows cannot pile up. */
    private readonly maxBytes = 64 * 1024 * 1024,
  ) {}

  /** The answer for `key`, computed by `compute` unless cached; `weigh` estimates its size in bytes. */
  get<T>(key: string, room: string | undefined, compute: () => Promise<T>, weigh: (value: T) => number = () => 64, now = Date.now()): Promise<T> {
    const hit = this.entries.get(key);
    if (hit && hit.expires > now) return hit.value as Promise<T>;
    if (hit) this.delete(key);
    this.dropExpired(now);
    const value = compute();
    if (this.entries.size >= this.limit) this.delete(this.entries.keys().next().value!);
    const entry = { expires: now + this.ttlMs, value: value as Promise<unknown>, room, bytes: 0 };
    this.entries.set(key, entry);
    if (room !== undefined) {
      let keys = this.byRoom.get(room);
      if (!keys) this.byRoom.set(room, (keys = new Set()));
      keys.add(key);
    }
    value.then(
      (v) => {
        if (this.entries.get(key) !== entry) return;
        entry.bytes = weigh(v);
        this.bytes += entry.bytes;
        // Oldest first; the newest entry stays even when it alone is over the bound.
        for (const k of this.entries.keys()) {
          if (this.bytes <= this.maxBytes || k === key) break;
          this.delete(k);
        }
      },
      () => {
        if (this.entries.get(key) === entry) this.delete(key);
      },
    );
    return value;
  }

  /** Entries held (expired ones included until the next miss sweeps them). */
  get size(): number {
    return this.entries.size;
  }

  /**
   * Expired answers go at the next miss rather than only when their own key is asked again or the
   * bounds push them out: keys name stream positions, so most are never asked again, and a wave
   * of initial syncs (each at a position of its own) used to leave the cache at its byte bound —
   * 64 MB of timeline pages nobody would be served — for as long as the server ran. A quiet
   * server has no misses: the sweepers call this too. The entries are in insertion order and
   * share one lifetime, so the expired ones are at the front.
   */
  dropExpired(now = Date.now()): void {
    for (const [key, e] of this.entries) {
      if (e.expires > now) break;
      this.delete(key);
    }
  }

  /** Something in the room changed: nothing cached about it may be served again. */
  dropRoom(room: string): void {
    const keys = this.byRoom.get(room);
    if (!keys) return;
    for (const key of [...keys]) this.delete(key);
  }

  private delete(key: string): void {
    const e = this.entries.get(key);
    if (!e) return;
    this.entries.delete(key);
    this.bytes -= e.bytes;
    if (e.room === undefined) return;
    const keys = this.byRoom.get(e.room);
    keys?.delete(key);
    if (keys?.size === 0) this.byRoom.delete(e.room);
  }
}
