import { Readable } from "node:stream";
import { Type, type Static } from "@sinclair/typebox";
import type { FastifyReply, FastifyRequest } from "fastify";
import { MatrixError } from "@revier/protocol";
import { route } from "../../http/route.js";
import type { Services } from "../../services.js";
import { BlobMissingError } from "../../media/blob-store.js";
import { isValidMediaId, type StoredMedia } from "../../media/media.js";
import { MEDIA_CSP, contentDisposition, isInlineType, matchesEtag, normaliseContentType, parseRange } from "../../media/serving.js";
import type { ThumbnailMethod } from "../../media/thumbnails.js";

const MediaParams = Type.Object({ serverName: Type.String({ maxLength: 255 }), mediaId: Type.String({ maxLength: 255 }) });
const NamedMediaParams = Type.Object({ serverName: Type.String({ maxLength: 255 }), mediaId: Type.String({ maxLength: 255 }), fileName: Type.String({ maxLength: 255 }) });
const UploadQuery = Type.Object({ filename: Type.Optional(Type.String()) });
const DownloadQuery = Type.Object({ timeout_ms: Type.Optional(Type.Integer({ minimum: 0 })) });
const ThumbnailQuery = Type.Object({
  width: Type.Integer({ minimum: 1, maximum: 100_000 }),
  height: Type.Integer({ minimum: 1, maximum: 100_000 }),
  method: Type.Optional(Type.Union([Type.Literal("crop"), Type.Literal("scale")])),
  animated: Type.Optional(Type.Boolean()),
  timeout_ms: Type.Optional(Type.Integer({ minimum: 0 })),
});

/**
 * The media id of a request, checked before anything is looked up: only ids of this server, in
 * the alphabet we mint them from. The path a blob lives at is derived from its hash, never from
 * the id, so this is a second wall rather than the only one.
 */
function mediaIdOf(s: Services, params: { serverName: string; mediaId: string }): string {
  if (!isValidMediaId(params.mediaId)) throw new MatrixError("M_INVALID_PARAM", "Invalid media id");
  // No federation yet: media of other servers cannot be fetched.
  if (params.serverName !== s.config.serverName) throw new MatrixError("M_NOT_FOUND", "Media not found");
  return params.mediaId;
}

function uploadMeta(req: FastifyRequest, filename: string | undefined): { contentType: string; filename: string | null; declaredLength: number | null } {
  if (filename !== undefined) {
    // The name ends up in a response header; it must come back exactly as given, so refuse what
    // cannot be stored faithfully rather than alter it.
    if (filename.length > 255) throw new MatrixError("M_INVALID_PARAM", "filename is longer than 255 characters");
    if ([...filename].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f)) throw new MatrixError("M_INVALID_PARAM", "filename may not contain control characters");
  }
  const length = req.headers["content-length"];
  return {
    contentType: normaliseContentType(req.headers["content-type"]),
    filename: filename === undefined || filename === "" ? null : filename,
    declaredLength: length !== undefined && /^\d+$/.test(length) ? Number(length) : null,
  };
}

/** The request body of a raw-body route; a request without a body is an empty upload. */
function bodyStream(req: FastifyRequest): Readable {
  return req.body instanceof Readable ? req.body : Readable.from([]);
}

/**
 * Sends stored bytes with the headers that keep a browser from treating them as a page:
 * nosniff, a sandboxing CSP, and `attachment` unless the type is a plain image, audio or video.
 * Content is immutable under its hash, so it carries a strong ETag and long-lived caching, and
 * single byte ranges are served for seeking in audio and video.
 */
async function sendContent(s: Services, req: FastifyRequest, reply: FastifyReply, content: { sha256: string; size: number; contentType: string; disposition: string }): Promise<FastifyReply> {
  const etag = `"${content.sha256}"`;
  const common = {
    etag,
    "cache-control": "private, max-age=31536000, immutable",
    "x-content-type-options": "nosniff",
    "content-security-policy": MEDIA_CSP,
    "accept-ranges": "bytes",
  };
  if (matchesEtag(req.headers["if-none-match"], etag)) {
    reply.code(304).headers(common).send();
    return reply;
  }
  const ifRange = req.headers["if-range"];
  const range = ifRange === undefined || ifRange === etag ? parseRange(req.headers.range, content.size) : null;
  if (range === "unsatisfiable") {
    throw new MatrixError("M_UNKNOWN", "Requested range not satisfiable", { status: 416, headers: { "content-range": `bytes */${content.size}` } });
  }
  let stream: Readable;
  try {
    stream = await s.media.blobs.open(content.sha256, range ?? undefined);
  } catch (err) {
    if (err instanceof BlobMissingError) {
      s.log.error({ sha256: content.sha256 }, "media content missing from the blob store");
      throw new MatrixError("M_NOT_FOUND", "Media not found");
    }
    throw err;
  }
  reply.headers({ ...common, "content-type": content.contentType, "content-disposition": content.disposition });
  if (range) {
    reply.code(206).headers({ "content-range": `bytes ${range.start}-${range.end}/${content.size}`, "content-length": String(range.end - range.start + 1) });
  } else {
    reply.header("content-length", String(content.size));
  }
  reply.send(stream);
  return reply;
}

