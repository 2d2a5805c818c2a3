import { sql } from "kysely";
import type { Db, Tx } from "../storage/database.js";
import type { StreamWriter } from "../storage/stream.js";

export type AccountDataContent = Record<string, unknown>;

export interface AccountDataEvent {
  type: string;
  content: AccountDataContent;
}

export interface AccountDataSet {
  global: AccountDataEvent[];
  rooms: Map<string, AccountDataEvent[]>;
}

/** Global account data is stored under the empty room id so one primary key covers both kinds. */
const GLOBAL = "";

/** Per-user configuration (global and per room) and the user's stored sync filters. */
export class AccountData {
  constructor(
    private readonly db: Db,
    private readonly stream: StreamWriter,
  ) {}

  async set(userId: string, roomId: string | null, type: string, content: AccountDataContent): Promise<number> {
    return this.stream.write(async (w) => {
      const pos = w.next();
      await this.upsert(w.tx, userId, roomId ?? GLOBAL, type, content, pos);
      w.touch({ users: [userId] });
      return pos;
    }, { replayable: true });
  }

  /**
   * Read-modify-write inside the ordered write, so two concurrent changes to one object (say two
   * tags added at once) cannot lose each other. `fn` returning undefined leaves the data untouched
   * and allocates no stream position. Any reads `fn` needs must go through the `tx` it is given:
   * SQLite has one connection, which the open transaction holds. `fn` may run twice (a replayable
   * write, see storage/stream.ts), so it must not change anything outside the transaction.
   */
  async update(
    userId: string,
    roomId: string | null,
    type: string,
    fn: (current: AccountDataContent | undefined, tx: Tx) => AccountDataContent | undefined | Promise<AccountDataContent | undefined>,
  ): Promise<AccountDataContent | undefined> {
    const room = roomId ?? GLOBAL;
    return this.stream.write(async (w) => {
      const row = await w.tx
        .selectFrom("account_data")
        .select("content")
        .where("user_id", "=", userId)
        .where("room_id", "=", room)
        .where("type", "=", type)
        .executeTakeFirst();
      const next = await fn(row ? parseContent(row.content) : undefined, w.tx);
      if (next === undefined) return undefined;
      await this.upsert(w.tx, userId, room, type, next, w.next());
      w.touch({ users: [userId] });
      return next;
    }, { replayable: true });
  }

  async get(userId: string, roomId: string | null, type: string): Promise<AccountDataContent | undefined> {
    const row = await this.db
      .selectFrom("account_data")
      .select("content")
      .where("user_id", "=", userId)
      .where("room_id", "=", roomId ?? GLOBAL)
      .where("type", "=", type)
      .executeTakeFirst();
    return row ? parseContent(row.content) : undefined;
  }

  /** Everything the user has stored, for an initial sync; `upto` bounds it to one sync position. */
  async all(userId: string, upto?: number): Promise<AccountDataSet> {
    let q = this.db.selectFrom("account_data").select(["room_id", "type", "content"]).where("user_id", "=", userId);
    if (upto !== undefined) q = q.where("stream_pos", "<=", upto);
    return group(await q.orderBy("stream_pos").execute());
  }

  /** Objects written in (since, upto]; each appears once, with its latest content. */
  async changedSince(userId: string, since: number, upto: number): Promise<AccountDataSet> {
    const rows = await this.db
      .selectFrom("account_data")
      .select(["room_id", "type", "content"])
      .where("user_id", "=", userId)
      .where("stream_pos", ">", since)
      .where("stream_pos", "<=", upto)
      .orderBy("stream_pos")
      .execute();
    return group(rows);
  }

  /**
   * Stores a filter and returns its id. Clients tend to upload the same filter on every start, so
   * an identical filter already stored for the user is reused instead of piling up copies.
   */
  async saveFilter(userId: string, json: unknown): Promise<string> {
    const text = JSON.stringify(json);
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.db.transaction().execute(async (tx) => {
          const same = await tx.selectFrom("filters").select("filter_id").where("user_id", "=", userId).where("json", "=", text).executeTakeFirst();
          if (same) return same.filter_id;
          const top = await tx
            .selectFrom("filters")
            .select(sql<number | null>`max(cast(filter_id as integer))`.as("n"))
            .where("user_id", "=", userId)
            .executeTakeFirst();
          const id = String(Number(top?.n ?? -1) + 1);
          await tx.insertInto("filters").values({ user_id: userId, filter_id: id, json: text }).execute();
          return id;
        });
      } catch (err) {
        // Two uploads at once may pick the same next id; the primary key refuses the second, which
        // then simply takes the following number.
        if (attempt >= 20 || !isUniqueViolation(err)) throw err;
      }
    }
  }

  async getFilter(userId: string, filterId: string): Promise<unknown> {
    const row = await this.db.selectFrom("filters").select("json").where("user_id", "=", userId).where("filter_id", "=", filterId).executeTakeFirst();
    return row ? (JSON.parse(row.json) as unknown) : undefined;
  }

  private async upsert(tx: Tx, userId: string, roomId: string, type: string, content: AccountDataContent, pos: number): Promise<void> {
    const json = JSON.stringify(content);
    await tx
      .insertInto("account_data")
      .values({ user_id: userId, room_id: roomId, type, content: json, stream_pos: pos })
      .onConflict((oc) => oc.columns(["user_id", "room_id", "type"]).doUpdateSet({ content: json, stream_pos: pos }))
      .execute();
  }
}

function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === "23505" || (typeof code === "string" && code.startsWith("SQLITE_CONSTRAINT"));
}

function parseContent(text: string): AccountDataContent {
  const v = JSON.parse(text) as unknown;
  return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as AccountDataContent) : {};
}

function group(rows: Array<{ room_id: string; type: string; content: string }>): AccountDataSet {
  const out: AccountDataSet = { global: [], rooms: new Map() };
  for (const r of rows) {
    const ev = { type: r.type, content: parseContent(r.content) };
    if (r.room_id === GLOBAL) {
      out.global.push(ev);
      continue;
    }
    let list = out.rooms.get(r.room_id);
    if (!list) out.rooms.set(r.room_id, (list = []));
    list.push(ev);
  }
  return out;
}
