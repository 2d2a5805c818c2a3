import type { Bus, WakeUp } from "../bus/bus.js";
import type { Metrics } from "../http/metrics.js";
import { isPresenceOnly } from "../storage/stream.js";
import { Deadlines } from "./deadlines.js";

/**
 * What a wait needs of a cancellation signal; an AbortSignal is one. The /sync route uses a
 * lighter one of its own (ClientGone): an AbortController per long-poll cycle was measurable.
 */
export interface CancelSignal {
  readonly aborted: boolean;
  addEventListener(type: "abort", listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: "abort", listener: () => void): void;
}

/** Cancelled when the client's connection closes before its answer: at most one listener. */
export class ClientGone implements CancelSignal {
  aborted = false;
  private listener: (() => void) | null = null;

  /** Bound, so it can itself be the connection's close listener. */
  readonly cancel = (): void => {
    if (this.aborted) return;
    this.aborted = true;
    const fn = this.listener;
    this.listener = null;
    fn?.();
  };

  addEventListener(_type: "abort", listener: () => void): void {
    this.listener = listener;
  }

  removeEventListener(_type: "abort", listener: () => void): void {
    if (this.listener === listener) this.listener = null;
  }
}

/**
 * One parked wait. A class with its state in fields rather than a promise and closures: thousands
 * wait at once, each for up to a second between a wave's messages, long enough for the collector to
 * copy what they hold twice before promoting it.
 */
class Waiter {
  /** Named by a wake-up and in line to be woken (see paceWakes): should its timer fire, it had news. */
  queued = false;
  /**
   * Set when a wake-up names it (or first holds its news back): the outcome's `quietThrough`
   * (see quietBefore).
   */
  quiet: number | null = null;
  /** Receipts or typing news for it is being held back (see EPHEMERAL_PACE_WAITERS). */
  heldBack = false;
  /** Where `deadlines` files it (-1: not there; a short wait has a timer of its own). */
  deadlineSlot = -1;
  timer: ReturnType<typeof setTimeout> | undefined = undefined;
  private settled = false;

  constructor(
    private readonly notifier: Notifier,
    readonly userId: string,
    readonly rooms: ReadonlySet<string>,
    readonly since: number,
    /** Whether presence changes are news to it (its filter lets m.presence through). */
    readonly presence: boolean,
    /** Whether receipts and typing are news to it (its filter lets either through). */
    readonly ephemeral: boolean,
    private readonly signal: CancelSignal | undefined,
    private readonly onOutcome: (outcome: WaitOutcome) => void,
  ) {}

  readonly abort = (): void => this.wake({ reason: "aborted" });

  get isSettled(): boolean {
    return this.settled;
  }

  /**
   * Ends the wait, once: a queued waiter whose client goes away is woken then, and skipped in the
   * queue. The outcome is handed over from a microtask, as a promise's would be: the caller
   * (a wake-up's drain) finishes its own loop first.
   */
  wake(outcome: WaitOutcome): void {
    if (this.settled) return;
    this.settled = true;
    this.notifier.release(this);
    this.signal?.removeEventListener("abort", this.abort);
    queueMicrotask(() => this.onOutcome(outcome));
  }
}

/**
 * How a wait ended. `quietThrough`: every position in (since, quietThrough] has been announced
 * here and none of those announcements named this waiter's user or rooms (presence alone counts
 * only for waiters that want presence). After a timeout, a /sync over that window has nothing to
 * say: it can answer `quietThrough` as its next token without looking. After a wake-up, what is
 * new to the waiter begins after it (see Notifier.quietBefore). Null when that cannot be vouched
 * for.
 */
export type WaitOutcome = { reason: "aborted" | "closed" } | { reason: "woken" | "timeout"; quietThrough: number | null };

/** Recent wake-ups kept to tell whether a short window held news for someone (quietBetween). */
const LOG_SIZE = 4096;

/**
 * Waits at least this long share the notifier's coarse deadlines (see Deadlines), answered up to
 * DEADLINE_GRANULARITY_MS late; shorter ones (a client asking for a quick answer, tests) keep a
 * timer of their own.
 */
const SHARED_DEADLINE_MIN_MS = 2000;
const DEADLINE_GRANULARITY_MS = 100;

