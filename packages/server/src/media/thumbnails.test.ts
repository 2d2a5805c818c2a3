import { test } from "node:test";
import assert from "node:assert/strict";
import { sniffImageFormat, thumbnailBox, thumbnailDimensions } from "./thumbnails.js";

const bytes = (...parts: Array<string | number[]>) => Buffer.concat(parts.map((p) => (typeof p === "string" ? Buffer.from(p, "latin1") : Buffer.from(p))));

test("formats are recognised by their leading bytes only", () => {
  assert.equal(sniffImageFormat(bytes([0xff, 0xd8, 0xff, 0xe0])), "jpeg");
  assert.equal(sniffImageFormat(bytes([0x89], "PNG\r\n\x1a\n")), "png");
  assert.equal(sniffImageFormat(bytes("GIF89a")), "gif");
  assert.equal(sniffImageFormat(bytes("GIF87a")), "gif");
  assert.equal(sniffImageFormat(bytes("RIFF", [1, 2, 3, 4], "WEBPVP8 ")), "webp");
  // Formats libvips could parse but we never hand it:
  assert.equal(sniffImageFormat(bytes('<svg xmlns="http://www.w3.org/2000/svg">')), null);
  assert.equal(sniffImageFormat(bytes("<?xml version")), null);
  assert.equal(sniffImageFormat(bytes("II*\0")), null);
  assert.equal(sniffImageFormat(bytes("MM\0*")), null);
  assert.equal(sniffImageFormat(bytes("%PDF-1.7")), null);
  assert.equal(sniffImageFormat(bytes([0, 0, 0, 0x18], "ftypheic")), null);
  assert.equal(sniffImageFormat(bytes("RIFF", [1, 2, 3, 4], "WAVE")), null);
  assert.equal(sniffImageFormat(bytes([0x89], "PN")), null);
  assert.equal(sniffImageFormat(Buffer.alloc(0)), null);
});

test("requests map onto a bounded set of boxes", () => {
  assert.deepEqual(thumbnailBox(32, 32, "scale"), { width: 32, height: 32 });
  assert.deepEqual(thumbnailBox(50, 40, "scale"), { width: 96, height: 96 });
  assert.deepEqual(thumbnailBox(300, 100, "scale"), { width: 320, height: 240 });
  assert.deepEqual(thumbnailBox(5000, 5000, "scale"), { width: 800, height: 600 });
  assert.deepEqual(thumbnailBox(96, 96, "crop"), { width: 96, height: 96 });
  assert.deepEqual(thumbnailBox(100, 100, "crop"), { width: 320, height: 320 });
  assert.deepEqual(thumbnailBox(320, 240, "crop"), { width: 320, height: 240 });
  assert.deepEqual(thumbnailBox(600, 330, "crop"), { width: 640, height: 360 });
  assert.deepEqual(thumbnailBox(90, 160, "crop"), { width: 180, height: 320 });
  assert.deepEqual(thumbnailBox(4000, 3000, "crop"), { width: 800, height: 600 });
  const boxes = new Set<string>();
  for (let w = 1; w <= 2000; w += 7) for (let h = 1; h <= 2000; h += 11) for (const m of ["crop", "scale"] as const) boxes.add(JSON.stringify(thumbnailBox(w, h, m)));
  assert.ok(boxes.size <= 30, `${boxes.size} distinct boxes`);
});

test("scale fits inside the box, crop fills it, neither enlarges", () => {
  const src = { width: 1000, height: 500 };
  assert.deepEqual(thumbnailDimensions(src, { width: 96, height: 96 }, "scale"), { width: 96, height: 48 });
  assert.deepEqual(thumbnailDimensions(src, { width: 800, height: 600 }, "scale"), { width: 800, height: 400 });
  assert.deepEqual(thumbnailDimensions(src, { width: 96, height: 96 }, "crop"), { width: 96, height: 96 });
  assert.deepEqual(thumbnailDimensions(src, { width: 800, height: 600 }, "crop"), { width: 667, height: 500 });
  const small = { width: 20, height: 10 };
  assert.deepEqual(thumbnailDimensions(small, { width: 96, height: 96 }, "scale"), { width: 20, height: 10 });
  assert.deepEqual(thumbnailDimensions(small, { width: 32, height: 32 }, "crop"), { width: 10, height: 10 });
  assert.deepEqual(thumbnailDimensions({ width: 5000, height: 1 }, { width: 32, height: 32 }, "scale"), { width: 32, height: 1 });
});
