import { MatrixError } from "@revier/protocol";
import type { Db } from "../storage/database.js";
import type { StreamWriter } from "../storage/stream.js";
import type { Rooms, VisibleRange } from "../rooms/rooms.js";
import type { AccountData } from "../users/account-data.js";
import type { PushService } from "../push/push-service.js";
import type { UnreadCounts } from "../push/notifications.js";
import type { Ephemeral, ReceiptContent } from "../rooms/ephemeral.js";
import type { CancelSignal, Notifier, WaitOutcome } from "./notifier.js";
import type { Devices } from "../users/devices.js";
import { parseFrozen, toClientEvent, type ClientEvent, type EventRow, type StoredPdu, type Viewer } from "../rooms/client-event.js";
import { DEFAULT_TIMELINE_LIMIT, matchesEventFilter, roomAllowed, typeMatches, type EventFilter, type Filter } from "./filter.js";
import { SharedSyncCache } from "./shared-cache.js";
import { prepared } from "../storage/prepared.js";
import { isPresenceOnly } from "../storage/stream.js";
import { loadWindowNews, toDeviceKey, weighWindowNews, type WindowNews } from "./window-news.js";
import { UnreadTracker } from "./unread-tracker.js";
import { MembershipCache, membershipsOf, membershipsAt, type MemberRow, type Memberships } from "./membership-cache.js";
import { Limiter } from "../lib/limiter.js";
import { chunks } from "../lib/chunks.js";
import { FilterCache } from "./filter-cache.js";

export interface SyncParams {
  since: string | undefined;
  timeoutMs: number;
  filter: Filter | undefined;
  fullState: boolean;
  signal?: CancelSignal;
}

type Json = Record<string, unknown>;

/**
 * Widest window (in stream positions) for which "which rooms changed" is answered once for every
 * syncing client rather than per client: long-polls ask about the last few positions; a client
 * back after hours asks about a window of its own, better narrowed by its rooms first.
 */
const SHARED_WINDOW = 5000;
/**
 * /sync responses built at once. Building is CPU work on one thread with short database waits
 * (SQLite answers synchronously; PostgreSQL within a millisecond or two), so a few suffice to keep
 * it busy; more only interleave and hold more in memory.
 */
export const BUILDS_AT_ONCE = 16;
/**
 * A long-poll's timeline page is shared with others in a window this short (see
 * roomTimelineAndState): what long-polls ask for, and few rows. A page of the room's newest
 * events however old serves the rest; used for every long-poll, it read and held up to twice the
 * timeline limit per page where one or two rows were new, and the `sync` bench's incremental p99
 * rose by a third to a half.
 */
const SHARED_TIMELINE_WINDOW = 100;

// Every /sync starts here: compiled once (see prepared.ts).
const selectMemberships = prepared((db, userId: string, upto: number) =>
  db.selectFrom("room_members").select(["room_id", "membership", "stream_ordering", "event_id"]).where("user_id", "=", userId).where("forgotten", "=", 0).where("stream_ordering", "<=", upto),
);
const selectAllMemberships = prepared((db, userId: string) =>
  db.selectFrom("room_members").select(["room_id", "membership", "stream_ordering", "event_id"]).where("user_id", "=", userId).where("forgotten", "=", 0),
);

/**
 * Extra /sync sections other modules fill (to-device, device lists, key counts). `since`: the
 * client's token (what it acknowledges). `from`: where news for the viewer may begin, at or after
 * `since` (see SyncRun.from); windows start there. `news`: who has news of which kind in the
 * short window (from, upto] (null for initial syncs and long windows), so an extension can skip
 * its queries for users with none.
 */
export type SyncExtension = (ctx: { viewer: Viewer; since: number | null; from: number | null; upto: number; joinedRooms: string[]; news: WindowNews | null }, out: Json) => Promise<void>;

/** A step of a /sync request that parked it with the notifier (see SyncService.answer). */
const PARKED = Symbol("parked");

/** A /sync request in progress: what its rounds share, across waits. */
interface SyncRun {
  readonly viewer: Viewer;
  readonly p: SyncParams;
  /** The client's token. */
  readonly since: number | null;
  readonly deadline: number;
  /** Whether presence is news to it (its filter lets m.presence through). */
  readonly presence: boolean;
  /** Whether receipts or typing are news to it (its filter lets either through). */
  readonly ephemeral: boolean;
  /**
   * Nothing in (since, from] is news to the viewer: windows start at `from`. A wave's members were
   * last answered at positions of their own (their other rooms, presence), so windows from their
   * tokens differ member by member, and what the members of a wave could share (which rooms
   * changed, who has account data, to-device messages or device-list changes) was asked once per
   * member. Woken by the same message, they all start where it begins. The guarantee is the one
   * a quiet timeout relies on (its client is handed the watermark as its token): a wait is woken
   * by every announcement naming its user or rooms.
   */
  from: number | null;
  /** Where the current wait began, and whether (since, upto] was known to be quiet then. */
  upto: number;
  quietToUpto: boolean;
  /** Its receipts or typing news was held back once (see Notifier.pacedEphemeralNews): not again. */
  heldBack: boolean;
  readonly done: (err: unknown, out?: Json) => void;
}

