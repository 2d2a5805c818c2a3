import { after, before, describe } from "node:test";
import { DB_KINDS, PG_SKIP_MESSAGE, postgresReachable, type DbKind } from "./databases.js";
import { startTestServer, type TestServer } from "./server.js";

const pgOk = await postgresReachable();

/**
 * Declares the same suite once per database. Each suite shares one server across its tests; the
 * PostgreSQL variant is skipped, with a message saying so, when no server is reachable.
 */
export function describeEachDatabase(name: string, body: (ctx: { kind: DbKind; server: () => TestServer; replace: (s: TestServer) => void }) => void, overrides: Record<string, unknown> = {}): void {
  for (const kind of DB_KINDS) {
    const skip = kind === "postgres" && !pgOk ? PG_SKIP_MESSAGE : false;
    describe(`${name} [${kind}]`, { skip }, () => {
      let server: TestServer | undefined;
      before(async () => {
        server = await startTestServer(kind, overrides);
      });
      body({
        kind,
        server: () => {
          if (!server) throw new Error("server not started");
          return server;
        },
        replace: (s) => {
          server = s;
        },
      });
      // Registered after the body's hooks so clients stop before their server does.
      after(async () => {
        await server?.destroy();
      });
    });
  }
}
