import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { decodeBase64 } from "../lib/base64.js";
import {
  computeContentHash,
  computeReferenceHash,
  eventIdFor,
  finishNewEvent,
  hashAndSignEvent,
  redactEvent,
  signEvent,
  signJson,
  verifyContentHash,
  verifyEventSignature,
  verifyJsonSignature,
  type Pdu,
} from "./event-crypto.js";
import { ROOM_VERSIONS, type RoomVersion } from "./room-versions.js";
import { generateSigningKey, signingKeyFromSeed } from "./signing-key.js";
import { canonicalJsonMember } from "../lib/canonical-json.js";

const V10 = ROOM_VERSIONS["10"] as RoomVersion;
const V11 = ROOM_VERSIONS["11"] as RoomVersion;

// Spec appendix "Cryptographic Test Vectors".
const SPEC_KEY = signingKeyFromSeed(decodeBase64("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"), "1");
const SERVER = "domain";

test("the spec test key derives the published public key", () => {
  assert.equal(SPEC_KEY.keyId, "ed25519:1");
  assert.equal(SPEC_KEY.publicKeyBase64, "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI");
});

test("signJson reproduces the spec's JSON signing vectors", () => {
  assert.deepEqual(signJson({}, SERVER, SPEC_KEY), {
    signatures: { domain: { "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ" } },
  });
  assert.deepEqual(signJson({ one: 1, two: "Two" }, SERVER, SPEC_KEY), {
    one: 1,
    signatures: { domain: { "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw" } },
    two: "Two",
  });
});

test("signJson ignores unsigned and existing signatures, and keeps other servers' signatures", () => {
  const signed = signJson({ one: 1, two: "Two", unsigned: { age_ts: 5 }, signatures: { other: { "ed25519:x": "abc" } } }, SERVER, SPEC_KEY);
  assert.equal(signed.signatures.domain?.["ed25519:1"], "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw");
  assert.deepEqual(signed.signatures.other, { "ed25519:x": "abc" });
  assert.deepEqual(signed.unsigned, { age_ts: 5 });
});

test("verifyJsonSignature accepts valid signatures and refuses tampering or wrong keys", () => {
  const signed = signJson({ one: 1, two: "Two" }, SERVER, SPEC_KEY);
  assert.equal(verifyJsonSignature(signed, SERVER, "ed25519:1", SPEC_KEY.publicKeyBase64), true);
  assert.equal(verifyJsonSignature({ ...signed, unsigned: { anything: true } }, SERVER, "ed25519:1", SPEC_KEY.publicKeyBase64), true, "unsigned is not covered");
  assert.equal(verifyJsonSignature({ ...signed, two: "Three" }, SERVER, "ed25519:1", SPEC_KEY.publicKeyBase64), false);
  assert.equal(verifyJsonSignature(signed, SERVER, "ed25519:1", generateSigningKey().publicKeyBase64), false);
  assert.equal(verifyJsonSignature(signed, "elsewhere", "ed25519:1", SPEC_KEY.publicKeyBase64), false);
  assert.equal(verifyJsonSignature(signed, SERVER, "ed25519:2", SPEC_KEY.publicKeyBase64), false);
  assert.equal(verifyJsonSignature(signed, SERVER, "ed25519:1", "not base64!"), false);
  assert.equal(verifyJsonSignature({ one: 1, signatures: { domain: { "ed25519:1": "AAAA" } } }, SERVER, "ed25519:1", SPEC_KEY.publicKeyBase64), false);
  assert.equal(verifyJsonSignature({ one: 1.5, signatures: signed.signatures }, SERVER, "ed25519:1", SPEC_KEY.publicKeyBase64), false);
});

test("event signing reproduces the spec's minimal event vector", () => {
  const event = {
    room_id: "!x:domain",
    sender: "@a:domain",
    origin: "domain",
    origin_server_ts: 1000000,
    signatures: {},
    hashes: {},
    type: "X",
    content: {},
    prev_events: [],
    auth_events: [],
    depth: 3,
    unsigned: { age_ts: 1000000 },
  };
  assert.equal(computeContentHash(event), "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos");
  const signed = hashAndSignEvent(event, SERVER, SPEC_KEY, V10);
  assert.deepEqual(signed, {
    auth_events: [],
    content: {},
    depth: 3,
    hashes: { sha256: "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos" },
    origin: "domain",
    origin_server_ts: 1000000,
    prev_events: [],
    room_id: "!x:domain",
    sender: "@a:domain",
    signatures: { domain: { "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg" } },
    type: "X",
    unsigned: { age_ts: 1000000 },
  });
  assert.deepEqual(event.signatures, {}, "the input is not modified");
  assert.equal(verifyEventSignature(signed, SERVER, "ed25519:1", SPEC_KEY.publicKeyBase64, V10), true);
  assert.equal(verifyContentHash(signed), true);
});

