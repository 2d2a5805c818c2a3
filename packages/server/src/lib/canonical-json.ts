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

function pathOf(keys: ReadonlyArray<string | number>): string {
  let path = "";
  for (const key of keys) path = typeof key === "number" ? `${path}[${key}]` : path ? `${path}.${key}` : key;
  return path;
}

function isPlainObject(value: object): value is Record<string, unknown> {
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

function describe(value: unknown): string {
  if (typeof value === "object" && value !== null) return (value as object).constructor?.name ?? "object";
  return typeof value;
}

// Control characters are exactly what JSON must escape.
// eslint-disable-next-line no-control-regex
const NEEDS_ESCAPE = /["\\\u0000-\u001f]/;

/** A checked string as JSON: only `"`, `\\` and control characters need JSON.stringify's escapes. */
function quote(s: string): string {
  return NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : `"${s}"`;
}

/**
 * State of one encoding. The path of the value being walked is kept as a stack of keys and
 * turned into text only for an error: building it for every value cost more than the encoding.
 */
class Walker {
  readonly keys: Array<string | number> = [];
  readonly ancestors: object[] = [];

  constructor(
    readonly maxDepth: number,
    readonly encode: boolean,
    readonly known: ReadonlyMap<object, string> | undefined,
  ) {}

  fail(message: string): never {
    throw new CanonicalJsonError(message, pathOf(this.keys));
  }

  checkString(s: string, what: string): void {
    if (LONE_SURROGATE.test(s)) this.fail(`${what} contains a lone UTF-16 surrogate`);
  }

  /**
   * Checks a value and, when encoding, returns its canonical JSON (else ""). Object properties
   * whose value is `undefined` are skipped, exactly as JSON.stringify does, so the encoding we
   * hash always matches the JSON we store.
   */
  walk(value: unknown, depth: number): string {
    switch (typeof value) {
      case "string":
        this.checkString(value, "string");
        return this.encode ? quote(value) : "";
      case "number":
        if (!Number.isFinite(value)) this.fail("non-finite numbers are not allowed");
        if (!Number.isInteger(value)) this.fail("floats are not allowed");
        if (value > MAX_SAFE_CANONICAL_INTEGER || value < MIN_SAFE_CANONICAL_INTEGER) this.fail("integer out of range [-(2^53)+1, 2^53-1]");
        // String() writes -0 as 0, which is what the spec's example expects, and safe integers without exponent.
        return this.encode ? String(value) : "";
      case "boolean":
        return this.encode ? (value ? "true" : "false") : "";
      case "object":
        break;
      default:
        this.fail(`${typeof value} is not a JSON value`);
    }
    if (value === null) return this.encode ? "null" : "";
    const done = this.known?.get(value);
    if (done !== undefined) return done;
    if (depth >= this.maxDepth) this.fail(`nesting deeper than ${this.maxDepth} levels`);
    if (this.ancestors.includes(value)) this.fail("circular reference");
    this.ancestors.push(value);
    let out = "";
    const keys = this.keys;
    if (Array.isArray(value)) {
      out = "[";
      for (let i = 0; i < value.length; i++) {
        keys.push(i);
        const item: unknown = value[i];
        if (item === undefined) this.fail("undefined is not a JSON value");
        const encoded = this.walk(item, depth + 1);
        if (this.encode) out += i > 0 ? `,${encoded}` : encoded;
        keys.pop();
      }
      out += "]";
    } else {
      if (!isPlainObject(value)) this.fail(`${describe(value)} is not a JSON value`);
      const names = Object.keys(value).filter((k) => value[k] !== undefined);
      for (const k of names) {
        if (LONE_SURROGATE.test(k)) {
          keys.push(k);
          this.checkString(k, "key");
        }
      }
      names.sort(compareCodePoints);
      out = "{";
      let first = true;
      for (const k of names) {
        keys.push(k);
        const encoded = this.walk(value[k], depth + 1);
        if (this.encode) {
          out += first ? `${quote(k)}:${encoded}` : `,${quote(k)}:${encoded}`;
          first = false;
        }
        keys.pop();
      }
      out += "}";
    }
    this.ancestors.pop();
    return this.encode ? out : "";
  }
}

/**
 * Encodes a value as canonical JSON; throws CanonicalJsonError if it has no canonical form.
 *
 * `known` maps objects inside `value` to their canonical JSON, already encoded where they sit
 * (canonicalJsonMember): they are written as given, not walked again. An event's content is
 * encoded once and spliced into each encoding of the event that contains it.
 */
export function canonicalJson(value: unknown, maxDepth: number = DEFAULT_MAX_DEPTH, known?: ReadonlyMap<object, string>): string {
  return new Walker(maxDepth, true, known).walk(value, 0);
}

/**
 * canonicalJson of `value` as it is encoded as the member `key` of an object: nesting limits and
 * error paths count from that object, so the result can be passed as `known` when the object is
 * encoded and fails exactly where encoding the object would.
 */
export function canonicalJsonMember(key: string, value: unknown, maxDepth: number = DEFAULT_MAX_DEPTH): string {
  const walker = new Walker(maxDepth, true, undefined);
  walker.keys.push(key);
  return walker.walk(value, 1);
}

/**
 * Checks that a value could be encoded as canonical JSON, with at most `maxDepth` levels of nested
 * objects/arrays (the root object is level 1), without building the string. Used to refuse client
 * content up front rather than fail later when the event is hashed.
 */
export function assertCanonicalJsonSafe(value: unknown, maxDepth: number = DEFAULT_MAX_DEPTH): void {
  new Walker(maxDepth, false, undefined).walk(value, 0);
}
