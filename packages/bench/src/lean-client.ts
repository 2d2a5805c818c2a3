/**
 * One keep-alive HTTP/1.1 connection that sends requests one after another, for load generators
 * that hold thousands of long-polls or send back to back. The server under test shares this
 * machine's two cores with the bench, so what the bench spends per request is taken from the
 * server: measured in the fanout scenario, node:http cost the bench about 200 µs of CPU per
 * long-poll cycle (its request object, agent bookkeeping, header objects, stream events), a
 * little under the server's own cost, and in the send scenario fetch cost it about 500 µs per
 * message, more than the server's own; this costs a few tens of µs. It speaks just what a Matrix
 * server's answers need: a status line, `content-length` or `chunked` bodies, and
 * `connection: close`.
 */
import net from "node:net";

export interface LeanResponse {
  status: number;
  body: Buffer;
}

const CRLF2 = Buffer.from("\r\n\r\n");

export class LeanConnection {
  private socket: net.Socket | null = null;
  private buffer: Buffer = Buffer.alloc(0);
  private pending: { resolve: (r: LeanResponse) => void; reject: (e: Error) => void } | null = null;
  /** Response being read: null until its head is parsed. */
  private head: { status: number; length: number | null; chunked: boolean; close: boolean } | null = null;
  private chunks: Buffer[] = [];
  private closed = false;

  constructor(
    private readonly host: string,
    private readonly port: number,
  ) {}

  /** GET `path`; rejects if the connection fails or closes before the whole answer arrived. */
  get(path: string, headers: string): Promise<LeanResponse> {
    return this.request("GET", path, headers);
  }

  /**
   * `method` `path` with `headers` (each line ending in CRLF) and, if given, a JSON `body`;
   * rejects if the connection fails or closes before the whole answer arrived. A request is
   * never sent twice: one whose connection broke fails, even if the server had not seen it.
   */
  request(method: string, path: string, headers: string, body?: string): Promise<LeanResponse> {
    if (this.pending) return Promise.reject(new Error("one request at a time on a LeanConnection"));
    if (this.closed) return Promise.reject(new Error("connection closed by the caller"));
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      this.head = null;
      this.chunks = [];
      const host = `host: ${this.host.includes(":") ? `[${this.host}]` : this.host}:${this.port}\r\n`;
      const content = body === undefined ? "" : `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n`;
      // Head and body in one write: one segment on the wire for a small request.
      this.connected().write(`${method} ${path} HTTP/1.1\r\n${host}${headers}${content}\r\n${body ?? ""}`);
    });
  }

  /** Closes the connection; a request in flight fails. */
  close(): void {
    this.closed = true;
    this.fail(new Error("connection closed by the caller"));
  }

  private connected(): net.Socket {
    if (this.socket) return this.socket;
    const socket = net.connect({ host: this.host, port: this.port });
    socket.setNoDelay(true);
    this.buffer = Buffer.alloc(0);
    socket.on("data", (data: Buffer) => {
      this.buffer = this.buffer.length === 0 ? data : Buffer.concat([this.buffer, data]);
      try {
        this.consume();
      } catch (err) {
        this.fail(err instanceof Error ? err : new Error(String(err)));
      }
    });
    const gone = (err?: Error) => {
      if (this.socket !== socket) return;
      this.socket = null;
      // A body delimited by the end of the connection (neither length nor chunked) ends here.
      if (this.pending && this.head && this.head.length === null && !this.head.chunked) return this.finish(true);
      this.fail(err ?? new Error("connection closed before the response was complete"));
    };
    socket.on("error", gone);
    socket.on("close", () => gone());
    this.socket = socket;
    return socket;
  }

  private consume(): void {
    for (;;) {
      if (!this.pending) {
        if (this.buffer.length > 0) throw new Error("the server sent bytes nobody asked for");
        return;
      }
      if (!this.head) {
        const end = this.buffer.indexOf(CRLF2);
        if (end < 0) return;
        this.head = parseHead(this.buffer.subarray(0, end).toString("latin1"));
        this.buffer = this.buffer.subarray(end + 4);
      }
      const h = this.head;
      if (h.chunked) {
        // size CRLF data CRLF … 0 CRLF CRLF (trailers are not expected from a Matrix server).
        const eol = this.buffer.indexOf("\r\n");
        if (eol < 0) return;
        const size = Number.parseInt(this.buffer.subarray(0, eol).toString("latin1"), 16);
        if (!Number.isFinite(size) || size < 0) throw new Error("malformed chunk size");
        if (this.buffer.length < eol + 2 + size + 2) return;
        if (size === 0) {
          this.buffer = this.buffer.subarray(eol + 4);
          this.finish(h.close);
          continue;
        }
        this.chunks.push(this.buffer.subarray(eol + 2, eol + 2 + size));
        this.buffer = this.buffer.subarray(eol + 2 + size + 2);
        continue;
      }
      if (h.length === null) {
        // Read until the server closes the connection.
        if (this.buffer.length > 0) this.chunks.push(this.buffer);
        this.buffer = Buffer.alloc(0);
        return;
      }
      if (this.buffer.length < h.length) return;
      this.chunks.push(this.buffer.subarray(0, h.length));
      this.buffer = this.buffer.subarray(h.length);
      this.finish(h.close);
    }
  }

  private finish(close: boolean): void {
    const p = this.pending!;
    const status = this.head!.status;
    const body = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    this.pending = null;
    this.head = null;
    this.chunks = [];
    if (close) {
      this.socket?.destroy();
      this.socket = null;
    }
    p.resolve({ status, body });
  }

  private fail(err: Error): void {
    const p = this.pending;
    this.pending = null;
    this.head = null;
    this.chunks = [];
    this.socket?.destroy();
    this.socket = null;
    p?.reject(err);
  }
}

function parseHead(text: string): { status: number; length: number | null; chunked: boolean; close: boolean } {
  const lines = text.split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "");
  if (!m) throw new Error(`not an HTTP response: ${JSON.stringify((lines[0] ?? "").slice(0, 80))}`);
  let length: number | null = null;
  let chunked = false;
  let close = lines[0]!.startsWith("HTTP/1.0");
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim().toLowerCase();
    if (name === "content-length") length = Number(value);
    else if (name === "transfer-encoding") chunked = value.includes("chunked");
    else if (name === "connection") close = value === "close";
  }
  const status = Number(m[1]);
  // Answers that never carry a body.
  if (status === 204 || status === 304 || (status >= 100 && status < 200)) length = 0;
  return { status, length, chunked, close };
}
