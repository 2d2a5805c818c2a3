import { readFileSync } from "node:fs";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { isValidServerName } from "@revier/protocol";

/** Everything the server can be told, validated once at start-up. */
export interface Config {
  bind: string;
  port: number;
  serverName: string;
  publicBaseUrl: string;
  dataDir: string;
  databaseUrl: string | null;
  busUrl: string | null;
  logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
  registration: { enabled: boolean; tokenRequired: boolean };
  limits: {
    maxBodyBytes: number;
    maxJsonDepth: number;
    loginPerMinute: number;
    registerPerMinute: number;
    sendPerSecond: number;
    sendBurst: number;
    writesPerSecond: number;
    writesBurst: number;
  };
  tokens: { accessTokenLifetimeMs: number | null };
  shutdownGraceMs: number;
  /** false, true (any peer; only behind a proxy that overwrites X-Forwarded-For) or the proxies' addresses/CIDRs */
  trustProxy: boolean | string[];
  /** Addresses and CIDR ranges that may read /metrics. */
  metricsAllowFrom: string[];
  media: {
    maxUploadBytes: number;
    /** bytes a user may store in total; null means no quota */
    userQuotaBytes: number | null;
    legacyUnauthenticated: boolean;
  };
  /** Native TLS; both null when a reverse proxy terminates TLS (the default). */
  tls: { certFile: string | null; keyFile: string | null };
  /** How often the retention job (policy `retention_days`) looks for expired events and media. */
  retention: { intervalMs: number };
  /** A quiet server whose heap grew this much since its last full collection asks for one (0: never); see heap-reclaim.ts. */
  memory: { idleReclaimMb: number };
  push: {
    /** Pushers asking for the full format get event content; off by default (event ids only). */
    includeContent: boolean;
    /** VAPID contact (mailto: or https:) sent to Web Push services. */
    vapidSubject: string;
    /** Hosts pushes may go to; empty means any host with a public address. */
    gatewayAllowlist: string[];
  };
}

export class ConfigError extends Error {
  constructor(readonly key: string, message: string) {
    super(`invalid setting ${key}: ${message}`);
    this.name = "ConfigError";
  }
}

type Parser<T> = (raw: unknown, key: string) => T;

const str: Parser<string> = (raw, key) => {
  if (typeof raw !== "string" && typeof raw !== "number") throw new ConfigError(key, "expected a string");
  return String(raw);
};
const int =
  (min: number, max: number): Parser<number> =>
  (raw, key) => {
    const n = typeof raw === "number" ? raw : typeof raw === "string" && /^-?\d+$/.test(raw.trim()) ? Number(raw) : NaN;
    if (!Number.isInteger(n) || n < min || n > max) throw new ConfigError(key, `expected an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`);
    return n;
  };
const bool: Parser<boolean> = (raw, key) => {
  if (typeof raw === "boolean") return raw;
  if (typeof raw === "string" && /^(true|1|yes|on)$/i.test(raw)) return true;
  if (typeof raw === "string" && /^(false|0|no|off)$/i.test(raw)) return false;
  throw new ConfigError(key, `expected true or false, got ${JSON.stringify(raw)}`);
};
const oneOf =
  <T extends string>(...values: T[]): Parser<T> =>
  (raw, key) => {
    if (typeof raw === "string" && (values as string[]).includes(raw)) return raw as T;
    throw new ConfigError(key, `expected one of ${values.join(", ")}, got ${JSON.stringify(raw)}`);
  };
