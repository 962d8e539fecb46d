// Our router and our peer, started whole (Router.start, Peer.start) on one FakeIO with no kernel and no root: the
// peer behind a NAT (helpers/fake-nat.ts), `ip` a stand-in that keeps what they configure (helpers/fake-ip.ts).
// What the root e2e tests check with real namespaces (test/e2e/router.test.ts, nat-change.test.ts) is checked here
// on the same code: the peer learns its address from the router's RA, and that address embeds the IPv4:port the
// router saw (the NAT's); data crosses both ways, between the peer's TUN and the router's; and when the NAT forgets
// the mapping, the router tells the peer its new address and both sides use it, the old one gone.
import test, { type ExecutionContext } from 'ava';

import { FakeIO, type FakeTun } from '../../agent/io/fake.js';
import { realRouterParts, Router, routerConfig, type RouterParts } from '../../agent/router/router.js';
import { Peer, peerConfig, type PeerParts } from '../../agent/peer/peer.js';
import { makeAddress } from '../../agent/protocol/address.js';
import { formatIPv6, parseIPv4, parseIPv6, parsePrefix64 } from '../../lib/ip.js';
import { TOPO } from '../../lab/topology.js';
import { FakeIp } from '../helpers/fake-ip.js';
import { NatIO } from '../helpers/fake-nat.js';
import { LogRing, logOnFailure, ringLogger } from '../helpers/logring.js';
import { parseUdp6, udp6, type Udp6 } from '../helpers/packets.js';
import { until } from '../helpers/wait.js';

const PREFIX = parsePrefix64(TOPO.prefix);
/** The NAT's public ports: the first mapping, then the one after it forgot the first. */
const NAT_PORTS = [40000, 40002] as const;
const ISP = parseIPv6(TOPO.ispV6);
const ROUTER_TUN = '6bed4';
const PEER_TUN = '6bed4peer';

/** The peer's address (lanip 1, its default) when the router sees it at the NAT's address and port. */
const behindNat = (port: number) => formatIPv6(makeAddress(PREFIX.bytes, parseIPv4(TOPO.natV4), port, 1));

interface Link {
  io: FakeIO;
  nat: NatIO;
  router: Router;
  peer: Peer;
  routerIp: FakeIp;
  peerIp: FakeIp;
  routerTun: FakeTun;
  peerTun: FakeTun;
}

async function startLink(t: ExecutionContext): Promise<Link> {
  const ring = new LogRing();
  logOnFailure(t, () => ({ 'router and peer': ring.tail() }));
  const io = new FakeIO({ addresses: [TOPO.routerV4, TOPO.natV4, TOPO.peerAV4] });
  const routerIp = new FakeIp(io),
    peerIp = new FakeIp(io);
  const routerParts: RouterParts = {
    ...realRouterParts,
    io,
    ip: routerIp.run,
    privileged: () => true,
    readIpv6Conf: async () => ({ all: { forwarding: '1' } }),
    // FakeIO has no socket filters: the router falls back to the hash over its sockets, which FakeIO does.
    steer: () => {
      throw new Error('no socket filters on FakeIO');
    },
    startProxy: () => Promise.reject(new Error('no neighbour proxy on FakeIO')),
  };
  const router = await Router.start(
    routerConfig({ prefix: TOPO.prefix, listen: TOPO.routerV4, fastPath: 'off' }),
    ringLogger(ring, 'router'),
    routerParts,
  );
  t.teardown(() => router.stop());
  const nat = new NatIO(io, TOPO.natV4, NAT_PORTS);
  const peerParts: PeerParts = {
    io: nat,
    ip: peerIp.run,
    privileged: () => true,
    checkLan: () => Promise.reject(new Error('no LAN on FakeIO')),
    newLan: () => {
      throw new Error('no LAN on FakeIO');
    },
  };
  // A keepalive an hour away: what moves the peer here is its own data, not a timer.
  const peer = await Peer.start(
    peerConfig({ router: TOPO.routerV4, listen: TOPO.peerAV4, defaultRoute: true, keepalive: 3600 }),
    ringLogger(ring, 'peer'),
    peerParts,
  );
  t.teardown(() => peer.stop());
  return { io, nat, router, peer, routerIp, peerIp, routerTun: io.tun(ROUTER_TUN)!, peerTun: io.tun(PEER_TUN)! };
}

