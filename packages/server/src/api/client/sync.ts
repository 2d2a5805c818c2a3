import { Type } from "@sinclair/typebox";
import { MatrixError } from "@revier/protocol";
import { ANSWERED_LATER, route, sendOutcome } from "../../http/route.js";
import { FilterError, parseFilter, type Filter } from "../../sync/filter.js";
import { ClientGone } from "../../sync/notifier.js";
import type { Services } from "../../services.js";

const MAX_TIMEOUT_MS = 120_000;

/**
 * The request's filter where it is known without waiting (none named, or parsed before): every
 * long-poll names the same filter as its client's last one. Null when it has to be resolved.
 */
function filterNow(s: Services, userId: string, raw: string | undefined): { filter: Filter | undefined } | null {
  if (raw === undefined || raw === "") return { filter: undefined };
  const hit = isInlineFilter(raw) ? s.sync.filters.peek("text", inlineFilterKey(raw)) : s.sync.filters.peek("stored", storedFilterKey(userId, raw));
  return hit === undefined ? null : { filter: hit };
}

function isInlineFilter(raw: string): boolean {
  return raw.trimStart().startsWith("{");
}

/** Filters parsed from JSON text are filed by the text (stored ones are parsed from theirs too). */
function inlineFilterKey(text: string): string {
  return `{${text}`;
}

function storedFilterKey(userId: string, id: string): string {
  return `${userId}\u0000${id}`;
}

async function resolveFilter(s: Services, userId: string, raw: string | undefined): Promise<Filter | undefined> {
  if (raw === undefined || raw === "") return undefined;
  try {
    if (isInlineFilter(raw)) return await parsedFilter(s, raw);
    const filter = await s.sync.filters.storedFilter(storedFilterKey(userId, raw), async () => {
      const stored = await s.accountData.getFilter(userId, raw);
      return stored === undefined ? undefined : parsedFilter(s, JSON.stringify(stored));
    });
    if (filter === undefined) throw new MatrixError("M_INVALID_PARAM", "Unknown filter id");
    return filter;
  } catch (err) {
    if (err instanceof FilterError) throw new MatrixError("M_INVALID_PARAM", `Invalid filter: ${err.message}`);
    throw err;
  }
}

/** A filter's JSON text, parsed once for every request that names the same text. */
function parsedFilter(s: Services, text: string): Promise<Filter> {
  return s.sync.filters.get(inlineFilterKey(text), async () => {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new MatrixError("M_INVALID_PARAM", "filter is not valid JSON");
    }
    return parseFilter(json);
  });
}

export const syncRoutes = [
  route(
    {
      method: "GET",
      url: "/_matrix/client/v3/sync",
      query: Type.Object({
        since: Type.Optional(Type.String({ maxLength: 64 })),
        timeout: Type.Optional(Type.Integer({ minimum: 0 })),
        filter: Type.Optional(Type.String({ maxLength: 16384 })),
        full_state: Type.Optional(Type.Boolean()),
        set_presence: Type.Optional(Type.Union([Type.Literal("online"), Type.Literal("offline"), Type.Literal("unavailable")])),
        use_state_after: Type.Optional(Type.Boolean()),
      }),
    },
    async ({ user, query, req, reply }, s) => {
      // Both all but always known without waiting (see filterNow, presenceIsCurrent).
      const known = filterNow(s, user.userId, query.filter);
      const filter = known !== null ? known.filter : await resolveFilter(s, user.userId, query.filter);
      const presence = query.set_presence ?? "online";
      if (presence !== "offline" && !s.ephemeral.presenceIsCurrent(user.userId, presence)) await s.ephemeral.setPresence(user.userId, presence);
      const gone = new ClientGone();
      req.raw.on("close", gone.cancel);
      // Answered from a callback, not awaited: a long-poll waits parked (see SyncService.answer),
      // and awaiting here would keep this function and the HTTP wrapper's suspended meanwhile.
      s.sync.answer(user, { since: query.since, timeoutMs: Math.min(query.timeout ?? 0, MAX_TIMEOUT_MS), filter, fullState: query.full_state === true, signal: gone }, (err, out) => {
        // Every request closes once answered; cancelling then would only be work for nothing.
        req.raw.off("close", gone.cancel);
        sendOutcome(reply, err, out);
      });
      return ANSWERED_LATER;
    },
  ),
];
