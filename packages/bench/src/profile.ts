#!/usr/bin/env node
/**
 * Top frames of V8 CPU profiles (`node --cpu-prof`, written by the server processes when the
 * bench runs with `--cpu-prof DIR`): self time per function, and inclusive time per function
 * (counted once per sample even when it recurses). `node packages/bench/dist/profile.js FILE|DIR [N]`
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface FrameTime {
  frame: string;
  selfMs: number;
  totalMs: number;
}

function frameName(n: ProfileNode): string {
  const { functionName, url, lineNumber } = n.callFrame;
  const fn = functionName || "(anonymous)";
  if (!url) return fn;
  // Paths inside the repository or node_modules, shortened to what identifies them.
  const short = url
    .replace(/^file:\/\//, "")
    .replace(/^.*\/node_modules\//, "")
    .replace(/^.*\/packages\//, "")
    .replace(/^node:/, "node:");
  return `${fn} ${short}:${lineNumber + 1}`;
}

/** Self and inclusive milliseconds per frame over the whole profile, sorted by self time. */
export function frameTimes(profile: CpuProfile): { frames: FrameTime[]; totalMs: number } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let totalMs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    // timeDeltas[i] is the time before sample i; attribute the following interval to it.
    const ms = (profile.timeDeltas[i + 1] ?? 0) / 1000;
    totalMs += ms;
    const leaf = byId.get(profile.samples[i]!);
    if (!leaf) continue;
    const leafName = frameName(leaf);
    self.set(leafName, (self.get(leafName) ?? 0) + ms);
    const seen = new Set<string>();
    for (let id: number | undefined = leaf.id; id !== undefined; id = parent.get(id)) {
      const name = frameName(byId.get(id)!);
      if (seen.has(name)) continue;
      seen.add(name);
      total.set(name, (total.get(name) ?? 0) + ms);
    }
  }
  const frames = [...total.entries()].map(([frame, t]) => ({ frame, selfMs: self.get(frame) ?? 0, totalMs: t }));
  frames.sort((a, b) => b.selfMs - a.selfMs);
  return { frames, totalMs };
}

/** A stretch of samples in a row in which the main thread was never idle, and what it ran then. */
export interface BusyStretch {
  /** Milliseconds from the start of the profile. */
  atMs: number;
  ms: number;
  top: Array<{ frame: string; ms: number }>;
}

/**
 * The `k` longest stretches without an idle sample: a latency tail made of a few long holds of
 * the event loop shows here with what held it, where the whole profile's shares would bury it.
 */
export function busyStretches(profile: CpuProfile, k = 5, topFrames = 6): BusyStretch[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const stretches: Array<{ atMs: number; ms: number; from: number; to: number }> = [];
  let t = 0;
  let open: { atMs: number; ms: number; from: number; to: number } | null = null;
  for (let i = 0; i < profile.samples.length; i++) {
    t += (profile.timeDeltas[i] ?? 0) / 1000;
    const ms = (profile.timeDeltas[i + 1] ?? 0) / 1000;
    const leaf = byId.get(profile.samples[i]!);
    const idle = leaf?.callFrame.functionName === "(idle)";
    if (idle) {
      if (open) stretches.push(open);
      open = null;
      continue;
    }
    open ??= { atMs: t, ms: 0, from: i, to: i };
    open.ms += ms;
    open.to = i;
  }
  if (open) stretches.push(open);
  stretches.sort((a, b) => b.ms - a.ms);
  return stretches.slice(0, k).map((st) => {
    const self = new Map<string, number>();
    for (let i = st.from; i <= st.to; i++) {
      const leaf = byId.get(profile.samples[i]!);
      if (!leaf) continue;
      const name = frameName(leaf);
      self.set(name, (self.get(name) ?? 0) + (profile.timeDeltas[i + 1] ?? 0) / 1000);
    }
    const top = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, topFrames).map(([frame, ms]) => ({ frame, ms }));
    return { atMs: st.atMs, ms: st.ms, top };
  });
}

