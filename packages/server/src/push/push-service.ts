import { parseUserId } from "@revier/protocol";
import type { Db, Tx } from "../storage/database.js";
import type { StreamWriter } from "../storage/stream.js";
import type { PersistContext } from "../rooms/room-events.js";
import type { Bus } from "../bus/bus.js";
import { toClientEvent } from "../rooms/client-event.js";
import { buildRuleset, emptyPushRules, parseStoredPushRules, type UserPushRules } from "./ruleset.js";
import { summariseActions, type PushMatch } from "./evaluate.js";
import { evaluateForRecipients, localpartNeedle, type PushRecipient } from "./evaluate-many.js";
import type { Ruleset } from "./default-rules.js";
import { prepared } from "../storage/prepared.js";
import { notifiedAt, unreadByRoom, unreadInRoom, type UnreadCounts } from "./notifications.js";
import { chunks } from "../lib/chunks.js";

/**
 * Told, inside the event's transaction, that an event notifies someone. Must not block or touch the
 * database: push delivery only notes the position here and works after commit.
 */
export type NotificationListener = (ctx: PersistContext) => void;

type PushActionRow = { room_id: string; user_id: string; event_id: string; stream_ordering: number; thread_id: string; notify: number; highlight: number };
type PushActionParams = [string, string, string, number, string, number, number];
const pushActionParams = (r: PushActionRow): PushActionParams => [r.room_id, r.user_id, r.event_id, r.stream_ordering, r.thread_id, r.notify, r.highlight];
const pushActionRow = (p: readonly unknown[], at: number): PushActionRow => ({
  room_id: p[at] as string,
  user_id: p[at + 1] as string,
  event_id: p[at + 2] as string,
  stream_ordering: p[at + 3] as number,
  thread_id: p[at + 4] as string,
  notify: p[at + 5] as number,
  highlight: p[at + 6] as number,
});
/** Rows per multi-row insert of push actions: 700 parameters, well inside both databases' limits. */
const PUSH_ROWS = 100;
const insertPushAction = prepared((db, ...p: PushActionParams) => db.insertInto("event_push_actions").values(pushActionRow(p, 0)));
const insertPushActions = prepared((db, ...p: Array<string | number>) => db.insertInto("event_push_actions").values(Array.from({ length: PUSH_ROWS }, (_, r) => pushActionRow(p, r * 7))));
const insertShared = prepared((db, stream_ordering: number, room_id: string, event_id: string, sender: string, thread_id: string, highlight: number) =>
  db.insertInto("event_push_shared").values({ stream_ordering, room_id, event_id, sender, thread_id, highlight }),
);

function localpartOf(userId: string): string {
  return parseUserId(userId)?.localpart ?? userId;
}

/** No rules of the user's own and no default rule changed: the server's defaults as they are. */
function isUntouched(stored: UserPushRules): boolean {
  return Object.values(stored.custom).every((rules) => rules.length === 0) && Object.values(stored.defaults).every((changes) => Object.keys(changes).length === 0);
}

/**
 * A user's rules as the cache keeps them. The full ruleset (about 5 KB of objects) is built when
 * first asked for: a message into a channel evaluates the untouched defaults once for all the
 * members it does not single out (evaluateForRecipients), so most members' rulesets were built,
 * kept and never read — 26 MB for a channel of 5,000, and the first message after a start
 * built them all inside its write.
 */
class RulesetEntry {
  private built: Ruleset | null = null;
  readonly localpartNeedle: string | null;

  constructor(
    private readonly userId: string,
    readonly localpart: string,
    /** Null for untouched defaults. */
    private readonly stored: UserPushRules | null,
  ) {
    this.localpartNeedle = localpartNeedle(localpart);
  }

  get defaultsOnly(): boolean {
    return this.stored === null;
  }

  get ruleset(): Ruleset {
    return (this.built ??= buildRuleset(this.userId, this.localpart, this.stored ?? undefined));
  }
}

