/**
 * Minimum client versions. Revier's own apps send `X-Revier-Client: <name>/<version>`; known
 * third-party clients are recognised by their User-Agent product tokens (`Element/1.11.4 (…)`).
 * Names are matched case-insensitively against the policy's `min_client_versions` keys.
 */

export const CLIENT_HEADER = "x-revier-client";

export interface ClientId {
  name: string;
  version: string;
}

const PRODUCT = /([A-Za-z][A-Za-z0-9._-]*)\/([0-9]+(?:\.[0-9]+)*(?:-[0-9A-Za-z.-]+)?)/g;

/** Every `name/version` product token in a header value, in order. */
export function productTokens(value: string | undefined): ClientId[] {
  if (!value) return [];
  const out: ClientId[] = [];
  for (const m of value.matchAll(PRODUCT)) out.push({ name: m[1]!, version: m[2]! });
  return out;
}

/**
 * Compares dotted versions numerically (missing parts count as 0); at equal numbers a pre-release
 * (`1.2.0-rc1`) sorts before the release, as in semver.
 */
export function compareVersions(a: string, b: string): number {
  const [coreA = "", preA] = splitPre(a);
  const [coreB = "", preB] = splitPre(b);
  const pa = coreA.split(".").map((x) => Number.parseInt(x, 10) || 0);
  const pb = coreB.split(".").map((x) => Number.parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  if (preA === undefined && preB === undefined) return 0;
  if (preA === undefined) return 1;
  if (preB === undefined) return -1;
  return preA < preB ? -1 : preA > preB ? 1 : 0;
}

function splitPre(v: string): [string, string | undefined] {
  const i = v.indexOf("-");
  return i < 0 ? [v, undefined] : [v.slice(0, i), v.slice(i + 1)];
}

/**
 * The first client (from the Revier header, then the User-Agent) that the policy names and that is
 * older than its minimum, with that minimum; undefined when the client is acceptable or unknown.
 */
export function tooOldClient(minimums: Record<string, string>, headers: { revierClient?: string | undefined; userAgent?: string | undefined }): { client: ClientId; minimum: string; name: string } | undefined {
  const wanted = new Map(Object.entries(minimums).map(([k, v]) => [k.toLowerCase(), { name: k, minimum: v }]));
  if (wanted.size === 0) return undefined;
  const own = productTokens(headers.revierClient).slice(0, 1);
  const candidates = own.length > 0 ? own : productTokens(headers.userAgent);
  for (const c of candidates) {
    const rule = wanted.get(c.name.toLowerCase());
    if (rule && compareVersions(c.version, rule.minimum) < 0) return { client: c, minimum: rule.minimum, name: rule.name };
  }
  return undefined;
}
