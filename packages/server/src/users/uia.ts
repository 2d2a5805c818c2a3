import { MatrixError } from "@revier/protocol";
import type { Db } from "../storage/database.js";
import { canonicalJson } from "../lib/canonical-json.js";
import { randomToken, sha256Hex } from "../lib/random.js";
import type { Accounts } from "./accounts.js";
import { verifyPassword } from "./passwords.js";
import type { RateLimiter } from "../lib/rate-limiter.js";

const SESSION_LIFETIME_MS = 15 * 60_000;

export interface UiaRequest {
  method: string;
  path: string;
  body: Record<string, unknown> | undefined;
  /** The authenticated user, or null for registration-style flows. */
  userId: string | null;
  /** Facts a stage may need that are not part of the bound request (e.g. the device id a login will get). */
  context?: Record<string, unknown>;
}

/**
 * A stage beyond the built-in password and dummy stages, registered by a module that hooks in at
 * the edges (governance's enrollment code). `check` returns true when the auth dict satisfies it.
 */
export interface UiaStage {
  check: (auth: Record<string, unknown>, req: UiaRequest) => Promise<boolean>;
  /** The stage's entry in the challenge's `params`. */
  params?: Record<string, unknown>;
  /** Message of the 401 when the check fails. */
  failure: string;
}

/**
 * User-interactive authentication. A session is bound to the request that started it (method,
 * path and body minus `auth`): a session completed for one request cannot authorise another, and a
 * completed session is deleted on use so it cannot be replayed.
 */
export class Uia {
  private readonly stages = new Map<string, UiaStage>();

  constructor(
    private readonly db: Db,
    private readonly accounts: Accounts,
    /** Limits password attempts per user, so a stolen access token cannot brute-force the password. */
    private readonly limiter?: () => RateLimiter | undefined,
  ) {}

  registerStage(type: string, stage: UiaStage): void {
    this.stages.set(type, stage);
  }

  /**
   * The UIA fields (`flows`, `params`, a new `session`, `completed`) for a refusal that is not itself
   * a 401, e.g. a login refused for want of an enrollment code: the client can then complete the
   * stage and repeat the request with `auth`.
   */
  async describe(req: UiaRequest, flows: string[][]): Promise<Record<string, unknown>> {
    const { auth: _auth, ...rest } = (req.body ?? {}) as Record<string, unknown> & { auth?: unknown };
    const requestHash = bindingHash(req.method, req.path, rest);
    return (await this.challenge(requestHash, req.userId, flows, [])).extra;
  }

  /** Drops abandoned sessions (they hold a request digest and completed stages, nothing else). */
  async expireSessions(now = Date.now()): Promise<void> {
    await this.db.deleteFrom("uia_sessions").where("created_ts", "<", now - SESSION_LIFETIME_MS).execute();
  }

  /** Returns when the request is authorised; otherwise throws the 401 UIA response. */
  async require(req: UiaRequest, flows: string[][] = [["m.login.password"]]): Promise<void> {
    const { auth, ...rest } = (req.body ?? {}) as Record<string, unknown> & { auth?: unknown };
    const requestHash = bindingHash(req.method, req.path, rest);
    const now = Date.now();
    await this.expireSessions(now);

    if (auth === undefined || auth === null) {
      throw await this.challenge(requestHash, req.userId, flows, []);
    }
    if (typeof auth !== "object" || Array.isArray(auth)) throw new MatrixError("M_BAD_JSON", "auth must be an object");
    const a = auth as Record<string, unknown>;
    let sessionId = typeof a.session === "string" ? a.session : null;
    let completed: string[] = [];
    if (sessionId !== null) {
      const row = await this.db.selectFrom("uia_sessions").selectAll().where("session_id", "=", sessionId).executeTakeFirst();
      if (!row || row.user_id !== req.userId) throw new MatrixError("M_UNKNOWN", "Unknown or expired authentication session");
      if (row.request_hash !== requestHash) {
        throw new MatrixError("M_FORBIDDEN", "This authentication session was started for a different request");
      }
      completed = JSON.parse(row.completed) as string[];
    } else {
      sessionId = await this.newSession(requestHash, req.userId);
    }

    const stage = a.type;
    if (typeof stage !== "string") {
      throw await this.challenge(requestHash, req.userId, flows, completed, sessionId);
    }
    if (!flows.some((f) => f.includes(stage))) {
      throw await this.challenge(requestHash, req.userId, flows, completed, sessionId, new MatrixError("M_UNRECOGNIZED", `Unsupported stage ${stage}`));
    }
    const extra = this.stages.get(stage);
    const ok = extra ? await extra.check(a, req) : await this.runStage(stage, a, req.userId);
    if (!ok) {
      throw await this.challenge(requestHash, req.userId, flows, completed, sessionId, new MatrixError("M_FORBIDDEN", extra?.failure ?? "Invalid password"));
    }
    if (!completed.includes(stage)) completed.push(stage);
    if (flows.some((f) => f.every((s) => completed.includes(s)))) {
      await this.db.deleteFrom("uia_sessions").where("session_id", "=", sessionId).execute();
      return;
    }
    await this.db.updateTable("uia_sessions").set({ completed: JSON.stringify(completed) }).where("session_id", "=", sessionId).execute();
    throw await this.challenge(requestHash, req.userId, flows, completed, sessionId);
  }

