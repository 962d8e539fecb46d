// The reference topology with Kubernetes nodes in place of the router host: the ISP's link is a bridge that the
// nodes, and the NAT with its peers, all hang on.
//
//   [isp]   br0: fe80::1, 2001:db8:ffff::1/64, 198.51.100.254/24; routes each node's /64 via that node's fe80::1N
//           (and forwards between them)
//     | bridge ports n1, n2, nat
//   [n1]    eth0: fe80::11, 2001:db8:ffff::11/64, 198.51.100.11/24 (InternalIP); default via fe80::1
//           lo: 192.0.2.1/32 (the `kubernetes` Service, relayed to the API server); cni0: pods 100.64.101.0/24
//   [n2]    the same with 12 / 100.64.102.0/24
//   [nat]   wan0 198.51.100.20/24; lanA 100.64.1.1/24, lanB 100.64.2.1/24; masquerades 100.64.0.0/10
//   [pa] [pb]  peers A and B (100.64.1.2, 100.64.2.2) behind the NAT
//
// Only documentation and shared address space; no namespace has a route out of the machine.
import { systemTool } from '../../agent/host/tools.js';
import { Netns, uniqueName } from '../../lab/netns.js';
import { veth } from '../../lab/veth.js';
import { NAT_RULESET, TOPO } from '../../lab/topology.js';

/** The `kubernetes` Service's range (its first address is the ClusterIP the kubelet gives pods). */
export const SERVICE_RANGE = '192.0.2.0/24';
export const API_SERVICE_IP = '192.0.2.1';

export interface LabNode {
  name: string;
  ns: Netns;
  v4: string;
  v6: string;
  ll: string;
  podCidr: string;
}

export interface NodeLab {
  isp: Netns;
  nat: Netns;
  peers: { A: Netns; B: Netns };
  nodes: LabNode[];
  /** Routes a node's /64 to it at the ISP (what the provider does once told which /64 goes where). */
  routeAtIsp(prefix64: string, node: LabNode): Promise<void>;
  destroy(): Promise<void>;
}

export async function buildNodeLab(tag: string, nodeNames: string[]): Promise<NodeLab> {
  const prefix = uniqueName(tag);
  const created: Netns[] = [];
  const make = async (suffix: string) => {
    const ns = await Netns.create(`${prefix}-${suffix}`);
    created.push(ns);
    return ns;
  };
  const destroy = async () => {
    await Promise.all(created.map((ns) => ns.destroy()));
  };
  try {
    const isp = await make('isp');
    const nat = await make('nat');
    const A = await make('pa');
    const B = await make('pb');
    const nodes: LabNode[] = [];
    for (const [i, name] of nodeNames.entries()) {
      const n = 11 + i;
      nodes.push({
        name,
        ns: await make(`n${i + 1}`),
        v4: `198.51.100.${n}`,
        v6: `2001:db8:ffff::${n}`,
        ll: `fe80::${n}`,
        podCidr: `100.64.${101 + i}.0/24`,
      });
    }

    await isp.ipBatch(['link add br0 type bridge', 'link set br0 up']);
    for (const [i, node] of nodes.entries()) await veth(isp, `n${i + 1}`, node.ns, 'eth0');
    await veth(isp, 'nat', nat, TOPO.natWanIf);
    await isp.ipBatch([
      ...nodes.map((_, i) => `link set n${i + 1} master br0`),
      'link set nat master br0',
      `addr add ${TOPO.ispLL}/64 dev br0 nodad`,
      `addr add ${TOPO.ispV6}/64 dev br0 nodad`,
      'addr add 198.51.100.254/24 dev br0',
    ]);
    // The ISP routes between its customers: a peer of one node reaches a peer of the other through it.
    await isp.sysctl('net.ipv6.conf.all.forwarding', 1);
    for (const node of nodes) {
      await node.ns.ipBatch([
        `addr add ${node.ll}/64 dev eth0 nodad`,
        `addr add ${node.v6}/64 dev eth0 nodad`,
        `addr add ${node.v4}/24 dev eth0`,
        `route add ::/0 via ${TOPO.ispLL} dev eth0`,
        `addr add ${API_SERVICE_IP}/32 dev lo`,
      ]);
    }

    await veth(nat, TOPO.natLanAIf, A, TOPO.peerIf);
    await veth(nat, TOPO.natLanBIf, B, TOPO.peerIf);
    await nat.ipBatch([
      `addr add ${TOPO.natV4}/24 dev ${TOPO.natWanIf}`,
      `addr add ${TOPO.natLanAV4}/24 dev ${TOPO.natLanAIf}`,
      `addr add ${TOPO.natLanBV4}/24 dev ${TOPO.natLanBIf}`,
    ]);
    await nat.sysctl('net.ipv4.ip_forward', 1);
    await nat.run([systemTool('nft'), '-f', '-'], { input: NAT_RULESET });
    await A.ipBatch([
      `addr add ${TOPO.peerAV4}/24 dev ${TOPO.peerIf}`,
      `route add default via ${TOPO.natLanAV4} dev ${TOPO.peerIf}`,
    ]);
    await B.ipBatch([
      `addr add ${TOPO.peerBV4}/24 dev ${TOPO.peerIf}`,
      `route add default via ${TOPO.natLanBV4} dev ${TOPO.peerIf}`,
    ]);

    return {
      isp,
      nat,
      peers: { A, B },
      nodes,
      destroy,
      async routeAtIsp(prefix64, node) {
        await isp.ip(['-6', 'route', 'replace', prefix64, 'via', node.ll, 'dev', 'br0']);
      },
    };
  } catch (e) {
    await destroy();
    throw e;
  }
}
