// ICMPv4 errors the router receives for datagrams it sent to a "peer" that is
// not there (its NAT dropped the mapping; here: a host with nothing on that
// port) become ICMPv6 Destination Unreachable to the IPv6 sender, as the
// draft asks (the stock router has it as a TODO): to a native sender through
// the kernel, and to a peer whose packet was relayed over UDP.
import test from 'ava';
import { buildTopology, TOPO } from '../../lab/topology.js';
import { ping6, scrape, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { makeAddress } from '../../agent/protocol/address.js';
import { formatIPv6, parseIPv4, parsePrefix64 } from '../../lib/ip.js';
import { skipReason, title } from '../helpers/fixtures.js';

const METRICS = '127.0.0.1:9464';
const prefix = parsePrefix64(TOPO.prefix);

(skipReason ? test.skip : test)(
  title('port unreachable from a vanished peer reaches the IPv6 sender as ICMPv6 Destination Unreachable'),
  async (t) => {
    const topo = await buildTopology({ tag: 'icmp4', peerC: true });
    t.teardown(() => topo.destroy());
    await startRouterIn(topo.router, ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4, '--metrics', METRICS]);
    const A = await startPeerIn(topo.peers.A, ['--router', TOPO.routerV4, '--default-route']);
    t.truthy(A.address);
    // Host C runs no peer: its kernel answers datagrams to port 9999 with ICMPv4 port unreachable.
    const gone = formatIPv6(makeAddress(prefix.bytes, parseIPv4(TOPO.peerCV4), 9999, 1));
    const routerAddr = formatIPv6(makeAddress(prefix.bytes, parseIPv4(TOPO.routerV4), 25790, 0));
    const fromIsp = await ping6(topo.isp, gone, { count: 2, interval: 1.1, timeoutS: 1 });
    t.regex(
      fromIsp.output,
      new RegExp(`From ${routerAddr}.*(Port unreachable|Destination unreachable)`, 'i'),
      fromIsp.output,
    );
    const fromPeer = await ping6(topo.peers.A, gone, { count: 2, interval: 1.1, timeoutS: 1 });
    t.regex(
      fromPeer.output,
      new RegExp(`From ${routerAddr}.*(Port unreachable|Destination unreachable)`, 'i'),
      fromPeer.output,
    );
    const m = await scrape(topo.router, METRICS);
    t.true(m.get('sixbed4_router_nd_messages_total{type="icmp4_error"}')! >= 2);
  },
);
