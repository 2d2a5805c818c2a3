/**
 * Glob matching for push rules (spec appendix "Glob-style matching"): `*` matches any run of
 * characters, `?` exactly one, everything else itself, compared case-insensitively.
 *
 * Patterns come from users and values from remote senders, so translating globs into a
 * backtracking regex would let `*a*a*a*a*b` against a long body burn seconds of CPU per event
 * and per recipient. Instead the pattern is run as a small NFA over the value: at every value
 * position we keep the set of pattern positions still alive, so the cost is bounded by
 * O(pattern length × value length) whatever the input.
 */

/** Longer patterns are never matched: no real rule needs them, and they bound the work per character. */
export const MAX_GLOB_PATTERN_LENGTH = 1000;

/**
 * How much of a value is looked at. Federation caps whole events at 64 KiB, so real bodies fit;
 * anything longer is only searched within its first this-many characters (word mode) or treated
 * as not matching (whole-value mode, where a truncated comparison could give a wrong answer).
 */
export const MAX_GLOB_VALUE_LENGTH = 65_536;

/**
 * `whole`: the pattern must match the entire value (every `event_match` key except `content.body`).
 * `word`: the pattern must match some substring that starts and ends at a word boundary (content
 * rules, and `event_match` on `content.body`).
 */
export type GlobMode = "whole" | "word";

const STAR = -1;
const QUESTION = -2;

export interface CompiledGlob {
  /** Whether the pattern could be compiled; an over-long pattern never matches anything. */
  readonly valid: boolean;
  matches(value: string, mode?: GlobMode): boolean;
}

/** Compiles a pattern once so that a rule checked against many events does not re-parse it. */
export function compileGlob(pattern: string): CompiledGlob {
  if (pattern.length > MAX_GLOB_PATTERN_LENGTH) return NEVER;
  const tokens: number[] = [];
  let literal = true;
  for (const ch of pattern.toLowerCase()) {
    if (ch === "*") {
      literal = false;
      // Runs of stars are equivalent to one and would only add redundant NFA states.
      if (tokens[tokens.length - 1] !== STAR) tokens.push(STAR);
    } else if (ch === "?") {
      literal = false;
      tokens.push(QUESTION);
    } else {
      tokens.push(ch.codePointAt(0)!);
    }
  }
  const lowered = pattern.toLowerCase();
  return {
    valid: true,
    matches(value: string, mode: GlobMode = "whole"): boolean {
      if (mode === "whole") {
        if (value.length > MAX_GLOB_VALUE_LENGTH) return false;
        const v = value.toLowerCase();
        return literal ? v === lowered : runNfa(tokens, codePoints(v), false);
      }
      const v = (value.length > MAX_GLOB_VALUE_LENGTH ? value.slice(0, MAX_GLOB_VALUE_LENGTH) : value).toLowerCase();
      return literal ? literalWordMatch(lowered, v) : runNfa(tokens, codePoints(v), true);
    },
  };
}

const NEVER: CompiledGlob = { valid: false, matches: () => false };

/** One-off convenience form of {@link compileGlob}. */
export function globMatches(pattern: string, value: string, mode: GlobMode = "whole"): boolean {
  return compileGlob(pattern).matches(value, mode);
}

/** The spec's word characters: `[A-Za-z0-9_]`. Everything else (including non-ASCII) separates words. */
export function isWordChar(cp: number): boolean {
  return (cp >= 0x30 && cp <= 0x39) || (cp >= 0x41 && cp <= 0x5a) || (cp >= 0x61 && cp <= 0x7a) || cp === 0x5f;
}

/**
 * A match may start or end at position `i` when `i` is an edge of the value or either neighbouring
 * character is a non-word character, so `@room` is found in `hi @room!` and `room` in `@room`, but
 * `cake` is not found in `cakes`.
 */
function isBoundary(v: ArrayLike<number>, i: number): boolean {
  return i === 0 || i === v.length || !isWordChar(v[i - 1]!) || !isWordChar(v[i]!);
}

function codePoints(s: string): Int32Array {
  const out = new Int32Array(s.length);
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const cp = s.codePointAt(i)!;
    out[n++] = cp;
    if (cp > 0xffff) i++;
  }
  return out.subarray(0, n);
}

