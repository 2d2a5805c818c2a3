import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { sql } from "kysely";
import { MatrixError } from "@revier/protocol";
import type { Db, Tx } from "../storage/database.js";
import type { Database, Dialect } from "../storage/schema.js";
import { randomToken } from "../lib/random.js";
import { BlobTooLargeError, type BlobStore, type PendingBlob } from "./blob-store.js";
import { sniffImageFormat, thumbnailBox, ThumbnailError, type Thumbnailer, type ThumbnailMethod } from "./thumbnails.js";

export type MediaRow = Database["media"];
/** A media item whose content has arrived. */
export type StoredMedia = MediaRow & { sha256: string; size: number };

export interface ThumbnailRef {
  sha256: string;
  contentType: string;
  size: number;
}

export interface MediaLimits {
  maxUploadBytes: number;
  userQuotaBytes: number | null;
}

export interface UploadMeta {
  contentType: string;
  filename: string | null;
  /** Content-Length of the request, when the client sent one. */
  declaredLength: number | null;
}

/** Media ids are ours to mint; anything outside this alphabet is refused before any lookup. */
const MEDIA_ID = /^[A-Za-z0-9_-]{1,255}$/;

export function isValidMediaId(id: string): boolean {
  return MEDIA_ID.test(id);
}

/** The spec recommends 24 hours for a created id to receive its content. */
const UNUSED_ID_LIFETIME_MS = 24 * 60 * 60 * 1000;
/** Created ids still waiting for content, per user; the spec asks servers to bound them. */
const MAX_PENDING_PER_USER = 50;
/** Longest a download waits for content that has not arrived yet (the spec's default timeout). */
const MAX_WAIT_MS = 20_000;
const WAIT_POLL_MS = 200;
/** Thumbnail sources are read into memory for the decoder; larger images get no thumbnail. */
const MAX_THUMBNAIL_SOURCE_BYTES = 50 * 1024 * 1024;