async function download(s: Services, req: FastifyRequest, reply: FastifyReply, params: { serverName: string; mediaId: string }, query: Static<typeof DownloadQuery>, fileName?: string): Promise<FastifyReply> {
  const media = await s.media.content(mediaIdOf(s, params), query.timeout_ms);
  const contentType = media.content_type ?? "application/octet-stream";
  const name = fileName ?? media.filename;
  return sendContent(s, req, reply, { sha256: media.sha256, size: media.size, contentType, disposition: contentDisposition(isInlineType(contentType) ? "inline" : "attachment", name) });
}

async function thumbnail(s: Services, req: FastifyRequest, reply: FastifyReply, params: { serverName: string; mediaId: string }, query: Static<typeof ThumbnailQuery>): Promise<FastifyReply> {
  const media: StoredMedia = await s.media.content(mediaIdOf(s, params), query.timeout_ms);
  const method: ThumbnailMethod = query.method ?? "scale";
  let thumb;
  try {
    thumb = await s.media.thumbnail(media, query.width, query.height, method);
  } catch (err) {
    if (err instanceof BlobMissingError) {
      s.log.error({ sha256: err.sha256 }, "media content missing from the blob store");
      throw new MatrixError("M_NOT_FOUND", "Media not found");
    }
    throw err;
  }
  const extension = thumb.contentType.split("/")[1] ?? "bin";
  return sendContent(s, req, reply, { sha256: thumb.sha256, size: thumb.size, contentType: thumb.contentType, disposition: contentDisposition("inline", `thumbnail.${extension}`) });
}

function mediaConfig(s: Services): Record<string, unknown> {
  return { "m.upload.size": s.config.media.maxUploadBytes };
}

/** The legacy unauthenticated endpoints answer only when the operator turned them on. */
function requireLegacy(s: Services): void {
  if (!s.config.media.legacyUnauthenticated) {
    throw new MatrixError("M_NOT_FOUND", "Unauthenticated media access is disabled; use /_matrix/client/v1/media");
  }
}

export const mediaRoutes = [
  route({ method: "POST", url: "/_matrix/media/v3/upload", query: UploadQuery, rawBody: true }, async ({ user, query, req }, s) => {
    const mediaId = await s.media.upload(user.userId, bodyStream(req), uploadMeta(req, query.filename));
    return { content_uri: `mxc://${s.config.serverName}/${mediaId}` };
  }),

  route({ method: "POST", url: "/_matrix/media/v1/create" }, async ({ user }, s) => {
    const { mediaId, unusedExpiresTs } = await s.media.create(user.userId);
    return { content_uri: `mxc://${s.config.serverName}/${mediaId}`, unused_expires_at: unusedExpiresTs };
  }),

  route({ method: "PUT", url: "/_matrix/media/v3/upload/:serverName/:mediaId", params: MediaParams, query: UploadQuery, rawBody: true }, async ({ user, params, query, req }, s) => {
    const mediaId = mediaIdOf(s, params);
    await s.media.uploadTo(user.userId, mediaId, bodyStream(req), uploadMeta(req, query.filename));
    return {};
  }),

  route({ method: "GET", url: "/_matrix/client/v1/media/config" }, async (_ctx, s) => mediaConfig(s)),
  // Deprecated, but it always needed a token and tells old clients the limit.
  route({ method: "GET", url: "/_matrix/media/v3/config" }, async (_ctx, s) => mediaConfig(s)),

  route({ method: "GET", url: "/_matrix/client/v1/media/download/:serverName/:mediaId", params: MediaParams, query: DownloadQuery }, async ({ params, query, req, reply }, s) =>
    download(s, req, reply, params, query),
  ),
  route({ method: "GET", url: "/_matrix/client/v1/media/download/:serverName/:mediaId/:fileName", params: NamedMediaParams, query: DownloadQuery }, async ({ params, query, req, reply }, s) =>
    download(s, req, reply, params, query, params.fileName),
  ),
  route({ method: "GET", url: "/_matrix/client/v1/media/thumbnail/:serverName/:mediaId", params: MediaParams, query: ThumbnailQuery }, async ({ params, query, req, reply }, s) =>
    thumbnail(s, req, reply, params, query),
  ),

  route({ method: "GET", url: "/_matrix/media/v3/download/:serverName/:mediaId", auth: "none", params: MediaParams, query: DownloadQuery }, async ({ params, query, req, reply }, s) => {
    requireLegacy(s);
    return download(s, req, reply, params, query);
  }),
  route({ method: "GET", url: "/_matrix/media/v3/download/:serverName/:mediaId/:fileName", auth: "none", params: NamedMediaParams, query: DownloadQuery }, async ({ params, query, req, reply }, s) => {
    requireLegacy(s);
    return download(s, req, reply, params, query, params.fileName);
  }),
  route({ method: "GET", url: "/_matrix/media/v3/thumbnail/:serverName/:mediaId", auth: "none", params: MediaParams, query: ThumbnailQuery }, async ({ params, query, req, reply }, s) => {
    requireLegacy(s);
    return thumbnail(s, req, reply, params, query);
  }),
];
