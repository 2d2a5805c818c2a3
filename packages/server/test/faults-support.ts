/**
 * Helpers for the fault tests (faults-*.test.ts): real server processes started the way an
 * operator starts them (`revier serve` with REVIER_* variables), temporary directories under
 * /tmp/faults-*, and HTTP calls that never hang a test.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { ApiResponse } from "./support/http.js";

/** The CLI entry, run through tsx as cli.test.ts does, so the current source is what runs. */
export const CLI_ENTRY = fileURLToPath(new URL("../src/cli-entry.ts", import.meta.url));

export type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export function faultsTempDir(name: string): string {
  return mkdtempSync(path.join("/tmp", `faults-${name}-`));
}

export function removeDir(dir: string | undefined): void {
  if (dir && dir.startsWith("/tmp/faults-")) rmSync(dir, { recursive: true, force: true });
}

/** Limits the tests do not exercise, raised so load does not trip them. */
export const UNLIMITED_ENV: Record<string, string> = {
  REVIER_LOGIN_PER_MINUTE: "1000000",
  REVIER_REGISTER_PER_MINUTE: "1000000",
  REVIER_SEND_PER_SECOND: "1000000",
  REVIER_SEND_BURST: "1000000",
  REVIER_WRITES_PER_SECOND: "1000000",
  REVIER_WRITES_BURST: "1000000",
};

export interface ServerProcess {
  child: ChildProcess;
  url: string;
  port: number;
  /** Everything the process printed (JSON log lines on stdout, anything else on stderr). */
  output(): string;
  /** Resolves with the exit code and signal once the process has ended. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Sends SIGKILL (if still running) and waits for the exit. */
  kill(): Promise<void>;
}

/**
 * Starts `revier serve` as its own process and waits for "Revier is listening". `wrap` runs it
 * under another command (e.g. `unshare …`), which must exec the rest of its arguments.
 */
export async function spawnServer(env: Record<string, string>, opts: { wrap?: string[]; startTimeoutMs?: number } = {}): Promise<ServerProcess> {
  const command = [...(opts.wrap ?? []), process.execPath, "--import", "tsx", CLI_ENTRY, "serve"];
  const child = spawn(command[0]!, command.slice(1), {
    env: { ...process.env, REVIER_PORT: "0", REVIER_LOG_LEVEL: "info", ...UNLIMITED_ENV, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start within ${opts.startTimeoutMs ?? 30_000} ms:\n${out}`)), opts.startTimeoutMs ?? 30_000);
    const check = () => {
      const m = /"url":"(http:\/\/[^"]+)"[^\n]*"msg":"Revier is listening"/.exec(out);
      if (m) {
        clearTimeout(timer);
        child.stdout!.off("data", check);
        resolve(m[1]!);
      }
    };
    child.stdout!.on("data", check);
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`server exited during start (code ${code}, signal ${signal}):\n${out}`));
    });
  });
  return {
    child,
    url,
    port: Number(new URL(url).port),
    output: () => out,
    exited,
    kill: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}

/** An HTTP call that gives up after `timeoutMs` instead of hanging the test; network errors become status 0. */
export async function call<T = Json>(
  base: string,
  method: string,
  p: string,
  opts: { token?: string; body?: unknown; rawBody?: string | Buffer; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<ApiResponse<T> & { error?: string }> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  let body: string | Uint8Array | undefined;
  if (opts.rawBody !== undefined) body = typeof opts.rawBody === "string" ? opts.rawBody : new Uint8Array(opts.rawBody);
  else if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers["content-type"] ??= "application/json";
  }
  try {
    const res = await fetch(`${base}${p}`, { method, headers, signal: AbortSignal.timeout(opts.timeoutMs ?? 20_000), ...(body !== undefined ? { body: body as string } : {}) });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch {
      // leave as text
    }
    return { status: res.status, body: parsed as T, headers: res.headers };
  } catch (err) {
    const e = err as Error & { cause?: { code?: string } };
    return { status: 0, body: {} as T, headers: new Headers(), error: e.name === "TimeoutError" ? "timeout" : (e.cause?.code ?? e.message) };
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export const enc = encodeURIComponent;

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `revier <args>` as an operator would, with REVIER_* settings in the environment. */
export function revierCli(args: string[], env: Record<string, string>, stdin = ""): Promise<CliRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", CLI_ENTRY, ...args], { env: { ...process.env, REVIER_DATABASE_URL: "", ...env }, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    child.stdin!.end(stdin);
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}
