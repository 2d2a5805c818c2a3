import { test } from "node:test";
import assert from "node:assert/strict";
import { DEFAULT_ROOM_VERSION, ROOM_VERSIONS, getRoomVersion } from "./room-versions.js";

test("room versions 10 and 11 are supported, 10 by default", () => {
  assert.deepEqual(Object.keys(ROOM_VERSIONS), ["10", "11"]);
  assert.equal(DEFAULT_ROOM_VERSION, "10");
  assert.equal(getRoomVersion("10")?.id, "10");
  assert.equal(getRoomVersion("11")?.id, "11");
  assert.equal(getRoomVersion("9"), undefined);
});

test("inherited object properties are not room versions", () => {
  for (const name of ["constructor", "toString", "__proto__", "hasOwnProperty"]) {
    assert.equal(name in ROOM_VERSIONS, false, name);
    assert.equal(getRoomVersion(name), undefined, name);
  }
});

test("v11 differs from v10 exactly in creator, redacts placement and redaction rules", () => {
  const v10 = getRoomVersion("10");
  const v11 = getRoomVersion("11");
  assert.ok(v10 && v11);
  assert.deepEqual(
    { implicitRoomCreator: v10.implicitRoomCreator, redactsInContent: v10.redactsInContent },
    { implicitRoomCreator: false, redactsInContent: false },
  );
  assert.deepEqual(
    { implicitRoomCreator: v11.implicitRoomCreator, redactsInContent: v11.redactsInContent },
    { implicitRoomCreator: true, redactsInContent: true },
  );
  for (const v of [v10, v11]) {
    assert.equal(v.integerPowerLevels, true);
    assert.equal(v.restrictedJoinRule, true);
    assert.equal(v.knockRestrictedJoinRule, true);
    assert.equal(v.knockJoinRule, true);
  }
  assert.deepEqual(v10.redaction, {
    keepOriginMembershipPrevState: true,
    keepAllCreateContent: false,
    keepPowerLevelsInvite: false,
    keepRedactionContentRedacts: false,
    keepThirdPartyInviteSigned: false,
    keepJoinAuthorisedViaUsersServer: true,
    keepJoinRulesAllow: true,
  });
  assert.deepEqual(v11.redaction, {
    keepOriginMembershipPrevState: false,
    keepAllCreateContent: true,
    keepPowerLevelsInvite: true,
    keepRedactionContentRedacts: true,
    keepThirdPartyInviteSigned: true,
    keepJoinAuthorisedViaUsersServer: true,
    keepJoinRulesAllow: true,
  });
  assert.ok(Object.isFrozen(v10) && Object.isFrozen(v11.redaction) && Object.isFrozen(ROOM_VERSIONS));
});