test("event signing reproduces the spec's redactable event vector", () => {
  const event = {
    content: { body: "Here is the message content" },
    event_id: "$0:domain",
    origin: "domain",
    origin_server_ts: 1000000,
    type: "m.room.message",
    room_id: "!r:domain",
    sender: "@u:domain",
    signatures: {},
    unsigned: { age_ts: 1000000 },
  };
  const signed = hashAndSignEvent(event, SERVER, SPEC_KEY, V10);
  assert.deepEqual(signed.hashes, { sha256: "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g" });
  assert.deepEqual(signed.signatures, { domain: { "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA" } });
  assert.deepEqual(signed.content, { body: "Here is the message content" });
  assert.deepEqual(signed.unsigned, { age_ts: 1000000 });

  // The signature covers only the redacted form: it survives redaction and content edits, while
  // the content hash catches the edit.
  const edited = { ...signed, content: { body: "forged" } };
  assert.equal(verifyEventSignature(edited, SERVER, "ed25519:1", SPEC_KEY.publicKeyBase64, V10), true);
  assert.equal(verifyContentHash(edited), false);
  assert.equal(verifyEventSignature(redactEvent(signed, V10), SERVER, "ed25519:1", SPEC_KEY.publicKeyBase64, V10), true);
  assert.equal(verifyEventSignature({ ...signed, sender: "@v:domain" }, SERVER, "ed25519:1", SPEC_KEY.publicKeyBase64, V10), false);
});

// A real room v5 create event (event id format v4, v9-style redaction like room v10), as
// published in gomatrixserverlib's event id tests.
const REAL_CREATE_EVENT = JSON.parse(
  `{"auth_events": [], "prev_events": [], "type": "m.room.create", "room_id": "!uXDCzlYgCTHtiWCkEx:jki.re", "sender": "@erikj:jki.re", "content": {"room_version": "5", "predecessor": {"room_id": "!gdRMqOrTFdOCYHNwOo:half-shot.uk", "event_id": "$LP7ROBc4b+cMc1UE9haIz8q5AK2AIW4eJ90FfKLvyZI"}, "creator": "@erikj:jki.re"}, "depth": 1, "prev_state": [], "state_key": "", "origin": "jki.re", "origin_server_ts": 1560284621137, "hashes": {"sha256": "IX6zuNiJpJPNf70BLleL3HSCpjKeq9Uhu7uUpyDjBmc"}, "signatures": {"jki.re": {"ed25519:auto": "O4IyFfF2PPtGp5uaDm8t57dZbdh8vc8Q64LgCwvzYRVItAMI0uisfiAFaxkVT7MRpzh6N2QNN5NMRXZKmgPYDA"}}, "unsigned": {"age": 1321650}}`,
) as Record<string, unknown>;

test("content hash and event id of a real federated event", () => {
  assert.equal(computeContentHash(REAL_CREATE_EVENT), "IX6zuNiJpJPNf70BLleL3HSCpjKeq9Uhu7uUpyDjBmc");
  assert.equal(verifyContentHash(REAL_CREATE_EVENT), true);
  assert.equal(eventIdFor(REAL_CREATE_EVENT, V10), "$RrGxF28UrHLmoASHndYb9Jb_1SFww2ptmtur9INS438");
});

test("v11 event ids hash the v11-redacted event", () => {
  // Written out by hand from the v11 redaction rules: origin and prev_state go, the whole create
  // content stays, signatures and unsigned are removed.
  const canonical =
    '{"auth_events":[],"content":{"creator":"@erikj:jki.re","predecessor":{"event_id":"$LP7ROBc4b+cMc1UE9haIz8q5AK2AIW4eJ90FfKLvyZI","room_id":"!gdRMqOrTFdOCYHNwOo:half-shot.uk"},"room_version":"5"},"depth":1,"hashes":{"sha256":"IX6zuNiJpJPNf70BLleL3HSCpjKeq9Uhu7uUpyDjBmc"},"origin_server_ts":1560284621137,"prev_events":[],"room_id":"!uXDCzlYgCTHtiWCkEx:jki.re","sender":"@erikj:jki.re","state_key":"","type":"m.room.create"}';
  const digest = createHash("sha256").update(canonical).digest();
  assert.deepEqual(computeReferenceHash(REAL_CREATE_EVENT, V11), digest);
  assert.equal(eventIdFor(REAL_CREATE_EVENT, V11), `$${digest.toString("base64url")}`);
  assert.notEqual(eventIdFor(REAL_CREATE_EVENT, V11), eventIdFor(REAL_CREATE_EVENT, V10));
});

