/**
 * The one error catalogue. Every error Revier returns is one of these codes, with the HTTP status
 * the Matrix spec (or, for ORG.REVIER.* codes, our own API docs) assigns to it.
 */
export const ERRORS = {
  M_FORBIDDEN: 403,
  M_UNKNOWN_TOKEN: 401,
  M_MISSING_TOKEN: 401,
  M_USER_LOCKED: 401,
  M_USER_SUSPENDED: 403,
  M_BAD_JSON: 400,
  M_NOT_JSON: 400,
  M_NOT_FOUND: 404,
  M_LIMIT_EXCEEDED: 429,
  M_UNRECOGNIZED: 404,
  M_UNKNOWN: 400,
  M_UNAUTHORIZED: 401,
  M_USER_DEACTIVATED: 403,
  M_USER_IN_USE: 400,
  M_INVALID_USERNAME: 400,
  M_ROOM_IN_USE: 400,
  M_INVALID_ROOM_STATE: 400,
  M_UNSUPPORTED_ROOM_VERSION: 400,
  M_INCOMPATIBLE_ROOM_VERSION: 400,
  M_BAD_STATE: 400,
  M_GUEST_ACCESS_FORBIDDEN: 403,
  M_MISSING_PARAM: 400,
  M_INVALID_PARAM: 400,
  M_TOO_LARGE: 413,
  M_EXCLUSIVE: 400,
  M_CONSENT_NOT_GIVEN: 403,
  M_CANNOT_LEAVE_SERVER_NOTICE_ROOM: 403,
  M_WEAK_PASSWORD: 400,
  M_THREEPID_NOT_FOUND: 400,
  M_UNSUPPORTED: 400,
  M_NOT_YET_UPLOADED: 504,
  M_CANNOT_OVERWRITE_MEDIA: 409,
  M_UNKNOWN_POS: 400,
  M_BAD_ALIAS: 400,
  M_INVALID_SIGNATURE: 400,
  M_WRONG_ROOM_KEYS_VERSION: 403,
  ORG_REVIER_INTERNAL: 500,
  ORG_REVIER_UNAVAILABLE: 503,
  ORG_REVIER_DEVICE_LIMIT: 403,
  ORG_REVIER_CLIENT_TOO_OLD: 403,
  ORG_REVIER_DEVICE_BLOCKED: 403,
  ORG_REVIER_ENROLLMENT_REQUIRED: 403,
  ORG_REVIER_CHANNEL_CLOSED: 403,
} as const;

export type ErrorCode = keyof typeof ERRORS;

/** Revier's own namespaced codes, spelled as the wire expects (dots, not underscores). */
export const WIRE_CODES: Partial<Record<ErrorCode, string>> = {
  ORG_REVIER_INTERNAL: "M_UNKNOWN",
  ORG_REVIER_UNAVAILABLE: "M_UNKNOWN",
  ORG_REVIER_DEVICE_LIMIT: "ORG.REVIER.DEVICE_LIMIT",
  ORG_REVIER_CLIENT_TOO_OLD: "ORG.REVIER.CLIENT_TOO_OLD",
  ORG_REVIER_DEVICE_BLOCKED: "ORG.REVIER.DEVICE_BLOCKED",
  ORG_REVIER_ENROLLMENT_REQUIRED: "ORG.REVIER.ENROLLMENT_REQUIRED",
  ORG_REVIER_CHANNEL_CLOSED: "ORG.REVIER.CHANNEL_CLOSED",
};

export function wireCode(code: ErrorCode): string {
  return WIRE_CODES[code] ?? code;
}

export function statusOf(code: ErrorCode): number {
  return ERRORS[code];
}

/** A failure that maps onto a Matrix error response. Anything thrown that is not one becomes a 500. */
export class MatrixError extends Error {
  readonly errcode: ErrorCode;
  readonly status: number;
  readonly extra: Record<string, unknown>;
  readonly headers: Record<string, string>;

  constructor(
    errcode: ErrorCode,
    message: string,
    opts: { status?: number; extra?: Record<string, unknown>; headers?: Record<string, string> } = {},
  ) {
    super(message);
    this.name = "MatrixError";
    this.errcode = errcode;
    this.status = opts.status ?? statusOf(errcode);
    this.extra = opts.extra ?? {};
    this.headers = opts.headers ?? {};
  }

  toJSON(): Record<string, unknown> {
    return { errcode: wireCode(this.errcode), error: this.message, ...this.extra };
  }
}
