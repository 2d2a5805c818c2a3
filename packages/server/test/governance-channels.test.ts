import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { AuditEntry, ChannelSummary } from "@revier/protocol";
import { describeEachDatabase } from "./support/suite.js";
import { TEST_PASSWORD } from "./support/server.js";
import { api, enc } from "./support/http.js";
import { sdk, startClient, timelineBodies, waitFor, type Client } from "./support/sdk.js";
import type { Role } from "../src/users/accounts.js";

const ADMIN = "/_revier/admin/v1";
const V3 = "/_matrix/client/v3";
type Caller = Role | "none";
const CALLERS: Caller[] = ["admin", "helpdesk", "dpo", "user", "none"];

interface Err {
  errcode?: string;
  error?: string;
}

describeEachDatabase("governance: channels", ({ server, replace }) => {
  const tokens = new Map<string, string>();
  const ids = new Map<string, string>();
  const clients: Client[] = [];
  let n = 0;

  before(async () => {
    const people: Array<[string, Role]> = [
      ["chefin", "admin"],
      ["hilfe", "helpdesk"],
      ["schutz", "dpo"],
      ["anna", "user"],
      ["bert", "user"],
      ["carl", "user"],
      ["dora", "user"],
    ];
    for (const [localpart, role] of people) {
      ids.set(localpart, (await server().services.accounts.create(localpart, { password: TEST_PASSWORD, role })).user_id);
      tokens.set(localpart, (await server().login(localpart)).access_token);
    }
  });
  after(() => {
    for (const c of clients) c.stopClient();
  });

  const tok = (who: string) => tokens.get(who)!;
  const uid = (who: string) => ids.get(who)!;

  async function call<T = Record<string, unknown>>(who: string | null, method: string, path: string, body?: unknown) {
    return api<T>(server().url, method, path, { ...(who ? { token: tok(who) } : {}), ...(body !== undefined ? { body } : {}) });
  }

  async function setPolicy(policy: Record<string, unknown>): Promise<void> {
    const res = await call("chefin", "PUT", `${ADMIN}/policy`, policy);
    assert.equal(res.status, 200, JSON.stringify(res.body));
  }

  async function createRoom(who: string, body: Record<string, unknown>): Promise<string> {
    const res = await call<{ room_id: string } & Err>(who, "POST", `${V3}/createRoom`, body);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.room_id;
  }

  async function join(who: string, roomId: string) {
    return call<Err>(who, "POST", `${V3}/rooms/${enc(roomId)}/join`, {});
  }

  async function send(who: string, roomId: string, body: string) {
    return call<{ event_id: string } & Err>(who, "PUT", `${V3}/rooms/${enc(roomId)}/send/m.room.message/t${++n}`, { msgtype: "m.text", body });
  }

  async function listChannels(): Promise<ChannelSummary[]> {
    const res = await call<{ channels: ChannelSummary[] }>("chefin", "GET", `${ADMIN}/channels?limit=1000`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.channels;
  }

  async function auditAfter(seq: number): Promise<AuditEntry[]> {
    return server().services.audit.list({ from: seq, limit: 1000 });
  }
  async function lastSeq(): Promise<number> {
    return server().services.audit.count();
  }

  async function publicRoomIds(): Promise<string[]> {
    const res = await call<{ chunk: Array<{ room_id: string }> }>("dora", "GET", `${V3}/publicRooms?limit=500`);
    assert.equal(res.status, 200);
    return res.body.chunk.map((c) => c.room_id);
  }

  test("a user the policy does not allow is refused a channel, in every way of making one, and cannot make a private room public", async () => {
    await setPolicy({ channel_creators: ["admin"] });
    try {
      const attempts: Array<Record<string, unknown>> = [
        { preset: "public_chat", name: "Lage" },
        { visibility: "public", name: "Im Verzeichnis" },
        { preset: "private_chat", initial_state: [{ type: "m.room.join_rules", state_key: "", content: { join_rule: "public" } }] },
      ];
      for (const body of attempts) {
        const res = await call<Err & { "org.revier.channel_creators"?: string[] }>("anna", "POST", `${V3}/createRoom`, body);
        assert.equal(res.status, 403, JSON.stringify(body));
        assert.equal(res.body.errcode, "M_FORBIDDEN");
        assert.match(res.body.error ?? "", /only the roles admin create channels/);
        assert.deepEqual(res.body["org.revier.channel_creators"], ["admin"]);
      }
      // A private room is fine, and a public_chat preset whose join rule is overridden to invite is not a channel.
      const priv = await createRoom("anna", { preset: "private_chat", name: "Ermittlung" });
      await createRoom("anna", { preset: "public_chat", initial_state: [{ type: "m.room.join_rules", content: { join_rule: "invite" } }] });

      // The loophole: turning the private room into a channel afterwards.
      const rule = await call<Err>("anna", "PUT", `${V3}/rooms/${enc(priv)}/state/m.room.join_rules`, { join_rule: "public" });
      assert.equal(rule.status, 403);
      assert.equal(rule.body.errcode, "M_FORBIDDEN");
      assert.equal((await call<{ join_rule: string }>("anna", "GET", `${V3}/rooms/${enc(priv)}/state/m.room.join_rules`)).body.join_rule, "invite");
      const listed = await call<Err>("anna", "PUT", `${V3}/directory/list/room/${enc(priv)}`, { visibility: "public" });
      assert.equal(listed.status, 403);
      assert.equal((await call<{ visibility: string }>(null, "GET", `${V3}/directory/list/room/${enc(priv)}`)).body.visibility, "private");
      // Other join rule changes stay possible.
      assert.equal((await call("anna", "PUT", `${V3}/rooms/${enc(priv)}/state/m.room.join_rules`, { join_rule: "knock" })).status, 200);
      assert.ok(!(await listChannels()).some((c) => c.room_id === priv));

      // An allowed role may do all of it.
      await createRoom("chefin", { preset: "public_chat", name: "Leitstelle" });
      const adminPriv = await createRoom("chefin", { preset: "private_chat" });
      assert.equal((await call("chefin", "PUT", `${V3}/directory/list/room/${enc(adminPriv)}`, { visibility: "public" })).status, 200);
    } finally {
      await setPolicy({});
    }
    // "everyone" again: the same user may now create one.
    await createRoom("anna", { preset: "public_chat", name: "Jetzt erlaubt" });
  });

  test("the listing shows channels with owner, member count and last activity; no private rooms, no content; owners survive a restart", async () => {
    const channel = await createRoom("anna", { preset: "public_chat", name: "Lage Nord", room_alias_name: "lage-nord" });
    assert.equal((await join("bert", channel)).status, 200);
    const lastMessage = await send("anna", channel, "geheime Lage am Hafen");
    assert.equal(lastMessage.status, 200);
    const priv = await createRoom("anna", { preset: "private_chat", name: "Privatsache" });
    await send("anna", priv, "privater Inhalt");
    const direct = await createRoom("bert", { preset: "trusted_private_chat", is_direct: true, invite: [uid("anna")] });
    // A private room published later is a channel of the one who published it.
    const later = await createRoom("bert", { preset: "private_chat", name: "Später öffentlich" });
    assert.equal((await call("bert", "PUT", `${V3}/directory/list/room/${enc(later)}`, { visibility: "public" })).status, 200);
    const broadcast = await createRoom("carl", { preset: "public_chat", name: "Durchsagen", "org.revier.broadcast": true });

    const res = await call<{ channels: ChannelSummary[] }>("chefin", "GET", `${ADMIN}/channels`);
    assert.equal(res.status, 200);
    const text = JSON.stringify(res.body);
    assert.doesNotMatch(text, /geheime Lage|privater Inhalt|Privatsache/, "no content, no private room names");
    const listedIds = res.body.channels.map((c) => c.room_id);
    for (const p of [priv, direct]) assert.ok(!listedIds.includes(p), "private rooms are never listed");

    const lage = res.body.channels.find((c) => c.room_id === channel)!;
    const event = await server().services.rooms.event(lastMessage.body.event_id);
    assert.deepEqual(lage, {
      room_id: channel,
      name: "Lage Nord",
      canonical_alias: `#lage-nord:${server().config.serverName}`,
      owner: uid("anna"),
      member_count: 2,
      created_ts: lage.created_ts,
      last_activity_ts: (JSON.parse(event!.json) as { origin_server_ts: number }).origin_server_ts,
      published: false,
      join_public: true,
      broadcast: false,
    });
    assert.ok(lage.created_ts > 0 && lage.created_ts <= lage.last_activity_ts!);
    const published = res.body.channels.find((c) => c.room_id === later)!;
    assert.equal(published.owner, uid("bert"));
    assert.equal(published.published, true);
    assert.equal(published.join_public, false);
    assert.equal(res.body.channels.find((c) => c.room_id === broadcast)?.broadcast, true);

    // Paging by room id.
    const first = await call<{ channels: ChannelSummary[]; next_from?: string }>("chefin", "GET", `${ADMIN}/channels?limit=1`);
    assert.equal(first.body.channels.length, 1);
    const second = await call<{ channels: ChannelSummary[] }>("chefin", "GET", `${ADMIN}/channels?limit=1&from=${enc(first.body.next_from!)}`);
    assert.ok(second.body.channels[0]!.room_id > first.body.channels[0]!.room_id);

    // Listing is a read: no audit entry. And owners are recorded in the database.
    const seq = await lastSeq();
    const restarted = await server().restart();
    replace(restarted);
    const again = await listChannels();
    assert.equal(again.find((c) => c.room_id === channel)?.owner, uid("anna"));
    assert.equal(again.find((c) => c.room_id === later)?.owner, uid("bert"));
    assert.equal(await lastSeq(), seq);
  });

  test("role matrix: admin may list and close channels; helpdesk, dpo and users may not; no token is 401", async () => {
    const rows: Array<{ name: string; request: () => Promise<{ method: string; path: string; body?: unknown }> }> = [
      { name: "GET /channels", request: async () => ({ method: "GET", path: "/channels" }) },
      {
        name: "POST /channels/{roomId}/close",
        request: async () => ({ method: "POST", path: `/channels/${enc(await createRoom("anna", { preset: "public_chat" }))}/close`, body: { reason: "Matrix-Test" } }),
      },
    ];
    const as: Record<Role, string> = { admin: "chefin", helpdesk: "hilfe", dpo: "schutz", user: "bert" };
    for (const row of rows) {
      for (const caller of CALLERS) {
        const req = await row.request();
        const res = await api<Err>(server().url, req.method, `${ADMIN}${req.path}`, { ...(caller !== "none" ? { token: tok(as[caller]) } : {}), ...(req.body !== undefined ? { body: req.body } : {}) });
        const label = `${row.name} as ${caller}: ${res.status} ${JSON.stringify(res.body)}`;
        if (caller === "none") {
          assert.equal(res.status, 401, label);
          assert.equal(res.body.errcode, "M_MISSING_TOKEN", label);
        } else if (caller === "admin") {
          assert.equal(res.status, 200, label);
        } else {
          assert.equal(res.status, 403, label);
          assert.equal(res.body.errcode, "M_FORBIDDEN", label);
        }
      }
    }
    // Private rooms are not channels, for the admin API either.
    const priv = await createRoom("anna", { preset: "private_chat" });
    const res = await call<Err>("chefin", "POST", `${ADMIN}/channels/${enc(priv)}/close`, { reason: "nein" });
    assert.equal(res.status, 404);
    assert.equal(res.body.errcode, "M_NOT_FOUND");
    assert.equal((await call<Err>("chefin", "POST", `${ADMIN}/channels/${enc(priv)}/close`, {})).status, 400, "a reason is required");
  });

  test("an admin closes a channel: notice, every member kicked with the reason, gone from the directory, no rejoin, no invite; one audit entry", async () => {
    const roomId = await createRoom("anna", { preset: "public_chat", visibility: "public", name: "Einsatz Süd", room_alias_name: "einsatz-sued" });
    for (const who of ["bert", "carl"]) assert.equal((await join(who, roomId)).status, 200);
    assert.equal((await call("anna", "POST", `${V3}/rooms/${enc(roomId)}/invite`, { user_id: uid("dora") })).status, 200);
    assert.ok((await publicRoomIds()).includes(roomId));
    const bert = await startClient(server(), "bert");
    clients.push(bert);
    await waitFor("bert's client sees the room", () => bert.getRoom(roomId)?.getMyMembership() === "join");

    const seq = await lastSeq();
    const reason = "Einsatz beendet, Kanal wird archiviert";
    const res = await call<{ removed: number; notice_sent: boolean }>("chefin", "POST", `${ADMIN}/channels/${enc(roomId)}/close`, { reason });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body, { room_id: roomId, removed: 4, notice_sent: true });

    const entries = await auditAfter(seq);
    assert.equal(entries.length, 1, JSON.stringify(entries));
    assert.equal(entries[0]!.action, "channel.close");
    assert.equal(entries[0]!.actor, uid("chefin"));
    assert.equal(entries[0]!.actor_role, "admin");
    assert.equal(entries[0]!.target, roomId);
    assert.deepEqual(entries[0]!.details, { reason, owner: uid("anna"), by_owner: false, members: 4, already_closed: false });

    // Everyone is out: kicked by the owner's account with the reason, the invite withdrawn, the owner left.
    assert.equal(await server().services.rooms.joinedMemberCount(roomId), 0);
    for (const who of ["bert", "carl", "dora", "anna"]) {
      const m = await call<{ membership: string; reason?: string }>(who, "GET", `${V3}/rooms/${enc(roomId)}/state/m.room.member/${enc(uid(who))}`);
      if (who === "dora") {
        // Dora never joined, so she may not read the room; the database shows the withdrawn invite.
        assert.equal((await server().services.rooms.membership(roomId, uid(who)))?.membership, "leave");
        continue;
      }
      assert.equal(m.status, 200, `${who}: ${JSON.stringify(m.body)}`);
      assert.equal(m.body.membership, "leave");
      assert.equal(m.body.reason, reason);
    }
    const kick = await server().services.rooms.stateEvent(roomId, "m.room.member", uid("bert"));
    assert.equal(kick?.sender, uid("anna"), "bert was kicked, not made to leave");
    await waitFor("bert's client sees the kick", () => bert.getRoom(roomId)?.getMyMembership() === "leave");

    // The notice is in the history the former members can still read.
    const messages = await call<{ chunk: Array<{ type: string; content: { msgtype?: string; body?: string } }> }>("bert", "GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=50`);
    const notice = messages.body.chunk.find((e) => e.type === "m.room.message" && e.content.msgtype === "m.notice");
    assert.ok(notice, JSON.stringify(messages.body));
    assert.match(notice.content.body!, /closed by the organisation's administration/);
    assert.ok(notice.content.body!.includes(reason));
    assert.ok(timelineBodies(bert, roomId).some((b) => b.includes(reason)), "bert's client received the notice");

    // Gone from the directory and the admin listing.
    assert.ok(!(await publicRoomIds()).includes(roomId));
    assert.equal((await call<{ visibility: string }>(null, "GET", `${V3}/directory/list/room/${enc(roomId)}`)).body.visibility, "private");
    assert.ok(!(await listChannels()).some((c) => c.room_id === roomId));

    // No way back in: joining by id or alias, knocking, inviting, also through matrix-js-sdk.
    const tries = [
      await join("bert", roomId),
      await call<Err>("carl", "POST", `${V3}/join/${enc(`#einsatz-sued:${server().config.serverName}`)}`, {}),
      await call<Err>("dora", "POST", `${V3}/knock/${enc(roomId)}`, {}),
      await call<Err>("anna", "POST", `${V3}/rooms/${enc(roomId)}/invite`, { user_id: uid("bert") }),
    ];
    for (const t of tries) {
      assert.equal(t.status, 403, JSON.stringify(t.body));
      assert.equal(t.body.errcode, "ORG.REVIER.CHANNEL_CLOSED");
      assert.ok(t.body.error?.includes(reason), t.body.error);
    }
    await assert.rejects(bert.joinRoom(roomId), (err: sdk.MatrixError) => err.errcode === "ORG.REVIER.CHANNEL_CLOSED");
    assert.equal(await server().services.rooms.joinedMemberCount(roomId), 0);
    // The refusals left the audit log with its one entry, and the chain holds.
    assert.equal((await call("chefin", "GET", `${ADMIN}/audit/verify`)).body.ok, true);
    assert.equal((await auditAfter(seq)).length, 1);

    // Closing again only finishes what may be left (nothing here): no second notice, the first reason stays.
    const again = await call<{ removed: number; notice_sent: boolean }>("chefin", "POST", `${ADMIN}/channels/${enc(roomId)}/close`, { reason: "anderer Grund" });
    assert.deepEqual(again.body, { room_id: roomId, removed: 0, notice_sent: false });
    const second = await auditAfter(seq);
    assert.equal(second.length, 2);
    assert.equal(second[1]!.details.already_closed, true);
    assert.ok((await join("bert", roomId)).body.error?.includes(reason));
  });

  test("the owner closes their own channel; another ordinary user, even a member, is refused", async () => {
    const roomId = await createRoom("anna", { preset: "public_chat", name: "Fahrgemeinschaft" });
    assert.equal((await join("bert", roomId)).status, 200);
    const seq = await lastSeq();
    const refused = await call<Err>("bert", "POST", `/_revier/client/v1/channels/${enc(roomId)}/close`, { reason: "weg damit" });
    assert.equal(refused.status, 403);
    assert.equal(refused.body.errcode, "M_FORBIDDEN");
    assert.equal((await call<Err>("carl", "POST", `/_revier/client/v1/channels/${enc(roomId)}/close`, { reason: "weg damit" })).status, 403);
    assert.equal(await server().services.rooms.joinedMemberCount(roomId), 2, "nothing happened");
    assert.equal(await lastSeq(), seq, "refusals are not audited");
    // Not a channel: the owner of a private room cannot "close" it, and learns nothing about others' rooms.
    const priv = await createRoom("anna", { preset: "private_chat" });
    assert.equal((await call<Err>("anna", "POST", `/_revier/client/v1/channels/${enc(priv)}/close`, { reason: "x" })).status, 404);

    // Bert is raised to the owner's rank: the owner cannot kick him, so he is made to leave.
    const pl = await call<{ users: Record<string, number> }>("anna", "GET", `${V3}/rooms/${enc(roomId)}/state/m.room.power_levels`);
    assert.equal((await call("anna", "PUT", `${V3}/rooms/${enc(roomId)}/state/m.room.power_levels`, { ...pl.body, users: { ...pl.body.users, [uid("bert")]: 100 } })).status, 200);
    assert.equal((await join("carl", roomId)).status, 200);

    const res = await call<{ removed: number; notice_sent: boolean }>("anna", "POST", `/_revier/client/v1/channels/${enc(roomId)}/close`, { reason: "Nicht mehr gebraucht" });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.removed, 3);
    assert.equal(await server().services.rooms.joinedMemberCount(roomId), 0);
    assert.equal((await server().services.rooms.stateEvent(roomId, "m.room.member", uid("carl")))?.sender, uid("anna"), "carl was kicked");
    const bertLeft = await server().services.rooms.stateEvent(roomId, "m.room.member", uid("bert"));
    assert.equal(bertLeft?.sender, uid("bert"));
    assert.equal(bertLeft?.content.reason, "Nicht mehr gebraucht");
    const entries = await auditAfter(seq);
    assert.equal(entries.length, 1);
    assert.equal(entries[0]!.action, "channel.close");
    assert.equal(entries[0]!.actor, uid("anna"));
    assert.equal(entries[0]!.actor_role, "user");
    assert.equal(entries[0]!.details.by_owner, true);
    const back = await join("bert", roomId);
    assert.equal(back.status, 403);
    assert.equal(back.body.errcode, "ORG.REVIER.CHANNEL_CLOSED");
    const notice = (await call<{ chunk: Array<{ content: { body?: string } }> }>("bert", "GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=20`)).body.chunk.find((e) => e.content.body?.includes("closed by its owner"));
    assert.ok(notice);
  });

  test("the event write path itself refuses entering a closed channel, so a join racing the closing cannot slip in; profile updates still pass", async () => {
    const roomId = await createRoom("anna", { preset: "public_chat", name: "Wettlauf" });
    assert.equal((await join("bert", roomId)).status, 200);
    // Marked closed as the closing does first, before anyone is removed; the join rule is still public.
    await server().services.storage.db.updateTable("channels").set({ closed_ts: Date.now(), closed_by: uid("chefin"), close_reason: "Test" }).where("room_id", "=", roomId).execute();
    await assert.rejects(
      server().services.roomEvents.send({ roomId, sender: uid("carl"), type: "m.room.member", stateKey: uid("carl"), content: { membership: "join" } }),
      (err: { errcode?: string }) => err.errcode === "ORG_REVIER_CHANNEL_CLOSED",
    );
    assert.equal((await server().services.rooms.membership(roomId, uid("carl")))?.membership, undefined, "nothing was written");
    assert.equal((await call("bert", "PUT", `${V3}/profile/${enc(uid("bert"))}/displayname`, { displayname: "Bert B." })).status, 200);
    assert.equal((await server().services.rooms.stateContent(roomId, "m.room.member", uid("bert")))?.displayname, "Bert B.");
  });

  test("a read-only broadcast channel refuses posts from ordinary members (matrix-js-sdk and raw HTTP) and accepts the owner's and moderators'", async () => {
    const anna = await startClient(server(), "anna");
    const bert = await startClient(server(), "bert");
    clients.push(anna, bert);
    const { room_id: roomId } = await anna.createRoom({ preset: sdk.Preset.PublicChat, name: "Lagemeldungen", "org.revier.broadcast": true } as sdk.ICreateRoomOpts);
    const pl = await call<{ events_default: number; users: Record<string, number> }>("anna", "GET", `${V3}/rooms/${enc(roomId)}/state/m.room.power_levels`);
    assert.equal(pl.body.events_default, 50);
    await bert.joinRoom(roomId);
    await waitFor("bert joined", () => bert.getRoom(roomId)?.getMyMembership() === "join");

    await assert.rejects(bert.sendTextMessage(roomId, "darf ich?"), (err: sdk.MatrixError) => err.errcode === "M_FORBIDDEN");
    const raw = await send("bert", roomId, "und so?");
    assert.equal(raw.status, 403);
    assert.equal(raw.body.errcode, "M_FORBIDDEN");
    const reaction = await call<Err>("bert", "PUT", `${V3}/rooms/${enc(roomId)}/send/m.reaction/r${++n}`, { "m.relates_to": { rel_type: "m.annotation", event_id: "$x", key: "👍" } });
    assert.equal(reaction.status, 403, "reactions are posts too");

    await anna.sendTextMessage(roomId, "Sperrung B6 aufgehoben");
    await waitFor("bert receives the owner's broadcast", () => timelineBodies(bert, roomId).includes("Sperrung B6 aufgehoben"));
    assert.ok(!timelineBodies(anna, roomId).includes("darf ich?"));

    // A moderator may post; the flag must be a boolean.
    assert.equal((await join("carl", roomId)).status, 200);
    assert.equal((await call("anna", "PUT", `${V3}/rooms/${enc(roomId)}/state/m.room.power_levels`, { ...pl.body, users: { ...pl.body.users, [uid("carl")]: 50 } })).status, 200);
    assert.equal((await send("carl", roomId, "Moderator meldet")).status, 200);
    const bad = await call<Err>("anna", "POST", `${V3}/createRoom`, { preset: "public_chat", "org.revier.broadcast": "ja" });
    assert.equal(bad.status, 400);
    // Without the flag, members post as usual.
    const open = await createRoom("anna", { preset: "public_chat" });
    assert.equal((await join("bert", open)).status, 200);
    assert.equal((await send("bert", open, "hier darf ich")).status, 200);
  });
});
