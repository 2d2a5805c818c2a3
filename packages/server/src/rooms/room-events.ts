import { MatrixError } from "@revier/protocol";
import { sql } from "kysely";
import type { Db, Tx } from "../storage/database.js";
import type { Dialect } from "../storage/schema.js";
import type { StreamWrite, StreamWriter } from "../storage/stream.js";
import { canonicalJson, canonicalJsonMember, CanonicalJsonError } from "../lib/canonical-json.js";
import { ROOM_VERSIONS, type RoomVersion } from "./room-versions.js";
import { finishNewEvent, redactEvent, type Pdu } from "./event-crypto.js";
import { authEventTypesFor, checkEventAuth, stateKeyOf, type AuthEvent, type AuthState } from "./auth-rules.js";
import type { SigningKey } from "./signing-key.js";
import { prepared } from "../storage/prepared.js";

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
  /** The room as of this event (included), from the per-room cache where it is valid. */
  room: RoomView;
}

/** Read access to a room's current state inside an event's transaction, cached across events. */
export interface RoomView {
  /** Joined members (after this event) and their display names in the room. */
  joinedMembers(): Promise<ReadonlyMap<string, string | null>>;
  /** Content of a current state event (after this event), or undefined. Callers must not modify it. */
  stateContent(type: string, stateKey?: string): Promise<Record<string, unknown> | undefined>;
}

// The statements every event write runs, compiled once (see prepared.ts).
const selectTxn = prepared((db, userId: string, deviceId: string, txnId: string) =>
  db.selectFrom("event_txns").select("result").where("user_id", "=", userId).where("device_id", "=", deviceId).where("scope", "=", "send").where("txn_id", "=", txnId),
);
const selectRoom = prepared((db, roomId: string) => db.selectFrom("rooms").select(["room_version", "last_event_id", "last_depth"]).where("room_id", "=", roomId));
/**
 * A send's reads under the stream lock in one statement: the sender's membership, a repeat of its
 * transaction id, and the room's head. One row whether or not any exists. On PostgreSQL each
 * statement there is a round trip while every process's writers wait for the lock.
 */
const selectSendReads = prepared((db, memberRoomId: string, memberUserId: string, userId: string, deviceId: string | null, txnId: string | null, roomId: string) =>
  sql<{ membership: string | null; prior: string | null; room_version: string | null; last_event_id: string | null; last_depth: number | null }>`select
    (select m.membership from room_members m where m.room_id = ${memberRoomId} and m.user_id = ${memberUserId}) as membership,
    (select t.result from event_txns t where t.user_id = ${userId} and t.device_id = ${deviceId} and t.scope = 'send' and t.txn_id = ${txnId}) as prior,
    r.room_version, r.last_event_id, r.last_depth
    from (select 1 as one) o left join rooms r on r.room_id = ${roomId}`,
);
const updateRoomHead = prepared((db, roomId: string, eventId: string, depth: number, stream: number) =>
  db.updateTable("rooms").set({ last_event_id: eventId, last_depth: depth, last_stream: stream }).where("room_id", "=", roomId),
);
const insertTxn = prepared((db, userId: string, deviceId: string, txnId: string, result: string, ts: number) =>
  db.insertInto("event_txns").values({ user_id: userId, device_id: deviceId, scope: "send", txn_id: txnId, result, created_ts: ts }),
);
/** The same answer for a room the sender left and one that does not exist. */
function notAMember(): MatrixError {
  return new MatrixError("M_FORBIDDEN", "You are not a member of this room");
}

