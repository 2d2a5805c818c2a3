/** Nearest-rank percentile of unsorted samples (ms); NaN when there are none. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

export function round(n: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function pool<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Median of unsorted samples; NaN when there are none. */
export function median(samples: readonly number[]): number {
  return percentile(samples, 50);
}

/**
 * The p-th percentile of each group's samples, in the order the groups are given (groups without
 * samples are left out): e.g. each message's delivery p99 across the members of a room.
 */
export function percentileByGroup(order: readonly string[], samples: Iterable<readonly [group: string, value: number]>, p: number): number[] {
  const byGroup = new Map<string, number[]>(order.map((g) => [g, []]));
  for (const [g, v] of samples) byGroup.get(g)?.push(v);
  return [...byGroup.values()].filter((v) => v.length > 0).map((v) => percentile(v, p));
}

/**
 * Least-squares slope and intercept of y over x (e.g. resident bytes over open connections);
 * NaN slope with fewer than two distinct x values.
 */
export function linearFit(points: readonly { x: number; y: number }[]): { slope: number; intercept: number } {
  const n = points.length;
  if (n === 0) return { slope: Number.NaN, intercept: Number.NaN };
  const mx = points.reduce((s, p) => s + p.x, 0) / n;
  const my = points.reduce((s, p) => s + p.y, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (const p of points) {
    sxy += (p.x - mx) * (p.y - my);
    sxx += (p.x - mx) ** 2;
  }
  if (sxx === 0) return { slope: Number.NaN, intercept: my };
  const slope = sxy / sxx;
  return { slope, intercept: my - slope * mx };
}

export const MiB = 1024 * 1024;

/** Bytes as MiB with one decimal. */
export function mib(bytes: number): number {
  return round(bytes / MiB);
}

/** Waits until `ready()` holds, polling every `everyMs`; false when `timeoutMs` passed first. */
export async function waitUntil(ready: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 200): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await ready()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(everyMs);
  }
}
