// The router's forwarding rules, exercised on the pure engine with crafted
// datagrams (the end-to-end tests show the same rules on real sockets).
import test from 'ava';
import fc from 'fast-check';
import { Engine } from '../../agent/router/engine.js';
import { makeAddress } from '../../agent/protocol/address.js';
import { upperChecksum } from '../../agent/protocol/checksum.js';
import { formatIPv6, parseIPv4, parseIPv6, parsePrefix, parsePrefix64 } from '../../lib/ip.js';
import { writeHeader } from '../../agent/protocol/ipv6.js';
import {
  parseRouterAdvert,
  writeNeighborSolicit,
  writeRouterSolicit,
  ROUTER_LINK_LOCAL,
} from '../../agent/protocol/nd.js';
import { DROP_REASONS } from '../../agent/router/counters.js';

const prefix = parsePrefix64('2001:db8:9:10::/64');
const ROUTER_V4 = parseIPv4('198.51.100.1');
const PEER_V4 = parseIPv4('198.51.100.20');
const PEER_PORT = 40000;
const peerAddr = makeAddress(prefix.bytes, PEER_V4, PEER_PORT, 1);
const isp = parseIPv6('2001:db8:ffff::1');

function engine(): Engine {
  return new Engine({ prefix, listenIPv4: ROUTER_V4, port: 25790, routes: [parsePrefix('2001:db8:77::/48')] }, 16);
}

/** Puts datagrams into the engine's UDP receive batch as recvmmsg would. */
function fromPeer(e: Engine, packets: { bytes: Uint8Array; v4?: number; port?: number }[]): void {
  packets.forEach((p, i) => {
    e.udpRx.off[i] = i * e.udpRx.slot;
    e.udpRx.data.set(p.bytes.subarray(0, Math.min(p.bytes.length, e.udpRx.slot)), i * e.udpRx.slot);
    e.udpRx.len[i] = p.bytes.length;
    e.udpRx.addr[i] = p.v4 ?? PEER_V4;
    e.udpRx.port[i] = p.port ?? PEER_PORT;
  });
  e.fromPeers(packets.length, 1000);
}

function fromKernel(e: Engine, packets: Uint8Array[]): void {
  packets.forEach((p, i) => {
    e.tunRx.off[i] = i * e.tunRx.slot;
    e.tunRx.data.set(p, i * e.tunRx.slot);
    e.tunRx.len[i] = p.length;
  });
  e.fromKernel(packets.length, 1000);
}

/** An IPv6/UDP packet (payload content irrelevant to forwarding). */
function packet(src: Uint8Array, dst: Uint8Array, hops = 64, payload = 8): Uint8Array {
  const b = new Uint8Array(40 + payload);
  writeHeader(b, 0, payload, 17, hops, src, dst);
  return b;
}

function rs(): Uint8Array {
  const b = new Uint8Array(64);
  return b.subarray(0, writeRouterSolicit(b, 0));
}

test('RS from a peer behind NAT is answered with an RA carrying its observed /114', (t) => {
  const e = engine();
  fromPeer(e, [{ bytes: rs() }]);
  t.is(e.nUdpReplies, 1);
  const r = e.udpReplies;
  t.is(r.addr[0], PEER_V4);
  t.is(r.port[0], PEER_PORT);
  const ra = parseRouterAdvert(r.data, r.off[0]!, r.len[0]!);
  t.is(formatIPv6(ra!.prefix114), '2001:db8:9:10:c433:6414:9c40:8000');
  t.is(formatIPv6(r.data, r.off[0]! + 24), 'ff02::1', 'RS from :: is answered to all-nodes');
  t.is(e.counters.routerAdverts, 1);
});

test('a peer packet to the Internet goes to the kernel with the hop limit decremented, not copied', (t) => {
  const e = engine();
  fromPeer(e, [{ bytes: packet(peerAddr, isp, 64) }]);
  t.is(e.nToTun, 1);
  t.is(e.toTun.data, e.udpRx.data);
  t.is(e.toTun.data[e.toTun.off[0]! + 7], 63);
  t.is(e.counters.udpToTunPackets, 1);
});

