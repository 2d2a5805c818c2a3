/**
 * Reading the notifications recorded with each event (see migration 012): one shared row per event
 * for the outcome most members got (`event_push_shared`), and rows of their own only for members
 * whose outcome differs (`event_push_actions`, `notify` 0 or 1). A member is notified by an event
 * if they have a row of their own saying so, or, having none, if a shared row exists, they were
 * joined before its position (their current stretch in the room, `room_members.joined_at`) and
 * did not send it.
 *
 * Unread counts, for rooms the user is joined to, are the notifications after both their
 * main-timeline read receipt and the join that began their current stretch in the room: leaving
 * and joining again starts afresh, and the notification of an invite ends with its acceptance.
 */
import { sql, type ExpressionBuilder } from "kysely";
import type { Db, Tx } from "../storage/database.js";
import type { Database } from "../storage/schema.js";
import { prepared } from "../storage/prepared.js";
import { mainTimelineReads } from "../rooms/ephemeral.js";

export interface UnreadCounts {
  notify: number;
  highlight: number;
  threads: Record<string, { notification_count: number; highlight_count: number }>;
}

/** The position of the user's newest main-timeline read receipt in the room `m.room_id` of the outer query (null without). */
function readPositionIn(db: Db, userId: string) {
  return mainTimelineReads(db, userId)
    .select((eb) => eb.fn.max("e.stream_ordering").as("pos"))
    .where("r.room_id", "=", sql.ref<string>("m.room_id"));
}

/**
 * Unread counts per joined room of the user, up to `upto`, in one statement: rows per room and
 * kind (own, shared) after the later of read position and join.
 *
 * Driven from the user's memberships, each room's read position looked up by its key: a join of
 * the notification tables with all of the user's receipts let SQLite scan every shared row and
 * every receipt of the server. CROSS JOIN keeps SQLite's join order (memberships outside, then
 * each room's rows by key, from the lower bound on); PostgreSQL treats it as an inner join. The
 * read position is looked up once per room (the materialised CTE) rather than in each condition
 * that needs it: SQLite inlined it three times, and PostgreSQL took longer to plan the repeated
 * subqueries than to run them.
 */
function unreadQuery(db: Db, userId: string, upto: number, roomId?: string) {
  // The later of read position and join, as one bound each key range starts from (CASE: SQLite
  // and PostgreSQL spell GREATEST apart).
  const lowerBound = sql<number>`case when b.rp > b.joined_at then b.rp else b.joined_at end`;
  return db
    .with((cte) => cte("b").materialized(), (q) =>
      q
        .selectFrom("room_members as m")
        .select(["m.room_id", "m.joined_at", sql<number>`coalesce((${readPositionIn(db, userId)}), 0)`.as("rp")])
        .where("m.user_id", "=", userId)
        .where("m.membership", "=", "join")
        .$if(roomId !== undefined, (q2) => q2.where("m.room_id", "=", roomId!)),
    )
    // The member's own rows: those that notify count, and each one at the position of a shared
    // row that would count takes that row back out (a row of one's own replaces the shared
    // outcome). Done from the few own rows rather than by probing for one at every shared row.
    .selectFrom("b")
    .crossJoin("event_push_actions as a")
    .leftJoin("event_push_shared as s2", (j) => j.onRef("s2.room_id", "=", "a.room_id").onRef("s2.stream_ordering", "=", "a.stream_ordering").on("s2.sender", "!=", userId))
    .select(["b.room_id", sql<number>`sum(a.notify) - count(s2.stream_ordering)`.as("n"), sql<number>`sum(a.highlight) - coalesce(sum(s2.highlight), 0)`.as("h")])
    .where("a.user_id", "=", userId)
    .whereRef("a.room_id", "=", "b.room_id")
    .where("a.stream_ordering", ">", lowerBound)
    .where("a.stream_ordering", "<=", upto)
    .groupBy("b.room_id")
    .unionAll((q) =>
      q
        .selectFrom("b")
        .crossJoin("event_push_shared as s")
        .select(["b.room_id", (eb) => eb.fn.countAll<number>().as("n"), (eb) => eb.fn.sum<number>("s.highlight").as("h")])
        .whereRef("s.room_id", "=", "b.room_id")
        .where("s.stream_ordering", ">", lowerBound)
        .where("s.stream_ordering", "<=", upto)
        .where("s.sender", "!=", userId)
        .groupBy("b.room_id"),
    );
}

// Every /sync asks it for each room with news it cannot carry (sync/unread-tracker.ts), a wave of
// woken long-polls thousands of times: compiled once (see prepared.ts).
const selectUnreadInRoom = prepared((db, userId: string, roomId: string, upto: number) => unreadQuery(db, userId, upto, roomId));
const selectUnreadByRoom = prepared((db, userId: string, upto: number) => unreadQuery(db, userId, upto));

