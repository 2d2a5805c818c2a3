import { add, touch } from "../lib/lru.js";

/** A user's membership rows as /sync reads them. */
export interface MemberRow {
  room_id: string;
  membership: string;
  stream_ordering: number;
  event_id: string;
}

/** A user's memberships as cached: the rows, and what every long-poll cycle derives from them. */
export interface Memberships {
  readonly rows: readonly MemberRow[];
  /** The newest row's position (0 without rows). */
  readonly newest: number;
  /** The rooms joined. */
  readonly joined: ReadonlySet<string>;
}

/**
 * The memberships as of `upto`: rows that moved past it wait for the next sync. Every long-poll
 * cycle asks this twice (which rooms wake it, which rooms to build), almost always for a position
 * at or past the newest row: then the cached rows and room set are handed out as they are. A
 * fresh array and set per request lived as long as the request waited, and the collector copied
 * them with it.
 */
export function membershipsAt(m: Memberships, upto: number): Memberships {
  if (m.newest <= upto) return m;
  return membershipsOf(m.rows.filter((r) => r.stream_ordering <= upto));
}

/** Rows as read (a fresh array, frozen here: requests share it). */
export function membershipsOf(rows: MemberRow[]): Memberships {
  let newest = 0;
  const joined = new Set<string>();
  for (const r of rows) {
    if (r.stream_ordering > newest) newest = r.stream_ordering;
    if (r.membership === "join") joined.add(r.room_id);
  }
  return { rows: Object.freeze(rows), newest, joined };
}

/**
 * Each user's room memberships, kept between /sync requests. Every long-poll cycle needs them
 * (which rooms to build, which rooms wake it), and an account in 1,500 rooms reads 1,500 rows
 * each time; with 20,000 clients cycling that was a fifth of the server's database time.
 *
 * Every membership change (and forgetting a room) is a stream write naming the user, so the
 * wake-up that announces it drops the entry here (`drop`, called by the notifier's observer)
 * before any waiter runs. An entry is the promise of its load, stored when the load starts: a
 * drop during the load removes it, so no answer read before a change outlives its wake-up. That
 * makes a cached answer right for any position the notifier has heard of (the caller checks),
 * never for one it has not: positions committed but not yet announced read the database.
 */
export class MembershipCache {
  private readonly entries = new Map<string, Promise<Memberships>>();

  constructor(
    private readonly load: (userId: string) => Promise<MemberRow[]>,
    /** Users kept; the least recently used go first. */
    private readonly limit = 50_000,
  ) {}

  get(userId: string): Promise<Memberships> {
    const hit = this.entries.get(userId);
    if (hit) {
      touch(this.entries, userId, hit, this.limit);
      return hit;
    }
    const loading = this.load(userId).then(membershipsOf);
    add(this.entries, userId, loading, this.limit);
    loading.catch(() => {
      if (this.entries.get(userId) === loading) this.entries.delete(userId);
    });
    return loading;
  }

  drop(userId: string): void {
    this.entries.delete(userId);
  }

  get size(): number {
    return this.entries.size;
  }
}