/** A list: YAML sequence, or a comma-separated string (environment). */
const list: Parser<string[]> = (raw, key) => {
  if (raw === null || raw === "") return [];
  const items = Array.isArray(raw) ? raw : typeof raw === "string" ? raw.split(",") : null;
  if (!items || items.some((i) => typeof i !== "string")) throw new ConfigError(key, "expected a list of strings (comma-separated in the environment)");
  return (items as string[]).map((i) => i.trim()).filter((i) => i !== "");
};
/** IP addresses and CIDR ranges. */
const addressList: Parser<string[]> = (raw, key) => {
  const items = list(raw, key);
  for (const i of items) if (!/^[0-9a-fA-F:.]+(\/\d{1,3})?$/.test(i)) throw new ConfigError(key, `expected IP addresses or CIDR ranges, got ${JSON.stringify(i)}`);
  return items;
};
/** true/false, or a list of proxy addresses and CIDR ranges whose forwarding headers are trusted. */
const boolOrList: Parser<boolean | string[]> = (raw, key) => {
  if (typeof raw === "boolean" || (typeof raw === "string" && /^(true|false|1|0|yes|no|on|off)$/i.test(raw.trim()))) return bool(typeof raw === "string" ? raw.trim() : raw, key);
  return addressList(raw, key);
};
const nullable =
  <T>(p: Parser<T>): Parser<T | null> =>
  (raw, key) =>
    raw === null || raw === "" ? null : p(raw, key);

interface Setting {
  /** dotted path in the YAML file and in Config */
  key: string;
  env: string;
  parse: Parser<unknown>;
  default: unknown;
}

const SETTINGS: Setting[] = [
  { key: "bind", env: "REVIER_BIND", parse: str, default: "127.0.0.1" },
  { key: "port", env: "REVIER_PORT", parse: int(0, 65535), default: 8008 },
  { key: "server_name", env: "REVIER_SERVER_NAME", parse: str, default: "localhost" },
  { key: "public_base_url", env: "REVIER_PUBLIC_BASE_URL", parse: nullable(str), default: null },
  { key: "data_dir", env: "REVIER_DATA_DIR", parse: str, default: "./data" },
  { key: "database_url", env: "REVIER_DATABASE_URL", parse: nullable(str), default: null },
  { key: "bus_url", env: "REVIER_BUS_URL", parse: nullable(str), default: null },
  { key: "log_level", env: "REVIER_LOG_LEVEL", parse: oneOf("fatal", "error", "warn", "info", "debug", "trace", "silent"), default: "info" },
  { key: "registration.enabled", env: "REVIER_REGISTRATION_ENABLED", parse: bool, default: false },
  { key: "registration.token_required", env: "REVIER_REGISTRATION_TOKEN_REQUIRED", parse: bool, default: true },
  { key: "limits.max_body_bytes", env: "REVIER_MAX_BODY_BYTES", parse: int(1024, 64 * 1024 * 1024), default: 1024 * 1024 },
  { key: "limits.max_json_depth", env: "REVIER_MAX_JSON_DEPTH", parse: int(4, 512), default: 64 },
  { key: "limits.login_per_minute", env: "REVIER_LOGIN_PER_MINUTE", parse: int(1, 1_000_000), default: 30 },
  { key: "limits.register_per_minute", env: "REVIER_REGISTER_PER_MINUTE", parse: int(1, 1_000_000), default: 10 },
  { key: "limits.send_per_second", env: "REVIER_SEND_PER_SECOND", parse: int(1, 1_000_000), default: 20 },
  { key: "limits.send_burst", env: "REVIER_SEND_BURST", parse: int(1, 1_000_000), default: 100 },
  { key: "limits.writes_per_second", env: "REVIER_WRITES_PER_SECOND", parse: int(1, 1_000_000), default: 50 },
  { key: "limits.writes_burst", env: "REVIER_WRITES_BURST", parse: int(1, 1_000_000), default: 500 },
  { key: "tokens.access_token_lifetime_ms", env: "REVIER_ACCESS_TOKEN_LIFETIME_MS", parse: nullable(int(60_000, 365 * 24 * 3600_000)), default: null },
  { key: "shutdown_grace_ms", env: "REVIER_SHUTDOWN_GRACE_MS", parse: int(0, 600_000), default: 10_000 },
  { key: "trust_proxy", env: "REVIER_TRUST_PROXY", parse: boolOrList, default: false },
  { key: "metrics_allow_from", env: "REVIER_METRICS_ALLOW_FROM", parse: addressList, default: ["127.0.0.1", "::1"] },
  { key: "media.max_upload_bytes", env: "REVIER_MEDIA_MAX_UPLOAD_BYTES", parse: int(1, 2 ** 50), default: 512 * 1024 * 1024 },
  { key: "media.user_quota_bytes", env: "REVIER_MEDIA_USER_QUOTA_BYTES", parse: nullable(int(0, 2 ** 50)), default: 10 * 1024 * 1024 * 1024 },
  { key: "media.legacy_unauthenticated", env: "REVIER_MEDIA_LEGACY_UNAUTHENTICATED", parse: bool, default: false },
  { key: "tls.cert_file", env: "REVIER_TLS_CERT_FILE", parse: nullable(str), default: null },
  { key: "tls.key_file", env: "REVIER_TLS_KEY_FILE", parse: nullable(str), default: null },
  { key: "retention.interval_ms", env: "REVIER_RETENTION_INTERVAL_MS", parse: int(1000, 7 * 24 * 3600_000), default: 3600_000 },
  { key: "memory.idle_reclaim_mb", env: "REVIER_MEMORY_IDLE_RECLAIM_MB", parse: int(0, 1_000_000), default: 64 },
  { key: "push.include_content", env: "REVIER_PUSH_INCLUDE_CONTENT", parse: bool, default: false },
  { key: "push.vapid_subject", env: "REVIER_PUSH_VAPID_SUBJECT", parse: nullable(str), default: null },
  { key: "push.gateway_allowlist", env: "REVIER_PUSH_GATEWAY_ALLOWLIST", parse: list, default: [] },
];