/** Unread counts of a room without notifications since the read receipt. */
const NO_UNREAD = { notify: 0, highlight: 0, threads: {} } as const;

export function formatToken(pos: number): string {
  return `s${pos}`;
}

export function parseToken(token: string): number {
  const m = /^s(\d{1,15})$/.exec(token);
  if (!m) throw new MatrixError("M_INVALID_PARAM", "Invalid sync token");
  return Number(m[1]);
}

/** Assembles /sync responses from the database at a fixed upper position. */
export class SyncService {
  private readonly extensions: SyncExtension[] = [];
  private readonly shared = new SharedSyncCache();
  private readonly memberships: MembershipCache;
  /**
   * Devices whose last answer here carried to-device messages. Their next request acknowledges
   * them (a build deletes them), so it is built even when nothing else is new; otherwise a device
   * that goes quiet would leave delivered messages on the server until its next news. Per
   * process and bounded: a miss only delays the deletion to the next build.
   */
  private readonly pendingAck = new Set<string>();
  /** Parsed filters of the requests (see FilterCache). */
  readonly filters = new FilterCache();
  /**
   * Responses built at once (see Limiter: a wave of thousands is answered a few at a time).
   * Readable so tests can hold every slot and line builds up, as a wave does.
   */
  readonly building = new Limiter(BUILDS_AT_ONCE);
  /** Unread counts carried from one answer to the next (see UnreadTracker). */
  private readonly unread: UnreadTracker;

  constructor(
    private readonly d: {
      db: Db;
      stream: StreamWriter;
      rooms: Rooms;
      accountData: AccountData;
      push: PushService;
      ephemeral: Ephemeral;
      notifier: Notifier;
      devices: Devices;
    },
  ) {
    this.memberships = new MembershipCache(async (userId) => (await selectAllMemberships(d.db, userId)) as MemberRow[]);
    this.unread = new UnreadTracker(d.db, this.shared, (userId, roomId, upto) => d.push.unreadCounts(userId, roomId, upto));
    // A wave's long-polls are woken as build slots come free (see Notifier.paceWakes): enough
    // to keep a full line behind the builds running.
    d.notifier.paceWakes(() => Math.max(0, BUILDS_AT_ONCE - this.building.queued));
    d.notifier.observe((w) => {
      // Presence changes name their user (and nothing else names users with presence news
      // alone); any wake-up naming a user may carry one.
      for (const u of w.users) d.ephemeral.forgetPresence(u);
      // Presence touches every room of the user but changes nothing cached about them; with
      // thousands of members re-announcing presence, dropping on it would leave nothing shared.
      if (isPresenceOnly(w)) return;
      for (const r of w.rooms) this.shared.dropRoom(r);
      for (const r of w.ephemeralRooms ?? []) this.shared.dropRoom(r);
      for (const u of w.users) this.memberships.drop(u);
    });
  }

  private readonly resumeWakes = () => this.d.notifier.resumeWakes();

  /** Lets go of shared answers that have expired (see SharedSyncCache.dropExpired). */
  dropExpired(): void {
    this.shared.dropExpired();
  }

  extend(ext: SyncExtension): void {
    this.extensions.push(ext);
  }

  /**
   * Answers a /sync request through `done`: with the answer, or with what went wrong. A long-poll
   * that has to wait is parked with the notifier (see Notifier.park) and goes on from `resume`;
   * meanwhile nothing is suspended. Thousands wait at once, each for up to a second between a
   * wave's messages: as a chain of async functions (the route's, the HTTP wrapper's, this one's
   * loop) each held its frames and promises, and the collector copied them twice before
   * promoting them, a third of the main thread's time in a 5,000-member wave.
   */
  answer(viewer: Viewer, p: SyncParams, done: (err: unknown, out?: Json) => void): void {
    let run: SyncRun;
    try {
      const since = p.since !== undefined ? parseToken(p.since) : null;
      run = { viewer, p, since, deadline: Date.now() + p.timeoutMs - longPollJitter(p.timeoutMs), presence: wantsType(p.filter?.presence, "m.presence"), ephemeral: wantsType(p.filter?.room?.ephemeral, "m.receipt") || wantsType(p.filter?.room?.ephemeral, "m.typing"), from: since, upto: 0, quietToUpto: true, heldBack: false, done };
    } catch (err) {
      done(err);
      return;
    }
    this.settle(run, this.untilWait(run));
  }

  /** Hands a step's outcome to the request, unless the step parked it. */
  private settle(run: SyncRun, step: Promise<Json | typeof PARKED>): void {
    step.then(
      (out) => {
        if (out !== PARKED) run.done(null, out);
      },
      (err: unknown) => run.done(err),
    );
  }

