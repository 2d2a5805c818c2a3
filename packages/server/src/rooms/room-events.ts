import { MatrixError } from "@revier/protocol";
import type { Db, Tx } from "../storage/database.js";
import type { StreamWrite, StreamWriter } from "../storage/stream.js";
import { canonicalJson, CanonicalJsonError } from "../lib/canonical-json.js";
import { ROOM_VERSIONS, type RoomVersion } from "./room-versions.js";
import { computeContentHash, eventIdFor, redactEvent, signEvent, type Pdu } from "./event-crypto.js";
import { authEventTypesFor, checkEventAuth, stateKeyOf, type AuthEvent, type AuthState } from "./auth-rules.js";
import type { SigningKey } from "./signing-key.js";

/** Largest event the spec allows (federation PDU size limit), in bytes of canonical JSON. */
export const MAX_EVENT_BYTES = 65_536;

export interface NewEvent {
  roomId: string;
  sender: string;
  type: string;
  stateKey?: string;
  content: Record<string, unknown>;
  /** For v10 redactions the target is a top-level key; v11 keeps it in content as well. */
  redacts?: string;
  txn?: { deviceId: string; txnId: string };
  /** Used only when creating a room: the version the create event establishes. */
  roomVersion?: string;
}

export interface StoredEvent {
  pdu: Pdu & { unsigned?: Record<string, unknown> };
  eventId: string;
  roomId: string;
  streamOrdering: number;
}

/** What persistence tells the hooks that ride in the same transaction (push actions, counters…). */
export interface PersistContext {
  tx: Tx;
  event: StoredEvent;
  roomVersion: RoomVersion;
  w: StreamWrite;
}

export type PersistHook = (ctx: PersistContext) => Promise<void>;

interface RoomRow {
  room_version: string;
  last_event_id: string | null;
  last_depth: number;
}

/**
 * Builds, authorises, hashes, signs and stores events: the single write path for room events.
 * Everything about one event (the row, current state, membership, the redaction it applies, push
 * actions) commits in one transaction at one stream position.
 */
export class RoomEvents {
  private readonly hooks: PersistHook[] = [];

  constructor(
    private readonly db: Db,
    private readonly stream: StreamWriter,
    private readonly serverName: string,
    private readonly signingKey: SigningKey,
  ) {}

  onPersist(hook: PersistHook): void {
    this.hooks.push(hook);
  }

  /** Sends one event; with a transaction id, a repeat returns the first event's id. */
  async send(ev: NewEvent): Promise<{ eventId: string; streamOrdering: number }> {
    validateContentSize(ev);
    if (ev.txn) {
      const prior = await this.txnResult(this.db, ev.sender, ev.txn.deviceId, ev.txn.txnId);
      if (prior) return prior;
    }
    try {
      return await this.stream.write(async (w) => {
        if (ev.txn) {
          const prior = await this.txnResult(w.tx, ev.sender, ev.txn.deviceId, ev.txn.txnId);
          if (prior) return prior;
        }
        const stored = await this.persistInTx(w, ev);
        return { eventId: stored.eventId, streamOrdering: stored.streamOrdering };
      });
    } catch (err) {
      // A concurrent retry with the same transaction id may have won the race to insert it.
      if (ev.txn && !(err instanceof MatrixError)) {
        const prior = await this.txnResult(this.db, ev.sender, ev.txn.deviceId, ev.txn.txnId);
        if (prior) return prior;
      }
      throw err;
    }
  }

  /** Persists several events in order in one transaction (room creation). */
  async sendBatch(events: NewEvent[]): Promise<StoredEvent[]> {
    for (const ev of events) validateContentSize(ev);
    return this.stream.write(async (w) => {
      const out: StoredEvent[] = [];
      for (const ev of events) out.push(await this.persistInTx(w, ev));
      return out;
    });
  }

  private async txnResult(db: Db | Tx, userId: string, deviceId: string, txnId: string): Promise<{ eventId: string; streamOrdering: number } | undefined> {
    const row = await db
      .selectFrom("event_txns")
      .select("result")
      .where("user_id", "=", userId)
      .where("device_id", "=", deviceId)
      .where("scope", "=", "send")
      .where("txn_id", "=", txnId)
      .executeTakeFirst();
    if (!row) return undefined;
    return JSON.parse(row.result) as { eventId: string; streamOrdering: number };
  }

