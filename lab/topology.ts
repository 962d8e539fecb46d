/**
 * The reference topology shared by `sixbed4 lab`, the end-to-end tests and the
 * benchmarks:
 *
 *   [isp]    isp0  fe80::1, 2001:db8:ffff::1/64; 2001:db8:9:10::/64 via fe80::2
 *     | veth isp0 <-> eth0
 *   [router] eth0  fe80::2, 2001:db8:ffff::2/64; default via fe80::1; IPv6 forwarding
 *            wan0  198.51.100.1/24   (towards the NAT)
 *            wan1  203.0.113.1/24    (towards the direct peer C, optional)
 *     | veth wan0 <-> nat:wan0
 *   [nat]    wan0  198.51.100.20/24; lanA 100.64.1.1/24; lanB 100.64.2.1/24;
 *            IPv4 forwarding; masquerade 100.64.0.0/10 out of wan0
 *     | veth lanA <-> peerA:eth0 ; lanB <-> peerB:eth0
 *   [peerA]  eth0 100.64.1.2/24 via 100.64.1.1   [peerB] eth0 100.64.2.2/24 via 100.64.2.1
 *   [peerC]  eth0 203.0.113.2/24 via 203.0.113.1 (veth to router:wan1)
 *
 * Peers have IPv6 enabled with link-local addresses only, and no IPv6
 * forwarding: the 6bed4 peer under test is what gives them IPv6.  The router's
 * 6bed4 tunnel interface and its /64 route are left to the router process.
 * Only documentation / shared address space is used, and no namespace has a
 * route to the outside world.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { findSystemTool, systemTool } from '../agent/host/tools.js';
import { Netns, uniqueName } from './netns.js';
import { veth } from './veth.js';
import { labFastPath, nicLike, nicReceives } from './fast-path.js';

/** Addresses and interface names of the reference topology. */
export const TOPO = {
  /** The 6bed4 /64 the router serves; the ISP routes it to the router. */
  prefix: '2001:db8:9:10::/64',
  /** The ISP<->router IPv6 link. */
  uplinkPrefix: '2001:db8:ffff::/64',
  ispIf: 'isp0',
  ispV6: '2001:db8:ffff::1',
  ispLL: 'fe80::1',
  routerUplinkIf: 'eth0',
  routerV6: '2001:db8:ffff::2',
  routerLL: 'fe80::2',
  /** Router's IPv4 address facing the NAT: the 6bed4 service address. */
  routerWanIf: 'wan0',
  routerV4: '198.51.100.1',
  routerWanPrefix: '198.51.100.0/24',
  /** Router's IPv4 address facing the direct (non-NAT) peer C. */
  routerWanCIf: 'wan1',
  routerV4C: '203.0.113.1',
  routerWanCPrefix: '203.0.113.0/24',
  natWanIf: 'wan0',
  natV4: '198.51.100.20',
  natLanAIf: 'lanA',
  natLanAV4: '100.64.1.1',
  natLanBIf: 'lanB',
  natLanBV4: '100.64.2.1',
  /** Everything behind the NAT (shared address space, RFC 6598). */
  natInside: '100.64.0.0/10',
  /** Every peer's only interface. */
  peerIf: 'eth0',
  peerAV4: '100.64.1.2',
  peerBV4: '100.64.2.2',
  peerCV4: '203.0.113.2',
  prefixLen: 24,
} as const;

export type PeerId = 'A' | 'B' | 'C';

export interface Topology {
  isp: Netns;
  router: Netns;
  /** Throws on access when built with `nat: false`. */
  nat: Netns;
  /** Accessing a peer that was not built (C without `peerC`, A/B without NAT) throws. */
  peers: Record<PeerId, Netns>;
  /** Which peers were built. */
  peerIds: PeerId[];
  /** Every namespace name, all starting with `prefix`. */
  names: string[];
  /** Common prefix of the namespace names (for cleanupAll as a safety net). */
  prefix: string;
  /** Stops processes and deletes every namespace.  Idempotent; never throws. */
  destroy(): Promise<void>;
}

export interface TopologyOptions {
  /** Short tag that goes into the namespace names (e.g. the test's name). */
  tag: string;
  /** Also build the directly connected peer C.  Default false. */
  peerC?: boolean;
  /** Build the NAT with peers A and B behind it.  Default true. */
  nat?: boolean;
  /**
   * Exact name prefix to use instead of a generated unique one (namespaces
   * are named `<prefix>-isp`, `-rtr`, `-nat`, `-pa`, `-pb`, `-pc`).
   */
  prefix?: string;
  /** How long to wait for links and addresses to become usable.  Default 10 s. */
  readyTimeoutMs?: number;
}