test("event ids ignore signatures, unsigned and non-essential content but not essential keys", () => {
  const id = eventIdFor(REAL_CREATE_EVENT, V10);
  assert.equal(eventIdFor({ ...REAL_CREATE_EVENT, signatures: {}, unsigned: { x: 1 }, age_ts: 5 }, V10), id);
  assert.equal(eventIdFor({ ...REAL_CREATE_EVENT, content: { creator: "@erikj:jki.re" } }, V10), id, "only creator survives v10 redaction of m.room.create");
  assert.notEqual(eventIdFor({ ...REAL_CREATE_EVENT, depth: 2 }, V10), id);
  assert.match(id, /^\$[A-Za-z0-9_-]{43}$/);
});

const BASE = {
  event_id: "$e",
  room_id: "!r:x",
  sender: "@a:x",
  origin_server_ts: 1,
  depth: 4,
  prev_events: ["$p"],
  auth_events: ["$c"],
  hashes: { sha256: "h" },
  signatures: { x: { "ed25519:k": "s" } },
  unsigned: { age: 1 },
  origin: "x",
  membership: "join",
  prev_state: [],
  extra_top_level: true,
};

test("redaction keeps the right top-level keys per version", () => {
  const ev = { ...BASE, type: "m.room.message", content: { body: "secret" } };
  const common = { event_id: "$e", type: "m.room.message", room_id: "!r:x", sender: "@a:x", content: {}, hashes: { sha256: "h" }, signatures: { x: { "ed25519:k": "s" } }, depth: 4, prev_events: ["$p"], auth_events: ["$c"], origin_server_ts: 1 };
  assert.deepEqual(redactEvent(ev, V10), { ...common, origin: "x", membership: "join", prev_state: [] });
  assert.deepEqual(redactEvent(ev, V11), common);
  assert.deepEqual(ev.content, { body: "secret" }, "input untouched");
  const r = redactEvent({ ...ev, state_key: "" }, V11);
  assert.equal(r.state_key, "");
});

test("redaction keeps per-type content keys: v10", () => {
  const cases: Array<[string, Record<string, unknown>, Record<string, unknown>]> = [
    ["m.room.member", { membership: "join", displayname: "A", join_authorised_via_users_server: "@b:x", third_party_invite: { signed: { token: "t" }, display_name: "d" } }, { membership: "join", join_authorised_via_users_server: "@b:x" }],
    ["m.room.create", { creator: "@a:x", room_version: "10", "m.federate": false }, { creator: "@a:x" }],
    ["m.room.join_rules", { join_rule: "restricted", allow: [{ type: "m.room_membership", room_id: "!s:x" }], other: 1 }, { join_rule: "restricted", allow: [{ type: "m.room_membership", room_id: "!s:x" }] }],
    [
      "m.room.power_levels",
      { ban: 50, events: { "m.room.name": 50 }, events_default: 0, invite: 0, kick: 50, redact: 50, state_default: 50, users: { "@a:x": 100 }, users_default: 0, notifications: { room: 50 } },
      { ban: 50, events: { "m.room.name": 50 }, events_default: 0, kick: 50, redact: 50, state_default: 50, users: { "@a:x": 100 }, users_default: 0 },
    ],
    ["m.room.history_visibility", { history_visibility: "shared", x: 1 }, { history_visibility: "shared" }],
    ["m.room.redaction", { redacts: "$t", reason: "spam" }, {}],
    ["m.room.topic", { topic: "t" }, {}],
  ];
  for (const [type, content, kept] of cases) assert.deepEqual(redactEvent({ ...BASE, type, state_key: "", content }, V10).content, kept, type);
});

test("redaction keeps per-type content keys: v11", () => {
  const cases: Array<[string, Record<string, unknown>, Record<string, unknown>]> = [
    ["m.room.member", { membership: "invite", displayname: "A", join_authorised_via_users_server: "@b:x", third_party_invite: { signed: { token: "t", mxid: "@a:x" }, display_name: "d" } }, { membership: "invite", join_authorised_via_users_server: "@b:x", third_party_invite: { signed: { token: "t", mxid: "@a:x" } } }],
    ["m.room.member", { membership: "invite", third_party_invite: { display_name: "d" } }, { membership: "invite", third_party_invite: {} }],
    ["m.room.create", { room_version: "11", "m.federate": false, predecessor: { room_id: "!o:x" } }, { room_version: "11", "m.federate": false, predecessor: { room_id: "!o:x" } }],
    ["m.room.join_rules", { join_rule: "knock_restricted", allow: [], other: 1 }, { join_rule: "knock_restricted", allow: [] }],
    [
      "m.room.power_levels",
      { ban: 50, events: {}, events_default: 0, invite: 0, kick: 50, redact: 50, state_default: 50, users: {}, users_default: 0, notifications: { room: 50 } },
      { ban: 50, events: {}, events_default: 0, invite: 0, kick: 50, redact: 50, state_default: 50, users: {}, users_default: 0 },
    ],
    ["m.room.history_visibility", { history_visibility: "joined", x: 1 }, { history_visibility: "joined" }],
    ["m.room.redaction", { redacts: "$t", reason: "spam" }, { redacts: "$t" }],
    ["m.room.message", { body: "b", msgtype: "m.text" }, {}],
  ];
  for (const [type, content, kept] of cases) assert.deepEqual(redactEvent({ ...BASE, type, state_key: "", content }, V11).content, kept, type);
});

