import { MatrixError } from "@revier/protocol";
import { route } from "../http/route.js";

export const opsRoutes = [
  route({ method: "GET", url: "/health", auth: "none" }, async (_ctx, s) => {
    await s.stream.current();
    return { status: "ok" };
  }),
  // Metrics name routes, rates and room counts: for the monitoring host, not for every client.
  route({ method: "GET", url: "/metrics", auth: "none" }, async ({ req, reply }, s) => {
    if (!s.metricsAccess(req.ip)) throw new MatrixError("M_FORBIDDEN", "Metrics are only served to the addresses in metrics_allow_from");
    reply.type(s.metrics.registry.contentType).send(await s.metrics.registry.metrics());
  }),
];