  /**
   * One round of a request: look, build if there may be news, and answer — or park until there
   * may be some (then `resume` goes on).
   */
  private async untilWait(run: SyncRun): Promise<Json | typeof PARKED> {
    const { viewer, p, since } = run;
    // A long-poll may stop at what the notifier has heard of: its wait covers anything later.
    // A request that wants an answer now (and a token from a process that is ahead) reads
    // the committed position, so a client sees its own writes made through other processes.
    const heard = this.d.notifier.heardPosition();
    const upto = p.timeoutMs > 0 && since !== null && heard !== null && since <= heard ? heard : await this.d.stream.current();
    if (since !== null && since > upto) {
      // A token from the future (e.g. a restore from backup) would hide everything until the
      // stream catches up; answer with the current position so the client resynchronises.
      return this.build(viewer, null, upto, p);
    }
    // A client back with the newest token (every long-poll after a delivery) cannot have news:
    // each section of an incremental response reports what changed in (since, upto], and
    // (since, since] is empty. Skipping that build halves the work of a long-poll cycle. (The
    // one side effect of a build, acknowledging to-device messages up to `since`, is why a
    // request after an answer that carried some is built anyway: see pendingAck.)
    let rooms: ReadonlySet<string> | null = null;
    // The last answer carried to-device messages: this request acknowledges them, which only a
    // build carries out (they are deleted then), so it is not skipped.
    const acknowledges = since !== null && this.pendingAck.delete(toDeviceKey(viewer.userId, viewer.deviceId));
    // Whether (since, upto] is known to hold nothing for the viewer when the wait below begins.
    let quietToUpto = true;
    // Big rooms whose receipts or typing are all the news there is: answered paced, not now.
    let held: string[] | null = null;
    if (since !== upto || p.fullState || this.answerNow(run) || acknowledges) {
      // A long-poll back while other rooms are busy finds the stream moved on; if nothing
      // announced in between named it, there is nothing to build (see quietBetween).
      let quiet = false;
      if (run.from !== null && !p.fullState && !this.answerNow(run) && !acknowledges) {
        rooms = (await this.membershipsAt(viewer.userId, upto)).joined;
        quiet = this.d.notifier.quietBetween(viewer.userId, rooms, run.from, upto, run.presence, run.ephemeral);
        if (!quiet && run.ephemeral && !run.heldBack) held = this.d.notifier.pacedEphemeralNews(viewer.userId, rooms, run.from, upto, run.presence);
      }
      if (held !== null) {
        // Not quiet: the held news is in (since, upto], and its build comes when it is let go.
        quietToUpto = false;
        run.heldBack = true;
      }
      else if (!quiet) {
        const out = await this.build(viewer, since, upto, p, run.from);
        if (this.answerNow(run) || hasNews(out)) return out;
        // Built and found nothing to show; that is not the same as nothing announced.
        quietToUpto = false;
      }
    }
    rooms ??= (await this.membershipsAt(viewer.userId, upto)).joined;
    run.upto = upto;
    run.quietToUpto = quietToUpto;
    this.d.notifier.park(viewer.userId, rooms, upto, run.deadline - Date.now(), p.signal, { presence: run.presence, ephemeral: run.ephemeral, ...(held !== null ? { holdBackIn: held } : {}) }, (outcome) => this.resume(run, outcome));
    return PARKED;
  }

  /**
   * Whether the request is answered without waiting: an initial sync, a deadline passed, a client
   * gone, or shutdown begun (waiting would return at once: answer instead of polling the database).
   */
  private answerNow(run: SyncRun): boolean {
    return run.since === null || Date.now() >= run.deadline || run.p.signal?.aborted === true || this.d.notifier.isClosed;
  }

  private resume(run: SyncRun, outcome: WaitOutcome): void {
    this.settle(run, this.afterWait(run, outcome));
  }

  private async afterWait(run: SyncRun, outcome: WaitOutcome): Promise<Json | typeof PARKED> {
    const { viewer, p, since, upto } = run;
    if (outcome.reason === "woken" && outcome.quietThrough !== null && run.quietToUpto && run.from !== null && outcome.quietThrough > run.from) run.from = outcome.quietThrough;
    // Nobody reads the answer to a request whose client went away.
    if (outcome.reason === "aborted") return quietResponse(upto);
    // A long-poll that timed out without a wake-up for it: (since, upto] was empty and
    // nothing announced since named its user or rooms, so there is nothing to look up —
    // with 20,000 idle clients, building these answers was most of the server's work.
    // Only while nothing was committed beyond what was heard: another process's wake-ups can be
    // lost (NATS down), and then the committed position is the only sign of its writes.
    if (outcome.reason === "timeout" && outcome.quietThrough !== null) {
      const committed = await this.d.stream.current();
      if (committed <= outcome.quietThrough) return quietResponse(Math.max(upto, outcome.quietThrough));
      return this.build(viewer, since, committed, p, run.from);
    }
    if (Date.now() >= run.deadline || p.signal?.aborted) return this.build(viewer, since, await this.d.stream.current(), p, run.from);
    return this.untilWait(run);
  }