test("top-level redacts is dropped by redaction in both versions", () => {
  const ev = { ...BASE, type: "m.room.redaction", redacts: "$t", content: { redacts: "$t" } };
  assert.equal("redacts" in redactEvent(ev, V10), false);
  assert.equal("redacts" in redactEvent(ev, V11), false);
  assert.deepEqual(redactEvent(ev, V11).content, { redacts: "$t" });
});

test("redactEvent returns a deep copy", () => {
  const ev = { ...BASE, type: "m.room.power_levels", state_key: "", content: { users: { "@a:x": 100 } } };
  const r = redactEvent(ev, V10);
  (r.content as { users: Record<string, number> }).users["@a:x"] = 0;
  assert.equal(ev.content.users["@a:x"], 100);
});

test("signEvent adds a signature next to existing ones without mutating the event", () => {
  const key = generateSigningKey();
  const pdu: Pdu = {
    room_id: "!r:here",
    sender: "@a:here",
    type: "m.room.message",
    content: { body: "hi" },
    origin_server_ts: 1700000000000,
    prev_events: ["$p"],
    auth_events: ["$c"],
    depth: 5,
    hashes: { sha256: "" },
    signatures: { elsewhere: { "ed25519:z": "sig" } },
  };
  pdu.hashes = { sha256: computeContentHash(pdu) };
  for (const rv of [V10, V11]) {
    const signed = signEvent(pdu, "here", key, rv);
    assert.deepEqual(Object.keys(signed.signatures).sort(), ["elsewhere", "here"]);
    assert.deepEqual(pdu.signatures, { elsewhere: { "ed25519:z": "sig" } });
    assert.equal(verifyEventSignature(signed, "here", key.keyId, key.publicKeyBase64, rv), true);
    // The event id does not depend on signatures, so signing does not change it.
    assert.equal(eventIdFor(signed, rv), eventIdFor(pdu, rv));
  }
  // A v10 signature does not verify under v11 rules when v10-only keys (origin) are present.
  const withOrigin = { ...pdu, origin: "here" };
  const signed10 = signEvent(withOrigin, "here", key, V10);
  assert.equal(verifyEventSignature(signed10, "here", key.keyId, key.publicKeyBase64, V11), false);
});

test("finishNewEvent gives the same event and id as hashing, signing and naming step by step", () => {
  const base = { room_id: "!r:here", sender: "@a:here", origin_server_ts: 1700000000000, prev_events: ["$p"], auth_events: ["$c", "$d"], depth: 5, hashes: { sha256: "" }, signatures: {} };
  const events: Pdu[] = [
    { ...base, type: "m.room.message", content: { msgtype: "m.text", body: "hi \u00e9 \"quoted\" 😀", "m.relates_to": { rel_type: "m.thread", event_id: "$t" } } },
    { ...base, type: "m.room.member", state_key: "@b:here", content: { membership: "join", displayname: "B", join_authorised_via_users_server: "@a:here" } },
    { ...base, type: "m.room.create", state_key: "", content: { room_version: "11", "m.federate": false } },
    { ...base, type: "m.room.power_levels", state_key: "", content: { users: { "@a:here": 100 }, invite: 0, notifications: { room: 50 } } },
    { ...base, type: "m.room.redaction", content: { redacts: "$x", reason: "spam" }, redacts: "$x" },
  ];
  for (const rv of [V10, V11]) {
    for (const pdu of events) {
      const stepwise = { ...pdu, hashes: { sha256: computeContentHash(pdu) } };
      const signed = signEvent(stepwise, SERVER, SPEC_KEY, rv);
      for (const contentJson of [undefined, canonicalJsonMember("content", pdu.content)]) {
        const done = finishNewEvent(pdu, SERVER, SPEC_KEY, rv, contentJson);
        assert.equal(JSON.stringify(done.event), JSON.stringify(signed), `${pdu.type} v${rv === V10 ? 10 : 11}`);
        assert.equal(done.eventId, eventIdFor(signed, rv));
      }
    }
  }
  assert.deepEqual(events[0]!.signatures, {}, "the input is not modified");
});
