// A peer whose router goes away and comes back: while the router is down, the peer's keepalives meet a closed
// port and ICMP Port Unreachable comes back through the NAT into the peer's socket. When a router listens again
// (a restart, a node reboot), the peer is reached at the same address: 6bed4 is stateless on the router's side,
// and the peer must not have stopped reading its socket because of the errors in between.
import test from 'ava';
import { buildTopology, TOPO } from '../../lab/topology.js';
import { ping6, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { skipReason } from '../helpers/fixtures.js';

(skipReason ? test.skip : test)(
  `a restarted router reaches its peer at the same address, after ICMP errors reached the peer${skipReason ? ` (skipped: ${skipReason})` : ''}`,
  async (t) => {
    const topo = await buildTopology({ tag: 'rtrrestart' });
    t.teardown(() => topo.destroy());
    const args = ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4];
    const first = await startRouterIn(topo.router, args);
    // Keepalives every second, so that several meet the closed port while the router is away.
    const peer = await startPeerIn(topo.peers.A, ['--router', TOPO.routerV4, '--default-route', '--keepalive', '1']);
    const before = await ping6(topo.isp, peer.address, { count: 2 });
    t.is(before.received, 2, before.output);
    await first.stop();
    // The router's port is closed: each keepalive gets an ICMP Port Unreachable, which the NAT relays to the peer.
    const unreachable = await topo.router.exec(['sh', '-c', 'sleep 4; nstat -az IcmpOutDestUnreachs']);
    t.regex(
      unreachable.stdout,
      /IcmpOutDestUnreachs\s+[1-9]/,
      `the node sent Port Unreachable to the peer's keepalives:\n${unreachable.stdout}`,
    );
    await startRouterIn(topo.router, args);
    const after = await ping6(topo.isp, peer.address, { count: 3 });
    t.is(after.received, 3, `${after.output}\n${peer.proc.output().split('\n').slice(-10).join('\n')}`);
    const out = await ping6(topo.peers.A, TOPO.ispV6, { count: 3 });
    t.is(out.received, 3, out.output);
  },
);
