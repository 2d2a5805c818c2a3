import { route } from "../../http/route.js";
import { ROOM_VERSIONS, DEFAULT_ROOM_VERSION } from "../../rooms/room-versions.js";

export const SUPPORTED_VERSIONS = ["v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11"];

export const metaRoutes = [
  route({ method: "GET", url: "/_matrix/client/versions", auth: "none" }, async () => ({
    versions: SUPPORTED_VERSIONS,
    unstable_features: { "org.matrix.msc3916.stable": true },
  })),

  route({ method: "GET", url: "/.well-known/matrix/client", auth: "none" }, async (_ctx, s) => ({
    "m.homeserver": { base_url: s.config.publicBaseUrl },
  })),

  route({ method: "GET", url: "/_matrix/client/v3/capabilities" }, async () => ({
    capabilities: {
      "m.change_password": { enabled: true },
      "m.room_versions": { default: DEFAULT_ROOM_VERSION, available: Object.fromEntries(Object.keys(ROOM_VERSIONS).map((v) => [v, "stable"])) },
      "m.set_displayname": { enabled: true },
      "m.set_avatar_url": { enabled: true },
      "m.3pid_changes": { enabled: false },
      "m.get_login_token": { enabled: false },
    },
  })),

  route({ method: "GET", url: "/_matrix/client/v3/voip/turnServer" }, async () => ({})),
  route({ method: "GET", url: "/_matrix/client/v3/thirdparty/protocols" }, async () => ({})),
];