  /** `from`: see SyncRun.from; defaults to `since`. */
  private build(viewer: Viewer, since: number | null, upto: number, p: SyncParams, from = since): Promise<Json> {
    return this.building.run(() => {
      // In a wave of thousands a build waits its turn for a while. A long-poll answers with what
      // has been heard by the time its turn comes: a message sent meanwhile then rides along
      // with the one that woke it, instead of reaching this member only after the whole queue
      // has been worked through once more, at the cost of another answer. (Not presence alone:
      // see heardNewsPosition.)
      const heard = p.timeoutMs > 0 && since !== null ? this.d.notifier.heardNewsPosition() : null;
      const built = this.buildNow(viewer, since, from, heard !== null && heard > upto ? heard : upto, p);
      // The slot frees once this settles: the next of a wave's long-polls may be woken.
      void built.then(this.resumeWakes, this.resumeWakes);
      return built;
    });
  }

  /**
   * `since`: the client's token. `from`: where news for the viewer may begin (see SyncRun.from); the
   * windows asked about start there, while what depends on the token itself (a room newly joined
   * since it, unread counts carried from the answer that handed it out, to-device messages it
   * acknowledges) keeps to `since`.
   */
  private async buildNow(viewer: Viewer, since: number | null, from: number | null, upto: number, p: SyncParams): Promise<Json> {
    const { db } = this.d;
    const filter = p.filter;
    const roomFilter = filter?.room;
    const memberships = (await this.membershipsAt(viewer.userId, upto)).rows;
    // A membership row may have moved past `upto` since; those rooms wait for the next sync.
    const joined = memberships.filter((m) => m.membership === "join" && roomAllowed(roomFilter, m.room_id));
    const joinedIds = joined.map((m) => m.room_id);

    const join: Json = {};
    const invite: Json = {};
    const leave: Json = {};
    const knock: Json = {};

    // For a short window (what a long-polling client asks for), which rooms got events, receipts
    // or typing changes is asked once for everybody syncing over the same window, then narrowed
    // to this user's rooms; only those rooms are looked at further.
    const shortWindow = from !== null && upto - from <= SHARED_WINDOW;
    const news = shortWindow && from !== null ? await this.windowNews(from, upto) : null;
    const inWindow = (kind: "events" | "typing", rooms: string[]): Promise<string[]> =>
      shortWindow && from !== null ? this.roomsChangedIn(kind, from, upto).then((changed) => rooms.filter((r) => changed.has(r))) : Promise.resolve(rooms);

    let changedRooms: Set<string> | null = null;
    if (from !== null && !p.fullState && joinedIds.length > 0) {
      const candidates = await inWindow("events", joinedIds);
      changedRooms = shortWindow
        ? new Set(candidates)
        : new Set(
            (
              await db
                .selectFrom("events")
                .select("room_id")
                .distinct()
                .where("stream_ordering", ">", from)
                .where("stream_ordering", "<=", upto)
                .where("room_id", "in", candidates)
                .execute()
            ).map((r) => r.room_id),
          );
    }
    // The window's answer already lists the rooms with receipts (see WindowNews).
    const receiptRooms = news !== null ? joinedIds.filter((r) => news.receipts.has(r)) : joinedIds;
    const wantsTyping = wantsType(roomFilter?.ephemeral, "m.typing");
    const typingRooms = from === null || !wantsTyping ? joinedIds : await inWindow("typing", joinedIds);
    const [receipts, typing, roomAccountData] = await Promise.all([
      wantsType(roomFilter?.ephemeral, "m.receipt") && receiptRooms.length > 0
        ? from === null
          ? this.d.ephemeral.receiptsFor(joinedIds, viewer.userId)
          : news !== null
            ? this.windowReceipts(receiptRooms, from, upto, viewer.userId, news)
            : this.d.ephemeral.receiptsSince(receiptRooms, from, upto, viewer.userId)
        : new Map<string, Json>(),
      from !== null && wantsTyping && typingRooms.length > 0 ? this.d.ephemeral.typingSince(typingRooms, from, upto) : new Map<string, string[]>(),
      from === null
        ? this.d.accountData.all(viewer.userId)
        : news !== null && !news.accountData.has(viewer.userId)
          ? { global: [], rooms: new Map<string, Json[]>() }
          : this.d.accountData.changedSince(viewer.userId, from, upto),
    ]);

    // An initial sync of an account in many rooms: what would be asked per room is asked once.
    const initial =
      since === null
        ? {
            ranges: await this.d.rooms.visibleRanges(viewer.userId, joinedIds),
            typing: wantsTyping ? await this.d.ephemeral.typingIn(joinedIds) : new Map<string, string[]>(),
            unread: await this.d.push.unreadCountsFor(viewer.userId, upto),
          }
        : null;

    for (const m of joined) {
      // A later member event may only be a profile change; the room is new to the client only if
      // the user was not joined at `since`.
      const newlyJoined = since !== null && m.stream_ordering > since && (await this.d.rooms.membershipAt(m.room_id, viewer.userId, since)) !== "join";
      const hasEvents = since === null || p.fullState || newlyJoined || changedRooms?.has(m.room_id) === true;
      const roomData: Json = {};
      if (hasEvents) {
        const joinedBefore = since !== null && !newlyJoined && !p.fullState && m.stream_ordering <= since;
        Object.assign(roomData, await this.roomTimelineAndState(viewer, m.room_id, newlyJoined || p.fullState ? null : from, upto, filter, joinedBefore, initial?.ranges.get(m.room_id)));
      }
      const eph: Json[] = [];
      const r = receipts.get(m.room_id);
      if (r && Object.keys(r).length > 0) eph.push({ type: "m.receipt", content: r });
      const t = typing.get(m.room_id);
      if (t) eph.push({ type: "m.typing", content: { user_ids: t } });
      const typers = initial?.typing.get(m.room_id);
      if (typers) eph.push({ type: "m.typing", content: { user_ids: typers } });
      const ad = roomAccountData.rooms.get(m.room_id);
      if (!hasEvents && eph.length === 0 && !ad) continue;
      if (!roomData.timeline) roomData.timeline = { events: [], limited: false, prev_batch: formatToken(upto) };
      if (!roomData.state) roomData.state = { events: [] };
      roomData.ephemeral = { events: eph };
      roomData.account_data = { events: ad ?? [] };
      // Carried forward only where the window is known to hold no read receipt of the user in the
      // room (receipts lower a count) and the user's member event is older than the window (the
      // room's shared notifications count for them from their join on).
      const carry = news !== null && since !== null && m.stream_ordering <= since && news.receipts.get(m.room_id)?.has(viewer.userId) !== true;
      let counts: Pick<UnreadCounts, "notify" | "highlight">;
      if (initial) {
        counts = initial.unread.get(m.room_id) ?? NO_UNREAD;
        this.unread.remember(viewer.userId, viewer.deviceId, m.room_id, upto, counts);
      } else {
        counts = await this.unread.counts(viewer.userId, viewer.deviceId, m.room_id, since, from, upto, carry);
      }
      roomData.unread_notifications = { notification_count: counts.notify, highlight_count: counts.highlight };
      join[m.room_id] = roomData;
    }

    for (const m of memberships) {
      if (m.membership === "join" || !roomAllowed(roomFilter, m.room_id)) continue;
      const changed = since === null || m.stream_ordering > since;
      if (!changed) continue;
      if (m.membership === "invite" || m.membership === "knock") {
        const stripped = await this.strippedState(m.room_id, m.event_id);
        if (m.membership === "invite") invite[m.room_id] = { invite_state: { events: stripped } };
        else knock[m.room_id] = { knock_state: { events: stripped } };
      } else if ((m.membership === "leave" || m.membership === "ban") && (since !== null || roomFilter?.include_leave === true)) {
        // Only rooms the user actually left after having been in them show up as left.
        const data = await this.roomTimelineAndState(viewer, m.room_id, since, m.stream_ordering, filter);
        leave[m.room_id] = { ...data, account_data: { events: roomAccountData.rooms.get(m.room_id) ?? [] } };
      }
    }

    const out: Json = {
      next_batch: formatToken(upto),
      rooms: { join, invite, leave, knock },
      account_data: { events: roomAccountData.global.filter((e) => matchesEventFilter(filter?.account_data, { type: e.type, sender: viewer.userId, content: e.content })) },
      presence: { events: await this.presence(viewer.userId, joinedIds, from, upto, filter) },
      to_device: { events: [] },
      device_lists: { changed: [], left: [] },
      device_one_time_keys_count: {},
      device_unused_fallback_key_types: [],
    };
    for (const ext of this.extensions) await ext({ viewer, since, from, upto, joinedRooms: joinedIds, news }, out);
    if ((out.to_device as { events: unknown[] }).events.length > 0) {
      if (this.pendingAck.size >= 100_000) this.pendingAck.clear();
      this.pendingAck.add(toDeviceKey(viewer.userId, viewer.deviceId));
    }
    return out;
  }

