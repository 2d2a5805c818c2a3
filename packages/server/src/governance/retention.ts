import { setImmediate as yieldToOthers } from "node:timers/promises";
import { MatrixError } from "@revier/protocol";
import type { Db, Tx } from "../storage/database.js";
import type { StreamWriter } from "../storage/stream.js";
import type { Rooms } from "../rooms/rooms.js";
import type { MediaService } from "../media/media.js";
import type { CreateRoomGuard } from "../api/client/rooms.js";
import { ROOM_VERSIONS } from "../rooms/room-versions.js";
import { redactEvent, type Pdu } from "../rooms/event-crypto.js";
import type { AuditLog } from "./audit.js";
import type { PolicyStore } from "./policy.js";
import { requiredLevel, roomOperator } from "./channels.js";

export const DAY_MS = 86_400_000;
export const RETENTION_EVENT_TYPE = "m.room.retention";
/**
 * `redacted_by` of an event whose content retention removed: clients see it as redacted
 * (`unsigned.redacted_because` names this id), and a later real redaction leaves it alone.
 */
export const RETENTION_REDACTION = "$org.revier.retention";
export const RETENTION_ACTOR = { actor: "system:retention", actorRole: "system" } as const;

/** Events handled per write transaction: each holds the stream lock for a few milliseconds only. */
const EVENT_BATCH = 200;
const MEDIA_BATCH = 50;

export interface RetentionOptions {
  /** Events examined (and at most removed) per write transaction. */
  eventBatch?: number;
  /** Media items listed per page. */
  mediaBatch?: number;
}
const PROGRESS = "events";
/** Members per push-action delete: bounds each statement to this many users times one batch of events. */
const USERS_PER_DELETE = 50;

export interface PurgeCounts {
  /** Event rows removed. */
  events_deleted: number;
  /** Expired events kept as content-less stubs because a receipt or the room's newest-event pointer names them. */
  events_redacted: number;
  media_deleted: number;
}

/** The `m.room.retention` content that shows a retention of `days` (empty: no policy). */
export function retentionContent(days: number | null): Record<string, unknown> {
  return days === null ? {} : { max_lifetime: days * DAY_MS };
}

function sameRetention(current: Record<string, unknown> | undefined, days: number | null): boolean {
  const have = current?.max_lifetime;
  return days === null ? have === undefined : have === days * DAY_MS;
}

type Candidate = { event_id: string; room_id: string; type: string; state_key: string | null; sender: string; txn_device: string | null; txn_id: string | null; stream_ordering: number };
const CANDIDATE_COLUMNS = ["event_id", "room_id", "type", "state_key", "sender", "txn_device", "txn_id", "stream_ordering"] as const;

/**
 * Retention (policy `retention_days`): events and media older than the limit are removed, and every
 * room shows the limit as `m.room.retention` state.
 *
 * Which expired events go. The stream is walked in order from where the last run stopped (the
 * position survives restarts) up to the first event that is not expired yet. Messages and other
 * non-state events go. A state event stays while it is the room's state at the cutoff: the latest
 * event of its (type, state_key) up to there, which the current state, the auth rules, `/sync` and
 * `/messages` (state at any retained position) need; once a newer event of the same key has
 * expired too, the older ones go. An expired event that something still names — a read receipt,
 * or the room's newest event (the next event's `prev_events`) — keeps its row as a stub whose
 * content is redacted; the next run removes it once nothing names it any more. Stream positions are
 * never reused or moved, so sync tokens stay valid; `/messages` simply finds the gap empty.
 */
export class Retention {
  /** The `retention_days` last applied to the rooms' state by this process (undefined: not yet). */
  private appliedDays: number | null | undefined = undefined;
  private readonly eventBatch: number;
  private readonly mediaBatch: number;

  constructor(
    private readonly db: Db,
    private readonly stream: StreamWriter,
    private readonly rooms: Rooms,
    private readonly media: MediaService,
    private readonly policy: PolicyStore,
    private readonly audit: AuditLog,
    private readonly serverName: string,
    opts: RetentionOptions = {},
  ) {
    this.eventBatch = opts.eventBatch ?? EVENT_BATCH;
    this.mediaBatch = opts.mediaBatch ?? MEDIA_BATCH;
  }

  /** New rooms start with the organisation's retention as state; a requested `m.room.retention` is replaced. */
  readonly createRoomGuard: CreateRoomGuard = async (_userId, body) => {
    const days = (await this.policy.get()).retention_days;
    if (days === null) return;
    body.initial_state = [...(body.initial_state ?? []).filter((e) => e.type !== RETENTION_EVENT_TYPE), { type: RETENTION_EVENT_TYPE, state_key: "", content: retentionContent(days) }];
  };

