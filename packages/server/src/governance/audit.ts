import type { AuditEntry, AuditVerifyResponse } from "@revier/protocol";
import type { Db, Tx } from "../storage/database.js";
import type { StreamWriter } from "../storage/stream.js";
import { canonicalJson } from "../lib/canonical-json.js";
import { sha256Hex } from "../lib/random.js";

export const GENESIS_HASH = "0".repeat(64);

export interface AuditInput {
  /** A user id, or `cli:<os user>` for actions taken on the host. */
  actor: string;
  actorRole: string;
  /** Dotted verb, e.g. `user.lock`, `device.wipe`, `policy.update`. */
  action: string;
  target?: string | null;
  /** Facts about the action: ids, counts, old and new values. Never message content or secrets. */
  details?: Record<string, unknown>;
}

/** Records one entry inside a transaction that already holds the audit write lock. */
export type AuditRecorder = (entry: AuditInput) => Promise<AuditEntry>;

/** The hash covers every field but itself, so changing any stored column breaks the chain there. */
export function entryHash(e: Omit<AuditEntry, "hash">): string {
  return sha256Hex(
    canonicalJson({ seq: e.seq, ts: e.ts, actor: e.actor, actor_role: e.actor_role, action: e.action, target: e.target, details: e.details, prev_hash: e.prev_hash }),
  );
}

type Row = { seq: number; ts: number; actor: string; actor_role: string; action: string; target: string | null; details: string; prev_hash: string; hash: string };

function fromRow(r: Row): AuditEntry {
  let details: Record<string, unknown>;
  try {
    details = JSON.parse(r.details) as Record<string, unknown>;
  } catch {
    // A tampered row may hold anything; keep the raw text so verify can still name the entry.
    details = { unparseable: r.details };
  }
  return { seq: Number(r.seq), ts: Number(r.ts), actor: r.actor, actor_role: r.actor_role, action: r.action, target: r.target, details, prev_hash: r.prev_hash, hash: r.hash };
}

/**
 * The append-only, hash-chained audit log. Appends run inside `StreamWriter.write`, whose lock on
 * the stream counter serialises writers on SQLite and across PostgreSQL processes alike, so each
 * entry reads the true previous hash; `seq` being the primary key makes a forked chain fail loudly
 * rather than persist.
 */
export class AuditLog {
  constructor(
    private readonly db: Db,
    private readonly stream: StreamWriter,
    private readonly now: () => number = Date.now,
  ) {}

  async record(entry: AuditInput): Promise<AuditEntry> {
    return this.transact((_tx, record) => record(entry));
  }

  /**
   * Runs `fn` in one transaction that holds the audit lock, so a change (e.g. a policy update) and
   * its audit entry commit together or not at all.
   */
  async transact<T>(fn: (tx: Tx, record: AuditRecorder) => Promise<T>): Promise<T> {
    return this.stream.write(async (w) => {
      const record: AuditRecorder = async (input) => {
        const last = await w.tx.selectFrom("audit_log").select(["seq", "hash"]).orderBy("seq", "desc").limit(1).executeTakeFirst();
        const base = {
          seq: last ? Number(last.seq) + 1 : 1,
          ts: this.now(),
          actor: input.actor,
          actor_role: input.actorRole,
          action: input.action,
          target: input.target ?? null,
          details: input.details ?? {},
          prev_hash: last?.hash ?? GENESIS_HASH,
        };
        const entry: AuditEntry = { ...base, hash: entryHash(base) };
        await w.tx
          .insertInto("audit_log")
          .values({ ...entry, details: canonicalJson(entry.details) })
          .execute();
        return entry;
      };
      return fn(w.tx, record);
    });
  }

  async list(opts: { from?: number; limit?: number } = {}): Promise<AuditEntry[]> {
    const rows = await this.db
      .selectFrom("audit_log")
      .selectAll()
      .where("seq", ">", opts.from ?? 0)
      .orderBy("seq")
      .limit(opts.limit ?? 100)
      .execute();
    return rows.map(fromRow);
  }

  async count(): Promise<number> {
    const row = await this.db.selectFrom("audit_log").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirst();
    return Number(row?.n ?? 0);
  }

  /** Every entry in order, a page at a time, so export and verify stay flat in memory. */
  async *entries(pageSize = 500): AsyncGenerator<AuditEntry> {
    let from = 0;
    for (;;) {
      const page = await this.list({ from, limit: pageSize });
      for (const e of page) yield e;
      if (page.length < pageSize) return;
      from = page[page.length - 1]!.seq;
    }
  }

  /**
   * Recomputes the chain from the first entry and names the first entry whose sequence, link or
   * hash does not hold. A deleted tail is not detectable from the chain alone; an export kept
   * elsewhere (its last hash) covers that.
   */
  async verify(): Promise<AuditVerifyResponse> {
    let expectedSeq = 1;
    let prev = GENESIS_HASH;
    let n = 0;
    for await (const e of this.entries()) {
      n++;
      const broken = (reason: string): AuditVerifyResponse => ({ ok: false, entries: n, first_broken: { seq: e.seq, reason } });
      if (e.seq !== expectedSeq) return broken(`expected sequence ${expectedSeq} (entries missing or reordered)`);
      if (e.prev_hash !== prev) return broken("previous-hash link does not match the entry before it");
      let computed: string;
      try {
        computed = entryHash(e);
      } catch {
        return broken("stored content is not valid canonical JSON");
      }
      if (computed !== e.hash) return broken("hash does not match the entry's content");
      prev = e.hash;
      expectedSeq++;
    }
    return { ok: true, entries: n };
  }

  /** The log as JSON Lines, one entry per line in sequence order. */
  async *exportJsonl(): AsyncGenerator<string> {
    for await (const e of this.entries()) yield `${JSON.stringify(e)}\n`;
  }
}