  /**
   * The user's memberships as of `upto` (rows that moved past it wait for the next sync). From
   * the cache only where every wake-up up to `upto` has been heard, which is when the cache is
   * known to hold every change up to there (see MembershipCache).
   */
  private async membershipsAt(userId: string, upto: number): Promise<Memberships> {
    if (!this.d.notifier.heardUpTo(upto)) return membershipsOf((await selectMemberships(this.d.db, userId, upto)) as MemberRow[]);
    return membershipsAt(await this.memberships.get(userId), upto);
  }

  /** Who has per-user news in (since, upto]: asked once per window for everybody (see WindowNews). */
  private windowNews(since: number, upto: number): Promise<WindowNews> {
    return this.shared.get(`news:${since}:${upto}`, undefined, () => loadWindowNews(this.d.db, since, upto), weighWindowNews);
  }

  /**
   * Receipts set in `rooms` in (since, upto], as `viewer` is shown them. The public ones are the
   * same for every member and asked once per window for all rooms (in a channel whose members
   * all send receipts, each answer carried the whole room's and asked for them on its own: at
   * 1,000 members that query was half the server's time). Only where the window news says the
   * viewer set a receipt themselves are their private receipts asked for and added, on a copy.
   */
  private async windowReceipts(rooms: string[], since: number, upto: number, viewer: string, news: WindowNews): Promise<Map<string, ReceiptContent>> {
    const own = rooms.filter((r) => news.receipts.get(r)?.has(viewer) === true);
    const [all, mine] = await Promise.all([
      this.shared.get(`receipts:${since}:${upto}`, undefined, () => this.d.ephemeral.publicReceiptsBetween(since, upto), weighReceipts),
      own.length > 0 ? this.d.ephemeral.privateReceiptsSince(own, since, upto, viewer) : null,
    ]);
    const out = new Map<string, ReceiptContent>();
    for (const r of rooms) {
      const shown = all.get(r);
      const added = mine?.get(r);
      if (added === undefined) {
        if (shown !== undefined) out.set(r, shown);
        continue;
      }
      // Shared with other answers: copied where the viewer's private receipts go in.
      const merged: ReceiptContent = { ...shown };
      for (const [eventId, byType] of Object.entries(added)) merged[eventId] = { ...merged[eventId], ...byType };
      out.set(r, merged);
    }
    return out;
  }