  /** Applies the policy to the rooms' state when it changed since the last check (or at start-up). */
  async checkPolicy(): Promise<void> {
    const days = (await this.policy.fresh()).retention_days;
    if (days === this.appliedDays) return;
    await this.applyPolicyToRooms(days);
    this.appliedDays = days;
  }

  /**
   * Sends `m.room.retention` into every room whose state does not show `days`. The event needs a
   * sender the auth rules accept, so it goes out in the name of the room's most senior joined
   * member; rooms nobody with that power is in (closed channels, abandoned rooms) are skipped.
   */
  async applyPolicyToRooms(days: number | null): Promise<{ updated: number; skipped: number }> {
    let updated = 0;
    let skipped = 0;
    let from = "";
    for (;;) {
      const page = await this.db.selectFrom("rooms").select(["room_id", "creator"]).where("room_id", ">", from).orderBy("room_id").limit(100).execute();
      if (page.length === 0) break;
      for (const { room_id: roomId, creator } of page) {
        if (sameRetention(await this.rooms.stateContent(roomId, RETENTION_EVENT_TYPE), days)) continue;
        const operator = await roomOperator(this.rooms, roomId, creator);
        if (!operator || operator.level < requiredLevel(operator.powerLevels, RETENTION_EVENT_TYPE, true)) {
          skipped++;
          continue;
        }
        try {
          await this.rooms.send({ roomId, sender: operator.userId, type: RETENTION_EVENT_TYPE, stateKey: "", content: retentionContent(days) });
          updated++;
        } catch (err) {
          if (!(err instanceof MatrixError)) throw err;
          skipped++;
        }
      }
      from = page[page.length - 1]!.room_id;
    }
    return { updated, skipped };
  }

  /**
   * One retention run as of `now`: expired events and media go, in bounded batches. Returns null
   * while the policy has no retention. A run that removed anything writes one audit entry, with
   * counts only.
   */
  async purge(now = Date.now()): Promise<(PurgeCounts & { cutoff_ts: number }) | null> {
    const days = (await this.policy.fresh()).retention_days;
    if (days === null) return null;
    const cutoff = now - days * DAY_MS;
    const counts: PurgeCounts = { events_deleted: 0, events_redacted: 0, media_deleted: 0 };
    await this.releaseStubs(counts);
    await this.purgeEvents(cutoff, counts);
    await this.purgeMedia(cutoff, counts);
    if (counts.events_deleted + counts.events_redacted + counts.media_deleted > 0) {
      await this.audit.record({ ...RETENTION_ACTOR, action: "retention.purge", target: null, details: { retention_days: days, cutoff_ts: cutoff, ...counts } });
    }
    return { ...counts, cutoff_ts: cutoff };
  }

  private async progress(): Promise<number> {
    const row = await this.db.selectFrom("retention_progress").select("position").where("name", "=", PROGRESS).executeTakeFirst();
    return Number(row?.position ?? 0);
  }

  private async purgeEvents(cutoff: number, counts: PurgeCounts): Promise<void> {
    for (;;) {
      const cursor = await this.progress();
      const rows = await this.db
        .selectFrom("events")
        .select([...CANDIDATE_COLUMNS, "origin_server_ts"])
        .where("stream_ordering", ">", cursor)
        .orderBy("stream_ordering")
        .limit(this.eventBatch)
        .execute();
      const expired: typeof rows = [];
      let reachedPresent = rows.length < this.eventBatch;
      for (const r of rows) {
        if (Number(r.origin_server_ts) >= cutoff) {
          reachedPresent = true;
          break;
        }
        expired.push(r);
      }
      if (expired.length === 0) return;

      // What this batch makes removable: its messages, and for each state event the older events
      // of the same key (it has expired itself, so they are no longer the state at the cutoff).
      const candidates = new Map<string, Candidate>();
      for (const r of expired) {
        if (r.state_key === null) {
          candidates.set(r.event_id, r);
          continue;
        }
        const older = await this.db
          .selectFrom("events")
          .select([...CANDIDATE_COLUMNS])
          .where("room_id", "=", r.room_id)
          .where("type", "=", r.type)
          .where("state_key", "=", r.state_key)
          .where("stream_ordering", "<", r.stream_ordering)
          .execute();
        for (const o of older) candidates.set(o.event_id, o);
      }
      // Notification counts of expired events no longer matter. Nothing else writes these rows, so
      // they go outside the stream lock, in small statements.
      await this.dropPushActions(expired);
      const list = [...candidates.values()];
      const last = expired[expired.length - 1]!.stream_ordering;
      for (let i = 0; i < list.length || i === 0; i += this.eventBatch) {
        const chunk = list.slice(i, i + this.eventBatch);
        const final = i + this.eventBatch >= list.length;
        const gone = await this.stream.write(async (w) => {
          const removed = await this.removeEvents(w.tx, chunk, counts);
          if (final) {
            await w.tx
              .insertInto("retention_progress")
              .values({ name: PROGRESS, position: last })
              .onConflict((oc) => oc.column("name").doUpdateSet({ position: last }))
              .execute();
          }
          return removed;
        });
        await this.dropTransactionIds(gone);
        await yieldToOthers();
      }
      if (reachedPresent) return;
    }
  }

