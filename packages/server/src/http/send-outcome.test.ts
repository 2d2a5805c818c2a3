import { test } from "node:test";
import assert from "node:assert/strict";
import Fastify from "fastify";
import { sendOutcome } from "./route.js";

/**
 * A handler that answers later (ANSWERED_LATER) sends through sendOutcome, outside Fastify's own
 * handling of handler results: a body, an error, a thrown non-Error and a body that cannot be
 * serialised must each end in an answer, never in an unhandled rejection.
 */
test("sendOutcome answers with the body or through the error handler", async () => {
  const rejections: unknown[] = [];
  const onRejection = (r: unknown) => rejections.push(r);
  process.on("unhandledRejection", onRejection);
  const app = Fastify();
  app.setErrorHandler((err, _req, reply) => {
    void reply.code(500).send({ error: (err as Error).message });
  });
  const later = (outcome: (reply: import("fastify").FastifyReply) => void) => (_req: unknown, reply: import("fastify").FastifyReply) => {
    setImmediate(() => outcome(reply));
  };
  app.get("/body", later((reply) => sendOutcome(reply, null, { ok: true })));
  app.get("/error", later((reply) => sendOutcome(reply, new Error("database gone"))));
  app.get("/thrown", later((reply) => sendOutcome(reply, "not an Error")));
  app.get("/unserialisable", later((reply) => sendOutcome(reply, null, { n: 1n })));
  try {
    const body = await app.inject({ url: "/body" });
    assert.equal(body.statusCode, 200);
    assert.deepEqual(body.json(), { ok: true });
    assert.match(String(body.headers["content-type"]), /^application\/json/);
    assert.deepEqual((await app.inject({ url: "/error" })).json(), { error: "database gone" });
    assert.deepEqual((await app.inject({ url: "/thrown" })).json(), { error: "not an Error" });
    const bad = await app.inject({ url: "/unserialisable" });
    assert.equal(bad.statusCode, 500);
    assert.match(bad.json().error, /BigInt/);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(rejections, []);
  } finally {
    process.off("unhandledRejection", onRejection);
    await app.close();
  }
});
