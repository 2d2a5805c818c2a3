import { test } from "node:test";
import assert from "node:assert/strict";
import { PushDestinations } from "./destinations.js";

const dns = (table: Record<string, string[]>) => async (host: string) => {
  const a = table[host];
  if (!a) throw new Error("ENOTFOUND");
  return a;
};

test("internal addresses are refused by default, public ones allowed", async () => {
  const d = new PushDestinations([], dns({ "push.example.org": ["203.0.113.7"], "intranet.polizei": ["10.1.2.3"], "rebind.example": ["93.184.216.34", "127.0.0.1"] }));
  assert.equal(await d.refusal("https://push.example.org/_matrix/push/v1/notify"), null);
  for (const url of [
    "http://127.0.0.1:8080/_matrix/push/v1/notify",
    "http://[::1]/_matrix/push/v1/notify",
    "http://[::ffff:127.0.0.1]/_matrix/push/v1/notify",
    "http://169.254.169.254/_matrix/push/v1/notify",
    "http://192.168.0.10/_matrix/push/v1/notify",
    "http://[fd00::1]/_matrix/push/v1/notify",
    "http://0.0.0.0/_matrix/push/v1/notify",
    "https://intranet.polizei/_matrix/push/v1/notify",
    "https://rebind.example/_matrix/push/v1/notify",
  ]) {
    assert.match((await d.refusal(url)) ?? "allowed", /internal address/, url);
  }
  assert.match((await d.refusal("https://unknown.example/_matrix/push/v1/notify")) ?? "", /does not resolve/);
  await assert.rejects(d.check("http://10.0.0.1/_matrix/push/v1/notify"), /M_INVALID_PARAM|not an allowed push destination/);
});

test("with an allowlist only the listed hosts are reachable, internal or not", async () => {
  const d = new PushDestinations(["sygnal.intern", "127.0.0.1"], dns({ "sygnal.intern": ["10.0.0.5"], "push.example.org": ["203.0.113.7"] }));
  assert.equal(await d.refusal("https://sygnal.intern/_matrix/push/v1/notify"), null);
  assert.equal(await d.refusal("http://127.0.0.1:9999/_matrix/push/v1/notify"), null);
  assert.match((await d.refusal("https://push.example.org/_matrix/push/v1/notify")) ?? "", /not in push.gateway_allowlist/);
});