  /** Rooms with any item of `kind` in (since, upto]: one query per window, shared (see build). */
  private roomsChangedIn(kind: "events" | "typing", since: number, upto: number): Promise<Set<string>> {
    return this.shared.get(`${kind}:${since}:${upto}`, undefined, async () => {
      const db = this.d.db;
      const rows =
        kind === "events"
          ? await db.selectFrom("events").select("room_id").distinct().where("stream_ordering", ">", since).where("stream_ordering", "<=", upto).execute()
          : await db.selectFrom("typing").select("room_id").distinct().where("stream_pos", ">", since).where("stream_pos", "<=", upto).execute();
      return new Set(rows.map((r) => r.room_id));
    }, (rooms) => 64 + rooms.size * 64);
  }

  /**
   * Timeline (newest `limit` events after `since`, up to `upto`) and the state before it.
   * `joinedBefore`: the viewer is joined and its membership has not changed since `since`; then
   * history visibility lets it see all of (since, upto], without looking (see visibleRange: its
   * range starts at or before its join, at or before `since`, and is open-ended while joined).
   */
  private async roomTimelineAndState(viewer: Viewer, roomId: string, since: number | null, upto: number, filter: Filter | undefined, joinedBefore = false, knownRange?: VisibleRange): Promise<Json> {
    const tf = filter?.room?.timeline;
    const limit = Math.min(tf?.limit ?? DEFAULT_TIMELINE_LIMIT, 500);
    const range = joinedBefore && since !== null ? { from: since, to: Number.MAX_SAFE_INTEGER } : (knownRange ?? (await this.d.rooms.visibleRange(roomId, viewer.userId)));
    const after = Math.max(since ?? 0, range.from);
    const end = Math.min(upto, range.to);
    const timeline: ClientEvent[] = [];
    let limited = false;
    let cursor = end;
    let firstPos: number | null = null;
    const now = Date.now();
    // Fetch in pages so filtered-out events do not starve the timeline.
    const pageSize = Math.max(limit * 2, 20);
    let sharedRows = false;
    while (!limited && cursor > after) {
      // The newest page is what every member of a room asks for after a new message: shared
      // (rows and their parsed JSON; each viewer formats its own copy, with its own transaction
      // ids and ages, around the shared, frozen content). It is filed by room and upper position
      // alone, so members whose tokens differ (each was last answered at a position of its own:
      // other rooms, presence) still share it, and each keeps the part after its own `since`.
      // Long-polls answered within the last SHARED_TIMELINE_WINDOW positions share a page of that
      // window: few rows. Tokens from further back (the first wave after thousands connected,
      // initial syncs) share a second page, the room's newest events however old. A row is
      // parsed when a member first needs it, once for all of them.
      let rows: Array<EventRow & { type: string; pdu?: StoredPdu }>;
      let lastPage: boolean;
      if (cursor === end) {
        const near = end - after <= SHARED_TIMELINE_WINDOW;
        const from = near ? Math.max(0, end - SHARED_TIMELINE_WINDOW) : 0;
        const page = await this.shared.get(
          `timeline:${near ? "near" : "far"}:${roomId}:${end}:${pageSize}`,
          roomId,
          (): Promise<Array<EventRow & { type: string; pdu?: StoredPdu }>> => this.d.rooms.eventsBetween(roomId, { after: from, upto: end, dir: "b", limit: pageSize }),
          (page) => page.reduce((n, r) => n + r.json.length * 3 + 200, 0),
        );
        rows = page.filter((r) => r.stream_ordering > after);
        sharedRows = true;
        // The page reached back past `since`, or holds every event of its window: nothing older to ask for.
        lastPage = rows.length < page.length || page.length < pageSize;
      } else {
        sharedRows = false;
        rows = await this.d.rooms.eventsBetween(roomId, { after, upto: cursor, dir: "b", limit: pageSize });
        // A short page is the start of the window: no need to ask again for nothing.
        lastPage = rows.length < pageSize;
      }
      if (rows.length === 0) break;
      for (const row of rows) {
        if (sharedRows) row.pdu ??= parseFrozen(row.json);
        const ev = toClientEvent(row, { now, viewer, withRoomId: false }, row.pdu);
        if (!matchesEventFilter(tf, ev)) {
          cursor = row.stream_ordering - 1;
          continue;
        }
        // One matching event more than fits: the client has a gap to fill with /messages.
        if (timeline.length >= limit) {
          limited = true;
          break;
        }
        timeline.push(ev);
        firstPos = row.stream_ordering;
        cursor = row.stream_ordering - 1;
      }
      if (lastPage) break;
    }
    timeline.reverse();
    // State and prev_batch describe the point just before the first timeline event.
    const startPos = firstPos !== null ? firstPos - 1 : end;
    const sf = filter?.room?.state;
    const lazy = sf?.lazy_load_members === true;
    let memberKeys: string[] | undefined;
    if (lazy) memberKeys = [...new Set([...timeline.map((e) => e.sender), viewer.userId])];
    let state: ClientEvent[] = [];
    if (since === null || limited) {
      state = await this.d.rooms.stateAt(roomId, startPos, memberKeys ? { memberKeys } : undefined);
      if (since !== null) {
        const sincePos = since;
        const positions = await this.positionsOf(state.map((e) => e.event_id));
        state = state.filter((e) => (positions.get(e.event_id) ?? 0) > sincePos);
      }
      state = state.filter((e) => matchesEventFilter(sf, e)).map((e) => ({ ...e, room_id: undefined }) as ClientEvent);
      for (const e of state) delete e.room_id;
    }
    const result: Json = {
      timeline: { events: timeline, limited, prev_batch: formatToken(startPos) },
      state: { events: state },
    };
    // A former member gets the summary as of their leave, not who is in the room now.
    if (since === null || limited || lazy) result.summary = await this.summary(roomId, viewer.userId, range.to < Number.MAX_SAFE_INTEGER ? end : null);
    return result;
  }

