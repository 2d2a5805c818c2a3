/**
 * Pure pieces of the conformance report: matching Fastify routes to spec paths, finding which
 * test files validate which endpoint, and rendering the Markdown. Kept free of the server and
 * the spec loader so it can be tested with fakes.
 */
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";

export interface RouteInfo {
  method: string;
  /** Fastify syntax, e.g. `/_matrix/client/v3/rooms/:roomId/send/:eventType/:txnId`. */
  url: string;
}

export interface SpecEndpoint {
  method: string;
  /** Spec template, e.g. `/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`. */
  path: string;
  operationId?: string;
  /** Spec file the operation comes from; endpoints are grouped by it. */
  file?: string;
  /** Human title of the spec file. */
  section?: string;
  deprecated?: boolean;
}

export interface ConformanceCall {
  method: string;
  path: string;
}

const PARAM = "{}";

function trimTrailingSlash(p: string): string {
  return p.length > 1 ? p.replace(/\/+$/, "") : p;
}

/** Spec template segments with every `{name}` reduced to a bare placeholder. */
function specSegments(specPath: string): string[] {
  return trimTrailingSlash(specPath.trim())
    .split("/")
    .map((seg) => seg.replace(/\{[^}]*\}/g, PARAM));
}

/**
 * Fastify URL segments in the same shape. `::` is Fastify's escape for a literal colon; a
 * parameter may carry a regex (`:id(^\\d+)`) or be optional (`:id?`).
 */
function routeSegments(url: string): string[] {
  return trimTrailingSlash(url)
    .split("/")
    .map((seg) => {
      const parts = seg.split("::");
      return parts.map((part) => part.replace(/:[A-Za-z0-9_]*(\((?:\\.|[^)])*\))?\??/g, PARAM)).join(":");
    });
}

/** Placeholder-normalised key, so `{roomId}`, `{id}` and `:roomId` all meet. */
export function endpointKey(method: string, specPath: string): string {
  return `${method.toUpperCase()} ${specSegments(specPath).join("/")}`;
}

/**
 * Whether a Fastify URL serves a spec path. Parameters match by position whatever their names;
 * a trailing `*` wildcard swallows one or more remaining segments.
 */
export function routeMatchesSpecPath(url: string, specPath: string): boolean {
  const route = routeSegments(url);
  const spec = specSegments(specPath);
  const wildcard = route[route.length - 1] === "*";
  const fixed = wildcard ? route.slice(0, -1) : route;
  if (wildcard ? spec.length <= fixed.length : spec.length !== fixed.length) return false;
  return fixed.every((seg, i) => seg === spec[i]);
}

export interface RouteMatch<T extends SpecEndpoint> {
  /** Keys (see endpointKey) of spec endpoints that at least one route serves. */
  implemented: Set<string>;
  /** Spec endpoints with the routes serving them. */
  matches: Array<{ endpoint: T; routes: RouteInfo[] }>;
  /** Routes that serve nothing in the spec: Revier's own APIs. */
  unmatched: RouteInfo[];
}

const OPTIONAL_TRAILING_PARAM = /\/\{stateKey\}$/;