/** One recipient of an event: its cached rules, and the display name it has in the room. */
class Recipient implements PushRecipient {
  constructor(
    readonly userId: string,
    private readonly entry: RulesetEntry,
    readonly displayName?: string,
  ) {}

  get localpart(): string {
    return this.entry.localpart;
  }

  get localpartNeedle(): string | null {
    return this.entry.localpartNeedle;
  }

  get defaultsOnly(): boolean {
    return this.entry.defaultsOnly;
  }

  get ruleset(): Ruleset {
    return this.entry.ruleset;
  }
}

/** What an event does for one recipient. */
type Outcome = "silent" | "notify" | "highlight";
const SILENT: Outcome = "silent";
const NOTIFY: Outcome = "notify";
const HIGHLIGHT: Outcome = "highlight";

/**
 * Push rules per user, and the notifications recorded when an event is stored (notifications.ts
 * reads them): they feed the unread/highlight counts in /sync and push delivery.
 */
export class PushService {
  // Built rulesets per user. A rule change is announced on the bus with the user in the wake-up,
  // which drops the entry here and in every other process.
  private readonly cache = new Map<string, RulesetEntry>();
  private static readonly CACHE_LIMIT = 50_000;
  private readonly notificationListeners: NotificationListener[] = [];

  constructor(
    private readonly db: Db,
    private readonly stream: StreamWriter,
    bus: Bus,
  ) {
    bus.subscribe((w) => {
      for (const u of w.users) this.cache.delete(u);
    });
  }

  onNotifications(listener: NotificationListener): void {
    this.notificationListeners.push(listener);
  }

  async stored(userId: string, db: Db | Tx = this.db): Promise<UserPushRules> {
    const row = await db.selectFrom("push_rules").select("json").where("user_id", "=", userId).executeTakeFirst();
    return row ? parseStoredPushRules(JSON.parse(row.json)) : emptyPushRules();
  }

  async ruleset(userId: string, db: Db | Tx = this.db): Promise<Ruleset> {
    return (await this.entry(userId, db)).ruleset;
  }

  /** The built ruleset, the localpart it matches, and whether the user changed nothing about the defaults. */
  private async entry(userId: string, db: Db | Tx): Promise<RulesetEntry> {
    return this.cache.get(userId) ?? this.remember(userId, await this.stored(userId, db));
  }

  /**
   * entry() for many users, reading the rules of those not cached in statements of 500 users: the
   * first message into a room of thousands after a start would otherwise read them one by one
   * inside its write transaction.
   */
  private async entries(userIds: readonly string[], db: Db | Tx): Promise<RulesetEntry[]> {
    // Taken from the cache once, up front: remembering the missing ones may clear it.
    const known = new Map<string, RulesetEntry>();
    for (const u of userIds) {
      const hit = this.cache.get(u);
      if (hit) known.set(u, hit);
    }
    const found = new Map<string, UserPushRules>();
    for (const batch of chunks(userIds.filter((u) => !known.has(u)))) {
      for (const r of await db.selectFrom("push_rules").select(["user_id", "json"]).where("user_id", "in", batch).execute()) found.set(r.user_id, parseStoredPushRules(JSON.parse(r.json)));
    }
    return userIds.map((u) => known.get(u) ?? this.remember(u, found.get(u) ?? emptyPushRules()));
  }

  private remember(userId: string, stored: UserPushRules): RulesetEntry {
    const built = new RulesetEntry(userId, localpartOf(userId), isUntouched(stored) ? null : stored);
    if (this.cache.size >= PushService.CACHE_LIMIT) this.cache.clear();
    this.cache.set(userId, built);
    return built;
  }

