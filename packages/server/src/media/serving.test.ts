import { test } from "node:test";
import assert from "node:assert/strict";
import { contentDisposition, essenceOf, isInlineType, matchesEtag, normaliseContentType, parseRange } from "./serving.js";

test("only images, audio and video are served inline; SVG and HTML are not", () => {
  for (const t of ["image/png", "IMAGE/JPEG; q=1", "video/mp4", "audio/ogg; codecs=opus"]) assert.ok(isInlineType(t), t);
  for (const t of ["image/svg+xml", "text/html", "application/pdf", "application/octet-stream", "text/plain", ""]) assert.ok(!isInlineType(t), t);
  assert.equal(essenceOf("Image/PNG ; x=y"), "image/png");
});

test("content types are kept when well-formed and replaced by octet-stream otherwise", () => {
  assert.equal(normaliseContentType("image/png"), "image/png");
  assert.equal(normaliseContentType("text/plain; charset=utf-8"), "text/plain; charset=utf-8");
  assert.equal(normaliseContentType(undefined), "application/octet-stream");
  assert.equal(normaliseContentType("not a type"), "application/octet-stream");
  assert.equal(normaliseContentType("text/html\r\nX-Evil: 1"), "application/octet-stream");
  assert.equal(normaliseContentType(`image/${"x".repeat(300)}`), "application/octet-stream");
});

test("Content-Disposition carries the exact file name per RFC 6266", () => {
  assert.equal(contentDisposition("inline", null), "inline");
  assert.equal(contentDisposition("attachment", "Bericht.pdf"), 'attachment; filename="Bericht.pdf"');
  assert.equal(contentDisposition("attachment", "Übergabe 2.pdf"), "attachment; filename=\"_bergabe 2.pdf\"; filename*=UTF-8''%C3%9Cbergabe%202.pdf");
  assert.equal(contentDisposition("attachment", 'a"b\\c.txt'), "attachment; filename=\"a_b_c.txt\"; filename*=UTF-8''a%22b%5Cc.txt");
  assert.equal(contentDisposition("inline", "it's (1).png"), "inline; filename=\"it's (1).png\"");
  // Characters RFC 8187 does not allow unencoded are encoded even where encodeURIComponent would not.
  assert.match(contentDisposition("attachment", "é'(*).txt"), /filename\*=UTF-8''%C3%A9%27%28%2A%29\.txt$/);
});

test("Range headers: single ranges, suffixes, open ends, unsatisfiable and ignored forms", () => {
  assert.equal(parseRange(undefined, 100), null);
  assert.deepEqual(parseRange("bytes=0-9", 100), { start: 0, end: 9 });
  assert.deepEqual(parseRange("bytes=90-", 100), { start: 90, end: 99 });
  assert.deepEqual(parseRange("bytes=90-500", 100), { start: 90, end: 99 });
  assert.deepEqual(parseRange("bytes=-10", 100), { start: 90, end: 99 });
  assert.deepEqual(parseRange("bytes=-500", 100), { start: 0, end: 99 });
  assert.equal(parseRange("bytes=100-", 100), "unsatisfiable");
  assert.equal(parseRange("bytes=-0", 100), "unsatisfiable");
  assert.equal(parseRange("bytes=0-0", 0), "unsatisfiable");
  assert.equal(parseRange("bytes=5-2", 100), null);
  assert.equal(parseRange("bytes=0-1,5-6", 100), null);
  assert.equal(parseRange("items=0-1", 100), null);
  assert.equal(parseRange("bytes=-", 100), null);
});

test("If-None-Match matches strong and weak forms of the tag", () => {
  assert.ok(matchesEtag('"abc"', '"abc"'));
  assert.ok(matchesEtag('W/"abc", "def"', '"abc"'));
  assert.ok(matchesEtag("*", '"abc"'));
  assert.ok(!matchesEtag('"abd"', '"abc"'));
  assert.ok(!matchesEtag(undefined, '"abc"'));
});