/** An `events` row's values, in the order both inserts below take them. */
type EventValues = [
  streamOrdering: number,
  eventId: string,
  roomId: string,
  type: string,
  stateKey: string | null,
  sender: string,
  ts: number,
  depth: number,
  json: string,
  relatesTo: string | null,
  relType: string | null,
  threadId: string | null,
  membership: string | null,
  txnDevice: string | null,
  txnId: string | null,
];
const insertEvent = prepared((db, ...[streamOrdering, eventId, roomId, type, stateKey, sender, ts, depth, json, relatesTo, relType, threadId, membership, txnDevice, txnId]: EventValues) =>
  db.insertInto("events").values({
    stream_ordering: streamOrdering,
    event_id: eventId,
    room_id: roomId,
    type,
    state_key: stateKey,
    sender,
    origin_server_ts: ts,
    depth,
    json,
    redacted_by: null,
    relates_to: relatesTo,
    rel_type: relType,
    thread_id: threadId,
    membership,
    txn_device: txnDevice,
    txn_id: txnId,
  }),
);
/**
 * On PostgreSQL, a message's three writes (the event, the room's new head, its transaction id) as
 * one statement, made only while the room's head is still `expectHead` and the transaction id is
 * new. Each statement there is a round trip under the stream lock, for which the writers of every
 * process wait. With the conditions, a send can trust its cached view of the room (see send) and
 * skip the read before the write; after that read they hold by construction. Answers whether the
 * head matched and the result of an earlier send with the same transaction id; nothing is written
 * unless the first is true and the second null. SQLite has no data-modifying WITH, and its
 * statements are calls within the process. Each argument is bound once (see prepared), so values
 * used twice are passed twice.
 */
const insertMessagePostgres = prepared(
  (
    db,
    ...[
      streamOrdering,
      eventId,
      roomId,
      type,
      stateKey,
      sender,
      ts,
      depth,
      json,
      relatesTo,
      relType,
      threadId,
      membership,
      txnDevice,
      txnId,
      txnUser,
      txnDeviceAgain,
      txnIdAgain,
      txnResult,
      txnTs,
      headEventId,
      headDepth,
      headStream,
      headRoomId,
      expectRoomId,
      expectHead,
      priorUser,
      priorDevice,
      priorTxn,
    ]: [
      ...EventValues,
      txnUser: string,
      txnDeviceAgain: string,
      txnIdAgain: string,
      txnResult: string,
      txnTs: number,
      headEventId: string,
      headDepth: number,
      headStream: number,
      headRoomId: string,
      expectRoomId: string,
      expectHead: string | null,
      priorUser: string,
      priorDevice: string,
      priorTxn: string,
    ]
  ) => sql<{ head: boolean; prior: string | null }>`with cur as (
      select 1 as one from rooms where room_id = ${expectRoomId} and last_event_id is not distinct from ${expectHead}
    ), prior as (
      select t.result from event_txns t where t.user_id = ${priorUser} and t.device_id = ${priorDevice} and t.scope = 'send' and t.txn_id = ${priorTxn}
    ), go as (
      select 1 as one from cur where not exists (select 1 from prior)
    ), e as (
      insert into events (stream_ordering, event_id, room_id, type, state_key, sender, origin_server_ts, depth, json, redacted_by, relates_to, rel_type, thread_id, membership, txn_device, txn_id)
      select ${streamOrdering}, ${eventId}, ${roomId}, ${type}, ${stateKey}, ${sender}, ${ts}, ${depth}, ${json}, null, ${relatesTo}, ${relType}, ${threadId}, ${membership}, ${txnDevice}, ${txnId} from go
    ), t as (
      insert into event_txns (user_id, device_id, scope, txn_id, result, created_ts) select ${txnUser}, ${txnDeviceAgain}, 'send', ${txnIdAgain}, ${txnResult}, ${txnTs} from go
    ), h as (
      update rooms set last_event_id = ${headEventId}, last_depth = ${headDepth}, last_stream = ${headStream} where room_id = ${headRoomId} and exists (select 1 from go)
    )
    select exists (select 1 from cur) as head, (select result from prior) as prior`,
);

/**
 * Thrown inside a send that trusted its cached view of the room (see send) when the room had moved
 * on under it, or when the view led to a refusal the full checks must confirm. Nothing was written.
 */
class StaleView extends Error {}

