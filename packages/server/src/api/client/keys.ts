import { Type } from "@sinclair/typebox";
import { MatrixError } from "@revier/protocol";
import { route } from "../../http/route.js";
import { parseToken } from "../../sync/sync.js";
import { MAX_CLAIM_DEVICES, MAX_QUERY_USERS } from "../../e2ee/keys.js";

const AnyObject = Type.Record(Type.String(), Type.Unknown());

const UploadBody = Type.Object(
  {
    device_keys: Type.Optional(Type.Union([AnyObject, Type.Null()])),
    one_time_keys: Type.Optional(Type.Union([AnyObject, Type.Null()])),
    fallback_keys: Type.Optional(Type.Union([AnyObject, Type.Null()])),
  },
  { additionalProperties: true },
);

const QueryBody = Type.Object(
  {
    device_keys: Type.Record(Type.String({ maxLength: 255 }), Type.Array(Type.String({ maxLength: 255 }), { maxItems: 1000 })),
    timeout: Type.Optional(Type.Integer()),
  },
  { additionalProperties: true },
);

const ClaimBody = Type.Object(
  {
    one_time_keys: Type.Record(Type.String({ maxLength: 255 }), Type.Record(Type.String({ maxLength: 255 }), Type.String({ minLength: 1, maxLength: 255 }))),
    timeout: Type.Optional(Type.Integer()),
  },
  { additionalProperties: true },
);

const CrossSigningBody = Type.Object(
  {
    master_key: Type.Optional(AnyObject),
    self_signing_key: Type.Optional(AnyObject),
    user_signing_key: Type.Optional(AnyObject),
    auth: Type.Optional(Type.Unknown()),
  },
  { additionalProperties: true },
);

export const keyRoutes = [
  /** POST /keys/upload — the device's identity keys, one-time keys and fallback keys. */
  route({ method: "POST", url: "/_matrix/client/v3/keys/upload", body: UploadBody }, async ({ user, body }, s) => ({
    one_time_key_counts: await s.e2ee.keys.upload(user.userId, user.deviceId, body),
  })),

  /** POST /keys/query — device and cross-signing keys of the named users. */
  route({ method: "POST", url: "/_matrix/client/v3/keys/query", body: QueryBody, rateLimit: "none" }, async ({ user, body }, s) => {
    if (Object.keys(body.device_keys).length > MAX_QUERY_USERS) throw new MatrixError("M_BAD_JSON", `At most ${MAX_QUERY_USERS} users per query`);
    return s.e2ee.keys.query(user.userId, body.device_keys);
  }),

  /** POST /keys/claim — one one-time (or fallback) key per named device. */
  route({ method: "POST", url: "/_matrix/client/v3/keys/claim", body: ClaimBody }, async ({ body }, s) => {
    let devices = 0;
    for (const byDevice of Object.values(body.one_time_keys)) devices += Object.keys(byDevice).length;
    if (devices > MAX_CLAIM_DEVICES) throw new MatrixError("M_BAD_JSON", `At most ${MAX_CLAIM_DEVICES} devices per claim`);
    return s.e2ee.keys.claim(body.one_time_keys);
  }),

  /** GET /keys/changes — users whose device lists changed between two sync tokens. */
  route(
    { method: "GET", url: "/_matrix/client/v3/keys/changes", query: Type.Object({ from: Type.String({ maxLength: 64 }), to: Type.String({ maxLength: 64 }) }) },
    async ({ user, query }, s) => {
      const from = parseToken(query.from);
      const to = Math.min(parseToken(query.to), await s.stream.current());
      return s.e2ee.deviceLists.changes(user.userId, from, to);
    },
  ),

  /** POST /keys/device_signing/upload — cross-signing keys; replacing published keys needs UIA. */
  route({ method: "POST", url: "/_matrix/client/v3/keys/device_signing/upload", body: CrossSigningBody }, async ({ user, body }, s) => {
    const { checked, needsAuth } = await s.e2ee.keys.checkCrossSigningUpload(user.userId, body);
    if (needsAuth) await s.uia.require({ method: "POST", path: "/keys/device_signing/upload", body: body as Record<string, unknown>, userId: user.userId });
    await s.e2ee.keys.storeCrossSigning(user.userId, checked);
    return {};
  }),

  /** POST /keys/signatures/upload — signatures on own devices, own master key, others' master keys. */
  route({ method: "POST", url: "/_matrix/client/v3/keys/signatures/upload", body: AnyObject }, async ({ user, body }, s) => ({
    failures: await s.e2ee.keys.uploadSignatures(user.userId, body),
  })),
];