test('spoofed sources are dropped; inside the prefix the peer is told its real /114', (t) => {
  const e = engine();
  const other = makeAddress(prefix.bytes, PEER_V4, PEER_PORT + 1, 1); // right IPv4, wrong port
  fromPeer(e, [{ bytes: packet(other, isp) }, { bytes: packet(parseIPv6('2001:db8:ffff::99'), isp) }]);
  t.is(e.nToTun, 0);
  t.is(e.counters.drops.spoofed, 2);
  t.is(e.nUdpReplies, 1, 'only the in-prefix source gets an RA');
  const r = e.udpReplies;
  t.is(formatIPv6(r.data, r.off[0]! + 24), 'ff02::1', 'to all-nodes, which stock peers accept');
  t.is(formatIPv6(parseRouterAdvert(r.data, r.off[0]!, r.len[0]!)!.prefix114), '2001:db8:9:10:c433:6414:9c40:8000');
});

test('peer to peer: relayed over UDP to the IPv4:port inside the destination', (t) => {
  const e = engine();
  const dst = makeAddress(prefix.bytes, parseIPv4('203.0.113.2'), 51000, 1);
  fromPeer(e, [{ bytes: packet(peerAddr, dst, 10) }]);
  t.is(e.nRelay, 1);
  t.is(e.nToTun, 0);
  t.is(e.relay.addr[0], parseIPv4('203.0.113.2'));
  t.is(e.relay.port[0], 51000);
  t.is(e.relay.data[e.relay.off[0]! + 7], 9);
});

test("port-0 destinations and the router's own address go to the kernel", (t) => {
  const e = engine();
  fromPeer(e, [
    { bytes: packet(peerAddr, parseIPv6('2001:db8:9:10::11')) },
    { bytes: packet(peerAddr, parseIPv6('2001:db8:9:10:1:2:0:5')) },
    { bytes: packet(peerAddr, e.routerAddress) },
  ]);
  t.is(e.nToTun, 3);
  t.is(e.nRelay, 0);
});

test('relays to loopback, multicast, broadcast or other ports of the router are refused', (t) => {
  const e = engine();
  const to = (v4: string, port: number) => ({
    bytes: packet(peerAddr, makeAddress(prefix.bytes, parseIPv4(v4), port, 1)),
  });
  fromPeer(e, [
    to('127.0.0.1', 53),
    to('224.0.0.1', 9),
    to('255.255.255.255', 9),
    to('0.0.0.0', 9),
    to('198.51.100.1', 22),
  ]);
  t.is(e.nRelay, 0);
  t.is(e.nToTun, 0);
  t.is(e.counters.drops.bad_destination, 5);
});

test('hop limit 1 from a peer: dropped and answered with Time Exceeded from the router', (t) => {
  const e = engine();
  fromPeer(e, [{ bytes: packet(peerAddr, isp, 1) }]);
  t.is(e.nToTun, 0);
  t.is(e.counters.drops.hop_limit, 1);
  t.is(e.nUdpReplies, 1);
  const r = e.udpReplies,
    o = r.off[0]!;
  t.is(r.data[o + 40], 3);
  t.is(formatIPv6(r.data, o + 8), formatIPv6(e.routerAddress));
  t.is(formatIPv6(r.data, o + 24), formatIPv6(peerAddr));
  t.is(upperChecksum(r.data, o, 58, o + 40, r.len[0]! - 40), 0);
});

test('malformed datagrams are dropped and counted by reason; keepalives are silent', (t) => {
  const e = engine();
  const v4 = new Uint8Array(60);
  v4[0] = 0x45;
  const truncated = packet(peerAddr, isp, 64, 100).subarray(0, 90);
  const big = new Uint8Array(1300);
  writeHeader(big, 0, 1260, 17, 64, peerAddr, isp);
  const mcast = packet(peerAddr, parseIPv6('ff02::1'));
  fromPeer(e, [
    { bytes: new Uint8Array(0) },
    { bytes: new Uint8Array(20) },
    { bytes: v4 },
    { bytes: truncated },
    { bytes: big },
    { bytes: mcast },
  ]);
  t.is(e.nToTun + e.nRelay + e.nUdpReplies, 0);
  t.is(e.counters.keepalives, 1);
  t.like(e.counters.drops, { short: 1, not_ipv6: 1, bad_length: 1, oversize: 1, multicast: 1 });
});