/**
 * Case-insensitive search for `needle` taken literally (no wildcards) as a substring of `haystack`
 * that starts and ends at word boundaries, e.g. a display name in a message body.
 */
export function containsWord(haystack: string, needle: string): boolean {
  const h = haystack.length > MAX_GLOB_VALUE_LENGTH ? haystack.slice(0, MAX_GLOB_VALUE_LENGTH) : haystack;
  return literalWordMatch(needle.toLowerCase(), h.toLowerCase());
}

function literalWordMatch(needle: string, haystack: string): boolean {
  // Word characters are ASCII, so UTF-16 indices serve as well as code-point indices for the
  // boundary test: a surrogate half is never a word character, just like the code point it belongs to.
  const len = haystack.length;
  const word = (i: number): boolean => isWordChar(haystack.charCodeAt(i));
  for (let from = 0; from <= len; ) {
    const i = haystack.indexOf(needle, from);
    if (i < 0) return false;
    const end = i + needle.length;
    const startOk = i === 0 || i === len || !word(i - 1) || !word(i);
    const endOk = end === 0 || end === len || !word(end - 1) || !word(end);
    if (startOk && endOk) return true;
    from = i + 1;
  }
  return false;
}

/**
 * Simulates the pattern as an NFA whose states are pattern positions (state `m` = fully matched),
 * held as a bit set so each value character costs O(pattern length / 32) word operations. In
 * word mode a fresh start state is injected, and acceptance checked, at every boundary; in whole
 * mode only at the start and the end of the value.
 */
function runNfa(tokens: readonly number[], v: Int32Array, word: boolean): boolean {
  const m = tokens.length;
  const n = v.length;
  const words = (m >>> 5) + 1;
  const acceptWord = m >>> 5;
  const acceptBit = 1 << (m & 31);

  // Star positions stay alive on any character; `?` positions advance on any character.
  const star = new Uint32Array(words);
  const any = new Uint32Array(words);
  const byChar = new Map<number, Uint32Array>();
  for (let k = 0; k < m; k++) {
    const t = tokens[k]!;
    if (t === STAR) star[k >>> 5]! |= 1 << (k & 31);
    else if (t === QUESTION) any[k >>> 5]! |= 1 << (k & 31);
  }
  for (let k = 0; k < m; k++) {
    const t = tokens[k]!;
    if (t < 0) continue;
    let mask = byChar.get(t);
    if (!mask) byChar.set(t, (mask = Uint32Array.from(any)));
    mask[k >>> 5]! |= 1 << (k & 31);
  }

  // A star may match nothing, so whenever a star state is alive the state after it is too. Runs
  // of stars were collapsed when compiling, so one step of this closure is enough.
  const close = (d: Uint32Array): void => {
    let carry = 0;
    for (let w = 0; w < words; w++) {
      const x = d[w]! & star[w]!;
      d[w] = d[w]! | (x << 1) | carry;
      carry = x >>> 31;
    }
  };
  const start = new Uint32Array(words);
  start[0] = 1;
  close(start);
  const inject = (d: Uint32Array): void => {
    for (let w = 0; w < words; w++) d[w] = d[w]! | start[w]!;
  };

  let cur = Uint32Array.from(start);
  let next = new Uint32Array(words);
  for (let i = 0; ; i++) {
    const boundary = word && isBoundary(v, i);
    if (boundary && i > 0) inject(cur);
    const accepted = (cur[acceptWord]! & acceptBit) !== 0;
    if (i === n) return accepted;
    if (boundary && accepted) return true;

    const mask = byChar.get(v[i]!) ?? any;
    let carry = 0;
    let alive = 0;
    for (let w = 0; w < words; w++) {
      const d = cur[w]!;
      const advanced = d & mask[w]!;
      const x = (advanced << 1) | carry | (d & star[w]!);
      carry = advanced >>> 31;
      next[w] = x;
      alive |= x;
    }
    close(next);
    const tmp = cur;
    cur = next;
    next = tmp;
    if (alive === 0 && !word) return false;
  }
}
