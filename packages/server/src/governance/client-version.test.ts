import { test } from "node:test";
import assert from "node:assert/strict";
import { compareVersions, productTokens, tooOldClient } from "./client-version.js";

test("versions compare numerically, missing parts count as 0, pre-releases sort first", () => {
  assert.equal(compareVersions("1.10.0", "1.9.9"), 1);
  assert.equal(compareVersions("1.2", "1.2.0"), 0);
  assert.equal(compareVersions("2.0.0-rc1", "2.0.0"), -1);
  assert.equal(compareVersions("2.0.0", "2.0.0-rc1"), 1);
  assert.equal(compareVersions("0.9", "1"), -1);
});

test("product tokens are read from header values", () => {
  assert.deepEqual(productTokens("Element/1.11.4 (Android 13; Pixel 7) matrix-sdk/0.7"), [
    { name: "Element", version: "1.11.4" },
    { name: "matrix-sdk", version: "0.7" },
  ]);
  assert.deepEqual(productTokens(undefined), []);
});

test("the Revier header wins over the User-Agent; unknown clients pass", () => {
  const min = { "revier-web": "2.0.0", element: "1.11.0" };
  assert.equal(tooOldClient(min, { revierClient: "revier-web/2.0.0", userAgent: "Element/1.0.0" }), undefined);
  assert.equal(tooOldClient(min, { revierClient: "revier-web/1.9.0" })?.minimum, "2.0.0");
  assert.equal(tooOldClient(min, { userAgent: "Element/1.10.9 (iOS)" })?.name, "element");
  assert.equal(tooOldClient(min, { userAgent: "FluffyChat/1.0.0" }), undefined);
  assert.equal(tooOldClient({}, { revierClient: "revier-web/0.1" }), undefined);
});
