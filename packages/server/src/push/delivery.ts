import { sql } from "kysely";
import type { Logger } from "pino";
import type { Db, Storage } from "../storage/database.js";
import type { StreamWriter } from "../storage/stream.js";
import type { Bus, WakeUp } from "../bus/bus.js";
import { randomToken } from "../lib/random.js";
import { notificationFields, notifyBody, postToGateway, wantsFullFormat, type DeliveryOutcome, type EventDetails, type PushNotification } from "./gateway.js";
import type { PushDestinations } from "./destinations.js";
import { WEBPUSH_KIND, type WebPushSender } from "./web-push.js";
import { chunks } from "../lib/chunks.js";
import { sharedConcerns, unreadByRoom } from "./notifications.js";

/**
 * Decides, for a batch of recipients, which notifications must not be pushed (true = drop).
 * Governance (duty hours) hooks in here; core push code knows nothing of it.
 */
export type DeliveryFilter = (userIds: Iterable<string>) => Promise<(userId: string, roomId: string) => boolean>;

export interface DeliveryTuning {
  /** First retry delay; each further failure doubles it. */
  retryBaseMs: number;
  retryMaxMs: number;
  /** A notification still undelivered this long after it was queued is dropped. */
  giveUpAfterMs: number;
  /** How long a claimed row stays with the process that claimed it (a crashed process's claims run out). */
  leaseMs: number;
  /** Fallback poll for work other processes left behind; the own process is woken directly. */
  pollMs: number;
  /** Per request to a gateway or push service. */
  timeoutMs: number;
  /** Rows per enqueue or delivery batch. */
  batch: number;
  /** Pushers served in parallel. */
  concurrency: number;
  /**
   * Least time between the starts of two runs that new notifications set off. A run moves the
   * enqueue cursor in a transaction of its own, a commit (an fsync on SQLite, on the one thread)
   * even when nobody notified has a pusher; run for every message of a busy hour, that was as many
   * commits again as the messages' own. A push waits up to this much longer for its gateway.
   */
  minIntervalMs: number;
}

export const DEFAULT_TUNING: DeliveryTuning = {
  retryBaseMs: 1_000,
  retryMaxMs: 5 * 60_000,
  giveUpAfterMs: 6 * 3600_000,
  leaseMs: 2 * 60_000,
  pollMs: 15_000,
  timeoutMs: 10_000,
  batch: 500,
  concurrency: 8,
  minIntervalMs: 250,
};

const CURSOR = "push_delivery";

interface QueuedRow {
  id: number;
  user_id: string;
  app_id: string;
  pushkey: string;
  room_id: string;
  event_id: string;
  highlight: number;
  attempts: number;
  created_ts: number;
  kind: string | null;
  json: string | null;
  pusher_ts: number | null;
}

/**
 * Push delivery: a persistent queue between the push actions recorded with each event and the
 * pushers (HTTP push gateways and Web Push).
 *
 * 1. `recordActions` stores which members an event notifies, inside the event's transaction. The
 *    push service tells us the event's position; once a wake-up shows that position committed,
 *    the worker runs — after commit and outside the stream write lock.
 * 2. Enqueue: notifications above the `push_delivery` cursor, for users with pushers, become rows
 *    of `push_queue` (minus those the filters drop, e.g. off duty), and the cursor moves, in one
 *    transaction. A shared notification (notifications.ts) reaches the members joined when this
 *    runs, moments after the commit: one who left in between is not pushed. The cursor and the
 *    queue live in the database, so a restart loses nothing: the next run picks up where the
 *    last one committed.
 * 3. Deliver: due rows are claimed with a token and a lease, sent per pusher in order, and deleted
 *    on success. Failures that may pass are retried with exponential back-off; a pushkey the
 *    gateway rejects (or a Web Push subscription that is gone) removes the pusher.
 */
export class PushDelivery {
  readonly tuning: DeliveryTuning = { ...DEFAULT_TUNING };
  private readonly db: Db;
  private readonly filters: DeliveryFilter[] = [];
  private pending: number[] = [];
  private chain: Promise<void> = Promise.resolve();
  private queued = false;
  private running = false;
  private scheduleSeq = 0;
  private timer: NodeJS.Timeout | null = null;
  /** Set while a run that notifications asked for waits out minIntervalMs. */
  private paceTimer: NodeJS.Timeout | null = null;
  private lastRunStart = Number.NEGATIVE_INFINITY;
  private started = false;
  private stopped = false;
  private readonly abort = new AbortController();
  private readonly unsubscribe: () => void;