function getPath(obj: unknown, dotted: string): unknown {
  let cur: unknown = obj;
  for (const part of dotted.split(".")) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

function knownPaths(obj: unknown, prefix = ""): string[] {
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) return [prefix];
  return Object.entries(obj as Record<string, unknown>).flatMap(([k, v]) => knownPaths(v, prefix ? `${prefix}.${k}` : k));
}

/**
 * Settings come from defaults, then the YAML file named by REVIER_CONFIG, then the environment,
 * and overrides passed by the caller (tests). Unknown keys in the file are refused so a typo does
 * not silently fall back to a default.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Record<string, unknown> = {}): Config {
  let file: unknown = {};
  const configPath = env.REVIER_CONFIG;
  if (configPath) {
    let text: string;
    try {
      text = readFileSync(configPath, "utf8");
    } catch (err) {
      throw new ConfigError("REVIER_CONFIG", `cannot read ${configPath}: ${(err as Error).message}`);
    }
    try {
      file = parseYaml(text) ?? {};
    } catch (err) {
      throw new ConfigError("REVIER_CONFIG", `${configPath} is not valid YAML: ${(err as Error).message}`);
    }
    if (typeof file !== "object" || Array.isArray(file)) throw new ConfigError("REVIER_CONFIG", `${configPath} must hold a mapping`);
    const allowed = new Set(SETTINGS.map((s) => s.key));
    for (const p of knownPaths(file)) {
      if (p && !allowed.has(p)) throw new ConfigError(p, `unknown setting in ${configPath}`);
    }
  }
  const values: Record<string, unknown> = {};
  for (const s of SETTINGS) {
    let raw: unknown = s.default;
    let where = s.key;
    const fromFile = getPath(file, s.key);
    if (fromFile !== undefined) raw = fromFile;
    const fromEnv = env[s.env];
    if (fromEnv !== undefined) {
      raw = fromEnv;
      where = s.env;
    }
    if (s.key in overrides) raw = overrides[s.key];
    values[s.key] = raw === s.default ? s.default : s.parse(raw, where);
  }
  const serverName = values["server_name"] as string;
  if (!isValidServerName(serverName)) throw new ConfigError("server_name", `${JSON.stringify(serverName)} is not a valid Matrix server name`);
  const bind = values["bind"] as string;
  const port = values["port"] as number;
  const databaseUrl = values["database_url"] as string | null;
  if (databaseUrl !== null && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError("database_url", "expected a postgres:// URL (leave empty for the embedded SQLite database)");
  }
  const busUrl = values["bus_url"] as string | null;
  if (busUrl !== null && !/^nats:\/\//.test(busUrl)) throw new ConfigError("bus_url", "expected a nats:// URL");
  const tlsCert = values["tls.cert_file"] as string | null;
  const tlsKey = values["tls.key_file"] as string | null;
  if ((tlsCert === null) !== (tlsKey === null)) throw new ConfigError(tlsCert === null ? "tls.cert_file" : "tls.key_file", "set both tls.cert_file and tls.key_file for native TLS, or neither");
  const publicBaseUrl = (values["public_base_url"] as string | null) ?? `${tlsCert !== null ? "https" : "http"}://${bind.includes(":") ? `[${bind}]` : bind}:${port}`;
  if (!/^https?:\/\/[^\s]+$/.test(publicBaseUrl)) throw new ConfigError("public_base_url", "expected an http(s) URL");
  return {
    bind,
    port,
    serverName,
    publicBaseUrl: publicBaseUrl.replace(/\/+$/, ""),
    dataDir: path.resolve(values["data_dir"] as string),
    databaseUrl,
    busUrl,
    logLevel: values["log_level"] as Config["logLevel"],
    registration: {
      enabled: values["registration.enabled"] as boolean,
      tokenRequired: values["registration.token_required"] as boolean,
    },
    limits: {
      maxBodyBytes: values["limits.max_body_bytes"] as number,
      maxJsonDepth: values["limits.max_json_depth"] as number,
      loginPerMinute: values["limits.login_per_minute"] as number,
      registerPerMinute: values["limits.register_per_minute"] as number,
      sendPerSecond: values["limits.send_per_second"] as number,
      sendBurst: values["limits.send_burst"] as number,
      writesPerSecond: values["limits.writes_per_second"] as number,
      writesBurst: values["limits.writes_burst"] as number,
    },
    tokens: { accessTokenLifetimeMs: values["tokens.access_token_lifetime_ms"] as number | null },
    shutdownGraceMs: values["shutdown_grace_ms"] as number,
    trustProxy: values["trust_proxy"] as boolean | string[],
    metricsAllowFrom: values["metrics_allow_from"] as string[],
    media: {
      maxUploadBytes: values["media.max_upload_bytes"] as number,
      userQuotaBytes: values["media.user_quota_bytes"] as number | null,
      legacyUnauthenticated: values["media.legacy_unauthenticated"] as boolean,
    },
    tls: { certFile: tlsCert === null ? null : path.resolve(tlsCert), keyFile: tlsKey === null ? null : path.resolve(tlsKey) },
    retention: { intervalMs: values["retention.interval_ms"] as number },
    memory: { idleReclaimMb: values["memory.idle_reclaim_mb"] as number },
    push: { includeContent: values["push.include_content"] as boolean, vapidSubject: vapidSubject(values["push.vapid_subject"] as string | null, publicBaseUrl, serverName), gatewayAllowlist: values["push.gateway_allowlist"] as string[] },
  };
}

/** Web Push services want a contact: the setting, else an https public URL, else postmaster@<server_name>. */
function vapidSubject(configured: string | null, publicBaseUrl: string, serverName: string): string {
  if (configured !== null) {
    if (!/^(mailto:[^\s@]+@[^\s@]+|https:\/\/[^\s]+)$/.test(configured)) throw new ConfigError("push.vapid_subject", "expected a mailto: address or an https: URL");
    return configured;
  }
  if (publicBaseUrl.startsWith("https://")) return publicBaseUrl;
  return `mailto:postmaster@${serverName.replace(/:\d+$/, "")}`;
}

/** The documented settings, for the README and `revier config`. */
export function describeSettings(): Array<{ key: string; env: string; default: unknown }> {
  return SETTINGS.map((s) => ({ key: s.key, env: s.env, default: s.default }));
}
