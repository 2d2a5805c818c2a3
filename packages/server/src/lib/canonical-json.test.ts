import { test } from "node:test";
import assert from "node:assert/strict";
import { assertCanonicalJsonSafe, canonicalJson, CanonicalJsonError, compareCodePoints } from "./canonical-json.js";

// The examples of the spec appendix "Canonical JSON", as written there (parsed from source text
// so that -0 and 1e10 reach the encoder exactly as a JSON parser produces them).
const SPEC_EXAMPLES: Array<[string, string]> = [
  ["{}", "{}"],
  ['{\n    "one": 1,\n    "two": "Two"\n}', '{"one":1,"two":"Two"}'],
  ['{\n    "b": "2",\n    "a": "1"\n}', '{"a":"1","b":"2"}'],
  ['{"b":"2","a":"1"}', '{"a":"1","b":"2"}'],
  [
    `{
      "auth": {
        "success": true,
        "mxid": "@john.doe:example.com",
        "profile": {
          "display_name": "John Doe",
          "three_pids": [
            { "medium": "email", "address": "john.doe@example.org" },
            { "medium": "msisdn", "address": "123456789" }
          ]
        }
      }
    }`,
    '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}',
  ],
  ['{\n    "a": "日本語"\n}', '{"a":"日本語"}'],
  ['{\n    "本": 2,\n    "日": 1\n}', '{"日":1,"本":2}'],
  ['{\n    "a": "\\u65E5"\n}', '{"a":"日"}'],
  ['{\n    "a": null\n}', '{"a":null}'],
  ['{\n    "a": -0,\n    "b": 1e10\n}', '{"a":0,"b":10000000000}'],
];

test("canonicalJson reproduces every example of the spec", () => {
  for (const [input, expected] of SPEC_EXAMPLES) assert.equal(canonicalJson(JSON.parse(input)), expected, input);
});

test("canonicalJson encodes scalars, arrays and nesting without whitespace", () => {
  assert.equal(canonicalJson(null), "null");
  assert.equal(canonicalJson(true), "true");
  assert.equal(canonicalJson(false), "false");
  assert.equal(canonicalJson(-42), "-42");
  assert.equal(canonicalJson("x"), '"x"');
  assert.equal(canonicalJson([]), "[]");
  assert.equal(canonicalJson([3, 1, 2]), "[3,1,2]", "array order is preserved");
  assert.equal(canonicalJson({ z: [{ b: 1, a: 2 }], a: {} }), '{"a":{},"z":[{"a":2,"b":1}]}');
});

test("canonicalJson uses only the escapes the grammar allows", () => {
  assert.equal(canonicalJson('"\\\b\f\n\r\t'), '"\\"\\\\\\b\\f\\n\\r\\t"');
  assert.equal(canonicalJson("\u0000\u0007\u000b\u001f"), '"\\u0000\\u0007\\u000b\\u001f"');
  // Everything else, including DEL, slash and non-ASCII, is written as-is (UTF-8).
  assert.equal(canonicalJson("/\u007f é 😀"), '"/\u007f é 😀"');
});

test("canonicalJson accepts the integer range limits", () => {
  assert.equal(canonicalJson(2 ** 53 - 1), "9007199254740991");
  assert.equal(canonicalJson(-(2 ** 53) + 1), "-9007199254740991");
});

test("keys are ordered by code point, not by UTF-16 code unit", () => {
  // U+FF5E is below U+1F600 as a code point, but its code unit is above the surrogate 0xD83D.
  const astral = "\u{1F600}";
  const bmpHigh = "\uFF5E";
  assert.equal(canonicalJson({ [astral]: 1, [bmpHigh]: 2, a: 3 }), `{"a":3,"${bmpHigh}":2,"${astral}":1}`);
  assert.ok(compareCodePoints(bmpHigh, astral) < 0);
  assert.ok(compareCodePoints("a", "ab") < 0);
  assert.equal(compareCodePoints("abc", "abc"), 0);
});

test("canonicalJson rejects floats and out-of-range or non-finite numbers", () => {
  for (const bad of [1.5, 0.1, 2 ** 53, -(2 ** 53), 1e300, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.throws(() => canonicalJson({ n: bad }), CanonicalJsonError, String(bad));
  }
  assert.throws(() => canonicalJson({ a: { b: [1, 2.5] } }), (err: unknown) => err instanceof CanonicalJsonError && err.path === "a.b[1]" && /floats/.test(err.message));
});

test("canonicalJson rejects lone surrogates in strings and keys", () => {
  assert.throws(() => canonicalJson({ a: "x\uD800" }), CanonicalJsonError);
  assert.throws(() => canonicalJson({ a: "\uDC00x" }), CanonicalJsonError);
  assert.throws(() => canonicalJson({ ["k\uDBFF"]: 1 }), CanonicalJsonError);
  assert.throws(() => canonicalJson(["\uDE00\uD83D"]), CanonicalJsonError, "reversed pair is two lone surrogates");
  assert.equal(canonicalJson("\uD83D\uDE00"), '"😀"');
});

test("canonicalJson rejects values JSON cannot represent", () => {
  const bad: unknown[] = [undefined, 1n, () => 1, Symbol("s"), new Date(0), new Map(), Buffer.from("x"), [undefined]];
  for (const v of bad) assert.throws(() => canonicalJson(v), CanonicalJsonError);
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assert.throws(() => canonicalJson(cyclic), /circular/);
});

test("undefined object properties are omitted, as JSON.stringify does", () => {
  assert.equal(canonicalJson({ a: undefined, b: 1 }), '{"b":1}');
  // A shared (non-circular) sub-object is fine.
  const shared = { x: 1 };
  assert.equal(canonicalJson({ a: shared, b: shared }), '{"a":{"x":1},"b":{"x":1}}');
  assert.equal(canonicalJson(Object.assign(Object.create(null) as object, { k: "v" })), '{"k":"v"}');
});

test("assertCanonicalJsonSafe checks the same rules and the nesting depth", () => {
  assert.doesNotThrow(() => assertCanonicalJsonSafe({ body: "hi", n: 1, list: [true, null] }));
  assert.throws(() => assertCanonicalJsonSafe({ n: 0.5 }), CanonicalJsonError);
  assert.throws(() => assertCanonicalJsonSafe({ s: "\uD800" }), CanonicalJsonError);
  assert.doesNotThrow(() => assertCanonicalJsonSafe({ a: 1 }, 1));
  assert.throws(() => assertCanonicalJsonSafe({ a: {} }, 1), /nesting deeper than 1/);
  assert.doesNotThrow(() => assertCanonicalJsonSafe({ a: { b: [1] } }, 3));
  assert.throws(() => assertCanonicalJsonSafe({ a: { b: [[1]] } }, 3), CanonicalJsonError);
  assert.doesNotThrow(() => assertCanonicalJsonSafe("scalar", 0));
  // The same limit applies to canonicalJson, so hostile nesting cannot blow the stack.
  let deep: unknown = 1;
  for (let i = 0; i < 10_000; i++) deep = [deep];
  assert.throws(() => canonicalJson(deep), CanonicalJsonError);
});