/** Takes the first packet written into tun that is a UDP datagram carrying payload (what else came stays). */
async function written(tun: FakeTun, payload: string): Promise<Udp6> {
  const i = await until(`"${payload}" written into ${tun.name}`, () => {
    const k = tun.written.findIndex((p) => parseUdp6(p)?.payload.toString() === payload);
    return k < 0 ? false : k + 1;
  });
  return parseUdp6(tun.written.splice(i - 1, 1)[0]!)!;
}

/** The app on the peer's host sends to the native host (ISP) from address; the peer's kernel routes it into its TUN. */
function fromPeerHost(l: Link, address: string, payload: string): void {
  if (!l.peerTun.inject(udp6(parseIPv6(address), ISP, 5000, 9, Buffer.from(payload))))
    throw new Error("the peer's TUN dropped the packet");
}

/** The native host sends to address; the router's kernel routes the /64 into the router's TUN. */
function fromIsp(l: Link, address: string, payload: string): void {
  if (!l.routerTun.inject(udp6(ISP, parseIPv6(address), 9, 5000, Buffer.from(payload))))
    throw new Error("the router's TUN dropped the packet");
}

/** Both ways through the tunnel at address: the packets arrive whole at the other TUN. */
async function bothWays(t: ExecutionContext, l: Link, address: string, tag: string): Promise<void> {
  fromPeerHost(l, address, `${tag}: to the isp`);
  const out = await written(l.routerTun, `${tag}: to the isp`);
  t.like(out, { src: address, dst: TOPO.ispV6, sport: 5000, dport: 9 }, `${tag}: peer → router → native side`);
  fromIsp(l, address, `${tag}: to the peer`);
  const back = await written(l.peerTun, `${tag}: to the peer`);
  t.like(back, { src: TOPO.ispV6, dst: address, sport: 9, dport: 5000 }, `${tag}: native side → router → peer`);
}

test('a peer behind a NAT gets its address from the router, sends both ways, and moves when the NAT remaps', async (t) => {
  const l = await startLink(t);
  const [fd] = l.nat.sockets();

  // RS → RA: the address embeds where the router saw the peer (the NAT's address and first port), not the peer's own.
  const first = await l.peer.ready;
  t.is(first, behindNat(NAT_PORTS[0]));
  t.is(l.peer.address(), first);
  t.deepEqual(l.peerIp.addresses(PEER_TUN), [`${first}/64`], "the address is on the peer's TUN");
  t.deepEqual(l.peerIp.routes(PEER_TUN), ['default']);
  t.true(
    l.routerIp
      .addresses(ROUTER_TUN)
      .includes(`${formatIPv6(makeAddress(PREFIX.bytes, parseIPv4(TOPO.routerV4), 25790, 0))}/128`),
  );
  await bothWays(t, l, first, 'first mapping');

  // The NAT forgets the mapping. The app still sends from the old address; the router sees it arrive from the new
  // port, refuses it (the originator check) and answers with an RA there; the peer moves.
  t.is(l.nat.remap(fd!), NAT_PORTS[1]);
  fromPeerHost(l, first, 'from the old address');
  // Done moving: a new address, and one address on the TUN (two while it makes before it breaks).
  const moved = await until(
    'the peer at a new address, alone on its TUN',
    () => l.peer.address() !== first && l.peerIp.addresses(PEER_TUN).length === 1 && l.peer.address(),
  );
  t.is(moved, behindNat(NAT_PORTS[1]));
  t.deepEqual(l.peerIp.addresses(PEER_TUN), [`${moved}/64`], 'make before break: the old address is gone');
  t.false(
    l.routerTun.written.some((p) => parseUdp6(p)?.payload.toString() === 'from the old address'),
    'the router refused the datagram whose source no longer matches where it came from',
  );
  t.is((await l.router.counters()).drops.spoofed, 1, 'counted as failing the originator check');
  await bothWays(t, l, moved, 'after the move');

  // To the old address the router sends to the old port, which the NAT closed: only the new one reaches the peer.
  fromIsp(l, first, 'to the old address');
  fromIsp(l, moved, 'to the new address');
  await written(l.peerTun, 'to the new address');
  t.deepEqual(
    l.peerTun.written.map((p) => parseUdp6(p)?.payload.toString()),
    [],
    'nothing else reached the peer',
  );

  await l.peer.stop();
  t.is(l.io.tun(PEER_TUN), undefined, "the peer's TUN is gone with its address");
  await l.router.stop();
  t.is(l.io.tun(ROUTER_TUN), undefined, "the router's TUN is gone");
});
