// The failover lab: member nodes on one layer-2 segment with the provider's router, peers behind a NAT.
//
//   [prv]  br0 198.51.100.254/24, 2001:db8:ffff::1/64 (the provider's router and the ISP's IPv6 end);
//          2001:db8:9:10::/64 via the group's next hop 2001:db8:ffff::100 (upstream RoutedNextHop), or on-link on br0
//          (upstream OnLink: a neighbour entry per peer address, answered by the active member's neighbour proxy);
//          wan 203.0.113.1/24 towards the NAT. Ports p-<node> of br0 lead to the nodes; a bridge-family nftables
//          table counts, per port, ARP replies for the floating address and NAs (who answered).
//   [node] eth0 198.51.100.1<i>/24, 2001:db8:ffff::1<i>/64, default routes via prv. The floating address
//          198.51.100.100 and the next hop belong to no node: the active member's agent puts them on its macvlan.
//   [nat]  wan0 203.0.113.20/24, lanA 100.64.1.1/24, masquerade;  [peer] eth0 100.64.1.2/24.
import { systemTool } from '../../agent/host/tools.js';
import { Netns, uniqueName } from '../../lab/netns.js';
import { veth } from '../../lab/veth.js';
import { nicLike } from '../../lab/fast-path.js';

export const SEG = {
  prefix: '2001:db8:9:10::/64',
  floating: '198.51.100.100',
  nextHop: '2001:db8:ffff::100',
  providerV4: '198.51.100.254',
  providerV6: '2001:db8:ffff::1',
  natWan: '203.0.113.20',
  virtualRouterId: 42,
  vmac: '00:00:5e:00:01:2a',
} as const;

export interface Segment {
  prv: Netns;
  nat: Netns;
  peer: Netns;
  nodes: Netns[];
  nodeV4(i: number): string;
  /**
   * Node i's addresses and routes as its network configuration has them (a link that went down lost its IPv6
   * addresses and every route through it: this is what a node's netplan or NetworkManager puts back).
   */
  restoreNode(i: number): Promise<void>;
  /** The bridge port towards node i. */
  port(i: number): string;
  /** ARP replies for the floating address and NAs that came in from each node since the last reset. */
  answers(): Promise<{ arp: number[]; na: number[] }>;
  resetAnswers(): Promise<void>;
  destroy(): Promise<void>;
}

/** upstream: how prv reaches the /64: routed to the group's next hop, or on-link on br0 (a neighbour entry per peer). */
export async function buildSegment(
  tag: string,
  opts: { nodes?: number; upstream?: 'RoutedNextHop' | 'OnLink' } = {},
): Promise<Segment> {
  const nodeCount = opts.nodes ?? 2;
  const base = uniqueName(tag);
  const made: Netns[] = [];
  const make = async (s: string) => {
    const ns = await Netns.create(`${base}-${s}`);
    made.push(ns);
    return ns;
  };
  try {
    const prv = await make('prv');
    const nat = await make('nat');
    const peer = await make('peer');
    const nodes: Netns[] = [];
    for (let i = 1; i <= nodeCount; i++) nodes.push(await make(`n${i}`));
    await prv.ipBatch(['link add br0 type bridge', 'link set br0 up', 'link set lo up']);
    await prv.sysctl('net.ipv4.ip_forward', 1);
    await prv.sysctl('net.ipv6.conf.all.forwarding', 1);
    for (const [i, n] of nodes.entries()) {
      await veth(prv, `p-n${i + 1}`, n, 'eth0');
      await prv.ip(['link', 'set', `p-n${i + 1}`, 'master', 'br0']);
      await n.ipBatch([
        'link set lo up',
        `addr add 198.51.100.1${i + 1}/24 dev eth0`,
        `route add default via ${SEG.providerV4}`,
        `addr add 2001:db8:ffff::1${i + 1}/64 dev eth0 nodad`,
        `route add default via ${SEG.providerV6}`,
      ]);
    }
    await prv.ipBatch([`addr add ${SEG.providerV4}/24 dev br0`, `addr add ${SEG.providerV6}/64 dev br0 nodad`]);
    await prv.ip(
      opts.upstream === 'OnLink'
        ? ['-6', 'route', 'add', SEG.prefix, 'dev', 'br0']
        : ['-6', 'route', 'add', SEG.prefix, 'via', SEG.nextHop, 'dev', 'br0'],
    );
    await veth(prv, 'wan', nat, 'wan0');
    await veth(nat, 'lanA', peer, 'eth0');
    await prv.ip(['addr', 'add', '203.0.113.1/24', 'dev', 'wan']);
    await nat.ipBatch([
      'link set lo up',
      `addr add ${SEG.natWan}/24 dev wan0`,
      'route add default via 203.0.113.1',
      'addr add 100.64.1.1/24 dev lanA',
    ]);
    await nat.sysctl('net.ipv4.ip_forward', 1);
    // The peers' datagrams leave the NAT with their checksums finished, as a NIC would send them (a veth hands them on
    // unfinished, and the fast path leaves those to the router).
    await nicLike(nat, 'wan0');
    await nat.run([systemTool('nft'), '-f', '-'], {
      input:
        'table ip nat {\n  chain post {\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname "wan0" ip saddr 100.64.0.0/10 masquerade\n  }\n}\n',
    });
    await peer.ipBatch(['link set lo up', 'addr add 100.64.1.2/24 dev eth0', 'route add default via 100.64.1.1']);
    const counters = nodes
      .map(
        (_, i) =>
          `    iifname "p-n${i + 1}" arp operation reply arp saddr ip ${SEG.floating} counter name arp${i + 1}\n` +
          `    iifname "p-n${i + 1}" icmpv6 type nd-neighbor-advert counter name na${i + 1}\n`,
      )
      .join('');
    const named = nodes.map((_, i) => `  counter arp${i + 1} {\n  }\n  counter na${i + 1} {\n  }\n`).join('');
    await prv.run([systemTool('nft'), '-f', '-'], {
      input: `table bridge answers {\n${named}  chain forwarded {\n    type filter hook forward priority 0; policy accept;\n${counters}  }\n  chain tohost {\n    type filter hook input priority 0; policy accept;\n${counters}  }\n}\n`,
    });
    const read = async (name: string) => {
      const out = JSON.parse(
        await prv.run([systemTool('nft'), '-j', 'list', 'counter', 'bridge', 'answers', name]),
      ) as { nftables: { counter?: { packets: number } }[] };
      return out.nftables.find((x) => x.counter)?.counter?.packets ?? 0;
    };
    return {
      prv,
      nat,
      peer,
      nodes,
      nodeV4: (i) => `198.51.100.1${i + 1}`,
      async restoreNode(i) {
        await nodes[i]!.ipBatch([
          `addr replace 2001:db8:ffff::1${i + 1}/64 dev eth0 nodad`,
          `route replace default via ${SEG.providerV4}`,
          `route replace default via ${SEG.providerV6}`,
        ]);
      },
      port: (i) => `p-n${i + 1}`,
      async answers() {
        return {
          arp: await Promise.all(nodes.map((_, i) => read(`arp${i + 1}`))),
          na: await Promise.all(nodes.map((_, i) => read(`na${i + 1}`))),
        };
      },
      async resetAnswers() {
        await prv.run([systemTool('nft'), 'reset', 'counters', 'table', 'bridge', 'answers']);
      },
      async destroy() {
        await Promise.all(made.map((ns) => ns.destroy()));
      },
    };
  } catch (err) {
    await Promise.all(made.map((ns) => ns.destroy()));
    throw err;
  }
}
