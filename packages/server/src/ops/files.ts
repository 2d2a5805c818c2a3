import { createHash } from "node:crypto";
import { constants as fsConstants, createReadStream } from "node:fs";
import { chmod, mkdir, open, readdir, rename, rm, stat, type FileHandle } from "node:fs/promises";
import path from "node:path";

/** File helpers for backup and restore: everything written is owner-only and fsynced. */

const SHA256_HEX = /^[0-9a-f]{64}$/;

export async function sha256File(file: string): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash("sha256");
  let bytes = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: hash.digest("hex"), bytes };
}

export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, fsConstants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** A new file written in buffered chunks while its SHA-256 is computed; `close` fsyncs it. */
export class HashedWriter {
  private readonly hash = createHash("sha256");
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  bytes = 0;

  private constructor(private readonly handle: FileHandle) {}

  static async create(file: string): Promise<HashedWriter> {
    return new HashedWriter(await open(file, "wx", 0o600));
  }

  async write(data: string | Buffer): Promise<void> {
    const buf = typeof data === "string" ? Buffer.from(data) : data;
    this.hash.update(buf);
    this.bytes += buf.length;
    this.pending.push(buf);
    this.pendingBytes += buf.length;
    if (this.pendingBytes >= 1024 * 1024) await this.drain();
  }

  private async drain(): Promise<void> {
    if (this.pendingBytes === 0) return;
    const buf = Buffer.concat(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
    await this.handle.write(buf);
  }

  async close(): Promise<{ sha256: string; bytes: number }> {
    try {
      await this.drain();
      await this.handle.sync();
    } finally {
      await this.handle.close();
    }
    return { sha256: this.hash.digest("hex"), bytes: this.bytes };
  }
}

/**
 * Copies a file, computing its SHA-256 on the way; the copy appears under its final name only when
 * complete (written as `.part`, fsynced, renamed). Returns the hash of what was copied.
 */
export async function copyFileHashed(from: string, to: string): Promise<{ sha256: string; bytes: number }> {
  const part = `${to}.part`;
  await rm(part, { force: true });
  const out = await HashedWriter.create(part);
  try {
    for await (const chunk of createReadStream(from, { highWaterMark: 1024 * 1024 })) await out.write(chunk as Buffer);
  } catch (err) {
    await out.close().catch(() => undefined);
    await rm(part, { force: true });
    throw err;
  }
  const result = await out.close();
  await rename(part, to);
  return result;
}

/** The content-addressed blob files under `<mediaRoot>/blobs/ab/cd/<sha256>`. */
export async function* walkBlobs(mediaRoot: string): AsyncGenerator<{ sha256: string; file: string }> {
  const blobs = path.join(mediaRoot, "blobs");
  const level = async (dir: string) => (await readdir(dir, { withFileTypes: true }).catch(() => [])).filter((d) => d.isDirectory() && /^[0-9a-f]{2}$/.test(d.name)).map((d) => d.name);
  for (const a of (await level(blobs)).sort()) {
    for (const b of (await level(path.join(blobs, a))).sort()) {
      const dir = path.join(blobs, a, b);
      for (const name of (await readdir(dir)).sort()) {
        if (SHA256_HEX.test(name) && name.startsWith(a + b)) yield { sha256: name, file: path.join(dir, name) };
      }
    }
  }
}

export function blobPath(mediaRoot: string, sha256: string): string {
  return path.join(mediaRoot, "blobs", sha256.slice(0, 2), sha256.slice(2, 4), sha256);
}

export interface BlobCopyResult {
  files: number;
  bytes: number;
  /** Blobs whose content does not match their name. */
  corrupt: string[];
}

/**
 * Copies every blob from one media root to another, checking each against the hash it is named
 * by. Corrupt blobs are not copied; the caller decides whether that is fatal.
 */
export async function copyBlobs(fromRoot: string, toRoot: string): Promise<BlobCopyResult> {
  const result: BlobCopyResult = { files: 0, bytes: 0, corrupt: [] };
  const madeDirs = new Set<string>();
  for await (const blob of walkBlobs(fromRoot)) {
    const target = blobPath(toRoot, blob.sha256);
    const dir = path.dirname(target);
    if (!madeDirs.has(dir)) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      madeDirs.add(dir);
    }
    const copied = await copyFileHashed(blob.file, target);
    if (copied.sha256 !== blob.sha256) {
      await rm(target, { force: true });
      result.corrupt.push(blob.sha256);
      continue;
    }
    result.files++;
    result.bytes += copied.bytes;
  }
  for (const dir of madeDirs) await syncDir(dir);
  return result;
}

/** Whether a media root holds at least one blob file. */
export async function hasBlobs(mediaRoot: string): Promise<boolean> {
  for await (const _ of walkBlobs(mediaRoot)) return true;
  return false;
}

/** Creates a directory for a backup: it must not exist or be empty; owner-only. */
export async function prepareEmptyDir(dir: string): Promise<void> {
  const st = await stat(dir).catch(() => null);
  if (st) {
    if (!st.isDirectory()) throw new Error(`${dir} exists and is not a directory`);
    if ((await readdir(dir)).length > 0) throw new Error(`${dir} is not empty; back up into a new or empty directory`);
    await chmod(dir, 0o700);
  } else {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  }
}
