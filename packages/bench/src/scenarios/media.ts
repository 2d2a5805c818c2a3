import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { call, login } from "../matrix.js";
import { rawOk } from "../http.js";
import { procMemory, resetPeak, RssSampler, serverRss } from "../proc.js";
import { median, MiB, mib, round, sleep } from "../stats.js";
import type { Check, Scenario } from "../scenario.js";

/** Sizes the issue names (1 MB, 50 MB, 1 GB), in MiB, and how often each is repeated. */
const SIZES_MIB = [1, 50, 1024];
const repeatsFor = (sizeMib: number) => (sizeMib <= 1 ? 10 : sizeMib <= 64 ? 3 : 1);

/** `size` bytes of incompressible content, unique per upload (so no two uploads share a blob), hashed as they go. */
function content(size: number, base: Buffer, unique: string): { stream: Readable; sha256: () => string } {
  const hash = createHash("sha256");
  async function* chunks() {
    let sent = 0;
    while (sent < size) {
      let chunk = base.subarray(0, Math.min(base.length, size - sent));
      if (sent === 0) {
        chunk = Buffer.from(chunk);
        chunk.write(unique.slice(0, chunk.length), 0, "latin1");
      }
      hash.update(chunk);
      sent += chunk.length;
      yield chunk;
    }
  }
  return { stream: Readable.from(chunks(), { objectMode: false }), sha256: () => hash.digest("hex") };
}

/**
 * Upload and download throughput of 1 MiB, 50 MiB and 1 GiB files over the authenticated media
 * API (one at a time, on loopback), each download checked byte for byte by its SHA-256, and the
 * server's resident memory before, at the peak of, and after the largest upload (1 GiB; 50 MiB
 * in --quick) and at the peak of its download (VmHWM reset before each where allowed, and sampled):
 * a server that streams media holds a few chunks in memory, one that buffers holds the file.
 */
export const media: Scenario = async (ctx) => {
  const maxMib = ctx.num("max-mib", ctx.quick ? 50 : 1024);
  const { target } = ctx;
  const notes: string[] = ["shared 2-core machine: other engineers' test runs share the CPU and disk, figures are noisy", "the issue sets no throughput target; memory during the 1 GiB upload is the figure it asks for"];
  const [cred] = await target.users(1, "media");
  const s = await login(target.urls[0]!, cred!.user, cred!.password);
  const config = await call<{ "m.upload.size"?: number }>(s.baseUrl, "GET", "/_matrix/client/v1/media/config", { token: s.accessToken });
  const limit = config["m.upload.size"] ?? Number.POSITIVE_INFINITY;
  let sizes = SIZES_MIB.filter((m) => m <= maxMib);
  const tooBig = sizes.filter((m) => m * MiB > limit);
  if (tooBig.length > 0) notes.push(`skipped ${tooBig.join(", ")} MiB: the server's upload limit is ${limit} bytes`);
  sizes = sizes.filter((m) => m * MiB <= limit);

  const base = randomBytes(MiB);
  const pid = target.pids?.length === 1 ? target.pids[0]! : null;
  const figures: Record<string, number> = {};
  let errors = 0;
  let mismatches = 0;
  let n = 0;

  for (const sizeMib of sizes) {
    const size = sizeMib * MiB;
    // Memory is followed through the largest transfer of the run (1 GiB; 50 MiB in --quick).
    const tag = `${sizeMib}mib`;
    const up: number[] = [];
    const down: number[] = [];
    for (let r = 0; r < repeatsFor(sizeMib); r++) {
      const body = content(size, base, `revier-bench ${Date.now()} ${n++} `);
      const big = sizeMib === sizes[sizes.length - 1] && r === 0;
      let sampler: RssSampler | null = null;
      let peakReset = false;
      if (big) {
        const before = await serverRss(target);
        if (before !== null) figures[`rss_before_upload_${tag}_mb`] = mib(before);
        peakReset = pid !== null && resetPeak(pid);
        sampler = new RssSampler(target.pids ?? [], 100).start();
      }
      ctx.progress(`upload ${sizeMib} MiB (${r + 1}/${repeatsFor(sizeMib)})`);
      let uri: string;
      try {
        const res = await rawOk({
          method: "POST",
          url: `${s.baseUrl}/_matrix/media/v3/upload?filename=${encodeURIComponent(`bench-${sizeMib}mib.bin`)}`,
          token: s.accessToken,
          headers: { "content-type": "application/octet-stream", "content-length": String(size) },
          body: body.stream,
        });
        up.push(res.ms);
        uri = (JSON.parse(res.body.toString("utf8")) as { content_uri: string }).content_uri;
      } catch (err) {
        errors++;
        ctx.progress(`  upload failed: ${(err as Error).message}`);
        sampler?.stop();
        continue;
      }
      if (sampler) {
        const { peakBytes } = sampler.stop();
        const hwm = peakReset && pid !== null ? (procMemory(pid)?.peakBytes ?? 0) : 0;
        figures[`rss_peak_upload_${tag}_mb`] = mib(Math.max(peakBytes, hwm));
        await sleep(2000);
        const after = await serverRss(target);
        if (after !== null) figures[`rss_after_upload_${tag}_mb`] = mib(after);
      }
      const expected = body.sha256();
      const [, server, mediaId] = /^mxc:\/\/([^/]+)\/(.+)$/.exec(uri) ?? [];
      const hash = createHash("sha256");
      let downPeakReset = false;
      let downSampler: RssSampler | null = null;
      if (big) {
        downPeakReset = pid !== null && resetPeak(pid);
        downSampler = new RssSampler(target.pids ?? [], 100).start();
      }
      ctx.progress(`download ${sizeMib} MiB`);
      try {
        const res = await rawOk({ url: `${s.baseUrl}/_matrix/client/v1/media/download/${server}/${mediaId}`, token: s.accessToken, onData: (c) => hash.update(c) });
        down.push(res.ms);
        if (res.bytes !== size || hash.digest("hex") !== expected) mismatches++;
      } catch (err) {
        errors++;
        ctx.progress(`  download failed: ${(err as Error).message}`);
      }
      if (downSampler) {
        const { peakBytes } = downSampler.stop();
        const hwm = downPeakReset && pid !== null ? (procMemory(pid)?.peakBytes ?? 0) : 0;
        figures[`rss_peak_download_${tag}_mb`] = mib(Math.max(peakBytes, hwm));
      }
    }
    const rate = (ms: number[]) => round(sizeMib / (median(ms) / 1000));
    if (up.length > 0) {
      figures[`upload_${sizeMib}mib_mib_per_s`] = rate(up);
      figures[`upload_${sizeMib}mib_ms`] = round(median(up));
    }
    if (down.length > 0) {
      figures[`download_${sizeMib}mib_mib_per_s`] = rate(down);
      figures[`download_${sizeMib}mib_ms`] = round(median(down));
    }
  }
  figures.errors = errors;
  figures.content_mismatches = mismatches;
  const checks: Check[] = [
    { what: "uploads and downloads", target: "0 errors", pass: errors === 0 },
    { what: "downloads equal uploads (SHA-256)", target: "0 mismatches", pass: mismatches === 0 },
  ];
  const largest = sizes[sizes.length - 1];
  const peak = figures[`rss_peak_upload_${largest}mib_mb`];
  const before = figures[`rss_before_upload_${largest}mib_mb`];
  if (peak !== undefined && before !== undefined) figures[`rss_growth_upload_${largest}mib_mb`] = round(peak - before);
  return { parameters: { max_mib: maxMib, sizes: sizes.length }, figures, checks, notes };
};
