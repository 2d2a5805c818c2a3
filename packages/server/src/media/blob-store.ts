import { createHash } from "node:crypto";
import { constants as fsConstants, createWriteStream, mkdirSync } from "node:fs";
import { mkdir, open, readdir, rename, rm, stat, unlink, type FileHandle } from "node:fs/promises";
import { once } from "node:events";
import path from "node:path";
import { Transform, finished, type Readable, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { MatrixError } from "@revier/protocol";
import { randomToken } from "../lib/random.js";

/** Content arrived that is larger than the caller allowed; nothing of it is kept. */
export class BlobTooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`content exceeds ${limit} bytes`);
    this.name = "BlobTooLargeError";
  }
}

/** The content for a hash is not (or no longer) in the store. */
export class BlobMissingError extends Error {
  constructor(readonly sha256: string) {
    super(`blob ${sha256} is missing`);
    this.name = "BlobMissingError";
  }
}

const DISK_FULL = new Set(["ENOSPC", "EDQUOT", "EFBIG"]);
const NOT_WRITABLE = new Set(["EACCES", "EPERM", "EROFS", "ENOTDIR", "EISDIR", "ENOENT", "EEXIST", "EIO", "ELOOP", "ENAMETOOLONG"]);

/**
 * The disk refused to store media: full (ENOSPC, EDQUOT, EFBIG) or not writable (permissions, a
 * read-only file system, a directory gone or replaced). It is a MatrixError (M_UNKNOWN; 507 when
 * full, 503 otherwise) so every path that writes blobs, uploads and thumbnails alike, answers
 * with the same clear error; nothing of the upload is kept (faults-media.test.ts).
 */
export class BlobStorageError extends MatrixError {
  constructor(
    readonly reason: "full" | "unwritable",
    readonly osCode: string,
    readonly syscall: string | undefined,
  ) {
    super(
      "ORG_REVIER_UNAVAILABLE",
      reason === "full" ? "The server's media storage is full; the content was not stored. Try again later." : "The server cannot write media right now; the content was not stored. Try again later.",
      { status: reason === "full" ? 507 : 503 },
    );
  }
}

/** An operating-system error from writing to the store, as a BlobStorageError; anything else unchanged. */
function asStorageError(err: unknown): unknown {
  const e = err as NodeJS.ErrnoException | null;
  if (!e || typeof e.code !== "string" || typeof e.syscall !== "string") return err;
  if (DISK_FULL.has(e.code)) return new BlobStorageError("full", e.code, e.syscall);
  if (NOT_WRITABLE.has(e.code)) return new BlobStorageError("unwritable", e.code, e.syscall);
  return err;
}

/**
 * Content received and durable, but not yet visible under its hash. The caller records the blob
 * in the database and publishes it inside the same transaction, so a reference count and the file
 * it counts never disagree; `discard` drops it instead.
 */
export interface PendingBlob {
  readonly sha256: string;
  readonly size: number;
  publish(): Promise<void>;
  discard(): Promise<void>;
}

/** Where media bytes live, addressed by their SHA-256. Disk today; an object store can follow. */
export interface BlobStore {
  /** Streams `source` in, hashing as it goes; rejects with BlobTooLargeError past `maxBytes`. */
  receive(source: Readable, opts: { maxBytes: number }): Promise<PendingBlob>;
  /** Reads the blob, or the inclusive byte range of it. Rejects with BlobMissingError. */
  open(sha256: string, range?: { start: number; end: number }): Promise<Readable>;
  /** Removes the blob; removing a missing blob is not an error. */
  remove(sha256: string): Promise<void>;
  /** Resolves once every upload being received has been kept or cleaned up (shutdown waits for it). */
  settle?(): Promise<void>;
}

const SHA256_HEX = /^[0-9a-f]{64}$/;
// A crashed process leaves its half-written uploads behind; a live upload keeps touching its file,
// so only files idle this long are swept (several processes may share the directory).
const STALE_TEMP_MS = 60 * 60 * 1000;

/** Counts and hashes what flows through, and fails the stream once it grows past the limit. */
class HashingLimiter extends Transform {
  readonly hash = createHash("sha256");
  size = 0;

  constructor(private readonly maxBytes: number) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.size += chunk.length;
    if (this.size > this.maxBytes) {
      done(new BlobTooLargeError(this.maxBytes));
      return;
    }
    this.hash.update(chunk);
    done(null, chunk);
  }
}

/**
 * Blobs as files under `<root>/blobs/ab/cd/<sha256>`. Uploads go to `<root>/tmp` first, are fsynced
 * there and renamed into place only when complete, so a reader never sees a partial file and an
 * interrupted upload leaves nothing behind. Writing identical content twice renames over a file
 * with the same bytes, which is harmless and keeps publish free of existence checks.
 */
