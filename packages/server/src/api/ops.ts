import { route } from "../http/route.js";

export const opsRoutes = [
  route({ method: "GET", url: "/health", auth: "none" }, async (_ctx, s) => {
    await s.stream.current();
    return { status: "ok" };
  }),
  route({ method: "GET", url: "/metrics", auth: "none" }, async ({ reply }, s) => {
    reply.type(s.metrics.registry.contentType).send(await s.metrics.registry.metrics());
  }),
];