test('NS for the router gets an NA; NS for anyone else does not', (t) => {
  const e = engine();
  const ns = (target: Uint8Array) => {
    const b = new Uint8Array(100);
    return b.subarray(0, writeNeighborSolicit(b, 0, peerAddr, ROUTER_LINK_LOCAL, target));
  };
  fromPeer(e, [{ bytes: ns(ROUTER_LINK_LOCAL) }, { bytes: ns(e.routerAddress) }, { bytes: ns(isp) }]);
  t.is(e.nUdpReplies, 2);
  t.is(e.counters.drops.ns_foreign_target, 1);
  t.is(formatIPv6(e.udpReplies.data, e.udpReplies.off[0]! + 48), formatIPv6(e.routerAddress));
});

test('RA replies are rate limited per source', (t) => {
  const e = engine();
  fromPeer(
    e,
    Array.from({ length: 16 }, () => ({ bytes: rs() })),
  );
  t.is(e.nUdpReplies, 8);
  t.is(e.counters.drops.rate_limited, 8);
  fromPeer(e, [{ bytes: rs(), v4: parseIPv4('203.0.113.9') }]);
  t.is(e.nUdpReplies, 1, 'another source is not starved');
});

test('from the kernel: to the peer inside the destination; outside the prefix, port 0 and multicast dropped', (t) => {
  const e = engine();
  fromKernel(e, [
    packet(isp, peerAddr, 60),
    packet(isp, parseIPv6('2001:db8:9:11::1')),
    packet(isp, parseIPv6('2001:db8:9:10::11')),
    packet(isp, parseIPv6('ff02::1')),
  ]);
  t.is(e.nToPeers, 1);
  t.is(e.toPeers.addr[0], PEER_V4);
  t.is(e.toPeers.port[0], PEER_PORT);
  t.is(e.toPeers.data[e.toPeers.off[0]! + 7], 59);
  t.like(e.counters.drops, { outside_prefix: 1, not_a_peer: 1, multicast: 1 });
});

test('from the kernel with hop limit 1: Time Exceeded back into the kernel', (t) => {
  const e = engine();
  fromKernel(e, [packet(isp, peerAddr, 1)]);
  t.is(e.nToPeers, 0);
  t.is(e.nTunReplies, 1);
  const r = e.tunReplies,
    o = r.off[0]!;
  t.is(formatIPv6(r.data, o + 24), '2001:db8:ffff::1');
  t.is(r.data[o + 40], 3);
});

test('property: any datagram is accounted for exactly once and nothing throws', (t) => {
  fc.assert(
    fc.property(
      fc.array(
        fc.oneof(
          fc.uint8Array({ maxLength: 1400 }),
          fc
            .tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.nat(200))
            .map(([hops, dst, n]) => {
              const p = packet(peerAddr, dst, hops, n);
              return p;
            }),
        ),
        { maxLength: 16 },
      ),
      fc.integer({ min: 0, max: 0xffffffff }),
      (dgrams, v4) => {
        const e = engine();
        fromPeer(
          e,
          dgrams.map((bytes) => ({ bytes, v4 })),
        );
        const c = e.counters;
        // rate_limited, reply_refused and tx_dropped count replies and sends, not received datagrams.
        const notReceived = new Set<string>(['rate_limited', 'reply_refused', 'error_for_error', 'tx_dropped']);
        const drops = DROP_REASONS.reduce((s, r) => s + (notReceived.has(r) ? 0 : c.drops[r]), 0);
        const outcomes =
          c.udpToTunPackets + c.relayPackets + c.keepalives + c.routerSolicits + c.neighborSolicits + drops;
        return (
          outcomes === dgrams.length &&
          c.udpRxPackets === dgrams.length &&
          e.nToTun === c.udpToTunPackets &&
          e.nRelay === c.relayPackets
        );
      },
    ),
  );
  t.pass();
});

