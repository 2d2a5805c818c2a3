import { MatrixError } from "@revier/protocol";
import type { Db, Tx } from "../storage/database.js";
import type { StreamWriter } from "../storage/stream.js";
import { AccountData } from "../users/account-data.js";
import { prepared } from "../storage/prepared.js";
import { chunks } from "../lib/chunks.js";

// Every /sync asks these (presence, and unread counts of every room with news): compiled once,
// see prepared.ts.
const selectPresence = prepared((db, userId: string) => db.selectFrom("presence").selectAll().where("user_id", "=", userId));
type PresenceRow = Awaited<ReturnType<typeof selectPresence>>[number];
const selectLastRead = prepared((db, roomId: string, userId: string, threadId: string) =>
  db
    .selectFrom("receipts")
    .innerJoin("events", "events.event_id", "receipts.event_id")
    .select((eb) => eb.fn.max("events.stream_ordering").as("pos"))
    .where("receipts.room_id", "=", roomId)
    .where("receipts.user_id", "=", userId)
    .where("receipts.receipt_type", "in", ["m.read", "m.read.private"])
    .where((eb) => eb.or([eb("receipts.thread_id", "=", UNTHREADED), eb("receipts.thread_id", "=", threadId)])),
);

export type ReceiptType = "m.read" | "m.read.private" | "m.fully_read";
export const RECEIPT_TYPES: readonly ReceiptType[] = ["m.read", "m.read.private", "m.fully_read"];

/** `m.receipt` content: event id → receipt type → user id → receipt. */
export type ReceiptContent = Record<string, Record<string, Record<string, { ts: number; thread_id?: string }>>>;

export type PresenceState = "online" | "offline" | "unavailable";

// Type aliases rather than interfaces: /sync assembles these into plain JSON records, and only
// aliases are assignable to index-signature types.
export type PresenceContent = {
  presence: PresenceState;
  last_active_ago?: number;
  status_msg?: string;
  currently_active?: boolean;
  displayname?: string;
  avatar_url?: string;
};

export type PresenceEvent = {
  type: "m.presence";
  sender: string;
  content: PresenceContent;
};

/** Pins a user's presence (governance: off duty shows `unavailable` "off duty"); undefined leaves their own choice. */
export type PresenceOverride = (userId: string) => Promise<PinnedPresence | undefined>;
/** PresenceOverride's answer when it can be given without waiting; null when it cannot. */
export type PresenceOverridePeek = (userId: string) => PinnedPresence | undefined | null;
export type PinnedPresence = { state: PresenceState; statusMsg: string | null };

/** A presence read for /sync, kept until a change of the user is announced (see Ephemeral.presenceSeen). */
type SeenPresence = { reading: Promise<PresenceRow | undefined>; done: boolean; row: PresenceRow | undefined };

type PresenceFields = { state: string; status_msg: string | null; currently_active: number; last_active_ts: number };

/** What others were told of `row` is still so after setting `state` (and `statusMsg`: undefined keeps the row's). */
function presenceAnnounced(row: PresenceFields | undefined, state: PresenceState, statusMsg: string | null | undefined): row is PresenceFields {
  const msg = statusMsg === undefined ? (row?.status_msg ?? null) : statusMsg;
  return !!row && row.state === state && row.status_msg === msg && row.currently_active === (state === "online" ? 1 : 0);
}

/** presenceAnnounced, and last_active_ts is recent enough not to need a refresh. */
function presenceUnchanged(row: PresenceFields | undefined, state: PresenceState, statusMsg: string | null | undefined, now: number): boolean {
  return presenceAnnounced(row, state, statusMsg) && !(state === "online" && now - row.last_active_ts >= PRESENCE_REFRESH_MS);
}

/** Clients ask for long timeouts and then vanish; nobody should look typing for longer than this. */
export const MAX_TYPING_MS = 30_000;
/**
 * An active user's last_active_ts is brought up to date at most this often, so the idle sweep
 * (expirePresence) can tell who is still there. The refresh announces nothing (see setPresence).
 */
export const PRESENCE_REFRESH_MS = 60_000;

/** Unthreaded receipts are stored under the empty thread id; `main` is a thread of its own. */
const UNTHREADED = "";

/**
 * The receipts that say how far a user has read a room's main timeline: public and private read
 * receipts, unthreaded or on the main thread. Unread counts (in /sync, on push badges) are the
 * notifications after the newest of them; callers add the room and what to select.
 */