/**
 * What the write path knows about one room's current state, valid while the room's newest event
 * (`rooms.last_event_id`) is still `head`. Every event write reads that row anyway (for
 * prev_events and depth) inside its transaction, under the stream lock, or, for a message written
 * on this view (trustedView), makes its statement conditional on it; so checking it costs nothing
 * and makes the cache safe without any invalidation protocol:
 *
 * - a write by another process (PostgreSQL) moves the head, so the next write here reloads;
 * - a write here moves `head` to the new event id *before* the cache is changed for it, so a
 *   write that is rolled back afterwards (its savepoint, a failed hook, a failed commit) leaves
 *   a head that never reaches the database, and the next write reloads as well;
 * - event ids are content hashes, so a head cannot match by accident.
 *
 * Entries are filled lazily: the auth events an event needs, the previous content of a replaced
 * state key, and the joined members push evaluation needs. Profiles of the send path showed the
 * auth-state query (a join plus JSON parsing of each auth event) and the member list as a large
 * part of each event's cost under the stream lock.
 */
class RoomSnapshot {
  /** Current state by stateKeyOf(type, state_key); null when known to be absent. */
  readonly state = new Map<string, AuthEvent | null>();
  /** Joined members and display names, once loaded (room_members semantics). */
  joined: Map<string, string | null> | null = null;
  /**
   * Whether this process's last write to the room found the head where its own write before had
   * left it: nobody else is writing to the room, so a send may trust this view (trustedView).
   * Rooms that several processes write to take the reads first, instead of a write that misses.
   */
  unshared = false;

  constructor(
    readonly roomId: string,
    public head: string | null,
    /** The head's depth and the room's version: with `head`, what a send would read (RoomRow). */
    public depth: number,
    readonly version: string,
  ) {}

  /** The room's row as of `head`, as the reads under the stream lock would find it while it holds. */
  row(): RoomRow {
    return { room_version: this.version, last_event_id: this.head, last_depth: this.depth };
  }

  /** The current state events of the given keys, loading those not known yet. */
  async stateEvents(tx: Tx, keys: ReadonlyArray<readonly [string, string]>): Promise<AuthState> {
    const missing = keys.filter(([t, k]) => !this.state.has(stateKeyOf(t, k)));
    if (missing.length > 0) {
      const rows = await tx
        .selectFrom("room_state")
        .innerJoin("events", "events.event_id", "room_state.event_id")
        .select(["events.event_id", "events.json"])
        .where("room_state.room_id", "=", this.roomId)
        .where((eb) => eb.or(missing.map(([type, stateKey]) => eb.and([eb("room_state.type", "=", type), eb("room_state.state_key", "=", stateKey)]))))
        .execute();
      for (const [t, k] of missing) this.state.set(stateKeyOf(t, k), null);
      for (const row of rows) {
        const pdu = JSON.parse(row.json) as Pdu;
        this.state.set(stateKeyOf(pdu.type, pdu.state_key ?? ""), { event_id: row.event_id, type: pdu.type, state_key: pdu.state_key, sender: pdu.sender, content: pdu.content });
      }
    }
    // In the order asked for, so auth_events come out in a stable order.
    const out: AuthState = new Map();
    for (const [t, k] of keys) {
      const key = stateKeyOf(t, k);
      const e = this.state.get(key);
      if (e) out.set(key, e);
    }
    return out;
  }

  async joinedMembers(tx: Tx): Promise<Map<string, string | null>> {
    if (!this.joined) {
      const rows = await tx.selectFrom("room_members").select(["user_id", "displayname"]).where("room_id", "=", this.roomId).where("membership", "=", "join").execute();
      this.joined = new Map(rows.map((r) => [r.user_id, r.displayname]));
    }
    return this.joined;
  }
}

