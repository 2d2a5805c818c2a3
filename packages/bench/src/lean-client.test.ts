import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { LeanConnection } from "./lean-client.js";

/** A real node:http server whose answers the tests choose per path. */
async function server(handler: http.RequestListener): Promise<{ port: number; close: () => Promise<void>; connections: () => number }> {
  let connections = 0;
  const s = http.createServer(handler);
  s.on("connection", () => connections++);
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  return {
    port: (s.address() as AddressInfo).port,
    connections: () => connections,
    close: () =>
      new Promise((resolve) => {
        s.closeAllConnections();
        s.close(() => resolve());
      }),
  };
}

test("answers with content-length, chunked bodies and empty bodies arrive whole over one kept-alive connection", async () => {
  const big = "x".repeat(200_000);
  const seen: string[] = [];
  const srv = await server((req, res) => {
    seen.push(`${req.url} ${req.headers.authorization}`);
    if (req.url === "/length") {
      res.setHeader("content-length", "5");
      res.end("hello");
    } else if (req.url === "/chunked") {
      res.write("{\"a\":");
      setTimeout(() => res.end(`"${big}"}`), 5);
    } else {
      res.statusCode = 204;
      res.end();
    }
  });
  const c = new LeanConnection("127.0.0.1", srv.port);
  try {
    const headers = "authorization: Bearer t0k\r\n";
    const a = await c.get("/length", headers);
    assert.equal(a.status, 200);
    assert.equal(a.body.toString(), "hello");
    const b = await c.get("/chunked", headers);
    assert.equal(b.status, 200);
    assert.equal((JSON.parse(b.body.toString()) as { a: string }).a.length, big.length);
    const e = await c.get("/empty", headers);
    assert.equal(e.status, 204);
    assert.equal(e.body.length, 0);
    assert.equal((await c.get("/length", headers)).body.toString(), "hello");
    assert.deepEqual(seen, ["/length Bearer t0k", "/chunked Bearer t0k", "/empty Bearer t0k", "/length Bearer t0k"]);
    assert.equal(srv.connections(), 1, "one connection carried all four requests");
  } finally {
    c.close();
    await srv.close();
  }
});

test("a server that closes after its answer gets a new connection for the next request", async () => {
  const srv = await server((_req, res) => {
    res.setHeader("connection", "close");
    res.end("bye");
  });
  const c = new LeanConnection("127.0.0.1", srv.port);
  try {
    assert.equal((await c.get("/", "")).body.toString(), "bye");
    assert.equal((await c.get("/", "")).body.toString(), "bye");
    assert.equal(srv.connections(), 2);
  } finally {
    c.close();
    await srv.close();
  }
});

test("a connection cut in the middle of a body, or closed by the caller, fails the request instead of leaving it waiting", async () => {
  const srv = await server((req, res) => {
    if (req.url === "/cut") {
      res.setHeader("content-length", "100");
      res.write("only part");
      setTimeout(() => res.socket?.destroy(), 10);
    }
    // "/hang" never answers.
  });
  const c = new LeanConnection("127.0.0.1", srv.port);
  try {
    await assert.rejects(c.get("/cut", ""), /closed before the response was complete/);
    const hanging = c.get("/hang", "");
    setTimeout(() => c.close(), 20);
    await assert.rejects(hanging, /closed/);
    await assert.rejects(c.get("/cut", ""), /closed by the caller/);
  } finally {
    await srv.close();
  }
});

test("nothing listening is an error, not a hang", async () => {
  const srv = await server(() => undefined);
  const port = srv.port;
  await srv.close();
  const c = new LeanConnection("127.0.0.1", port);
  await assert.rejects(c.get("/", ""), /ECONNREFUSED/);
});

test("an IPv6 loopback server is reached by its bare address", async (t) => {
  const s = http.createServer((req, res) => res.end(req.headers.host));
  try {
    await new Promise<void>((resolve, reject) => {
      s.once("error", reject);
      s.listen(0, "::1", resolve);
    });
  } catch {
    t.skip("this machine has no IPv6 loopback");
    return;
  }
  const port = (s.address() as AddressInfo).port;
  const c = new LeanConnection("::1", port);
  try {
    assert.equal((await c.get("/", "")).body.toString(), `[::1]:${port}`);
  } finally {
    c.close();
    s.close();
  }
});

test("a request with a JSON body arrives whole, its length counted in bytes, and the connection carries the next one", async () => {
  const seen: Array<{ method: string; url: string; type: string | undefined; length: string | undefined; body: string }> = [];
  const srv = await server((req, res) => {
    const parts: Buffer[] = [];
    req.on("data", (d: Buffer) => parts.push(d));
    req.on("end", () => {
      seen.push({ method: req.method!, url: req.url!, type: req.headers["content-type"], length: req.headers["content-length"], body: Buffer.concat(parts).toString("utf8") });
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ event_id: `$${seen.length}` }));
    });
  });
  const c = new LeanConnection("127.0.0.1", srv.port);
  try {
    // Multi-byte characters: a length counted in characters would cut the body short.
    const body = JSON.stringify({ msgtype: "m.text", body: "Vermisst: Jörg, 12 Jahre 🚨" });
    const a = await c.request("PUT", "/_matrix/client/v3/rooms/!r%3Ax/send/m.room.message/t1", "authorization: Bearer t0k\r\n", body);
    assert.equal(a.status, 200);
    assert.deepEqual(JSON.parse(a.body.toString()), { event_id: "$1" });
    const b = await c.request("POST", "/receipt", "", "{}");
    assert.equal(b.body.toString(), '{"event_id":"$2"}');
    assert.deepEqual(seen, [
      { method: "PUT", url: "/_matrix/client/v3/rooms/!r%3Ax/send/m.room.message/t1", type: "application/json", length: String(Buffer.byteLength(body)), body },
      { method: "POST", url: "/receipt", type: "application/json", length: "2", body: "{}" },
    ]);
    assert.equal(srv.connections(), 1, "both requests went over one connection");
  } finally {
    c.close();
    await srv.close();
  }
});
