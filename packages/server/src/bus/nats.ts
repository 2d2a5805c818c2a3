import { connect, Events, DebugEvents, type NatsConnection } from "nats";
import type { Logger } from "pino";
import type { Bus, WakeUp } from "./bus.js";

export interface NatsBusOptions {
  /** Subject the wake-ups travel on; processes of one deployment share it. */
  subject?: string;
  /** Wait between attempts while the first connection fails (later ones are the client's job). */
  retryMs?: number;
}

const encoder = new TextEncoder();

/** A bus URL fit for logs: `nats://user:password@host` loses its credentials (they are secrets). */
export function loggableUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.username || u.password) {
      u.username = "";
      u.password = "";
    }
    return u.toString().replace(/\/$/, "");
  } catch {
    return url.replace(/\/\/[^@/]*@/, "//");
  }
}
const decoder = new TextDecoder();

/**
 * Wake-ups between processes over NATS core pub/sub. The database stays the source of truth: a
 * wake-up only says "the stream reached P, these rooms and users have news", so a lost one costs
 * a long-poll its timeout, never data. That is why plain at-most-once core NATS is enough and
 * JetStream is not used.
 *
 * The process's own subscribers are called directly, so its own clients are served whether NATS
 * is up or not; the connection is opened with `noEcho` so our publications do not come back a
 * second time through the server.
 */
export class NatsBus implements Bus {
  private readonly subscribers = new Set<(w: WakeUp) => void>();
  private readonly subject: string;
  private readonly retryMs: number;
  private nc: NatsConnection | null = null;
  private connected = false;
  private closed = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly firstConnect: Promise<void>;
  private resolveFirst!: () => void;

  constructor(
    private readonly url: string,
    private readonly log: Logger,
    opts: NatsBusOptions = {},
  ) {
    this.subject = opts.subject ?? "revier.wake";
    this.retryMs = opts.retryMs ?? 2000;
    this.firstConnect = new Promise((resolve) => (this.resolveFirst = resolve));
    void this.open();
  }

  /** True while the connection to NATS is up. */
  get isConnected(): boolean {
    return this.connected;
  }

  /**
   * Resolves true once connected, or false after `timeoutMs`. Start-up waits briefly so the first
   * requests already reach other processes, but never refuses to serve because NATS is down.
   */
  async waitConnected(timeoutMs: number): Promise<boolean> {
    if (this.connected) return true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    try {
      return await Promise.race([this.firstConnect.then(() => true), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  publish(w: WakeUp): void {
    for (const fn of this.subscribers) {
      try {
        fn(w);
      } catch (err) {
        this.log.error({ err }, "wake-up subscriber failed");
      }
    }
    // While disconnected the client would buffer publications without bound until it reconnects;
    // stale wake-ups are worthless then, so they are dropped instead.
    if (!this.connected || !this.nc) return;
    try {
      this.nc.publish(this.subject, encoder.encode(JSON.stringify({ p: w.position, f: w.from, r: w.rooms, u: w.users, o: w.presenceOnly === true ? 1 : undefined, k: w.keys, e: w.ephemeralRooms })));
    } catch (err) {
      // A request has committed its write already; failing it because the bus hiccupped would be wrong.
      this.log.warn({ err }, "NATS publish failed; other processes see this write at their next wake-up");
    }
  }

  subscribe(fn: (w: WakeUp) => void): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.subscribers.clear();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const nc = this.nc;
    this.nc = null;
    this.connected = false;
    if (!nc || nc.isClosed()) return;
    // Drain flushes what we published before stopping; while NATS is unreachable it would wait for
    // a reconnect that may never come, so it gets a deadline and then the connection is just closed.
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, 2000)));
    try {
      await Promise.race([nc.drain().catch(() => undefined), deadline]);
    } finally {
      clearTimeout(timer);
      if (!nc.isClosed()) await nc.close().catch(() => undefined);
    }
  }

