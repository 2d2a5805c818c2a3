import { test } from "node:test";
import assert from "node:assert/strict";
import { addressMatcher } from "./address-list.js";

test("addresses and CIDR ranges match, including IPv4-mapped IPv6; anything else does not", () => {
  const m = addressMatcher(["127.0.0.1", "::1", "10.0.0.0/8", "fd00::/8"]);
  for (const a of ["127.0.0.1", "::ffff:127.0.0.1", "::1", "10.200.3.4", "fd12::5"]) assert.equal(m(a), true, a);
  for (const a of ["127.0.0.2", "11.0.0.1", "fe80::1", "", "localhost"]) assert.equal(m(a), false, a);
  assert.equal(addressMatcher([])("127.0.0.1"), false);
});
