/** Parsing of request bodies: strict UTF-8, JSON, and a bound on nesting depth. */

export class JsonBodyError extends Error {
  constructor(
    message: string,
    readonly kind: "utf8" | "syntax" | "depth" | "type" | "nul",
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
  if (text.includes("\\u0000") && containsNul(value)) throw new JsonBodyError("Strings may not contain U+0000", "nul");
  return value;
}

function containsNul(value: unknown): boolean {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === "string") {
      if (v.includes("\u0000")) return true;
    } else if (Array.isArray(v)) stack.push(...v);
    else if (v !== null && typeof v === "object") {
      for (const [k, child] of Object.entries(v)) {
        if (k.includes("\u0000")) return true;
        stack.push(child);
      }
    }
  }
  return false;
}
