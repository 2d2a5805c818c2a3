import { test } from "node:test";
import assert from "node:assert/strict";
import { hasQueryParam } from "./app.js";

test("hasQueryParam decodes names as URLSearchParams does, and never looks into values", () => {
  const cases: Array<[string, boolean]> = [
    ["access_token=x", true],
    ["since=s1&access_token=x", true],
    ["access_token", true],
    ["access%5Ftoken=x", true],
    ["%61ccess_token=x&b=2", true],
    ["a=1&access%5ftoken", true],
    ["x=access_token", false],
    ["filter=%7B%22access_token%22%3A1%7D", false],
    ["access_tokens=x", false],
    ["access+token=x", false],
    ["", false],
  ];
  for (const [query, expected] of cases) {
    assert.equal(hasQueryParam(query, "access_token"), expected, query);
    assert.equal(new URLSearchParams(query).has("access_token"), expected, `URLSearchParams agrees on ${query}`);
  }
});
