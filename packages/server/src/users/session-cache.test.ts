import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { MatrixError } from "@revier/protocol";
import { migrate, openPostgres, openSqlite, type Storage } from "../storage/database.js";
import { Accounts } from "./accounts.js";
import { Tokens } from "./tokens.js";
import { SessionCache } from "./session-cache.js";
import { sha256Hex } from "../lib/random.js";
import { DB_KINDS, PG_SKIP_MESSAGE, createScratchDatabase, postgresReachable } from "../../test/support/databases.js";

const pgOk = await postgresReachable();

/** One process's view: its own cache over the shared database. */
interface Proc {
  sessions: SessionCache;
  tokens: Tokens;
  accounts: Accounts;
}

/**
 * Every process keeps the sessions it has looked up in memory and learns of changes made
 * elsewhere from the `auth_changes` log (session-cache.ts). Two processes are two caches over one
 * database here: A makes a change, B must stop honouring what it cached once its log read is due,
 * and not before (which shows it is the log, not a database read per request, that B relies on).
 */
for (const kind of DB_KINDS) {
  describe(`session cache across processes [${kind}]`, { skip: kind === "postgres" && !pgOk ? PG_SKIP_MESSAGE : false }, () => {
    let storage: Storage;
    let drop = async (): Promise<void> => undefined;
    let a: Proc;
    let b: Proc;
    let n = 0;
    const POLL_MS = 1_000;

    // One machine's time for both processes, moved by the test.
    const clock = { t: Date.now() };
    const proc = (): Proc => {
      const sessions = new SessionCache(storage.db, { pollMs: POLL_MS, now: () => clock.t });
      return { sessions, tokens: new Tokens(storage.db, null, sessions), accounts: new Accounts(storage.db, "t", sessions) };
    };
    const refusal = async (p: Proc, token: string): Promise<string | null> => {
      try {
        await p.tokens.authenticate(token);
        return null;
      } catch (err) {
        assert.ok(err instanceof MatrixError, String(err));
        return err.errcode;
      }
    };
    const newUser = async (): Promise<string> => {
      const userId = `@u${++n}:t`;
      await storage.db.insertInto("users").values({ user_id: userId, localpart: `u${n}`, password_hash: null, role: "user", deactivated: 0, locked: 0, created_ts: 0, displayname: null, avatar_url: null }).execute();
      return userId;
    };
    /** A user with a fresh token, looked up once by B so B holds it. */
    const userOnB = async (): Promise<{ userId: string; token: string }> => {
      const userId = await newUser();
      const { access_token } = await a.tokens.issue(userId, "PHONE", false);
      assert.equal((await b.tokens.authenticate(access_token)).userId, userId);
      return { userId, token: access_token };
    };
    /** B's next log read is due. */
    const pollDue = () => (clock.t += POLL_MS);
    const logRow = (userId: string, ts: number) => storage.db.insertInto("auth_changes").values({ user_id: userId, ts }).execute();

    before(async () => {
      if (kind === "sqlite") storage = openSqlite(":memory:");
      else {
        const scratch = await createScratchDatabase();
        storage = openPostgres(scratch.url);
        drop = scratch.drop;
      }
      await migrate(storage);
      a = proc();
      b = proc();
    });
    after(async () => {
      await storage?.close();
      await drop();
    });

    test("a token revoked through A is refused by B once B reads the log, and honoured from memory until then", async () => {
      const { token } = await userOnB();
      // First read of B's log happened with the lookup above; the next is POLL_MS away.
      await a.tokens.revokeToken(sha256Hex(token));
      assert.equal(await refusal(a, token), "M_UNKNOWN_TOKEN", "A forgets at once");
      assert.equal(await refusal(b, token), null, "B still serves what it cached: it has not read the log yet");
      pollDue();
      assert.equal(await refusal(b, token), "M_UNKNOWN_TOKEN");
    });

    test("a device signed out, all sessions ended, a refresh: each reaches B through the log", async () => {
      const one = await userOnB();
      await a.tokens.revokeDevice(one.userId, "PHONE");
      const two = await userOnB();
      await a.tokens.revokeAll(two.userId);
      pollDue();
      assert.equal(await refusal(b, one.token), "M_UNKNOWN_TOKEN");
      assert.equal(await refusal(b, two.token), "M_UNKNOWN_TOKEN");

      const userId = await newUser();
      const first = await a.tokens.issue(userId, "PHONE", true);
      await b.tokens.authenticate(first.access_token);
      const second = await a.tokens.refresh(first.refresh_token!);
      const third = await a.tokens.refresh(second.refresh_token!);
      pollDue();
      // The first refresh retired the access token issued with the first refresh token.
      assert.equal(await refusal(b, first.access_token), "M_UNKNOWN_TOKEN");
      assert.equal((await b.tokens.authenticate(third.access_token)).userId, userId);
    });

    test("lock, role and deactivation made through A reach B's cached sessions", async () => {
      const { userId, token } = await userOnB();
      await a.accounts.setLocked(userId, true);
      await a.accounts.setRole(userId, "helpdesk");
      assert.deepEqual((await b.tokens.authenticate(token)).account, { locked: 0, role: "user" }, "not yet read");
      pollDue();
      assert.deepEqual((await b.tokens.authenticate(token)).account, { locked: 1, role: "helpdesk" });
      await a.accounts.setLocked(userId, false);
      pollDue();
      assert.equal((await b.tokens.authenticate(token)).account.locked, 0);
      await a.accounts.markDeactivated(userId);
      pollDue();
      assert.equal(await refusal(b, token), "M_UNKNOWN_TOKEN");
    });

    test("a process that read nothing for longer than the lookback still learns what changed meanwhile", async () => {
      const { userId, token } = await userOnB();
      // A quiet minute on B; the change comes early in it, long before B's next request.
      await logRow(userId, clock.t + 500);
      // Still within the cached session's minute, far beyond the 10-second lookback.
      clock.t += 59_000;
      await storage.db.deleteFrom("access_tokens").where("token_hash", "=", sha256Hex(token)).execute();
      assert.equal(await refusal(b, token), "M_UNKNOWN_TOKEN");
    });

    test("a change written by hand without a log row is picked up when the cached session is a minute old", async () => {
      const { token } = await userOnB();
      await storage.db.deleteFrom("access_tokens").where("token_hash", "=", sha256Hex(token)).execute();
      pollDue();
      assert.equal(await refusal(b, token), null, "no log row: B cannot know yet");
      clock.t += 60_000;
      assert.equal(await refusal(b, token), "M_UNKNOWN_TOKEN");
    });

    test("the log is pruned after a day, and a process that slept through that keeps nothing", async () => {
      const { userId, token } = await userOnB();
      await logRow(userId, clock.t - 2 * 24 * 3600_000);
      await b.sessions.prune();
      const left = await storage.db.selectFrom("auth_changes").select("ts").where("user_id", "=", userId).execute();
      assert.deepEqual(left, [], "the old row is gone");
      assert.ok((await storage.db.selectFrom("auth_changes").select("pos").execute()).length > 0, "recent rows stay");
      const before = b.sessions.size;
      assert.ok(before > 0);
      clock.t += 2 * 24 * 3600_000;
      await b.sessions.freshen();
      assert.equal(b.sessions.size, 0, "whatever changed over two days is unknown: every session is read again");
      assert.equal(await refusal(b, token), null, "and read again it is still valid");
    });
  });
}

