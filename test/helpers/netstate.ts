// What a test means when it says "the network is as it was": addresses and routes by their meaning (interface,
// address and length, scope; destination, next hop, device, table, metric, type), never the raw `ip -j` output,
// which carries kernel timing: a new address is `tentative` until DAD ends, lifetimes count down, operstate settles.
import type { Netns } from '../../lab/netns.js';

export interface IpAddrLink {
  ifname: string;
  addr_info?: { family: string; local: string; prefixlen: number; scope: string }[];
}
export interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  table?: string;
  metric?: number;
  type?: string;
}

/** One line per address: `eth0 inet6 2001:db8::1/64 scope global`, sorted. */
export function addressLines(links: IpAddrLink[], keep: (ifname: string) => boolean = () => true): string[] {
  return links
    .filter((l) => keep(l.ifname))
    .flatMap((l) =>
      (l.addr_info ?? []).map((a) => `${l.ifname} ${a.family} ${a.local}/${a.prefixlen} scope ${a.scope}`),
    )
    .sort();
}

/**
 * One line per route: `unicast 2001:db8::/64 via fe80::1 dev eth0 table main metric 1024`, sorted. Routes the kernel
 * derives from addresses and links (local, multicast, broadcast, anycast) are left out: they come and go with DAD
 * (the local route of a link-local address appears only once it is no longer tentative), and the addresses are
 * compared anyway.
 */
export function routeLines(routes: IpRoute[], keep: (dev: string) => boolean = () => true): string[] {
  const derived = new Set(['local', 'multicast', 'broadcast', 'anycast']);
  return routes
    .filter((r) => keep(r.dev ?? '-') && !derived.has(r.type ?? 'unicast'))
    .map(
      (r) =>
        `${r.type ?? 'unicast'} ${r.dst} via ${r.gateway ?? '-'} dev ${r.dev ?? '-'} table ${r.table ?? 'main'} metric ${r.metric ?? 0}`,
    )
    .sort();
}

/**
 * A host's IPv6 configuration as sixbed4 changes it: addresses and links, IPv6 routes (every table), and the
 * forwarding and accept_ra sysctls of every interface. `keep` leaves out interfaces that others own (pods' veths).
 */
export async function hostNetwork(
  ns: Netns,
  keep: (ifname: string) => boolean = () => true,
): Promise<Record<string, string[]>> {
  const [links, routes, sysctls] = await Promise.all([
    ns.json<IpAddrLink[]>(['addr', 'show']),
    ns.json<IpRoute[]>(['-6', 'route', 'show', 'table', 'all']),
    ns.run(['sh', '-c', 'grep -H . /proc/sys/net/ipv6/conf/*/forwarding /proc/sys/net/ipv6/conf/*/accept_ra']),
  ]);
  return {
    links: links
      .map((l) => l.ifname)
      .filter(keep)
      .sort(),
    addresses: addressLines(links, keep),
    routes: routeLines(routes, keep),
    sysctls: sysctls
      .trim()
      .split('\n')
      .filter((l) => keep(l.split('/')[6] ?? ''))
      .sort(),
  };
}
