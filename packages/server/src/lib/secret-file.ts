import { closeSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { randomBytes } from "node:crypto";
import path from "node:path";

function errorCode(err: unknown): string | undefined {
  return typeof err === "object" && err !== null && "code" in err ? String((err as { code: unknown }).code) : undefined;
}

/**
 * Reads a secret the server keeps in its data dir (signing key, VAPID keys), creating it owner-only
 * on first start. A secret that others can read, or that does not parse, stops start-up: replacing
 * it silently would break everything that was bound to the old one.
 *
 * `label` names the file in errors ("Signing key", "VAPID key file"); `parse` checks and decodes the
 * text; `create` makes a fresh secret and its text.
 */
export function loadOrCreateSecretFile<T>(file: string, label: string, parse: (text: string) => T, create: () => { value: T; text: string }): T {
  const loadExisting = (): T => {
    const st = statSync(file);
    if (!st.isFile()) throw new Error(`${label} ${file} is not a regular file`);
    // POSIX permission bits mean nothing on Windows, where Node reports every file as 0o666.
    if (process.platform !== "win32" && (st.mode & 0o077) !== 0) {
      throw new Error(`${label} ${file} is accessible by group or others (mode ${(st.mode & 0o777).toString(8)}); run chmod 600 on it`);
    }
    try {
      return parse(readFileSync(file, "utf8"));
    } catch (err) {
      throw new Error(`${label} ${file} is malformed: ${(err as Error).message}`);
    }
  };
  try {
    return loadExisting();
  } catch (err) {
    if (errorCode(err) !== "ENOENT") throw err;
  }

  const dir = path.dirname(file);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const created = create();
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
  const fd = openSync(tmp, "wx", 0o600);
  try {
    writeSync(fd, created.text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    // link() fails if the file appeared meanwhile (another process starting on the same data
    // directory), so two processes never end up with different secrets: both use the first.
    try {
      linkSync(tmp, file);
    } catch (err) {
      const code = errorCode(err);
      if (code === "EEXIST") return loadExisting();
      if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EXDEV" && code !== "ENOSYS") throw err;
      // Filesystems without hard links: fall back to rename, which is still atomic.
      renameSync(tmp, file);
    }
  } finally {
    try {
      unlinkSync(tmp);
    } catch {
      // Already renamed into place.
    }
  }
  syncDirectory(dir);
  return created.value;
}

function syncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, "r");
    fsyncSync(fd);
  } catch {
    // Windows cannot open directories; the file itself was already fsynced.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
