import type { Filter } from "./filter.js";

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

  constructor(private readonly limit = 2000) {}

  async get(key: string, load: () => Promise<Filter>): Promise<Filter> {
    // Keys are the filters themselves when inline: big ones are parsed each time rather than
    // letting a client fill memory with them.
    if (key.length > MAX_KEY) return deepFreeze(await load());
    const hit = this.entries.get(key);
    if (hit) {
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit;
    }
    const filter = deepFreeze(await load());
    this.entries.set(key, filter);
    if (this.entries.size > this.limit) this.entries.delete(this.entries.keys().next().value!);
    return filter;
  }
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
