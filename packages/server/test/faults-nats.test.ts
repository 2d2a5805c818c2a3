/**
 * NATS down under two (then three) server processes on one PostgreSQL database. The machine's NATS
 * is shared, so this test runs its own `nats-server` on a free port and kills it.
 *
 * While NATS is down each process keeps serving its own clients (its own wake-ups never leave the
 * process), writes succeed, and a client of the other process still gets the data — at its
 * long-poll timeout at the latest. When NATS comes back, cross-process wake-ups are prompt again
 * without a restart; a process started during the outage joins once NATS is reachable.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import pino from "pino";
import { loadConfig } from "../src/config.js";
import { startServer, type RunningServer } from "../src/server.js";
import type { NatsBus } from "../src/bus/nats.js";
import { createScratchDatabase, PG_SKIP_MESSAGE, postgresReachable } from "./support/databases.js";
import { TEST_PASSWORD, UNLIMITED } from "./support/server.js";
import { call, enc, faultsTempDir, removeDir, sleep, type Json } from "./faults-support.js";

const NATS_BIN = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"].find((p) => existsSync(p));
const pgOk = await postgresReachable();
const skip = !pgOk ? PG_SKIP_MESSAGE : !NATS_BIN ? "nats-server binary not found — NATS fault tests skipped" : false;
/** A wake-up through NATS arrives well within this; the long-poll timeout is far longer. */
const PROMPT_MS = 3_000;
const LONG_POLL_MS = 20_000;

interface Session {
  user_id: string;
  access_token: string;
  device_id: string;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

function reachable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port });
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => resolve(false));
  });
}

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<number> {
  const started = Date.now();
  while (!(await cond())) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
  return Date.now() - started;
}