describe("session cache bookkeeping", () => {
  const session = (userId: string, tokenHash: string) => Object.freeze({ userId, deviceId: "D", tokenHash, expiresTs: null, refreshTokenHash: null, account: { locked: 0, role: "user" } });
  // The database is never touched by these (no log read is due: freshen is not called).
  const cache = (capacity = 10) => new SessionCache(null as never, { capacity });

  test("a lookup that began before a forget does not store what it read", () => {
    const c = cache();
    const mark = c.mark();
    c.forgetUser("@x:t");
    c.put(session("@x:t", "h1"), mark);
    assert.equal(c.get("h1"), undefined);
    c.put(session("@x:t", "h1"), c.mark());
    assert.equal(c.get("h1")?.userId, "@x:t");
  });

  test("beyond its capacity the oldest session goes, and forgetting its user later is harmless", () => {
    const c = cache(2);
    c.put(session("@a:t", "ha"), c.mark());
    c.put(session("@b:t", "hb"), c.mark());
    c.put(session("@c:t", "hc"), c.mark());
    assert.equal(c.size, 2);
    assert.equal(c.get("ha"), undefined);
    c.forgetUser("@a:t");
    c.forgetUser("@b:t");
    assert.equal(c.size, 1);
    assert.equal(c.get("hc")?.userId, "@c:t");
  });
});
