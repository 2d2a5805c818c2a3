import type { Db } from "../storage/database.js";
import { notifiesMember, outcomeAt, type OutcomeAt, type UnreadCounts } from "../push/notifications.js";
import { prepared } from "../storage/prepared.js";
import type { SharedSyncCache } from "./shared-cache.js";
import { add, touch } from "../lib/lru.js";

/**
 * Windows (in stream positions) up to this wide read the room's positions from a page shared by
 * everyone answered at the same upper position; a long-poll's windows are this narrow.
 */
const NEAR = 100;
/**
 * Widest window carried forward; wider ones count afresh. Beyond the near page they read a second
 * page: the room's newest MAX_EVENTS + 1 positions in the last FAR positions. That is the first
 * wave after thousands of members connected (their connecting moved the stream thousands of
 * positions, and each counted afresh: a fresh count per member was the wave's largest SQL item).
 * Matches the widest window whose news sync shares (SHARED_WINDOW): beyond it there are no window
 * news to vouch for the absence of receipts, so nothing is carried anyway.
 */
const FAR = 5000;
/** Most of the room's events a carried window may hold (each is looked at per member); more count afresh. */
const MAX_EVENTS = 100;
/**
 * How long counts are carried forward before they are counted afresh. Retention removes push
 * actions of expired events without a sign this process would see; this bounds how long a count
 * may still include them.
 */
const MAX_AGE_MS = 5 * 60_000;
/** Devices × rooms remembered; the least recently answered go first. */
const LIMIT = 200_000;

/** The room's newest `limit` event positions in (since, upto], newest first. */
const selectRoomPositions = prepared((db, roomId: string, since: number, upto: number, limit: number) =>
  db
    .selectFrom("events")
    .select("stream_ordering")
    .where("room_id", "=", roomId)
    .where("stream_ordering", ">", since)
    .where("stream_ordering", "<=", upto)
    .orderBy("stream_ordering", "desc")
    .limit(limit),
);

interface Entry {
  pos: number;
  notify: number;
  highlight: number;
  /** When the counts were last counted afresh. */
  counted: number;
}

/**
 * Unread counts per device and room, carried from one /sync answer to the next. Every member of a
 * big room asks for its count in the room after each message; counting its notifications after
 * its read receipt is one query per member (a scan that grows with what it has not read), and a
 * wave of thousands of woken long-polls spent a tenth of its time there.
 *
 * A device's next request names the position of its last answer (`since`). If nothing that
 * changes the count otherwise happened since — no read receipt of the user in the room, no
 * change of their membership (which decides what the room's shared notifications mean for
 * them) — the count at `upto` is the old one plus what the room's events in (since, upto] added
 * for the user. Those events and whom each notifies are read once for everybody (the shared
 * cache), so a member's count becomes a few map lookups. Anything else counts afresh.
 */
export class UnreadTracker {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly db: Db,
    private readonly shared: SharedSyncCache,
    /** Counts afresh: notifications after the read receipt, up to `upto`. */
    private readonly countAfresh: (userId: string, roomId: string, upto: number) => Promise<Pick<UnreadCounts, "notify" | "highlight">>,
  ) {}

  /**
   * The counts for a room of the viewer at `upto`. `carry`: the caller vouches that the user was
   * joined throughout (since, upto] and set no read receipt in the room in it. `from` (at or after
   * `since`): the caller also vouches that the room had no events in (since, from] (see
   * SyncRun.from in sync.ts), so only (from, upto] is looked at.
   */
  async counts(userId: string, deviceId: string, roomId: string, since: number | null, from: number | null, upto: number, carry: boolean, now = Date.now()): Promise<Pick<UnreadCounts, "notify" | "highlight">> {
    const key = `${userId}\u0000${deviceId}\u0000${roomId}`;
    const last = this.entries.get(key);
    let notify = 0;
    let highlight = 0;
    let counted = now;
    const canCarry = last !== undefined && carry && since !== null && from !== null && from >= since && last.pos === since && upto >= from && upto - from <= FAR && now - last.counted < MAX_AGE_MS;
    // Read before any await: entries are updated in place, and another request of the device
    // (a retry) may update this one while this request waits.
    if (canCarry) ({ notify, highlight, counted } = last);
    const carried = canCarry ? (upto > from ? await this.positions(roomId, from, upto) : []) : null;
    if (carried !== null) {
      for (const pos of carried) {
        const h = notifiesMember(await this.outcomeAt(pos), userId);
        if (h === undefined) continue;
        notify += 1;
        highlight += h;
      }
    } else {
      ({ notify, highlight } = await this.countAfresh(userId, roomId, upto));
      counted = now;
    }
    this.store(key, upto, notify, highlight, counted);
    return { notify, highlight };
  }

  /**
   * Counts an initial sync counted afresh for every room at once, as of `upto`: the device's first
   * long-poll carries them forward instead of counting each room again.
   */
  remember(userId: string, deviceId: string, roomId: string, upto: number, counts: Pick<UnreadCounts, "notify" | "highlight">, now = Date.now()): void {
    this.store(`${userId}\u0000${deviceId}\u0000${roomId}`, upto, counts.notify, counts.highlight, now);
  }

  /**
   * An existing entry is updated where it is rather than replaced: a new object per answer would
   * live until the device's next answer, long enough for the collector to copy it twice.
   */
  private store(key: string, pos: number, notify: number, highlight: number, counted: number): void {
    const entry = this.entries.get(key);
    if (!entry) return add(this.entries, key, { pos, notify, highlight, counted }, LIMIT);
    entry.pos = pos;
    entry.notify = notify;
    entry.highlight = highlight;
    entry.counted = counted;
    touch(this.entries, key, entry, LIMIT);
  }

  /**
   * Positions of the room's events in (since, upto], or null when there are more than MAX_EVENTS.
   * Asked once per room and upper position — for the last NEAR positions, or the room's newest
   * events in the last FAR — so members whose last answers were at different positions still
   * share it.
   */
  private async positions(roomId: string, since: number, upto: number): Promise<number[] | null> {
    const near = upto - since <= NEAR;
    const page = await this.shared.get(
      `positions:${near ? "near" : "far"}:${roomId}:${upto}`,
      roomId,
      async () => (await selectRoomPositions(this.db, roomId, Math.max(0, upto - (near ? NEAR : FAR)), upto, near ? NEAR : MAX_EVENTS + 1)).map((r) => Number(r.stream_ordering)),
      (p) => 64 + p.length * 16,
    );
    const mine = page.filter((p) => p > since);
    return mine.length > MAX_EVENTS ? null : mine;
  }

  /**
   * Whom the event at `pos` notifies. Rows at a committed position are written with the event and
   * only ever removed with it (retention), so the answer is filed by position alone and survives
   * the wake-ups of later messages into the room.
   */
  private outcomeAt(pos: number): Promise<OutcomeAt> {
    return this.shared.get(
      `push-outcome:${pos}`,
      undefined,
      () => outcomeAt(this.db, pos),
      (o) => 128 + o.own.size * 96,
    );
  }
}
