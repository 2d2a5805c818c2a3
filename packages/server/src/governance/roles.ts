import { MatrixError } from "@revier/protocol";
import type { Role } from "../users/accounts.js";

/** Every privileged operation the admin API offers; each endpoint names exactly one. */
export type AdminAction =
  | "users.read"
  | "users.create"
  | "users.lock"
  | "users.password"
  | "users.role"
  | "users.import"
  | "devices.read"
  | "devices.wipe"
  | "enrollment.issue"
  | "policy.read"
  | "policy.write"
  | "audit.read"
  | "stats.read"
  | "channels.read"
  | "channels.close";

const ALL: readonly AdminAction[] = [
  "users.read",
  "users.create",
  "users.lock",
  "users.password",
  "users.role",
  "users.import",
  "devices.read",
  "devices.wipe",
  "enrollment.issue",
  "policy.read",
  "policy.write",
  "audit.read",
  "stats.read",
  "channels.read",
  "channels.close",
];

/**
 * The one permission table: role → admin actions it may take. Every role check goes through
 * `can`. Helpdesk may look users and their devices up only because locking, resetting and wiping
 * need the ids; it cannot create accounts, change roles or policy, or read the audit log. The DPO
 * oversees (policy, audit, statistics) and changes nothing.
 */
export const PERMISSIONS: Readonly<Record<Role, ReadonlySet<AdminAction>>> = {
  admin: new Set(ALL),
  helpdesk: new Set<AdminAction>(["users.read", "users.lock", "users.password", "devices.read", "devices.wipe", "enrollment.issue"]),
  dpo: new Set<AdminAction>(["policy.read", "audit.read", "stats.read"]),
  user: new Set<AdminAction>(),
};

export function isRole(value: string): value is Role {
  return Object.prototype.hasOwnProperty.call(PERMISSIONS, value);
}

export function can(role: string, action: AdminAction): boolean {
  return isRole(role) && PERMISSIONS[role].has(action);
}

export function requirePermission(role: string, action: AdminAction): void {
  if (!can(role, action)) throw new MatrixError("M_FORBIDDEN", `Your role (${role}) does not permit ${action}`);
}
