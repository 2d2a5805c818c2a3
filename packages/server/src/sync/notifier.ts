import type { Bus, WakeUp } from "../bus/bus.js";
import type { Metrics } from "../http/metrics.js";

interface Waiter {
  userId: string;
  rooms: ReadonlySet<string>;
  since: number;
  wake: () => void;
}

/**
 * Wakes long-polling /sync requests when the stream passes their position with news for them.
 * Waiters are indexed by user and by room so a wake-up costs O(interested waiters), not O(all).
 */
export class Notifier {
  private readonly byUser = new Map<string, Set<Waiter>>();
  private readonly byRoom = new Map<string, Set<Waiter>>();
  private position = 0;
  private readonly unsubscribe: () => void;
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

  /** Resolves when something for this user may have happened after `since`, or after timeoutMs. */
  wait(userId: string, rooms: ReadonlySet<string>, since: number, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    // A write that committed after the caller read `since` but before it got here was announced
    // already; returning lets the caller look again instead of sleeping through it.
    if (this.closed || timeoutMs <= 0 || signal?.aborted || this.position > since) return Promise.resolve();
    return new Promise((resolve) => {
      const waiter: Waiter = {
        userId,
        rooms,
        since,
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

  /** Lets every waiter return (shutdown). */
  close(): void {
    this.closed = true;
    this.unsubscribe();
    for (const set of this.byUser.values()) for (const w of [...set]) w.wake();
  }

  private onWakeUp(w: WakeUp): void {
    if (w.position > this.position) this.position = w.position;
    const hit = new Set<Waiter>();
    for (const u of w.users) for (const waiter of this.byUser.get(u) ?? []) hit.add(waiter);
    for (const r of w.rooms) for (const waiter of this.byRoom.get(r) ?? []) hit.add(waiter);
    for (const waiter of hit) if (w.position > waiter.since) waiter.wake();
  }

  private add(w: Waiter): void {
    addTo(this.byUser, w.userId, w);
    for (const r of w.rooms) addTo(this.byRoom, r, w);
    this.metrics.syncWaiters.inc();
  }

  private remove(w: Waiter): void {
    if (!removeFrom(this.byUser, w.userId, w)) return;
    for (const r of w.rooms) removeFrom(this.byRoom, r, w);
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
