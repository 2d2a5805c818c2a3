/**
 * Push rules with pathological globs in a large room finish in bounded time: the class of Synapse
 * CVE-2021-29471, where push-rule globs became backtracking regexes and a rule like `*a*a*a*a*b`
 * against a long message burned CPU per event and recipient. Also the variant found here: each
 * glob is linear, but one user may store thousands of maximal rules, which made every long
 * message in their rooms cost minutes of CPU inside the event's write transaction.
 */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { api, enc } from "./support/http.js";
import { emptyPushRules, putRule, type UserPushRules } from "../src/push/ruleset.js";
import { compileGlob } from "../src/push/glob.js";
import { createRoom } from "./security-helpers.js";

const MEMBERS = 100;
const EVIL = [
  "*a*a*a*a*a*a*a*a*a*a*b",
  "*a?*a?*a?*a?*a?*a?*b",
  `${"*a".repeat(60)}*b`,
  `${"?".repeat(40)}*a*a*a*a*a*c`,
];

/** The same pattern as a backtracking regex, the way vulnerable servers matched globs. */
function backtrackingRegex(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${body}$`);
}

describeEachDatabase("push rules with pathological globs in a large room", ({ server }) => {
  let sender = "";
  let roomId = "";
  const memberIds: string[] = [];

  /** Who the stored event notifies, with the shared outcome expanded to the members it concerns. */
  const notifiedBy = async (eventId: string) => {
    const s = server().services;
    const { stream_ordering } = await s.storage.db.selectFrom("events").select("stream_ordering").where("event_id", "=", eventId).executeTakeFirstOrThrow();
    return s.push.notifiedAt(Number(stream_ordering));
  };

  before(async () => {
    const s = server().services;
    await server().createUser("sender");
    sender = (await server().login("sender")).access_token;
    roomId = await createRoom(server(), sender, { preset: "public_chat", name: "Großraum" });
    for (let i = 0; i < MEMBERS; i++) {
      // No password: hashing 150 of them would only slow the set-up down.
      const u = await s.accounts.create(`m${i}`, { password: null, displayname: `Mitglied a${"a".repeat(i % 7)}` });
      memberIds.push(u.user_id);
      await s.rooms.setMembership(roomId, u.user_id, u.user_id, "join");
      await s.push.update(u.user_id, (stored) => {
        let next = stored;
        EVIL.forEach((pattern, j) => {
          next = putRule(next, "content", `evil${j}`, { pattern, actions: ["notify", { set_tweak: "highlight" }] });
        });
        next = putRule(next, "override", "evil-override", {
          conditions: [
            { kind: "event_match", key: "content.body", pattern: EVIL[0] },
            { kind: "event_match", key: "content.msgtype", pattern: "*m*.*t*e*x*t*" },
          ],
          actions: ["notify", { set_tweak: "highlight" }],
        });
        return putRule(next, "underride", "evil-sender", { conditions: [{ kind: "event_match", key: "sender", pattern: "*@*s*e*n*d*e*r*:*" }], actions: ["notify"] });
      });
    }
  });

  test("the globs are linear: milliseconds on 65,536 characters, less than a backtracking regex needs for 110", () => {
    // The input really is pathological: the way vulnerable servers matched globs (a backtracking
    // regex) already takes a noticeable time on 110 characters and grows polynomially with every
    // star (exponentially with nesting); the linear matcher on 600 times the length must be faster.
    const t0 = performance.now();
    backtrackingRegex("*a*a*a*a*b").test("a".repeat(110));
    const regexMs = performance.now() - t0;
    const value = "a".repeat(65_536);
    let slowest = 0;
    for (const pattern of [...EVIL, `${"*a".repeat(500)}*b`]) {
      const g = compileGlob(pattern);
      const start = performance.now();
      assert.equal(g.matches(value, "word"), false);
      assert.equal(g.matches(value, "whole"), false);
      const ms = performance.now() - start;
      slowest = Math.max(slowest, ms);
      assert.ok(ms < 2_000, `${pattern.slice(0, 30)}…: ${ms.toFixed(0)} ms`);
    }
    const g = compileGlob("*a*a*a*a*b");
    const start = performance.now();
    g.matches(value, "whole");
    const linearMs = performance.now() - start;
    assert.ok(linearMs < regexMs, `linear matcher on 65,536 characters: ${linearMs.toFixed(1)} ms; backtracking regex on 110: ${regexMs.toFixed(1)} ms`);
    // And they still match what they should.
    assert.equal(compileGlob(EVIL[0]!).matches(`${"a".repeat(5000)}b`, "whole"), true);
    assert.equal(compileGlob("*a*b").matches(`x ${"a".repeat(5000)}b y`, "word"), true);
  });

  test(`a 60,000-character message in a room of ${MEMBERS} members with pathological rules is stored within seconds`, async () => {
    const bodies = [`${"a".repeat(59_990)} aaaa`, `${"a".repeat(30_000)}${"ab".repeat(14_990)}`, "a ".repeat(29_995)];
    for (const [i, body] of bodies.entries()) {
      const start = performance.now();
      const res = await api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/evil${i}`, { token: sender, body: { msgtype: "m.text", body } });
      const ms = performance.now() - start;
      assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 200));
      // Generous for a loaded 2-core CI machine; exponential matching would not finish at all.
      assert.ok(ms < 20_000, `message ${i} took ${ms.toFixed(0)} ms for ${MEMBERS} members`);
      if (process.env.REVIER_TEST_VERBOSE) console.log(`message ${i}: ${ms.toFixed(0)} ms`);
    }
    // The rules really ran: a body that matches `*a*…*b` notifies every member with a highlight.
    const match = await api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/match`, { token: sender, body: { msgtype: "m.text", body: `${"a".repeat(20_000)}b` } });
    assert.equal(match.status, 200);
    const rows = await notifiedBy(match.body.event_id as string);
    assert.equal(rows.length, MEMBERS, "every member got a notification");
    assert.ok(rows.every((r) => Number(r.highlight) === 1), "and the highlight of the content rule");
    // The server is responsive afterwards.
    assert.equal((await api(server().url, "GET", "/health")).status, 200);
  });

  // Each glob is linear, but the number of rules a user may store is not small: 1,000 content rules
  // and 1,000 override rules of up to 32 conditions, each pattern up to 1,000 characters. Stored
  // by one insider, that is minutes of CPU per long message in every room they are in.
  test("a member who stores a thousand maximal rules cannot stall the room; other members' own rules still work", async () => {
    const s = server().services;
    const attacker = await s.accounts.create("flooder", { password: null });
    await s.rooms.setMembership(roomId, attacker.user_id, attacker.user_id, "join");
    const long = (i: number) => `${"*a".repeat(490)}*b${i}`;
    const flood: UserPushRules = emptyPushRules();
    flood.custom.content = Array.from({ length: 1000 }, (_, i) => ({ rule_id: `c${i}`, enabled: true, actions: ["notify"], pattern: long(i) }));
    flood.custom.override = Array.from({ length: 100 }, (_, i) => ({
      rule_id: `o${i}`,
      enabled: true,
      actions: ["notify"],
      conditions: Array.from({ length: 32 }, (_, j) => ({ kind: "event_match", key: "content.body", pattern: long(i * 32 + j) })),
    }));
    await s.push.update(attacker.user_id, () => flood);
    // An ordinary member with an ordinary keyword rule.
    await s.push.update(memberIds[0]!, (stored) => putRule(stored, "content", "keyword", { pattern: "einsatz", actions: ["notify", { set_tweak: "highlight" }] }));

    for (const [i, body] of [`${"a".repeat(59_990)} einsatz`, `Einsatz ${"a ".repeat(29_990)}`].entries()) {
      const start = performance.now();
      const res = await api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/flood${i}`, { token: sender, body: { msgtype: "m.text", body } });
      const ms = performance.now() - start;
      assert.equal(res.status, 200);
      assert.ok(ms < 20_000, `message ${i} took ${ms.toFixed(0)} ms with one flooding member (unbounded: minutes)`);
      const rows = await notifiedBy(res.body.event_id as string);
      const member = rows.find((r) => r.user_id === memberIds[0]);
      assert.ok(member, "the ordinary member is notified");
    }
  });

  test("pathological patterns set over HTTP are accepted or refused, never hang; over-long ones are bounded", async () => {
    const { access_token: token } = await server().login("sender");
    for (const pattern of [...EVIL, `${"*a".repeat(499)}*b`, `${"*a".repeat(5000)}*b`]) {
      const start = performance.now();
      const res = await api(server().url, "PUT", `/_matrix/client/v3/pushrules/global/content/evil-${pattern.length}`, { token, body: { pattern, actions: ["notify"] } });
      assert.ok(res.status === 200 || res.status === 400, `${pattern.length}: ${res.status}`);
      assert.ok(performance.now() - start < 5_000);
    }
    const start = performance.now();
    const res = await api(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/evil-http`, { token, body: { msgtype: "m.text", body: "a".repeat(60_000) } });
    assert.equal(res.status, 200);
    assert.ok(performance.now() - start < 20_000);
  });
});