  /**
   * Notifications of the expired part of a batch: per room, the batch's contiguous position range,
   * the shared rows by room and the members' own through the (user_id, room_id, stream_ordering)
   * key for everyone who was ever in the room.
   */
  private async dropPushActions(expired: Array<{ room_id: string; stream_ordering: number }>): Promise<void> {
    const ranges = new Map<string, { lo: number; hi: number }>();
    for (const e of expired) {
      const r = ranges.get(e.room_id);
      if (!r) ranges.set(e.room_id, { lo: e.stream_ordering, hi: e.stream_ordering });
      else r.hi = e.stream_ordering;
    }
    for (const [roomId, { lo, hi }] of ranges) {
      await this.db.deleteFrom("event_push_shared").where("room_id", "=", roomId).where("stream_ordering", ">=", lo).where("stream_ordering", "<=", hi).execute();
      const users = (await this.db.selectFrom("room_members").select("user_id").where("room_id", "=", roomId).execute()).map((r) => r.user_id);
      for (let i = 0; i < users.length; i += USERS_PER_DELETE) {
        await this.db
          .deleteFrom("event_push_actions")
          .where("user_id", "in", users.slice(i, i + USERS_PER_DELETE))
          .where("room_id", "=", roomId)
          .where("stream_ordering", ">=", lo)
          .where("stream_ordering", "<=", hi)
          .execute();
      }
    }
  }

  /**
   * Under the stream lock (so receipts and room heads cannot move meanwhile): removes the
   * candidates nothing names, and redacts the others into stubs. Current state is never touched.
   */
  private async removeEvents(tx: Tx, candidates: Candidate[], counts: PurgeCounts): Promise<Candidate[]> {
    if (candidates.length === 0) return [];
    const live: Candidate[] = [];
    for (const c of candidates) {
      if (c.state_key !== null) {
        const current = await tx.selectFrom("room_state").select("event_id").where("room_id", "=", c.room_id).where("type", "=", c.type).where("state_key", "=", c.state_key).executeTakeFirst();
        if (current?.event_id === c.event_id) continue;
      }
      live.push(c);
    }
    if (live.length === 0) return [];
    const ids = live.map((c) => c.event_id);
    const roomIds = [...new Set(live.map((c) => c.room_id))];
    const named = new Set<string>();
    for (const r of await tx.selectFrom("receipts").select("event_id").distinct().where("room_id", "in", roomIds).where("event_id", "in", ids).execute()) named.add(r.event_id);
    const rooms = await tx.selectFrom("rooms").select(["room_id", "room_version", "last_event_id"]).where("room_id", "in", roomIds).execute();
    for (const r of rooms) if (r.last_event_id) named.add(r.last_event_id);
    const versions = new Map(rooms.map((r) => [r.room_id, r.room_version]));

    const stubs = live.filter((c) => named.has(c.event_id));
    const gone = live.filter((c) => !named.has(c.event_id));
    // The next event of the same state key carries the old content as unsigned.prev_content.
    for (const c of live) if (c.state_key !== null) await this.forgetPrevContent(tx, c);
    if (stubs.length > 0) {
      const already = new Set((await tx.selectFrom("retention_stubs").select("event_id").where("event_id", "in", stubs.map((c) => c.event_id)).execute()).map((r) => r.event_id));
      for (const c of stubs) {
        if (already.has(c.event_id)) continue;
        const row = await tx.selectFrom("events").select(["json", "redacted_by"]).where("event_id", "=", c.event_id).executeTakeFirst();
        const version = ROOM_VERSIONS[versions.get(c.room_id) ?? ""];
        if (!row || !version) continue;
        const pdu = JSON.parse(row.json) as Pdu;
        const redacted = redactEvent(pdu, version) as Pdu;
        redacted.unsigned = pdu.unsigned?.replaces_state ? { replaces_state: pdu.unsigned.replaces_state } : {};
        await tx.updateTable("events").set({ json: JSON.stringify(redacted), redacted_by: row.redacted_by ?? RETENTION_REDACTION }).where("event_id", "=", c.event_id).execute();
        await tx.insertInto("retention_stubs").values({ event_id: c.event_id, room_id: c.room_id }).onConflict((oc) => oc.column("event_id").doNothing()).execute();
        counts.events_redacted++;
      }
    }
    if (gone.length > 0) {
      const goneIds = gone.map((c) => c.event_id);
      await tx.deleteFrom("events").where("event_id", "in", goneIds).execute();
      await tx.deleteFrom("retention_stubs").where("event_id", "in", goneIds).execute();
      counts.events_deleted += gone.length;
    }
    return gone;
  }