/**
 * In a room with more parked long-polls than this (now, or within BIG_ROOM_MEMORY_MS: during a
 * wave most members are being answered, not parked), receipts and typing wake its waiters
 * together, a moment after the news: 2 ms per waiter, at least EPHEMERAL_PACE_MIN_MS and at most
 * EPHEMERAL_PACE_MAX_MS. Each member who reads a message in a channel of thousands sends a
 * receipt, and each receipt is news to every other member: woken per batch of receipts, every
 * member was answered again and again for read markers (200 members: 11 times as many answers
 * as without receipts, and the sender's acknowledgements waited seconds). Paced so, a room's
 * receipts cost at most about 500 answers a second, whatever its size. Small rooms (a
 * chat, where typing shows) are woken at once.
 */
const EPHEMERAL_PACE_WAITERS = 50;
const EPHEMERAL_PACE_MIN_MS = 1000;
const EPHEMERAL_PACE_MS_PER_WAITER = 2;
const EPHEMERAL_PACE_MAX_MS = 5000;
const BIG_ROOM_MEMORY_MS = 60_000;

/** Out-of-order batches remembered while an earlier one is still on its way. */
const MAX_AHEAD = 10_000;
/** A batch missing this long was lost (NATS is at-most-once): stop waiting for it (default). */
const GAP_GIVE_UP_MS = 10_000;

/**
 * Wakes long-polling /sync requests when the stream passes their position with news for them.
 * Waiters are indexed by user and by room so a wake-up costs O(interested waiters), not O(all).
 */
export class Notifier {
  private readonly byUser = new Map<string, Waiters>();
  private readonly byRoom = new Map<string, Waiters>();
  /** The waiters of byRoom that want presence: all a presence-only wake-up needs to look at. */
  private readonly byRoomPresence = new Map<string, Waiters>();
  private position = 0;
  /** The end of the newest batch heard that was not presence alone (see heardNewsPosition). */
  private newsPosition = 0;
  /**
   * Every batch that ends at or below this position has been announced here (null: unknown —
   * before `start`, or after a peer sent a wake-up without its range). Only waits that began at
   * or after `floor` may rely on it: positions below the floor were committed before this
   * watermark was (re)established and may never be announced.
   */
  private announced: number | null = null;
  private floor = Number.MAX_SAFE_INTEGER;
  /** Batches heard ahead of a gap: from -> position, with when the first of them arrived. */
  private readonly ahead = new Map<number, number>();
  private gapSince = 0;
  /** The last LOG_SIZE wake-ups with a range, in arrival order (a ring). */
  private readonly log: WakeUp[] = [];
  private logNext = 0;
  /** Every batch in (logStart, announced] is in `log`. */
  private logStart = Number.MAX_SAFE_INTEGER;
  /** Whether wake-ups have arrived in position order so far (always so with one process). */
  private logOrdered = true;
  private rebaseline: (() => Promise<number>) | null = null;
  /** A (re)start of the watermark is under way: batches heard meanwhile are kept in `ahead`. */
  private rebaselining = true;
  private legacyPeer = false;
  private readonly unsubscribe: () => void;
  private readonly observers: Array<(w: WakeUp) => void> = [];
  private closed = false;
  /** How many waiters may be woken now (see paceWakes); null: all at once. */
  private pacer: (() => number) | null = null;
  /** Waiters named by a wake-up, from `wakeHead` on, oldest first (no shift(): thousands). */
  private wakeQueue: Waiter[] = [];
  private wakeHead = 0;
  private drainScheduled = false;
  /** The long waits' timeouts (see expire). */
  private readonly deadlines = new Deadlines<Waiter>((w) => this.expire(w), DEADLINE_GRANULARITY_MS);
  /** Per big room, the waiters whose receipts or typing news is held back (see EPHEMERAL_PACE_WAITERS). */
  private readonly heldBack = new Map<string, Set<Waiter>>();
  /** Rooms last seen with more than EPHEMERAL_PACE_WAITERS waiters: when, and how many. */
  private readonly bigRooms = new Map<string, { at: number; waiters: number }>();