  async persistInTx(w: StreamWrite, ev: NewEvent): Promise<StoredEvent> {
    const { tx } = w;
    const isCreate = ev.type === "m.room.create" && ev.stateKey === "";
    let room: RoomRow | undefined = await tx
      .selectFrom("rooms")
      .select(["room_version", "last_event_id", "last_depth"])
      .where("room_id", "=", ev.roomId)
      .executeTakeFirst();
    if (isCreate) {
      if (room) throw new MatrixError("M_ROOM_IN_USE", "Room already exists");
      const version = ev.roomVersion ?? "10";
      room = { room_version: version, last_event_id: null, last_depth: 0 };
    } else if (!room) {
      throw new MatrixError("M_NOT_FOUND", "Unknown room");
    }
    const version = ROOM_VERSIONS[room.room_version as keyof typeof ROOM_VERSIONS];
    if (!version) throw new MatrixError("M_UNSUPPORTED_ROOM_VERSION", `Room version ${room.room_version} is not supported`);

    const draft = {
      type: ev.type,
      ...(ev.stateKey !== undefined ? { state_key: ev.stateKey } : {}),
      sender: ev.sender,
      content: ev.content,
    };
    const authState = await this.loadAuthState(tx, ev.roomId, draft);
    const pdu: Pdu = {
      room_id: ev.roomId,
      sender: ev.sender,
      type: ev.type,
      ...(ev.stateKey !== undefined ? { state_key: ev.stateKey } : {}),
      content: ev.content,
      origin_server_ts: Date.now(),
      depth: room.last_depth + 1,
      prev_events: room.last_event_id ? [room.last_event_id] : [],
      auth_events: [...new Set([...authState.values()].map((e) => e.event_id))],
      hashes: { sha256: "" },
      signatures: {},
      // v11 carries the target only in content; earlier versions only at the top level.
      ...(ev.redacts !== undefined && ev.type === "m.room.redaction" && !version.redactsInContent ? { redacts: ev.redacts } : {}),
    } as Pdu;
    const verdict = checkEventAuth(pdu, authState, version);
    if (!verdict.ok) throw new MatrixError("M_FORBIDDEN", verdict.reason);

    pdu.hashes = { sha256: computeContentHash(pdu) };
    const signed = signEvent(pdu, this.serverName, this.signingKey, version) as Pdu & { unsigned?: Record<string, unknown> };
    const eventId = eventIdFor(signed, version);
    const streamOrdering = w.next();

    const unsigned: Record<string, unknown> = {};
    if (ev.stateKey !== undefined) {
      const prev = await tx
        .selectFrom("room_state")
        .innerJoin("events", "events.event_id", "room_state.event_id")
        .select(["events.event_id", "events.json", "events.sender"])
        .where("room_state.room_id", "=", ev.roomId)
        .where("room_state.type", "=", ev.type)
        .where("room_state.state_key", "=", ev.stateKey)
        .executeTakeFirst();
      if (prev) {
        const prevPdu = JSON.parse(prev.json) as Pdu;
        unsigned.prev_content = prevPdu.content;
        unsigned.prev_sender = prev.sender;
        unsigned.replaces_state = prev.event_id;
      }
    }
    if (Object.keys(unsigned).length > 0) signed.unsigned = unsigned;

    const rel = relationOf(ev.content);
    await tx
      .insertInto("events")
      .values({
        stream_ordering: streamOrdering,
        event_id: eventId,
        room_id: ev.roomId,
        type: ev.type,
        state_key: ev.stateKey ?? null,
        sender: ev.sender,
        origin_server_ts: pdu.origin_server_ts,
        depth: pdu.depth,
        json: JSON.stringify(signed),
        redacted_by: null,
        relates_to: rel?.eventId ?? null,
        rel_type: rel?.relType ?? null,
        thread_id: rel?.relType === "m.thread" ? rel.eventId : null,
        membership: ev.type === "m.room.member" ? String(ev.content.membership) : null,
        txn_device: ev.txn?.deviceId ?? null,
        txn_id: ev.txn?.txnId ?? null,
      })
      .execute();

    if (isCreate) {
      await tx
        .insertInto("rooms")
        .values({ room_id: ev.roomId, room_version: room.room_version, creator: ev.sender, created_ts: pdu.origin_server_ts, visibility: "private", last_event_id: eventId, last_depth: pdu.depth, last_stream: streamOrdering })
        .execute();
    } else {
      await tx.updateTable("rooms").set({ last_event_id: eventId, last_depth: pdu.depth, last_stream: streamOrdering }).where("room_id", "=", ev.roomId).execute();
    }

    if (ev.stateKey !== undefined) {
      await tx
        .insertInto("room_state")
        .values({ room_id: ev.roomId, type: ev.type, state_key: ev.stateKey, event_id: eventId, stream_ordering: streamOrdering })
        .onConflict((oc) => oc.columns(["room_id", "type", "state_key"]).doUpdateSet({ event_id: eventId, stream_ordering: streamOrdering }))
        .execute();
      if (ev.type === "m.room.member") {
        const c = ev.content;
        const member = {
          membership: String(c.membership),
          event_id: eventId,
          stream_ordering: streamOrdering,
          sender: ev.sender,
          displayname: typeof c.displayname === "string" ? c.displayname : null,
          avatar_url: typeof c.avatar_url === "string" ? c.avatar_url : null,
          forgotten: 0,
        };
        await tx
          .insertInto("room_members")
          .values({ room_id: ev.roomId, user_id: ev.stateKey, ...member })
          .onConflict((oc) => oc.columns(["room_id", "user_id"]).doUpdateSet(member))
          .execute();
        w.touch({ users: [ev.stateKey] });
      }
    }

    if (ev.type === "m.room.redaction") {
      const target = ev.redacts ?? (typeof ev.content.redacts === "string" ? ev.content.redacts : undefined);
      if (target) await this.applyRedaction(tx, ev.roomId, target, eventId, version);
    }

    if (ev.txn) {
      await tx
        .insertInto("event_txns")
        .values({ user_id: ev.sender, device_id: ev.txn.deviceId, scope: "send", txn_id: ev.txn.txnId, result: JSON.stringify({ eventId, streamOrdering }), created_ts: Date.now() })
        .execute();
    }

    const stored: StoredEvent = { pdu: signed, eventId, roomId: ev.roomId, streamOrdering };
    for (const hook of this.hooks) await hook({ tx, event: stored, roomVersion: version, w });
    w.touch({ rooms: [ev.roomId] });
    return stored;
  }

