import { MatrixError, parseUserId } from "@revier/protocol";
import type { Db } from "../storage/database.js";
import type { StreamWriter } from "../storage/stream.js";
import type { Viewer } from "../rooms/client-event.js";
import { chunks } from "../lib/chunks.js";
import { isObject } from "./validate.js";
import { prepared } from "../storage/prepared.js";

// Asked by every /sync: compiled once, see prepared.ts.
const selectDelivered = prepared((db, userId: string, deviceId: string, upto: number) =>
  db.selectFrom("device_inbox").select("id").where("user_id", "=", userId).where("device_id", "=", deviceId).where("stream_pos", "<=", upto).limit(1),
);

export interface ToDeviceEvent {
  type: string;
  sender: string;
  content: Record<string, unknown>;
}

/** Messages one /sync response carries; the rest follow in the next one. */
export const TO_DEVICE_PER_SYNC = 100;
/** Recipients one /sendToDevice request may address (after expanding `*`). */
export const MAX_RECIPIENTS = 10_000;

/**
 * Send-to-device messaging. Messages wait in `device_inbox` until the recipient device
 * acknowledges them, which it does by syncing with a `since` token at or beyond their position:
 * only then did it certainly receive the response that carried them. So each message reaches the
 * device exactly once, across lost responses and server restarts.
 */
export class ToDevice {
  constructor(
    private readonly db: Db,
    private readonly stream: StreamWriter,
    private readonly serverName: string,
  ) {}

  /**
   * Queues `messages` (user → device id or `*` → content). A transaction id already used by this
   * device for to-device messages is answered without sending again. Unknown users and devices
   * are skipped, as the spec has no error for them.
   */
  async send(sender: Viewer, type: string, txnId: string, messages: Record<string, unknown>): Promise<void> {
    const targets: Array<{ userId: string; device: string; content: Record<string, unknown> }> = [];
    for (const [userId, byDevice] of Object.entries(messages)) {
      if (!isObject(byDevice)) throw new MatrixError("M_BAD_JSON", `messages['${userId}'] must be an object`);
      for (const [device, content] of Object.entries(byDevice)) {
        if (!isObject(content)) throw new MatrixError("M_BAD_JSON", `messages['${userId}']['${device}'] must be an object`);
        targets.push({ userId, device, content });
      }
    }
    await this.stream.write(async (w) => {
      const first = await w.tx
        .insertInto("event_txns")
        .values({ user_id: sender.userId, device_id: sender.deviceId, scope: "to_device", txn_id: txnId, result: "{}", created_ts: Date.now() })
        .onConflict((oc) => oc.columns(["user_id", "device_id", "scope", "txn_id"]).doNothing())
        .executeTakeFirst();
      if (Number(first.numInsertedOrUpdatedRows ?? 0n) === 0) return;

      const localUsers = [...new Set(targets.map((t) => t.userId))].filter((u) => parseUserId(u)?.server === this.serverName);
      const devicesOf = new Map<string, string[]>();
      for (const batch of chunks(localUsers)) {
        const rows = await w.tx.selectFrom("devices").select(["user_id", "device_id"]).where("user_id", "in", batch).execute();
        for (const r of rows) {
          let list = devicesOf.get(r.user_id);
          if (!list) devicesOf.set(r.user_id, (list = []));
          list.push(r.device_id);
        }
      }
      const rows: Array<{ user_id: string; device_id: string; content: string }> = [];
      for (const t of targets) {
        const devices = devicesOf.get(t.userId);
        if (!devices) continue;
        const content = JSON.stringify(t.content);
        for (const d of t.device === "*" ? devices : devices.includes(t.device) ? [t.device] : []) rows.push({ user_id: t.userId, device_id: d, content });
      }
      if (rows.length > MAX_RECIPIENTS) throw new MatrixError("M_BAD_JSON", `A request may address at most ${MAX_RECIPIENTS} devices`);
      if (rows.length === 0) return;
      const pos = w.next();
      for (const batch of chunks(rows, 200)) {
        await w.tx
          .insertInto("device_inbox")
          .values(batch.map((r) => ({ ...r, stream_pos: pos, sender: sender.userId, type })))
          .execute();
      }
      w.touch({ users: new Set(rows.map((r) => r.user_id)) });
      // Replayable (storage/stream.ts): everything it does is in the transaction; the
      // transaction id's row goes with a rollback, so a second run sends exactly once.
    }, { replayable: true });
  }

  /**
   * The messages for one /sync response: acknowledges (deletes) what earlier responses delivered
   * up to `since`, then returns the next messages up to `upto`. When more wait than one response
   * carries, the remainder moves to a fresh stream position beyond `upto`, so acknowledging this
   * response's token cannot delete messages it did not carry. `noneNew`: nothing arrived in
   * (since, upto] (see WindowNews), so only the acknowledgement is left to do. `delivered`:
   * whether messages at or below `since` wait to be deleted, if the caller knows.
   */
  async deliver(viewer: Viewer, since: number | null, upto: number, opts: { noneNew?: boolean; delivered?: boolean } = {}): Promise<ToDeviceEvent[]> {
    const { userId, deviceId } = viewer;
    if (since !== null) {
      // Looked for first: a delete takes the write lock even when it finds nothing, and most
      // syncs have nothing to acknowledge. (`delivered`: the caller looked already.)
      const delivered = opts.delivered ?? (await selectDelivered(this.db, userId, deviceId, since)).length > 0;
      if (delivered) await this.db.deleteFrom("device_inbox").where("user_id", "=", userId).where("device_id", "=", deviceId).where("stream_pos", "<=", since).execute();
    }
    // The caller knows (from who got messages in the window) that none arrived after `since`.
    if (opts.noneNew === true && since !== null) return [];
    const rows = await this.db
      .selectFrom("device_inbox")
      .select(["id", "sender", "type", "content"])
      .where("user_id", "=", userId)
      .where("device_id", "=", deviceId)
      .where("stream_pos", "<=", upto)
      .orderBy("stream_pos")
      .orderBy("id")
      .limit(TO_DEVICE_PER_SYNC + 1)
      .execute();
    if (rows.length > TO_DEVICE_PER_SYNC) {
      rows.length = TO_DEVICE_PER_SYNC;
      const lastId = rows[rows.length - 1]!.id;
      // Everything after the last delivered message moves, not only what is at or below `upto`:
      // newer messages must stay behind older ones.
      await this.stream.write(async (w) => {
        const pos = w.next();
        await w.tx.updateTable("device_inbox").set({ stream_pos: pos }).where("user_id", "=", userId).where("device_id", "=", deviceId).where("id", ">", lastId).execute();
        w.touch({ users: [userId] });
      }, { replayable: true });
    }
    return rows.map((r) => ({ type: r.type, sender: r.sender, content: JSON.parse(r.content) as Record<string, unknown> }));
  }
}
