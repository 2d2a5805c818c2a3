import { test } from "node:test";
import assert from "node:assert/strict";
import { compileGlob, containsWord, globMatches, MAX_GLOB_PATTERN_LENGTH, MAX_GLOB_VALUE_LENGTH } from "./glob.js";

test("whole-value matching: *, ? and literals", () => {
  assert.equal(globMatches("cake*lie", "cake is a lie"), true);
  assert.equal(globMatches("cake*lie", "cakelie"), true);
  assert.equal(globMatches("cake*lie", "cake is a lie!"), false);
  assert.equal(globMatches("cake*lie", "the cake is a lie"), false);
  assert.equal(globMatches("m.room.*", "m.room.message"), true);
  assert.equal(globMatches("m.room.*", "m.room."), true);
  assert.equal(globMatches("m.room.*", "m.roomy"), false);
  assert.equal(globMatches("a?c", "abc"), true);
  assert.equal(globMatches("a?c", "ac"), false);
  assert.equal(globMatches("a?c", "abbc"), false);
  assert.equal(globMatches("???", "abc"), true);
  assert.equal(globMatches("?*?", "a"), false);
  assert.equal(globMatches("?*?", "ab"), true);
  assert.equal(globMatches("*", ""), true);
  assert.equal(globMatches("", ""), true);
  assert.equal(globMatches("", "x"), false);
  assert.equal(globMatches("**a**", "bab"), true);
  // Regex metacharacters are plain characters in a glob.
  assert.equal(globMatches("a.c", "abc"), false);
  assert.equal(globMatches("(x)+[y]", "(x)+[y]"), true);
});

test("the spec's event_match examples for content.topic and `lunc?*`", () => {
  assert.equal(globMatches("lunc?*", "Lunch plans"), true);
  assert.equal(globMatches("lunc?*", "LUNCH"), true);
  assert.equal(globMatches("lunc?*", " lunch"), false);
  assert.equal(globMatches("lunc?*", "lunc"), false);
});

test("matching is case-insensitive on both sides", () => {
  assert.equal(globMatches("M.Notice", "m.notice"), true);
  assert.equal(globMatches("m.notice", "M.NOTICE"), true);
  assert.equal(globMatches("ÄBC*", "äbcdef"), true);
});

test("? matches one code point, including astral characters", () => {
  assert.equal(globMatches("a?b", "a😀b"), true);
  assert.equal(globMatches("a??b", "a😀b"), false);
});

test("whole mode never matches a part of the value", () => {
  assert.equal(globMatches("cake", "cakes"), false);
  assert.equal(globMatches("cake", "a cake"), false);
  assert.equal(globMatches("m.notice", "m.notice2"), false);
});

test("word mode matches substrings bounded by word boundaries (spec ex*ple examples)", () => {
  assert.equal(globMatches("ex*ple", "An example event.", "word"), true);
  assert.equal(globMatches("ex*ple", "exple", "word"), true);
  assert.equal(globMatches("ex*ple", "An exciting triple-whammy", "word"), true);
  assert.equal(globMatches("ex*ple", "examples", "word"), false);
  assert.equal(globMatches("cake", "I like cake.", "word"), true);
  assert.equal(globMatches("cake", "I like cakes", "word"), false);
  assert.equal(globMatches("cake", "pancake", "word"), false);
  assert.equal(globMatches("@room", "hello @room!", "word"), true);
  assert.equal(globMatches("@room", "@ROOM", "word"), true);
  assert.equal(globMatches("@room", "@roomy", "word"), false);
  assert.equal(globMatches("alice", "hey ALICE_ what", "word"), false);
  assert.equal(globMatches("alice", "hey alice, what", "word"), true);
  assert.equal(globMatches("c?ke", "a coke please", "word"), true);
});

test("pathological patterns finish against a 100 kB body", () => {
  const body = "a".repeat(100_000);
  assert.equal(globMatches("*a*a*a*a*a*a*a*a*a*a*b", body), false);
  assert.equal(globMatches("*a*a*a*a*a*a*a*a*a*a*b", body, "word"), false);
  assert.equal(globMatches("a*a*a*a*a*a*a*a*a*a*a", "a".repeat(10_000)), true);
  const long = `${"a*".repeat(200)}b`;
  assert.equal(globMatches(long, body, "word"), false);
  assert.equal(globMatches(`*${"?".repeat(50)}*b`, `${"x ".repeat(50_000)}`, "word"), false);
});