function tally(rows: ReadonlyArray<{ room_id: string; n: number; h: number | null }>): Map<string, UnreadCounts> {
  const out = new Map<string, UnreadCounts>();
  for (const r of rows) {
    const c = out.get(r.room_id) ?? { notify: 0, highlight: 0, threads: {} };
    c.notify += Number(r.n);
    c.highlight += Number(r.h ?? 0);
    out.set(r.room_id, c);
  }
  return out;
}

/** Notifications of the user in the room (if joined) after their read receipt and their join, up to `upto`. */
export async function unreadInRoom(db: Db, userId: string, roomId: string, upto: number): Promise<UnreadCounts> {
  return tally(await selectUnreadInRoom(db, userId, roomId, upto)).get(roomId) ?? { notify: 0, highlight: 0, threads: {} };
}

/**
 * unreadInRoom for every room the user is joined to, up to `upto`, in one statement (an initial
 * /sync, a push badge). Rooms without unread notifications are absent.
 */
export async function unreadByRoom(db: Db, userId: string, upto = Number.MAX_SAFE_INTEGER): Promise<Map<string, UnreadCounts>> {
  return tally(await selectUnreadByRoom(db, userId, upto));
}

/** Who one event notifies, as recorded: the shared outcome, and the members who got another. */
export interface OutcomeAt {
  /** The shared outcome, when it notifies. */
  shared: { sender: string; highlight: number } | null;
  /** Members with an outcome of their own. */
  own: ReadonlyMap<string, { notify: number; highlight: number }>;
}

const selectSharedAt = prepared((db, pos: number) => db.selectFrom("event_push_shared").select(["sender", "highlight"]).where("stream_ordering", "=", pos));
const selectOwnAt = prepared((db, pos: number) => db.selectFrom("event_push_actions").select(["user_id", "notify", "highlight"]).where("stream_ordering", "=", pos));

export async function outcomeAt(db: Db, pos: number): Promise<OutcomeAt> {
  const [shared] = await selectSharedAt(db, pos);
  const own = new Map((await selectOwnAt(db, pos)).map((r) => [r.user_id, { notify: Number(r.notify), highlight: Number(r.highlight) }]));
  return { shared: shared ? { sender: shared.sender, highlight: Number(shared.highlight) } : null, own };
}

/**
 * Whether `userId`, joined throughout, is notified by an event with this outcome, and with a
 * highlight: undefined if not notified.
 */
export function notifiesMember(outcome: OutcomeAt, userId: string): number | undefined {
  const own = outcome.own.get(userId);
  if (own) return own.notify === 1 ? own.highlight : undefined;
  if (outcome.shared && outcome.shared.sender !== userId) return outcome.shared.highlight;
  return undefined;
}

type SharedAndMember = Database & { s: Database["event_push_shared"]; m: Database["room_members"] };

/**
 * Whether the shared row `s` concerns the member row `m` of its room: joined now, in a stretch
 * that began before it, not its sender, and without a row of their own for it. The expansion
 * push delivery and notifiedAt share.
 */
export function sharedConcerns(eb: ExpressionBuilder<SharedAndMember, "s" | "m">) {
  return eb.and([
    eb("m.membership", "=", "join"),
    eb("m.joined_at", "<", eb.ref("s.stream_ordering")),
    eb("m.user_id", "!=", eb.ref("s.sender")),
    eb.not(
      eb.exists(
        eb
          .selectFrom("event_push_actions as x")
          .select("x.notify")
          .whereRef("x.user_id", "=", "m.user_id")
          .whereRef("x.room_id", "=", "s.room_id")
          .whereRef("x.stream_ordering", "=", "s.stream_ordering"),
      ),
    ),
  ]);
}

/**
 * Everyone the event at `pos` notifies, expanded: rows of their own, and the members the shared
 * row concerns (sharedConcerns).
 */
export async function notifiedAt(db: Db | Tx, pos: number): Promise<Array<{ user_id: string; highlight: number }>> {
  const own = db.selectFrom("event_push_actions").select(["user_id", "highlight"]).where("stream_ordering", "=", pos).where("notify", "=", 1);
  const shared = db
    .selectFrom("event_push_shared as s")
    .innerJoin("room_members as m", "m.room_id", "s.room_id")
    .select(["m.user_id", "s.highlight"])
    .where("s.stream_ordering", "=", pos)
    .where(sharedConcerns);
  return (await own.unionAll(shared).execute()).map((r) => ({ user_id: r.user_id, highlight: Number(r.highlight) }));
}