  /** The send-idempotency records of removed events (they name the event ids); nothing else needs them. */
  private async dropTransactionIds(gone: Candidate[]): Promise<void> {
    const withTxn = gone.filter((c): c is Candidate & { txn_device: string; txn_id: string } => c.txn_device !== null && c.txn_id !== null);
    for (let i = 0; i < withTxn.length; i += USERS_PER_DELETE) {
      const part = withTxn.slice(i, i + USERS_PER_DELETE);
      await this.db
        .deleteFrom("event_txns")
        .where("scope", "=", "send")
        .where((eb) => eb.or(part.map((c) => eb.and([eb("user_id", "=", c.sender), eb("device_id", "=", c.txn_device), eb("txn_id", "=", c.txn_id)]))))
        .execute();
    }
  }

  /** Drops `prev_content` (a copy of `c`'s content) from the event that replaced `c` in the room state. */
  private async forgetPrevContent(tx: Tx, c: Candidate): Promise<void> {
    const next = await tx
      .selectFrom("events")
      .select(["event_id", "json"])
      .where("room_id", "=", c.room_id)
      .where("type", "=", c.type)
      .where("state_key", "=", c.state_key)
      .where("stream_ordering", ">", c.stream_ordering)
      .orderBy("stream_ordering")
      .limit(1)
      .executeTakeFirst();
    if (!next) return;
    const pdu = JSON.parse(next.json) as Pdu;
    if (pdu.unsigned?.prev_content === undefined && pdu.unsigned?.prev_sender === undefined) return;
    const { prev_content: _content, prev_sender: _sender, ...unsigned } = pdu.unsigned;
    pdu.unsigned = unsigned;
    await tx.updateTable("events").set({ json: JSON.stringify(pdu) }).where("event_id", "=", next.event_id).execute();
  }

  /** Stubs from earlier runs that nothing names any more lose their rows too. */
  private async releaseStubs(counts: PurgeCounts): Promise<void> {
    let after = "";
    for (;;) {
      const page = await this.db.selectFrom("retention_stubs").select("event_id").where("event_id", ">", after).orderBy("event_id").limit(this.eventBatch).execute();
      if (page.length === 0) return;
      const rows = await this.db.selectFrom("events").select([...CANDIDATE_COLUMNS]).where("event_id", "in", page.map((p) => p.event_id)).execute();
      const gone = await this.stream.write(async (w) => {
        // Stubs still named stay (and were counted when they were made); the others go.
        const removed = await this.removeEvents(w.tx, rows, counts);
        const missing = page.map((p) => p.event_id).filter((id) => !rows.some((r) => r.event_id === id));
        if (missing.length > 0) await w.tx.deleteFrom("retention_stubs").where("event_id", "in", missing).execute();
        return removed;
      });
      await this.dropTransactionIds(gone);
      after = page[page.length - 1]!.event_id;
      await yieldToOthers();
    }
  }

  /** Media ids of this server that profiles and room state still show (avatars); retention keeps them. */
  private async mediaInUse(): Promise<Set<string>> {
    const prefix = `mxc://${this.serverName}/`;
    const ids = new Set<string>();
    const add = (uri: unknown) => {
      if (typeof uri === "string" && uri.startsWith(prefix)) ids.add(uri.slice(prefix.length));
    };
    for (const r of await this.db.selectFrom("users").select("avatar_url").where("avatar_url", "is not", null).execute()) add(r.avatar_url);
    for (const r of await this.db.selectFrom("room_members").select("avatar_url").distinct().where("avatar_url", "is not", null).execute()) add(r.avatar_url);
    const avatars = await this.db.selectFrom("room_state").innerJoin("events", "events.event_id", "room_state.event_id").select("events.json").where("room_state.type", "=", "m.room.avatar").where("room_state.state_key", "=", "").execute();
    for (const r of avatars) add((JSON.parse(r.json) as Pdu).content.url);
    return ids;
  }

  private async purgeMedia(cutoff: number, counts: PurgeCounts): Promise<void> {
    const inUse = await this.mediaInUse();
    let after: { createdTs: number; mediaId: string } | undefined;
    for (;;) {
      const page = await this.media.listCreatedBefore(cutoff, { ...(after ? { after } : {}), limit: this.mediaBatch });
      if (page.length === 0) return;
      for (const m of page) {
        if (inUse.has(m.media_id)) continue;
        if (await this.media.delete(m.media_id)) counts.media_deleted++;
      }
      const last = page[page.length - 1]!;
      after = { createdTs: Number(last.created_ts), mediaId: last.media_id };
      await yieldToOthers();
    }
  }
}