  constructor(
    private readonly deps: {
      storage: Storage;
      stream: StreamWriter;
      bus: Bus;
      log: Logger;
      webPush: WebPushSender | null;
      /** Organisation setting: pushers asking for the full format may get event content. */
      includeContent: boolean;
      destinations: PushDestinations;
    },
  ) {
    this.db = deps.storage.db;
    this.unsubscribe = deps.bus.subscribe((w) => this.onWake(w));
  }

  addFilter(filter: DeliveryFilter): void {
    this.filters.push(filter);
  }

  /** Push-service listener, called inside the event's transaction: never touches the database. */
  noteNotifications(position: number): void {
    if (this.started && !this.stopped) this.pending.push(position);
  }

  private onWake(w: WakeUp): void {
    if (this.pending.length === 0 || !this.pending.some((p) => p <= w.position)) return;
    // A wake-up at or above a noted position comes from that transaction's commit or a later one
    // (positions commit in order), so its notifications are visible now.
    this.pending = this.pending.filter((p) => p > w.position);
    this.kickPaced();
  }

  /** kick(), but no sooner than minIntervalMs after the last run began. */
  private kickPaced(): void {
    const wait = this.lastRunStart + this.tuning.minIntervalMs - Date.now();
    if (wait <= 0) return this.kick();
    if (this.paceTimer !== null) return;
    this.paceTimer = setTimeout(() => {
      this.paceTimer = null;
      this.kick();
    }, wait);
  }

  /** Starts the worker; returns a function that stops it (without waiting). */
  start(): () => void {
    if (this.started) return () => void this.stop();
    this.started = true;
    this.kick();
    return () => void this.stop();
  }

  /** Schedules a run (runs never overlap; kicks during a run coalesce into one more run). */
  kick(): void {
    if (!this.started || this.stopped || this.queued) return;
    this.queued = true;
    this.chain = this.chain
      .then(async () => {
        this.queued = false;
        if (this.stopped) return;
        this.running = true;
        this.lastRunStart = Date.now();
        try {
          await this.runOnce();
        } finally {
          this.running = false;
        }
      })
      .catch((err: unknown) => this.deps.log.warn({ err: { message: (err as Error).message } }, "push delivery run failed"))
      .finally(() => this.scheduleNext());
  }

  /** Runs the worker now and waits for it: everything committed so far is queued, and due rows are tried. */
  async flush(): Promise<void> {
    this.kick();
    await this.chain;
  }

  async stop(): Promise<void> {
    if (this.stopped) return this.chain;
    this.stopped = true;
    this.unsubscribe();
    if (this.timer) clearTimeout(this.timer);
    if (this.paceTimer) clearTimeout(this.paceTimer);
    this.abort.abort();
    await this.chain;
  }

  /** Sets the timer for the earliest retry. Only the latest call counts, and never while a run is due or running (its end schedules again). */
  private scheduleNext(): void {
    if (this.stopped || this.queued || this.running) return;
    const seq = ++this.scheduleSeq;
    void this.nextDue()
      .catch(() => null)
      .then((at) => {
        if (this.stopped || this.queued || this.running || seq !== this.scheduleSeq) return;
        if (this.timer) clearTimeout(this.timer);
        const delay = at === null ? this.tuning.pollMs : Math.min(this.tuning.pollMs, Math.max(0, at - Date.now()));
        this.timer = setTimeout(() => this.kick(), delay);
        this.timer.unref();
      });
  }

  private async nextDue(): Promise<number | null> {
    const row = await this.db.selectFrom("push_queue").select((eb) => eb.fn.min("next_attempt_ts").as("at")).executeTakeFirst();
    return row?.at == null ? null : Number(row.at);
  }

  private async runOnce(): Promise<void> {
    while (!this.stopped && (await this.enqueue())) {
      // more committed notifications than one batch
    }
    while (!this.stopped && (await this.deliverDue()) > 0) {
      // more due rows than one batch
    }
  }

  // ---- enqueue ------------------------------------------------------------------------------

  private async readCursor(db: Db): Promise<number | null> {
    const row = await db.selectFrom("counters").select("value").where("name", "=", CURSOR).executeTakeFirst();
    return row ? Number(row.value) : null;
  }