export function mainTimelineReads(db: Db, userId: string) {
  return db
    .selectFrom("receipts as r")
    .innerJoin("events as e", "e.event_id", "r.event_id")
    .where("r.user_id", "=", userId)
    .where("r.receipt_type", "in", ["m.read", "m.read.private"])
    .where("r.thread_id", "in", [UNTHREADED, "main"]);
}

/**
 * Receipts, typing notifications and presence: state that is not part of the room DAG but still
 * reaches clients through /sync, so every visible change takes a stream position.
 */
export class Ephemeral {
  private readonly accountData: AccountData;
  private presenceOverride: PresenceOverride | undefined;
  private presenceOverridePeek: PresenceOverridePeek | undefined;
  /**
   * Presence rows as last read, by user: every /sync checks its user's presence, and a wave of
   * thousands of woken long-polls asked the database for each. An entry is the promise of its
   * read, stored when the read starts, and dropped by every presence change of the user
   * (`forgetPresence`, called for each presence wake-up, from any process), so a read that
   * raced a change is not reused. Bounded; the oldest go first. `row` is set once the read
   * has finished, for presenceIsCurrent.
   */
  private readonly presenceSeen = new Map<string, SeenPresence>();

  constructor(
    private readonly db: Db,
    private readonly stream: StreamWriter,
    accountData?: AccountData,
  ) {
    // AccountData keeps no state of its own, so a private instance over the same database is
    // equivalent to the shared one.
    this.accountData = accountData ?? new AccountData(db, stream);
  }

  // ---- receipts ---------------------------------------------------------------------------

  /**
   * Moves a receipt (or the fully-read marker) to `eventId`. A receipt never moves backwards:
   * clients on several devices race each other, and an older receipt arriving late must not make
   * read messages unread again. Returns whether anything changed.
   */
  async setReceipt(userId: string, roomId: string, receiptType: ReceiptType, eventId: string, threadId?: string): Promise<boolean> {
    if (threadId !== undefined && receiptType === "m.fully_read") throw new MatrixError("M_INVALID_PARAM", "thread_id is not allowed for m.fully_read");
    if (threadId !== undefined && threadId !== "main" && !threadId.startsWith("$")) throw new MatrixError("M_INVALID_PARAM", "thread_id must be 'main' or the event id of a thread root");
    if (receiptType === "m.fully_read") return this.setFullyRead(userId, roomId, eventId);

    return this.stream.write(async (w) => {
      const target = await eventIn(w.tx, roomId, eventId);
      if (threadId === "main" && target.thread_id !== null) throw new MatrixError("M_INVALID_PARAM", "The event is in a thread, not in the main timeline");
      if (threadId !== undefined && threadId !== "main" && target.thread_id !== null && target.thread_id !== threadId) {
        throw new MatrixError("M_INVALID_PARAM", "The event belongs to a different thread");
      }
      const thread = threadId ?? UNTHREADED;
      const current = await w.tx
        .selectFrom("receipts")
        .leftJoin("events", "events.event_id", "receipts.event_id")
        .select(["events.stream_ordering"])
        .where("receipts.room_id", "=", roomId)
        .where("receipts.receipt_type", "=", receiptType)
        .where("receipts.user_id", "=", userId)
        .where("receipts.thread_id", "=", thread)
        .executeTakeFirst();
      if (current?.stream_ordering != null && current.stream_ordering >= target.stream_ordering) return false;
      const pos = w.next();
      const ts = Date.now();
      await w.tx
        .insertInto("receipts")
        .values({ room_id: roomId, receipt_type: receiptType, user_id: userId, thread_id: thread, event_id: eventId, ts, stream_pos: pos })
        .onConflict((oc) => oc.columns(["room_id", "receipt_type", "user_id", "thread_id"]).doUpdateSet({ event_id: eventId, ts, stream_pos: pos }))
        .execute();
      // A private receipt concerns nobody else in the room, so only its owner's syncs wake. The
      // owner's syncs always wake: a receipt lowers their unread counts, whatever their filter.
      if (receiptType === "m.read") w.touch({ rooms: [roomId], kind: "ephemeral" });
      w.touch({ users: [userId] });
      return true;
      // Replayable: all it does is in the transaction. Clients send a receipt for nearly every
      // message they show, so batches on PostgreSQL mix both and run without savepoints only if
      // both kinds are replayable.
    }, { replayable: true });
  }

