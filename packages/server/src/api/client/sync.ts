import { Type } from "@sinclair/typebox";
import { MatrixError } from "@revier/protocol";
import { ANSWERED_LATER, route, sendOutcome } from "../../http/route.js";
import { FilterError, parseFilter, type Filter } from "../../sync/filter.js";
import { ClientGone } from "../../sync/notifier.js";
import type { Services } from "../../services.js";

const MAX_TIMEOUT_MS = 120_000;

async function resolveFilter(s: Services, userId: string, raw: string | undefined): Promise<Filter | undefined> {
  if (raw === undefined || raw === "") return undefined;
  try {
    if (raw.trimStart().startsWith("{")) return await parsedFilter(s, raw);
    const filter = await s.sync.filters.storedFilter(`${userId}\u0000${raw}`, async () => {
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
  return s.sync.filters.get(`{${text}`, async () => {
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
      const filter = await resolveFilter(s, user.userId, query.filter);
      if (query.set_presence !== "offline") await s.ephemeral.setPresence(user.userId, query.set_presence ?? "online");
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
