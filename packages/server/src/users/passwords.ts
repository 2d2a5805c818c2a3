import argon2 from "argon2";

/**
 * argon2id with OWASP's floor (19 MiB, 2 passes, 1 lane). At shift change thousands of officers
 * log in within minutes; argon2's library defaults (64 MiB, 3 passes, 4 lanes) cost ~180 ms of CPU
 * per verify on a 2-core host, this ~25 ms, which keeps a login storm CPU-bound for seconds, not
 * minutes, while staying memory-hard against offline guessing.
 */
const PARAMS = { type: argon2.argon2id, memoryCost: 19 * 1024, timeCost: 2, parallelism: 1 } as const;

export const MIN_PASSWORD_LENGTH = 8;
export const MAX_PASSWORD_LENGTH = 512;

export function hashPassword(password: string): Promise<string> {
  return argon2.hash(password, PARAMS);
}

// Made at server start (`prepareDummyHash`), not at the first unknown-user login: that login would
// otherwise take twice as long and tell the caller the account does not exist.
let dummyHash: Promise<string> | null = null;
export function prepareDummyHash(): Promise<string> {
  return (dummyHash ??= argon2.hash("revier-dummy-password", PARAMS));
}

/**
 * Verifies a password. With no stored hash (unknown user, no password) a dummy hash is verified
 * anyway, so the response time does not tell whether the account exists.
 */
export async function verifyPassword(hash: string | null, password: string): Promise<boolean> {
  if (password.length > MAX_PASSWORD_LENGTH) return false;
  if (hash === null) {
    await argon2.verify(await prepareDummyHash(), password).catch(() => false);
    return false;
  }
  try {
    return await argon2.verify(hash, password);
  } catch {
    return false;
  }
}

export function passwordProblem(password: string): string | null {
  if (password.length < MIN_PASSWORD_LENGTH) return `Password must be at least ${MIN_PASSWORD_LENGTH} characters long`;
  if (password.length > MAX_PASSWORD_LENGTH) return `Password must be at most ${MAX_PASSWORD_LENGTH} characters long`;
  return null;
}
