import type { Filter } from "./filter.js";
import { add, touch } from "../lib/lru.js";

/**
 * Parsed /sync filters, kept between requests. Every long-poll names its filter — inline JSON or
 * the id of a stored one — and parsing it (or reading it from the database) again on every cycle
 * is work a wave of thousands of woken clients repeats for nothing. Stored filters never change
 * (the spec has no update; uploading returns a new id), and inline ones are their own key. The
 * filters handed out are frozen, since requests share them.
 */
const MAX_KEY = 4096;

export class FilterCache {
  private readonly entries = new Map<string, Filter>();
  /**
   * Stored filters by user and id: one per user and client, so as many as there are users
   * syncing. The entries point at the filters parsed by text (see get), so clients that store the
   * same filter (every Element does) share one object, and a request's lookup hashes a short key
   * instead of a filter's whole text.
   */
  private readonly stored = new Map<string, Filter>();

  constructor(
    private readonly limit = 2000,
    private readonly storedLimit = 50_000,
  ) {}

  /** A stored filter, read and parsed with `load` once (undefined: there is no such filter). */
  storedFilter(key: string, load: () => Promise<Filter | undefined>): Promise<Filter | undefined> {
    return remembered(this.stored, this.storedLimit, key, load);
  }

  /** What storedFilter or get would give at once from memory, or undefined when they would load it. */
  peek(kind: "stored" | "text", key: string): Filter | undefined {
    const map = kind === "stored" ? this.stored : this.entries;
    const hit = map.get(key);
    if (hit !== undefined) touch(map, key, hit, kind === "stored" ? this.storedLimit : this.limit);
    return hit;
  }

  async get(key: string, load: () => Promise<Filter>): Promise<Filter> {
    // Keys are the filters themselves when inline: big ones are parsed each time rather than
    // letting a client fill memory with them.
    if (key.length > MAX_KEY) return deepFreeze(await load());
    return (await remembered(this.entries, this.limit, key, async () => deepFreeze(await load())))!;
  }
}

/**
 * `map[key]`, or what `load` gives, kept there (unless undefined) with the least recently used
 * entries beyond `limit` dropped (see lib/lru.ts). Failed loads are not kept.
 */
async function remembered<V>(map: Map<string, V>, limit: number, key: string, load: () => Promise<V | undefined>): Promise<V | undefined> {
  const hit = map.get(key);
  if (hit !== undefined) {
    touch(map, key, hit, limit);
    return hit;
  }
  const value = await load();
  if (value === undefined) return undefined;
  add(map, key, value, limit);
  return value;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
