// The data plane end to end on real kernel networking: our router in the
// reference topology (ISP with native IPv6, NAT with two peers behind it, one
// peer directly on the router's IPv4), real TUN devices, real UDP, real ping.
import test from 'ava';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import type { Proc } from '../../lab/proc.js';
import { ping6, scrape, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { addressIPv4, addressLanip, addressPort, makeAddress } from '../../agent/protocol/address.js';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6, parsePrefix64 } from '../../lib/ip.js';
import { writeHeader } from '../../agent/protocol/ipv6.js';
import { parseRouterAdvert } from '../../agent/protocol/nd.js';
import { diff, drops, exchange, skipReason, title, forwarded } from '../helpers/fixtures.js';

interface Lab {
  topo: Topology;
  router: Proc;
  peers: Record<'A' | 'B' | 'C', { proc: Proc; address: string }>;
}
// Shared by the serial tests below (ava gives each test a copy of t.context, so a
// router restarted in one test would be invisible to the next).
const lab = {} as Lab;
const serial = skipReason ? test.serial.skip : test.serial;
const METRICS = '127.0.0.1:9464';
const ROUTER_ARGS = ['--prefix', TOPO.prefix, '--listen', TOPO.routerV4, '--metrics', METRICS];
const prefix = parsePrefix64(TOPO.prefix);

test.before(async () => {
  if (skipReason) return;
  const topo = await buildTopology({ tag: 'e2e', peerC: true });
  lab.topo = topo;
  const router = await startRouterIn(topo.router, ROUTER_ARGS);
  const [A, B, C] = await Promise.all([
    startPeerIn(topo.peers.A, ['--router', TOPO.routerV4, '--default-route']),
    startPeerIn(topo.peers.B, ['--router', TOPO.routerV4, '--default-route']),
    startPeerIn(topo.peers.C, ['--router', TOPO.routerV4, '--default-route']),
  ]);
  Object.assign(lab, { router, peers: { A, B, C } });
});

test.after.always(async () => {
  await lab.topo?.destroy();
});

serial(title("a peer behind NAT gets the address of its public mapping, as seen on the router's wire"), async (t) => {
  const { topo, peers } = lab;
  const a = parseIPv6(peers.A.address);
  t.is(formatIPv4(addressIPv4(a, 0)), TOPO.natV4, "the NAT's public IPv4, not the peer's 100.64.1.2");
  const port = addressPort(a, 0);
  t.is(addressLanip(a, 0), 1, 'stock peers and ours use lanip 1');
  // Capture what the NAT puts on the wire to the router with exactly that source port while A sends: at the NAT's
  // end, since with the fast path the router's end taps its datagrams after the XDP stage decapsulated them.
  const cap = topo.nat.spawn([
    'tcpdump',
    '-n',
    '-l',
    '-i',
    TOPO.natWanIf,
    '-c',
    '1',
    `udp and src host ${TOPO.natV4} and src port ${port} and dst port 25790`,
  ]);
  await cap.waitFor(/listening on/, 5000);
  const p = await ping6(topo.peers.A, TOPO.ispV6, { count: 2 });
  t.is(p.received, 2);
  const line = await cap.waitFor(
    new RegExp(`${TOPO.natV4.replace(/\./g, '\\.')}\\.${port} > ${TOPO.routerV4.replace(/\./g, '\\.')}\\.25790`),
    5000,
  );
  t.truthy(line);
  await cap.stop();
  t.not(peers.A.address, peers.B.address, 'two peers behind one NAT get different addresses');
  t.is(formatIPv4(addressIPv4(parseIPv6(peers.C.address), 0)), TOPO.peerCV4, 'a direct peer embeds its own IPv4');
});

serial(
  title('pings: peer to the native Internet, the Internet to peers, peer to peer (relayed without the kernel)'),
  async (t) => {
    const { topo, peers } = lab;
    const before = await scrape(topo.router, METRICS);
    const results = await Promise.all([
      ping6(topo.peers.A, TOPO.ispV6),
      ping6(topo.isp, peers.A.address),
      ping6(topo.isp, peers.C.address),
      ping6(topo.peers.A, peers.B.address),
      ping6(topo.peers.C, peers.A.address),
    ]);
    for (const r of results) t.is(r.received, r.sent, r.output);
    const after = await scrape(topo.router, METRICS);
    const relayed = forwarded(after, 'relay') - forwarded(before, 'relay');
    t.is(relayed, 12, 'A<->B and C<->A: 3 requests + 3 replies each, all relayed over UDP');
  },
);

serial(title("hop limit 1 from a peer: Time Exceeded comes back from the router's 6bed4 address"), async (t) => {
  const { topo } = lab;
  const routerAddr = formatIPv6(makeAddress(prefix.bytes, parseIPv4(TOPO.routerV4), 25790, 0));
  const r = await ping6(topo.peers.A, TOPO.ispV6, { count: 1, hops: 1 });
  t.regex(r.output, new RegExp(`From ${routerAddr}.*Time exceeded`), r.output);
});

