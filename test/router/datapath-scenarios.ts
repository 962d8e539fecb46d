// What the datapath tests do and what they expect, once for both backends:
// drive() runs on a Rig (fake in the test process, real in a namespace child)
// and returns plain observations (JSON, so they cross the process boundary);
// check() holds them to the same assertions wherever they came from.
import type { ExecutionContext } from 'ava';

import {
  ROUTER_LINK_LOCAL,
  parseRouterAdvert,
  writeNeighborSolicit,
  writeRouterSolicit,
} from '../../agent/protocol/nd.js';
import { formatIPv6, parseIPv6 } from '../../lib/ip.js';
import { writeHeader } from '../../agent/protocol/ipv6.js';
import { upperChecksum } from '../../agent/protocol/checksum.js';
import type { CountersSnapshot } from '../../agent/router/counters.js';
import { parseUdp6, udp6 } from '../helpers/packets.js';
import { NET, routerAddress, sixbed4, until, type Datagram, type Rig } from './datapath-rig.js';

export interface Scenario<O = unknown> {
  name: string;
  title: string;
  drive(rig: Rig): Promise<O>;
  check(t: ExecutionContext, o: O): void;
}

const scenario = <O>(s: Scenario<O>) => s as unknown as Scenario;
const text = (b: Uint8Array) => formatIPv6(b);
const bytes = (s: string) => Buffer.from(s);
const ROUTER = `${NET.router.v4}:${NET.router.port}`;

/** A datagram from the router as observations: who sent it and the IPv6/UDP packet inside. */
function udpFromRouter(d: Datagram) {
  const u = parseUdp6(d.bytes);
  return { from: d.from, packet: u && { ...u, payload: u.payload.toString() } };
}

/** A packet the router forwarded to a peer, and the counters after it. */
type Forwarded = { got: ReturnType<typeof udpFromRouter>; counters: CountersSnapshot };

/** A 48-byte IPv6/UDP packet from src (no checksum: the router forwards nothing of it). */
function bare(src: Uint8Array, dst: Uint8Array): Uint8Array {
  const b = new Uint8Array(48);
  writeHeader(b, 0, 8, 17, 64, src, dst);
  return b;
}

function rs(): Uint8Array {
  const b = new Uint8Array(64);
  return b.subarray(0, writeRouterSolicit(b, 0));
}

