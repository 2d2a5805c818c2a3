import type { Kysely } from "kysely";
import type { Db } from "../storage/database.js";
import type { Database } from "../storage/schema.js";

/** What a token lookup found: the token's device and expiry, and its user's standing. */
export interface CachedSession {
  readonly userId: string;
  readonly deviceId: string;
  readonly tokenHash: string;
  readonly expiresTs: number | null;
  readonly refreshTokenHash: string | null;
  readonly account: { readonly locked: number; readonly role: string };
}

interface Entry {
  session: CachedSession;
  readAt: number;
}

export interface SessionCacheOptions {
  /** How often the change log is read: the longest a revocation through another process goes unseen here. */
  pollMs?: number;
  /** A session is read again after this long whatever the log says: a backstop, not the mechanism. */
  maxAgeMs?: number;
  /** Tokens kept at most (a state police: about 22,000 users with up to 3 devices each). */
  capacity?: number;
  /** The clock (tests move it). */
  now?: () => number;
}

/**
 * How far back each read of the change log looks. A row is acted on once (by position), but
 * rows are read by time because positions are not committed in order on PostgreSQL: a row
 * written in a transaction that commits late has a lower position than one already read. This
 * covers commit delays and clocks apart between the processes.
 */
const LOOKBACK_MS = 10_000;

/** Log rows are kept this long (see prune); a process reads only the last LOOKBACK_MS of them. */
const KEEP_MS = 24 * 3600_000;

/**
 * Sessions (token digest → user, device, expiry and the user's lock and role) kept in memory.
 *
 * Every request presents its token; reading it from the database was the largest single cost of
 * a long-poll answer (a cold SQLite read after other commits, about 20 µs here; a round trip on
 * PostgreSQL). Anything that can make a session invalid writes a row naming the user into
 * `auth_changes`, in the transaction that makes the change where there is one: revocation,
 * refresh, lock, role change, deactivation. The process that made the change forgets the user at
 * once; every process reads the log at most every `pollMs` when a request needs it, and before
 * answering that request, so a revocation through another process or the CLI takes effect
 * within that interval with or without the bus. Expiry is checked on every use.
 */
export class SessionCache {
  private readonly byHash = new Map<string, Entry>();
  private readonly byUser = new Map<string, Set<string>>();
  /** Counts forgets: a lookup that began before one must not store what it read (see put). */
  private forgets = 0;
  private nextPoll = 0;
  /** When the last successful read of the log began; null before the first. */
  private lastPoll: number | null = null;
  private polling: Promise<void> | null = null;
  /** Positions of the log rows already acted on, with their time, for the last LOOKBACK_MS. */
  private readonly seen = new Map<number, number>();
  private readonly pollMs: number;
  private readonly maxAgeMs: number;
  private readonly capacity: number;
  private readonly now: () => number;

  constructor(
    private readonly db: Db,
    opts: SessionCacheOptions = {},
  ) {
    this.pollMs = opts.pollMs ?? 250;
    this.maxAgeMs = opts.maxAgeMs ?? 60_000;
    this.capacity = opts.capacity ?? 100_000;
    this.now = opts.now ?? Date.now;
  }

  /** Resolves once the change log is no older than `pollMs`; null (nothing to wait for) while it is. */
  freshen(): Promise<void> | null {
    if (this.polling) return this.polling;
    const now = this.now();
    if (now < this.nextPoll) return null;
    this.nextPoll = now + this.pollMs;
    this.polling = this.poll().finally(() => {
      this.polling = null;
    });
    return this.polling;
  }

  /** The session stored for `tokenHash`, if it is not older than `maxAgeMs`. Call freshen first. */
  get(tokenHash: string): CachedSession | undefined {
    const e = this.byHash.get(tokenHash);
    if (!e) return undefined;
    if (this.now() - e.readAt > this.maxAgeMs) {
      this.remove(tokenHash, e.session.userId);
      return undefined;
    }
    return e.session;
  }

  /** A mark to take before reading a session from the database and hand to put. */
  mark(): number {
    return this.forgets;
  }

  /**
   * Stores a session read from the database — unless a forget happened since `mark`: then the
   * read may predate the change that caused it (on PostgreSQL a read and a revocation can
   * overlap), and the next request reads again.
   */
  put(session: CachedSession, mark: number): void {
    if (mark !== this.forgets) return;
    this.remove(session.tokenHash, session.userId);
    this.byHash.set(session.tokenHash, { session, readAt: this.now() });
    let hashes = this.byUser.get(session.userId);
    if (!hashes) this.byUser.set(session.userId, (hashes = new Set()));
    hashes.add(session.tokenHash);
    if (this.byHash.size > this.capacity) {
      const [oldest, e] = this.byHash.entries().next().value!;
      this.remove(oldest, e.session.userId);
    }
  }

  /**
   * Logs a change that can invalidate sessions of `userId`, for every process. Call it in the
   * transaction that makes the change, and forgetUser after that committed.
   */
  async logChange(db: Kysely<Database>, userId: string): Promise<void> {
    await db.insertInto("auth_changes").values({ user_id: userId, ts: this.now() }).execute();
  }

  /** Drops every cached session of `userId` (after a change to them committed). */
  forgetUser(userId: string): void {
    this.forgets++;
    const hashes = this.byUser.get(userId);
    if (!hashes) return;
    for (const h of hashes) this.byHash.delete(h);
    this.byUser.delete(userId);
  }

  private clear(): void {
    this.forgets++;
    this.byHash.clear();
    this.byUser.clear();
  }

  /** Cached sessions (for tests and metrics). */
  get size(): number {
    return this.byHash.size;
  }

  /** Deletes log rows no process needs any more. */
  async prune(): Promise<void> {
    await this.db.deleteFrom("auth_changes").where("ts", "<", this.now() - KEEP_MS).execute();
  }

  private remove(tokenHash: string, userId: string): void {
    if (!this.byHash.delete(tokenHash)) return;
    const hashes = this.byUser.get(userId);
    hashes?.delete(tokenHash);
    if (hashes?.size === 0) this.byUser.delete(userId);
  }

  private async poll(): Promise<void> {
    const now = this.now();
    // Everything since the last read (a quiet process may not have read for a while), and the
    // lookback before it.
    const from = (this.lastPoll ?? now) - LOOKBACK_MS;
    // The log no longer reaches back that far: what was missed is unknown, so nothing is kept.
    if (from < now - KEEP_MS) this.clear();
    const rows = await this.db.selectFrom("auth_changes").select(["pos", "user_id", "ts"]).where("ts", ">=", from).execute();
    this.lastPoll = now;
    for (const r of rows) {
      const pos = Number(r.pos);
      if (this.seen.has(pos)) continue;
      this.seen.set(pos, Number(r.ts));
      this.forgetUser(r.user_id);
    }
    for (const [pos, ts] of this.seen) if (ts < now - LOOKBACK_MS) this.seen.delete(pos);
  }
}
