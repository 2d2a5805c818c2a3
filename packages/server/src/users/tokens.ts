import { MatrixError } from "@revier/protocol";
import type { Db } from "../storage/database.js";
import { randomToken, sha256Hex } from "../lib/random.js";
import { prepared } from "../storage/prepared.js";
import type { CachedSession, SessionCache } from "./session-cache.js";

export interface Session {
  readonly userId: string;
  readonly deviceId: string;
  readonly tokenHash: string;
  /** The user's row as the token lookup read it (it joins the row anyway), so auth hooks need not read it again. */
  readonly account: { readonly locked: number; readonly role: string };
}

// Every authenticated request runs it: compiled once (see prepared.ts).
const selectSession = prepared((db, hash: string) =>
  db
    .selectFrom("access_tokens")
    .innerJoin("users", "users.user_id", "access_tokens.user_id")
    .select(["access_tokens.user_id", "access_tokens.device_id", "access_tokens.expires_ts", "access_tokens.refresh_token_hash", "users.deactivated", "users.locked", "users.role"])
    .where("access_tokens.token_hash", "=", hash),
);

export interface IssuedTokens {
  access_token: string;
  refresh_token?: string;
  expires_in_ms?: number;
}

/**
 * Access and refresh tokens. Only SHA-256 digests are stored: a copy of the database does not let
 * anyone act as a user. Tokens are high-entropy random strings, so a plain hash is enough (no
 * password-style stretching needed).
 */
export class Tokens {
  private readonly settled = new Set<string>();

  constructor(
    private readonly db: Db,
    private readonly accessLifetimeMs: number | null,
    /** Sessions already looked up, shared with Accounts; every change below is logged for it (see SessionCache). */
    readonly sessions: SessionCache,
  ) {}

  async issue(userId: string, deviceId: string, withRefresh: boolean): Promise<IssuedTokens> {
    const access = `rva_${randomToken()}`;
    const now = Date.now();
    // Without a refresh token an access token must not expire: the client could not renew it.
    const expires = withRefresh && this.accessLifetimeMs ? now + this.accessLifetimeMs : null;
    let refresh: string | undefined;
    await this.db.transaction().execute(async (tx) => {
      if (withRefresh) {
        refresh = `rvr_${randomToken()}`;
        await tx
          .insertInto("refresh_tokens")
          .values({ token_hash: sha256Hex(refresh), user_id: userId, device_id: deviceId, created_ts: now, next_token_hash: null })
          .execute();
      }
      await tx
        .insertInto("access_tokens")
        .values({
          token_hash: sha256Hex(access),
          user_id: userId,
          device_id: deviceId,
          created_ts: now,
          expires_ts: expires,
          refresh_token_hash: refresh ? sha256Hex(refresh) : null,
        })
        .execute();
    });
    return {
      access_token: access,
      ...(refresh ? { refresh_token: refresh } : {}),
      ...(expires ? { expires_in_ms: expires - now } : {}),
    };
  }

  /** Resolves a bearer token, or throws M_UNKNOWN_TOKEN (soft_logout only for an expired token). */
  async authenticate(token: string): Promise<Session> {
    const hash = sha256Hex(token);
    const fresh = this.sessions.freshen();
    if (fresh) await fresh;
    const session = this.sessions.get(hash) ?? (await this.lookUp(hash));
    if (session.expiresTs !== null && session.expiresTs <= Date.now()) {
      throw new MatrixError("M_UNKNOWN_TOKEN", "Access token has expired", { extra: { soft_logout: true } });
    }
    if (session.refreshTokenHash && !this.settled.has(hash)) await this.retirePredecessor(hash, session.refreshTokenHash);
    return session;
  }

