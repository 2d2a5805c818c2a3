import { MatrixError, type ChannelSummary, type CloseChannelResponse } from "@revier/protocol";
import type { Db } from "../storage/database.js";
import type { Accounts } from "../users/accounts.js";
import type { CreateRoomRequest, MembershipGuard, Rooms } from "../rooms/rooms.js";
import type { PersistHook, RoomEvents } from "../rooms/room-events.js";
import type { CreateRoomGuard, PublishRoomGuard, RoomPublishedHook } from "../api/client/rooms.js";
import type { AuditLog } from "./audit.js";
import type { Actor, Policy, PolicyStore } from "./policy.js";

/**
 * `/createRoom` body flag for a read-only broadcast channel: `"org.revier.broadcast": true` sets
 * `events_default` to 50 in the initial power levels, so only the owner (100) and moderators (50)
 * may post; the ordinary auth rules then refuse everyone else.
 */
export const BROADCAST_FLAG = "org.revier.broadcast";
export const BROADCAST_EVENTS_DEFAULT = 50;
/** Removals per write transaction when a channel is closed: large channels close quickly, no write waits long. */
const KICK_BATCH = 100;

function num(v: unknown, fallback: number): number {
  return typeof v === "number" && Number.isFinite(v) ? v : fallback;
}

/** The join rule a creation request ends up with: the last initial_state entry wins over the preset. */
function effectiveJoinRule(req: CreateRoomRequest): unknown {
  const visibility = req.visibility ?? "private";
  const preset = req.preset ?? (visibility === "public" ? "public_chat" : "private_chat");
  const overrides = (req.initial_state ?? []).filter((s) => s.type === "m.room.join_rules" && (s.state_key ?? "") === "");
  const last = overrides[overrides.length - 1];
  return last ? last.content.join_rule : preset === "public_chat" ? "public" : "invite";
}

/** A channel is a public room: published in the room directory, or anyone may join it. */
export function createsChannel(req: CreateRoomRequest): boolean {
  return req.visibility === "public" || effectiveJoinRule(req) === "public";
}

export function mayCreateChannels(policy: Policy, role: string): boolean {
  return policy.channel_creators === "everyone" || (policy.channel_creators as string[]).includes(role);
}

function closedError(reason: string | null): MatrixError {
  return new MatrixError("ORG_REVIER_CHANNEL_CLOSED", `This channel has been closed${reason ? `: ${reason}` : ""}. It cannot be joined again.`, {
    extra: reason ? { "org.revier.reason": reason } : {},
  });
}

/** The level an event type needs under the given power levels content. */
export function requiredLevel(pl: Record<string, unknown>, type: string, isState: boolean): number {
  const events = (pl.events ?? {}) as Record<string, unknown>;
  return num(events[type], isState ? num(pl.state_default, 50) : num(pl.events_default, 0));
}

/**
 * The joined member with the highest power level (`prefer` wins a tie): rooms are local and every
 * event needs a sender the auth rules accept, so organisation actions on a room (closing notices,
 * removals, the retention state) are sent in this member's name. The audit log names who acted.
 */
export async function roomOperator(rooms: Rooms, roomId: string, prefer?: string): Promise<{ userId: string; level: number; powerLevels: Record<string, unknown> } | undefined> {
  const powerLevels = (await rooms.stateContent(roomId, "m.room.power_levels")) ?? {};
  const users = (powerLevels.users ?? {}) as Record<string, unknown>;
  const usersDefault = num(powerLevels.users_default, 0);
  let best: { userId: string; level: number } | undefined;
  for (const m of await rooms.joinedMembers(roomId)) {
    const level = num(users[m.user_id], usersDefault);
    if (!best || level > best.level || (level === best.level && m.user_id === prefer)) best = { userId: m.user_id, level };
  }
  return best ? { ...best, powerLevels } : undefined;
}

interface ChannelRow {
  roomId: string;
  owner: string;
  closed: boolean;
  published: boolean;
  joinPublic: boolean;
}

/**
 * Channels: who may create them (policy `channel_creators`), their owners, the admin listing, and
 * closing. A closed channel stays recorded and refuses every join, invite and knock.
 */
export class Channels {
  constructor(
    private readonly db: Db,
    private readonly rooms: Rooms,
    private readonly roomEvents: RoomEvents,
    private readonly accounts: Accounts,
    private readonly policy: PolicyStore,
    private readonly audit: AuditLog,
  ) {}

