// A router behind a 1:1 NAT, as on a cloud VM: peers send to the public address (--listen), the host only has its
// private one (--bind). The lab's NAT namespace plays the cloud's NAT: it sends 203.0.113.77:25790 to the router's
// 198.51.100.1 (DNAT) and the replies back from 203.0.113.77. The router's identity, its 6bed4 address, embeds the
// public address; peers accept its datagrams, which reach them from the public address.
import test from 'ava';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import { systemTool } from '../../agent/host/tools.js';
import { ping6, spawnSixbed4, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { addressIPv4, makeAddress } from '../../agent/protocol/address.js';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6, parsePrefix64 } from '../../lib/ip.js';
import { skipReason, title } from '../helpers/fixtures.js';

const PUBLIC = '203.0.113.77';
const serial = skipReason ? test.serial.skip : test.serial;
let topo: Topology;

test.before(async () => {
  if (skipReason) return;
  topo = await buildTopology({ tag: 'bind' });
  await topo.nat.run([systemTool('nft'), '-f', '-'], {
    input: `table ip sixbed4_cloud {\n  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    ip daddr ${PUBLIC} udp dport 25790 dnat to ${TOPO.routerV4}\n  }\n}\n`,
  });
});

test.after.always(async () => {
  await topo?.destroy();
});

serial(title('--listen PUBLIC without --bind on a host that lacks it: refused, one line, exit 2'), async (t) => {
  const p = spawnSixbed4(topo.router, ['router', '--prefix', TOPO.prefix, '--listen', PUBLIC]);
  t.is((await p.exited).code, 2);
  t.regex(
    p.output(),
    /203\.0\.113\.77 is not an address of this host: --listen \(or --bind, behind a 1:1 NAT\) must be one of its IPv4 addresses/,
  );
});

serial(
  title(
    '--listen PUBLIC --bind PRIVATE: peers reach the router at the public address and get addresses; pings both ways',
  ),
  async (t) => {
    const router = await startRouterIn(topo.router, [
      '--prefix',
      TOPO.prefix,
      '--listen',
      PUBLIC,
      '--bind',
      TOPO.routerV4,
    ]);
    t.regex(router.output(), /router ready.*bind.*198\.51\.100\.1/);
    const routerAddr = formatIPv6(makeAddress(parsePrefix64(TOPO.prefix).bytes, parseIPv4(PUBLIC), 25790, 0));
    const links = await topo.router.json<{ addr_info: { local: string }[] }[]>(['-6', 'addr', 'show', 'dev', '6bed4']);
    t.true(
      links[0]!.addr_info.some((a) => a.local === routerAddr),
      `the router's own address embeds ${PUBLIC}`,
    );
    const peer = await startPeerIn(topo.peers.A, ['--router', PUBLIC, '--default-route']);
    t.is(
      formatIPv4(addressIPv4(parseIPv6(peer.address), 0)),
      TOPO.natV4,
      "the peer's address embeds its public mapping",
    );
    for (const [from, to] of [
      [topo.peers.A, TOPO.ispV6],
      [topo.isp, peer.address],
    ] as const) {
      const r = await ping6(from, to, { count: 3 });
      t.is(r.received, 3, r.output);
    }
    await peer.proc.stop();
    await router.stop();
  },
);
