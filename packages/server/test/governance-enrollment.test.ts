import { before, test } from "node:test";
import assert from "node:assert/strict";
import type { AuditEntry } from "@revier/protocol";
import { describeEachDatabase } from "./support/suite.js";
import { TEST_PASSWORD, type TestServer } from "./support/server.js";
import { api, enc } from "./support/http.js";
import { assertConformsToSpec } from "./support/spec.js";
import type { Role } from "../src/users/accounts.js";

const ADMIN = "/_revier/admin/v1";
const STAGE = "org.revier.enrollment";

interface LoginAnswer {
  errcode?: string;
  error?: string;
  access_token?: string;
  device_id?: string;
  flows?: { stages: string[] }[];
  params?: Record<string, Record<string, unknown>>;
  session?: string;
  completed?: string[];
}

function login(server: TestServer, localpart: string, extra: Record<string, unknown> = {}) {
  return api<LoginAnswer>(server.url, "POST", "/_matrix/client/v3/login", {
    body: { type: "m.login.password", identifier: { type: "m.id.user", user: localpart }, password: TEST_PASSWORD, ...extra },
  });
}

describeEachDatabase("governance: enrollment stage, device codes, unblocking", ({ server }) => {
  const tokens = new Map<Role, string>();
  let adminId: string;
  let counter = 0;

  before(async () => {
    for (const role of ["admin", "helpdesk", "dpo", "user"] as Role[]) {
      const id = (await server().services.accounts.create(`enr_${role}`, { password: TEST_PASSWORD, role })).user_id;
      if (role === "admin") adminId = id;
      tokens.set(role, (await server().login(`enr_${role}`)).access_token);
    }
  });

  const admin = () => tokens.get("admin")!;

  async function setPolicy(policy: Record<string, unknown>): Promise<void> {
    const res = await api(server().url, "PUT", `${ADMIN}/policy`, { token: admin(), body: policy });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  }

  async function lastSeq(): Promise<number> {
    let last = 0;
    for (;;) {
      const page = (await api<{ entries: AuditEntry[] }>(server().url, "GET", `${ADMIN}/audit?from=${last}&limit=1000`, { token: admin() })).body.entries;
      if (page.length === 0) return last;
      last = page[page.length - 1]!.seq;
    }
  }

  async function entriesAfter(seq: number): Promise<AuditEntry[]> {
    return (await api<{ entries: AuditEntry[] }>(server().url, "GET", `${ADMIN}/audit?from=${seq}&limit=1000`, { token: admin() })).body.entries;
  }

  test("GET /login advertises the enrollment stage only while enrollment is required", async () => {
    const off = await api<{ flows: Record<string, unknown>[] }>(server().url, "GET", "/_matrix/client/v3/login");
    assert.equal(off.status, 200);
    assert.deepEqual(off.body, { flows: [{ type: "m.login.password" }] });
    assertConformsToSpec("GET", "/_matrix/client/v3/login", 200, off.body);
    await setPolicy({ enrollment_required: true });
    try {
      const on = await api<{ flows: Record<string, unknown>[] }>(server().url, "GET", "/_matrix/client/v3/login");
      assert.deepEqual(on.body, { flows: [{ type: "m.login.password", [STAGE]: { uia_stage: STAGE, login_parameter: "org.revier.enrollment_code" } }] });
      assertConformsToSpec("GET", "/_matrix/client/v3/login", 200, on.body);
    } finally {
      await setPolicy({});
    }
    assert.deepEqual((await api(server().url, "GET", "/_matrix/client/v3/login")).body, { flows: [{ type: "m.login.password" }] });
  });

  test("the enrollment UIA stage: flows on refusal, a device-issued code works once, wrong, reused and expired codes are refused", async () => {
    const userId = (await server().services.accounts.create("enr_emma", { password: TEST_PASSWORD })).user_id;
    const phone = await login(server(), "enr_emma", { device_id: "EMMAPHONE" });
    assert.equal(phone.status, 200);
    await setPolicy({ enrollment_required: true, max_devices: 10 });
    try {
      // Without a code: refused as before, now with what a UIA-style client needs to go on.
      const refused = await login(server(), "enr_emma", { device_id: "EMMATABLET" });
      assert.equal(refused.status, 403);
      assert.equal(refused.body.errcode, "ORG.REVIER.ENROLLMENT_REQUIRED");
      assert.deepEqual(refused.body.flows, [{ stages: [STAGE] }]);
      assert.deepEqual(refused.body.completed, []);
      assert.equal(refused.body.params?.[STAGE]?.login_parameter, "org.revier.enrollment_code");
      assert.equal(refused.body.params?.[STAGE]?.lifetime_ms, 15 * 60_000);
      assert.equal(typeof refused.body.session, "string");
      // An already enrolled device needs no code (logging in again replaces the device's token).
      const relogin = await login(server(), "enr_emma", { device_id: "EMMAPHONE" });
      assert.equal(relogin.status, 200);
      const phoneToken = relogin.body.access_token!;

      // The phone vouches for the tablet.
      let before = await lastSeq();
      const issued = await api<{ code: string; expires_ts: number }>(server().url, "POST", "/_revier/client/v1/enrollment_codes", { token: phoneToken, body: {} });
      assert.equal(issued.status, 200, JSON.stringify(issued.body));
      let added = await entriesAfter(before);
      assert.equal(added.length, 1);
      assert.equal(added[0]!.action, "enrollment_code.issue");
      assert.equal(added[0]!.actor, userId);
      assert.equal(added[0]!.actor_role, "user");
      assert.deepEqual(added[0]!.details, { expires_ts: issued.body.expires_ts, device_id: "EMMAPHONE" });

      const wrong = await login(server(), "enr_emma", { device_id: "EMMATABLET", auth: { type: STAGE, code: "AAAA-BBBB-CCCC", session: refused.body.session } });
      assert.equal(wrong.status, 401);
      assert.equal(wrong.body.errcode, "M_FORBIDDEN");
      assert.match(wrong.body.error ?? "", /wrong, expired or already used/);
      assert.deepEqual(wrong.body.flows, [{ stages: [STAGE] }]);
      const noCode = await login(server(), "enr_emma", { device_id: "EMMATABLET", auth: { type: STAGE, session: refused.body.session } });
      assert.equal(noCode.status, 401);
      // A session started for one device cannot enroll another.
      const elsewhere = await login(server(), "enr_emma", { device_id: "OTHERDEVICE", auth: { type: STAGE, code: issued.body.code, session: refused.body.session } });
      assert.equal(elsewhere.status, 403);
      assert.equal(elsewhere.body.errcode, "M_FORBIDDEN");
      // A stage this request does not offer is refused.
      const password = await login(server(), "enr_emma", { device_id: "EMMATABLET", auth: { type: "m.login.password", password: TEST_PASSWORD, session: refused.body.session } });
      assert.equal(password.status, 401);
      assert.equal(password.body.errcode, "M_UNRECOGNIZED");

      before = await lastSeq();
      const enrolled = await login(server(), "enr_emma", { device_id: "EMMATABLET", auth: { type: STAGE, code: issued.body.code, session: refused.body.session } });
      assert.equal(enrolled.status, 200, JSON.stringify(enrolled.body));
      assert.equal(enrolled.body.device_id, "EMMATABLET");
      added = await entriesAfter(before);
      assert.equal(added.length, 1, "enrolling a device leaves exactly one entry");
      assert.equal(added[0]!.action, "enrollment_code.use");
      assert.equal(added[0]!.actor, userId);
      assert.equal(added[0]!.target, userId);
      assert.deepEqual(added[0]!.details, { device_id: "EMMATABLET", issued_by: userId, via: "uia" });
      assert.equal((await api(server().url, "GET", "/_matrix/client/v3/account/whoami", { token: enrolled.body.access_token! })).status, 200);

      // Works once: the same code, with or without a session, enrolls nothing more.
      before = await lastSeq();
      const reused = await login(server(), "enr_emma", { device_id: "EMMALAPTOP", auth: { type: STAGE, code: issued.body.code } });
      assert.equal(reused.status, 401);
      assert.equal(reused.body.errcode, "M_FORBIDDEN");
      assert.equal((await login(server(), "enr_emma", { device_id: "EMMALAPTOP", "org.revier.enrollment_code": issued.body.code })).body.errcode, "ORG.REVIER.ENROLLMENT_REQUIRED");

      // Expires: an unused code past its time is refused.
      const late = await api<{ code: string }>(server().url, "POST", `${ADMIN}/users/${enc(userId)}/enrollment_codes`, { token: admin() });
      assert.equal(late.status, 200);
      await server().services.storage.db.updateTable("enrollment_codes").set({ expires_ts: Date.now() - 1 }).where("user_id", "=", userId).where("used_ts", "is", null).execute();
      const expired = await login(server(), "enr_emma", { device_id: "EMMALAPTOP", auth: { type: STAGE, code: late.body.code } });
      assert.equal(expired.status, 401);
      assert.equal(expired.body.errcode, "M_FORBIDDEN");
      const afterRefusals = await entriesAfter(before);
      assert.deepEqual(
        afterRefusals.map((e) => e.action),
        ["enrollment_code.issue"],
        "refused enrollments are not audited",
      );

      // The plain login parameter is audited the same way.
      const fresh = await api<{ code: string }>(server().url, "POST", "/_revier/client/v1/enrollment_codes", { token: phoneToken, body: {} });
      before = await lastSeq();
      const viaParam = await login(server(), "enr_emma", { device_id: "EMMALAPTOP", "org.revier.enrollment_code": fresh.body.code });
      assert.equal(viaParam.status, 200);
      added = await entriesAfter(before);
      assert.equal(added.length, 1);
      assert.deepEqual(added[0]!.details, { device_id: "EMMALAPTOP", issued_by: userId, via: "login_parameter" });

      // A device may hold only a few unused codes at once.
      for (let i = 0; i < 3; i++) assert.equal((await api(server().url, "POST", "/_revier/client/v1/enrollment_codes", { token: phoneToken, body: {} })).status, 200);
      const tooMany = await api<LoginAnswer>(server().url, "POST", "/_revier/client/v1/enrollment_codes", { token: phoneToken, body: {} });
      assert.equal(tooMany.status, 429);
      assert.equal(tooMany.body.errcode, "M_LIMIT_EXCEEDED");
    } finally {
      await setPolicy({});
    }
    // With enrollment off the stage is not needed, and a stray auth object does no harm.
    await setPolicy({ max_devices: 10 });
    try {
      const free = await login(server(), "enr_emma", { device_id: "EMMAWATCH", auth: { type: STAGE, code: "nonsense" } });
      assert.equal(free.status, 200, JSON.stringify(free.body));
    } finally {
      await setPolicy({});
    }
  });

  test("a login refused for the device limit after its code was spent gives the code back, sent either way", async () => {
    const userId = (await server().services.accounts.create("enr_fritz", { password: TEST_PASSWORD })).user_id;
    const phone = await login(server(), "enr_fritz", { device_id: "FRITZPHONE" });
    assert.equal(phone.status, 200);
    await setPolicy({ enrollment_required: true, max_devices: 2 });
    // Another process's login takes the last place after this one's guards, the code's included,
    // have passed: added straight to the devices, as that process would.
    const guards = server().services.loginGuards;
    const rival = async ({ deviceId }: { deviceId: string }) => {
      if (deviceId !== "FRITZTABLET") return;
      assert.equal((await server().services.devices.upsert(userId, "FRITZRIVAL", null, {}, { atMost: 2 })).refused, undefined);
    };
    try {
      for (const [how, send] of [
        ["login parameter", (code: string) => ({ "org.revier.enrollment_code": code })],
        ["UIA stage", (code: string) => ({ auth: { type: STAGE, code } })],
      ] as const) {
        const issued = await api<{ code: string }>(server().url, "POST", "/_revier/client/v1/enrollment_codes", { token: phone.body.access_token!, body: {} });
        assert.equal(issued.status, 200);
        guards.push(rival);
        const before = await lastSeq();
        let refused: Awaited<ReturnType<typeof login>>;
        try {
          refused = await login(server(), "enr_fritz", { device_id: "FRITZTABLET", ...send(issued.body.code) });
        } finally {
          guards.splice(guards.indexOf(rival), 1);
        }
        assert.deepEqual([refused.status, refused.body.errcode], [403, "ORG.REVIER.DEVICE_LIMIT"], how);
        const added = await entriesAfter(before);
        assert.deepEqual(
          added.map((e) => [e.action, e.details]),
          [
            ["enrollment_code.use", { device_id: "FRITZTABLET", issued_by: userId, via: how === "UIA stage" ? "uia" : "login_parameter" }],
            ["enrollment_code.return", { device_id: "FRITZTABLET", issued_by: userId, reason: "login_refused" }],
          ],
          `${how}: the use and its return are audited`,
        );
        assert.equal(await server().services.devices.get(userId, "FRITZTABLET"), undefined);
        // Once the other device is signed out, the same code enrolls the tablet, and only once.
        await server().services.devices.remove(userId, "FRITZRIVAL");
        const enrolled = await login(server(), "enr_fritz", { device_id: "FRITZTABLET", ...send(issued.body.code) });
        assert.equal(enrolled.status, 200, `${how}: ${JSON.stringify(enrolled.body)}`);
        await server().services.devices.remove(userId, "FRITZTABLET");
        const again = await login(server(), "enr_fritz", { device_id: "FRITZTABLET", ...send(issued.body.code) });
        // Refused as any used code is: 403 for the parameter, a 401 UIA challenge for the stage.
        assert.deepEqual([again.status, again.body.errcode], how === "UIA stage" ? [401, "M_FORBIDDEN"] : [403, "ORG.REVIER.ENROLLMENT_REQUIRED"], `${how}: the code was spent by the enrollment`);
        assert.match(again.body.error ?? "", /wrong, expired or already used/);
      }
    } finally {
      await setPolicy({});
    }
  });

  test("an admin or helpdesk unblocks a blocked device id once; it may log in again", async () => {
    const userId = (await server().services.accounts.create("enr_finn", { password: TEST_PASSWORD })).user_id;
    assert.equal((await login(server(), "enr_finn", { device_id: "LOSTPHONE" })).status, 200);
    assert.equal((await api(server().url, "DELETE", `${ADMIN}/users/${enc(userId)}/devices/LOSTPHONE?block=true`, { token: admin() })).status, 200);
    assert.equal((await login(server(), "enr_finn", { device_id: "LOSTPHONE" })).body.errcode, "ORG.REVIER.DEVICE_BLOCKED");

    const before = await lastSeq();
    const res = await api(server().url, "POST", `${ADMIN}/users/${enc(userId)}/devices/LOSTPHONE/unblock`, { token: admin() });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body, {});
    const added = await entriesAfter(before);
    assert.equal(added.length, 1);
    assert.equal(added[0]!.action, "device.unblock");
    assert.equal(added[0]!.actor, adminId);
    assert.equal(added[0]!.target, userId);
    assert.equal(added[0]!.details.device_id, "LOSTPHONE");
    assert.equal(added[0]!.details.blocked_by, adminId);
    assert.equal(typeof added[0]!.details.blocked_ts, "number");

    const list = await api<{ blocked: string[] }>(server().url, "GET", `${ADMIN}/users/${enc(userId)}/devices`, { token: admin() });
    assert.deepEqual(list.body.blocked, []);
    assert.equal((await login(server(), "enr_finn", { device_id: "LOSTPHONE" })).status, 200);

    // Only a blocked id can be unblocked; a refusal is not audited.
    const again = await api<LoginAnswer>(server().url, "POST", `${ADMIN}/users/${enc(userId)}/devices/LOSTPHONE/unblock`, { token: admin() });
    assert.equal(again.status, 404);
    assert.equal(again.body.errcode, "M_NOT_FOUND");
    const nobody = await api<LoginAnswer>(server().url, "POST", `${ADMIN}/users/${enc("@niemand:localhost")}/devices/X/unblock`, { token: admin() });
    assert.equal(nobody.status, 404);
    assert.equal(await lastSeq(), before + 1);
  });

  test("unblocking is role-checked: admin and helpdesk may, dpo, user and anonymous callers may not", async () => {
    for (const caller of ["admin", "helpdesk", "dpo", "user", "none"] as const) {
      const userId = (await server().services.accounts.create(`enr_target${++counter}`, { password: TEST_PASSWORD })).user_id;
      await server().services.devices.upsert(userId, "PHONE", null, {});
      assert.equal((await api(server().url, "DELETE", `${ADMIN}/users/${enc(userId)}/devices/PHONE?block=true`, { token: admin() })).status, 200);
      const before = await lastSeq();
      const token = caller === "none" ? undefined : tokens.get(caller);
      const res = await api<LoginAnswer>(server().url, "POST", `${ADMIN}/users/${enc(userId)}/devices/PHONE/unblock`, token ? { token } : {});
      const label = `unblock as ${caller}: ${res.status} ${JSON.stringify(res.body)}`;
      const blocked = await server().services.governance.isBlocked(userId, "PHONE");
      if (caller === "admin" || caller === "helpdesk") {
        assert.equal(res.status, 200, label);
        assert.equal(blocked, false, label);
        const added = await entriesAfter(before);
        assert.equal(added.length, 1, label);
        assert.equal(added[0]!.actor_role, caller);
      } else {
        assert.equal(res.status, caller === "none" ? 401 : 403, label);
        assert.equal(res.body.errcode, caller === "none" ? "M_MISSING_TOKEN" : "M_FORBIDDEN", label);
        assert.equal(blocked, true, label);
        assert.equal(await lastSeq(), before, label);
      }
    }
    const doc = await api<{ paths: Record<string, Record<string, { "x-revier-permission": string }>> }>(server().url, "GET", `${ADMIN}/openapi.json`);
    assert.equal(doc.body.paths[`${ADMIN}/users/{userId}/devices/{deviceId}/unblock`]?.post?.["x-revier-permission"], "devices.wipe");
  });
});