export const SCENARIOS: Scenario[] = [
  scenario({
    name: 'peer-to-kernel',
    title: "a peer's packet to the Internet reaches the native host through the tunnel",
    async drive(rig) {
      const a = rig.peer(NET.A);
      a.send(udp6(a.address, parseIPv6(NET.isp), 4242, NET.ispPort, bytes('from peer A')));
      const got = await rig.host.next();
      return { got, counters: rig.engine.snapshot() };
    },
    check(t, o: { got: { src: string; sport: number; payload: string }; counters: CountersSnapshot }) {
      t.deepEqual(o.got, { src: text(sixbed4(NET.A)), sport: 4242, payload: 'from peer A' });
      t.is(o.counters.udpToTunPackets, 1);
      t.is(o.counters.relayPackets, 0);
    },
  }),
  scenario({
    name: 'kernel-to-peer',
    title: "a native host's packet to a peer's address reaches the peer over UDP, hop limit decremented",
    async drive(rig) {
      const a = rig.peer(NET.A);
      await rig.host.send(a.address, 4243, bytes('from the Internet'));
      const d = await a.next();
      // The host's own datagram: where the TUN offers checksum offload, the kernel left its checksum to the router.
      const sum = upperChecksum(d.bytes, 0, 17, 40, d.bytes.length - 40);
      return { got: udpFromRouter(d), counters: rig.engine.snapshot(), checksumRight: sum === 0 };
    },
    check(t, o: Forwarded & { checksumRight: boolean }) {
      t.is(o.got.from, ROUTER, "from the router's socket");
      t.true(o.checksumRight, 'its UDP checksum is right');
      t.like(o.got.packet, {
        src: NET.isp,
        dst: text(sixbed4(NET.A)),
        sport: NET.ispPort,
        dport: 4243,
        hops: 63,
        payload: 'from the Internet',
      });
      t.is(o.counters.tunToUdpPackets, 1);
    },
  }),
  scenario({
    name: 'relay',
    title: 'peer to peer: relayed over UDP to the IPv4:port inside the destination, the kernel untouched',
    async drive(rig) {
      const a = rig.peer(NET.A),
        b = rig.peer(NET.B);
      a.send(udp6(a.address, b.address, 5000, 5001, bytes('A to B'), 10));
      return { got: udpFromRouter(await b.next()), counters: rig.engine.snapshot() };
    },
    check(t, o: Forwarded) {
      t.is(o.got.from, ROUTER);
      t.like(o.got.packet, { src: text(sixbed4(NET.A)), dst: text(sixbed4(NET.B)), hops: 9, payload: 'A to B' });
      t.is(o.counters.relayPackets, 1);
      t.is(o.counters.udpToTunPackets, 0);
    },
  }),
  scenario({
    name: 'rs-ra',
    title: "a Router Solicitation is answered with an RA carrying the sender's /114",
    async drive(rig) {
      const a = rig.peer(NET.A);
      a.send(rs());
      const d = await a.next();
      const ra = parseRouterAdvert(d.bytes, 0, d.bytes.length);
      return {
        from: d.from,
        dst: text(d.bytes.subarray(24, 40)),
        prefix114: ra && text(ra.prefix114),
        counters: rig.engine.snapshot(),
      };
    },
    check(t, o: { from: string; dst: string; prefix114: string | null; counters: CountersSnapshot }) {
      t.is(o.from, ROUTER);
      t.is(o.prefix114, text(sixbed4(NET.A, 0)));
      t.is(o.dst, 'ff02::1', 'an RS from :: is answered to all-nodes');
      t.like(o.counters, { routerSolicits: 1, routerAdverts: 1 });
    },
  }),
  scenario({
    name: 'ns-na',
    title: 'a Neighbour Solicitation for the router is answered with a Neighbour Advertisement',
    async drive(rig) {
      const a = rig.peer(NET.A);
      const ns = new Uint8Array(72);
      a.send(ns.subarray(0, writeNeighborSolicit(ns, 0, a.address, ROUTER_LINK_LOCAL, ROUTER_LINK_LOCAL)));
      const d = (await a.next()).bytes;
      return {
        type: d[40],
        src: text(d.subarray(8, 24)),
        dst: text(d.subarray(24, 40)),
        target: text(d.subarray(48, 64)),
        counters: rig.engine.snapshot(),
      };
    },
    check(t, o: { type: number; src: string; dst: string; target: string; counters: CountersSnapshot }) {
      t.deepEqual(
        { type: o.type, src: o.src, dst: o.dst, target: o.target },
        { type: 136, src: 'fe80::', dst: text(sixbed4(NET.A)), target: text(routerAddress()) },
      );
      t.like(o.counters, { neighborSolicits: 1, neighborAdverts: 1 });
    },
  }),
  scenario({
    name: 'spoofed',
    title: 'spoofed sources are dropped and counted; inside the prefix the sender is told its real /114',
    async drive(rig) {
      const b = rig.peer(NET.B);
      // Outside the prefix first: had it been answered, that reply would come before the RA.
      b.send(bare(parseIPv6('2001:db8:ffff::66'), parseIPv6(NET.isp)), bare(sixbed4(NET.A), parseIPv6(NET.isp)));
      const first = await b.next();
      await until(() => rig.engine.counters.drops.spoofed >= 2, 'both spoofed packets counted');
      const ra = parseRouterAdvert(first.bytes, 0, first.bytes.length);
      return {
        prefix114: ra && text(ra.prefix114),
        dst: text(first.bytes.subarray(24, 40)),
        more: b.pending().length,
        counters: rig.engine.snapshot(),
      };
    },
    check(t, o: { prefix114: string | null; dst: string; more: number; counters: CountersSnapshot }) {
      t.is(o.prefix114, text(sixbed4(NET.B, 0)), "the RA names the /114 of the sender's own IPv4:port");
      t.is(o.dst, 'ff02::1');
      t.is(o.more, 0, 'the source outside the prefix is dropped without a word');
      t.is(o.counters.drops.spoofed, 2);
      t.is(o.counters.udpToTunPackets + o.counters.relayPackets, 0, 'nothing forwarded');
    },
  }),
  scenario({
    name: 'icmp-error',
    title: 'ICMPv4 port unreachable on the error queue reaches the relaying peer as ICMPv6 Destination Unreachable',
    async drive(rig) {
      const a = rig.peer(NET.A);
      a.send(udp6(a.address, sixbed4(NET.vanished), 5000, 5001, bytes('anyone there?')));
      const d = (await a.next()).bytes;
      return {
        nh: d[6],
        type: d[40],
        code: d[41],
        src: text(d.subarray(8, 24)),
        dst: text(d.subarray(24, 40)),
        quotedDst: d.length >= 88 ? text(d.subarray(72, 88)) : null,
        counters: rig.engine.snapshot(),
      };
    },
    check(
      t,
      o: {
        nh: number;
        type: number;
        code: number;
        src: string;
        dst: string;
        quotedDst: string | null;
        counters: CountersSnapshot;
      },
    ) {
      t.deepEqual({ nh: o.nh, type: o.type, code: o.code }, { nh: 58, type: 1, code: 4 }, 'ICMPv6 port unreachable');
      t.is(o.src, text(routerAddress()));
      t.is(o.dst, text(sixbed4(NET.A)));
      t.is(o.quotedDst, text(sixbed4(NET.vanished)), 'it quotes the packet that was relayed');
      t.like(o.counters, { relayPackets: 1, icmp4Errors: 1, icmpErrors: 1 });
    },
  }),
  scenario({
    name: 'tx-dropped',
    title: 'a relay the kernel refuses (no route) counts as tx_dropped, and the rest of the batch still goes',
    async drive(rig) {
      const a = rig.peer(NET.A),
        b = rig.peer(NET.B);
      a.send(
        udp6(a.address, sixbed4(NET.unroutable), 5000, 5001, bytes('nowhere')),
        udp6(a.address, b.address, 5000, 5001, bytes('to B')),
      );
      const got = udpFromRouter(await b.next());
      await until(() => rig.engine.counters.drops.tx_dropped >= 1, 'tx_dropped counted');
      return { got, counters: rig.engine.snapshot() };
    },
    check(t, o: Forwarded) {
      t.is(o.got.packet?.payload, 'to B');
      t.is(o.counters.relayPackets, 2);
      t.is(o.counters.drops.tx_dropped, 1);
    },
  }),
];
