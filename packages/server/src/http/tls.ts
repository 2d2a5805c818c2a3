import { constants } from "node:crypto";
import { readFileSync } from "node:fs";
import type { SecureContextOptions, TlsOptions } from "node:tls";
import { ConfigError, type Config } from "../config.js";

/**
 * Native TLS (`tls.cert_file` / `tls.key_file`), with the same settings as the documented nginx
 * example (docs/deploy/nginx.conf): TLS 1.2 and 1.3 only, and under TLS 1.2 only ECDHE key
 * exchange (forward secrecy) with AEAD ciphers — no RSA key exchange, no CBC, no SHA-1 MACs.
 * TLS 1.3 suites are all forward-secret AEAD suites by design.
 */
export const TLS_MIN_VERSION = "TLSv1.2" as const;

export const TLS_CIPHERS = [
  // TLS 1.3
  "TLS_AES_128_GCM_SHA256",
  "TLS_AES_256_GCM_SHA384",
  "TLS_CHACHA20_POLY1305_SHA256",
  // TLS 1.2: ECDHE + AEAD only (Mozilla "intermediate" without the DHE suites)
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-CHACHA20-POLY1305",
].join(":");

export const TLS_CURVES = "X25519:prime256v1:secp384r1";

/** The options for Node's https server, or null when TLS is left to a reverse proxy. */
export function httpsOptions(tls: Config["tls"]): (TlsOptions & SecureContextOptions) | null {
  if (tls.certFile === null || tls.keyFile === null) return null;
  const read = (file: string, key: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new ConfigError(key, `cannot read ${file}: ${(err as Error).message}`);
    }
  };
  return {
    cert: read(tls.certFile, "tls.cert_file"),
    key: read(tls.keyFile, "tls.key_file"),
    minVersion: TLS_MIN_VERSION,
    ciphers: TLS_CIPHERS,
    ecdhCurve: TLS_CURVES,
    // Session tickets are encrypted with a key that lives as long as the process, which weakens
    // forward secrecy for resumed sessions (Mozilla's guidance: off); the nginx example does the same.
    secureOptions: constants.SSL_OP_NO_TICKET,
  };
}
