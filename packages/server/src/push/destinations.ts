import { lookup } from "node:dns/promises";
import { BlockList, isIP } from "node:net";
import { MatrixError } from "@revier/protocol";

/**
 * Where the server may send push notifications. Pusher URLs come from users, so without a check
 * any officer could make the server POST into the organisation's internal network (SSRF).
 * By default only public addresses are reachable; an organisation that runs its own push gateway
 * on an internal address lists that host in `push.gateway_allowlist`, and then only listed hosts
 * are reachable at all.
 */
export class PushDestinations {
  private readonly internal = new BlockList();
  private readonly allowed: ReadonlySet<string>;

  constructor(
    allowlist: readonly string[],
    private readonly resolve: (host: string) => Promise<string[]> = async (host) => (await lookup(host, { all: true, verbatim: true })).map((a) => a.address),
  ) {
    this.allowed = new Set(allowlist.map((h) => h.toLowerCase()));
    for (const [net, bits] of [
      ["0.0.0.0", 8],
      ["10.0.0.0", 8],
      ["100.64.0.0", 10],
      ["127.0.0.0", 8],
      ["169.254.0.0", 16],
      ["172.16.0.0", 12],
      ["192.0.0.0", 24],
      ["192.168.0.0", 16],
      ["198.18.0.0", 15],
      ["224.0.0.0", 3],
    ] as const) {
      this.internal.addSubnet(net, bits, "ipv4");
    }
    for (const [net, bits] of [
      ["::", 127],
      ["fc00::", 7],
      ["fe80::", 10],
      ["ff00::", 8],
    ] as const) {
      this.internal.addSubnet(net, bits, "ipv6");
    }
  }

  /** Checked when a pusher is set, so the user gets a clear error instead of silent non-delivery. */
  async check(url: string): Promise<void> {
    const refusal = await this.refusal(url);
    if (refusal) throw new MatrixError("M_INVALID_PARAM", `data.url is not an allowed push destination: ${refusal}`);
  }

  /**
   * Why a delivery to `url` must not happen, or null. Checked again before every delivery because
   * a name may resolve differently later (the connection itself resolves once more, so a DNS
   * answer that changes within milliseconds is the remaining gap; an allowlist closes it).
   */
  async refusal(url: string): Promise<string | null> {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      return "not a URL";
    }
    const host = parsed.hostname.replace(/^\[(.*)\]$/, "$1").toLowerCase();
    if (this.allowed.size > 0) return this.allowed.has(host) ? null : `${host} is not in push.gateway_allowlist`;
    let addresses: string[];
    try {
      addresses = isIP(host) ? [host] : await this.resolve(host);
    } catch {
      return `${host} does not resolve`;
    }
    for (const a of addresses) {
      const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a)?.[1];
      const address = mapped ?? a;
      if (this.internal.check(address, isIP(address) === 6 ? "ipv6" : "ipv4")) return `${host} resolves to the internal address ${address}; list it in push.gateway_allowlist to allow it`;
    }
    return null;
  }
}