  private async summary(roomId: string, userId: string, at: number | null = null): Promise<Json> {
    // Every member's sync asks this of a big room at once (lazy-loading clients on every
    // incremental sync): counted once and shared until a write to the room drops it (see the
    // constructor; member changes are room events), so it stays "who is in the room now", as
    // if queried. Not keyed by position: presence writes in between would make every sync of
    // a wave see a position of its own. Each viewer only drops itself from the first heroes.
    const base =
      at === null
        ? await this.shared.get(`members:${roomId}`, roomId, () => this.currentSummary(roomId))
        : summarise(
            (await this.d.rooms.stateAt(roomId, at))
              .filter((e) => e.type === "m.room.member" && (e.content.membership === "join" || e.content.membership === "invite"))
              .map((e) => ({ user_id: e.state_key!, membership: e.content.membership as string })),
          );
    const heroes = base.firstMembers.filter((u) => u !== userId).slice(0, 5);
    return { "m.heroes": heroes, "m.joined_member_count": base.joined, "m.invited_member_count": base.invited };
  }

  /**
   * Counted by the database, and only the first members read: reading every member row of a
   * channel to count them held the event loop about 11 ms per message into 5,000 members, and
   * a cap on the rows read miscounted bigger rooms.
   */
  private async currentSummary(roomId: string): Promise<{ joined: number; invited: number; firstMembers: string[] }> {
    const [counts, first] = await Promise.all([selectMemberCounts(this.d.db, roomId), selectFirstMembers(this.d.db, roomId)]);
    const n = (m: string) => Number(counts.find((c) => c.membership === m)?.n ?? 0);
    return { joined: n("join"), invited: n("invite"), firstMembers: first.map((r) => r.user_id) };
  }

  private async strippedState(roomId: string, memberEventId: string): Promise<Json[]> {
    const types = ["m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar", "m.room.canonical_alias", "m.room.encryption", "m.room.topic"];
    const state = await this.d.rooms.currentState(roomId);
    const out: Json[] = state.filter((e) => types.includes(e.type) && e.state_key === "").map((e) => ({ type: e.type, state_key: e.state_key, sender: e.sender, content: e.content }));
    const own = await this.d.rooms.event(memberEventId);
    if (own) {
      const ev = toClientEvent(own);
      out.push({ type: ev.type, state_key: ev.state_key, sender: ev.sender, content: ev.content });
    }
    return out;
  }