  private async setFullyRead(userId: string, roomId: string, eventId: string): Promise<boolean> {
    const changed = await this.accountData.update(userId, roomId, "m.fully_read", async (current, tx) => {
      const target = await eventIn(tx, roomId, eventId);
      const old = typeof current?.event_id === "string" ? current.event_id : undefined;
      if (old === eventId) return undefined;
      if (old !== undefined) {
        const prev = await tx.selectFrom("events").select("stream_ordering").where("event_id", "=", old).executeTakeFirst();
        if (prev && prev.stream_ordering > target.stream_ordering) return undefined;
      }
      return { event_id: eventId };
    });
    return changed !== undefined;
  }

  /** Receipt changes in (since, upto] for an incremental sync; other users' private receipts are left out. */
  async receiptsSince(roomIds: string[], since: number, upto: number, viewer: string): Promise<Map<string, ReceiptContent>> {
    return this.receipts(roomIds, { viewer }, since, upto);
  }

  /**
   * The public receipt changes of every room in (since, upto]: what every member of those rooms
   * is shown, asked once per window for all of them (see SyncService). A member adds their own
   * private receipts (privateReceiptsSince).
   */
  async publicReceiptsBetween(since: number, upto: number): Promise<Map<string, ReceiptContent>> {
    return this.receipts(null, "public", since, upto);
  }

  /** The user's own private receipts set in (since, upto] in the given rooms. */
  async privateReceiptsSince(roomIds: string[], since: number, upto: number, userId: string): Promise<Map<string, ReceiptContent>> {
    return this.receipts(roomIds, { privateOf: userId }, since, upto);
  }

  /** The current receipts of the given rooms, for an initial sync. */
  async receiptsFor(roomIds: string[], viewer: string, upto?: number): Promise<Map<string, ReceiptContent>> {
    return this.receipts(roomIds, { viewer }, undefined, upto);
  }

  /** `roomIds`: null for every room (a window's receipts). */
  private async receipts(roomIds: string[] | null, scope: { viewer: string } | "public" | { privateOf: string }, since: number | undefined, upto: number | undefined): Promise<Map<string, ReceiptContent>> {
    const out = new Map<string, ReceiptContent>();
    for (const ids of roomIds === null ? [null] : chunks(roomIds)) {
      let q = this.db.selectFrom("receipts").select(["room_id", "receipt_type", "user_id", "thread_id", "event_id", "ts"]);
      if (ids !== null) q = q.where("room_id", "in", ids);
      if (scope === "public") q = q.where("receipt_type", "!=", "m.read.private");
      else if ("privateOf" in scope) q = q.where("receipt_type", "=", "m.read.private").where("user_id", "=", scope.privateOf);
      else q = q.where((eb) => eb.or([eb("receipt_type", "!=", "m.read.private"), eb("user_id", "=", scope.viewer)]));
      if (since !== undefined) q = q.where("stream_pos", ">", since);
      if (upto !== undefined) q = q.where("stream_pos", "<=", upto);
      for (const r of await q.orderBy("stream_pos").execute()) {
        let content = out.get(r.room_id);
        if (!content) out.set(r.room_id, (content = {}));
        const byType = (content[r.event_id] ??= {});
        const byUser = (byType[r.receipt_type] ??= {});
        byUser[r.user_id] = r.thread_id === UNTHREADED ? { ts: r.ts } : { ts: r.ts, thread_id: r.thread_id };
      }
    }
    return out;
  }

  /**
   * Stream ordering of the furthest event the user has read in a room's main timeline (or, with
   * `threadId`, in that thread): the further of their public and private receipts, unthreaded
   * receipts counting for every thread. Null when the user has no receipt there.
   */
  async lastReadStream(userId: string, roomId: string, threadId: string = "main"): Promise<number | null> {
    const [row] = await selectLastRead(this.db, roomId, userId, threadId);
    return row?.pos == null ? null : Number(row.pos);
  }

  // ---- typing -----------------------------------------------------------------------------

