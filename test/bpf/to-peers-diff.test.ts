// The fast path for packets the kernel routes to peers against the TypeScript
// engine (the authority): the same crafted and random IPv6 packets go through
// the to-peers program in the kernel (BPF_PROG_TEST_RUN: nothing is sent; a
// test run always gives an Ethernet header, which the TUN never has, so the
// program is told it runs a test) and through Engine.fromKernel. The program
// must send exactly the packets the engine sends whose outer checksum it can
// derive from the inner one, as the datagram the router's socket would send;
// everything else it must leave untouched for the router.
import test from 'ava';
import fc from 'fast-check';
import {
  FastPathPrograms,
  TO_PEERS_VERDICTS,
  TC_ACT_REDIRECT,
  TC_ACT_UNSPEC,
  type ToPeersVerdict,
} from '../../agent/bpf/programs.js';
import { makeAddress } from '../../agent/protocol/address.js';
import { parseIPv4, parseIPv6 } from '../../lib/ip.js';
import { writeHeader } from '../../agent/protocol/ipv6.js';
import { fillChecksum } from '../../agent/protocol/checksum.js';
import { ETH, frame } from '../helpers/frames.js';
import { HOP, isp, newEngine, PORT, prefix, programs, rootTest, ROUTER, SECOND_NIC, skip, t_, TTL } from './setup.js';

const PEER = parseIPv4('203.0.113.20');
const PEER_PORT = 40000;
const peerAddr = makeAddress(prefix.bytes, PEER, PEER_PORT, 1);
const NH = { tcp: 6, udp: 17, icmpv6: 58 } as const;

const engine = newEngine();

let prog: FastPathPrograms | undefined;
test.before(() => {
  if (!skip) prog = programs();
});
test.after.always(() => prog?.close());

/** What the engine does with a packet from the kernel: the datagram it sends to a peer, or none. */
function engineVerdict(p: Uint8Array): { bytes: Uint8Array; v4: number; port: number } | null {
  const rx = engine.tunRx;
  rx.off[0] = 0;
  rx.len[0] = p.length;
  rx.data.set(p.subarray(0, Math.min(p.length, rx.slot)), 0);
  engine.fromKernel(1, 1000);
  if (!engine.nToPeers) return null;
  const o = engine.toPeers;
  return {
    bytes: Uint8Array.from(o.data.subarray(o.off[0]!, o.off[0]! + o.len[0]!)),
    v4: o.addr[0]!,
    port: o.port[0]!,
  };
}

function run(p: Uint8Array): { verdict: ToPeersVerdict; retval: number; out: Uint8Array; frame: Uint8Array } {
  const f = new Uint8Array(ETH + p.length);
  f[12] = 0x86;
  f[13] = 0xdd;
  f.set(p, ETH);
  const before = prog!.counters().toPeers;
  const { retval, out } = prog!.run('toPeers', f);
  const after = prog!.counters().toPeers;
  const moved = TO_PEERS_VERDICTS.filter((v) => after[v].packets !== before[v].packets);
  if (moved.length !== 1) throw new Error(`expected one counter to move, got ${moved.join(', ') || 'none'}`);
  return { verdict: moved[0]!, retval, out, frame: f };
}

/**
 * Whether the program takes a packet the engine sends: its outer checksum can be derived (TCP, UDP with a checksum,
 * or ICMPv6, right after the header), and its source is not a port-carrying address of the /64 (from there only
 * the router's own ICMPv6 may go out, which the router decides).
 */
function forFastPath(p: Uint8Array): boolean {
  const nh = p[6],
    len = p.length - 40;
  const srcInPrefix =
    Buffer.from(p.subarray(8, 16)).equals(Buffer.from(prefix.bytes.subarray(0, 8))) && (p[20]! | p[21]!) !== 0;
  return (
    !srcInPrefix &&
    ((nh === NH.tcp && len >= 20) ||
      (nh === NH.icmpv6 && len >= 4) ||
      (nh === NH.udp && len >= 8 && (p[46]! | p[47]!) !== 0))
  );
}

type Asserts = {
  is: (a: unknown, b: unknown, m?: string) => void;
  deepEqual: (a: unknown, b: unknown, m?: string) => void;
  true: (a: boolean, m?: string) => void;
};

/**
 * The property: sent iff the engine sends it, the packet is exactly its payload length and forFastPath says so;
 * then the frame is the datagram the router's socket would send. With a wrong inner checksum (innerOk false) the
 * outer checksum is the one for the packet with its inner checksum right: the receiver drops it either way.
 */