  private async presence(userId: string, joinedRooms: string[], since: number | null, upto: number, filter: Filter | undefined): Promise<Json[]> {
    if (joinedRooms.length === 0 || !wantsType(filter?.presence, "m.presence")) return [];
    let users: string[];
    if (since === null) {
      const sharers = await this.d.db.selectFrom("room_members").select("user_id").distinct().where("room_id", "in", joinedRooms).where("membership", "=", "join").execute();
      users = sharers.map((r) => r.user_id);
      if (!users.includes(userId)) users.push(userId);
    } else {
      // Incremental: start from the few users whose presence changed in (since, upto] — one
      // query shared by every sync over that range — instead of listing every member of every
      // room (thousands of rows per sync in a big room), then keep those sharing a room.
      const changed = await this.shared.get(
        `presence:${since}:${upto}`,
        undefined,
        async () => (await this.d.db.selectFrom("presence").select("user_id").where("stream_pos", ">", since).where("stream_pos", "<=", upto).execute()).map((r) => r.user_id),
        (users) => 64 + users.length * 64,
      );
      if (changed.length === 0) return [];
      users = changed.includes(userId) ? [userId] : [];
      const others = changed.filter((u) => u !== userId);
      for (const batch of chunks(others)) {
        const rows = await this.d.db
          .selectFrom("room_members")
          .select("user_id")
          .distinct()
          .where("room_id", "in", joinedRooms)
          .where("membership", "=", "join")
          .where("user_id", "in", batch)
          .execute();
        for (const r of rows) users.push(r.user_id);
      }
      if (users.length === 0) return [];
    }
    const events = await this.d.ephemeral.presenceSince(users, since ?? 0, upto);
    return events.filter((e) => matchesEventFilter(filter?.presence, { type: e.type, sender: e.sender, content: e.content }));
  }

  private async positionsOf(eventIds: string[]): Promise<Map<string, number>> {
    if (eventIds.length === 0) return new Map();
    const rows = await this.d.db.selectFrom("events").select(["event_id", "stream_ordering"]).where("event_id", "in", eventIds).execute();
    return new Map(rows.map((r) => [r.event_id, r.stream_ordering]));
  }
}

/** Member counts and the first six members (heroes are five of them other than the viewer). */
const selectMemberCounts = prepared((db, roomId: string) =>
  db
    .selectFrom("room_members")
    .select(["membership", (eb) => eb.fn.countAll<number>().as("n")])
    .where("room_id", "=", roomId)
    .where((eb) => eb.or([eb("membership", "=", "join"), eb("membership", "=", "invite")]))
    .groupBy("membership"),
);
/** The heroes' candidates: five besides the viewer. */
const selectFirstMembers = prepared((db, roomId: string) =>
  db
    .selectFrom("room_members")
    .select("user_id")
    .where("room_id", "=", roomId)
    .where((eb) => eb.or([eb("membership", "=", "join"), eb("membership", "=", "invite")]))
    .orderBy("stream_ordering")
    .limit(6),
);

function summarise(rows: ReadonlyArray<{ user_id: string; membership: string }>): { joined: number; invited: number; firstMembers: string[] } {
  const joined = rows.filter((r) => r.membership === "join").length;
  return { joined, invited: rows.length - joined, firstMembers: rows.slice(0, 6).map((r) => r.user_id) };
}

/** Whether an event filter lets any event of this type through (types and not_types only). */
function wantsType(f: EventFilter | undefined, type: string): boolean {
  if (!f) return true;
  if (f.not_types?.some((p) => typeMatches(p, type))) return false;
  return !f.types || f.types.some((p) => typeMatches(p, type));
}


/**
 * How much earlier than asked an idle long-poll is answered. Clients that connected together (a
 * shift starting, a network coming back, a restart) would otherwise time out together, every
 * 30 s, and each herd of thousands of answers and new requests holds up the event loop for
 * everyone else. Answering somewhat early is within the spec (the timeout is a maximum) and
 * spreads them out. Short timeouts are left alone.
 */
export function longPollJitter(timeoutMs: number): number {
  if (timeoutMs < 10_000) return 0;
  return Math.floor(Math.random() * Math.min(timeoutMs * 0.2, 10_000));
}

/**
 * An answer with nothing new, up to `upto`. The key counts are left out rather than guessed:
 * clients keep what they last heard (an empty fallback-key list would tell them to make a new
 * fallback key), and the next full answer reports them.
 */
function quietResponse(upto: number): Json {
  return {
    next_batch: formatToken(upto),
    rooms: { join: {}, invite: {}, leave: {}, knock: {} },
    account_data: { events: [] },
    presence: { events: [] },
    to_device: { events: [] },
    device_lists: { changed: [], left: [] },
  };
}

function hasNews(out: Json): boolean {
  const rooms = out.rooms as Record<string, Json>;
  if (Object.values(rooms).some((section) => Object.keys(section).length > 0)) return true;
  for (const key of ["account_data", "presence", "to_device"]) if (((out[key] as { events: unknown[] }).events ?? []).length > 0) return true;
  const dl = out.device_lists as { changed: unknown[]; left: unknown[] };
  return dl.changed.length > 0 || dl.left.length > 0;
}

/** About what a window's receipts hold in memory (see SharedSyncCache's byte bound). */
function weighReceipts(receipts: ReadonlyMap<string, ReceiptContent>): number {
  let bytes = 64;
  for (const content of receipts.values()) {
    for (const byType of Object.values(content)) {
      bytes += 160;
      for (const byUser of Object.values(byType)) bytes += 96 * Object.keys(byUser).length;
    }
  }
  return bytes;
}
