/** What Deadlines needs of an item: where it is filed (managed by Deadlines; -1 when not filed). */
export interface HasDeadline {
  deadlineSlot: number;
}

/**
 * Deadlines of many long waits, kept in slots of `granularityMs` and checked by one timer,
 * instead of a Node timer per wait. An item fires at the first check at or after its deadline,
 * at most `granularityMs` late, never early.
 *
 * Why: every long-poll cycle set a 30-second timer and cleared it when woken. Each long-poll's
 * timeout differs (jitter), so Node kept a timer list per distinct duration in its priority
 * queue; with a wave of thousands of members, inserting and clearing those timers was several
 * µs per answer, and each Timeout object lived until its long-poll was woken, long enough for
 * the collector to copy it.
 */
export class Deadlines<T extends HasDeadline> {
  private readonly slots = new Map<number, Set<T>>();
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(
    private readonly fire: (item: T) => void,
    private readonly granularityMs = 100,
    /** Monotonic by default: a wall clock set back or forward would move every deadline. */
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Files `item` to fire at or after `at` (in the clock's milliseconds: `now() + timeout`). */
  add(item: T, at: number): void {
    const slot = Math.ceil(at / this.granularityMs);
    let items = this.slots.get(slot);
    if (!items) this.slots.set(slot, (items = new Set()));
    items.add(item);
    item.deadlineSlot = slot;
    // A timer only while there is something to fire: it keeps the process alive, as the timers
    // it replaces did.
    this.timer ??= setInterval(() => this.check(), this.granularityMs);
  }

  /** Takes `item` out (woken before its deadline); harmless if it is not filed. */
  remove(item: T): void {
    const slot = item.deadlineSlot;
    if (slot < 0) return;
    item.deadlineSlot = -1;
    const items = this.slots.get(slot);
    if (!items) return;
    items.delete(item);
    if (items.size > 0) return;
    this.slots.delete(slot);
    this.stopIfIdle();
  }

  /** Items filed. */
  get size(): number {
    let n = 0;
    for (const items of this.slots.values()) n += items.size;
    return n;
  }

  /** Fires every item whose deadline has passed. */
  check(): void {
    const due = Math.floor(this.now() / this.granularityMs);
    for (const [slot, items] of this.slots) {
      if (slot > due) continue;
      // One at a time, out of the set first: what an item's firing removes does not fire.
      for (const item of items) {
        items.delete(item);
        item.deadlineSlot = -1;
        this.fire(item);
      }
      this.slots.delete(slot);
    }
    this.stopIfIdle();
  }

  private stopIfIdle(): void {
    if (this.slots.size > 0 || this.timer === null) return;
    clearInterval(this.timer);
    this.timer = null;
  }
}
