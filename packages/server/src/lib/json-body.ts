/** Parsing of request bodies: strict UTF-8, JSON, and a bound on nesting depth. */

export class JsonBodyError extends Error {
  constructor(
    message: string,
    readonly kind: "utf8" | "syntax" | "depth" | "type" | "nul" | "surrogate" | "proto",
  ) {
    super(message);
  }
}

const decoder = new TextDecoder("utf-8", { fatal: true });

/** Deepest nesting of arrays/objects; iterative so a hostile body cannot overflow the stack. */
export function jsonDepth(value: unknown, limit: number): number {
  let max = 0;
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== "object") continue;
    if (d > max) max = d;
    if (max > limit) return max;
    for (const child of Array.isArray(v) ? v : Object.values(v)) {
      if (child !== null && typeof child === "object") stack.push([child, d + 1]);
    }
  }
  return max;
}

export function parseJsonBody(buf: Buffer, maxDepth: number): unknown {
  let text: string;
  try {
    text = decoder.decode(buf);
  } catch {
    throw new JsonBodyError("Request body is not valid UTF-8", "utf8");
  }
  if (text.trim() === "") return undefined;
  // A deeply nested body can blow V8's parser stack before we get to count depth, so count
  // brackets first; this over-approximates (brackets in strings count) only towards refusing.
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92) i++;
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 || c === 91) {
      if (++depth > maxDepth) throw new JsonBodyError(`JSON nesting deeper than ${maxDepth} levels`, "depth");
    } else if (c === 125 || c === 93) depth--;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new JsonBodyError(`Request body is not valid JSON: ${(err as Error).message}`, "syntax");
  }
  // PostgreSQL text cannot hold U+0000, and no Matrix field needs it: refuse it everywhere rather
  // than fail half-way through a write.
  if (text.includes("\\u0000") && containsString(value, (v) => v.includes("\u0000"))) throw new JsonBodyError("Strings may not contain U+0000", "nul");
  // Valid UTF-8 cannot carry a lone surrogate, but a `\uD800` escape can. Such a string has no
  // UTF-8 encoding: the database would store U+FFFD instead, and what we store, hash or hand to
  // other clients would no longer be what the client sent.
  if (SURROGATE_ESCAPE.test(text) && containsString(value, (v) => LONE_SURROGATE.test(v))) throw new JsonBodyError("Strings may not contain unpaired UTF-16 surrogates", "surrogate");
  // JSON.parse makes `__proto__` an ordinary own key, but the first handler that copies keys into
  // another object (`out[key] ??= {}`) turns it into Object.prototype: one request could then change
  // every object in the process. Fastify's own parser refuses these too (secure-json-parse).
  // (A key can be spelt with escapes, "\u005f_proto__", hence the `\u` in the pre-check.)
  if (/__proto__|constructor|\\u/.test(text) && hasPrototypeKeys(value)) {
    throw new JsonBodyError("Keys named __proto__, or constructor with a prototype, are not allowed", "proto");
  }
  return value;
}

function hasPrototypeKeys(value: unknown): boolean {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (Array.isArray(v)) {
      for (const child of v) stack.push(child);
    } else if (v !== null && typeof v === "object") {
      for (const [k, child] of Object.entries(v)) {
        if (k === "__proto__") return true;
        if (k === "constructor" && child !== null && typeof child === "object" && Object.prototype.hasOwnProperty.call(child, "prototype")) return true;
        stack.push(child);
      }
    }
  }
  return false;
}

const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Whether any string or object key in the value matches `bad`; iterative, like {@link jsonDepth}. */
function containsString(value: unknown, bad: (s: string) => boolean): boolean {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === "string") {
      if (bad(v)) return true;
    } else if (Array.isArray(v)) {
      // One by one: spreading a 500,000-element array into push() overflows the call stack.
      for (const child of v) stack.push(child);
    } else if (v !== null && typeof v === "object") {
      for (const [k, child] of Object.entries(v)) {
        if (bad(k)) return true;
        stack.push(child);
      }
    }
  }
  return false;
}
