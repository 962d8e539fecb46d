/**
 * A second NAT with a peer D behind it, added to the reference topology
 * (topology.ts) for direct peer-to-peer: the lab's peers A and B share one NAT,
 * which (as most home routers) does not hairpin, so they can only reach each
 * other through the router. D's NAT hangs off the router's second IPv4
 * interface, and the router namespace forwards IPv4 between the two NATs as
 * the Internet would:
 *
 *   [router] wan1 203.0.113.1/24; IPv4 forwarding
 *     | veth wan1 <-> natd:wan0
 *   [natd]   wan0 203.0.113.20/24, default via 203.0.113.1; lan0 100.64.3.1/24; masquerade
 *     | veth lan0 <-> peerd:eth0
 *   [peerD]  eth0 100.64.3.2/24 via 100.64.3.1
 *
 * and the first NAT gets a default route via the router. Both NATs are Linux
 * masquerade: endpoint-independent mapping (the source port is kept while it is
 * free), filtering by endpoint (only what answers a datagram sent out comes
 * in), so a direct path needs both peers to probe (hole punching). Both drop
 * unsolicited datagrams from outside silently, as home routers do: answered
 * (port unreachable), such a datagram would leave a conntrack entry behind
 * that makes the NAT map the peer's own probe to another port, and the
 * address it embeds would no longer be where it comes from.
 */
import { systemTool } from '../agent/host/tools.js';
import { Netns } from './netns.js';
import { veth } from './veth.js';
import { NAT_RULESET, TOPO, type Topology } from './topology.js';

export const NAT_D = {
  routerIf: 'wan1',
  routerV4: '203.0.113.1',
  natWanIf: 'wan0',
  natV4: '203.0.113.20',
  natLanIf: 'lan0',
  natLanV4: '100.64.3.1',
  peerV4: '100.64.3.2',
} as const;

/** Unsolicited UDP from outside is dropped before conntrack confirms an entry for it. */
export const NAT_FIREWALL = `
table ip sixbed4_nat_firewall {
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "${TOPO.natWanIf}" meta l4proto udp ct state new drop
  }
}
`;

export interface SecondNat {
  nat: Netns;
  peer: Netns;
  destroy(): Promise<void>;
}

/** Adds natd and peer D to topo (built with its NAT and without peer C, which uses the same router interface). */
export async function addSecondNat(topo: Topology): Promise<SecondNat> {
  const made: Netns[] = [];
  const destroy = async () => {
    await Promise.all(made.map((ns) => ns.destroy()));
  };
  try {
    const nat = await Netns.create(`${topo.prefix}-natd`);
    made.push(nat);
    const peer = await Netns.create(`${topo.prefix}-pd`);
    made.push(peer);
    await veth(topo.router, NAT_D.routerIf, nat, NAT_D.natWanIf);
    await veth(nat, NAT_D.natLanIf, peer, TOPO.peerIf);
    const len = `/${TOPO.prefixLen}`;
    await Promise.all([
      topo.router.ipBatch([`addr add ${NAT_D.routerV4}${len} dev ${NAT_D.routerIf}`]),
      topo.router.sysctl('net.ipv4.ip_forward', 1),
      topo.nat.ipBatch([`route add default via ${TOPO.routerV4}`]),
      nat.ipBatch([
        `addr add ${NAT_D.natV4}${len} dev ${NAT_D.natWanIf}`,
        `addr add ${NAT_D.natLanV4}${len} dev ${NAT_D.natLanIf}`,
        `route add default via ${NAT_D.routerV4}`,
      ]),
      nat.sysctl('net.ipv4.ip_forward', 1),
      // The lab's own NAT rules: masquerade what comes from 100.64/10 out of wan0.
      nat.run([systemTool('nft'), '-f', '-'], { input: NAT_RULESET + NAT_FIREWALL }),
      topo.nat.run([systemTool('nft'), '-f', '-'], { input: NAT_FIREWALL }),
      peer.ipBatch([
        `addr add ${NAT_D.peerV4}${len} dev ${TOPO.peerIf}`,
        `route add default via ${NAT_D.natLanV4} dev ${TOPO.peerIf}`,
      ]),
    ]);
    return { nat, peer, destroy };
  } catch (err) {
    await destroy();
    throw err;
  }
}