  /**
   * Applies a change to the user's rules and announces the new ruleset as `m.push_rules` account
   * data, which is how clients learn of rule changes through /sync.
   */
  async update(userId: string, change: (stored: UserPushRules) => UserPushRules): Promise<void> {
    await this.stream.write(async (w) => {
      const next = change(await this.stored(userId, w.tx));
      const json = JSON.stringify(next);
      await w.tx
        .insertInto("push_rules")
        .values({ user_id: userId, json })
        .onConflict((oc) => oc.column("user_id").doUpdateSet({ json }))
        .execute();
      const ruleset = buildRuleset(userId, localpartOf(userId), next);
      const content = JSON.stringify({ global: ruleset });
      const pos = w.next();
      await w.tx
        .insertInto("account_data")
        .values({ user_id: userId, room_id: "", type: "m.push_rules", content, stream_pos: pos })
        .onConflict((oc) => oc.columns(["user_id", "room_id", "type"]).doUpdateSet({ content, stream_pos: pos }))
        .execute();
      w.touch({ users: [userId] });
      this.cache.delete(userId);
    });
  }

  /**
   * Persist hook: evaluates every member's rules for the new event inside its transaction. The
   * member list and power levels come from the write path's per-room cache (`ctx.room`), so a
   * message into a big room does not re-read thousands of member rows under the stream lock.
   */
  async recordActions(ctx: PersistContext): Promise<void> {
    const { tx, event } = ctx;
    const pdu = event.pdu;
    const joined = await ctx.room.joinedMembers();
    const recipients: Array<{ user_id: string; displayname: string | null }> = [];
    for (const [user_id, displayname] of joined) if (user_id !== pdu.sender) recipients.push({ user_id, displayname });
    // An invite notifies its target, who is not joined (yet).
    if (pdu.type === "m.room.member" && pdu.state_key && pdu.state_key !== pdu.sender && pdu.content.membership === "invite" && !joined.has(pdu.state_key)) {
      recipients.push({ user_id: pdu.state_key, displayname: typeof pdu.content.displayname === "string" ? pdu.content.displayname : null });
    }
    if (recipients.length === 0) return;
    const joinedCount = joined.size;
    const pl = (await ctx.room.stateContent("m.room.power_levels")) ?? {};
    const users = (pl.users ?? {}) as Record<string, unknown>;
    const senderLevel = typeof users[pdu.sender] === "number" ? (users[pdu.sender] as number) : typeof pl.users_default === "number" ? pl.users_default : 0;
    const notificationLevels = (pl.notifications ?? {}) as Record<string, number>;
    const clientEvent = toClientEvent({ event_id: event.eventId, json: JSON.stringify(pdu), stream_ordering: event.streamOrdering, redacted_by: null, sender: pdu.sender, txn_device: null, txn_id: null });
    const rel = pdu.content["m.relates_to"] as { rel_type?: string; event_id?: string } | undefined;
    const threadId = rel?.rel_type === "m.thread" && typeof rel.event_id === "string" ? rel.event_id : "main";
    const entries = await this.entries(
      recipients.map((m) => m.user_id),
      tx,
    );
    const withRules: PushRecipient[] = recipients.map((m, i) => new Recipient(m.user_id, entries[i]!, m.displayname || undefined));
    const matches = evaluateForRecipients(withRules, { ...clientEvent }, { roomMemberCount: joinedCount, senderPowerLevel: senderLevel, notificationPowerLevels: notificationLevels });
    // One outcome per recipient; the shared evaluation hands the same match to most of them.
    const summaries = new Map<PushMatch | null, Outcome>();
    const outcomes = matches.map((m) => {
      let o = summaries.get(m);
      if (!o) {
        const s = m ? summariseActions(m.actions) : null;
        o = s?.notify ? (s.highlight ? HIGHLIGHT : NOTIFY) : SILENT;
        summaries.set(m, o);
      }
      return o;
    });
    // The outcome most joined members got is stored once (event_push_shared), if it notifies; the
    // others get rows of their own. Recipients not joined (an invite's target) are not covered by
    // the shared row and keep their own whenever they are notified.
    const tally = new Map<Outcome, number>();
    for (let i = 0; i < withRules.length; i++) if (joined.has(withRules[i]!.userId)) tally.set(outcomes[i]!, (tally.get(outcomes[i]!) ?? 0) + 1);
    let common: Outcome = SILENT;
    for (const [o, n] of tally) if (n > (tally.get(common) ?? 0)) common = o;
    const rows: PushActionRow[] = [];
    for (let i = 0; i < withRules.length; i++) {
      const o = outcomes[i]!;
      const covered = common !== SILENT && joined.has(withRules[i]!.userId);
      if (covered ? o === common : o === SILENT) continue;
      rows.push({ room_id: event.roomId, user_id: withRules[i]!.userId, event_id: event.eventId, stream_ordering: event.streamOrdering, thread_id: threadId, notify: o === SILENT ? 0 : 1, highlight: o === HIGHLIGHT ? 1 : 0 });
    }
    if (common !== SILENT) await insertShared(tx, event.streamOrdering, event.roomId, event.eventId, pdu.sender, threadId, common === HIGHLIGHT ? 1 : 0);
    // In statements of PUSH_ROWS rows, compiled once: an event can single out many members (a
    // mention of everyone, members with rules of their own), and Kysely would build and compile
    // each statement afresh. The rest goes one row at a time.
    let i = 0;
    for (; i + PUSH_ROWS <= rows.length; i += PUSH_ROWS) await insertPushActions(tx, ...rows.slice(i, i + PUSH_ROWS).flatMap(pushActionParams));
    for (; i < rows.length; i++) await insertPushAction(tx, ...pushActionParams(rows[i]!));
    if (common !== SILENT || rows.some((r) => r.notify === 1)) for (const listener of this.notificationListeners) listener(ctx);
  }