test("link-local sources: NS only, and only with the sender's IPv4:port in the interface id (as the stock router)", (t) => {
  const e = engine();
  const ll = Uint8Array.from(peerAddr);
  ll.set([0xfe, 0x80, 0, 0, 0, 0, 0, 0], 0);
  const other = parseIPv6('fe80::1');
  const ns = (src: Uint8Array) => {
    const b = new Uint8Array(100);
    return b.subarray(0, writeNeighborSolicit(b, 0, src, ROUTER_LINK_LOCAL, ROUTER_LINK_LOCAL));
  };
  fromPeer(e, [{ bytes: ns(ll) }, { bytes: ns(other) }, { bytes: packet(ll, isp) }]);
  t.is(e.nUdpReplies, 1, 'the matching link-local NS is answered');
  t.is(e.counters.drops.spoofed, 2, 'a foreign link-local NS and a non-ND link-local packet are not');
  t.is(e.nToTun, 0);
});

test("from the kernel: nothing is sent to the router's own IPv4 (its local services), whatever the port", (t) => {
  const e = engine();
  fromKernel(e, [
    packet(isp, makeAddress(prefix.bytes, ROUTER_V4, 22, 1)),
    packet(isp, makeAddress(prefix.bytes, ROUTER_V4, 25790, 1)),
  ]);
  t.is(e.nToPeers, 0);
  t.is(e.counters.drops.bad_destination, 2);
});

test('UDP source port 0 is never a peer: no RA, no forwarding, no relay, not tracked live', (t) => {
  const e = engine();
  // Port-0 addresses (prefix:v4:0000:…) are the host's own and its slices; a sender at IPv4 X must not use them.
  const local = makeAddress(prefix.bytes, PEER_V4, 0, 0x11);
  const peerB = makeAddress(prefix.bytes, parseIPv4('203.0.113.2'), 51000, 1);
  fromPeer(e, [
    { bytes: rs(), port: 0 },
    { bytes: packet(local, isp), port: 0 },
    { bytes: packet(local, peerB), port: 0 },
    { bytes: new Uint8Array(0), port: 0 },
  ]);
  t.is(e.nToTun + e.nRelay + e.nUdpReplies, 0);
  t.is(e.counters.drops.source_port_zero, 4);
  t.is(e.live.size, 0);
  t.deepEqual(e.newPeers(), []);
});

test("from the kernel: sources that are peers' 6bed4 addresses are spoofed; port-0 sources and the router's own ICMPv6 pass", (t) => {
  const e = engine();
  const peerB = makeAddress(prefix.bytes, parseIPv4('203.0.113.2'), 51000, 1);
  const icmp = (src: Uint8Array) => {
    const b = packet(src, peerAddr);
    b[6] = 58;
    return b;
  };
  fromKernel(e, [
    packet(peerB, peerAddr), // another peer's address, arrived from the Internet
    packet(e.routerAddress, peerAddr), // the router's own address on UDP: nothing the kernel sends
    icmp(e.routerAddress), // the kernel's echo reply or error from the router's address
    packet(parseIPv6('2001:db8:9:10::11'), peerAddr), // a server of the host (port word 0)
  ]);
  t.is(e.counters.drops.spoofed_from_kernel, 2);
  t.is(e.nToPeers, 2);
});

test('an RS does not make a peer live (nothing in it can be checked); its first checked packet does', (t) => {
  const e = engine();
  fromPeer(
    e,
    Array.from({ length: 8 }, (_, i) => ({ bytes: rs(), port: 1000 + i })),
  );
  t.is(e.live.size, 0);
  fromPeer(e, [{ bytes: packet(peerAddr, isp) }]);
  t.is(e.live.size, 1);
});

test('no Time Exceeded about an ICMPv6 error, also behind extension headers; other packets behind them are answered', (t) => {
  const e = engine();
  // hop-by-hop (8 bytes) → destination options (8 bytes) → ICMPv6 type 1 (Destination Unreachable).
  const chained = (upper: number, type: number) => {
    const b = packet(peerAddr, isp, 1, 24);
    b[6] = 0;
    b[40] = 60;
    b[41] = 0;
    b[48] = upper;
    b[49] = 0;
    b[56] = type;
    return b;
  };
  fromPeer(e, [{ bytes: chained(58, 1) }, { bytes: chained(58, 128) }, { bytes: chained(17, 0) }]);
  t.is(e.counters.drops.hop_limit, 3);
  t.is(e.counters.drops.error_for_error, 1);
  t.is(e.nUdpReplies, 2, 'the echo request and the UDP packet get their Time Exceeded');
});

