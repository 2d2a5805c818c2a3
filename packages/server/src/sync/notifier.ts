import type { Bus, WakeUp } from "../bus/bus.js";
import type { Metrics } from "../http/metrics.js";
import { isPresenceOnly } from "../storage/stream.js";

interface Waiter {
  userId: string;
  rooms: ReadonlySet<string>;
  since: number;
  /** Whether presence changes are news to it (its filter lets m.presence through). */
  presence: boolean;
  wake: () => void;
}

/**
 * Wakes long-polling /sync requests when the stream passes their position with news for them.
 * Waiters are indexed by user and by room so a wake-up costs O(interested waiters), not O(all).
 */
export class Notifier {
  private readonly byUser = new Map<string, Set<Waiter>>();
  private readonly byRoom = new Map<string, Set<Waiter>>();
  /** The waiters of byRoom that want presence: all a presence-only wake-up needs to look at. */
  private readonly byRoomPresence = new Map<string, Set<Waiter>>();
  private position = 0;
  private readonly unsubscribe: () => void;
  private readonly observers: Array<(w: WakeUp) => void> = [];
  private closed = false;

  get isClosed(): boolean {
    return this.closed;
  }

  constructor(
    bus: Bus,
    private readonly metrics: Metrics,
  ) {
    this.unsubscribe = bus.subscribe((w) => this.onWakeUp(w));
  }

  /**
   * Resolves when something for this user may have happened after `since`, or after timeoutMs.
   * With `presence: false` (a filter that leaves out presence), wake-ups that only announce
   * presence changes pass it by (see isPresenceOnly).
   */
  wait(userId: string, rooms: ReadonlySet<string>, since: number, timeoutMs: number, signal?: AbortSignal, opts: { presence?: boolean } = {}): Promise<void> {
    // A write that committed after the caller read `since` but before it got here was announced
    // already; returning lets the caller look again instead of sleeping through it.
    if (this.closed || timeoutMs <= 0 || signal?.aborted || this.position > since) return Promise.resolve();
    return new Promise((resolve) => {
      const waiter: Waiter = {
        userId,
        rooms,
        since,
        presence: opts.presence ?? true,
        wake: () => {
          clearTimeout(timer);
          this.remove(waiter);
          signal?.removeEventListener("abort", waiter.wake);
          resolve();
        },
      };
      const timer = setTimeout(waiter.wake, timeoutMs);
      signal?.addEventListener("abort", waiter.wake, { once: true });
      this.add(waiter);
    });
  }

  /** Calls `fn` with every wake-up, before the waiters it wakes get to run (cache invalidation). */
  observe(fn: (w: WakeUp) => void): void {
    this.observers.push(fn);
  }

  /** Lets every waiter return (shutdown). */
  close(): void {
    this.closed = true;
    this.unsubscribe();
    for (const set of this.byUser.values()) for (const w of [...set]) w.wake();
  }

  private onWakeUp(w: WakeUp): void {
    if (w.position > this.position) this.position = w.position;
    for (const fn of this.observers) fn(w);
    const hit = new Set<Waiter>();
    const presenceOnly = isPresenceOnly(w);
    for (const u of w.users) for (const waiter of this.byUser.get(u) ?? []) if (!presenceOnly || waiter.presence) hit.add(waiter);
    const index = presenceOnly ? this.byRoomPresence : this.byRoom;
    for (const r of w.rooms) for (const waiter of index.get(r) ?? []) hit.add(waiter);
    for (const waiter of hit) if (w.position > waiter.since) waiter.wake();
  }

  private add(w: Waiter): void {
    addTo(this.byUser, w.userId, w);
    for (const r of w.rooms) addTo(this.byRoom, r, w);
    if (w.presence) for (const r of w.rooms) addTo(this.byRoomPresence, r, w);
    this.metrics.syncWaiters.inc();
  }

  private remove(w: Waiter): void {
    if (!removeFrom(this.byUser, w.userId, w)) return;
    for (const r of w.rooms) removeFrom(this.byRoom, r, w);
    if (w.presence) for (const r of w.rooms) removeFrom(this.byRoomPresence, r, w);
    this.metrics.syncWaiters.dec();
  }
}

function addTo(map: Map<string, Set<Waiter>>, key: string, w: Waiter): void {
  let set = map.get(key);
  if (!set) map.set(key, (set = new Set()));
  set.add(w);
}

function removeFrom(map: Map<string, Set<Waiter>>, key: string, w: Waiter): boolean {
  const set = map.get(key);
  if (!set?.delete(w)) return false;
  if (set.size === 0) map.delete(key);
  return true;
}
