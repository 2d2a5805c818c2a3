import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import type { TestServer } from "./server.js";

(logger as unknown as { setLevel(level: string): void }).setLevel("error");

export type Client = sdk.MatrixClient;

/** Logs a user in over HTTP and starts a matrix-js-sdk client that syncs until stopped. */
export async function startClient(server: TestServer, localpart: string, opts: { lazyLoadMembers?: boolean } = {}): Promise<Client> {
  const login = await server.login(localpart);
  const client = sdk.createClient({ baseUrl: server.url, accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id });
  const ready = new Promise<void>((resolve, reject) => {
    const onSync = (state: string, _prev: unknown, data?: { error?: Error }) => {
      if (state === "PREPARED" || state === "SYNCING") {
        client.off(sdk.ClientEvent.Sync, onSync);
        resolve();
      } else if (state === "ERROR") {
        client.off(sdk.ClientEvent.Sync, onSync);
        reject(data?.error ?? new Error("sync failed"));
      }
    };
    client.on(sdk.ClientEvent.Sync, onSync);
  });
  await client.startClient({ initialSyncLimit: 20, lazyLoadMembers: opts.lazyLoadMembers ?? false });
  await ready;
  return client;
}

/** Polls until the predicate holds; fails with the description after the timeout. */
export async function waitFor<T>(what: string, fn: () => T | undefined | null | false | Promise<T | undefined | null | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export function timelineBodies(client: Client, roomId: string): string[] {
  const room = client.getRoom(roomId);
  if (!room) return [];
  return room
    .getLiveTimeline()
    .getEvents()
    .filter((e) => e.getType() === "m.room.message")
    .map((e) => String(e.getContent().body ?? ""));
}

export { sdk };

/** Sends an event of any type; matrix-js-sdk's typings only admit the event types it knows. */
export function sendRaw(client: Client, roomId: string, type: string, content: Record<string, unknown>): Promise<{ event_id: string }> {
  return (client.sendEvent as unknown as (roomId: string, type: string, content: Record<string, unknown>) => Promise<{ event_id: string }>).call(client, roomId, type, content);
}
