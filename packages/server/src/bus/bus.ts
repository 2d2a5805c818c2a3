/** A wake-up: "the stream reached `position`; these rooms and users have news". Never data. */
export interface WakeUp {
  position: number;
  rooms: string[];
  users: string[];
}

export interface Bus {
  publish(w: WakeUp): void;
  subscribe(fn: (w: WakeUp) => void): () => void;
  close(): Promise<void>;
}