/** Pairs routes with spec endpoints. HEAD routes are ignored: Fastify adds them for every GET. */
export function matchRoutes<T extends SpecEndpoint>(spec: readonly T[], routes: readonly RouteInfo[]): RouteMatch<T> {
  const seen = new Set<string>();
  const candidates: RouteInfo[] = [];
  for (const r of routes) {
    const method = r.method.toUpperCase();
    if (method === "HEAD") continue;
    const id = `${method} ${r.url}`;
    if (seen.has(id)) continue;
    seen.add(id);
    candidates.push({ method, url: r.url });
  }
  const used = new Set<RouteInfo>();
  const implemented = new Set<string>();
  const matches: Array<{ endpoint: T; routes: RouteInfo[] }> = [];
  for (const endpoint of spec) {
    const method = endpoint.method.toUpperCase();
    const serving = candidates.filter((r) => r.method === method && routeMatchesSpecPath(r.url, endpoint.path));
    for (const r of serving) used.add(r);
    if (serving.length > 0) implemented.add(endpointKey(method, endpoint.path));
    matches.push({ endpoint, routes: serving });
  }
  // The spec makes the trailing slash optional when the state key is empty, so
  // `/rooms/:roomId/state/:eventType` is a spelling of a spec endpoint, not an API of Revier's own.
  for (const r of candidates) {
    if (used.has(r)) continue;
    const alias = spec.some((endpoint) => {
      const trailing = OPTIONAL_TRAILING_PARAM.exec(endpoint.path);
      return trailing !== null && endpoint.method.toUpperCase() === r.method && routeMatchesSpecPath(r.url, endpoint.path.slice(0, trailing.index));
    });
    if (alias) used.add(r);
  }
  const unmatched = candidates.filter((r) => !used.has(r)).sort((a, b) => compare(a.url, b.url) || compare(a.method, b.method));
  return { implemented, matches, unmatched };
}

/** Code-point order, so the report does not depend on the machine's locale. */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// A string literal in any quote style; template literals only without interpolation, since the
// path must be known statically.
const LITERAL = String.raw`(?:"((?:[^"\\\n]|\\.)*)"|'((?:[^'\\\n]|\\.)*)'|` + "`" + String.raw`((?:[^` + "`" + String.raw`\\$]|\\.|\$(?!\{))*)` + "`)";
const CALL = new RegExp(String.raw`\bassertConformsToSpec\s*\(\s*` + LITERAL + String.raw`\s*,\s*` + LITERAL, "g");

/** The statically known `assertConformsToSpec("METHOD", "PATH", …)` calls in a source file. */
export function extractConformanceCalls(source: string): ConformanceCall[] {
  const calls: ConformanceCall[] = [];
  for (const m of source.matchAll(CALL)) {
    const method = m[1] ?? m[2] ?? m[3];
    const p = m[4] ?? m[5] ?? m[6];
    if (method === undefined || p === undefined) continue;
    calls.push({ method: method.toUpperCase(), path: p });
  }
  return calls;
}

/** Where test files live, relative to the repository root, and which files in them count. */
export const COVERAGE_ROOTS: ReadonlyArray<{ dir: string; include: RegExp }> = [
  { dir: "packages/server/test", include: /\.ts$/ },
  { dir: "packages/server/src", include: /\.test\.ts$/ },
];

/**
 * The validator's own tests feed it hand-written bodies; they say nothing about what Revier
 * returns, so they must not count as coverage.
 */
export const COVERAGE_EXCLUDES: readonly string[] = ["packages/server/test/support/spec.test.ts"];

async function walk(dir: string, include: RegExp, out: string[]): Promise<void> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  for (const entry of entries) {
    if (entry.name === "node_modules" || entry.name === "dist") continue;
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) await walk(full, include, out);
    else if (entry.isFile() && include.test(entry.name)) out.push(full);
  }
}

/**
 * Maps endpointKey → sorted repository-relative test files (forward slashes) that validate it.
 */
export async function scanCoverage(
  repoRoot: string,
  opts: { roots?: ReadonlyArray<{ dir: string; include: RegExp }>; exclude?: readonly string[] } = {},
): Promise<Map<string, string[]>> {
  const roots = opts.roots ?? COVERAGE_ROOTS;
  const exclude = new Set(opts.exclude ?? COVERAGE_EXCLUDES);
  const files: string[] = [];
  for (const root of roots) await walk(path.join(repoRoot, root.dir), root.include, files);
  const coverage = new Map<string, Set<string>>();
  for (const file of files) {
    const rel = path.relative(repoRoot, file).split(path.sep).join("/");
    if (exclude.has(rel)) continue;
    const source = await readFile(file, "utf8");
    for (const call of extractConformanceCalls(source)) {
      const key = endpointKey(call.method, call.path);
      let set = coverage.get(key);
      if (!set) coverage.set(key, (set = new Set()));
      set.add(rel);
    }
  }
  return new Map([...coverage].map(([k, v]) => [k, [...v].sort()]));
}