  /**
   * A wait's timeout. Computed the moment it fires: a wake-up handled later is not covered by it.
   * A waiter in line to be woken had news (a timeout would say there was none): it is woken now,
   * out of turn, rather than left waiting on its line.
   */
  private expire(w: Waiter): void {
    if (w.heldBack) w.wake({ reason: "woken", quietThrough: w.quiet });
    else w.wake(w.queued ? { reason: "woken", quietThrough: w.quiet } : { reason: "timeout", quietThrough: this.quietThrough(w.since) });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private readonly gapGiveUpMs: number;

  constructor(
    bus: Bus,
    private readonly metrics: Metrics,
    opts: { gapGiveUpMs?: number } = {},
  ) {
    this.gapGiveUpMs = opts.gapGiveUpMs ?? GAP_GIVE_UP_MS;
    this.unsubscribe = bus.subscribe((w) => this.onWakeUp(w));
  }

  /**
   * Waits until something for this user may have happened after `since`, or timeoutMs passed;
   * `onOutcome` is called once, from a microtask, with how the wait ended. With `presence: false`
   * (a filter that leaves out presence), wake-ups that only announce presence changes pass it by
   * (see isPresenceOnly); with `ephemeral: false` (a filter that leaves out receipts and typing),
   * so do rooms whose only news is those (WakeUp.ephemeralRooms). `holdBackIn`: rooms whose such
   * news the caller found and is to be answered paced (see pacedEphemeralNews). A callback, not a
   * promise: /sync parks its long-polls this way (see SyncService.answer), so a waiting request is
   * a few small objects, not a chain of suspended async functions and their promises.
   */
  park(
    userId: string,
    rooms: ReadonlySet<string>,
    since: number,
    timeoutMs: number,
    signal: CancelSignal | undefined,
    opts: { presence?: boolean; ephemeral?: boolean; holdBackIn?: readonly string[] },
    onOutcome: (outcome: WaitOutcome) => void,
  ): void {
    const now = (outcome: WaitOutcome) => queueMicrotask(() => onOutcome(outcome));
    if (this.closed) return now({ reason: "closed" });
    if (signal?.aborted) return now({ reason: "aborted" });
    // A write that committed after the caller read `since` but before it got here was announced
    // already; returning lets the caller look again instead of sleeping through it.
    if (this.position > since) {
      // Unless all that came since is more of what is being held back: while a big room's members
      // keep reading, the stream always moves on between a look and the wait, and each member
      // would be answered at once, over and over.
      if (opts.holdBackIn === undefined || this.pacedEphemeralNews(userId, rooms, since, this.position, opts.presence ?? true) === null) return now({ reason: "woken", quietThrough: null });
    }
    if (timeoutMs <= 0) return now({ reason: "timeout", quietThrough: this.quietThrough(since) });
    const waiter = new Waiter(this, userId, rooms, since, opts.presence ?? true, opts.ephemeral ?? true, signal, onOutcome);
    if (timeoutMs >= SHARED_DEADLINE_MIN_MS) this.deadlines.add(waiter, performance.now() + timeoutMs);
    else waiter.timer = setTimeout(() => this.expire(waiter), timeoutMs);
    signal?.addEventListener("abort", waiter.abort, { once: true });
    this.add(waiter);
    for (const r of opts.holdBackIn ?? []) this.holdBack(r, waiter, this.ephemeralPace(r, 0), null);
  }

  /** A waiter's wait is over: off its timer and the indexes (see Waiter.wake). */
  release(w: Waiter): void {
    if (w.timer !== undefined) clearTimeout(w.timer);
    else this.deadlines.remove(w);
    this.remove(w);
  }

  /**
   * Starts the announced-position watermark at `position`, the committed stream position read
   * when the process starts; `read` reads it again should a wake-up from another process be lost.
   */
  start(position: number, read: () => Promise<number>): void {
    this.rebaseline = read;
    this.rebaselining = false;
    this.resetWatermark(position);
  }

  /**
   * The highest position P such that every batch in (since, P] was announced here, for a wait
   * that began at `since` — or null if that is not known. A waiter that timed out was named by
   * none of those announcements (it would have been woken), so nothing in that window is news
   * to it.
   */
  private quietThrough(since: number): number | null {
    if (this.announced === null || since < this.floor || this.announced < since) return null;
    return this.announced;
  }

  /**
   * For a waiter (waiting since `since`) that wake-up `w` names first: the highest P such that
   * every batch in (since, P] was announced here and, since the waiter would have been woken by
   * any of them that named it, none did. That is where `w` begins, or less while a batch before
   * `w` is still missing (wake-ups from several processes arrive out of order). Null when the
   * watermark does not cover the wait (see quietThrough).
   *
   * A wave's members were last answered at positions of their own (other rooms, presence), but
   * all are woken by the same message: starting their windows where it begins lets the members
   * share the window's answers (see SyncService.build) instead of each asking its own.
   */
  private quietBefore(since: number, w: WakeUp): number | null {
    if (this.announced === null || since < this.floor || w.from === undefined) return null;
    return Math.max(since, Math.min(this.announced, w.from));
  }

  /**
   * The newest position heard of, if every batch up to it has been announced here (null while a
   * batch is missing: a wait from an earlier position would return at once, over and over).
   */
  heardPosition(): number | null {
    return this.announced !== null && this.announced >= this.position ? this.announced : null;
  }

  /**
   * The newest heard position at which more than presence changed: heardPosition, short of the
   * presence-only batches after the last other one. A /sync build that waited its turn in a wave
   * answers up to here, so the members woken by one message share one upper position — and with
   * it the cached timeline page and window news — while the presence refreshes of thousands of
   * members move the stream on in between. What it leaves out comes with the next long-poll.
   */
  heardNewsPosition(): number | null {
    const heard = this.heardPosition();
    return heard === null ? null : Math.min(heard, this.newsPosition);
  }

  /** Whether every batch up to `position` has been announced here (and its observers have run). */
  heardUpTo(position: number): boolean {
    return this.announced !== null && this.announced >= position;
  }

  /**
   * Whether every batch in (since, upto] has been announced here and its observers have run: a
   * cache filled at `since` and kept up to date by the observers still holds at `upto`. Not
   * across a lost batch: positions below the floor may never be announced.
   */
  heardAllBetween(since: number, upto: number): boolean {
    return since >= this.floor && this.heardUpTo(upto);
  }

  /**
   * Whether nothing in (since, upto] is news for this user: every batch of that window was
   * announced here, and none named the user or one of `rooms` (presence-only batches count only
   * with `presence`, rooms with only receipts or typing only with `ephemeral`). A long-poll coming
   * back while other rooms are busy finds the stream moved on; this answers "anything for me?"
   * without building a response.
   */
  quietBetween(userId: string, rooms: ReadonlySet<string>, since: number, upto: number, presence: boolean, ephemeral: boolean): boolean {
    if (upto <= since) return true;
    return this.visitWindow(since, upto, (w) => {
      if (w.presenceOnly === true && !presence) return true;
      if (w.users.includes(userId)) return false;
      for (const r of w.rooms) if (rooms.has(r)) return false;
      if (ephemeral && w.ephemeralRooms) for (const r of w.ephemeralRooms) if (rooms.has(r)) return false;
      return true;
    });
  }

  /**
   * Calls `visit` with each logged batch inside (since, upto], newest first, while it returns
   * true. False if the log does not cover that window (every batch of it announced here, none
   * dropped from the log), or if `visit` stopped.
   */
  private visitWindow(since: number, upto: number, visit: (w: WakeUp) => boolean): boolean {
    if (this.announced === null || this.announced < upto || since < this.floor || since < this.logStart) return false;
    const n = this.log.length;
    for (let i = 1; i <= n; i++) {
      const w = this.log[(this.logNext - i + n) % n]!;
      if (w.position <= since) {
        if (this.logOrdered) break;
        continue;
      }
      if (w.from! >= upto) continue;
      if (!visit(w)) return false;
    }
    return true;
  }

  private remember(w: WakeUp): void {
    if (this.log.length > 0 && w.from !== this.log[(this.logNext - 1 + this.log.length) % this.log.length]!.position) this.logOrdered = false;
    if (this.log.length < LOG_SIZE) {
      this.log.push(w);
      this.logNext = this.log.length % LOG_SIZE;
      return;
    }
    const evicted = this.log[this.logNext]!;
    if (evicted.position > this.logStart) this.logStart = evicted.position;
    this.log[this.logNext] = w;
    this.logNext = (this.logNext + 1) % LOG_SIZE;
  }

  private resetWatermark(position: number): void {
    this.announced = position;
    this.floor = position;
    this.logStart = Math.max(position, this.oldestLogged());
    for (const from of [...this.ahead.keys()]) if (from < position) this.ahead.delete(from);
    this.advance();
  }

  /** Where the log's coverage could begin: after the newest batch it has already dropped. */
  private oldestLogged(): number {
    return this.log.length < LOG_SIZE ? 0 : this.log[this.logNext]!.from!;
  }

  private advance(): void {
    for (let next = this.ahead.get(this.announced!); next !== undefined; next = this.ahead.get(this.announced!)) {
      this.ahead.delete(this.announced!);
      this.announced = next;
    }
    if (this.ahead.size === 0) this.gapSince = 0;
  }

  private track(w: WakeUp): void {
    if (this.legacyPeer) return;
    if (w.from === undefined) {
      // A peer that does not say which positions it announces: nothing can be vouched for, until
      // the process restarts.
      this.legacyPeer = true;
      this.announced = null;
      this.floor = Number.MAX_SAFE_INTEGER;
      this.ahead.clear();
      return;
    }
    this.remember(w);
    if (this.announced === null) {
      // Before `start`, or while the watermark is read again: keep what is heard meanwhile.
      if (this.ahead.size < MAX_AHEAD) this.ahead.set(w.from, w.position);
      if (!this.rebaselining) this.giveUpGap();
      return;
    }
    if (w.from <= this.announced) {
      if (w.position > this.announced) this.announced = w.position;
      this.advance();
      return;
    }
    this.ahead.set(w.from, w.position);
    const now = Date.now();
    if (this.gapSince === 0) this.gapSince = now;
    if (this.ahead.size > MAX_AHEAD || now - this.gapSince > this.gapGiveUpMs) {
      this.ahead.clear();
      this.giveUpGap();
    }
  }

  /**
   * A batch before the ones held ahead never arrived. Start over from the committed position:
   * waits that began before it are answered by building a response, as without the watermark.
   */
  private giveUpGap(): void {
    const read = this.rebaseline;
    this.announced = null;
    this.floor = Number.MAX_SAFE_INTEGER;
    this.gapSince = 0;
    if (!read || this.rebaselining) return;
    this.rebaselining = true;
    read().then(
      (position) => {
        this.rebaselining = false;
        if (!this.closed) this.resetWatermark(position);
      },
      () => {
        this.rebaselining = false;
      },
    );
  }

  /** Calls `fn` with every wake-up, before the waiters it wakes get to run (cache invalidation). */
  observe(fn: (w: WakeUp) => void): void {
    this.observers.push(fn);
  }

  /**
   * Wakes the waiters a wake-up names a few at a time rather than all at once: `capacity` says how
   * many may be woken now (the /sync build queue's free room), and `resumeWakes` is called when
   * that may have grown. A message into a room of 5,000 woke 5,000 long-polls in one go: each
   * resumed its request, read its rooms and lined up for a build slot, and what it allocated
   * then lived up to a second in that line, long enough for the collector to copy it twice.
   * Woken when a slot is near, the same work is done just before the build and dies young. The
   * order is the wake-up's, as before.
   */
  paceWakes(capacity: () => number): void {
    this.pacer = capacity;
  }

  /** There may be room to wake more queued waiters (see paceWakes). */
  resumeWakes(): void {
    if (this.wakeHead < this.wakeQueue.length) this.scheduleDrain();
  }

  /** Waiters named by a wake-up and not woken yet (see paceWakes). */
  get wakesQueued(): number {
    return this.wakeQueue.length - this.wakeHead;
  }

  private scheduleDrain(): void {
    if (this.drainScheduled) return;
    this.drainScheduled = true;
    // A macrotask: the waiters woken before have run their continuations (and lined up) by then.
    setImmediate(() => {
      this.drainScheduled = false;
      this.drain();
    });
  }

  private drain(): void {
    let room = this.pacer === null || this.closed ? Number.POSITIVE_INFINITY : this.pacer();
    const before = room;
    while (room > 0 && this.wakeHead < this.wakeQueue.length) {
      const w = this.wakeQueue[this.wakeHead++]!;
      w.wake(this.closed ? { reason: "closed" } : { reason: "woken", quietThrough: w.quiet });
      room--;
    }
    if (this.wakeHead === this.wakeQueue.length) {
      this.wakeQueue = [];
      this.wakeHead = 0;
      return;
    }
    if (this.wakeHead >= 1024 && this.wakeHead * 2 >= this.wakeQueue.length) {
      this.wakeQueue = this.wakeQueue.slice(this.wakeHead);
      this.wakeHead = 0;
    }
    // Those just woken that do not line up for a build (nothing new for them, client gone) leave
    // room at once: look again next turn. With no room at all, a finished build calls resumeWakes
    // (looking again each turn would spin while builds wait for the database).
    if (room < before) this.scheduleDrain();
  }

  /** Lets every waiter return (shutdown). */
  close(): void {
    this.closed = true;
    this.unsubscribe();
    this.heldBack.clear();
    for (const waiters of [...this.byUser.values()]) for (const w of waiters instanceof Set ? [...waiters] : [waiters]) w.wake({ reason: "closed" });
    this.drain();
  }

  private onWakeUp(w: WakeUp): void {
    if (w.position > this.position) this.position = w.position;
    this.track(w);
    for (const fn of this.observers) fn(w);
    const hit = new Set<Waiter>();
    const presenceOnly = isPresenceOnly(w);
    if (!presenceOnly && w.position > this.newsPosition) this.newsPosition = w.position;
    for (const u of w.users) {
      const waiters = this.byUser.get(u);
      if (waiters === undefined) continue;
      for (const waiter of waiters instanceof Set ? waiters : [waiters]) if (!presenceOnly || waiter.presence) hit.add(waiter);
    }
    const index = presenceOnly ? this.byRoomPresence : this.byRoom;
    for (const r of w.rooms) {
      const waiters = index.get(r);
      if (waiters === undefined) continue;
      if (waiters instanceof Set) for (const waiter of waiters) hit.add(waiter);
      else hit.add(waiters);
    }
    for (const r of w.ephemeralRooms ?? []) {
      const waiters = this.byRoom.get(r);
      if (waiters === undefined) continue;
      const paceMs = this.ephemeralPace(r, waiters instanceof Set ? waiters.size : 1);
      for (const waiter of waiters instanceof Set ? waiters : [waiters]) {
        if (!waiter.ephemeral || hit.has(waiter) || w.position <= waiter.since) continue;
        if (paceMs === 0) hit.add(waiter);
        else this.holdBack(r, waiter, paceMs, this.quietBefore(waiter.since, w));
      }
    }
    this.wakeAll(hit, w);
  }

  /**
   * For a long-poll back with news in (since, upto]: the rooms of `rooms` with receipts or typing
   * news there, if that is all its news and every one of them is a big room, whose such news is
   * answered paced (see EPHEMERAL_PACE_WAITERS); otherwise null. Without this, a member answered
   * for a receipt came back to find the next receipts already there, and was answered at once,
   * over and over, for as long as the room's members kept reading.
   */
  pacedEphemeralNews(userId: string, rooms: ReadonlySet<string>, since: number, upto: number, presence: boolean): string[] | null {
    if (upto <= since || this.bigRooms.size === 0) return null;
    const paced = new Set<string>();
    const onlyPaced = this.visitWindow(since, upto, (w) => {
      if (w.presenceOnly === true && !presence) return true;
      if (w.users.includes(userId)) return false;
      for (const r of w.rooms) if (rooms.has(r)) return false;
      for (const r of w.ephemeralRooms ?? []) {
        if (!rooms.has(r) || paced.has(r)) continue;
        const waiters = this.byRoom.get(r);
        if (this.ephemeralPace(r, waiters instanceof Set ? waiters.size : waiters === undefined ? 0 : 1) === 0) return false;
        paced.add(r);
      }
      return true;
    });
    return onlyPaced && paced.size > 0 ? [...paced] : null;
  }

  /** Notes that `room` has `waiters` (more than EPHEMERAL_PACE_WAITERS) parked now. */
  private seenBig(room: string, waiters: number): void {
    const now = performance.now();
    const big = this.bigRooms.get(room);
    if (big === undefined) this.bigRooms.set(room, { at: now, waiters });
    else {
      big.at = now;
      if (waiters > big.waiters) big.waiters = waiters;
    }
  }

  /** How long receipts and typing news in `room` are held back: 0 for a small room. */
  private ephemeralPace(room: string, waiters: number): number {
    const now = performance.now();
    if (waiters > EPHEMERAL_PACE_WAITERS) this.seenBig(room, waiters);
    else {
      const big = this.bigRooms.get(room);
      if (big === undefined) return 0;
      if (now - big.at > BIG_ROOM_MEMORY_MS) {
        this.bigRooms.delete(room);
        return 0;
      }
      waiters = big.waiters;
    }
    return Math.min(EPHEMERAL_PACE_MAX_MS, Math.max(EPHEMERAL_PACE_MIN_MS, waiters * EPHEMERAL_PACE_MS_PER_WAITER));
  }

  /**
   * `quiet`: what waking it at once would have vouched for (see quietBefore); it still holds when
   * the held news is let go, so the members let go together share their windows' answers.
   */
  private holdBack(room: string, waiter: Waiter, ms: number, quiet: number | null): void {
    let held = this.heldBack.get(room);
    if (held === undefined) {
      this.heldBack.set(room, (held = new Set()));
      // Unreferenced: a notifier closed meanwhile lets the process exit; the flush finds nothing.
      setTimeout(() => this.flushHeldBack(room), ms).unref();
    }
    held.add(waiter);
    if (!waiter.heldBack) {
      waiter.heldBack = true;
      waiter.quiet = quiet;
    }
  }

  /** Wakes the waiters of `room` whose receipts or typing news was held back. */
  private flushHeldBack(room: string): void {
    const held = this.heldBack.get(room);
    if (held === undefined) return;
    this.heldBack.delete(room);
    const hit = new Set<Waiter>();
    for (const waiter of held) if (!waiter.queued && !waiter.isSettled) hit.add(waiter);
    this.wakeAll(hit, null);
  }

  /**
   * `w`: the wake-up that names them; null for held-back news. A waiter whose news was held back
   * keeps where its quiet ended then: a later wake-up's window would pass over the held news.
   */
  private wakeAll(hit: ReadonlySet<Waiter>, w: WakeUp | null): void {
    const quiet = (waiter: Waiter) => (w === null || waiter.heldBack ? waiter.quiet : this.quietBefore(waiter.since, w));
    if (this.pacer === null) {
      for (const waiter of hit) if (w === null || w.position > waiter.since) waiter.wake({ reason: "woken", quietThrough: quiet(waiter) });
      return;
    }
    let queued = false;
    for (const waiter of hit) {
      if (w !== null && w.position <= waiter.since) continue;
      // Off the indexes now: later wake-ups must not line it up twice.
      this.remove(waiter);
      waiter.queued = true;
      waiter.quiet = quiet(waiter);
      this.wakeQueue.push(waiter);
      queued = true;
    }
    if (queued) this.drain();
  }

  private add(w: Waiter): void {
    addTo(this.byUser, w.userId, w);
    for (const r of w.rooms) {
      const waiters = addTo(this.byRoom, r, w);
      // Measured where the waiters gather (all parked before a message), not only when receipts
      // come: by then most members are being answered, and a room never seen big was never paced.
      if (waiters instanceof Set && waiters.size > EPHEMERAL_PACE_WAITERS) this.seenBig(r, waiters.size);
    }
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

/**
 * The waiters of one user or room: the waiter itself while it is the only one. Most users wait with
 * one device; a Set per wait, made and dropped every long-poll cycle, lived as long as the wait.
 */
type Waiters = Waiter | Set<Waiter>;

/** Returns the key's waiters after the addition. */
function addTo(map: Map<string, Waiters>, key: string, w: Waiter): Waiters {
  const waiters = map.get(key);
  if (waiters === undefined) {
    map.set(key, w);
    return w;
  }
  if (waiters instanceof Set) {
    waiters.add(w);
    return waiters;
  }
  if (waiters === w) return w;
  const both = new Set([waiters, w]);
  map.set(key, both);
  return both;
}

function removeFrom(map: Map<string, Waiters>, key: string, w: Waiter): boolean {
  const waiters = map.get(key);
  if (waiters === w) {
    map.delete(key);
    return true;
  }
  if (!(waiters instanceof Set) || !waiters.delete(w)) return false;
  if (waiters.size === 0) map.delete(key);
  return true;
}
