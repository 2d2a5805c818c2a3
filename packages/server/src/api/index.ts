import type { RouteDef } from "../http/route.js";
import { metaRoutes } from "./client/meta.js";
import { sessionRoutes } from "./client/session.js";
import { accountRoutes } from "./client/account.js";
import { deviceRoutes } from "./client/devices.js";
import { profileRoutes } from "./client/profile.js";
import { roomRoutes } from "./client/rooms.js";
import { syncRoutes } from "./client/sync.js";
import { directoryRoutes } from "./client/directory.js";
import { accountDataRoutes } from "./client/account-data.js";
import { receiptRoutes } from "./client/receipts.js";
import { pushRoutes } from "./client/push.js";
import { mediaRoutes } from "./client/media.js";
import { keyRoutes } from "./client/keys.js";
import { toDeviceRoutes } from "./client/to-device.js";
import { keyBackupRoutes } from "./client/key-backup.js";
import { opsRoutes } from "./ops.js";
import { adminRoutes } from "./admin/index.js";
import { dutyRoutes } from "./client/duty.js";
import { termsRoutes } from "./client/terms.js";
import { clientChannelRoutes } from "./client/channels.js";

export const ALL_ROUTES: RouteDef[] = [
  ...metaRoutes,
  ...sessionRoutes,
  ...accountRoutes,
  ...deviceRoutes,
  ...profileRoutes,
  ...roomRoutes,
  ...syncRoutes,
  ...directoryRoutes,
  ...accountDataRoutes,
  ...receiptRoutes,
  ...pushRoutes,
  ...mediaRoutes,
  ...keyRoutes,
  ...toDeviceRoutes,
  ...keyBackupRoutes,
  ...opsRoutes,
  ...adminRoutes,
  ...dutyRoutes,
  ...termsRoutes,
  ...clientChannelRoutes,
];