serial(title('hop limit running out towards a peer: Time Exceeded back to the native sender'), async (t) => {
  const { topo, peers } = lab;
  // isp sends with 2: the router host's kernel makes it 1, our router refuses to forward it.
  const r = await ping6(topo.isp, peers.A.address, { count: 1, hops: 2 });
  t.regex(r.output, /Time exceeded/, r.output);
  t.is(r.received, 0);
});

serial(
  title("spoofed sources are dropped and counted; inside the prefix they are answered with the sender's real /114"),
  async (t) => {
    const { topo, peers } = lab;
    const before = await drops(topo.router, METRICS);
    const pkt = (src: Uint8Array) => {
      const b = new Uint8Array(48);
      writeHeader(b, 0, 8, 17, 64, src, parseIPv6(TOPO.ispV6));
      return b;
    };
    // Peer C claims A's address (inside the prefix) ...
    const x = await exchange(topo.peers.C, TOPO.routerV4, 25790, [pkt(parseIPv6(peers.A.address))]);
    t.is(x.replies.length, 1);
    const ra = parseRouterAdvert(x.replies[0]!.bytes, 0, x.replies[0]!.bytes.length);
    t.truthy(ra, 'the reply is a Router Advertisement');
    t.is(formatIPv6(x.replies[0]!.bytes, 24), 'ff02::1', 'sent to all-nodes, which stock peers accept');
    t.is(
      formatIPv6(ra!.prefix114),
      formatIPv6(makeAddress(prefix.bytes, parseIPv4(TOPO.peerCV4), x.local, 0)),
      'the RA tells the sender the /114 of its own IPv4:port',
    );
    // ... and an address outside the prefix: dropped without a word.
    const y = await exchange(topo.peers.C, TOPO.routerV4, 25790, [pkt(parseIPv6('2001:db8:ffff::66'))]);
    t.is(y.replies.length, 0);
    // Only this test's own drops are asserted: late packets of earlier tests may still be counted meanwhile.
    t.is(diff(await drops(topo.router, METRICS), before).spoofed, 2);
  },
);

serial(
  title('multicast, short, oversize and non-IPv6 datagrams are dropped by reason; keepalives are ignored'),
  async (t) => {
    const { topo } = lab;
    const before = await drops(topo.router, METRICS);
    const m0 = await scrape(topo.router, METRICS);
    const local = parseIPv4(TOPO.peerCV4);
    // The sender's port is not known before it binds, so the multicast probe uses a source that
    // fails no check before the multicast rule: the multicast rule comes before the originator check.
    const mcast = new Uint8Array(48);
    writeHeader(mcast, 0, 8, 17, 64, makeAddress(prefix.bytes, local, 1, 1), parseIPv6('ff0e::1'));
    const big = new Uint8Array(1320);
    writeHeader(big, 0, 1280, 17, 64, makeAddress(prefix.bytes, local, 1, 1), parseIPv6(TOPO.ispV6));
    const v4 = new Uint8Array(60);
    v4[0] = 0x45;
    const x = await exchange(topo.peers.C, TOPO.routerV4, 25790, [
      new Uint8Array(0),
      new Uint8Array(30),
      v4,
      big,
      mcast,
    ]);
    t.is(x.replies.length, 0);
    t.like(diff(await drops(topo.router, METRICS), before), { short: 1, not_ipv6: 1, oversize: 1, multicast: 1 });
    const m1 = await scrape(topo.router, METRICS);
    t.true(m1.get('sixbed4_router_keepalives_total')! - m0.get('sixbed4_router_keepalives_total')! >= 1);
  },
);

serial(title('a router restart leaves every peer address unchanged (stateless) and traffic resumes'), async (t) => {
  const { topo, peers } = lab;
  t.is(await lab.router.stop(), 0, 'router exits 0 on SIGTERM');
  lab.router = await startRouterIn(topo.router, ROUTER_ARGS);
  for (const id of ['A', 'B', 'C'] as const) {
    const r = await ping6(topo.isp, peers[id].address, { count: 2 });
    t.is(r.received, 2, `isp reaches peer ${id} at its old address`);
    t.notRegex(peers[id].proc.output(), /address moved/);
  }
  const r = await ping6(topo.peers.A, peers.B.address, { count: 2 });
  t.is(r.received, 2);
});

serial(title('stopping router and peer removes their interfaces and routes'), async (t) => {
  const { topo, peers } = lab;
  t.is(await lab.router.stop(), 0);
  t.regex(lab.router.output(), /router stopped; tunnel removed/);
  const links = await topo.router.json<{ ifname: string }[]>(['link', 'show']);
  t.false(links.some((l) => l.ifname === '6bed4'));
  const routes = await topo.router.json<{ dst: string }[]>(['-6', 'route', 'show']);
  t.false(routes.some((r) => r.dst === TOPO.prefix));
  t.is(await peers.A.proc.stop(), 0);
  const peerLinks = await topo.peers.A.json<{ ifname: string }[]>(['link', 'show']);
  t.false(peerLinks.some((l) => l.ifname === '6bed4peer'));
});