  private async open(): Promise<void> {
    if (this.closed) return;
    let nc: NatsConnection;
    try {
      nc = await connect({
        servers: this.url,
        name: "revier",
        noEcho: true,
        reconnect: true,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 1000,
        // Half-open TCP connections (a dead host, a dropped route) are noticed within ~30 s.
        pingInterval: 10_000,
        maxPingOut: 3,
        timeout: 2000,
      });
    } catch (err) {
      if (this.closed) return;
      this.log.warn({ err: String(err), url: loggableUrl(this.url) }, "NATS unreachable; serving local clients only and retrying");
      this.retryTimer = setTimeout(() => void this.open(), this.retryMs);
      return;
    }
    if (this.closed) {
      await nc.close().catch(() => undefined);
      return;
    }
    nc.subscribe(this.subject, { callback: (err, msg) => (err ? this.log.warn({ err }, "NATS subscription error") : this.deliver(msg.data)) });
    // Until the server has the subscription, other processes' wake-ups would be lost; a round
    // trip makes "connected" mean "subscribed".
    await nc.flush().catch(() => undefined);
    if (this.closed) {
      await nc.close().catch(() => undefined);
      return;
    }
    this.nc = nc;
    this.connected = true;
    this.log.info({ url: loggableUrl(this.url), server: nc.getServer() }, "NATS bus connected");
    void this.watch(nc);
    void nc.closed().then((err) => {
      this.connected = false;
      if (!this.closed) this.log.error({ err: err ? String(err) : undefined }, "NATS connection closed for good");
    });
    this.resolveFirst();
  }

  private async watch(nc: NatsConnection): Promise<void> {
    let reconnecting = false;
    for await (const s of nc.status()) {
      switch (s.type) {
        case Events.Disconnect:
          this.connected = false;
          this.log.warn({ server: s.data }, "NATS bus disconnected; cross-process wake-ups paused, reconnecting");
          break;
        case Events.Reconnect:
          this.connected = true;
          reconnecting = false;
          this.log.info({ server: s.data }, "NATS bus reconnected");
          break;
        case DebugEvents.Reconnecting:
          // One line per outage, not one per attempt.
          if (!reconnecting) this.log.debug("NATS bus reconnecting");
          reconnecting = true;
          break;
        case Events.Error:
          this.log.warn({ err: String(s.data) }, "NATS bus error");
          break;
        case Events.LDM:
          this.log.info("NATS server entering lame duck mode; the client will move to another server");
          break;
        default:
          break;
      }
    }
  }

  private deliver(data: Uint8Array): void {
    const w = parseWakeUp(data);
    if (!w) {
      this.log.warn("ignoring malformed wake-up from NATS");
      return;
    }
    for (const fn of this.subscribers) {
      try {
        fn(w);
      } catch (err) {
        this.log.error({ err }, "wake-up subscriber failed");
      }
    }
  }
}

/** Decodes a wake-up from the wire; anything on the subject that is not one is refused. */
export function parseWakeUp(data: Uint8Array): WakeUp | null {
  let v: unknown;
  try {
    v = JSON.parse(decoder.decode(data));
  } catch {
    return null;
  }
  if (typeof v !== "object" || v === null) return null;
  const { p, f, r, u, o, k, e } = v as { p?: unknown; f?: unknown; r?: unknown; u?: unknown; o?: unknown; k?: unknown; e?: unknown };
  if (typeof p !== "number" || !Number.isSafeInteger(p) || p < 0) return null;
  if (f !== undefined && (typeof f !== "number" || !Number.isSafeInteger(f) || f < 0 || f >= p)) return null;
  if (!isStringArray(r) || !isStringArray(u) || (k !== undefined && !isStringArray(k)) || (e !== undefined && !isStringArray(e))) return null;
  const w: WakeUp = { position: p, rooms: r, users: u };
  if (f !== undefined) w.from = f;
  if (o === 1) w.presenceOnly = true;
  if (k !== undefined && k.length > 0) w.keys = k;
  if (e !== undefined && e.length > 0) w.ephemeralRooms = e;
  return w;
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === "string");
}
