/**
 * Memory and limits of server processes from Linux's /proc, for the processes the bench started
 * (or one named with --server-pid). Reading /proc needs nothing from the server, so a server that
 * is busy (a 1 GB upload, thousands of long-polls) is measured without waiting for it to answer.
 */
import { readFileSync, writeFileSync } from "node:fs";
import type { Target } from "./target.js";

export interface ProcMemory {
  /** VmRSS: resident now. */
  rssBytes: number;
  /** VmHWM: the resident peak since start or since the last `resetPeak`. */
  peakBytes: number;
}

/** VmRSS and VmHWM of a process; null when /proc has no such process (gone, or not Linux). */
export function procMemory(pid: number): ProcMemory | null {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    return null;
  }
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? Number.NaN) * 1024;
  return { rssBytes: kb("VmRSS"), peakBytes: kb("VmHWM") };
}

/**
 * Resets VmHWM to the current RSS (writing 5 to clear_refs; Linux ≥ 4.0, needs permission over
 * the process). Returns false where that is not allowed; callers then rely on sampling.
 */
export function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/**
 * CPU time (user + system) a process has used so far, in seconds, from /proc/PID/stat; null when
 * there is no such process. Linux reports it in USER_HZ ticks, which are 1/100 s on every
 * architecture Node runs on. Read before and after a window, it says how much server work the
 * window cost, a figure that varies far less with other load on the machine than latency does.
 */
export function procCpuSeconds(pid: number, thread?: number, part: "all" | "system" = "all"): number | null {
  let stat: string;
  try {
    stat = readFileSync(thread === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${thread}/stat`, "utf8");
  } catch {
    return null;
  }
  // The command name (field 2) may hold spaces and parentheses; the fields after its closing one are fixed.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return null;
  return (part === "system" ? stime : utime + stime) / 100;
}

/**
 * Summed CPU seconds of the target's server processes, or null where /proc cannot see them all.
 * `mainThread`: only their main threads (JavaScript runs there; the rest is GC helpers, libuv's
 * thread pool and the compiler). `part: "system"`: only time in the kernel (system calls: the
 * socket reads and writes of the answers, without the CPU profiler's distortion of them).
 */
export function serverCpuSeconds(target: Target, mainThread = false, part: "all" | "system" = "all"): number | null {
  const pids = target.pids ?? [];
  if (pids.length === 0) return null;
  let sum = 0;
  for (const pid of pids) {
    const s = procCpuSeconds(pid, mainThread ? pid : undefined, part);
    if (s === null) return null;
    sum += s;
  }
  return sum;
}

/** The soft limit on open files of a process ("Max open files"), or null if unknown. */
export function openFileLimit(pid: number | "self" = "self"): number | null {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, "utf8"));
    if (!m) return null;
    return m[1] === "unlimited" ? Number.POSITIVE_INFINITY : Number(m[1]);
  } catch {
    return null;
  }
}

/** Resident bytes of the target's server processes: /proc where the bench can see them, else what the target reports. */
export async function serverRss(target: Target): Promise<number | null> {
  const pids = target.pids ?? [];
  if (pids.length > 0) {
    let sum = 0;
    for (const pid of pids) {
      const m = procMemory(pid);
      if (!m) return target.rssBytes();
      sum += m.rssBytes;
    }
    return sum;
  }
  return target.rssBytes();
}

/** Samples the summed RSS of `pids` every `everyMs` until stopped; keeps the peak and the series. */
export class RssSampler {
  private timer: NodeJS.Timeout | null = null;
  readonly samples: { t: number; bytes: number }[] = [];
  peakBytes = 0;

  constructor(
    private readonly pids: readonly number[],
    private readonly everyMs = 100,
  ) {}

  get available(): boolean {
    return this.pids.length > 0 && this.pids.every((p) => procMemory(p) !== null);
  }

  sample(): number | null {
    let sum = 0;
    for (const pid of this.pids) {
      const m = procMemory(pid);
      if (!m) return null;
      sum += m.rssBytes;
    }
    this.samples.push({ t: Date.now(), bytes: sum });
    if (sum > this.peakBytes) this.peakBytes = sum;
    return sum;
  }

  start(): this {
    if (this.pids.length === 0) return this;
    this.sample();
    this.timer = setInterval(() => this.sample(), this.everyMs);
    this.timer.unref();
    return this;
  }

  stop(): { peakBytes: number; samples: number } {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.pids.length > 0) this.sample();
    return { peakBytes: this.peakBytes, samples: this.samples.length };
  }
}