test("over-long patterns never match; over-long values are cut (word) or rejected (whole)", () => {
  const pattern = "a".repeat(MAX_GLOB_PATTERN_LENGTH + 1);
  assert.equal(compileGlob(pattern).valid, false);
  assert.equal(globMatches(pattern, pattern), false);
  assert.equal(globMatches("*", "x".repeat(MAX_GLOB_VALUE_LENGTH + 1)), false);
  assert.equal(globMatches("needle", `needle ${"x".repeat(MAX_GLOB_VALUE_LENGTH)}`, "word"), true);
  assert.equal(globMatches("needle", `${"x ".repeat(MAX_GLOB_VALUE_LENGTH)}needle`, "word"), false);
});

test("a compiled glob can be reused", () => {
  const g = compileGlob("foo*");
  assert.equal(g.matches("foobar"), true);
  assert.equal(g.matches("barfoo"), false);
  assert.equal(g.matches("bar foobar", "word"), true);
});

test("containsWord matches literally and at word boundaries", () => {
  assert.equal(containsWord("Hi Alice Smith!", "alice smith"), true);
  assert.equal(containsWord("Hi AliceSmith", "alice"), false);
  assert.equal(containsWord("what a*b", "a*b"), true);
  assert.equal(containsWord("what axb", "a*b"), false);
});

test("agrees with a brute-force reference matcher on random inputs", () => {
  // Deterministic PRNG so a failure is reproducible.
  let seed = 0x2545f491;
  const rand = (n: number): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const pick = (alphabet: string, max: number): string => {
    let s = "";
    for (let i = rand(max + 1); i > 0; i--) s += alphabet[rand(alphabet.length)];
    return s;
  };
  const wholeRef = (p: string, v: string): boolean => {
    // Classic memoised recursion; fine for the tiny sizes used here.
    const memo = new Map<string, boolean>();
    const go = (i: number, j: number): boolean => {
      const k = `${i},${j}`;
      if (memo.has(k)) return memo.get(k)!;
      let r: boolean;
      if (i === p.length) r = j === v.length;
      else if (p[i] === "*") r = go(i + 1, j) || (j < v.length && go(i, j + 1));
      else r = j < v.length && (p[i] === "?" || p[i] === v[j]) && go(i + 1, j + 1);
      memo.set(k, r);
      return r;
    };
    return go(0, 0);
  };
  const isWord = (c: string | undefined): boolean => c !== undefined && /[A-Za-z0-9_]/.test(c);
  const boundary = (v: string, i: number): boolean => i === 0 || i === v.length || !isWord(v[i - 1]) || !isWord(v[i]);
  const wordRef = (p: string, v: string): boolean => {
    for (let i = 0; i <= v.length; i++) {
      if (!boundary(v, i)) continue;
      for (let j = i; j <= v.length; j++) if (boundary(v, j) && wholeRef(p, v.slice(i, j))) return true;
    }
    return false;
  };
  for (let iter = 0; iter < 3000; iter++) {
    const p = pick("ab*?_ -", 6);
    const v = pick("ab_ -", 10);
    assert.equal(globMatches(p, v), wholeRef(p, v), `whole ${JSON.stringify(p)} vs ${JSON.stringify(v)}`);
    assert.equal(globMatches(p, v, "word"), wordRef(p, v), `word ${JSON.stringify(p)} vs ${JSON.stringify(v)}`);
  }
  // Long patterns cross the 32-state word size of the bit set.
  assert.equal(globMatches("?".repeat(70), "x".repeat(70)), true);
  assert.equal(globMatches("?".repeat(70), "x".repeat(69)), false);
  assert.equal(globMatches(`*${"a".repeat(40)}*b`, `${"ba".repeat(30)}${"a".repeat(40)}xb`), true);
  assert.equal(globMatches(`${"a?".repeat(40)}`, "ab".repeat(40)), true);
  for (let iter = 0; iter < 300; iter++) {
    const p = pick("ab*?", 80);
    const v = pick("ab", 90);
    assert.equal(globMatches(p, v), wholeRef(p, v), `whole ${JSON.stringify(p)} vs ${JSON.stringify(v)}`);
  }
});