/** Rooms whose snapshots are kept; the least recently written are dropped first. */
const SNAPSHOT_LIMIT = 10_000;

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
  private readonly committedListeners: Array<(count: number) => void> = [];
  private readonly snapshots = new Map<string, RoomSnapshot>();

  constructor(
    private readonly db: Db,
    private readonly dialect: Dialect,
    private readonly stream: StreamWriter,
    private readonly serverName: string,
    private readonly signingKey: SigningKey,
  ) {}

  onPersist(hook: PersistHook): void {
    this.hooks.push(hook);
  }

  /**
   * Hears how many new events each committed write stored. Hooks run inside the transaction, once
   * per run: a write rolled back, or run twice (a replayed batch, see WriteOptions.replayable in storage/stream.ts), would
   * be counted there as often as it ran.
   */
  onCommitted(listener: (count: number) => void): void {
    this.committedListeners.push(listener);
  }

  private committed(count: number): void {
    if (count > 0) for (const listener of this.committedListeners) listener(count);
  }

  /**
   * Sends one event; with a transaction id, a repeat returns the first event's id. `asMember`: only
   * as a joined member of the room (a client's send), else M_FORBIDDEN, whether or not the room
   * exists; checked under the stream lock with the other reads, so it costs no statement of its own.
   */
  async send(ev: NewEvent, opts: { asMember?: boolean } = {}): Promise<{ eventId: string; streamOrdering: number }> {
    const contentJson = validateContentSize(ev);
    // Whether the run that committed stored a new event (a repeat returns the first one's).
    let stored = false;
    try {
      const result = await this.stream.write(async (w) => {
        stored = false;
        const view = this.trustedView(ev, opts.asMember === true);
        if (view) {
          try {
            const made = await this.persistInTx(w, ev, contentJson, view, true);
            stored = true;
            return { eventId: made.eventId, streamOrdering: made.streamOrdering };
          } catch (err) {
            // Nothing was written: the room moved on, or the answer needs the full checks below.
            if (!(err instanceof StaleView)) throw err;
          }
        }
        // Asked here only, not also before queueing: a repeat is rare, and a lookup outside the
        // transaction cost every send one more statement while this one is needed anyway.
        // Without a transaction id the repeat check matches nothing (a comparison with null).
        const [row] = await selectSendReads(w.tx, ev.roomId, ev.sender, ev.sender, ev.txn?.deviceId ?? null, ev.txn?.txnId ?? null, ev.roomId);
        if (opts.asMember && row?.membership !== "join") throw notAMember();
        if (row?.prior != null) return JSON.parse(row.prior) as { eventId: string; streamOrdering: number };
        const room = row?.room_version != null ? { room_version: row.room_version, last_event_id: row.last_event_id, last_depth: Number(row.last_depth) } : null;
        const made = await this.persistInTx(w, ev, contentJson, room);
        stored = true;
        return { eventId: made.eventId, streamOrdering: made.streamOrdering };
        // Replayable: outside its transaction a send changes the room's view, which the next
        // write checks against the database, and the hooks wake push delivery, which a second
        // wake-up does not disturb. Counting waits for the commit (onCommitted).
      }, { replayable: true });
      this.committed(stored ? 1 : 0);
      return result;
    } catch (err) {
      // A concurrent retry with the same transaction id may have won the race to insert it.
      if (ev.txn && !(err instanceof MatrixError)) {
        const prior = await this.txnResult(this.db, ev.sender, ev.txn.deviceId, ev.txn.txnId);
        if (prior) return prior;
      }
      throw err;
    }
  }

  /**
   * The room as this process last wrote it, if a client's message may be sent on it without the
   * reads under the stream lock (PostgreSQL only, where each read is a round trip while every
   * process's writers wait). The write itself checks that the room's head has not moved since and
   * that the transaction id is new (insertMessagePostgres); while the head holds, so does all
   * state cached for it, the sender's membership included. Anything else starts over with the
   * reads, so the answer is the same either way.
   */
  private trustedView(ev: NewEvent, asMember: boolean): RoomRow | undefined {
    if (this.dialect !== "postgres" || !isMergedMessage(ev)) return undefined;
    const snap = this.snapshots.get(ev.roomId);
    if (!snap || snap.head === null || !snap.unshared) return undefined;
    if (asMember && snap.state.get(stateKeyOf("m.room.member", ev.sender))?.content.membership !== "join") return undefined;
    return snap.row();
  }

  /** Persists several events in order in one transaction (room creation). */
  async sendBatch(events: NewEvent[]): Promise<StoredEvent[]> {
    const contentJson = events.map(validateContentSize);
    const out = await this.stream.write(async (w) => {
      const made: StoredEvent[] = [];
      for (const [i, ev] of events.entries()) made.push(await this.persistInTx(w, ev, contentJson[i]));
      return made;
    });
    this.committed(out.length);
    return out;
  }

  private async txnResult(db: Db | Tx, userId: string, deviceId: string, txnId: string): Promise<{ eventId: string; streamOrdering: number } | undefined> {
    const [row] = await selectTxn(db, userId, deviceId, txnId);
    if (!row) return undefined;
    return JSON.parse(row.result) as { eventId: string; streamOrdering: number };
  }

  /**
   * `contentJson`: the content's canonical JSON as validateContentSize made it, if at hand.
   * `known`: the room's row if already read in this transaction (null: there is none).
   * `cached`: `known` is the snapshot's view, not read under the lock (see trustedView); the write
   * then throws StaleView, having written nothing, where that view may have misled it.
   */
  async persistInTx(w: StreamWrite, ev: NewEvent, contentJson?: string, known?: RoomRow | null, cached = false): Promise<StoredEvent> {
    const { tx } = w;
    const isCreate = ev.type === "m.room.create" && ev.stateKey === "";
    let room: RoomRow | undefined = known === undefined ? (await selectRoom(tx, ev.roomId))[0] : (known ?? undefined);
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
    const snap = this.snapshot(ev.roomId, room);
    const authState = await snap.stateEvents(tx, authEventTypesFor(draft));
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
    if (!verdict.ok) {
      // The reads decide: the room may have changed, or this may repeat a send that succeeded.
      if (cached) throw new StaleView();
      throw new MatrixError("M_FORBIDDEN", verdict.reason);
    }

    const { event: signed, eventId } = finishNewEvent<Pdu & { unsigned?: Record<string, unknown> }>(pdu, this.serverName, this.signingKey, version, contentJson);
    const streamOrdering = w.next();

    const unsigned: Record<string, unknown> = {};
    if (ev.stateKey !== undefined) {
      const prev = (await snap.stateEvents(tx, [[ev.type, ev.stateKey]])).get(stateKeyOf(ev.type, ev.stateKey));
      if (prev) {
        unsigned.prev_content = prev.content;
        unsigned.prev_sender = prev.sender;
        unsigned.replaces_state = prev.event_id;
      }
    }
    if (Object.keys(unsigned).length > 0) signed.unsigned = unsigned;

    const rel = relationOf(ev.content);
    const json = JSON.stringify(signed);
    // A plain message with a transaction id on PostgreSQL: its writes go as one (see insertMessagePostgres).
    if (this.dialect === "postgres" && ev.txn && isMergedMessage(ev)) {
      const { deviceId, txnId } = ev.txn;
      const txnResult = JSON.stringify({ eventId, streamOrdering });
      const threadId = rel?.relType === "m.thread" ? rel.eventId : null;
      const [made] = await insertMessagePostgres(tx, streamOrdering, eventId, ev.roomId, ev.type, null, ev.sender, pdu.origin_server_ts, pdu.depth, json, rel?.eventId ?? null, rel?.relType ?? null, threadId, null, deviceId, txnId, ev.sender, deviceId, txnId, txnResult, Date.now(), eventId, pdu.depth, streamOrdering, ev.roomId, ev.roomId, room.last_event_id, ev.sender, deviceId, txnId);
      if (!made?.head || made.prior != null) {
        // After reads under the lock both conditions hold; only a cached view can miss them.
        if (!cached) throw new Error(`room ${ev.roomId}: its head or transaction ${txnId} changed under the stream lock`);
        w.giveBack(streamOrdering);
        throw new StaleView();
      }
      return this.persisted(w, ev, snap, version, signed, eventId, streamOrdering, json, undefined);
    }
    await insertEvent(
      tx,
      streamOrdering,
      eventId,
      ev.roomId,
      ev.type,
      ev.stateKey ?? null,
      ev.sender,
      pdu.origin_server_ts,
      pdu.depth,
      json,
      rel?.eventId ?? null,
      rel?.relType ?? null,
      rel?.relType === "m.thread" ? rel.eventId : null,
      ev.type === "m.room.member" ? String(ev.content.membership) : null,
      ev.txn?.deviceId ?? null,
      ev.txn?.txnId ?? null,
    );

    if (isCreate) {
      await tx
        .insertInto("rooms")
        .values({ room_id: ev.roomId, room_version: room.room_version, creator: ev.sender, created_ts: pdu.origin_server_ts, visibility: "private", last_event_id: eventId, last_depth: pdu.depth, last_stream: streamOrdering })
        .execute();
    } else {
      await updateRoomHead(tx, ev.roomId, eventId, pdu.depth, streamOrdering);
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
        // A join after a join is a profile change: the stretch in the room goes on (see
        // event_push_shared, which counts for members joined before its position).
        await tx
          .insertInto("room_members")
          .values({ room_id: ev.roomId, user_id: ev.stateKey, ...member, joined_at: member.membership === "join" ? streamOrdering : null })
          .onConflict((oc) =>
            oc.columns(["room_id", "user_id"]).doUpdateSet({
              ...member,
              joined_at: sql<number | null>`case when room_members.membership = 'join' and excluded.membership = 'join' then room_members.joined_at else excluded.joined_at end`,
            }),
          )
          .execute();
        w.touch({ users: [ev.stateKey] });
      }
    }

    let redacted: { eventId: string; content: Record<string, unknown> } | undefined;
    if (ev.type === "m.room.redaction") {
      const target = ev.redacts ?? (typeof ev.content.redacts === "string" ? ev.content.redacts : undefined);
      if (target) redacted = await this.applyRedaction(tx, ev.roomId, target, eventId, version);
    }

    if (ev.txn) {
      await insertTxn(tx, ev.sender, ev.txn.deviceId, ev.txn.txnId, JSON.stringify({ eventId, streamOrdering }), Date.now());
    }

    return this.persisted(w, ev, snap, version, signed, eventId, streamOrdering, json, redacted);
  }

  /** What follows an event's rows: the snapshot moves on, the hooks run, its room is announced. */
  private async persisted(
    w: StreamWrite,
    ev: NewEvent,
    snap: RoomSnapshot,
    version: RoomVersion,
    signed: Pdu,
    eventId: string,
    streamOrdering: number,
    json: string,
    redacted: { eventId: string; content: Record<string, unknown> } | undefined,
  ): Promise<StoredEvent> {
    const { tx } = w;
    // The snapshot follows the event: head first (see RoomSnapshot), then the state it changed.
    snap.head = eventId;
    snap.depth = signed.depth;
    if (ev.stateKey !== undefined) {
      // A private copy: the content object is also part of the event handed to hooks and callers.
      const content = (JSON.parse(json) as Pdu).content;
      snap.state.set(stateKeyOf(ev.type, ev.stateKey), { event_id: eventId, type: ev.type, state_key: ev.stateKey, sender: ev.sender, content });
      if (ev.type === "m.room.member" && snap.joined) {
        if (ev.content.membership === "join") snap.joined.set(ev.stateKey, typeof ev.content.displayname === "string" ? ev.content.displayname : null);
        else snap.joined.delete(ev.stateKey);
      }
    }
    if (redacted) {
      // Redacting a current state event changes the content the auth rules see from now on.
      for (const e of snap.state.values()) if (e && e.event_id === redacted.eventId) e.content = redacted.content;
    }

    const stored: StoredEvent = { pdu: signed, eventId, roomId: ev.roomId, streamOrdering };
    const view: RoomView = {
      joinedMembers: () => snap.joinedMembers(tx),
      stateContent: async (type, stateKey = "") => (await snap.stateEvents(tx, [[type, stateKey]])).get(stateKeyOf(type, stateKey))?.content,
    };
    for (const hook of this.hooks) await hook({ tx, event: stored, roomVersion: version, w, room: view });
    w.touch({ rooms: [ev.roomId] });
    return stored;
  }

  /** The room's snapshot if it still describes `room`'s head, else a fresh one (see RoomSnapshot). */
  private snapshot(roomId: string, room: RoomRow): RoomSnapshot {
    const head = room.last_event_id;
    let snap = this.snapshots.get(roomId);
    if (snap) this.snapshots.delete(roomId);
    if (!snap || snap.head !== head || head === null) snap = new RoomSnapshot(roomId, head, room.last_depth, room.room_version);
    else snap.unshared = true;
    if (this.snapshots.size >= SNAPSHOT_LIMIT) this.snapshots.delete(this.snapshots.keys().next().value!);
    // Re-inserted, so the map's order is least recently written first.
    this.snapshots.set(roomId, snap);
    return snap;
  }

  /** Redaction strips the target's content for good: police data that was redacted is not kept. */
  private async applyRedaction(tx: Tx, roomId: string, targetId: string, redactionId: string, version: RoomVersion): Promise<{ eventId: string; content: Record<string, unknown> } | undefined> {
    const target = await tx.selectFrom("events").select(["json", "redacted_by"]).where("event_id", "=", targetId).where("room_id", "=", roomId).executeTakeFirst();
    if (!target || target.redacted_by) return undefined;
    const pdu = JSON.parse(target.json) as Pdu & { unsigned?: Record<string, unknown> };
    const redacted = redactEvent(pdu, version) as Pdu & { unsigned?: Record<string, unknown> };
    redacted.unsigned = { ...(pdu.unsigned?.replaces_state ? { replaces_state: pdu.unsigned.replaces_state } : {}) };
    const json = JSON.stringify(redacted);
    await tx.updateTable("events").set({ json, redacted_by: redactionId }).where("event_id", "=", targetId).execute();
    return { eventId: targetId, content: (JSON.parse(json) as Pdu).content };
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

/** A message that is not state, a redaction or a room's creation: on PostgreSQL, one statement (insertMessagePostgres). */
function isMergedMessage(ev: NewEvent): boolean {
  return ev.txn !== undefined && ev.stateKey === undefined && ev.type !== "m.room.redaction";
}

/** Refuses content that has no canonical form or is too large; returns the content's canonical JSON. */
function validateContentSize(ev: NewEvent): string {
  let size: number;
  let contentJson: string;
  try {
    // The content is encoded once, here; the event's hashes reuse this encoding (finishNewEvent).
    contentJson = canonicalJsonMember("content", ev.content);
    const known = new Map<object, string>([[ev.content, contentJson]]);
    size = Buffer.byteLength(canonicalJson({ content: ev.content, type: ev.type, room_id: ev.roomId, sender: ev.sender, ...(ev.stateKey !== undefined ? { state_key: ev.stateKey } : {}) }, undefined, known));
  } catch (err) {
    if (err instanceof CanonicalJsonError) throw new MatrixError("M_BAD_JSON", `Event content is not valid canonical JSON: ${err.message}`);
    throw err;
  }
  // The PDU adds hashes, signatures, prev/auth events and ids; keep headroom for them.
  if (size > MAX_EVENT_BYTES - 2048) throw new MatrixError("M_TOO_LARGE", `Event is larger than ${MAX_EVENT_BYTES} bytes`);
  return contentJson;
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
