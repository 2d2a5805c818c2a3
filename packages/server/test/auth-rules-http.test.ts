import { before, test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { api, enc } from "./support/http.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

describeEachDatabase("authorization rules through the API, per room version", ({ server }) => {
  let owner: { access_token: string; user_id: string };
  let member: { access_token: string; user_id: string };
  let outsider: { access_token: string; user_id: string };

  before(async () => {
    for (const u of ["owner", "member", "outsider"]) await server().createUser(u);
    owner = await server().login("owner");
    member = await server().login("member");
    outsider = await server().login("outsider");
  });

  for (const version of ["10", "11"]) {
    test(`room version ${version}`, async () => {
      const created = await api<Json>(server().url, "POST", "/_matrix/client/v3/createRoom", { token: owner.access_token, body: { room_version: version, preset: "public_chat" } });
      assert.equal(created.status, 200);
      const roomId = created.body.room_id as string;
      const create = await api<Json>(server().url, "GET", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.create?format=event`, { token: owner.access_token });
      assert.equal(create.body.content.room_version, version);
      if (version === "11") assert.equal(create.body.content.creator, undefined);
      else assert.equal(create.body.content.creator, owner.user_id);

      // A non-member cannot send.
      const notJoined = await api<Json>(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/x${version}`, { token: member.access_token, body: { msgtype: "m.text", body: "hi" } });
      assert.equal(notJoined.status, 403);
      await api(server().url, "POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: member.access_token, body: {} });

      // Power-level escalation by an unprivileged member is refused.
      const pl = (await api<Json>(server().url, "GET", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.power_levels`, { token: member.access_token })).body;
      const escalate = await api<Json>(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.power_levels`, { token: member.access_token, body: { ...pl, users: { ...pl.users, [member.user_id]: 100 } } });
      assert.equal(escalate.status, 403);
      assert.equal(escalate.body.errcode, "M_FORBIDDEN");
      // State changes by the unprivileged are refused.
      const topic = await api<Json>(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.name`, { token: member.access_token, body: { name: "gekapert" } });
      assert.equal(topic.status, 403);
      // State keys that look like user ids belong to that user.
      const foreignKey = await api<Json>(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/org.example.status/${enc(owner.user_id)}`, { token: owner.access_token, body: { x: 1 } });
      assert.equal(foreignKey.status, 200);
      const spoof = await api<Json>(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/org.example.status/${enc(owner.user_id)}`, { token: member.access_token, body: { x: 2 } });
      assert.equal(spoof.status, 403);
      // The owner may not set a level above their own.
      const tooHigh = await api<Json>(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.power_levels`, { token: owner.access_token, body: { ...pl, users: { ...pl.users, [member.user_id]: 101 } } });
      assert.equal(tooHigh.status, 403);
      // v10+ power levels must be integers.
      const stringLevel = await api<Json>(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.power_levels`, { token: owner.access_token, body: { ...pl, users: { ...pl.users, [member.user_id]: "50" } } });
      assert.equal(stringLevel.status, 403);
      // A member cannot kick; a banned user cannot rejoin.
      await api(server().url, "POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: outsider.access_token, body: {} });
      const kick = await api<Json>(server().url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/kick`, { token: member.access_token, body: { user_id: outsider.user_id } });
      assert.equal(kick.status, 403);
      const ban = await api<Json>(server().url, "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/ban`, { token: owner.access_token, body: { user_id: outsider.user_id, reason: "test" } });
      assert.equal(ban.status, 200);
      const rejoin = await api<Json>(server().url, "POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: outsider.access_token, body: {} });
      assert.equal(rejoin.status, 403);
      // Redaction algorithm per version: v11 keeps `redacts` in the redaction's content.
      const msg = await api<Json>(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/r${version}`, { token: member.access_token, body: { msgtype: "m.text", body: "weg damit" } });
      const red = await api<Json>(server().url, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/redact/${enc(msg.body.event_id)}/r${version}`, { token: owner.access_token, body: { reason: "Datenschutz" } });
      assert.equal(red.status, 200);
      const redEv = await api<Json>(server().url, "GET", `/_matrix/client/v3/rooms/${enc(roomId)}/event/${enc(red.body.event_id)}`, { token: owner.access_token });
      assert.equal(redEv.body.redacts, msg.body.event_id);
      if (version === "11") assert.equal(redEv.body.content.redacts, msg.body.event_id);
      const gone = await api<Json>(server().url, "GET", `/_matrix/client/v3/rooms/${enc(roomId)}/event/${enc(msg.body.event_id)}`, { token: owner.access_token });
      assert.deepEqual(gone.body.content, {});
      // Every stored event is a signed PDU with hashes and reference-hash id.
      const row = await server().services.storage.db.selectFrom("events").select(["json", "event_id"]).where("event_id", "=", msg.body.event_id).executeTakeFirstOrThrow();
      const pdu = JSON.parse(row.json);
      assert.ok(pdu.signatures[server().config.serverName]);
      assert.ok(Array.isArray(pdu.prev_events) && pdu.prev_events.length === 1);
      assert.ok(Array.isArray(pdu.auth_events) && pdu.auth_events.length >= 3);
      assert.match(row.event_id, /^\$[A-Za-z0-9_-]{43}$/);
    });
  }

  test("unsupported room versions are refused", async () => {
    const res = await api<Json>(server().url, "POST", "/_matrix/client/v3/createRoom", { token: owner.access_token, body: { room_version: "1" } });
    assert.equal(res.status, 400);
    assert.equal(res.body.errcode, "M_UNSUPPORTED_ROOM_VERSION");
  });
});
