// The router with several forwarding threads: each has its own TUN queue
// (IFF_MULTI_QUEUE) and SO_REUSEPORT socket; forwarding and metrics must be
// the same as with one.
import test from 'ava';
import { buildTopology, TOPO } from '../../lab/topology.js';
import { ping6, scrape, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { skipReason, title, forwarded } from '../helpers/fixtures.js';

(skipReason ? test.skip : test)(
  title('two workers forward in every direction, and metrics add up across them'),
  async (t) => {
    const topo = await buildTopology({ tag: 'wrk', peerC: true });
    t.teardown(() => topo.destroy());
    const router = await startRouterIn(topo.router, [
      '--prefix',
      TOPO.prefix,
      '--listen',
      TOPO.routerV4,
      '--workers',
      '2',
      '--metrics',
      '127.0.0.1:9464',
      '--stats-interval',
      '1',
    ]);
    t.regex(router.output(), /workers=2/);
    const queues = await topo.router.run(['sh', '-c', 'ls /sys/class/net/6bed4/queues | grep -c rx-']);
    t.is(queues.trim(), '2', 'the tunnel has two queues');
    const [a, c] = await Promise.all([
      startPeerIn(topo.peers.A, ['--router', TOPO.routerV4, '--default-route']),
      startPeerIn(topo.peers.C, ['--router', TOPO.routerV4, '--default-route']),
    ]);
    const results = await Promise.all([
      ping6(topo.peers.A, TOPO.ispV6, { count: 5 }),
      ping6(topo.isp, c.address, { count: 5 }),
      ping6(topo.peers.C, a.address, { count: 5 }),
    ]);
    for (const r of results) t.is(r.received, 5, r.output);
    const m = await scrape(topo.router, '127.0.0.1:9464');
    t.true(forwarded(m, 'udp_to_tun') >= 5);
    t.true(forwarded(m, 'tun_to_udp') >= 10);
    t.is(forwarded(m, 'relay'), 10);
    t.is(m.get('sixbed4_router_nd_messages_total{type="rs"}'), 2);
    t.is(m.get('sixbed4_router_live_peers'), 2, 'A (via the NAT) and C, summed over the workers');
    // While traffic flows the router logs a statistics line each interval (no line per packet).
    const flowing = ping6(topo.peers.C, TOPO.ispV6, { count: 15, interval: 0.2 });
    t.regex(await router.waitFor(/ forwarding .*peersToKernelPps=\d+.*livePeers=2/, 10_000), /drops=/);
    t.is((await flowing).received, 15);
    t.is(await router.stop(), 0);
    t.regex(router.output(), /router stopped; tunnel removed .*relayed=10/);
    const links = await topo.router.json<{ ifname: string }[]>(['link', 'show']);
    t.false(links.some((l) => l.ifname === '6bed4'));
  },
);