/** Namespace name suffixes, kept short so names stay readable in `ip netns`. */
const SUFFIX = { isp: 'isp', router: 'rtr', nat: 'nat', A: 'pa', B: 'pb', C: 'pc' } as const;

// Masquerading only what comes from the inside keeps the router-facing side
// of the NAT otherwise transparent.
export const NAT_RULESET = `
table ip sixbed4_nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "${TOPO.natWanIf}" ip saddr ${TOPO.natInside} masquerade
  }
}
`;

/**
 * Builds the reference topology.  On any failure it deletes the namespaces
 * it created (and only those) and rethrows.
 */
export async function buildTopology(opts: TopologyOptions): Promise<Topology> {
  const withNat = opts.nat ?? true;
  const withC = opts.peerC ?? false;
  const prefix = opts.prefix ?? uniqueName(opts.tag);
  const created: Netns[] = [];
  const destroyAll = async (): Promise<void> => {
    await Promise.all(created.map((ns) => ns.destroy()));
  };

  try {
    // Create in parallel, but remember every namespace that did get created
    // even if a sibling failed, so that nothing leaks.
    const make = async (suffix: string): Promise<Netns> => {
      const ns = await Netns.create(`${prefix}-${suffix}`);
      created.push(ns);
      return ns;
    };
    const roles = [
      make(SUFFIX.isp),
      make(SUFFIX.router),
      withNat ? make(SUFFIX.nat) : undefined,
      withNat ? make(SUFFIX.A) : undefined,
      withNat ? make(SUFFIX.B) : undefined,
      withC ? make(SUFFIX.C) : undefined,
    ];
    const settled = await Promise.allSettled(roles.map((p) => p ?? Promise.resolve(undefined)));
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    const [isp, router, nat, peerA, peerB, peerC] = settled.map((s) =>
      s.status === 'fulfilled' ? s.value : undefined,
    );
    if (!isp || !router) throw new Error('unreachable: isp/router missing');

    await Promise.all([
      veth(isp, TOPO.ispIf, router, TOPO.routerUplinkIf),
      nat && veth(router, TOPO.routerWanIf, nat, TOPO.natWanIf),
      nat && peerA && veth(nat, TOPO.natLanAIf, peerA, TOPO.peerIf),
      nat && peerB && veth(nat, TOPO.natLanBIf, peerB, TOPO.peerIf),
      peerC && veth(router, TOPO.routerWanCIf, peerC, TOPO.peerIf),
    ]);

    const v4len = `/${TOPO.prefixLen}`;
    const jobs: Array<Promise<unknown>> = [];
    jobs.push(
      isp.ipBatch([
        `addr add ${TOPO.ispLL}/64 dev ${TOPO.ispIf} nodad`,
        `addr add ${TOPO.ispV6}/64 dev ${TOPO.ispIf} nodad`,
        `route add ${TOPO.prefix} via ${TOPO.routerLL} dev ${TOPO.ispIf}`,
      ]),
    );
    jobs.push(
      router.ipBatch([
        // Explicit fe80::2 so the ISP's route has a fixed next hop.
        `addr add ${TOPO.routerLL}/64 dev ${TOPO.routerUplinkIf} nodad`,
        `addr add ${TOPO.routerV6}/64 dev ${TOPO.routerUplinkIf} nodad`,
        `route add ::/0 via ${TOPO.ispLL} dev ${TOPO.routerUplinkIf}`,
        ...(nat ? [`addr add ${TOPO.routerV4}${v4len} dev ${TOPO.routerWanIf}`] : []),
        ...(peerC ? [`addr add ${TOPO.routerV4C}${v4len} dev ${TOPO.routerWanCIf}`] : []),
      ]),
      router.run([
        'sysctl',
        '-q',
        '-w',
        'net.ipv6.conf.all.forwarding=1',
        `net.ipv6.conf.${TOPO.routerUplinkIf}.forwarding=1`,
      ]),
    );
    if (nat) {
      jobs.push(
        nat.ipBatch([
          `addr add ${TOPO.natV4}${v4len} dev ${TOPO.natWanIf}`,
          `addr add ${TOPO.natLanAV4}${v4len} dev ${TOPO.natLanAIf}`,
          `addr add ${TOPO.natLanBV4}${v4len} dev ${TOPO.natLanBIf}`,
        ]),
        nat.sysctl('net.ipv4.ip_forward', 1),
        // Absolute path: node_modules/.bin has an unrelated `nft` (see agent/host/tools.ts).
        nat.run([systemTool('nft'), '-f', '-'], { input: NAT_RULESET }),
      );
    }
    const peerV4: Array<[Netns | undefined, string, string]> = [
      [peerA, TOPO.peerAV4, TOPO.natLanAV4],
      [peerB, TOPO.peerBV4, TOPO.natLanBV4],
      [peerC, TOPO.peerCV4, TOPO.routerV4C],
    ];
    for (const [ns, addr, gw] of peerV4) {
      if (!ns) continue;
      jobs.push(
        ns.ipBatch([`addr add ${addr}${v4len} dev ${TOPO.peerIf}`, `route add default via ${gw} dev ${TOPO.peerIf}`]),
      );
    }
    await Promise.all(jobs);
    if (labFastPath() && nat) {
      await Promise.all([
        nicLike(nat, TOPO.natWanIf),
        nicLike(router, TOPO.routerWanIf),
        router.sysctl(`net.ipv4.conf.${TOPO.routerWanIf}.forwarding`, 1),
        nicReceives(router, TOPO.routerUplinkIf),
      ]);
    }

    // In role order (creation order is whatever the parallel adds made it).
    const all = [isp, router, nat, peerA, peerB, peerC].filter((ns): ns is Netns => ns !== undefined);
    await Promise.all(all.map((ns) => waitReady(ns, opts.readyTimeoutMs ?? 10_000)));

    const peerMap: Partial<Record<PeerId, Netns>> = { A: peerA, B: peerB, C: peerC };
    const peers = {} as Record<PeerId, Netns>;
    for (const id of ['A', 'B', 'C'] as const) {
      Object.defineProperty(peers, id, {
        enumerable: peerMap[id] !== undefined,
        get: () =>
          peerMap[id] ??
          fail(
            `peer ${id} is not part of this topology (${id === 'C' ? 'pass peerC: true' : 'built with nat: false'})`,
          ),
      });
    }
    const topo: Topology = {
      isp,
      router,
      get nat(): Netns {
        return nat ?? fail('the NAT is not part of this topology (built with nat: false)');
      },
      peers,
      peerIds: (['A', 'B', 'C'] as const).filter((id) => peerMap[id] !== undefined),
      names: all.map((ns) => ns.name),
      prefix,
      destroy: destroyAll,
    };
    return topo;
  } catch (e) {
    await destroyAll();
    throw e;
  }
}

