// The host's networking as the planner sees it, read with `ip -j` and from
// /proc/sys. Turning the JSON into the model is pure (parseAddrJson,
// parseRouteJson), so tests feed it captured output; readHostState does the I/O.
import { ip, ipJson } from './ip.js';
import { readIpv6Conf, type Ipv6Conf } from './sysctl.js';
import { formatIPv6, parseIPv6, parsePrefix, type Prefix } from '../../lib/ip.js';

/** Address flags that are part of an address's configuration and must survive a revert. */
export const KEPT_FLAGS = ['nodad', 'noprefixroute', 'mngtmpaddr', 'home', 'deprecated'] as const;
export type KeptFlag = (typeof KEPT_FLAGS)[number];

export interface AddressForm {
  /** Canonical text (RFC 5952). */
  readonly address: string;
  readonly dev: string;
  readonly prefixLen: number;
  /** Sorted subset of KEPT_FLAGS. */
  readonly flags: readonly KeptFlag[];
}

export interface HostAddress extends AddressForm {
  readonly bytes: Uint8Array;
  readonly scope: string;
  /** Managed by SLAAC or DHCPv6: it has a finite lifetime. */
  readonly dynamic: boolean;
  readonly tentative: boolean;
  readonly dadFailed: boolean;
}

export interface Link {
  readonly name: string;
  readonly ifindex: number;
  readonly mac?: string;
  /** linkinfo kind (veth, tun, dummy, ...), if the kernel reports one. */
  readonly kind?: string;
  readonly up: boolean;
}

export interface Route {
  /** Undefined for the default route. */
  readonly prefix?: Prefix;
  readonly devs: readonly string[];
  readonly gateways: readonly string[];
  readonly protocol: string;
  readonly metric: number;
}

export interface HostState {
  readonly links: readonly Link[];
  readonly addresses: readonly HostAddress[];
  /** IPv6 routes of the main table. */
  readonly routes: readonly Route[];
  readonly conf: Ipv6Conf;
  /** Only probed when dummy112 needs a dummy interface that does not exist yet. */
  readonly dummy?: { readonly supported: boolean; readonly error?: string };
}

interface AddrJson {
  ifindex: number;
  ifname: string;
  flags?: string[];
  address?: string;
  link_type?: string;
  linkinfo?: { info_kind?: string };
  addr_info?: Array<Record<string, unknown> & { family?: string; local?: string; prefixlen?: number; scope?: string }>;
}

/** `ip -d -j addr show` → links and their IPv6 addresses. */
export function parseAddrJson(json: unknown): { links: Link[]; addresses: HostAddress[] } {
  const links: Link[] = [];
  const addresses: HostAddress[] = [];
  for (const l of json as AddrJson[]) {
    links.push({
      name: l.ifname,
      ifindex: l.ifindex,
      up: (l.flags ?? []).includes('UP'),
      ...(l.address && l.link_type === 'ether' ? { mac: l.address } : {}),
      ...(l.linkinfo?.info_kind ? { kind: l.linkinfo.info_kind } : {}),
    });
    for (const a of l.addr_info ?? []) {
      if (a.family !== 'inet6' || typeof a.local !== 'string') continue;
      const bytes = parseIPv6(a.local);
      addresses.push({
        address: formatIPv6(bytes),
        bytes,
        dev: l.ifname,
        prefixLen: a.prefixlen ?? 128,
        scope: a.scope ?? 'global',
        flags: KEPT_FLAGS.filter((f) => a[f] === true),
        dynamic: a.dynamic === true,
        tentative: a.tentative === true,
        dadFailed: a.dadfailed === true,
      });
    }
  }
  return { links, addresses };
}

interface RouteJson {
  dst: string;
  dev?: string;
  gateway?: string;
  protocol?: string;
  metric?: number;
  type?: string;
  nexthops?: Array<{ dev?: string; gateway?: string }>;
}

/** `ip -j -6 route show table main` → unicast routes (unreachable/blackhole and friends are skipped). */
export function parseRouteJson(json: unknown): Route[] {
  const out: Route[] = [];
  for (const r of json as RouteJson[]) {
    if (r.type && r.type !== 'unicast') continue;
    const hops = r.nexthops ?? [{ ...(r.dev ? { dev: r.dev } : {}), ...(r.gateway ? { gateway: r.gateway } : {}) }];
    const dst = r.dst === 'default' ? undefined : parsePrefix(r.dst.includes('/') ? r.dst : `${r.dst}/128`, 'route');
    out.push({
      ...(dst ? { prefix: dst } : {}),
      devs: hops.flatMap((h) => (h.dev ? [h.dev] : [])),
      gateways: hops.flatMap((h) => (h.gateway ? [h.gateway] : [])),
      // iproute2 leaves out "boot", the protocol of routes added by hand.
      protocol: r.protocol ?? 'boot',
      metric: r.metric ?? 0,
    });
  }
  return out;
}

export function findLink(s: HostState, name: string): Link | undefined {
  return s.links.find((l) => l.name === name);
}

export function defaultRoutes(s: HostState): Route[] {
  return s.routes.filter((r) => r.prefix === undefined).sort((a, b) => a.metric - b.metric);
}

/**
 * Tries to create (and at once deletes) a dummy interface: the only reliable
 * way to know whether the kernel has the dummy link type (it may be a module
 * that loads on demand, or missing altogether).
 */
export async function probeDummy(): Promise<{ supported: boolean; error?: string }> {
  const name = `s4probe${process.pid % 100000}`;
  try {
    await ip('link', 'add', name, 'type', 'dummy');
  } catch (err) {
    // iproute2 says "Error: Unknown device type." when the kernel has no such link type.
    const text = ((err as { stderr?: string }).stderr ?? (err as Error).message).trim();
    return { supported: false, error: text.replace(/^Error:\s*/, '').replace(/\.$/, '') };
  }
  await ip('link', 'del', name).catch(() => undefined);
  return { supported: true };
}

/** Reads the host's current state; probes for the dummy link type when asked to. */
export async function readHostState(opts: { probeDummy?: boolean } = {}): Promise<HostState> {
  const [addrJson, routeJson, conf] = await Promise.all([
    ipJson<unknown>('-d', 'addr', 'show'),
    ipJson<unknown>('-6', 'route', 'show', 'table', 'main'),
    readIpv6Conf(),
  ]);
  const { links, addresses } = parseAddrJson(addrJson);
  const dummy = opts.probeDummy ? await probeDummy() : undefined;
  return { links, addresses, routes: parseRouteJson(routeJson), conf, ...(dummy ? { dummy } : {}) };
}
