import sharp, { type Metadata } from "sharp";

/** The only formats we ever hand to the image decoder. */
export type ImageFormat = "jpeg" | "png" | "gif" | "webp";
export type ThumbnailMethod = "crop" | "scale";

/**
 * Recognises the allowed formats by their leading bytes. The declared content type is the
 * uploader's claim and is never trusted for decoding: SVG, TIFF and everything else libvips could
 * parse stay undecoded, which keeps their parsers out of reach.
 */
export function sniffImageFormat(head: Uint8Array): ImageFormat | null {
  const at = (i: number) => head[i];
  if (head.length >= 3 && at(0) === 0xff && at(1) === 0xd8 && at(2) === 0xff) return "jpeg";
  if (head.length >= 8 && [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a].every((b, i) => at(i) === b)) return "png";
  const ascii = (from: number, to: number) => String.fromCharCode(...head.subarray(from, to));
  if (head.length >= 6 && (ascii(0, 6) === "GIF87a" || ascii(0, 6) === "GIF89a")) return "gif";
  if (head.length >= 12 && ascii(0, 4) === "RIFF" && ascii(8, 12) === "WEBP") return "webp";
  return null;
}

/**
 * Thumbnails come in a fixed set of boxes, so the number cached per image stays bounded however
 * many sizes clients ask for; a request is served from the smallest box that covers it (the
 * largest, if none does). `scale` uses the spec's recommended boxes; `crop` boxes keep the
 * requested shape, rounded to the nearest of a few common aspect ratios, so a square avatar
 * request gets a square.
 */
export const SCALE_BOXES: ReadonlyArray<{ width: number; height: number }> = [
  { width: 32, height: 32 },
  { width: 96, height: 96 },
  { width: 320, height: 240 },
  { width: 640, height: 480 },
  { width: 800, height: 600 },
];
const CROP_LONG_SIDES = [32, 96, 320, 640, 800];
const CROP_ASPECTS = [1, 4 / 3, 3 / 4, 16 / 9, 9 / 16];

export function thumbnailBox(width: number, height: number, method: ThumbnailMethod): { width: number; height: number } {
  if (method === "scale") return SCALE_BOXES.find((b) => b.width >= width && b.height >= height) ?? SCALE_BOXES[SCALE_BOXES.length - 1]!;
  const wanted = Math.log(width / height);
  const aspect = CROP_ASPECTS.reduce((best, a) => (Math.abs(Math.log(a) - wanted) < Math.abs(Math.log(best) - wanted) ? a : best));
  const boxes = CROP_LONG_SIDES.map((long) => (aspect >= 1 ? { width: long, height: Math.round(long / aspect) } : { width: Math.round(long * aspect), height: long }));
  return boxes.find((b) => b.width >= width && b.height >= height) ?? boxes[boxes.length - 1]!;
}

/**
 * Output dimensions for a source image. `scale` fits inside the box keeping the aspect ratio;
 * `crop` fills the box exactly. Neither enlarges: a small source gives a small thumbnail (for
 * `crop`, the box shrunk to fit inside the source).
 */
export function thumbnailDimensions(source: { width: number; height: number }, box: { width: number; height: number }, method: ThumbnailMethod): { width: number; height: number } {
  if (method === "scale") {
    const f = Math.min(1, box.width / source.width, box.height / source.height);
    return { width: Math.max(1, Math.round(source.width * f)), height: Math.max(1, Math.round(source.height * f)) };
  }
  const f = Math.min(1, source.width / box.width, source.height / box.height);
  return { width: Math.max(1, Math.round(box.width * f)), height: Math.max(1, Math.round(box.height * f)) };
}

/** Why an image could not be thumbnailed; mapped to 400 or 413 by the caller. */
export class ThumbnailError extends Error {
  constructor(
    readonly reason: "unsupported" | "too-large" | "invalid",
    message: string,
  ) {
    super(message);
    this.name = "ThumbnailError";
  }
}

export interface RenderedThumbnail {
  data: Buffer;
  contentType: "image/jpeg" | "image/png" | "image/webp";
  width: number;
  height: number;
}

export class Thumbnailer {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(
    /** Largest image, in pixels, we agree to decode; a decompression bomb stops at its header. */
    readonly maxPixels: number,
    /** Decodes running at once; the rest queue so thumbnails cannot starve the thread pool. */
    private readonly maxConcurrent = 2,
  ) {
    // libvips caches decoded images and operations by default; for one-off thumbnails that is
    // memory held for nothing.
    sharp.cache(false);
    // Behind the magic-byte check, libvips itself refuses every loader but the four allowed ones
    // (it would otherwise parse SVG, TIFF, HEIF, PDF … by content). This is process-wide, and
    // nothing else in the server decodes images.
    sharp.block({ operation: ["VipsForeignLoad"] });
    sharp.unblock({ operation: ["VipsForeignLoadJpegBuffer", "VipsForeignLoadPngBuffer", "VipsForeignLoadNsgifBuffer", "VipsForeignLoadWebpBuffer"] });
  }

  /**
   * Renders a thumbnail of `input`, which `sniffImageFormat` has already recognised as `format`.
   * The header is read first and checked against the pixel limit before any pixel is decoded.
   */
  async render(input: Buffer, format: ImageFormat, box: { width: number; height: number }, method: ThumbnailMethod): Promise<RenderedThumbnail> {
    await this.acquire();
    try {
      const options = { limitInputPixels: this.maxPixels, failOn: "error" as const, animated: false, autoOrient: true };
      let meta: Metadata;
      try {
        meta = await sharp(input, options).metadata();
      } catch (err) {
        const message = (err as Error).message;
        if (/pixel limit/i.test(message)) throw new ThumbnailError("too-large", message);
        throw new ThumbnailError("invalid", `Cannot read the image: ${message}`);
      }
      // libvips picks its loader by content too; a mismatch means a polyglot file, refused.
      if (meta.format !== format) throw new ThumbnailError("unsupported", `Content is not a ${format} image`);
      const width = meta.autoOrient.width;
      const height = meta.autoOrient.height;
      if (!width || !height) throw new ThumbnailError("invalid", "The image has no dimensions");
      if (width * height > this.maxPixels) throw new ThumbnailError("too-large", `The image has more than ${this.maxPixels} pixels`);
      const size = thumbnailDimensions({ width, height }, box, method);
      let pipeline = sharp(input, options).resize(size.width, size.height, { fit: method === "crop" ? "cover" : "fill" });
      let contentType: RenderedThumbnail["contentType"];
      if (format === "jpeg") {
        pipeline = pipeline.jpeg({ quality: 80, mozjpeg: true });
        contentType = "image/jpeg";
      } else if (format === "webp") {
        pipeline = pipeline.webp({ quality: 80 });
        contentType = "image/webp";
      } else {
        pipeline = pipeline.png({ compressionLevel: 9 });
        contentType = "image/png";
      }
      try {
        const { data, info } = await pipeline.toBuffer({ resolveWithObject: true });
        return { data, contentType, width: info.width, height: info.height };
      } catch (err) {
        const message = (err as Error).message;
        if (/pixel limit/i.test(message)) throw new ThumbnailError("too-large", message);
        throw new ThumbnailError("invalid", `Cannot thumbnail the image: ${message}`);
      }
    } finally {
      this.release();
    }
  }

  private async acquire(): Promise<void> {
    if (this.running < this.maxConcurrent) {
      this.running++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  private release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.running--;
  }
}
