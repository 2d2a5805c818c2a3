import type { Storage } from "../storage/database.js";
import type { StreamWriter } from "../storage/stream.js";
import type { SyncExtension } from "../sync/sync.js";
import type { DeviceRemovedHook } from "../users/devices.js";
import { DeviceLists } from "./device-lists.js";
import { E2eeKeys } from "./keys.js";
import { KeyBackup } from "./key-backup.js";
import { ToDevice } from "./to-device.js";
import { toDeviceKey } from "../sync/window-news.js";
import type { Notifier } from "../sync/notifier.js";
import { DeviceSyncCache } from "./device-sync-cache.js";

export interface E2ee {
  keys: E2eeKeys;
  toDevice: ToDevice;
  keyBackup: KeyBackup;
  deviceLists: DeviceLists;
  /** Fills `to_device`, `device_lists` and the key counts of every /sync response. */
  syncExtension: SyncExtension;
  /** Runs when a device is deleted: its keys go with it. */
  onDeviceRemoved: DeviceRemovedHook;
}

export function createE2ee(deps: { storage: Storage; stream: StreamWriter; serverName: string; notifier: Notifier }): E2ee {
  const { storage, stream, serverName, notifier } = deps;
  const keys = new E2eeKeys(storage.db, storage.dialect, stream, serverName);
  const toDevice = new ToDevice(storage.db, stream, serverName);
  const keyBackup = new KeyBackup(storage.db);
  const deviceLists = new DeviceLists(storage.db);

  const deviceState = new DeviceSyncCache(notifier);
  notifier.observe((w) => deviceState.observe(w));

  // The spec reports device list changes only in incremental syncs; an initial sync makes the
  // client query everyone anyway.
  const listChanges = ({ viewer, from, upto, news }: Parameters<SyncExtension>[0]) =>
    from !== null ? deviceLists.changes(viewer.userId, from, upto, news) : Promise.resolve({ changed: [], left: [] });

  const syncExtension: SyncExtension = async (ctx, out) => {
    const { viewer, since, upto, news } = ctx;
    // Known from this device's last answer: nothing to acknowledge, nothing new, the same counts.
    const known = deviceState.get(viewer.userId, viewer.deviceId, upto);
    if (known !== undefined) {
      out.to_device = { events: [] };
      out.device_one_time_keys_count = known.counts;
      out.device_unused_fallback_key_types = known.fallbacks;
      out.device_lists = await listChanges(ctx);
      return;
    }
    // The client's token acknowledges to-device messages; the news window starts at `from`.
    const { counts, fallbacks, delivered } = await keys.deviceSyncState(viewer.userId, viewer.deviceId, since ?? -1);
    const [events, lists] = await Promise.all([
      toDevice.deliver(viewer, since, upto, { noneNew: news !== null && !news.toDevice.has(toDeviceKey(viewer.userId, viewer.deviceId)), delivered }),
      listChanges(ctx),
    ]);
    // Nothing handed out: the inbox holds nothing up to `upto` (what was acknowledged is gone).
    if (events.length === 0) deviceState.keep(viewer.userId, viewer.deviceId, upto, { counts, fallbacks });
    out.to_device = { events };
    out.device_one_time_keys_count = counts;
    out.device_unused_fallback_key_types = fallbacks;
    out.device_lists = lists;
  };

  return { keys, toDevice, keyBackup, deviceLists, syncExtension, onDeviceRemoved: (userId, deviceId) => keys.removeDevice(userId, deviceId) };
}
