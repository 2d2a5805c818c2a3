import type { RouteDef } from "../../http/route.js";
import { adminUserRoutes } from "./users.js";
import { adminDeviceRoutes, clientEnrollmentRoutes } from "./devices.js";
import { adminOversightRoutes } from "./oversight.js";
import { openApiRoute } from "./openapi.js";
import { adminTermsRoutes } from "./terms.js";
import { adminChannelRoutes } from "./channels.js";

const privileged: RouteDef[] = [...adminUserRoutes, ...adminDeviceRoutes, ...adminOversightRoutes, ...adminTermsRoutes, ...adminChannelRoutes];

/** The admin API (`/_revier/admin/v1/…`), its OpenAPI document, and the client-side enrollment endpoint. */
export const adminRoutes: RouteDef[] = [...privileged, openApiRoute(privileged), ...clientEnrollmentRoutes];
