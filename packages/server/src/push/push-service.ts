import { parseUserId } from "@revier/protocol";
import type { Db, Tx } from "../storage/database.js";
import type { StreamWriter } from "../storage/stream.js";
import type { PersistContext } from "../rooms/room-events.js";
import type { Ephemeral } from "../rooms/ephemeral.js";
import type { Bus } from "../bus/bus.js";
import { toClientEvent } from "../rooms/client-event.js";
import { buildRuleset, emptyPushRules, parseStoredPushRules, type UserPushRules } from "./ruleset.js";
import { evaluatePushRules, summariseActions } from "./evaluate.js";
import type { Ruleset } from "./default-rules.js";

export interface UnreadCounts {
  notify: number;
  highlight: number;
  threads: Record<string, { notification_count: number; highlight_count: number }>;
}

/**
 * Push rules per user, and the push actions recorded for every member when an event is stored.
 * Those actions feed the unread/highlight counts in /sync and, later, push delivery.
 */
export class PushService {
  // Built rulesets per user. A rule change is announced on the bus with the user in the wake-up,
  // which drops the entry here and in every other process.
  private readonly cache = new Map<string, Ruleset>();
  private static readonly CACHE_LIMIT = 50_000;

  constructor(
    private readonly db: Db,
    private readonly stream: StreamWriter,
    private readonly ephemeral: Ephemeral,
    bus: Bus,
  ) {
    bus.subscribe((w) => {
      for (const u of w.users) this.cache.delete(u);
    });
  }

  async stored(userId: string, db: Db | Tx = this.db): Promise<UserPushRules> {
    const row = await db.selectFrom("push_rules").select("json").where("user_id", "=", userId).executeTakeFirst();
    return row ? parseStoredPushRules(JSON.parse(row.json)) : emptyPushRules();
  }

  async ruleset(userId: string, db: Db | Tx = this.db): Promise<Ruleset> {
    const cached = this.cache.get(userId);
    if (cached) return cached;
    const built = buildRuleset(userId, parseUserId(userId)?.localpart ?? userId, await this.stored(userId, db));
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
      const ruleset = buildRuleset(userId, parseUserId(userId)?.localpart ?? userId, next);
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

  /** Persist hook: evaluates every member's rules for the new event inside its transaction. */
  async recordActions(ctx: PersistContext): Promise<void> {
    const { tx, event } = ctx;
    const pdu = event.pdu;
    const members = await tx
      .selectFrom("room_members")
      .select(["user_id", "displayname", "membership"])
      .where("room_id", "=", event.roomId)
      .where((eb) => eb.or([eb("membership", "=", "join"), ...(pdu.type === "m.room.member" && pdu.state_key ? [eb("user_id", "=", pdu.state_key)] : [])]))
      .execute();
    const recipients = members.filter((m) => m.user_id !== pdu.sender && (m.membership === "join" || (m.membership === "invite" && pdu.state_key === m.user_id)));
    if (recipients.length === 0) return;
    const joinedCount = members.filter((m) => m.membership === "join").length;
    const plRow = await tx
      .selectFrom("room_state")
      .innerJoin("events", "events.event_id", "room_state.event_id")
      .select("events.json")
      .where("room_state.room_id", "=", event.roomId)
      .where("room_state.type", "=", "m.room.power_levels")
      .where("room_state.state_key", "=", "")
      .executeTakeFirst();
    const pl = plRow ? ((JSON.parse(plRow.json) as { content: Record<string, unknown> }).content ?? {}) : {};
    const users = (pl.users ?? {}) as Record<string, unknown>;
    const senderLevel = typeof users[pdu.sender] === "number" ? (users[pdu.sender] as number) : typeof pl.users_default === "number" ? pl.users_default : 0;
    const notificationLevels = (pl.notifications ?? {}) as Record<string, number>;
    const clientEvent = toClientEvent({ event_id: event.eventId, json: JSON.stringify(pdu), stream_ordering: event.streamOrdering, redacted_by: null, sender: pdu.sender, txn_device: null, txn_id: null });
    const rel = pdu.content["m.relates_to"] as { rel_type?: string; event_id?: string } | undefined;
    const threadId = rel?.rel_type === "m.thread" && typeof rel.event_id === "string" ? rel.event_id : "main";
    const rows = [];
    for (const m of recipients) {
      const match = evaluatePushRules(await this.ruleset(m.user_id, tx), { ...clientEvent }, {
        userId: m.user_id,
        ...(m.displayname ? { displayName: m.displayname } : {}),
        roomMemberCount: joinedCount,
        senderPowerLevel: senderLevel,
        notificationPowerLevels: notificationLevels,
      });
      if (!match) continue;
      const summary = summariseActions(match.actions);
      if (!summary.notify) continue;
      rows.push({ room_id: event.roomId, user_id: m.user_id, event_id: event.eventId, stream_ordering: event.streamOrdering, thread_id: threadId, notify: 1, highlight: summary.highlight ? 1 : 0 });
    }
    // Chunked so a room of thousands stays within SQLite's bound-parameter limit.
    for (let i = 0; i < rows.length; i += 500) await tx.insertInto("event_push_actions").values(rows.slice(i, i + 500)).execute();
  }

  /** Notifications after the user's read receipt, for the main timeline and per thread. */
  async unreadCounts(userId: string, roomId: string): Promise<UnreadCounts> {
    const readUpTo = (await this.ephemeral.lastReadStream(userId, roomId)) ?? 0;
    const rows = await this.db
      .selectFrom("event_push_actions")
      .select(["thread_id", (eb) => eb.fn.countAll<number>().as("n"), (eb) => eb.fn.sum<number>("highlight").as("h")])
      .where("user_id", "=", userId)
      .where("room_id", "=", roomId)
      .where("stream_ordering", ">", readUpTo)
      .groupBy("thread_id")
      .execute();
    const out: UnreadCounts = { notify: 0, highlight: 0, threads: {} };
    for (const r of rows) {
      out.notify += Number(r.n);
      out.highlight += Number(r.h ?? 0);
    }
    return out;
  }

  /** Pushers of a user (spec `GET /pushers`). */
  async pushers(userId: string): Promise<Array<Record<string, unknown>>> {
    const rows = await this.db.selectFrom("pushers").select("json").where("user_id", "=", userId).orderBy("created_ts").execute();
    return rows.map((r) => JSON.parse(r.json) as Record<string, unknown>);
  }

  async setPusher(userId: string, pusher: Record<string, unknown> & { app_id: string; pushkey: string; kind: string | null }, append: boolean): Promise<void> {
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
        .values({ user_id: userId, app_id: pusher.app_id, pushkey: pusher.pushkey, kind: pusher.kind, json, created_ts: Date.now() })
        .onConflict((oc) => oc.columns(["user_id", "app_id", "pushkey"]).doUpdateSet({ kind: pusher.kind as string, json }))
        .execute();
    });
  }
}