function profileFiles(where: string): string[] {
  if (!statSync(where).isDirectory()) return [where];
  return readdirSync(where)
    .filter((f) => f.endsWith(".cpuprofile"))
    .map((f) => path.join(where, f))
    .sort();
}

/** A text report of the top `n` frames by self time and by inclusive time, per profile file. */
export function summariseProfiles(where: string | string[], n = 25): string {
  const out: string[] = [];
  for (const file of typeof where === "string" ? profileFiles(where) : where) {
    const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
    const { frames, totalMs } = frameTimes(profile);
    const pct = (ms: number) => `${((100 * ms) / totalMs).toFixed(1).padStart(5)}%`;
    const idle = frames.find((f) => f.frame === "(idle)")?.selfMs ?? 0;
    out.push(`\n${file}: ${(totalMs / 1000).toFixed(1)} s profiled, ${(100 - (100 * idle) / totalMs).toFixed(1)}% busy`);
    out.push(`top ${n} by self time:`);
    for (const f of frames.slice(0, n)) out.push(`  ${pct(f.selfMs)} self ${pct(f.totalMs)} total  ${f.frame}`);
    out.push(`top ${n} by inclusive time (excluding the roots):`);
    const inclusive = [...frames].filter((f) => !/^\((root|program|idle|garbage collector)\)/.test(f.frame)).sort((a, b) => b.totalMs - a.totalMs);
    for (const f of inclusive.slice(0, n)) out.push(`  ${pct(f.totalMs)} total ${pct(f.selfMs)} self  ${f.frame}`);
    out.push("longest stretches without an idle sample:");
    for (const st of busyStretches(profile)) {
      out.push(`  ${st.ms.toFixed(1).padStart(7)} ms at ${(st.atMs / 1000).toFixed(2)} s: ${st.top.map((f) => `${f.frame} ${f.ms.toFixed(1)}`).join("; ")}`);
    }
    const loopFile = file.replace(/\.cpuprofile$/, ".loop.json");
    if (existsSync(loopFile)) {
      const l = JSON.parse(readFileSync(loopFile, "utf8")) as { event_loop_delay_ms: Record<string, number>; gc_pauses: Record<string, number> };
      out.push(`event loop delay p50/p99/max ${l.event_loop_delay_ms.p50}/${l.event_loop_delay_ms.p99}/${l.event_loop_delay_ms.max} ms; GC ${l.gc_pauses.count} pauses, ${l.gc_pauses.total_ms} ms in all, p99 ${l.gc_pauses.p99_ms} ms, max ${l.gc_pauses.max_ms} ms`);
    }
    // SQL statement times the bench's host recorded over the same window, if it did.
    const sqlFile = file.replace(/\.cpuprofile$/, ".sql.json");
    if (existsSync(sqlFile)) {
      const rows = JSON.parse(readFileSync(sqlFile, "utf8")) as { sql: string; calls: number; ms: number; max_ms?: number; calls_10ms_plus?: number }[];
      const sqlMs = rows.reduce((a, r) => a + r.ms, 0);
      out.push(`SQL: ${(sqlMs / 1000).toFixed(1)} s in ${rows.reduce((a, r) => a + r.calls, 0)} statements (${pct(sqlMs).trim()} of the window); top ${Math.min(n, rows.length)}:`);
      for (const r of rows.slice(0, n)) {
        const tail = r.max_ms !== undefined ? ` max ${r.max_ms.toFixed(1).padStart(6)} ms, ${String(r.calls_10ms_plus ?? 0).padStart(4)} ≥ 10 ms` : "";
        out.push(`  ${pct(r.ms)} ${String(r.calls).padStart(8)} calls ${(r.ms / Math.max(1, r.calls)).toFixed(2).padStart(7)} ms${tail}  ${r.sql.slice(0, 220)}`);
      }
    }
  }
  return out.join("\n");
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const where = process.argv[2];
  if (!where) {
    console.error("usage: node packages/bench/dist/profile.js FILE.cpuprofile|DIR [N]");
    process.exit(2);
  }
  console.log(summariseProfiles(where, Number(process.argv[3] ?? 25)));
}
