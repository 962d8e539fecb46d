// The benchmark's namespaces: the lab's reference topology without the NAT
// (isp — router — peer C), plus what the measurements need on top of it.
//
//   [isp]  isp0 2001:db8:ffff::1, fe80::1, 198.51.100.2/24        IPv6 forwarding on
//          6→4 generator: a TUN device (bgen0) whose packets the isp forwards to the router
//          4→6 sink: nft drops+counts IPv6/UDP to 2001:db8:ffff::1 port 9 at prerouting
//     |
//  [rtr]   eth0 2001:db8:ffff::2, fe80::2, 198.51.100.1/24          IPv4+IPv6 forwarding on
//          wan1 203.0.113.1/24, 2001:db8:ffff:2::1/64; 192.0.2.0/24 via 203.0.113.2
//          sixbed4 router (when measured), or the kernel alone (reference)
//     |
//  [peer]  eth0 203.0.113.2/24, 2001:db8:ffff:2::2/64              IPv4 forwarding on
//          4→6 generators: UDP sockets on 203.0.113.2, or a TUN device for
//          many peers (192.0.2.x:port sources, which the router routes back here)
//          6→4 sink: nft drops+counts the router's datagrams (from 203.0.113.1:25790)
//
// By default a packet handed over a veth (or written to a TUN) is processed
// by the receiving namespace in the sender's own softirq, on the sender's
// CPU. With `rps`, receive packet steering splits the work the way two
// machines would: everything the router namespace receives is processed on
// one CPU (the "router box", where the router is pinned), everything the isp
// and peer namespaces receive on the other (with the generators). On a
// nested VM the inter-processor interrupts this takes are expensive, and an
// overloaded box then spends its CPU receiving packets its router has no
// time to read (receive livelock), which is why it is not the default.
//
// Sinks are nft rules at the earliest hook (prerouting, priority raw): the
// cheapest way to count a packet that arrived and get rid of it (no socket,
// no ICMP error), so no sink can be slower than the thing measured. The
// kernel references reuse the same links and generators: IPv4 UDP peer →
// isp, and IPv6 isp → peer, forwarded by the router namespace's kernel.
import { buildTopology, TOPO, type Topology } from '../lab/topology.js';
import { systemTool } from '../agent/host/tools.js';
import type { Netns } from '../lab/netns.js';

export const NET = {
  prefix: TOPO.prefix,
  routerV4: TOPO.routerV4C,
  routerPort: 25790,
  peerV4: TOPO.peerCV4,
  peerIf: TOPO.peerIf,
  ispIf: TOPO.ispIf,
  ispV6: TOPO.ispV6,
  /** IPv4 on the isp link, for the IPv4 kernel-forwarding reference. */
  ispV4: '198.51.100.2',
  routerIspV4: '198.51.100.1',
  /** IPv6 on the peer link, for the IPv6 kernel-forwarding reference. */
  peerV6: '2001:db8:ffff:2::2',
  routerPeerV6: '2001:db8:ffff:2::1',
  /** Many-peer destinations: routed from the router to the peer namespace. */
  peersNet: '192.0.2.0/24',
  firstPeerV4: '192.0.2.1',
  /** Source of native-side traffic: a host "on the Internet" behind the isp. */
  remoteV6: '2001:db8:ffff:ff::1',
  genTun: 'bgen0',
  metrics: '127.0.0.1:9464',
} as const;

const TABLE = 'sixbed4_bench';

/** Named nft counters: where each kind of traffic is counted (and dropped). */
export const SINK = {
  /** 4→6: the router's IPv6 packets, arriving at the isp. */
  toNative: { ns: 'isp', name: 'to_native' },
  /** IPv4 kernel reference: the UDP generator's datagrams forwarded to the isp. */
  v4Ref: { ns: 'isp', name: 'v4_ref' },
  /** 6→4: the router's UDP datagrams, arriving at the peer namespace. */
  toPeers: { ns: 'peer', name: 'to_peers' },
  /** IPv6 kernel reference: the TUN generator's packets forwarded to the peer namespace. */
  v6Ref: { ns: 'peer', name: 'v6_ref' },
  /** Ceilings (generator → next namespace): only while that table exists in the router namespace. */
  ceilUdp: { ns: 'rtr', name: 'ceil_udp' },
  ceilTun: { ns: 'rtr', name: 'ceil_tun' },
} as const;
export type SinkId = keyof typeof SINK;
export type Role = 'isp' | 'rtr' | 'peer';

const ISP_RULES = `
table inet ${TABLE} {
  counter to_native {}
  counter v4_ref {}
  chain sink {
    type filter hook prerouting priority raw; policy accept;
    ip6 saddr ${NET.prefix} ip6 daddr ${NET.ispV6} udp dport 9 counter name to_native drop
    ip daddr ${NET.ispV4} udp dport 9 counter name v4_ref drop
  }
}
`;