function check(t: Asserts, p: Uint8Array, innerOk = true): ToPeersVerdict {
  const r = run(p);
  const e = engineVerdict(p);
  if (e && e.bytes.length === p.length && forFastPath(p)) {
    t.is(r.verdict, 'fast', 'the engine sends it, so the fast path does');
    t.is(r.retval, TC_ACT_REDIRECT);
    let want = frame(ROUTER, PORT, e.v4, e.port, e.bytes, { id: 0, ttl: TTL, ...HOP });
    if (!innerOk) {
      const fixed = Uint8Array.from(e.bytes),
        at = { 6: 16, 17: 6, 58: 2 }[fixed[6]!]!;
      fillChecksum(fixed, 0, fixed[6]!, 40, fixed.length - 40, at);
      const right = frame(ROUTER, PORT, e.v4, e.port, fixed, { id: 0, ttl: TTL, ...HOP });
      want = Uint8Array.from(want);
      want.set(right.subarray(40, 42), 40); // the outer UDP checksum
    }
    t.deepEqual(Buffer.from(r.out), Buffer.from(want), "the datagram the router's socket would send, to the next hop");
  } else {
    t.true(r.verdict !== 'fast', `not for the fast path (${r.verdict})`);
    t.is(r.retval, TC_ACT_UNSPEC);
    t.deepEqual(Buffer.from(r.out), Buffer.from(r.frame), 'left unchanged for the router');
  }
  return r.verdict;
}

/** An IPv6 packet src -> dst with an upper layer of protocol nh and n bytes, its checksum right. */
function packet(
  src: Uint8Array,
  dst: Uint8Array,
  o: { nh?: number; n?: number; hops?: number; type?: number; plen?: number } = {},
): Uint8Array {
  const nh = o.nh ?? NH.icmpv6,
    n = o.n ?? 24;
  const b = new Uint8Array(40 + n);
  writeHeader(b, 0, o.plen ?? n, nh, o.hops ?? 64, src, dst);
  for (let i = 40; i < b.length; i++) b[i] = (i * 7) & 0xff;
  if (nh === NH.icmpv6 && n >= 4) {
    b[40] = o.type ?? 128;
    b[41] = 0;
    fillChecksum(b, 0, nh, 40, n, 2);
  }
  if (nh === NH.udp && n >= 8) {
    b[44] = n >> 8;
    b[45] = n & 0xff;
    fillChecksum(b, 0, nh, 40, n, 6);
  }
  if (nh === NH.tcp && n >= 20) fillChecksum(b, 0, nh, 40, n, 16);
  return b;
}

interface Case {
  name: string;
  p: Uint8Array;
  want: ToPeersVerdict;
}
const toPeer = (lanip = 1) => makeAddress(prefix.bytes, PEER, PEER_PORT, lanip);
const CASES: Case[] = [
  { name: 'an echo request from the Internet to a peer', p: packet(isp, peerAddr), want: 'fast' },
  { name: 'a TCP segment to a peer', p: packet(isp, peerAddr, { nh: NH.tcp, n: 100 }), want: 'fast' },
  {
    name: 'a UDP datagram to another lanip of the peer',
    p: packet(isp, toPeer(77), { nh: NH.udp, n: 33 }),
    want: 'fast',
  },
  { name: 'the largest packet, 1280 bytes', p: packet(isp, peerAddr, { nh: NH.udp, n: 1240 }), want: 'fast' },
  { name: 'hop limit 2 (leaves with 1)', p: packet(isp, peerAddr, { hops: 2 }), want: 'fast' },
  {
    name: 'from a local (port-0) address of the /64',
    p: packet(makeAddress(prefix.bytes, ROUTER, 0, 5), peerAddr),
    want: 'fast',
  },
  {
    name: 'UDP without checksum (not valid over IPv6)',
    p: (() => {
      const b = packet(isp, peerAddr, { nh: NH.udp });
      b[46] = b[47] = 0;
      return b;
    })(),
    want: 'no_shortcut',
  },
  { name: 'an extension header (hop-by-hop)', p: packet(isp, peerAddr, { nh: 0 }), want: 'no_shortcut' },
  { name: 'no next header', p: packet(isp, peerAddr, { nh: 59 }), want: 'no_shortcut' },
  { name: 'a TCP header cut short', p: packet(isp, peerAddr, { nh: NH.tcp, n: 12 }), want: 'no_shortcut' },
  { name: 'longer than 1280', p: packet(isp, peerAddr, { nh: NH.udp, n: 1241 }), want: 'oversize' },
  // (Shorter than an IPv6 header: a test run refuses such a frame, and the kernel never routes one.)
  {
    name: 'version 4',
    p: (() => {
      const b = packet(isp, peerAddr);
      b[0] = 0x45;
      return b;
    })(),
    want: 'not_ipv6',
  },
  { name: 'payload length past the packet', p: packet(isp, peerAddr, { plen: 25 }), want: 'bad_length' },
  { name: 'bytes after the payload length', p: packet(isp, peerAddr, { plen: 16 }), want: 'bad_length' },
  { name: 'a Neighbour Solicitation', p: packet(isp, peerAddr, { type: 135 }), want: 'nd' },
  { name: 'a Router Advertisement', p: packet(isp, peerAddr, { type: 134 }), want: 'nd' },
  { name: 'multicast', p: packet(isp, parseIPv6('ff0e::1')), want: 'multicast' },
  { name: 'outside the /64', p: packet(isp, parseIPv6('2001:db8:ffff::2')), want: 'outside_prefix' },
  { name: 'a local (port-0) destination', p: packet(isp, makeAddress(prefix.bytes, ROUTER, 0, 5)), want: 'not_a_peer' },
  {
    name: 'a peer address on another network of the host',
    p: packet(isp, makeAddress(prefix.bytes, SECOND_NIC, 5000, 1)),
    want: 'bad_destination',
  },
  {
    name: "a peer address on the router's IPv4",
    p: packet(isp, makeAddress(prefix.bytes, ROUTER, 22, 1)),
    want: 'bad_destination',
  },
  {
    name: 'a loopback peer address',
    p: packet(isp, makeAddress(prefix.bytes, parseIPv4('127.0.0.1'), 5000, 1)),
    want: 'bad_destination',
  },
  {
    name: "from another peer's address (the router decides)",
    p: packet(makeAddress(prefix.bytes, parseIPv4('203.0.113.99'), 7000, 1), peerAddr),
    want: 'source_in_prefix',
  },
  {
    name: "from the router's own address (its ICMPv6)",
    p: packet(makeAddress(prefix.bytes, ROUTER, PORT, 0), peerAddr, { type: 129 }),
    want: 'source_in_prefix',
  },
  { name: 'hop limit 1 (the router answers)', p: packet(isp, peerAddr, { hops: 1 }), want: 'hop_limit' },
];

