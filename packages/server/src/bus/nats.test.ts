import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import { randomBytes } from "node:crypto";
import pino from "pino";
import { NatsBus, parseWakeUp } from "./nats.js";
import type { WakeUp } from "./bus.js";

const NATS_URL = process.env.REVIER_TEST_BUS_URL ?? "nats://127.0.0.1:4222";
const NATS_SERVER = "/usr/sbin/nats-server";
const log = pino({ level: "silent" });

function reachable(url: string): Promise<boolean> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = net.connect({ host: u.hostname, port: Number(u.port || 4222) });
    s.setTimeout(1000);
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => resolve(false));
    s.once("timeout", () => (s.destroy(), resolve(false)));
  });
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
    srv.once("error", reject);
  });

const natsUp = await reachable(NATS_URL);
const wake = (position: number): WakeUp => ({ position, rooms: ["!r:x"], users: ["@u:x"] });

describe("parseWakeUp", () => {
  const bytes = (v: unknown) => new TextEncoder().encode(typeof v === "string" ? v : JSON.stringify(v));
  test("accepts the wire form", () => {
    assert.deepEqual(parseWakeUp(bytes({ p: 7, r: ["!a:x"], u: [] })), { position: 7, rooms: ["!a:x"], users: [] });
    assert.deepEqual(parseWakeUp(bytes({ p: 7, f: 5, r: [], u: ["@u:x"], o: 1 })), { position: 7, from: 5, rooms: [], users: ["@u:x"], presenceOnly: true });
    assert.deepEqual(parseWakeUp(bytes({ p: 7, f: 6, r: [], u: [], k: ["@u:x"] })), { position: 7, from: 6, rooms: [], users: [], keys: ["@u:x"] });
    assert.deepEqual(parseWakeUp(bytes({ p: 7, f: 6, r: [], u: [], k: [] })), { position: 7, from: 6, rooms: [], users: [] });
    assert.deepEqual(parseWakeUp(bytes({ p: 7, f: 6, r: [], u: ["@u:x"], e: ["!big:x"] })), { position: 7, from: 6, rooms: [], users: ["@u:x"], ephemeralRooms: ["!big:x"] });
    assert.equal(parseWakeUp(bytes({ p: 7, f: 7, r: [], u: [] })), null, "a range must not be empty");
    assert.equal(parseWakeUp(bytes({ p: 7, f: "5", r: [], u: [] })), null);
  });
  test("refuses anything else", () => {
    for (const bad of ["not json", "null", "[]", { p: "7", r: [], u: [] }, { p: -1, r: [], u: [] }, { p: 1.5, r: [], u: [] }, { p: 1, r: [3], u: [] }, { p: 1, r: [] }, { p: 1, r: [], u: [], k: "@u:x" }, { p: 1, r: [], u: [], k: [1] }, { p: 1, r: [], u: [], e: "!big:x" }, { p: 1, r: [], u: [], e: [1] }]) assert.equal(parseWakeUp(bytes(bad)), null, JSON.stringify(bad));
  });
});

describe("NatsBus without a reachable NATS", () => {
  test("local subscribers still get wake-ups, publish never throws, close is quick", async () => {
    const port = await freePort();
    const bus = new NatsBus(`nats://127.0.0.1:${port}`, log, { retryMs: 100 });
    assert.equal(await bus.waitConnected(300), false);
    const got: WakeUp[] = [];
    bus.subscribe((w) => got.push(w));
    bus.publish(wake(1));
    assert.deepEqual(got, [wake(1)]);
    const started = Date.now();
    await bus.close();
    assert.ok(Date.now() - started < 1000);
  });
});

describe("NatsBus over NATS", { skip: natsUp ? false : `NATS not reachable at ${NATS_URL} — NATS bus tests skipped (start nats-server or set REVIER_TEST_BUS_URL)` }, () => {
  test("a publication reaches the other process once and the own process once, without echo", async () => {
    const subject = `revier.test.${randomBytes(4).toString("hex")}`;
    const a = new NatsBus(NATS_URL, log, { subject });
    const b = new NatsBus(NATS_URL, log, { subject });
    try {
      assert.ok(await a.waitConnected(3000));
      assert.ok(await b.waitConnected(3000));
      const onA: WakeUp[] = [];
      const onB: WakeUp[] = [];
      a.subscribe((w) => onA.push(w));
      b.subscribe((w) => onB.push(w));
      a.publish(wake(1));
      b.publish(wake(2));
      await until(() => onA.length >= 2 && onB.length >= 2);
      await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(onA.map((w) => w.position).sort(), [1, 2]);
      assert.deepEqual(onB.map((w) => w.position).sort(), [1, 2]);
      assert.deepEqual(onB.find((w) => w.position === 1), wake(1));
    } finally {
      await a.close();
      await b.close();
    }
  });

  test("an unsubscribed function is not called", async () => {
    const bus = new NatsBus(NATS_URL, log, { subject: `revier.test.${randomBytes(4).toString("hex")}` });
    try {
      let calls = 0;
      const off = bus.subscribe(() => calls++);
      off();
      bus.publish(wake(1));
      assert.equal(calls, 0);
    } finally {
      await bus.close();
    }
  });
});

describe("NatsBus across a NATS restart", { skip: existsSync(NATS_SERVER) ? false : `${NATS_SERVER} not installed — reconnect test skipped` }, () => {
  test("it reconnects by itself and carries wake-ups again", async () => {
    const port = await freePort();
    const url = `nats://127.0.0.1:${port}`;
    const startNats = async (): Promise<ChildProcess> => {
      const child = spawn(NATS_SERVER, ["-a", "127.0.0.1", "-p", String(port)], { stdio: "ignore" });
      await until(() => child.exitCode === null, 1000);
      return child;
    };
    const stopNats = (child: ChildProcess) => new Promise<void>((resolve) => (child.exitCode !== null ? resolve() : (child.once("exit", () => resolve()), child.kill("SIGKILL"))));
    let server = await startNats();
    const a = new NatsBus(url, log, { retryMs: 100 });
    const b = new NatsBus(url, log, { retryMs: 100 });
    try {
      assert.ok(await a.waitConnected(5000));
      assert.ok(await b.waitConnected(5000));
      const onB: number[] = [];
      b.subscribe((w) => onB.push(w.position));
      a.publish(wake(1));
      await until(() => onB.includes(1));

      await stopNats(server);
      await until(() => !a.isConnected && !b.isConnected);
      const onA: number[] = [];
      a.subscribe((w) => onA.push(w.position));
      a.publish(wake(2)); // must neither throw nor block, and still reaches local subscribers
      assert.deepEqual(onA, [2]);

      server = await startNats();
      await until(() => a.isConnected && b.isConnected, 10_000);
      // The subscription is re-established by the client; keep publishing until one gets through.
      await until(() => {
        a.publish(wake(3));
        return onB.includes(3);
      }, 5000);
    } finally {
      await a.close();
      await b.close();
      await stopNats(server);
    }
  });
});
