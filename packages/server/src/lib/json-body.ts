/** Parsing of request bodies: strict UTF-8, JSON, and a bound on nesting depth. */

export class JsonBodyError extends Error {
  constructor(
    message: string,
    readonly kind: "utf8" | "syntax" | "depth" | "type",
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
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new JsonBodyError(`Request body is not valid JSON: ${(err as Error).message}`, "syntax");
  }
}
