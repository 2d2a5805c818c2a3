import type { Services } from "./services.js";
import { DEFAULT_HEAP_RECLAIM, startHeapReclaim } from "./heap-reclaim.js";

const MiB = 1024 * 1024;

/** How long a user may show no sign of life (no /sync) before presence turns offline. */
const PRESENCE_IDLE_MS = 5 * 60_000;

/** Runs `task` every `intervalMs`, never overlapping, without keeping the process alive. */
function every(intervalMs: number, task: () => Promise<unknown>, onError: (err: unknown) => void): () => void {
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    task()
      .catch(onError)
      .finally(() => {
        running = false;
      });
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * Background housekeeping: typing notifications that lapsed, users whose clients vanished, expired
 * shared answers and events, and the heap a burst left behind.
 * Every process may run these; each step re-checks under the stream lock, so they are idempotent.
 */
export function startSweepers(s: Services): () => void {
  const onError = (what: string) => (err: unknown) => s.log.warn({ err: { message: (err as Error).message } }, `${what} sweep failed`);
  const stops = [
    s.ephemeral.startTypingSweeper(5_000, onError("typing")),
    every(60_000, () => s.ephemeral.expirePresence(Date.now(), PRESENCE_IDLE_MS), onError("presence")),
    every(10 * 60_000, () => s.uia.expireSessions(), onError("user-interactive auth sessions")),
    every(10 * 60_000, () => s.tokens.sessions.prune(), onError("session change log")),
    // Duty schedules turn over on the minute; presence follows within 30 seconds.
    every(30_000, () => s.duty.sweep(), onError("duty")),
    s.pushDelivery.start(),
    // Shared /sync answers expire after seconds; without a sweep a quiet server would hold them.
    every(10_000, async () => s.sync.dropExpired(), onError("shared sync answers")),
    // Retention: rooms' m.room.retention follows policy changes (from any process or the CLI)
    // within half a minute; expired events and media go every retention.interval_ms.
    every(Math.min(30_000, s.config.retention.intervalMs), () => s.retention.checkPolicy(), onError("retention policy")),
    every(s.config.retention.intervalMs, () => s.retention.purge(), onError("retention")),
    startHeapReclaim({ ...DEFAULT_HEAP_RECLAIM, growthBytes: s.config.memory.idleReclaimMb * MiB }, (r) => {
      s.metrics.heapReclaims.inc();
      s.log.info({ heap_before_mb: Math.round(r.beforeBytes / MiB), heap_after_mb: Math.round(r.afterBytes / MiB), pause_ms: Math.round(r.ms) }, "server quiet: collected garbage to return memory");
    }, (err) => s.log.warn({ err: { message: err.message } }, "memory.idle_reclaim_mb is set but this Node offers no garbage collector to call; memory is returned only when V8 collects by itself")),
  ];
  return () => {
    for (const stop of stops) stop();
  };
}
