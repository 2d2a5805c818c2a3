import { ALL_ROUTES } from "../api/index.js";

/** Every route Revier serves, for the conformance report. */
export async function implementedRoutes(): Promise<Array<{ method: string; url: string }>> {
  return ALL_ROUTES.map((r) => ({ method: r.spec.method, url: r.spec.url }));
}