export class DiskBlobStore implements BlobStore {
  private readonly blobDir: string;
  private readonly tmpDir: string;

  constructor(
    readonly root: string,
    /** Told about every write the disk refused (full, not writable), for the operator's log. */
    private readonly opts: { onStorageError?: (err: BlobStorageError) => void } = {},
  ) {
    this.blobDir = path.join(root, "blobs");
    this.tmpDir = path.join(root, "tmp");
    mkdirSync(this.blobDir, { recursive: true, mode: 0o700 });
    mkdirSync(this.tmpDir, { recursive: true, mode: 0o700 });
  }

  /** Directory holding uploads in progress (tests look there for leftovers). */
  get tempDir(): string {
    return this.tmpDir;
  }

  pathOf(sha256: string): string {
    // The path is built from a hash we computed, never from anything a client sent; the check
    // makes that an invariant rather than a habit.
    if (!SHA256_HEX.test(sha256)) throw new Error(`not a SHA-256 hex digest: ${JSON.stringify(sha256)}`);
    return path.join(this.blobDir, sha256.slice(0, 2), sha256.slice(2, 4), sha256);
  }

  private readonly receiving = new Set<Promise<unknown>>();

  receive(source: Readable, opts: { maxBytes: number }): Promise<PendingBlob> {
    const running = this.receiveFile(source, opts);
    const tracked = running.catch(() => undefined);
    this.receiving.add(tracked);
    void tracked.then(() => this.receiving.delete(tracked));
    return running;
  }

  async settle(): Promise<void> {
    await Promise.allSettled([...this.receiving]);
  }

  private async receiveFile(source: Readable, opts: { maxBytes: number }): Promise<PendingBlob> {
    const tmp = path.join(this.tmpDir, `${randomToken(12)}.part`);
    const counter = new HashingLimiter(opts.maxBytes);
    // The source is piped by hand rather than through pipeline(): pipeline would destroy it on
    // failure, and destroying an HTTP request kills its socket before the 413 can be sent.
    const stopWatching = finished(source, { writable: false }, (err) => {
      if (err) counter.destroy(err);
    });
    // flush: the file is fsynced before it is closed, so what we later rename is durable.
    // highWaterMark bounds what sits in memory per upload whatever the file's size.
    const sink = createWriteStream(tmp, { flags: "wx", mode: 0o600, flush: true, highWaterMark: 1024 * 1024 });
    try {
      const written = pipeline(counter, sink);
      source.pipe(counter);
      await written;
    } catch (err) {
      source.unpipe(counter);
      source.pause();
      // The file may still be opening; removing it before it is closed could let it reappear.
      if (!sink.closed) await once(sink, "close").catch(() => undefined);
      // The directory itself may be what failed (replaced, unreadable); the hourly sweep retries.
      await rm(tmp, { force: true }).catch(() => undefined);
      throw this.storageFailure(err);
    } finally {
      stopWatching();
    }
    const sha256 = counter.hash.digest("hex");
    const size = counter.size;
    let settled = false;
    return {
      sha256,
      size,
      publish: async () => {
        if (settled) throw new Error("pending blob already settled");
        const target = this.pathOf(sha256);
        try {
          await mkdir(path.dirname(target), { recursive: true, mode: 0o700 });
          await rename(tmp, target);
          settled = true;
          await syncDir(path.dirname(target));
        } catch (err) {
          throw this.storageFailure(err);
        }
      },
      discard: async () => {
        if (settled) return;
        settled = true;
        await rm(tmp, { force: true });
      },
    };
  }

  async open(sha256: string, range?: { start: number; end: number }): Promise<Readable> {
    let handle: FileHandle;
    try {
      handle = await open(this.pathOf(sha256), fsConstants.O_RDONLY);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new BlobMissingError(sha256);
      throw err;
    }
    return handle.createReadStream({ ...(range ? { start: range.start, end: range.end } : {}), highWaterMark: 256 * 1024 });
  }

  async remove(sha256: string): Promise<void> {
    try {
      await unlink(this.pathOf(sha256));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }

  private storageFailure(err: unknown): unknown {
    const mapped = asStorageError(err);
    if (mapped instanceof BlobStorageError) this.opts.onStorageError?.(mapped);
    return mapped;
  }

  /** Removes uploads a crashed process left behind. */
  async sweepTemp(): Promise<void> {
    const now = Date.now();
    for (const name of await readdir(this.tmpDir)) {
      const p = path.join(this.tmpDir, name);
      const st = await stat(p).catch(() => null);
      if (st && now - st.mtimeMs > STALE_TEMP_MS) await rm(p, { force: true });
    }
  }
}

/** Makes a rename durable: the new directory entry survives power loss only once the directory is synced. */
async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, fsConstants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
