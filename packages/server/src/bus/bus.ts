/** A wake-up: "the stream reached `position`; these rooms and users have news". Never data. */
export interface WakeUp {
  position: number;
  /**
   * The position the announced batch started after: it covers (from, position]. Batches tile the
   * stream exactly (positions are allocated under the counter lock), so a receiver can tell when
   * it has heard of every position up to some point, even when wake-ups from several processes
   * arrive out of order. Absent from peers that predate it.
   */
  from?: number;
  rooms: string[];
  users: string[];
  /** Only presence changed: long-polls whose filter leaves presence out need not wake. */
  presenceOnly?: boolean;
  /**
   * Rooms (not in `rooms`) whose only news is receipts or typing: long-polls whose filter leaves
   * both out need not wake for them, and in big rooms the others are woken together a moment
   * later (see Notifier.onWakeUp). Absent from peers that predate it; they list such rooms in `rooms`.
   */
  ephemeralRooms?: string[];
  /**
   * Users whose devices' one-time or fallback keys changed (uploaded, claimed, deleted). Wakes
   * nobody: the counts ride along with the next answer; caches of them are dropped (see
   * DeviceSyncCache).
   */
  keys?: string[];
}

export interface Bus {
  publish(w: WakeUp): void;
  subscribe(fn: (w: WakeUp) => void): () => void;
  close(): Promise<void>;
}