  /** Refuses users whose role the policy does not allow to create channels. */
  async requireMayCreate(userId: string): Promise<void> {
    const policy = await this.policy.get();
    if (policy.channel_creators === "everyone") return;
    const role = (await this.accounts.get(userId))?.role ?? "user";
    if (mayCreateChannels(policy, role)) return;
    const roles = policy.channel_creators as string[];
    throw new MatrixError(
      "M_FORBIDDEN",
      `Your organisation lets only the roles ${roles.join(", ")} create channels (public rooms or rooms in the room directory). Create a private room and invite the people you need, or ask an administrator.`,
      { extra: { "org.revier.channel_creators": roles } },
    );
  }

  /** Making an existing room public: allowed for channel creators, or when it is a channel already. */
  async requireMayPublish(userId: string, roomId: string): Promise<void> {
    const ch = await this.find(roomId);
    if (ch?.closed) throw closedError(await this.closeReason(roomId));
    if (ch && (ch.published || ch.joinPublic)) return;
    await this.requireMayCreate(userId);
  }

  /** Records who made a room a channel; the first record stays (the owner does not change on re-publishing). */
  async recordOwner(roomId: string, owner: string, now = Date.now()): Promise<void> {
    await this.db.insertInto("channels").values({ room_id: roomId, owner, created_ts: now, join_public: 0, closed_ts: null, closed_by: null, close_reason: null }).onConflict((oc) => oc.column("room_id").doNothing()).execute();
  }

  /**
   * Runs inside every event's write transaction: keeps `channels.join_public` in step with the
   * join rule (recording the sender as owner when a room turns public), and refuses joins, invites
   * and knocks into closed channels — atomically, so nobody slips in while a channel is closed.
   */
  readonly persistHook: PersistHook = async ({ tx, event }) => {
    const { pdu } = event;
    if (pdu.type === "m.room.member" && pdu.state_key !== undefined) {
      const membership = pdu.content.membership;
      if (membership !== "join" && membership !== "invite" && membership !== "knock") return;
      const prev = (pdu.unsigned?.prev_content as { membership?: unknown } | undefined)?.membership;
      // A member's profile change is a join after a join; only entering the room is refused.
      if (membership === "join" && prev === "join") return;
      const closed = await tx.selectFrom("channels").select("close_reason").where("room_id", "=", event.roomId).where("closed_ts", "is not", null).executeTakeFirst();
      if (closed) throw closedError(closed.close_reason);
    } else if (pdu.type === "m.room.join_rules" && pdu.state_key === "") {
      if (pdu.content.join_rule === "public") {
        await tx
          .insertInto("channels")
          .values({ room_id: event.roomId, owner: pdu.sender, created_ts: pdu.origin_server_ts, join_public: 1, closed_ts: null, closed_by: null, close_reason: null })
          .onConflict((oc) => oc.column("room_id").doUpdateSet({ join_public: 1 }))
          .execute();
      } else {
        await tx.updateTable("channels").set({ join_public: 0 }).where("room_id", "=", event.roomId).execute();
      }
    }
  };

  /** Refuses entering a closed channel before the event is even built, with the closing reason. */
  readonly membershipGuard: MembershipGuard = async ({ roomId, sender, target, membership }) => {
    if (membership !== "join" && membership !== "invite" && membership !== "knock") return;
    if (membership === "join" && sender === target && (await this.rooms.membership(roomId, target))?.membership === "join") return;
    const closed = await this.db.selectFrom("channels").select("close_reason").where("room_id", "=", roomId).where("closed_ts", "is not", null).executeTakeFirst();
    if (closed) throw closedError(closed.close_reason);
  };

  private async closeReason(roomId: string): Promise<string | null> {
    return (await this.db.selectFrom("channels").select("close_reason").where("room_id", "=", roomId).executeTakeFirst())?.close_reason ?? null;
  }

  /** The channel behind a room id: a room that is public now, or a closed channel. Private rooms are not channels. */
  async find(roomId: string): Promise<ChannelRow | undefined> {
    const row = await this.db
      .selectFrom("rooms")
      .leftJoin("channels", "channels.room_id", "rooms.room_id")
      .select(["rooms.room_id", "rooms.creator", "rooms.visibility", "channels.owner", "channels.join_public", "channels.closed_ts"])
      .where("rooms.room_id", "=", roomId)
      .executeTakeFirst();
    if (!row) return undefined;
    const ch: ChannelRow = { roomId, owner: row.owner ?? row.creator, closed: row.closed_ts !== null && row.closed_ts !== undefined, published: row.visibility === "public", joinPublic: Number(row.join_public ?? 0) === 1 };
    return ch.closed || ch.published || ch.joinPublic ? ch : undefined;
  }

