/** Grammar of Matrix identifiers (spec appendix "Identifier grammar"). */

const LOCALPART = /^[a-z0-9._=\-/+]+$/;
// Historical user ids may contain any printable ASCII except ':'; we accept them when reading but
// only create ids from the strict grammar above.
const HISTORICAL_LOCALPART = /^[\x21-\x39\x3b-\x7e]+$/;
const SERVER_NAME = /^(\[[0-9A-Fa-f:.]{2,45}\]|[0-9A-Za-z.-]{1,255})(:[0-9]{1,5})?$/;

export function isValidLocalpart(localpart: string): boolean {
  return localpart.length > 0 && localpart.length <= 255 && LOCALPART.test(localpart);
}

export function isValidServerName(name: string): boolean {
  return SERVER_NAME.test(name);
}

function splitSigilId(id: string, sigil: string): { local: string; server: string } | null {
  if (typeof id !== "string" || id.length > 255 || !id.startsWith(sigil)) return null;
  const colon = id.indexOf(":");
  if (colon < 2) return null;
  const local = id.slice(1, colon);
  const server = id.slice(colon + 1);
  if (!isValidServerName(server)) return null;
  return { local, server };
}

export function parseUserId(id: string): { localpart: string; server: string } | null {
  const parts = splitSigilId(id, "@");
  if (!parts || !HISTORICAL_LOCALPART.test(parts.local)) return null;
  return { localpart: parts.local, server: parts.server };
}

export function isValidUserId(id: string): boolean {
  return parseUserId(id) !== null;
}

export function isValidRoomId(id: string): boolean {
  const parts = splitSigilId(id, "!");
  return parts !== null && /^[\x21-\x39\x3b-\x7e]+$/.test(parts.local);
}

export function isValidRoomAlias(id: string): boolean {
  const parts = splitSigilId(id, "#");
  return parts !== null && !/[\s:]/.test(parts.local) && parts.local.length > 0;
}

export function isValidEventId(id: string): boolean {
  return typeof id === "string" && id.length > 1 && id.length <= 255 && id.startsWith("$") && !/\s/.test(id);
}

export function userId(localpart: string, server: string): string {
  return `@${localpart}:${server}`;
}