function fail(message: string): never {
  throw new Error(message);
}

interface IpLink {
  ifname: string;
  operstate?: string;
}
interface IpAddr {
  ifname: string;
  addr_info?: Array<{ local: string; tentative?: boolean; dadfailed?: boolean }>;
}

/**
 * Waits until every interface but lo reports carrier (veth carrier changes go
 * through the kernel's link watcher, which can lag) and no IPv6 address is
 * still tentative: before that, binding or sourcing from an address fails.
 */
async function waitReady(ns: Netns, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [links, addrs] = await Promise.all([
      ns.json<IpLink[]>(['link', 'show']),
      ns.json<IpAddr[]>(['addr', 'show']),
    ]);
    const down = links
      .filter((l) => l.ifname !== 'lo' && l.operstate !== 'UP')
      .map((l) => `${l.ifname}:${l.operstate}`);
    const pending = addrs.flatMap((a) =>
      (a.addr_info ?? []).filter((i) => i.tentative || i.dadfailed).map((i) => `${a.ifname}:${i.local}`),
    );
    if (down.length === 0 && pending.length === 0) return;
    if (Date.now() > deadline) {
      throw new Error(
        `${ns.name}: not ready after ${timeoutMs} ms (links down: ${down.join(' ') || '-'}; tentative: ${pending.join(' ') || '-'})`,
      );
    }
    await sleep(25);
  }
}

/** True when running as root (needed for network namespaces). */
export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/**
 * Why the namespace lab cannot run here, or null if it can: it needs root
 * and the `ip` (iproute2), `nft` (nftables) and `sysctl` (procps) commands.  Tests use this to
 * skip with a clear reason.
 */
export function requireRootReason(): string | null {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (!isRoot()) return 'needs root to create network namespaces (run as root, e.g. sudo)';
  const missing = ['ip', 'nft', 'sysctl'].filter((cmd) => !findSystemTool(cmd));
  if (missing.length > 0) return `missing command(s) ${missing.join(', ')} (install iproute2, nftables, procps)`;
  return null;
}
