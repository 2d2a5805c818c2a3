/**
 * Holds idle /sync long-polls for the `sync` and `idle` scenarios, in a child process of the
 * bench: each process may only open so many files (`ulimit -n`), so 20,000 connections are spread
 * over several of these, each from its own loopback source address (127.0.0.x) so the ephemeral
 * ports of one address do not run out. Each session first syncs once with a filter that leaves out
 * every room (cheap, like a client that resumes with a stored token), then long-polls from that
 * token for as long as it runs, as an idle client that is connected but sees no news does.
 */
import { setMaxListeners } from "node:events";
import type http from "node:http";
import { keepAliveAgent, rawRequest } from "./http.js";

export interface PollerSession {
  baseUrl: string;
  accessToken: string;
  userId: string;
}

export interface PollerOptions {
  localAddress?: string;
  /** Long-poll timeout (ms) each request asks for. */
  timeoutMs: number;
  /** `set_presence` sent with every sync. */
  presence: "online" | "offline" | "unavailable";
  /** Filter of the long-polls (JSON). */
  filter: string;
  /**
   * Store the filter once per session (POST /user/{userId}/filter) and long-poll with its id, as
   * Element and matrix-js-sdk do; otherwise every long-poll carries the filter's JSON in its URL.
   */
  filterId: boolean;
  /** Initial syncs in flight at once. */
  initialConcurrency: number;
}

export interface PollerStatus {
  sessions: number;
  /** Sessions that got their first token and are long-polling. */
  polling: number;
  /** Long-polls sent and not yet answered. */
  waiting: number;
  /** Long-polls answered: empty (timed out) or with news. */
  empty: number;
  withNews: number;
  errors: number;
  lastError: string | null;
}

export type PollerRequest = { id: number; type: "add"; sessions: PollerSession[] } | { id: number; type: "status" } | { id: number; type: "stop" };
export type PollerReply = { id: number; status: PollerStatus } | { id: number; error: string };

/** Leaves out every room, presence and account data: a token at the current position, cheaply. */
export const TOKEN_ONLY_FILTER = JSON.stringify({ room: { rooms: [] }, presence: { not_types: ["*"] }, account_data: { not_types: ["*"] } });

if (process.send && process.env.REVIER_POLLER_OPTIONS) {
  const opts = JSON.parse(process.env.REVIER_POLLER_OPTIONS) as PollerOptions;
  const agent: http.Agent = keepAliveAgent();
  const controller = new AbortController();
  // Every request of this process listens on the one signal that ends them all at stop.
  setMaxListeners(0, controller.signal);
  const status: PollerStatus = { sessions: 0, polling: 0, waiting: 0, empty: 0, withNews: 0, errors: 0, lastError: null };
  let stopped = false;
  const queue: PollerSession[] = [];
  let initialInFlight = 0;

  const syncUrl = (s: PollerSession, q: Record<string, string>) => `${s.baseUrl}/_matrix/client/v3/sync?${new URLSearchParams({ set_presence: opts.presence, ...q })}`;
  const get = (s: PollerSession, q: Record<string, string>) =>
    rawRequest({ url: syncUrl(s, q), token: s.accessToken, agent, signal: controller.signal, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) });
  const fail = async (err: unknown) => {
    if (stopped) return;
    status.errors++;
    status.lastError = err instanceof Error ? err.message : String(err);
    await new Promise((r) => setTimeout(r, 1000 + Math.random() * 1000));
  };

  const longPoll = async (s: PollerSession, from: string, filter: string) => {
    let since = from;
    status.polling++;
    while (!stopped) {
      status.waiting++;
      try {
        const res = await get(s, { since, timeout: String(opts.timeoutMs), filter });
        status.waiting--;
        if (res.status !== 200) throw new Error(`HTTP ${res.status} ${res.body.toString("utf8").slice(0, 120)}`);
        const body = JSON.parse(res.body.toString("utf8")) as { next_batch: string; rooms?: { join?: Record<string, unknown> }; to_device?: { events?: unknown[] } };
        const news = Object.keys(body.rooms?.join ?? {}).length > 0 || (body.to_device?.events?.length ?? 0) > 0;
        if (news) status.withNews++;
        else status.empty++;
        since = body.next_batch;
      } catch (err) {
        status.waiting--;
        await fail(err);
      }
    }
  };

  const pump = () => {
    while (!stopped && initialInFlight < opts.initialConcurrency && queue.length > 0) {
      const s = queue.shift()!;
      initialInFlight++;
      void (async () => {
        for (;;) {
          try {
            let filter = opts.filter;
            if (opts.filterId) {
              const stored = await rawRequest({
                url: `${s.baseUrl}/_matrix/client/v3/user/${encodeURIComponent(s.userId)}/filter`,
                method: "POST",
                json: JSON.parse(opts.filter) as unknown,
                token: s.accessToken,
                agent,
                signal: controller.signal,
                ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
              });
              if (stored.status !== 200) throw new Error(`filter upload: HTTP ${stored.status} ${stored.body.toString("utf8").slice(0, 120)}`);
              filter = (JSON.parse(stored.body.toString("utf8")) as { filter_id: string }).filter_id;
            }
            const res = await get(s, { timeout: "0", filter: TOKEN_ONLY_FILTER });
            if (res.status !== 200) throw new Error(`HTTP ${res.status} ${res.body.toString("utf8").slice(0, 120)}`);
            const token = (JSON.parse(res.body.toString("utf8")) as { next_batch: string }).next_batch;
            initialInFlight--;
            pump();
            void longPoll(s, token, filter);
            return;
          } catch (err) {
            await fail(err);
            if (stopped) return;
          }
        }
      })();
    }
  };

  process.on("message", (m: PollerRequest) => {
    if (m.type === "add") {
      status.sessions += m.sessions.length;
      queue.push(...m.sessions);
      pump();
      process.send!({ id: m.id, status } satisfies PollerReply);
    } else if (m.type === "status") {
      process.send!({ id: m.id, status } satisfies PollerReply);
    } else if (m.type === "stop") {
      stopped = true;
      controller.abort();
      agent.destroy();
      process.send!({ id: m.id, status } satisfies PollerReply, () => process.exit(0));
    }
  });
  process.on("disconnect", () => process.exit(0));
}