  /** Moves one batch of committed notifications into the queue. Returns whether more are waiting. */
  async enqueue(): Promise<boolean> {
    const upto = await this.deps.stream.current();
    const cursor = await this.readCursor(this.db);
    if (cursor === null) {
      // Only if the migration's row was removed by hand: start from now rather than from zero.
      await this.db.insertInto("counters").values({ name: CURSOR, value: upto }).onConflict((oc) => oc.column("name").doNothing()).execute();
      return false;
    }
    if (cursor >= upto) return false;
    const { batch } = this.tuning;
    // Notifications of users with pushers in the range: rows of their own, and the shared rows
    // expanded to the members they concern (see notifications.ts), in one order.
    const select = (from: number, to: number) => {
      const own = this.db
        .selectFrom("event_push_actions as a")
        .innerJoin("pushers as p", "p.user_id", "a.user_id")
        .select(["a.user_id", "a.room_id", "a.event_id", "a.stream_ordering", "a.highlight", "p.app_id", "p.pushkey"])
        .where("a.notify", "=", 1)
        .where("a.stream_ordering", ">", from)
        .where("a.stream_ordering", "<=", to);
      const shared = this.db
        .selectFrom("event_push_shared as s")
        .innerJoin("room_members as m", "m.room_id", "s.room_id")
        .innerJoin("pushers as p", "p.user_id", "m.user_id")
        .select(["m.user_id", "s.room_id", "s.event_id", "s.stream_ordering", "s.highlight", "p.app_id", "p.pushkey"])
        .where(sharedConcerns)
        .where("s.stream_ordering", ">", from)
        .where("s.stream_ordering", "<=", to);
      return this.db.selectFrom(own.unionAll(shared).as("n")).selectAll().orderBy("n.stream_ordering").orderBy("n.user_id").orderBy("n.app_id").orderBy("n.pushkey");
    };
    let rows = await select(cursor, upto).limit(batch).execute();
    let next = upto;
    if (rows.length === batch) {
      // Stop at a position boundary, so one event's notifications are never split between batches.
      const last = rows[rows.length - 1]!.stream_ordering;
      const before = rows.filter((r) => r.stream_ordering < last);
      if (before.length > 0) {
        rows = before;
        next = last - 1;
      } else {
        rows = await select(last - 1, last).execute();
        next = last;
      }
    }
    let keep = rows;
    if (rows.length > 0) {
      const users = rows.map((r) => r.user_id);
      for (const f of this.filters) {
        const drop = await f(users);
        keep = keep.filter((r) => !drop(r.user_id, r.room_id));
      }
    }
    const now = Date.now();
    const values = keep.map((r) => ({
      user_id: r.user_id,
      app_id: r.app_id,
      pushkey: r.pushkey,
      room_id: r.room_id,
      event_id: r.event_id,
      stream_ordering: r.stream_ordering,
      highlight: r.highlight,
      attempts: 0,
      next_attempt_ts: now,
      created_ts: now,
      claim: null,
    }));
    const moved = await this.db.transaction().execute(async (tx) => {
      // The cursor row is locked (PostgreSQL) and re-read: if another process moved it meanwhile,
      // this batch is its business and we start over from the new cursor.
      const locked =
        this.deps.storage.dialect === "postgres"
          ? await sql<{ value: number }>`select value from counters where name = ${CURSOR} for update`.execute(tx)
          : await sql<{ value: number }>`select value from counters where name = ${CURSOR}`.execute(tx);
      if (Number(locked.rows[0]?.value) !== cursor) return false;
      for (let i = 0; i < values.length; i += 200) {
        await tx
          .insertInto("push_queue")
          .values(values.slice(i, i + 200))
          .onConflict((oc) => oc.columns(["user_id", "app_id", "pushkey", "event_id"]).doNothing())
          .execute();
      }
      await tx.updateTable("counters").set({ value: next }).where("name", "=", CURSOR).execute();
      return true;
    });
    return !moved || next < upto;
  }

  // ---- deliver ------------------------------------------------------------------------------

