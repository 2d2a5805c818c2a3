import { createECDH, createPublicKey } from "node:crypto";
import webpush from "web-push";
import { MatrixError } from "@revier/protocol";
import { classifyFailure, readLimited, type DeliveryOutcome } from "./gateway.js";
import { loadOrCreateSecretFile } from "../lib/secret-file.js";

/**
 * Web Push (RFC 8030 delivery, RFC 8291 aes128gcm encryption, RFC 8292 VAPID) for Revier's web
 * app, with the `web-push` package doing the cryptography and our own fetch doing the request
 * (timeouts, no redirects, shutdown aborts).
 *
 * Pusher shape, modelled on MSC4174 (not yet in the spec, hence a namespaced kind):
 * `kind: "org.revier.webpush"`, `pushkey` = the browser subscription's `p256dh` key (65-byte
 * uncompressed P-256 point, URL-safe base64), `data.url` = the subscription's endpoint,
 * `data.auth` = its 16-byte authentication secret (URL-safe base64). There is no MSC4174
 * activation round-trip: the endpoint and keys come straight from the browser's PushManager.
 */
export const WEBPUSH_KIND = "org.revier.webpush";

export interface VapidKeys {
  /** 65-byte uncompressed P-256 point, URL-safe base64 without padding (what PushManager.subscribe takes). */
  publicKey: string;
  /** 32-byte private scalar, URL-safe base64 without padding. */
  privateKey: string;
}

function b64url(s: string): Buffer | null {
  return /^[A-Za-z0-9_-]+={0,2}$/.test(s) ? Buffer.from(s, "base64url") : null;
}

/** Checks a key pair read from disk: lengths, and that the public key belongs to the private one. */
export function checkVapidKeys(keys: unknown): VapidKeys {
  const k = keys as Partial<VapidKeys> | null;
  if (typeof k?.publicKey !== "string" || typeof k.privateKey !== "string") throw new Error("expected {publicKey, privateKey}");
  const priv = b64url(k.privateKey);
  const pub = b64url(k.publicKey);
  if (priv?.length !== 32) throw new Error("privateKey must be 32 bytes of URL-safe base64");
  if (pub?.length !== 65 || pub[0] !== 4) throw new Error("publicKey must be a 65-byte uncompressed P-256 point");
  const ecdh = createECDH("prime256v1");
  ecdh.setPrivateKey(priv);
  if (!ecdh.getPublicKey().equals(pub)) throw new Error("publicKey does not belong to privateKey");
  return { publicKey: k.publicKey, privateKey: k.privateKey };
}

/**
 * Loads the server's VAPID key pair, creating it (mode 0600) on first start. Browsers bind their
 * subscriptions to this key, so a lost or replaced key silently orphans every Web Push
 * subscription: anything unexpected stops start-up instead.
 */
export function loadOrCreateVapidKeys(file: string): VapidKeys {
  return loadOrCreateSecretFile(
    file,
    "VAPID key file",
    (text) => checkVapidKeys(JSON.parse(text)),
    () => {
      const { publicKey, privateKey } = webpush.generateVAPIDKeys();
      return { value: { publicKey, privateKey }, text: `${JSON.stringify({ publicKey, privateKey })}\n` };
    },
  );
}

/** Plain http is accepted only for endpoints on this machine (development and tests). */
function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}

/** Validates a Web Push pusher's pushkey and data; errors name the field. */
export function validateWebPushPusher(pushkey: string, data: Record<string, unknown> | undefined): void {
  const key = b64url(pushkey);
  if (key?.length !== 65 || key[0] !== 4) throw new MatrixError("M_INVALID_PARAM", "pushkey must be the subscription's p256dh key: a 65-byte uncompressed P-256 point in URL-safe base64");
  try {
    createPublicKey({ key: { kty: "EC", crv: "P-256", x: key.subarray(1, 33).toString("base64url"), y: key.subarray(33).toString("base64url") }, format: "jwk" });
  } catch {
    throw new MatrixError("M_INVALID_PARAM", "pushkey is not a point on the P-256 curve");
  }
  const url = data?.url;
  if (typeof url !== "string") throw new MatrixError("M_MISSING_PARAM", "data.url (the subscription's endpoint) is required for Web Push pushers");
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new MatrixError("M_INVALID_PARAM", "data.url is not a URL");
  }
  if (!(parsed.protocol === "https:" || (parsed.protocol === "http:" && isLoopback(parsed.hostname)))) {
    throw new MatrixError("M_INVALID_PARAM", "data.url must be an https URL (plain http only on this machine)");
  }
  const auth = typeof data?.auth === "string" ? b64url(data.auth) : null;
  if (typeof data?.auth !== "string") throw new MatrixError("M_MISSING_PARAM", "data.auth (the subscription's authentication secret) is required for Web Push pushers");
  if (auth?.length !== 16) throw new MatrixError("M_INVALID_PARAM", "data.auth must be 16 bytes in URL-safe base64");
}

export interface WebPushSubscription {
  endpoint: string;
  p256dh: string;
  auth: string;
}

/** Sends encrypted, VAPID-signed Web Push messages. */
export class WebPushSender {
  constructor(
    readonly keys: VapidKeys,
    private readonly subject: string,
    /** How long the push service may hold a message for an offline browser, in seconds. */
    private readonly ttlSeconds = 24 * 3600,
  ) {}

  async send(sub: WebPushSubscription, payload: string, signal: AbortSignal): Promise<DeliveryOutcome> {
    let details: ReturnType<typeof webpush.generateRequestDetails>;
    try {
      details = webpush.generateRequestDetails({ endpoint: sub.endpoint, keys: { p256dh: sub.p256dh, auth: sub.auth } }, payload, {
        vapidDetails: { subject: this.subject, publicKey: this.keys.publicKey, privateKey: this.keys.privateKey },
        contentEncoding: "aes128gcm",
        TTL: this.ttlSeconds,
        urgency: "high",
      });
    } catch (err) {
      // Keys that passed validation but still fail to encrypt will fail every time.
      return { result: "failed", reason: `cannot encrypt: ${(err as Error).message}` };
    }
    const headers: Record<string, string> = {};
    // fetch sets Content-Length itself.
    for (const [k, v] of Object.entries(details.headers)) if (v !== undefined && v !== null && k.toLowerCase() !== "content-length") headers[k] = String(v);
    let res: Response;
    try {
      res = await fetch(details.endpoint, { method: "POST", headers, ...(details.body ? { body: new Uint8Array(details.body) } : {}), redirect: "manual", signal });
    } catch (err) {
      return { result: "retry", reason: (err as Error).name === "TimeoutError" ? "timed out" : `network error: ${(err as Error).message}` };
    }
    await readLimited(res).catch(() => "");
    if (res.status >= 200 && res.status <= 299) return { result: "delivered" };
    // RFC 8030: 404 and 410 mean the subscription is gone; a 403 means it belongs to another
    // VAPID key (MSC4174 also drops those).
    if (res.status === 404 || res.status === 410 || res.status === 403) return { result: "rejected", reason: `push service answered ${res.status}` };
    return classifyFailure(res);
  }
}
