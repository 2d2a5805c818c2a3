import { test } from "node:test";
import assert from "node:assert/strict";
import { parseCsv } from "./csv.js";

test("CSV: quotes, escaped quotes, embedded commas and line breaks, CRLF, blank lines, BOM", () => {
  const text = '\uFEFFa,"b, c","say ""hi"""\r\n\r\nd,"multi\nline",e\nf';
  assert.deepEqual(parseCsv(text), [
    { line: 1, fields: ["a", "b, c", 'say "hi"'] },
    { line: 3, fields: ["d", "multi\nline", "e"] },
    { line: 5, fields: ["f"] },
  ]);
  assert.deepEqual(parseCsv(""), []);
  assert.deepEqual(parseCsv("x,\n"), [{ line: 1, fields: ["x", ""] }]);
});
