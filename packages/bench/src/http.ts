/**
 * Plain node:http requests for what fetch hides: bytes as they arrive (sync response sizes, media
 * throughput without buffering a gigabyte), streamed request bodies, a chosen local source address
 * (127.0.0.x, so tens of thousands of loopback connections do not run out of ephemeral ports), and
 * a keep-alive agent per connection pool.
 */
import http from "node:http";
import https from "node:https";
import type { Readable } from "node:stream";

export interface RawRequest {
  method?: string;
  url: string;
  token?: string;
  headers?: Record<string, string>;
  /** A JSON body (serialised here), raw bytes, or a stream (give content-length in `headers`). */
  json?: unknown;
  body?: Buffer | Readable;
  agent?: http.Agent;
  localAddress?: string;
  signal?: AbortSignal;
  /** Called with each response chunk; the body is then not kept. */
  onData?: (chunk: Buffer) => void;
}

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The body, unless `onData` took it. */
  body: Buffer;
  /** Body bytes received (as sent on the wire: this client asks for no compression). */
  bytes: number;
  /** From sending the request to the last body byte. */
  ms: number;
}

export class RawHttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
    what: string,
  ) {
    super(`${what}: HTTP ${status} ${body.slice(0, 200)}`);
  }
}

export function rawRequest(r: RawRequest): Promise<RawResponse> {
  const url = new URL(r.url);
  const headers: Record<string, string> = { ...r.headers };
  if (r.token) headers.authorization = `Bearer ${r.token}`;
  let payload: Buffer | Readable | undefined = r.body;
  if (r.json !== undefined) {
    payload = Buffer.from(JSON.stringify(r.json));
    headers["content-type"] = "application/json";
  }
  if (Buffer.isBuffer(payload)) headers["content-length"] = String(payload.length);
  const lib = url.protocol === "https:" ? https : http;
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = lib.request(
      url,
      {
        method: r.method ?? "GET",
        headers,
        ...(r.agent ? { agent: r.agent } : {}),
        ...(r.localAddress ? { localAddress: r.localAddress } : {}),
        ...(r.signal ? { signal: r.signal } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        let bytes = 0;
        res.on("data", (chunk: Buffer) => {
          bytes += chunk.length;
          if (r.onData) r.onData(chunk);
          else chunks.push(chunk);
        });
        let ended = false;
        res.on("end", () => {
          ended = true;
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), bytes, ms: performance.now() - started });
        });
        res.on("error", reject);
        // A connection cut mid-body must not leave the caller waiting.
        res.on("close", () => {
          if (!ended) reject(new Error(`connection closed after ${bytes} bytes of the response`));
        });
      },
    );
    req.on("error", reject);
    if (payload === undefined) req.end();
    else if (Buffer.isBuffer(payload)) req.end(payload);
    else {
      payload.on("error", (err) => req.destroy(err));
      payload.pipe(req);
    }
  });
}

/** rawRequest that throws on a non-2xx status, naming the request like matrix.ts's `call`. */
export async function rawOk(r: RawRequest): Promise<RawResponse> {
  const res = await rawRequest(r);
  if (res.status < 200 || res.status >= 300) throw new RawHttpError(res.status, res.body.toString("utf8"), `${r.method ?? "GET"} ${new URL(r.url).pathname}`);
  return res;
}

/** A keep-alive agent without a socket cap, for pools of long-polls. */
export function keepAliveAgent(): http.Agent {
  return new http.Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY, maxFreeSockets: 1024 });
}

/** Loopback targets can be reached from any 127.0.0.x, which multiplies the ephemeral ports available. */
export function isLoopback(baseUrl: string): boolean {
  const h = new URL(baseUrl).hostname;
  return h === "localhost" || h.startsWith("127.") || h === "[::1]";
}
