import type { Bus, WakeUp } from "./bus.js";

/** In-process bus for the single-process default. */
export class LocalBus implements Bus {
  private readonly subscribers = new Set<(w: WakeUp) => void>();

  publish(w: WakeUp): void {
    for (const fn of this.subscribers) fn(w);
  }

  subscribe(fn: (w: WakeUp) => void): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  async close(): Promise<void> {
    this.subscribers.clear();
  }
}