  /**
   * Open channels, a page at a time in room id order: metadata and counts only. A private room is
   * never listed, and nothing of any message is read.
   */
  async list(opts: { from?: string; limit?: number } = {}): Promise<{ channels: ChannelSummary[]; next_from?: string }> {
    const limit = opts.limit ?? 100;
    let q = this.db
      .selectFrom("rooms")
      .leftJoin("channels", "channels.room_id", "rooms.room_id")
      .select(["rooms.room_id", "rooms.creator", "rooms.created_ts", "rooms.visibility", "channels.owner", "channels.created_ts as channel_ts", "channels.join_public"])
      .where("channels.closed_ts", "is", null)
      .where((eb) => eb.or([eb("rooms.visibility", "=", "public"), eb("channels.join_public", "=", 1)]));
    if (opts.from !== undefined) q = q.where("rooms.room_id", ">", opts.from);
    const rows = await q.orderBy("rooms.room_id").limit(limit).execute();
    const channels: ChannelSummary[] = [];
    for (const r of rows) {
      const str = (v: unknown) => (typeof v === "string" && v !== "" ? v : null);
      const pl = (await this.rooms.stateContent(r.room_id, "m.room.power_levels")) ?? {};
      const last = await this.db.selectFrom("events").select("origin_server_ts").where("room_id", "=", r.room_id).orderBy("stream_ordering", "desc").limit(1).executeTakeFirst();
      channels.push({
        room_id: r.room_id,
        name: str((await this.rooms.stateContent(r.room_id, "m.room.name"))?.name),
        canonical_alias: str((await this.rooms.stateContent(r.room_id, "m.room.canonical_alias"))?.alias),
        owner: r.owner ?? r.creator,
        member_count: await this.rooms.joinedMemberCount(r.room_id),
        created_ts: Number(r.channel_ts ?? r.created_ts),
        last_activity_ts: last ? Number(last.origin_server_ts) : null,
        published: r.visibility === "public",
        join_public: Number(r.join_public ?? 0) === 1,
        broadcast: requiredLevel(pl, "m.room.message", false) > num(pl.users_default, 0),
      });
    }
    const lastRow = rows[rows.length - 1];
    return { channels, ...(rows.length === limit && lastRow ? { next_from: lastRow.room_id } : {}) };
  }

  /**
   * Closes a channel: it is marked closed (refusing joins, invites and knocks from then on) together
   * with its one audit entry, a notice saying why is posted, every member is removed with the
   * reason, the join rule becomes `invite` and the room leaves the directory. Closing a closed
   * channel again finishes a removal that was interrupted. `ownerOnly` is the owner's own request.
   */
  async close(by: Actor, roomId: string, reason: string, opts: { ownerOnly?: boolean } = {}): Promise<CloseChannelResponse> {
    const ch = await this.find(roomId);
    if (!ch) throw new MatrixError("M_NOT_FOUND", "No such channel");
    if (opts.ownerOnly && ch.owner !== by.actor) throw new MatrixError("M_FORBIDDEN", "Only the channel's owner or an administrator can close this channel");
    const now = Date.now();
    await this.audit.transact(async (tx, record) => {
      const members = await tx
        .selectFrom("room_members")
        .select((eb) => eb.fn.countAll<number>().as("n"))
        .where("room_id", "=", roomId)
        .where("membership", "in", ["join", "invite", "knock"])
        .executeTakeFirst();
      // A repeated close keeps the first closing's time, actor and reason (the reason joiners are told).
      const closed = { closed_ts: now, closed_by: by.actor, close_reason: reason };
      if (!ch.closed) {
        await tx
          .insertInto("channels")
          .values({ room_id: roomId, owner: ch.owner, created_ts: now, join_public: ch.joinPublic ? 1 : 0, ...closed })
          .onConflict((oc) => oc.column("room_id").doUpdateSet(closed))
          .execute();
      }
      await record({ ...by, action: "channel.close", target: roomId, details: { reason, owner: ch.owner, by_owner: by.actor === ch.owner, members: Number(members?.n ?? 0), already_closed: ch.closed } });
    });

    const operator = await roomOperator(this.rooms, roomId, ch.owner);
    let noticeSent = false;
    if (operator && !ch.closed) {
      const who = by.actor === ch.owner ? "its owner" : "the organisation's administration";
      try {
        await this.rooms.send({
          roomId,
          sender: operator.userId,
          type: "m.room.message",
          content: { msgtype: "m.notice", body: `This channel has been closed by ${who}. Reason: ${reason}`, "org.revier.channel_closed": { reason, closed_by: by.actor } },
        });
        noticeSent = true;
      } catch (err) {
        if (!(err instanceof MatrixError)) throw err;
      }
    }
    const removed = await this.removeMembers(roomId, operator?.userId, reason);
    await this.rooms.setVisibility(roomId, "private");
    return { room_id: roomId, removed, notice_sent: noticeSent };
  }

