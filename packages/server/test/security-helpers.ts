/**
 * Helpers shared by the security regression suite (security-*.test.ts): filling route patterns,
 * raw logins, and assertions about the Matrix error shape.
 */
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { api, type ApiResponse } from "./support/http.js";
/** A running server as far as HTTP helpers care. */
export interface HasUrl {
  url: string;
}

/** Replaces `:name` segments of a Fastify route pattern with the given values (encoded), or `x`. */
export function fillRoute(url: string, values: Record<string, string> = {}): string {
  return url.replace(/:([A-Za-z]+)/g, (_m, name: string) => encodeURIComponent(values[name] ?? "x"));
}

/** Replaces `{name}` segments of an OpenAPI path. */
export function fillOpenApiPath(p: string, values: Record<string, string> = {}): string {
  return p.replace(/\{([A-Za-z]+)\}/g, (_m, name: string) => encodeURIComponent(values[name] ?? "x"));
}

export function loginBody(user: string, password: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { type: "m.login.password", identifier: { type: "m.id.user", user }, password, ...extra };
}

export async function rawLogin(server: HasUrl, user: string, password: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}): Promise<ApiResponse> {
  return api(server.url, "POST", "/_matrix/client/v3/login", { body: loginBody(user, password, extra), headers });
}

export function passwordAuth(user: string, password: string, session?: string): Record<string, unknown> {
  return { type: "m.login.password", identifier: { type: "m.id.user", user }, password, ...(session !== undefined ? { session } : {}) };
}

/** A Matrix error: JSON object with string `errcode` and `error`. */
export function assertMatrixError(res: ApiResponse, label: string): void {
  const body = res.body as unknown;
  assert.ok(body !== null && typeof body === "object" && !Array.isArray(body), `${label}: body is not a JSON object: ${String(body).slice(0, 200)}`);
  const b = body as Record<string, unknown>;
  assert.equal(typeof b.errcode, "string", `${label}: no errcode in ${JSON.stringify(b).slice(0, 300)}`);
  assert.match(String(b.errcode), /^[A-Z][A-Z0-9_.]+$/, `${label}: errcode ${String(b.errcode)}`);
  assert.equal(typeof b.error, "string", `${label}: no error message in ${JSON.stringify(b).slice(0, 300)}`);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/, `${label}: content type`);
}

/** A writable stream that keeps everything written to it, for scanning logs. */
export class Capture extends Writable {
  readonly chunks: string[] = [];
  override _write(chunk: Buffer | string, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.chunks.push(typeof chunk === "string" ? chunk : chunk.toString("utf8"));
    done();
  }
  text(): string {
    return this.chunks.join("");
  }
}

export async function sendMessage(server: HasUrl, token: string, roomId: string, body: string, txn: string, extra: Record<string, unknown> = {}): Promise<string> {
  const res = await api(server.url, "PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${encodeURIComponent(txn)}`, { token, body: { msgtype: "m.text", body, ...extra } });
  assert.equal(res.status, 200, `send ${txn}: ${JSON.stringify(res.body)}`);
  return res.body.event_id as string;
}

export async function createRoom(server: HasUrl, token: string, body: Record<string, unknown> = {}): Promise<string> {
  const res = await api(server.url, "POST", "/_matrix/client/v3/createRoom", { token, body });
  assert.equal(res.status, 200, `createRoom: ${JSON.stringify(res.body)}`);
  return res.body.room_id as string;
}

export async function join(server: HasUrl, token: string, roomId: string): Promise<void> {
  const res = await api(server.url, "POST", `/_matrix/client/v3/join/${encodeURIComponent(roomId)}`, { token, body: {} });
  assert.equal(res.status, 200, `join: ${JSON.stringify(res.body)}`);
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