  /** Redaction strips the target's content for good: police data that was redacted is not kept. */
  private async applyRedaction(tx: Tx, roomId: string, targetId: string, redactionId: string, version: RoomVersion): Promise<void> {
    const target = await tx.selectFrom("events").select(["json", "redacted_by"]).where("event_id", "=", targetId).where("room_id", "=", roomId).executeTakeFirst();
    if (!target || target.redacted_by) return;
    const pdu = JSON.parse(target.json) as Pdu & { unsigned?: Record<string, unknown> };
    const redacted = redactEvent(pdu, version) as Pdu & { unsigned?: Record<string, unknown> };
    redacted.unsigned = { ...(pdu.unsigned?.replaces_state ? { replaces_state: pdu.unsigned.replaces_state } : {}) };
    await tx.updateTable("events").set({ json: JSON.stringify(redacted), redacted_by: redactionId }).where("event_id", "=", targetId).execute();
  }

  /** The auth state an event is checked against: the current values of the selected state keys. */
  async loadAuthState(db: Db | Tx, roomId: string, draft: { type: string; state_key?: string; sender: string; content: Record<string, unknown> }): Promise<AuthState> {
    const wanted = authEventTypesFor(draft);
    const state: AuthState = new Map();
    if (wanted.length === 0) return state;
    const rows = await db
      .selectFrom("room_state")
      .innerJoin("events", "events.event_id", "room_state.event_id")
      .select(["events.event_id", "events.json"])
      .where("room_state.room_id", "=", roomId)
      .where((eb) => eb.or(wanted.map(([type, stateKey]) => eb.and([eb("room_state.type", "=", type), eb("room_state.state_key", "=", stateKey)]))))
      .execute();
    for (const row of rows) {
      const pdu = JSON.parse(row.json) as Pdu;
      const auth: AuthEvent = { event_id: row.event_id, type: pdu.type, state_key: pdu.state_key, sender: pdu.sender, content: pdu.content };
      state.set(stateKeyOf(pdu.type, pdu.state_key ?? ""), auth);
    }
    return state;
  }
}

function validateContentSize(ev: NewEvent): void {
  let size: number;
  try {
    size = Buffer.byteLength(canonicalJson({ content: ev.content, type: ev.type, room_id: ev.roomId, sender: ev.sender, ...(ev.stateKey !== undefined ? { state_key: ev.stateKey } : {}) }));
  } catch (err) {
    if (err instanceof CanonicalJsonError) throw new MatrixError("M_BAD_JSON", `Event content is not valid canonical JSON: ${err.message}`);
    throw err;
  }
  // The PDU adds hashes, signatures, prev/auth events and ids; keep headroom for them.
  if (size > MAX_EVENT_BYTES - 2048) throw new MatrixError("M_TOO_LARGE", `Event is larger than ${MAX_EVENT_BYTES} bytes`);
}

function relationOf(content: Record<string, unknown>): { eventId: string; relType: string } | null {
  const rel = content["m.relates_to"];
  if (!rel || typeof rel !== "object") return null;
  const r = rel as Record<string, unknown>;
  if (typeof r.event_id === "string" && typeof r.rel_type === "string") return { eventId: r.event_id, relType: r.rel_type };
  const reply = r["m.in_reply_to"] as Record<string, unknown> | undefined;
  if (reply && typeof reply.event_id === "string") return { eventId: reply.event_id, relType: "m.in_reply_to" };
  return null;
}
