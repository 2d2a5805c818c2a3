/**
 * Base64 as Matrix uses it: binary values on the wire are standard-alphabet base64 without `=`
 * padding; event ids (room v4+) use the URL-safe alphabet. Decoding is lenient about padding and
 * alphabet, as the spec asks ("SHOULD accept input with or without padding").
 */

/** Standard alphabet, no padding: keys, signatures and hashes in JSON. */
export function encodeUnpaddedBase64(buf: Uint8Array): string {
  return Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).toString("base64").replace(/=+$/, "");
}

/** URL-safe alphabet, no padding: event ids of room versions 4 and later. */
export function encodeUrlSafeUnpaddedBase64(buf: Uint8Array): string {
  return Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).toString("base64url");
}

// Either alphabet (even mixed), then at most two padding characters.
const BASE64_RE = /^[A-Za-z0-9+/_-]*(={0,2})$/;

/**
 * Decodes padded or unpadded, standard or URL-safe base64. Node's own decoder silently skips
 * characters it does not understand, so a signature with a stray character would decode to
 * different bytes rather than fail; this one throws on anything that is not base64.
 */
export function decodeBase64(s: string): Buffer {
  const m = BASE64_RE.exec(s);
  if (!m) throw new Error("Invalid base64: unexpected character");
  const padding = m[1]?.length ?? 0;
  const dataLength = s.length - padding;
  // A single leftover character cannot encode a whole byte.
  if (dataLength % 4 === 1) throw new Error("Invalid base64: bad length");
  if (padding > 0 && s.length % 4 !== 0) throw new Error("Invalid base64: bad padding");
  return Buffer.from(s.slice(0, dataLength).replace(/-/g, "+").replace(/_/g, "/"), "base64");
}