test('an RA that answers a changed NAT mapping withdraws the old /114 with zero lifetimes (as the draft asks)', (t) => {
  const e = engine();
  const old = makeAddress(prefix.bytes, PEER_V4, PEER_PORT, 1); // the address of the old mapping
  fromPeer(e, [{ bytes: packet(old, isp), port: PEER_PORT + 2 }]); // now arriving from a new port
  t.is(e.nUdpReplies, 1);
  const r = e.udpReplies,
    o = r.off[0]!;
  const ra = parseRouterAdvert(r.data, o, r.len[0]!)!;
  t.is(
    formatIPv6(ra.prefix114),
    formatIPv6(makeAddress(prefix.bytes, PEER_V4, PEER_PORT + 2, 0)),
    'the new /114 comes first: peers take it',
  );
  t.is(ra.validLifetime, 0xffffffff);
  const opt = o + 40 + 16 + 32; // the second prefix option
  t.is(r.data[opt], 3);
  t.is(r.data[opt + 2], 114);
  t.is(formatIPv6(r.data, opt + 16), formatIPv6(makeAddress(prefix.bytes, PEER_V4, PEER_PORT, 0)));
  t.is(r.data.readUInt32BE(opt + 4), 0, 'valid lifetime 0');
  t.is(r.data.readUInt32BE(opt + 8), 0, 'preferred lifetime 0');
  t.is(upperChecksum(r.data, o, 58, o + 40, r.len[0]! - 40), 0);
  // A source with port word 0 is no peer's old mapping: nothing is withdrawn for it.
  const e2 = engine();
  fromPeer(e2, [{ bytes: packet(makeAddress(prefix.bytes, PEER_V4, 0, 0x11), isp) }]);
  t.is(e2.udpReplies.len[0], 88);
});

test('ICMPv4 port unreachable about a datagram sent to a peer: ICMPv6 Destination Unreachable to its sender; forged quotes ignored', (t) => {
  const e = engine();
  const gone = makeAddress(prefix.bytes, parseIPv4('203.0.113.2'), 9999, 1);
  const put = (i: number, bytes: Uint8Array, v4: number, port: number, info: number) => {
    e.icmpRx.off[i] = i * e.icmpRx.slot;
    e.icmpRx.data.set(bytes, i * e.icmpRx.slot);
    e.icmpRx.len[i] = bytes.length;
    e.icmpRx.addr[i] = v4;
    e.icmpRx.port[i] = port;
    e.icmpInfo[i] = info;
  };
  put(0, packet(isp, gone), parseIPv4('203.0.113.2'), 9999, (3 << 8) | 3); // native sender → into the kernel
  put(1, packet(peerAddr, gone), parseIPv4('203.0.113.2'), 9999, (3 << 8) | 3); // relayed from a peer → over UDP
  put(2, packet(isp, gone), parseIPv4('203.0.113.9'), 9999, (3 << 8) | 3); // quote not about that IPv4:port
  put(3, packet(isp, gone), parseIPv4('203.0.113.2'), 9999, (11 << 8) | 0); // Time Exceeded: not translated
  e.fromIcmpErrors(4, 1000);
  t.is(e.counters.icmp4Errors, 4);
  t.is(e.counters.drops.icmp4_unmatched, 2);
  t.is(e.nTunReplies, 1);
  t.is(e.nUdpReplies, 1);
  const k = e.tunReplies,
    o = k.off[0]!;
  t.is(k.data[o + 40], 1);
  t.is(k.data[o + 41], 4, 'port unreachable');
  t.is(formatIPv6(k.data, o + 8), formatIPv6(e.routerAddress));
  t.is(formatIPv6(k.data, o + 24), formatIPv6(isp));
  t.is(e.udpReplies.addr[0], PEER_V4);
  t.is(e.udpReplies.port[0], PEER_PORT);
  t.is(upperChecksum(k.data, o, 58, o + 40, k.len[0]! - 40), 0);
});