  private async lookUp(hash: string): Promise<CachedSession> {
    const mark = this.sessions.mark();
    const [row] = await selectSession(this.db, hash);
    if (!row || row.deactivated) {
      throw new MatrixError("M_UNKNOWN_TOKEN", "Unknown or revoked access token", { extra: { soft_logout: false } });
    }
    // Frozen: the one object answers every request of the token until it is dropped.
    const session: CachedSession = Object.freeze({
      userId: row.user_id,
      deviceId: row.device_id,
      tokenHash: hash,
      expiresTs: row.expires_ts,
      refreshTokenHash: row.refresh_token_hash,
      account: Object.freeze({ locked: row.locked, role: row.role }),
    });
    this.sessions.put(session, mark);
    return session;
  }

  /**
   * The first use of an access token proves its refresh response arrived, so the refresh token it
   * replaced dies now; otherwise a copied old refresh token would keep minting sessions.
   */
  private async retirePredecessor(accessHash: string, refreshHash: string): Promise<void> {
    await this.db.deleteFrom("refresh_tokens").where("next_token_hash", "=", refreshHash).execute();
    // Remembered per process only to skip the delete on later requests; a miss just repeats it.
    if (this.settled.size >= 100_000) this.settled.clear();
    this.settled.add(accessHash);
  }

  /**
   * Exchanges a refresh token for a new pair. The old refresh token stays usable until the new
   * access token is first used, so a response lost on the network does not log the device out.
   */
  async refresh(refreshToken: string): Promise<IssuedTokens> {
    const hash = sha256Hex(refreshToken);
    const row = await this.db.selectFrom("refresh_tokens").selectAll().where("token_hash", "=", hash).executeTakeFirst();
    if (!row) throw new MatrixError("M_UNKNOWN_TOKEN", "Unknown refresh token", { extra: { soft_logout: false } });
    const issued = await this.issue(row.user_id, row.device_id, true);
    await this.db.transaction().execute(async (tx) => {
      if (row.next_token_hash) {
        await tx.deleteFrom("access_tokens").where("refresh_token_hash", "=", row.next_token_hash).execute();
        await tx.deleteFrom("refresh_tokens").where("token_hash", "=", row.next_token_hash).execute();
      }
      await tx.updateTable("refresh_tokens").set({ next_token_hash: sha256Hex(issued.refresh_token!) }).where("token_hash", "=", hash).execute();
      // The access tokens issued with the old refresh token are superseded now.
      await tx.deleteFrom("access_tokens").where("refresh_token_hash", "=", hash).execute();
      // Using this refresh token proves its own refresh response arrived: its predecessor dies too.
      await tx.deleteFrom("refresh_tokens").where("next_token_hash", "=", hash).execute();
      await this.sessions.logChange(tx, row.user_id);
    });
    this.sessions.forgetUser(row.user_id);
    return issued;
  }

  async revokeToken(tokenHash: string): Promise<void> {
    const row = await this.db.selectFrom("access_tokens").select(["user_id", "refresh_token_hash"]).where("token_hash", "=", tokenHash).executeTakeFirst();
    if (!row) return;
    await this.db.transaction().execute(async (tx) => {
      await tx.deleteFrom("access_tokens").where("token_hash", "=", tokenHash).execute();
      if (row.refresh_token_hash) await tx.deleteFrom("refresh_tokens").where("token_hash", "=", row.refresh_token_hash).execute();
      await this.sessions.logChange(tx, row.user_id);
    });
    this.sessions.forgetUser(row.user_id);
  }

  async revokeDevice(userId: string, deviceId: string): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      await tx.deleteFrom("access_tokens").where("user_id", "=", userId).where("device_id", "=", deviceId).execute();
      await tx.deleteFrom("refresh_tokens").where("user_id", "=", userId).where("device_id", "=", deviceId).execute();
      await this.sessions.logChange(tx, userId);
    });
    this.sessions.forgetUser(userId);
  }

  async revokeAll(userId: string): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      await tx.deleteFrom("access_tokens").where("user_id", "=", userId).execute();
      await tx.deleteFrom("refresh_tokens").where("user_id", "=", userId).execute();
      await this.sessions.logChange(tx, userId);
    });
    this.sessions.forgetUser(userId);
  }
}