export interface ConformanceReport<T extends SpecEndpoint> {
  markdown: string;
  /** Unique method+path pairs in the spec (two operations may share one). */
  specEndpoints: number;
  implemented: number;
  covered: number;
  /** Implemented spec endpoints that no test validates against the spec. */
  uncovered: T[];
  /** Routes outside the spec. */
  ownRoutes: RouteInfo[];
}

function code(s: string): string {
  return "`" + s.replace(/`/g, "\\`") + "`";
}

/** Renders docs/conformance.md. Output is deterministic so regenerating it only diffs on real changes. */
export function buildConformanceReport<T extends SpecEndpoint>(input: {
  operations: readonly T[];
  routes: readonly RouteInfo[];
  coverage: ReadonlyMap<string, readonly string[]>;
  /** Where the spec was read from, shown in the header. */
  specSource?: string;
}): ConformanceReport<T> {
  const { operations, coverage } = input;
  const { implemented, unmatched } = matchRoutes(operations, input.routes);
  const allKeys = new Set(operations.map((op) => endpointKey(op.method, op.path)));
  const coveredKeys = new Set([...allKeys].filter((k) => (coverage.get(k)?.length ?? 0) > 0));

  const uncovered: T[] = [];
  const reported = new Set<string>();
  for (const op of operations) {
    const key = endpointKey(op.method, op.path);
    if (implemented.has(key) && !coveredKeys.has(key) && !reported.has(key)) {
      reported.add(key);
      uncovered.push(op);
    }
  }

  const groups = new Map<string, T[]>();
  for (const op of operations) {
    const group = op.file ?? "unknown";
    let list = groups.get(group);
    if (!list) groups.set(group, (list = []));
    list.push(op);
  }

  const lines: string[] = [];
  lines.push("# Client-server API conformance", "");
  lines.push(
    "Generated by `npm run conformance`" + (input.specSource ? ` from ${input.specSource}` : "") + "; do not edit by hand.",
    "",
    "An endpoint is *implemented* when a Revier route serves its method and path, and *covered* when a test",
    "validates a real response from it with `assertConformsToSpec`.",
    "",
  );
  const implementedCount = [...allKeys].filter((k) => implemented.has(k)).length;
  lines.push("| | Count |", "|---|---:|");
  lines.push(`| Spec endpoints | ${allKeys.size} |`);
  lines.push(`| Implemented | ${implementedCount} |`);
  lines.push(`| Covered by a spec-validating test | ${coveredKeys.size} |`);
  lines.push(`| Implemented but not covered | ${uncovered.length} |`);
  lines.push(`| Revier routes outside the spec | ${unmatched.length} |`);
  lines.push("");

  for (const [file, ops] of [...groups].sort(([a], [b]) => compare(a, b))) {
    const section = ops[0]?.section;
    lines.push(`## ${section ? `${section} (${code(file)})` : code(file)}`, "");
    lines.push("| Method | Path | Implemented | Covered by |", "|---|---|---|---|");
    for (const op of ops) {
      const key = endpointKey(op.method, op.path);
      const files = coverage.get(key) ?? [];
      const p = code(op.path) + (op.deprecated ? " (deprecated)" : "");
      lines.push(`| ${op.method.toUpperCase()} | ${p} | ${implemented.has(key) ? "yes" : "no"} | ${files.map(code).join("<br>")} |`);
    }
    lines.push("");
  }

  lines.push("## Revier routes outside the spec", "");
  if (unmatched.length === 0) lines.push("None.");
  for (const r of unmatched) lines.push(`- ${r.method} ${code(r.url)}`);
  lines.push("");

  return {
    markdown: lines.join("\n"),
    specEndpoints: allKeys.size,
    implemented: implementedCount,
    covered: coveredKeys.size,
    uncovered,
    ownRoutes: unmatched,
  };
}