const PEER_RULES = `
table inet ${TABLE} {
  counter to_peers {}
  counter v6_ref {}
  chain sink {
    type filter hook prerouting priority raw; policy accept;
    ip saddr ${NET.routerV4} udp sport ${NET.routerPort} counter name to_peers drop
    ip6 daddr ${NET.peerV6} udp dport 9 counter name v6_ref drop
  }
}
`;

// Present only while measuring the generators' own ceilings: it would
// swallow the router's traffic otherwise.
const CEILING_RULES = `
table inet ${TABLE} {
  counter ceil_udp {}
  counter ceil_tun {}
  chain sink {
    type filter hook prerouting priority raw; policy accept;
    ip daddr ${NET.routerV4} udp dport ${NET.routerPort} counter name ceil_udp drop
    ip6 daddr ${NET.prefix} counter name ceil_tun drop
  }
}
`;

export interface BenchNet {
  topo: Topology;
  ns: Record<Role, Netns>;
  destroy(): Promise<void>;
}

export interface BenchNetOptions {
  /** Steer the router namespace's receive processing to this CPU and the others' to otherCpu (see above). */
  rps?: { routerCpu: number; otherCpu: number };
}

export async function buildBenchNet(opts: BenchNetOptions = {}): Promise<BenchNet> {
  const topo = await buildTopology({ tag: 'bench', nat: false, peerC: true });
  const ns: Record<Role, Netns> = { isp: topo.isp, rtr: topo.router, peer: topo.peers.C };
  try {
    await Promise.all([
      ns.isp.ipBatch([
        `addr add ${NET.ispV4}/24 dev ${TOPO.ispIf}`,
        `route add default via ${NET.routerIspV4} dev ${TOPO.ispIf}`,
        `route add 2001:db8:ffff:2::/64 via ${TOPO.routerLL} dev ${TOPO.ispIf}`,
      ]),
      ns.rtr.ipBatch([
        `addr add ${NET.routerIspV4}/24 dev ${TOPO.routerUplinkIf}`,
        `addr add ${NET.routerPeerV6}/64 dev ${TOPO.routerWanCIf} nodad`,
        `route add ${NET.peersNet} via ${NET.peerV4} dev ${TOPO.routerWanCIf}`,
      ]),
      ns.peer.ipBatch([`addr add ${NET.peerV6}/64 dev ${TOPO.peerIf} nodad`]),
      // The isp forwards what the TUN generator writes; the router namespace
      // forwards IPv4 for the IPv4 reference (IPv6 forwarding is on already).
      ns.isp.sysctl('net.ipv6.conf.all.forwarding', 1),
      ns.rtr.sysctl('net.ipv4.ip_forward', 1),
      // The peer forwards what its many-peers TUN generator writes, whose
      // sources (192.0.2.x) are not reachable through that TUN: no rp_filter.
      ns.peer.run([
        'sysctl',
        '-q',
        '-w',
        'net.ipv4.ip_forward=1',
        'net.ipv4.conf.all.rp_filter=0',
        'net.ipv4.conf.default.rp_filter=0',
      ]),
      nft(ns.isp, ISP_RULES),
      nft(ns.peer, PEER_RULES),
    ]);
    if (opts.rps) {
      const r = 1 << opts.rps.routerCpu,
        o = 1 << opts.rps.otherCpu;
      await Promise.all([
        steerReceive(ns.rtr, TOPO.routerUplinkIf, r),
        steerReceive(ns.rtr, TOPO.routerWanCIf, r),
        steerReceive(ns.isp, TOPO.ispIf, o),
        steerReceive(ns.peer, TOPO.peerIf, o),
      ]);
    }
    await resolveNeighbours(ns);
  } catch (e) {
    await topo.destroy();
    throw e;
  }
  return { topo, ns, destroy: () => topo.destroy() };
}

/** Sets the RPS CPU mask of every receive queue of dev (sysfs as seen inside the namespace). */
async function steerReceive(n: Netns, dev: string, mask: number): Promise<void> {
  await n.run([
    'sh',
    '-c',
    `for q in /sys/class/net/${dev}/queues/rx-*; do echo ${mask.toString(16)} > "$q/rps_cpus"; done`,
  ]);
}

/** Resolves every neighbour entry the measurements use, so no first packet waits on ARP/ND. */
async function resolveNeighbours(ns: Record<Role, Netns>): Promise<void> {
  const ping = (n: Netns, args: string[]) => n.run(['ping', '-n', '-q', '-c', '1', '-W', '2', ...args]);
  await Promise.all([
    ping(ns.rtr, [NET.peerV4]),
    ping(ns.rtr, [NET.ispV4]),
    ping(ns.rtr, ['-6', NET.ispV6]),
    ping(ns.rtr, ['-6', NET.peerV6]),
    ping(ns.isp, ['-6', `${TOPO.routerLL}%${TOPO.ispIf}`]),
    ping(ns.peer, [NET.routerV4]),
  ]);
}

