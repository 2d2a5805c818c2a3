/**
 * Least-recently-used order for a Map bounded by `limit`, kept as the Map's insertion order.
 *
 * A use moves the key to the end (delete and re-insert) only once the map is more than half full:
 * below that nothing is evicted, so the order does not matter yet, and every delete leaves a hole
 * that the Map later compacts by rehashing all its entries — a long-poll cycle of thousands of
 * members did that over and over. An entry used only while the map was small may be evicted
 * before one used less recently; for a cache that costs one reload.
 */
export function touch<K, V>(map: Map<K, V>, key: K, value: V, limit: number): void {
  if (map.size <= limit / 2) return;
  map.delete(key);
  map.set(key, value);
}

/** Adds or replaces `key` as the most recently used, dropping the least recently used beyond `limit`. */
export function add<K, V>(map: Map<K, V>, key: K, value: V, limit: number): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > limit) map.delete(map.keys().next().value!);
}