  /**
   * Records that a user started or stopped typing. Typing clients repeat the request every few
   * seconds; while the user is already shown as typing only the expiry moves, without a stream
   * position, so nobody's sync wakes for a change they cannot see.
   */
  async setTyping(roomId: string, userId: string, typing: boolean, timeoutMs: number): Promise<void> {
    const now = Date.now();
    const expires = now + Math.min(Math.max(0, Math.floor(timeoutMs)), MAX_TYPING_MS);
    const start = typing && expires > now;
    await this.stream.write(async (w) => {
      const row = await w.tx.selectFrom("typing").select("expires_ts").where("room_id", "=", roomId).where("user_id", "=", userId).executeTakeFirst();
      if (start) {
        if (row && row.expires_ts > now) {
          await w.tx.updateTable("typing").set({ expires_ts: expires }).where("room_id", "=", roomId).where("user_id", "=", userId).execute();
          return;
        }
        const pos = w.next();
        await w.tx
          .insertInto("typing")
          .values({ room_id: roomId, user_id: userId, expires_ts: expires, stream_pos: pos })
          .onConflict((oc) => oc.columns(["room_id", "user_id"]).doUpdateSet({ expires_ts: expires, stream_pos: pos }))
          .execute();
        w.touch({ rooms: [roomId], kind: "ephemeral" });
        return;
      }
      // expires_ts 0 means "stopping was announced"; a lapsed but unswept entry still needs announcing.
      if (!row || row.expires_ts === 0) return;
      await w.tx.updateTable("typing").set({ expires_ts: 0, stream_pos: w.next() }).where("room_id", "=", roomId).where("user_id", "=", userId).execute();
      w.touch({ rooms: [roomId], kind: "ephemeral" });
      // Replayable (storage/stream.ts): it only reads and writes in the transaction, and `now` is
      // fixed before it. Typing, presence, to-device messages and account data are interleaved
      // with messages in real traffic; one unmarked write keeps a whole batch's savepoints.
    }, { replayable: true });
  }