  /** Who the event at `pos` notifies (see notifications.ts). */
  notifiedAt(pos: number): Promise<Array<{ user_id: string; highlight: number }>> {
    return notifiedAt(this.db, pos);
  }

  /** Notifications after the user's read receipt in the room, up to `upto`. */
  unreadCounts(userId: string, roomId: string, upto = Number.MAX_SAFE_INTEGER): Promise<UnreadCounts> {
    return unreadInRoom(this.db, userId, roomId, upto);
  }

  /**
   * unreadCounts for every room of a user at once (an initial /sync): one query instead of one per
   * room. Rooms without notifications after the read receipt are absent (all zero).
   */
  unreadCountsFor(userId: string, upto = Number.MAX_SAFE_INTEGER): Promise<Map<string, UnreadCounts>> {
    return unreadByRoom(this.db, userId, upto);
  }

  /** Pushers of a user (spec `GET /pushers`). */
  async pushers(userId: string): Promise<Array<Record<string, unknown>>> {
    const rows = await this.db.selectFrom("pushers").select("json").where("user_id", "=", userId).orderBy("created_ts").execute();
    return rows.map((r) => JSON.parse(r.json) as Record<string, unknown>);
  }

  async setPusher(userId: string, deviceId: string, pusher: Record<string, unknown> & { app_id: string; pushkey: string; kind: string | null }, append: boolean): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      if (pusher.kind === null) {
        await tx.deleteFrom("pushers").where("user_id", "=", userId).where("app_id", "=", pusher.app_id).where("pushkey", "=", pusher.pushkey).execute();
        return;
      }
      // Without `append`, a pushkey belongs to one user only (spec: other users' pushers with the same app_id/pushkey are removed).
      if (!append) await tx.deleteFrom("pushers").where("app_id", "=", pusher.app_id).where("pushkey", "=", pusher.pushkey).where("user_id", "!=", userId).execute();
      const { append: _ignored, ...stored } = pusher;
      const json = JSON.stringify(stored);
      await tx
        .insertInto("pushers")
        .values({ user_id: userId, app_id: pusher.app_id, pushkey: pusher.pushkey, kind: pusher.kind, json, created_ts: Date.now(), device_id: deviceId })
        .onConflict((oc) => oc.columns(["user_id", "app_id", "pushkey"]).doUpdateSet({ kind: pusher.kind as string, json, device_id: deviceId }))
        .execute();
    });
  }

  /** A signed-out or wiped device must not keep receiving notifications on the lost phone. */
  async removeDevicePushers(userId: string, deviceId: string): Promise<void> {
    await this.db.deleteFrom("pushers").where("user_id", "=", userId).where("device_id", "=", deviceId).execute();
  }
}
