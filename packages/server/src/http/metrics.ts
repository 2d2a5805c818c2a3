import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** Prometheus metrics on a registry of our own (no process-global default registry). */
export class Metrics {
  readonly registry = new Registry();
  private readonly requests = new Counter({ name: "revier_http_requests_total", help: "HTTP requests by route, method and status", labelNames: ["method", "route", "status"], registers: [this.registry] });
  private readonly latency = new Histogram({
    name: "revier_http_request_duration_seconds",
    help: "HTTP request latency by route",
    labelNames: ["method", "route"],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 35],
    registers: [this.registry],
  });
  readonly syncWaiters = new Gauge({ name: "revier_sync_waiters", help: "Long-polling /sync requests currently waiting", registers: [this.registry] });
  readonly eventsPersisted = new Counter({ name: "revier_events_persisted_total", help: "Room events persisted", registers: [this.registry] });
  readonly streamBatches = new Counter({
    name: "revier_stream_batches_total",
    help: "Write batches (one transaction each) by how they ran: single, savepoints, plain (PostgreSQL, no savepoints) or rerun (plain failed, run again with savepoints)",
    labelNames: ["run"],
    registers: [this.registry],
  });
  readonly logSyncs = new Histogram({
    name: "revier_sqlite_log_sync_seconds",
    help: "How long each sync of SQLite's write-ahead log took (the disk's time; commits wait for it, requests do not)",
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly heapReclaims = new Counter({ name: "revier_heap_reclaims_total", help: "Full garbage collections a quiet server asked for after its heap had grown (memory.idle_reclaim_mb)", registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "revier_" });
  }

  observeRequest(method: string, route: string, status: number, seconds: number): void {
    this.requests.inc({ method, route, status: String(status) });
    this.latency.observe({ method, route }, seconds);
  }
}