function formatBytes(n: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} bytes` : `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`;
}

function tooLarge(limit: number): MatrixError {
  return new MatrixError("M_TOO_LARGE", `Uploads are limited to ${formatBytes(limit)} (${limit} bytes)`);
}

function overQuota(quota: number, used: number): MatrixError {
  return new MatrixError("M_FORBIDDEN", `This upload would exceed your storage quota of ${formatBytes(quota)} (${quota} bytes); ${formatBytes(used)} are in use`);
}

/**
 * The content repository: uploads, the mxc ids pointing at content, thumbnails, and the deletion
 * hooks retention and account deletion use. Content lives in a BlobStore, addressed by hash and
 * reference-counted here, so identical uploads are stored once.
 */
export class MediaService {
  private readonly thumbnailsInFlight = new Map<string, Promise<ThumbnailRef>>();

  constructor(
    private readonly db: Db,
    private readonly dialect: Dialect,
    readonly blobs: BlobStore,
    readonly thumbnailer: Thumbnailer,
    readonly limits: MediaLimits,
  ) {}

  async get(mediaId: string): Promise<MediaRow | undefined> {
    return this.db.selectFrom("media").selectAll().where("media_id", "=", mediaId).executeTakeFirst();
  }

  /** Bytes the user's media take up; identical content uploaded twice counts twice. */
  async usedBytes(userId: string, db: Db | Tx = this.db): Promise<number> {
    const row = await db
      .selectFrom("media")
      .select((eb) => eb.fn.coalesce(eb.fn.sum<number | string>("size"), sql<number>`0`).as("used"))
      .where("user_id", "=", userId)
      .executeTakeFirst();
    // PostgreSQL sums bigints as numeric, which arrives as a string.
    return Number(row?.used ?? 0);
  }

  /** `POST /upload`: stores the content under a new media id. */
  async upload(userId: string, source: Readable, meta: UploadMeta): Promise<string> {
    const mediaId = randomToken(18);
    await this.store(userId, source, meta, { mediaId, created: false });
    return mediaId;
  }

  /** `POST /create`: reserves a media id whose content comes later. */
  async create(userId: string): Promise<{ mediaId: string; unusedExpiresTs: number }> {
    const now = Date.now();
    await this.db.deleteFrom("media").where("user_id", "=", userId).where("sha256", "is", null).where("unused_expires_ts", "<=", now).execute();
    const pending = await this.db
      .selectFrom("media")
      .select((eb) => eb.fn.countAll<number | string>().as("n"))
      .where("user_id", "=", userId)
      .where("sha256", "is", null)
      .executeTakeFirst();
    if (Number(pending?.n ?? 0) >= MAX_PENDING_PER_USER) {
      throw new MatrixError("M_LIMIT_EXCEEDED", `At most ${MAX_PENDING_PER_USER} created media ids may wait for their content; upload to those first`, { extra: { retry_after_ms: 60_000 } });
    }
    const mediaId = randomToken(18);
    const unusedExpiresTs = now + UNUSED_ID_LIFETIME_MS;
    await this.db
      .insertInto("media")
      .values({ media_id: mediaId, user_id: userId, sha256: null, size: null, content_type: null, filename: null, created_ts: now, uploaded_ts: null, unused_expires_ts: unusedExpiresTs })
      .execute();
    return { mediaId, unusedExpiresTs };
  }

  /** `PUT /upload/{serverName}/{mediaId}`: the content for an id made by `create`. */
  async uploadTo(userId: string, mediaId: string, source: Readable, meta: UploadMeta): Promise<void> {
    const row = await this.get(mediaId);
    if (!row || (row.sha256 === null && row.unused_expires_ts !== null && row.unused_expires_ts <= Date.now())) {
      throw new MatrixError("M_NOT_FOUND", "Unknown or expired media id");
    }
    if (row.user_id !== userId) throw new MatrixError("M_FORBIDDEN", "This media id was created by another user");
    if (row.sha256 !== null) throw new MatrixError("M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded");
    await this.store(userId, source, meta, { mediaId, created: true });
  }

  /**
   * Streams the content into the blob store within the size limit and the user's quota, then
   * records it. The limit is checked against Content-Length before a byte is read and again while
   * reading, since Content-Length may be absent (chunked) and is the client's claim.
   */
  private async store(userId: string, source: Readable, meta: UploadMeta, target: { mediaId: string; created: boolean }): Promise<void> {
    const max = this.limits.maxUploadBytes;
    const quota = this.limits.userQuotaBytes;
    if (meta.declaredLength !== null && meta.declaredLength > max) throw tooLarge(max);
    const used = quota === null ? 0 : await this.usedBytes(userId);
    const remaining = quota === null ? Number.POSITIVE_INFINITY : Math.max(0, quota - used);
    if (quota !== null && meta.declaredLength !== null && meta.declaredLength > remaining) throw overQuota(quota, used);

    let blob: PendingBlob;
    try {
      blob = await this.blobs.receive(source, { maxBytes: Math.min(max, remaining) });
    } catch (err) {
      if (err instanceof BlobTooLargeError) throw max <= remaining ? tooLarge(max) : overQuota(quota ?? 0, used);
      throw err;
    }
    try {
      await this.db.transaction().execute(async (tx) => {
        if (quota !== null) {
          // Two uploads of one user finishing together must not both fit into the same headroom.
          await this.lockUser(tx, userId);
          const usedNow = await this.usedBytes(userId, tx);
          if (usedNow + blob.size > quota) throw overQuota(quota, usedNow);
        }
        await this.addReference(tx, blob.sha256, blob.size);
        const now = Date.now();
        const content = { sha256: blob.sha256, size: blob.size, content_type: meta.contentType, filename: meta.filename, uploaded_ts: now, unused_expires_ts: null };
        if (target.created) {
          const res = await tx.updateTable("media").set(content).where("media_id", "=", target.mediaId).where("sha256", "is", null).executeTakeFirst();
          if (Number(res.numUpdatedRows) !== 1) throw new MatrixError("M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded");
        } else {
          await tx.insertInto("media").values({ media_id: target.mediaId, user_id: userId, created_ts: now, ...content }).execute();
        }
        // Published last, inside the transaction: if it fails nothing is recorded, and the blob's
        // row stays locked until the file is in place, so a concurrent delete cannot remove it.
        await blob.publish();
      });
    } catch (err) {
      await blob.discard();
      throw err;
    }
  }

  /**
   * The stored content of a media id. Content that was created but not yet uploaded is waited for,
   * up to `timeoutMs` (at most 20 s), then answered with M_NOT_YET_UPLOADED.
   */
  async content(mediaId: string, timeoutMs = MAX_WAIT_MS): Promise<StoredMedia> {
    const deadline = Date.now() + Math.min(Math.max(0, timeoutMs), MAX_WAIT_MS);
    for (;;) {
      const row = await this.get(mediaId);
      if (!row) throw new MatrixError("M_NOT_FOUND", "Media not found");
      if (row.sha256 !== null && row.size !== null) return row as StoredMedia;
      if (row.unused_expires_ts !== null && row.unused_expires_ts <= Date.now()) throw new MatrixError("M_NOT_FOUND", "Media not found");
      if (Date.now() >= deadline) throw new MatrixError("M_NOT_YET_UPLOADED", "Content has not yet been uploaded");
      await sleep(WAIT_POLL_MS);
    }
  }

  /**
   * A thumbnail of the media's content of at least the requested size, generated on first request
   * and kept as a blob of its own. Only content whose leading bytes show JPEG, PNG, GIF or WebP is
   * ever given to the decoder.
   */
  async thumbnail(media: StoredMedia, width: number, height: number, method: ThumbnailMethod): Promise<ThumbnailRef> {
    const box = thumbnailBox(width, height, method);
    const cached = await this.cachedThumbnail(this.db, media.sha256, box, method);
    if (cached) return cached;
    const key = `${media.sha256}/${box.width}x${box.height}/${method}`;
    let running = this.thumbnailsInFlight.get(key);
    if (!running) {
      running = this.generateThumbnail(media, box, method).finally(() => this.thumbnailsInFlight.delete(key));
      this.thumbnailsInFlight.set(key, running);
    }
    return running;
  }

  private async cachedThumbnail(db: Db | Tx, source: string, box: { width: number; height: number }, method: ThumbnailMethod): Promise<ThumbnailRef | undefined> {
    const row = await db
      .selectFrom("media_thumbnails")
      .select(["sha256", "content_type", "size"])
      .where("source_sha256", "=", source)
      .where("width", "=", box.width)
      .where("height", "=", box.height)
      .where("method", "=", method)
      .executeTakeFirst();
    return row ? { sha256: row.sha256, contentType: row.content_type, size: row.size } : undefined;
  }

  private async generateThumbnail(media: StoredMedia, box: { width: number; height: number }, method: ThumbnailMethod): Promise<ThumbnailRef> {
    const cannot = () => new MatrixError("M_UNKNOWN", "Cannot generate thumbnails for the requested content");
    const head = media.size > 0 ? await readAll(await this.blobs.open(media.sha256, { start: 0, end: Math.min(media.size, 16) - 1 })) : Buffer.alloc(0);
    const format = sniffImageFormat(head);
    if (!format) throw cannot();
    if (media.size > MAX_THUMBNAIL_SOURCE_BYTES) throw new MatrixError("M_TOO_LARGE", "Content is too large to thumbnail");
    const input = await readAll(await this.blobs.open(media.sha256));
    let rendered;
    try {
      rendered = await this.thumbnailer.render(input, format, box, method);
    } catch (err) {
      if (err instanceof ThumbnailError) {
        if (err.reason === "too-large") throw new MatrixError("M_TOO_LARGE", "Content is too large to thumbnail");
        throw cannot();
      }
      throw err;
    }
    const contentType = rendered.contentType;
    const blob = await this.blobs.receive(Readable.from([rendered.data]), { maxBytes: rendered.data.length });
    // A thumbnail identical to its source (an image already that small) is the source itself;
    // recording it would make the blob hold a reference to itself.
    if (blob.sha256 === media.sha256) {
      await blob.discard();
      return { sha256: media.sha256, contentType: media.content_type ?? contentType, size: media.size };
    }
    try {
      return await this.db.transaction().execute(async (tx) => {
        let sourceRow = tx.selectFrom("media_blobs").select("refcount").where("sha256", "=", media.sha256);
        if (this.dialect === "postgres") sourceRow = sourceRow.forUpdate();
        // The source may have been deleted while we rendered; a thumbnail must not outlive it.
        if (!(await sourceRow.executeTakeFirst())) throw new MatrixError("M_NOT_FOUND", "Media not found");
        const existing = await this.cachedThumbnail(tx, media.sha256, box, method);
        if (existing) {
          await blob.discard();
          return existing;
        }
        await this.addReference(tx, blob.sha256, blob.size);
        await tx
          .insertInto("media_thumbnails")
          .values({ source_sha256: media.sha256, width: box.width, height: box.height, method, sha256: blob.sha256, content_type: contentType, size: blob.size, created_ts: Date.now() })
          .execute();
        await blob.publish();
        return { sha256: blob.sha256, contentType, size: blob.size };
      });
    } catch (err) {
      await blob.discard();
      throw err;
    }
  }

  /** Deletion hook: a user's media, newest first (uploads still waiting for content included). */
  async list(userId: string): Promise<MediaRow[]> {
    return this.db.selectFrom("media").selectAll().where("user_id", "=", userId).orderBy("created_ts", "desc").orderBy("media_id").execute();
  }

  /** Deletion hook for retention: media ids created before `cutoffTs`, oldest first, a page at a time after `after`. */
  async listCreatedBefore(cutoffTs: number, opts: { after?: { createdTs: number; mediaId: string }; limit: number }): Promise<Array<{ media_id: string; created_ts: number }>> {
    let q = this.db.selectFrom("media").select(["media_id", "created_ts"]).where("created_ts", "<", cutoffTs);
    const after = opts.after;
    if (after) q = q.where((eb) => eb.or([eb("created_ts", ">", after.createdTs), eb.and([eb("created_ts", "=", after.createdTs), eb("media_id", ">", after.mediaId)])]));
    return q.orderBy("created_ts").orderBy("media_id").limit(opts.limit).execute();
  }

  /**
   * Deletion hook: removes a media item. Its content, and the thumbnails made from it, go when no
   * other media item holds the same content. Returns false when there was no such item.
   */
  async delete(mediaId: string): Promise<boolean> {
    return this.db.transaction().execute(async (tx) => {
      const row = await tx.selectFrom("media").select("sha256").where("media_id", "=", mediaId).executeTakeFirst();
      if (!row) return false;
      await tx.deleteFrom("media").where("media_id", "=", mediaId).execute();
      if (row.sha256 !== null) {
        const unreferenced: string[] = [];
        await this.dropReference(tx, row.sha256, unreferenced);
        // Removed inside the transaction, while the rows are locked, so an upload of the same
        // content cannot slip in between the count reaching zero and the file going.
        for (const sha256 of unreferenced) await this.blobs.remove(sha256);
      }
      return true;
    });
  }

  /** Deletion hook for account deletion: every media item of the user. Returns how many went. */
  async deleteAll(userId: string): Promise<number> {
    let n = 0;
    for (const row of await this.list(userId)) if (await this.delete(row.media_id)) n++;
    return n;
  }

  private async lockUser(tx: Tx, userId: string): Promise<void> {
    // SQLite runs one writer at a time already.
    if (this.dialect === "postgres") await sql`select pg_advisory_xact_lock(hashtext(${`revier.media:${userId}`}))`.execute(tx);
  }

  private async addReference(tx: Tx, sha256: string, size: number): Promise<void> {
    await tx
      .insertInto("media_blobs")
      .values({ sha256, size, refcount: 1, created_ts: Date.now() })
      .onConflict((oc) => oc.column("sha256").doUpdateSet((eb) => ({ refcount: eb("media_blobs.refcount", "+", 1) })))
      .execute();
  }

  private async dropReference(tx: Tx, sha256: string, unreferenced: string[]): Promise<void> {
    await tx
      .updateTable("media_blobs")
      .set((eb) => ({ refcount: eb("refcount", "-", 1) }))
      .where("sha256", "=", sha256)
      .execute();
    const row = await tx.selectFrom("media_blobs").select("refcount").where("sha256", "=", sha256).executeTakeFirst();
    if (!row || row.refcount > 0) return;
    const thumbs = await tx.selectFrom("media_thumbnails").select("sha256").where("source_sha256", "=", sha256).execute();
    await tx.deleteFrom("media_thumbnails").where("source_sha256", "=", sha256).execute();
    for (const t of thumbs) await this.dropReference(tx, t.sha256, unreferenced);
    await tx.deleteFrom("media_blobs").where("sha256", "=", sha256).execute();
    unreferenced.push(sha256);
  }
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
