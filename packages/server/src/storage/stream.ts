import { sql } from "kysely";
import type { Storage, Tx } from "./database.js";
import type { Bus, WakeUp } from "../bus/bus.js";

export interface StreamWrite {
  tx: Tx;
  /** Next stream position; every persisted stream item (event, receipt, account data…) takes one. */
  next(): number;
  /** Rooms and users whose sync waiters must wake once this write commits. */
  touch(target: { rooms?: Iterable<string>; users?: Iterable<string> }): void;
}

/**
 * The one ordered write path. A transaction that allocates stream positions holds the lock on the
 * stream counter until it commits, so positions become visible strictly in order: a reader that
 * sees position N has seen everything below N. SQLite has a single writer anyway; on PostgreSQL
 * the row lock on `counters` serialises the writers.
 */
export class StreamWriter {
  private localMax = 0;

  constructor(
    private readonly storage: Storage,
    private readonly bus: Bus,
  ) {}

  async write<T>(fn: (w: StreamWrite) => Promise<T>): Promise<T> {
    const rooms = new Set<string>();
    const users = new Set<string>();
    let pos = 0;
    let start = 0;
    const result = await this.storage.db.transaction().execute(async (tx) => {
      const locked =
        this.storage.dialect === "postgres"
          ? await sql<{ value: number }>`select value from counters where name = 'stream' for update`.execute(tx)
          : await sql<{ value: number }>`select value from counters where name = 'stream'`.execute(tx);
      start = Number(locked.rows[0]?.value ?? 0);
      pos = start;
      const out = await fn({
        tx,
        next: () => ++pos,
        touch: (t) => {
          for (const r of t.rooms ?? []) rooms.add(r);
          for (const u of t.users ?? []) users.add(u);
        },
      });
      if (pos !== start) await tx.updateTable("counters").set({ value: pos }).where("name", "=", "stream").execute();
      return out;
    });
    if (pos !== start) {
      if (pos > this.localMax) this.localMax = pos;
      const wake: WakeUp = { position: pos, rooms: [...rooms], users: [...users] };
      this.bus.publish(wake);
    }
    return result;
  }

  /** The highest committed position (read from the database so other processes' writes count). */
  async current(): Promise<number> {
    const row = await this.storage.db.selectFrom("counters").select("value").where("name", "=", "stream").executeTakeFirst();
    return Number(row?.value ?? 0);
  }
}