describe("NATS down under several processes", { skip }, () => {
  let nats: ChildProcess | null = null;
  let natsPort = 0;
  let dataDir: string | undefined;
  let drop: (() => Promise<void>) | undefined;
  let databaseUrl = "";
  const servers: RunningServer[] = [];
  let a: RunningServer;
  let b: RunningServer;
  let anna: Session;
  let bert: Session;
  let roomId: string;

  const startNats = async () => {
    nats = spawn(NATS_BIN!, ["-a", "127.0.0.1", "-p", String(natsPort)], { stdio: "ignore" });
    await until("nats-server to listen", () => reachable(natsPort));
  };
  const stopNats = async () => {
    const n = nats;
    nats = null;
    if (!n || n.exitCode !== null) return;
    const exited = new Promise((r) => n.once("exit", r));
    n.kill("SIGKILL");
    await exited;
  };
  const start = async () => {
    const config = loadConfig(
      {},
      { port: 0, data_dir: dataDir, database_url: databaseUrl, bus_url: `nats://127.0.0.1:${natsPort}`, log_level: "silent", ...UNLIMITED },
    );
    const s = await startServer(config, { log: pino({ level: "silent" }) });
    servers.push(s);
    return s;
  };
  const busOf = (s: RunningServer) => s.services.bus as NatsBus;
  const login = async (s: RunningServer, user: string): Promise<Session> => {
    const res = await call<Session>(s.url, "POST", "/_matrix/client/v3/login", { body: { type: "m.login.password", identifier: { type: "m.id.user", user }, password: TEST_PASSWORD } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body;
  };
  const sync = async (s: RunningServer, token: string, params: Record<string, string> = {}) => {
    const res = await call<Json>(s.url, "GET", `/_matrix/client/v3/sync?${new URLSearchParams({ timeout: "0", set_presence: "offline", ...params })}`, { token, timeoutMs: LONG_POLL_MS + 10_000 });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body;
  };
  const send = async (s: RunningServer, who: Session, body: string) => {
    const res = await call<Json>(s.url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${enc(body)}`, { token: who.access_token, body: { msgtype: "m.text", body } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  };
  /** Long-polls on `on` as `who`, sends `body` through `via` once the poll waits; returns when it arrives. */
  const delivery = async (on: RunningServer, who: Session, via: RunningServer, sender: Session, body: string, timeoutMs = LONG_POLL_MS) => {
    let since = (await sync(on, who.access_token)).next_batch as string;
    const started = Date.now();
    let sent = false;
    for (;;) {
      const poll = sync(on, who.access_token, { since, timeout: String(timeoutMs) });
      if (!sent) {
        await sleep(150);
        await send(via, sender, body);
        sent = true;
      }
      const res = await poll;
      const bodies = ((res.rooms?.join?.[roomId]?.timeline?.events ?? []) as Json[]).map((e) => e.content?.body);
      if (bodies.includes(body)) return Date.now() - started;
      since = res.next_batch;
      if (Date.now() - started > timeoutMs * 2) throw new Error(`${body} never arrived`);
    }
  };

  before(async () => {
    natsPort = await freePort();
    await startNats();
    dataDir = faultsTempDir("nats");
    const scratch = await createScratchDatabase();
    databaseUrl = scratch.url;
    drop = scratch.drop;
    a = await start();
    b = await start();
    assert.ok(busOf(a).isConnected && busOf(b).isConnected);
    await a.services.accounts.create("anna", { password: TEST_PASSWORD, role: "user" });
    await a.services.accounts.create("bert", { password: TEST_PASSWORD, role: "user" });
    anna = await login(a, "anna");
    bert = await login(b, "bert");
    const r = await call<Json>(a.url, "POST", "/_matrix/client/v3/createRoom", { token: anna.access_token, body: { preset: "public_chat" } });
    roomId = r.body.room_id;
    assert.equal((await call(b.url, "POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: bert.access_token, body: {} })).status, 200);
  });

  after(async () => {
    // With NATS up the buses drain at once instead of waiting out their close deadline.
    if (!nats && natsPort) await startNats().catch(() => undefined);
    for (const s of servers) await s.stop().catch(() => undefined);
    await stopNats();
    removeDir(dataDir);
    await drop?.();
  });

  test("with NATS up, a message through A wakes a long-poll on B promptly", async () => {
    const ms = await delivery(b, bert, a, anna, "vor dem Ausfall");
    assert.ok(ms < PROMPT_MS, `took ${ms} ms`);
  });

  test("NATS down: each process serves its own clients promptly, the other's at the long-poll timeout", async () => {
    await stopNats();
    await until("both processes to notice NATS is gone", () => !busOf(a).isConnected && !busOf(b).isConnected);

    // Writes and wake-ups within one process do not need NATS. (bert's token works on A as well.)
    const onA = await delivery(a, anna, a, bert, "A ohne NATS");
    assert.ok(onA < PROMPT_MS, `A woke its own long-poll after ${onA} ms`);
    const onB = await delivery(b, bert, b, anna, "B ohne NATS");
    assert.ok(onB < PROMPT_MS, `B woke its own long-poll after ${onB} ms`);

    // Across processes nothing is lost: the long-poll on B finds A's message at its timeout.
    const crossTimeout = 2_000;
    const cross = await delivery(b, bert, a, anna, "quer ohne NATS", crossTimeout);
    assert.ok(cross < crossTimeout + PROMPT_MS, `arrived after ${cross} ms`);
    assert.ok(cross >= crossTimeout - 200, `no wake-up crossed without NATS (arrived after ${cross} ms, at the timeout)`);
  });

  test("NATS back: cross-process wake-ups resume without a restart", async () => {
    await startNats();
    const ms = await until("both processes to reconnect", () => busOf(a).isConnected && busOf(b).isConnected);
    assert.ok(ms < 10_000);
    const ab = await delivery(b, bert, a, anna, "nach dem Ausfall A→B");
    assert.ok(ab < PROMPT_MS, `A→B took ${ab} ms`);
    const ba = await delivery(a, anna, b, bert, "nach dem Ausfall B→A");
    assert.ok(ba < PROMPT_MS, `B→A took ${ba} ms`);
  });

  test("NATS down, a process that heard everything: its long-polls still find the other's messages at their timeout", async () => {
    // D starts while NATS is down and hears every batch of its own, so nothing it hears says that
    // A went on writing: only the committed position, read at the timeout, does.
    await stopNats();
    await until("NATS to be gone for A", () => !busOf(a).isConnected);
    const d = await start();
    const bertOnD = await login(d, "bert");
    const crossTimeout = 1_500;
    for (const body of ["A→D ohne NATS 1", "A→D ohne NATS 2"]) {
      const took = await delivery(d, bertOnD, a, anna, body, crossTimeout);
      assert.ok(took < crossTimeout + PROMPT_MS, `${body} arrived after ${took} ms`);
    }
    await d.stop();
    servers.splice(servers.indexOf(d), 1);
    await startNats();
    await until("A to connect again", () => busOf(a).isConnected);
  });

  test("a process started while NATS is down serves at once and joins when NATS returns", async () => {
    await stopNats();
    await until("NATS to be gone for A", () => !busOf(a).isConnected);
    const c = await start();
    assert.equal(busOf(c).isConnected, false);
    const carlOnC = await login(c, "bert");
    assert.ok((await sync(c, carlOnC.access_token)).rooms.join[roomId], "C serves its clients without NATS");
    await startNats();
    await until("A and C to connect", () => busOf(a).isConnected && busOf(c).isConnected);
    const ac = await delivery(c, carlOnC, a, anna, "A→C nach Start ohne NATS");
    assert.ok(ac < PROMPT_MS, `A→C took ${ac} ms`);
  });
});
