/**
 * Runs at most `limit` tasks at once; the others wait in arrival order.
 *
 * Why /sync needs it: a message to a room of thousands wakes thousands of long-polls at once.
 * Run all at once, their builds advance in lockstep — every one of them makes its first query,
 * then every one its second — so they all finish together at the end of the wave, holding all
 * their intermediate objects alive until then (old-generation garbage collection). A few at a
 * time, each finishes and answers in turn: the first members hear of the message early, and the
 * garbage dies young.
 */
export class Limiter {
  private running = 0;
  /** Waiters from `head` on, oldest first: a queue of thousands, so no `shift()` (it moves them all). */
  private waiting: Array<() => void> = [];
  private head = 0;

  constructor(private readonly limit: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.running++;
    try {
      return await task();
    } finally {
      const next = this.head < this.waiting.length ? this.waiting[this.head++] : undefined;
      if (this.head === this.waiting.length) {
        this.waiting = [];
        this.head = 0;
      } else if (this.head >= 1024 && this.head * 2 >= this.waiting.length) {
        this.waiting = this.waiting.slice(this.head);
        this.head = 0;
      }
      // The slot passes straight to the next waiter, so nobody can jump the queue in between. It
      // starts from a macrotask: with SQLite answering synchronously, a task can run from start
      // to end in microtasks, and handing over directly would chain a whole wave of thousands
      // into one turn of the event loop — no request read, no write acknowledged, for a second.
      if (next) setImmediate(next);
      else this.running--;
    }
  }

  get queued(): number {
    return this.waiting.length - this.head;
  }
}
