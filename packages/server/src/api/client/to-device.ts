import { Type } from "@sinclair/typebox";
import { route } from "../../http/route.js";

const Params = Type.Object({ eventType: Type.String({ minLength: 1, maxLength: 255 }), txnId: Type.String({ minLength: 1, maxLength: 255 }) });
const Body = Type.Object({ messages: Type.Record(Type.String({ maxLength: 255 }), Type.Record(Type.String({ maxLength: 255 }), Type.Record(Type.String(), Type.Unknown()))) }, { additionalProperties: true });

export const toDeviceRoutes = [
  /** PUT /sendToDevice/{eventType}/{txnId} — messages to devices, `*` meaning all of a user's devices. */
  route({ method: "PUT", url: "/_matrix/client/v3/sendToDevice/:eventType/:txnId", params: Params, body: Body }, async ({ user, params, body }, s) => {
    await s.e2ee.toDevice.send(user, params.eventType, params.txnId, body.messages);
    return {};
  }),
];
