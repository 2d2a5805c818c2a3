import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { describeEachDatabase } from "./support/suite.js";
import { sdk, sendRaw, startClient, timelineBodies, waitFor, type Client } from "./support/sdk.js";
import { api } from "./support/http.js";
import { assertConformsToSpec } from "./support/spec.js";

describeEachDatabase("matrix-js-sdk clients in rooms", ({ server }) => {
  let anna: Client;
  let bert: Client;
  let carla: Client;

  before(async () => {
    for (const u of ["anna", "bert", "carla"]) await server().createUser(u);
    anna = await startClient(server(), "anna");
    bert = await startClient(server(), "bert");
    carla = await startClient(server(), "carla");
  });
  after(() => {
    for (const c of [anna, bert, carla]) c?.stopClient();
  });

  test("public room: create, join, send, name and topic changes reach the other client", async () => {
    const { room_id: roomId } = await anna.createRoom({ visibility: sdk.Visibility.Public, name: "Lagezentrum", topic: "Lage Nord", room_alias_name: "lage-nord", preset: sdk.Preset.PublicChat });
    await bert.joinRoom(`#lage-nord:${server().config.serverName}`);
    await waitFor("bert sees the room", () => bert.getRoom(roomId)?.getMyMembership() === "join");
    await anna.sendTextMessage(roomId, "Einsatz beginnt 14:00");
    await waitFor("bert receives the message", () => timelineBodies(bert, roomId).includes("Einsatz beginnt 14:00"));
    await anna.setRoomName(roomId, "Lagezentrum Nord");
    await anna.setRoomTopic(roomId, "Nur dienstlich");
    await waitFor("bert sees the new name", () => bert.getRoom(roomId)?.name === "Lagezentrum Nord");
    await waitFor("bert sees the new topic", () => bert.getRoom(roomId)?.currentState.getStateEvents("m.room.topic", "")?.getContent().topic === "Nur dienstlich");
  });

  test("private room: invite, join, kick, ban; a banned user cannot rejoin", async () => {
    const { room_id: roomId } = await anna.createRoom({ preset: sdk.Preset.PrivateChat, name: "Ermittlungsgruppe" });
    await anna.invite(roomId, carla.getUserId()!);
    await waitFor("carla sees the invite", () => carla.getRoom(roomId)?.getMyMembership() === "invite");
    await carla.joinRoom(roomId);
    await waitFor("anna sees carla join", () => anna.getRoom(roomId)?.getMember(carla.getUserId()!)?.membership === "join");
    await assert.rejects(bert.joinRoom(roomId), (err: { errcode?: string }) => err.errcode === "M_FORBIDDEN");
    await anna.kick(roomId, carla.getUserId()!, "Testweise");
    await waitFor("carla sees she was kicked", () => carla.getRoom(roomId)?.getMyMembership() === "leave");
    await anna.invite(roomId, carla.getUserId()!);
    await carla.joinRoom(roomId);
    await anna.ban(roomId, carla.getUserId()!, "Verstoß");
    await waitFor("carla sees the ban", () => carla.getRoom(roomId)?.getMyMembership() === "ban");
    await assert.rejects(carla.joinRoom(roomId), (err: { errcode?: string }) => err.errcode === "M_FORBIDDEN");
    await anna.unban(roomId, carla.getUserId()!);
    await waitFor("carla is no longer banned", async () => (await anna.getStateEvent(roomId, "m.room.member", carla.getUserId()!)).membership === "leave");
    // A non-member cannot send into the room.
    const token = bert.getAccessToken()!;
    const res = await api(server().url, "PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/t1`, { token, body: { msgtype: "m.text", body: "hallo?" } });
    assert.equal(res.status, 403);
    assert.equal(res.body.errcode, "M_FORBIDDEN");
  });

  test("direct chat with is_direct reaches the invitee marked as direct", async () => {
    const { room_id: roomId } = await anna.createRoom({ preset: sdk.Preset.TrustedPrivateChat, is_direct: true, invite: [bert.getUserId()!] });
    const invite = await waitFor("bert gets the direct invite", () => bert.getRoom(roomId)?.getMember(bert.getUserId()!)?.events.member);
    assert.equal(invite.getContent().is_direct, true);
    await bert.joinRoom(roomId);
    await bert.sendTextMessage(roomId, "Direkt");
    await waitFor("anna receives the DM", () => timelineBodies(anna, roomId).includes("Direkt"));
  });

  test("edits, replies, reactions, threads and redactions", async () => {
    const { room_id: roomId } = await anna.createRoom({ preset: sdk.Preset.PublicChat });
    await bert.joinRoom(roomId);
    await waitFor("bert joined", () => bert.getRoom(roomId)?.getMyMembership() === "join");
    const { event_id: original } = await anna.sendTextMessage(roomId, "Fahrzeug gesichtet");
    await sendRaw(anna, roomId, "m.room.message", { msgtype: "m.text", body: "* Fahrzeug gesichtet (rot)", "m.new_content": { msgtype: "m.text", body: "Fahrzeug gesichtet (rot)" }, "m.relates_to": { rel_type: "m.replace", event_id: original } });
    await sendRaw(bert, roomId, "m.room.message", { msgtype: "m.text", body: "Verstanden", "m.relates_to": { "m.in_reply_to": { event_id: original } } });
    await sendRaw(bert, roomId, "m.reaction", { "m.relates_to": { rel_type: "m.annotation", event_id: original, key: "👍" } });
    await sendRaw(bert, roomId, "m.room.message", { msgtype: "m.text", body: "Im Thread", "m.relates_to": { rel_type: "m.thread", event_id: original, is_falling_back: true, "m.in_reply_to": { event_id: original } } });
    const token = anna.getAccessToken()!;
    const rel = await api(server().url, "GET", `/_matrix/client/v1/rooms/${encodeURIComponent(roomId)}/relations/${encodeURIComponent(original)}`, { token });
    assert.equal(rel.status, 200);
    assertConformsToSpec("GET", "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}", 200, rel.body);
    const types = (rel.body.chunk as Array<{ type: string; content: { "m.relates_to": { rel_type: string } } }>).map((e) => e.content["m.relates_to"].rel_type).sort();
    assert.deepEqual(types, ["m.annotation", "m.replace", "m.thread"]);
    const reactions = await api(server().url, "GET", `/_matrix/client/v1/rooms/${encodeURIComponent(roomId)}/relations/${encodeURIComponent(original)}/m.annotation/m.reaction`, { token });
    assert.equal((reactions.body.chunk as unknown[]).length, 1);

    const { event_id: secret } = await bert.sendTextMessage(roomId, "Kennzeichen H-AB 123");
    await bert.redactEvent(roomId, secret, undefined, { reason: "versehentlich" });
    const ev = await api(server().url, "GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/event/${encodeURIComponent(secret)}`, { token });
    assert.equal(ev.status, 200);
    assertConformsToSpec("GET", "/_matrix/client/v3/rooms/{roomId}/event/{eventId}", 200, ev.body);
    assert.deepEqual(ev.body.content, {});
    assert.ok((ev.body.unsigned as Record<string, unknown>).redacted_because);
    const stored = await server().services.storage.db.selectFrom("events").select("json").where("event_id", "=", secret).executeTakeFirstOrThrow();
    assert.ok(!stored.json.includes("H-AB 123"), "redacted content is gone from the database");
    // Bert (power 0) cannot redact Anna's message.
    await assert.rejects(bert.redactEvent(roomId, original), (err: { errcode?: string }) => err.errcode === "M_FORBIDDEN");
  });

  test("receipts and typing reach the other client", async () => {
    const { room_id: roomId } = await anna.createRoom({ preset: sdk.Preset.PublicChat });
    await bert.joinRoom(roomId);
    const { event_id } = await anna.sendTextMessage(roomId, "Bitte lesen");
    await waitFor("bert has the message", () => bert.getRoom(roomId)?.findEventById(event_id));
    const ev = bert.getRoom(roomId)!.findEventById(event_id)!;
    await bert.sendReadReceipt(ev);
    // ignoreSynthesized: only a receipt the server delivered counts, not one the SDK inferred.
    await waitFor("anna sees bert's receipt", () => anna.getRoom(roomId)?.getEventReadUpTo(bert.getUserId()!, true) === event_id);
    await bert.sendTyping(roomId, true, 10_000);
    await waitFor("anna sees bert typing", () => anna.getRoom(roomId)?.getMember(bert.getUserId()!)?.typing === true);
    await bert.sendTyping(roomId, false, 0);
    await waitFor("anna sees bert stop typing", () => anna.getRoom(roomId)?.getMember(bert.getUserId()!)?.typing === false);
  });

  test("paginating back through 1,000 messages yields each exactly once, in order", async () => {
    const { room_id: roomId } = await anna.createRoom({ preset: sdk.Preset.PrivateChat });
    const token = anna.getAccessToken()!;
    for (let i = 0; i < 1000; i++) {
      const r = await api(server().url, "PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/p${i}`, { token, body: { msgtype: "m.text", body: `m${i}` } });
      assert.equal(r.status, 200);
    }
    const seen: string[] = [];
    let from: string | undefined;
    for (let page = 0; page < 200; page++) {
      const q = new URLSearchParams({ dir: "b", limit: "37", ...(from ? { from } : {}) });
      const r = await api(server().url, "GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?${q}`, { token });
      assert.equal(r.status, 200);
      if (page === 0) assertConformsToSpec("GET", "/_matrix/client/v3/rooms/{roomId}/messages", 200, r.body);
      for (const e of r.body.chunk as Array<{ type: string; content: { body?: string } }>) if (e.type === "m.room.message") seen.push(e.content.body!);
      if (!r.body.end) break;
      from = r.body.end as string;
    }
    const expected = Array.from({ length: 1000 }, (_, i) => `m${999 - i}`);
    assert.deepEqual(seen, expected);
  });

  test("public room directory search and user directory search", async () => {
    await anna.createRoom({ visibility: sdk.Visibility.Public, preset: sdk.Preset.PublicChat, name: "Verkehrsunfälle Hannover", topic: "Meldungen" });
    const token = bert.getAccessToken()!;
    const res = await api(server().url, "POST", "/_matrix/client/v3/publicRooms", { token, body: { filter: { generic_search_term: "verkehrs" } } });
    assert.equal(res.status, 200);
    assertConformsToSpec("POST", "/_matrix/client/v3/publicRooms", 200, res.body);
    const names = (res.body.chunk as Array<{ name?: string }>).map((c) => c.name);
    assert.deepEqual(names, ["Verkehrsunfälle Hannover"]);
    const users = await bert.searchUserDirectory({ term: "carl" });
    assert.deepEqual(users.results.map((r) => r.user_id), [carla.getUserId()]);
  });

  test("a display name change shows up in the user's rooms", async () => {
    const { room_id: roomId } = await anna.createRoom({ preset: sdk.Preset.PublicChat });
    await bert.joinRoom(roomId);
    await waitFor("bert joined", () => bert.getRoom(roomId)?.getMyMembership() === "join");
    await anna.setDisplayName("POK Anna Schmidt");
    await waitFor("bert sees anna's new name", () => bert.getRoom(roomId)?.getMember(anna.getUserId()!)?.name === "POK Anna Schmidt");
  });
});
