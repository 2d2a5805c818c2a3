/**
 * Matrix canonical JSON (spec appendix "Canonical JSON"): the shortest UTF-8 encoding with object
 * keys sorted by Unicode code point, integers only in [-(2^53)+1, 2^53-1]. Hashes, signatures and
 * event ids are computed over this encoding, so anything that could encode ambiguously (floats,
 * lone surrogates, non-plain objects) is refused rather than guessed at.
 */

export class CanonicalJsonError extends Error {
  override name = "CanonicalJsonError";
  constructor(
    message: string,
    /** Where in the value the problem is, e.g. `content.body`; empty for the root. */
    readonly path: string = "",
  ) {
    super(path ? `${path}: ${message}` : message);
  }
}

export const MAX_SAFE_CANONICAL_INTEGER = Number.MAX_SAFE_INTEGER; // 2^53 - 1
export const MIN_SAFE_CANONICAL_INTEGER = Number.MIN_SAFE_INTEGER; // -(2^53) + 1

/** Nesting allowed by default; deeper values are almost certainly abuse, not real event content. */
export const DEFAULT_MAX_DEPTH = 100;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Orders strings by Unicode code point. JavaScript's default sort compares UTF-16 code units,
 * which puts astral characters (surrogate pairs, 0xD800..) before U+E000..U+FFFF; Python and every
 * other homeserver sort by code point, so we must too or our signatures would not verify elsewhere.
 */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const ca = a.charCodeAt(i);
    const cb = b.charCodeAt(i);
    if (ca === cb) continue;
    const sa = ca >= 0xd800 && ca <= 0xdfff;
    const sb = cb >= 0xd800 && cb <= 0xdfff;
    // Only when exactly one side is a surrogate does code-unit order disagree with code-point order.
    if (sa !== sb) return sa ? 1 : -1;
    return ca - cb;
  }
  return a.length - b.length;
}

function joinPath(path: string, key: string | number): string {
  if (typeof key === "number") return `${path}[${key}]`;
  return path ? `${path}.${key}` : key;
}

function isPlainObject(value: object): value is Record<string, unknown> {
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

function checkString(s: string, path: string, what: string): void {
  if (LONE_SURROGATE.test(s)) throw new CanonicalJsonError(`${what} contains a lone UTF-16 surrogate`, path);
}

function checkNumber(n: number, path: string): void {
  if (!Number.isFinite(n)) throw new CanonicalJsonError("non-finite numbers are not allowed", path);
  if (!Number.isInteger(n)) throw new CanonicalJsonError("floats are not allowed", path);
  if (n > MAX_SAFE_CANONICAL_INTEGER || n < MIN_SAFE_CANONICAL_INTEGER) throw new CanonicalJsonError("integer out of range [-(2^53)+1, 2^53-1]", path);
}

function describe(value: unknown): string {
  if (typeof value === "object" && value !== null) return (value as object).constructor?.name ?? "object";
  return typeof value;
}

/**
 * Walks a value once, either checking it or encoding it. Object properties whose value is
 * `undefined` are skipped, exactly as JSON.stringify does, so the encoding we hash always matches
 * the JSON we store.
 */
function walk(value: unknown, path: string, depth: number, maxDepth: number, ancestors: Set<object>, out: string[] | null): void {
  switch (typeof value) {
    case "string":
      checkString(value, path, "string");
      out?.push(JSON.stringify(value));
      return;
    case "number":
      checkNumber(value, path);
      // JSON.stringify writes -0 as 0, which is what the spec's example expects.
      out?.push(JSON.stringify(value));
      return;
    case "boolean":
      out?.push(value ? "true" : "false");
      return;
    case "object":
      break;
    default:
      throw new CanonicalJsonError(`${typeof value} is not a JSON value`, path);
  }
  if (value === null) {
    out?.push("null");
    return;
  }
  if (depth >= maxDepth) throw new CanonicalJsonError(`nesting deeper than ${maxDepth} levels`, path);
  if (ancestors.has(value)) throw new CanonicalJsonError("circular reference", path);
  ancestors.add(value);
  if (Array.isArray(value)) {
    out?.push("[");
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out?.push(",");
      const item: unknown = value[i];
      if (item === undefined) throw new CanonicalJsonError("undefined is not a JSON value", joinPath(path, i));
      walk(item, joinPath(path, i), depth + 1, maxDepth, ancestors, out);
    }
    out?.push("]");
  } else {
    if (!isPlainObject(value)) throw new CanonicalJsonError(`${describe(value)} is not a JSON value`, path);
    const keys = Object.keys(value).filter((k) => value[k] !== undefined);
    for (const k of keys) checkString(k, joinPath(path, k), "key");
    keys.sort(compareCodePoints);
    out?.push("{");
    let first = true;
    for (const k of keys) {
      if (!first) out?.push(",");
      first = false;
      out?.push(JSON.stringify(k), ":");
      walk(value[k], joinPath(path, k), depth + 1, maxDepth, ancestors, out);
    }
    out?.push("}");
  }
  ancestors.delete(value);
}

/** Encodes a value as canonical JSON; throws CanonicalJsonError if it has no canonical form. */
export function canonicalJson(value: unknown, maxDepth: number = DEFAULT_MAX_DEPTH): string {
  const out: string[] = [];
  walk(value, "", 0, maxDepth, new Set(), out);
  return out.join("");
}

/**
 * Checks that a value could be encoded as canonical JSON, with at most `maxDepth` levels of nested
 * objects/arrays (the root object is level 1), without building the string. Used to refuse client
 * content up front rather than fail later when the event is hashed.
 */
export function assertCanonicalJsonSafe(value: unknown, maxDepth: number = DEFAULT_MAX_DEPTH): void {
  walk(value, "", 0, maxDepth, new Set(), null);
}
