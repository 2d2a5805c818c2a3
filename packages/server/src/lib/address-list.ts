import { BlockList, isIP } from "node:net";

/** Matches client addresses against a list of IP addresses and CIDR ranges (IPv4-mapped IPv6 included). */
export function addressMatcher(entries: readonly string[]): (address: string) => boolean {
  const list = new BlockList();
  for (const entry of entries) {
    const [net = "", bits] = entry.split("/");
    const type = isIP(net) === 6 ? "ipv6" : "ipv4";
    if (bits === undefined) list.addAddress(net, type);
    else list.addSubnet(net, Number(bits), type);
  }
  return (address) => {
    const plain = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1] ?? address;
    const type = isIP(plain);
    return type !== 0 && list.check(plain, type === 6 ? "ipv6" : "ipv4");
  };
}