for (const c of CASES) {
  rootTest(t_(`${c.name}: ${c.want}`), (t) => {
    t.is(check(t, c.p), c.want);
  });
}

rootTest(
  t_('random packets: the fast path sends exactly what the engine sends (where the shortcut applies), byte for byte'),
  (t) => {
    const arb = fc.record({
      src: fc.constantFrom('isp', 'local', 'peer', 'router', 'random'),
      dst: fc.constantFrom('peer', 'lanip', 'refused', 'router', 'local', 'outside', 'multicast', 'random'),
      random: fc.uint8Array({ minLength: 16, maxLength: 16 }),
      port: fc.constantFrom(0, 1, PEER_PORT, 65535),
      nh: fc.constantFrom(6, 17, 58, 58, 0, 44, 59),
      type: fc.integer({ min: 128, max: 140 }),
      n: fc.integer({ min: 0, max: 1250 }),
      hops: fc.constantFrom(0, 1, 2, 64, 255),
      plenDelta: fc.constantFrom(0, 0, 0, -1, 1),
      version: fc.constantFrom(6, 6, 6, 4),
      corrupt: fc.constantFrom(false, false, false, true),
    });
    fc.assert(
      fc.property(arb, (a) => {
        const src = {
          isp,
          local: makeAddress(prefix.bytes, ROUTER, 0, 3),
          peer: makeAddress(prefix.bytes, PEER, a.port, 1),
          router: makeAddress(prefix.bytes, ROUTER, PORT, 0),
          random: a.random,
        }[a.src];
        const dst = {
          peer: makeAddress(prefix.bytes, PEER, a.port, 1),
          lanip: makeAddress(prefix.bytes, parseIPv4('198.51.100.77'), a.port, 9000),
          refused: makeAddress(prefix.bytes, SECOND_NIC, a.port, 1),
          router: makeAddress(prefix.bytes, ROUTER, PORT, 0),
          local: makeAddress(prefix.bytes, ROUTER, 0, 4),
          outside: isp,
          multicast: parseIPv6('ff02::1'),
          random: a.random,
        }[a.dst];
        const p = packet(src, dst, {
          nh: a.nh,
          n: a.n,
          hops: a.hops,
          type: a.type,
          plen: Math.max(0, a.n + a.plenDelta),
        });
        p[0] = (a.version << 4) | (p[0]! & 0x0f);
        if (a.corrupt && p.length > 41) p[p.length - 1] ^= 0x5a;
        check(t, p, !(a.corrupt && p.length > 41));
      }),
      { numRuns: 1000 },
    );
  },
);

rootTest(t_('off: without F_TO_PEERS nothing is sent, nothing counted'), (t) => {
  const p2 = programs(0);
  try {
    const f = new Uint8Array(ETH + 64);
    f[12] = 0x86;
    f[13] = 0xdd;
    f.set(packet(isp, peerAddr), ETH);
    const r = p2.run('toPeers', f);
    t.is(r.retval, TC_ACT_UNSPEC);
    t.deepEqual(Buffer.from(r.out), Buffer.from(f));
    t.true(Object.values(p2.counters().toPeers).every((c) => c.packets === 0));
  } finally {
    p2.close();
  }
});