  /** Claims one batch of due rows and delivers them. Returns how many rows it claimed. */
  async deliverDue(): Promise<number> {
    const now = Date.now();
    const token = randomToken(12);
    const { batch, leaseMs } = this.tuning;
    // The outer condition is checked again on each row, so two processes never both claim one.
    await this.db
      .updateTable("push_queue")
      .set({ claim: token, next_attempt_ts: now + leaseMs })
      .where("next_attempt_ts", "<=", now)
      .where("id", "in", this.db.selectFrom("push_queue").select("id").where("next_attempt_ts", "<=", now).orderBy("id").limit(batch))
      .execute();
    const claimed: QueuedRow[] = await this.db
      .selectFrom("push_queue as q")
      .leftJoin("pushers as p", (j) => j.onRef("p.user_id", "=", "q.user_id").onRef("p.app_id", "=", "q.app_id").onRef("p.pushkey", "=", "q.pushkey"))
      .select(["q.id", "q.user_id", "q.app_id", "q.pushkey", "q.room_id", "q.event_id", "q.highlight", "q.attempts", "q.created_ts", "p.kind", "p.json", "p.created_ts as pusher_ts"])
      .where("q.claim", "=", token)
      .orderBy("q.id")
      .execute();
    if (claimed.length === 0) return 0;
    const gone = claimed.filter((r) => r.kind === null).map((r) => r.id);
    if (gone.length > 0) await this.db.deleteFrom("push_queue").where("id", "in", gone).execute();
    const groups = new Map<string, QueuedRow[]>();
    for (const r of claimed) {
      if (r.kind === null) continue;
      const key = `${r.user_id}\u0000${r.app_id}\u0000${r.pushkey}`;
      let g = groups.get(key);
      if (!g) groups.set(key, (g = []));
      g.push(r);
    }
    const unread = new Map<string, Promise<number>>();
    const queue = [...groups.values()];
    const worker = async () => {
      for (let g = queue.shift(); g; g = queue.shift()) await this.deliverGroup(g, unread);
    };
    await Promise.all(Array.from({ length: Math.min(this.tuning.concurrency, queue.length) }, worker));
    return claimed.length;
  }