  private async runStage(stage: string, auth: Record<string, unknown>, userId: string | null): Promise<boolean> {
    if (stage === "m.login.password") {
      if (userId === null || typeof auth.password !== "string") return false;
      const wait = this.limiter?.()?.take(`uia:${userId}`) ?? 0;
      if (wait > 0) {
        throw new MatrixError("M_LIMIT_EXCEEDED", "Too many password attempts, slow down", { extra: { retry_after_ms: wait }, headers: { "retry-after": String(Math.ceil(wait / 1000)) } });
      }
      const claimed = claimedUser(auth);
      if (claimed !== null && this.accounts.resolveUserId(claimed) !== userId) return false;
      const user = await this.accounts.get(userId);
      return verifyPassword(user?.password_hash ?? null, auth.password);
    }
    if (stage === "m.login.dummy") return true;
    return false;
  }

  private async newSession(requestHash: string, userId: string | null): Promise<string> {
    const sessionId = randomToken(16);
    await this.db.insertInto("uia_sessions").values({ session_id: sessionId, user_id: userId, request_hash: requestHash, completed: "[]", created_ts: Date.now() }).execute();
    return sessionId;
  }

  private async challenge(requestHash: string, userId: string | null, flows: string[][], completed: string[], sessionId?: string, error?: MatrixError): Promise<MatrixError> {
    const session = sessionId ?? (await this.newSession(requestHash, userId));
    return new MatrixError(error?.errcode ?? "M_UNAUTHORIZED", error?.message ?? "Authentication required", {
      status: 401,
      extra: { flows: flows.map((stages) => ({ stages })), params: this.paramsFor(flows), session, completed, ...(error ? {} : {}) },
    });
  }

  private paramsFor(flows: string[][]): Record<string, unknown> {
    const params: Record<string, unknown> = {};
    for (const stage of new Set(flows.flat())) {
      const p = this.stages.get(stage)?.params;
      if (p) params[stage] = p;
    }
    return params;
  }
}

function claimedUser(auth: Record<string, unknown>): string | null {
  const id = auth.identifier as Record<string, unknown> | undefined;
  if (id && id.type === "m.id.user" && typeof id.user === "string") return id.user;
  if (typeof auth.user === "string") return auth.user;
  return null;
}

/**
 * What a session is bound to: method, path and the body without `auth`. Password fields are bound
 * by presence, not value: the hash is stored, and a plain SHA-256 over a new password would let
 * anyone with a database copy test guesses at billions per second, around argon2. Leaving the value
 * out loosens nothing: completing the session still needs the current password.
 */
const SECRET_FIELDS = new Set(["password", "new_password"]);

function bindingHash(method: string, path: string, rest: Record<string, unknown>): string {
  const bound: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(rest)) bound[k] = SECRET_FIELDS.has(k) ? "[secret]" : v;
  return sha256Hex(`${method} ${path} ${safeCanonical(bound)}`);
}

function safeCanonical(v: unknown): string {
  try {
    return canonicalJson(v);
  } catch {
    return JSON.stringify(v);
  }
}