export async function nft(n: Netns, rules: string): Promise<void> {
  // Absolute path: node_modules/.bin holds an unrelated `nft` (see agent/host/tools.ts).
  await n.run([systemTool('nft'), '-f', '-'], { input: rules });
}

export async function addCeilingSink(rtr: Netns): Promise<void> {
  await nft(rtr, CEILING_RULES);
}

export async function removeCeilingSink(rtr: Netns): Promise<void> {
  await rtr.run([systemTool('nft'), 'delete', 'table', 'inet', TABLE]);
}

/** Packets counted so far by a sink. */
export async function readSink(ns: Record<Role, Netns>, id: SinkId): Promise<number> {
  const s = SINK[id];
  const out = await ns[s.ns].run([systemTool('nft'), '-j', 'list', 'counter', 'inet', TABLE, s.name]);
  const parsed = JSON.parse(out) as { nftables: Array<{ counter?: { packets: number } }> };
  const c = parsed.nftables.find((x) => x.counter)?.counter;
  if (!c) throw new Error(`nft counter ${s.name} not found in ${ns[s.ns].name}`);
  return c.packets;
}

export interface LinkStats {
  rxPackets: number;
  txPackets: number;
  rxDropped: number;
  txDropped: number;
}

/** Interface counters (ip -s link) of every interface in a namespace, by name. */
export async function readLinks(n: Netns): Promise<Record<string, LinkStats>> {
  type J = Array<{
    ifname: string;
    stats64?: { rx: { packets: number; dropped: number }; tx: { packets: number; dropped: number } };
  }>;
  const links = await n.json<J>(['-s', 'link', 'show']);
  const out: Record<string, LinkStats> = {};
  for (const l of links) {
    if (!l.stats64) continue;
    out[l.ifname] = {
      rxPackets: l.stats64.rx.packets,
      txPackets: l.stats64.tx.packets,
      rxDropped: l.stats64.rx.dropped,
      txDropped: l.stats64.tx.dropped,
    };
  }
  return out;
}

/** UDP counters of a namespace from /proc/net/snmp (RcvbufErrors = datagrams lost to a full socket). */
export async function readUdpSnmp(n: Netns): Promise<Record<string, number>> {
  const text = await n.run(['cat', '/proc/net/snmp']);
  const lines = text.split('\n').filter((l) => l.startsWith('Udp:'));
  if (lines.length < 2) return {};
  const keys = lines[0]!.split(/\s+/).slice(1),
    vals = lines[1]!.split(/\s+/).slice(1).map(Number);
  return Object.fromEntries(keys.map((k, i) => [k, vals[i] ?? 0]));
}

/**
 * The veths whose tx checksum offload decides what a real NIC would not: the generators' (isp isp0 for 6→4, peer
 * eth0 for 4→6) and the router's uplink (rtr wan1, by which 6→4 leaves). With it on, a datagram sent on this host
 * crosses the veth with a partial UDP checksum (CHECKSUM_PARTIAL: the stack vouches for it), which the fast path
 * cannot verify and leaves to the router; and the router keeps 6→4 out of the fast path on an uplink that leaves
 * checksums to the next hop (agent/bpf/fastpath.ts). With it off, the kernel finishes every checksum before the
 * wire, as a NIC does.
 */
export const TX_CSUM_VETHS: ReadonlyArray<{ role: Role; dev: string }> = [
  { role: 'peer', dev: NET.peerIf },
  { role: 'isp', dev: NET.ispIf },
  { role: 'rtr', dev: TOPO.routerWanCIf },
];

/** Turns tx checksum offload of those veths on or off (ethtool -K DEV tx on|off). */
export async function setTxChecksum(ns: Record<Role, Netns>, on: boolean): Promise<void> {
  await Promise.all(
    TX_CSUM_VETHS.map((v) => ns[v.role].run([systemTool('ethtool'), '-K', v.dev, 'tx', on ? 'on' : 'off'])),
  );
}

/** Whether tx checksum offload is on, per veth (ethtool -k). */
export async function txChecksumState(ns: Record<Role, Netns>): Promise<Record<string, boolean>> {
  const out: Record<string, boolean> = {};
  for (const v of TX_CSUM_VETHS) {
    const text = await ns[v.role].run([systemTool('ethtool'), '-k', v.dev]);
    out[`${v.role} ${v.dev}`] = /^tx-checksumming:\s*on/m.test(text);
  }
  return out;
}