  /** One pusher's rows, in order; a failure postpones the rest so a broken gateway is not hammered. */
  private async deliverGroup(rows: QueuedRow[], unread: Map<string, Promise<number>>): Promise<void> {
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]!;
      const rest = rows.slice(i + 1).map((r) => r.id);
      if (this.stopped) {
        await this.release([row.id, ...rest], Date.now());
        return;
      }
      let outcome: DeliveryOutcome;
      try {
        outcome = await this.deliverOne(row, unread);
      } catch (err) {
        outcome = { result: "retry", reason: (err as Error).message };
      }
      const log = { user_id: row.user_id, app_id: row.app_id, event_id: row.event_id, attempts: row.attempts + 1 };
      if (outcome.result === "delivered") {
        await this.db.deleteFrom("push_queue").where("id", "=", row.id).execute();
        continue;
      }
      if (outcome.result === "failed") {
        this.deps.log.warn({ ...log, reason: outcome.reason }, "push notification dropped: the gateway refused it");
        await this.db.deleteFrom("push_queue").where("id", "=", row.id).execute();
        continue;
      }
      if (outcome.result === "rejected") {
        this.deps.log.info({ ...log, reason: outcome.reason }, "pusher removed: its pushkey was rejected");
        await this.db.transaction().execute(async (tx) => {
          await tx.deleteFrom("pushers").where("user_id", "=", row.user_id).where("app_id", "=", row.app_id).where("pushkey", "=", row.pushkey).execute();
          await tx.deleteFrom("push_queue").where("user_id", "=", row.user_id).where("app_id", "=", row.app_id).where("pushkey", "=", row.pushkey).execute();
        });
        return;
      }
      const now = Date.now();
      if (this.stopped) {
        // Cut short by shutdown: not the gateway's fault, so no attempt is counted.
        await this.release([row.id, ...rest], now);
        return;
      }
      if (now - row.created_ts >= this.tuning.giveUpAfterMs) {
        this.deps.log.warn({ ...log, reason: outcome.reason }, "push notification dropped after retrying too long");
        await this.db.deleteFrom("push_queue").where("id", "=", row.id).execute();
        continue;
      }
      const delay = Math.max(outcome.retryAfterMs ?? 0, backoff(row.attempts, this.tuning));
      this.deps.log.debug({ ...log, reason: outcome.reason, retry_in_ms: delay }, "push delivery failed; will retry");
      await this.db.updateTable("push_queue").set({ attempts: row.attempts + 1, next_attempt_ts: now + delay, claim: null }).where("id", "=", row.id).execute();
      await this.release(rest, now + delay);
      return;
    }
  }

  private async release(ids: number[], at: number): Promise<void> {
    for (const batch of chunks(ids)) {
      await this.db.updateTable("push_queue").set({ next_attempt_ts: at, claim: null }).where("id", "in", batch).execute();
    }
  }

  private async deliverOne(row: QueuedRow, unread: Map<string, Promise<number>>): Promise<DeliveryOutcome> {
    const pusher = JSON.parse(row.json!) as { data?: Record<string, unknown> };
    const data = pusher.data ?? {};
    let count = unread.get(row.user_id);
    if (!count) unread.set(row.user_id, (count = this.unreadCount(row.user_id)));
    const n: PushNotification = { eventId: row.event_id, roomId: row.room_id, unread: await count, highlight: row.highlight === 1 };
    if (this.deps.includeContent && wantsFullFormat(data)) {
      const details = await this.eventDetails(row.event_id, row.room_id, row.user_id);
      if (details) n.details = details;
    }
    const refusal = typeof data.url === "string" ? await this.deps.destinations.refusal(data.url) : null;
    // The pusher was checked when it was set; a destination that became internal since is dropped.
    if (refusal) return { result: "rejected", reason: refusal };
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.tuning.timeoutMs)]);
    if (row.kind === "http") {
      if (typeof data.url !== "string") return { result: "failed", reason: "pusher has no data.url" };
      return postToGateway(data.url, notifyBody({ app_id: row.app_id, pushkey: row.pushkey, created_ts: row.pusher_ts ?? 0, data }, n), row.pushkey, signal);
    }
    if (row.kind === WEBPUSH_KIND) {
      if (!this.deps.webPush) return { result: "failed", reason: "Web Push is not configured in this process" };
      if (typeof data.url !== "string" || typeof data.auth !== "string") return { result: "failed", reason: "pusher lacks data.url or data.auth" };
      return this.deps.webPush.send({ endpoint: data.url, p256dh: row.pushkey, auth: data.auth }, JSON.stringify({ notification: notificationFields(n) }), signal);
    }
    return { result: "failed", reason: `unknown pusher kind ${row.kind}` };
  }

  /**
   * Unread notifications of the user across the rooms they are joined to: those after their read
   * receipt in each room, counted the way /sync counts them.
   */
  async unreadCount(userId: string): Promise<number> {
    let n = 0;
    for (const c of (await unreadByRoom(this.db, userId)).values()) n += c.notify;
    return n;
  }

  /** Type, sender, names and content for the full format (only used when the organisation allows it). */
  private async eventDetails(eventId: string, roomId: string, userId: string): Promise<EventDetails | undefined> {
    const ev = await this.db.selectFrom("events").select("json").where("event_id", "=", eventId).executeTakeFirst();
    if (!ev) return undefined;
    const pdu = JSON.parse(ev.json) as { type: string; sender: string; state_key?: string; content?: Record<string, unknown> };
    const sender = await this.db.selectFrom("room_members").select("displayname").where("room_id", "=", roomId).where("user_id", "=", pdu.sender).executeTakeFirst();
    const name = await this.db
      .selectFrom("room_state")
      .innerJoin("events", "events.event_id", "room_state.event_id")
      .select("events.json")
      .where("room_state.room_id", "=", roomId)
      .where("room_state.type", "=", "m.room.name")
      .where("room_state.state_key", "=", "")
      .executeTakeFirst();
    const roomName = name ? (JSON.parse(name.json) as { content?: { name?: unknown } }).content?.name : undefined;
    const details: EventDetails = { type: pdu.type, sender: pdu.sender, content: pdu.content ?? {} };
    if (sender?.displayname) details.sender_display_name = sender.displayname;
    if (typeof roomName === "string" && roomName !== "") details.room_name = roomName;
    if (pdu.type === "m.room.member") details.user_is_target = pdu.state_key === userId;
    return details;
  }
}

/** Exponential back-off: base, 2·base, 4·base … capped. */
export function backoff(attempts: number, t: Pick<DeliveryTuning, "retryBaseMs" | "retryMaxMs">): number {
  return Math.min(t.retryMaxMs, t.retryBaseMs * 2 ** Math.min(attempts, 30));
}