  /**
   * Removes every joined, invited or knocking member. The operator kicks (the reason shows in each
   * removal), up to KICK_BATCH members per transaction; when the auth rules refuse a batch (it holds
   * someone of the operator's rank), its members are kicked one by one, and whoever cannot be kicked
   * is made to leave. The operator leaves last. Repeated until nobody is left.
   */
  private async removeMembers(roomId: string, operator: string | undefined, reason: string): Promise<number> {
    let removed = 0;
    for (let round = 0; round < 5; round++) {
      const present = await this.db.selectFrom("room_members").select("user_id").where("room_id", "=", roomId).where("membership", "in", ["join", "invite", "knock"]).orderBy("user_id").execute();
      if (present.length === 0) break;
      const kicker = operator && present.some((m) => m.user_id === operator) ? operator : undefined;
      const others = present.map((m) => m.user_id).filter((u) => u !== kicker);
      for (let i = 0; i < others.length; i += KICK_BATCH) {
        const chunk = others.slice(i, i + KICK_BATCH);
        if (kicker) {
          try {
            await this.roomEvents.sendBatch(chunk.map((target) => ({ roomId, sender: kicker, type: "m.room.member", stateKey: target, content: { membership: "leave", reason } })));
            removed += chunk.length;
            continue;
          } catch (err) {
            if (!(err instanceof MatrixError)) throw err;
          }
        }
        for (const target of chunk) {
          if (kicker) {
            try {
              await this.rooms.setMembership(roomId, kicker, target, "leave", { reason });
              removed++;
              continue;
            } catch (err) {
              if (!(err instanceof MatrixError)) throw err;
            }
          }
          await this.rooms.setMembership(roomId, target, target, "leave", { reason });
          removed++;
        }
      }
      if (kicker) {
        if ((await this.rooms.stateContent(roomId, "m.room.join_rules"))?.join_rule === "public") {
          try {
            await this.rooms.send({ roomId, sender: kicker, type: "m.room.join_rules", stateKey: "", content: { join_rule: "invite" } });
          } catch (err) {
            if (!(err instanceof MatrixError)) throw err;
          }
        }
        await this.rooms.setMembership(roomId, kicker, kicker, "leave", { reason });
        removed++;
      }
    }
    return removed;
  }
}

/**
 * Room creation: a channel needs a role the policy allows, and `"org.revier.broadcast": true`
 * makes the room read-only for ordinary members (events_default 50).
 */
export const channelCreateRoomGuard: CreateRoomGuard = async (userId, body, s) => {
  const broadcast = (body as Record<string, unknown>)[BROADCAST_FLAG];
  if (broadcast !== undefined && typeof broadcast !== "boolean") throw new MatrixError("M_BAD_JSON", `${BROADCAST_FLAG} must be true or false`);
  if (createsChannel(body)) await s.channels.requireMayCreate(userId);
  if (broadcast === true) {
    const override = body.power_level_content_override ?? {};
    body.power_level_content_override = { ...override, events_default: Math.max(BROADCAST_EVENTS_DEFAULT, num(override.events_default, 0)) };
  }
};

/** Publishing a room in the directory or giving it the `public` join rule makes it a channel. */
export const channelPublishGuard: PublishRoomGuard = async (userId, roomId, s) => s.channels.requireMayPublish(userId, roomId);

export const channelPublishedHook: RoomPublishedHook = async (userId, roomId, s) => s.channels.recordOwner(roomId, userId);
