import { PublishTermsBody, TermsOverview, TermsVersionDetails } from "@revier/protocol";
import { adminRoute } from "./admin-route.js";

/**
 * Terms of use in the admin API. They are part of the organisation's policy, so reading them takes
 * `policy.read` (admin, DPO) and publishing takes `policy.write` (admin).
 */
export const adminTermsRoutes = [
  adminRoute(
    { method: "GET", url: "/terms", action: "policy.read" },
    { summary: "The current terms of use (text, publication, acceptances, users still to accept) and every published version with its acceptance count", response: TermsOverview },
    async (_ctx, s) => s.terms.overview(),
  ),

  adminRoute(
    { method: "POST", url: "/terms", body: PublishTermsBody, action: "policy.write" },
    {
      summary:
        "Publish a new version of the terms of use (Markdown; raw HTML is shown as text). It becomes current at once; while the policy's terms_required is on, every user must accept it before further use",
      response: TermsVersionDetails,
    },
    async ({ body, actor }, s) => s.terms.publish(actor, body),
  ),
];
