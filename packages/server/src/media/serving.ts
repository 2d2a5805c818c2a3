/**
 * Pure helpers for serving stored media safely: which types a browser may render inline, how a
 * file name goes into Content-Disposition, and how a Range header is read.
 */

/**
 * Served with every media response. Even if a browser is talked into rendering an upload as a
 * page, it runs sandboxed, without scripts and without reaching anything.
 */
export const MEDIA_CSP = "sandbox; default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; media-src 'self'; object-src 'self'; frame-ancestors 'none'";

/**
 * Images, audio and video from the spec's list of types safe to serve inline. SVG is absent on
 * purpose: it is a document that can carry script.
 */
const INLINE_TYPES = new Set([
  "image/jpeg",
  "image/gif",
  "image/png",
  "image/apng",
  "image/webp",
  "image/avif",
  "video/mp4",
  "video/webm",
  "video/ogg",
  "video/quicktime",
  "audio/mp4",
  "audio/webm",
  "audio/aac",
  "audio/mpeg",
  "audio/ogg",
  "audio/wave",
  "audio/wav",
  "audio/x-wav",
  "audio/x-pn-wav",
  "audio/flac",
  "audio/x-flac",
]);

const TOKEN = "[A-Za-z0-9!#$%&'*+.^_`|~-]+";
const CONTENT_TYPE = new RegExp(`^${TOKEN}/${TOKEN}(\\s*;\\s*${TOKEN}=(${TOKEN}|"[\\x20-\\x21\\x23-\\x5b\\x5d-\\x7e]*"))*$`);

/**
 * The content type to store for an upload: the client's, if it is a well-formed media type,
 * otherwise `application/octet-stream` (also the spec's default when none is given).
 */
export function normaliseContentType(header: string | undefined): string {
  const value = header?.trim();
  if (!value || value.length > 255 || !CONTENT_TYPE.test(value)) return "application/octet-stream";
  return value;
}

/** The type without parameters, lower-cased: `Image/PNG; x=y` → `image/png`. */
export function essenceOf(contentType: string): string {
  return (contentType.split(";")[0] ?? "").trim().toLowerCase();
}

export function isInlineType(contentType: string): boolean {
  return INLINE_TYPES.has(essenceOf(contentType));
}

// RFC 8187 attr-char: everything else is percent-encoded in filename*.
const ATTR_CHAR = /[A-Za-z0-9!#$&+\-.^_`|~]/;

function encodeRfc8187(value: string): string {
  let out = "";
  for (const byte of Buffer.from(value, "utf8")) {
    const c = String.fromCharCode(byte);
    out += byte < 0x80 && ATTR_CHAR.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/**
 * `Content-Disposition` per RFC 6266. A plain ASCII name goes in `filename` as is; any other name
 * gets an ASCII stand-in there and the exact name, UTF-8 and percent-encoded, in `filename*`.
 */
export function contentDisposition(kind: "inline" | "attachment", filename: string | null): string {
  if (filename === null || filename === "") return kind;
  if (/^[\x20-\x7e]*$/.test(filename) && !/["\\]/.test(filename)) return `${kind}; filename="${filename}"`;
  const fallback = filename.replace(/[^\x20-\x7e]|["\\]/g, "_");
  return `${kind}; filename="${fallback}"; filename*=UTF-8''${encodeRfc8187(filename)}`;
}

/**
 * Reads a `Range` header for a resource of `size` bytes. Returns the inclusive range to send,
 * `"unsatisfiable"` for a range that lies outside the content, or null to send everything (no
 * header, a unit other than bytes, several ranges, or a malformed value — RFC 9110 lets a server
 * ignore those).
 */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | "unsatisfiable" | null {
  if (header === undefined) return null;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return null;
  const [, first, last] = m as unknown as [string, string, string];
  if (first === "" && last === "") return null;
  if (first === "") {
    const suffix = Number(last);
    if (suffix === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  const end = last === "" ? size - 1 : Math.min(Number(last), size - 1);
  if (last !== "" && Number(last) < start) return null;
  if (start >= size) return "unsatisfiable";
  return { start, end };
}

/** Whether an `If-None-Match` header matches the entity tag (weak comparison, as RFC 9110 asks). */
export function matchesEtag(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  if (header.trim() === "*") return true;
  return header.split(",").some((t) => t.trim().replace(/^W\//, "") === etag);
}