  /** For rooms whose typing changed in (since, upto]: who is typing now (possibly nobody). */
  async typingSince(roomIds: string[], since: number, upto: number, now: number = Date.now()): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    for (const ids of chunks(roomIds)) {
      const changed = await this.db
        .selectFrom("typing")
        .select("room_id")
        .distinct()
        .where("room_id", "in", ids)
        .where("stream_pos", ">", since)
        .where("stream_pos", "<=", upto)
        .execute();
      if (changed.length === 0) continue;
      const rooms = changed.map((r) => r.room_id);
      for (const r of rooms) out.set(r, []);
      // The list is a full snapshot, so it shows who is typing now rather than at `upto`.
      const typers = await this.db.selectFrom("typing").select(["room_id", "user_id"]).where("room_id", "in", rooms).where("expires_ts", ">", now).orderBy("user_id").execute();
      for (const t of typers) out.get(t.room_id)?.push(t.user_id);
    }
    return out;
  }

  /** Users typing in a room right now (initial sync). */
  /** Who is typing now in each of the rooms (an initial /sync): rooms where nobody types are absent. */
  async typingIn(roomIds: readonly string[], now: number = Date.now()): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    for (const ids of chunks(roomIds)) {
      const rows = await this.db.selectFrom("typing").select(["room_id", "user_id"]).where("room_id", "in", ids).where("expires_ts", ">", now).orderBy("user_id").execute();
      for (const r of rows) {
        let list = out.get(r.room_id);
        if (!list) out.set(r.room_id, (list = []));
        list.push(r.user_id);
      }
    }
    return out;
  }

  /**
   * Announces typing that lapsed by `now`: each affected room gets a new stream position so its
   * members' clients drop the indicator. Returns how many entries expired.
   */
  async expireTyping(now: number): Promise<number> {
    // Cheap check first, so an idle sweep does not take the stream lock.
    const any = await this.db.selectFrom("typing").select("room_id").where("expires_ts", ">", 0).where("expires_ts", "<=", now).limit(1).executeTakeFirst();
    if (!any) return 0;
    return this.stream.write(async (w) => {
      const rows = await w.tx.selectFrom("typing").select(["room_id", "user_id"]).where("expires_ts", ">", 0).where("expires_ts", "<=", now).execute();
      const byRoom = new Map<string, string[]>();
      for (const r of rows) {
        let users = byRoom.get(r.room_id);
        if (!users) byRoom.set(r.room_id, (users = []));
        users.push(r.user_id);
      }
      for (const [roomId, users] of byRoom) {
        const pos = w.next();
        for (const ids of chunks(users)) {
          await w.tx.updateTable("typing").set({ expires_ts: 0, stream_pos: pos }).where("room_id", "=", roomId).where("user_id", "in", ids).execute();
        }
      }
      w.touch({ rooms: byRoom.keys(), kind: "ephemeral" });
      return rows.length;
    });
  }

  /** Runs expireTyping every `intervalMs` until the returned function is called. */
  startTypingSweeper(intervalMs: number, onError?: (err: unknown) => void): () => void {
    let running = false;
    const timer = setInterval(() => {
      // A slow sweep (a busy database) must not pile up overlapping ones.
      if (running) return;
      running = true;
      this.expireTyping(Date.now())
        .catch((err: unknown) => onError?.(err))
        .finally(() => {
          running = false;
        });
    }, intervalMs);
    // The sweeper alone should never keep the process alive.
    timer.unref();
    return () => clearInterval(timer);
  }

  // ---- presence ---------------------------------------------------------------------------

  /** Installs the hook that may pin a user's presence (duty hours); it wins over what clients set. */
  setPresenceOverride(override: PresenceOverride, peek?: PresenceOverridePeek): void {
    this.presenceOverride = override;
    this.presenceOverridePeek = peek;
  }

  /**
   * Whether setPresence(userId, state) would change nothing, where that is known without waiting:
   * false also when it is not. Every /sync sets its user's presence, and in a wave of thousands
   * the answer is all but always "nothing to do"; telling so without setPresence's chain of
   * awaits (the override, then the row) saves each request several promises.
   */
  presenceIsCurrent(userId: string, state: PresenceState): boolean {
    let statusMsg: string | null | undefined;
    if (this.presenceOverride) {
      const pinned = this.presenceOverridePeek ? this.presenceOverridePeek(userId) : null;
      if (pinned === null) return false;
      if (pinned) ({ state, statusMsg } = pinned);
    }
    const seen = this.presenceSeen.get(userId);
    return seen !== undefined && seen.done && presenceUnchanged(seen.row, state, statusMsg, Date.now());
  }

  /**
   * Records a user's presence. `statusMsg` undefined keeps the current message, null clears it.
   * Only being online counts as activity. Returns whether a change was announced.
   */
  async setPresence(userId: string, state: PresenceState, statusMsg?: string | null): Promise<boolean> {
    const pinned = await this.presenceOverride?.(userId);
    if (pinned) {
      state = pinned.state;
      statusMsg = pinned.statusMsg;
    }
    const now = Date.now();
    const active = state === "online";
    // Every /sync lands here and almost never changes anything: look without the stream lock
    // first (a write would queue behind the group commit in progress), then again under it.
    const seen = await this.presenceRow(userId);
    if (presenceUnchanged(seen, state, statusMsg, now)) return false;
    if (active && presenceAnnounced(seen, state, statusMsg)) {
      // Still online and active, only last_active_ts is old: that is news to nobody (clients
      // keep showing an active user as online; Synapse does not notify such bumps either). A
      // stream position per active user per minute — with 20,000 officers on shift, hundreds of
      // writes a second — split every long-poll's window and woke whoever watches presence.
      // So the row is brought up to date in the group commit, with no position and no wake-up.
      await this.stream.write(async (w) => {
        await w.tx.updateTable("presence").set({ last_active_ts: now }).where("user_id", "=", userId).where("last_active_ts", "<", now).execute();
      }, { replayable: true });
      this.forgetPresence(userId);
      return false;
    }
    const changed = await this.stream.write(async (w) => {
      const row = await w.tx.selectFrom("presence").selectAll().where("user_id", "=", userId).executeTakeFirst();
      const msg = statusMsg === undefined ? (row?.status_msg ?? null) : statusMsg;
      const lastActive = active || !row ? now : row.last_active_ts;
      if (presenceUnchanged(row, state, statusMsg, now)) return false;
      const pos = w.next();
      const values = { state, status_msg: msg, last_active_ts: lastActive, currently_active: active ? 1 : 0, stream_pos: pos };
      await w.tx
        .insertInto("presence")
        .values({ user_id: userId, ...values })
        .onConflict((oc) => oc.column("user_id").doUpdateSet(values))
        .execute();
      const rooms = await w.tx.selectFrom("room_members").select("room_id").where("user_id", "=", userId).where("membership", "=", "join").execute();
      w.touch({ users: [userId], rooms: rooms.map((r) => r.room_id), kind: "presence" });
      return true;
    }, { replayable: true, presence: true });
    // The wake-up does this too where a sync service listens; here it holds without one.
    if (changed) this.forgetPresence(userId);
    return changed;
  }

  /** A presence change of the user was announced: the row read before may be stale. */
  forgetPresence(userId: string): void {
    this.presenceSeen.delete(userId);
  }

  private presenceRow(userId: string): Promise<PresenceRow | undefined> {
    const seen = this.presenceSeen.get(userId);
    if (seen) return seen.reading;
    const entry: SeenPresence = { reading: selectPresence(this.db, userId).then((rows) => rows[0]), done: false, row: undefined };
    this.presenceSeen.set(userId, entry);
    if (this.presenceSeen.size > 50_000) this.presenceSeen.delete(this.presenceSeen.keys().next().value!);
    entry.reading.then(
      (row) => {
        entry.row = row;
        entry.done = true;
      },
      () => {
        if (this.presenceSeen.get(userId) === entry) this.presenceSeen.delete(userId);
      },
    );
    return entry.reading;
  }

  /**
   * Marks users who have shown no sign of life (no sync, no presence update) for `idleMs` as
   * offline, so a client that vanished without saying so does not look online forever.
   */
  async expirePresence(now: number, idleMs: number): Promise<number> {
    const cutoff = now - idleMs;
    const stale = await this.db.selectFrom("presence").select("user_id").where("state", "!=", "offline").where("last_active_ts", "<=", cutoff).execute();
    let n = 0;
    for (const { user_id } of stale) {
      // A pinned presence (off duty) is not a vanished client.
      if (await this.presenceOverride?.(user_id)) continue;
      const done = await this.stream.write(async (w) => {
        // Re-checked under the stream lock: the user may have come back meanwhile.
        const row = await w.tx.selectFrom("presence").select(["state", "last_active_ts"]).where("user_id", "=", user_id).executeTakeFirst();
        if (!row || row.state === "offline" || row.last_active_ts > cutoff) return false;
        await w.tx.updateTable("presence").set({ state: "offline", currently_active: 0, stream_pos: w.next() }).where("user_id", "=", user_id).execute();
        const rooms = await w.tx.selectFrom("room_members").select("room_id").where("user_id", "=", user_id).where("membership", "=", "join").execute();
        w.touch({ users: [user_id], rooms: rooms.map((r) => r.room_id), kind: "presence" });
        return true;
      }, { presence: true });
      if (done) {
        n++;
        this.forgetPresence(user_id);
      }
    }
    return n;
  }

  async getPresence(userId: string, now: number = Date.now()): Promise<PresenceContent | undefined> {
    const row = await this.db.selectFrom("presence").select(["state", "status_msg", "last_active_ts", "currently_active"]).where("user_id", "=", userId).executeTakeFirst();
    return row ? presenceContent(row, now) : undefined;
  }

  /** Presence of the given users that changed in (since, upto], as m.presence events. */
  async presenceSince(userIds: string[], since: number, upto: number, now: number = Date.now()): Promise<PresenceEvent[]> {
    const out: PresenceEvent[] = [];
    for (const ids of chunks(userIds)) {
      const rows = await this.db
        .selectFrom("presence")
        .leftJoin("users", "users.user_id", "presence.user_id")
        .select(["presence.user_id", "presence.state", "presence.status_msg", "presence.last_active_ts", "presence.currently_active", "users.displayname", "users.avatar_url"])
        .where("presence.user_id", "in", ids)
        .where("presence.stream_pos", ">", since)
        .where("presence.stream_pos", "<=", upto)
        .orderBy("presence.stream_pos")
        .execute();
      for (const r of rows) {
        const content = presenceContent(r, now);
        if (r.displayname) content.displayname = r.displayname;
        if (r.avatar_url) content.avatar_url = r.avatar_url;
        out.push({ type: "m.presence", sender: r.user_id, content });
      }
    }
    return out;
  }
}

async function eventIn(tx: Tx, roomId: string, eventId: string): Promise<{ stream_ordering: number; thread_id: string | null }> {
  const ev = await tx.selectFrom("events").select(["stream_ordering", "thread_id"]).where("event_id", "=", eventId).where("room_id", "=", roomId).executeTakeFirst();
  if (!ev) throw new MatrixError("M_NOT_FOUND", "Event not found in this room");
  return ev;
}

function presenceContent(row: { state: string; status_msg: string | null; last_active_ts: number; currently_active: number }, now: number): PresenceContent {
  const content: PresenceContent = {
    presence: row.state as PresenceState,
    last_active_ago: Math.max(0, now - row.last_active_ts),
    currently_active: row.currently_active === 1,
  };
  if (row.status_msg !== null) content.status_msg = row.status_msg;
  return content;
}

