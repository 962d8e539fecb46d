// The fast path for peers' datagrams against the TypeScript engine (the
// authority): the same crafted and random datagrams go through the from-peers
// program in the kernel (BPF_PROG_TEST_RUN: nothing is sent) and through
// Engine.fromPeers. The program must take exactly the packets the engine hands
// to the kernel or relays (when the datagram is exactly the packet, and for
// relays carries a UDP checksum to update), and leave the same bytes: the
// decapsulated packet, or the datagram the router's socket would send;
// everything else it must leave untouched for the router.
//
// Each frame goes through from-peers' XDP stage too: it must decapsulate exactly
// the TCP the tc stage hands to the kernel, into the same packet (its Ethernet
// source the router's mark), which the tc stage then hands on unchanged; and
// pass everything else untouched, counting nothing (the tc stage counts it).
import test from 'ava';
import fc from 'fast-check';
import {
  FastPathPrograms,
  FROM_PEERS_VERDICTS,
  TC_ACT_REDIRECT,
  TC_ACT_UNSPEC,
  XDP_PASS,
  type FromPeersVerdict,
} from '../../agent/bpf/programs.js';
import { refusedRanges } from '../../agent/router/refused.js';
import { makeAddress } from '../../agent/protocol/address.js';
import { parseIPv4, parseIPv6 } from '../../lib/ip.js';
import { writeHeader } from '../../agent/protocol/ipv6.js';
import { writeRouterSolicit } from '../../agent/protocol/nd.js';
import { fillChecksum } from '../../agent/protocol/checksum.js';
import { ETH, frame, type FrameOptions } from '../helpers/frames.js';
import {
  HOP,
  isp,
  LOCAL,
  newEngine,
  PORT,
  prefix,
  programs,
  REFUSED,
  rootTest,
  ROUTER,
  SECOND_NIC,
  skip,
  t_,
  TTL,
} from './setup.js';

const PEER = parseIPv4('198.51.100.20');
const SPORT = 40000;
const peerAddr = makeAddress(prefix.bytes, PEER, SPORT, 1);
const OTHER_PEER = parseIPv4('203.0.113.2');

const engine = newEngine();

let prog: FastPathPrograms | undefined;
test.before(() => {
  if (!skip) prog = programs(7, true);
});
test.after.always(() => prog?.close());

interface EngineVerdict {
  toTun: Uint8Array | null;
  relay: { bytes: Uint8Array; v4: number; port: number } | null;
}

/** What the engine does with one datagram: the packet it hands to the kernel, the one it relays, or neither. */
function engineVerdict(payload: Uint8Array, v4: number, port: number): EngineVerdict {
  const rx = engine.udpRx;
  rx.off[0] = 0;
  rx.len[0] = payload.length;
  rx.addr[0] = v4;
  rx.port[0] = port;
  rx.data.set(payload.subarray(0, Math.min(payload.length, rx.slot)), 0);
  engine.fromPeers(1, 1000);
  const copy = (b: typeof engine.toTun) => Uint8Array.from(b.data.subarray(b.off[0]!, b.off[0]! + b.len[0]!));
  return {
    toTun: engine.nToTun ? copy(engine.toTun) : null,
    relay: engine.nRelay ? { bytes: copy(engine.relay), v4: engine.relay.addr[0]!, port: engine.relay.port[0]! } : null,
  };
}

interface Result {
  verdict: FromPeersVerdict;
  retval: number;
  out: Uint8Array;
}

/** Runs the program on the frame and says which counter moved. */
function runBpf(f: Uint8Array): Result {
  const { moved, retval, out } = runCounted('fromPeers', f);
  if (moved.length !== 1) throw new Error(`expected one counter to move, got ${moved.join(', ') || 'none'}`);
  return { verdict: moved[0]!, retval, out };
}

function runCounted(p: 'fromPeers' | 'fromPeersXdp', f: Uint8Array) {
  const before = prog!.counters().fromPeers;
  const { retval, out } = prog!.run(p, f);
  const after = prog!.counters().fromPeers;
  return { moved: FROM_PEERS_VERDICTS.filter((v) => after[v].packets !== before[v].packets), retval, out };
}

/**
 * The XDP stage on the same frame: TCP decapsulated into the packet the tc stage hands to the kernel (toTun), marked
 * with the router's source MAC, and handed on as it is by the tc stage; anything else passed untouched, counting
 * nothing (GRO merges only TCP: the rest costs less at tc).
 */
function checkXdp(t: Asserts, f: Uint8Array, toTun: Uint8Array | null): void {
  const x = runCounted('fromPeersXdp', f);
  t.is(x.retval, XDP_PASS, 'the XDP stage always passes');
  if (!toTun || toTun[6] !== 6) {
    t.deepEqual(x.moved, [], 'the XDP stage counts nothing it leaves to the tc stage');
    t.deepEqual(Buffer.from(x.out), Buffer.from(f), 'and leaves it unchanged');
    return;
  }
  t.deepEqual(x.moved, ['fast', 'xdp'], 'decapsulated in the XDP stage');
  const want = new Uint8Array(ETH + toTun.length);
  want.set(f.subarray(0, 6), 0); // to the uplink's MAC, as it came
  want.set(prog!.xdpMark, 6);
  want.set([0x86, 0xdd], 12);
  want.set(toTun, ETH);
  t.deepEqual(Buffer.from(x.out), Buffer.from(want), 'the same IPv6 packet, marked');
  const h = runBpf(x.out);
  t.is(h.verdict, 'xdp_handed', 'the tc stage knows its mark');
  t.is(h.retval, TC_ACT_REDIRECT);
  t.deepEqual(Buffer.from(h.out), Buffer.from(x.out), 'and hands the packet on as it is');
}

/**
 * How the outer headers are: 'plain'; 'unusual', which the kernel delivers but the program leaves to the router
 * (IPv4 options, an Ethernet trailer); or 'dropped' by the kernel before the router could see it.
 */
type Outer = 'plain' | 'unusual' | 'dropped';

type Asserts = {
  is: (a: unknown, b: unknown, m?: string) => void;
  deepEqual: (a: unknown, b: unknown, m?: string) => void;
  true: (a: boolean, m?: string) => void;
};

/**
 * The property: with plain outer headers and a datagram that is exactly the packet, fast-pathed iff the engine hands
 * it to the kernel, and relayed iff the engine relays it and the datagram has a UDP checksum; then the same bytes
 * leave (for a relay, the frame the router's socket would send to the next hop). Otherwise the frame is returned
 * unchanged.
 */
function check(
  t: Asserts,
  f: Uint8Array,
  payload: Uint8Array,
  v4: number,
  port: number,
  outer: Outer = 'plain',
  checksummed = true,
): Result {
  const r = runBpf(f);
  const e: EngineVerdict = outer !== 'dropped' ? engineVerdict(payload, v4, port) : { toTun: null, relay: null };
  const exact = (b: Uint8Array | undefined | null) => !!b && b.length === payload.length;
  if (outer === 'plain' && exact(e.toTun)) {
    t.is(r.verdict, 'fast', 'the engine hands it to the kernel, so the fast path takes it');
    t.is(r.retval, TC_ACT_REDIRECT);
    t.deepEqual(Buffer.from(r.out.subarray(ETH)), Buffer.from(e.toTun!), 'the same IPv6 packet, hop limit decremented');
    t.deepEqual([...r.out.subarray(12, 14)], [0x86, 0xdd], 'an IPv6 frame');
    checkXdp(t, f, e.toTun!);
  } else if (outer === 'plain' && exact(e.relay?.bytes) && checksummed) {
    const { bytes, v4: to, port: toPort } = e.relay!;
    t.is(r.verdict, 'relay', 'the engine relays it, so the fast path does');
    t.is(r.retval, TC_ACT_REDIRECT);
    t.deepEqual(
      Buffer.from(r.out),
      Buffer.from(frame(ROUTER, PORT, to, toPort, bytes, { id: 0, ttl: TTL, ...HOP })),
      "the datagram the router's socket would send, to the next hop",
    );
    checkXdp(t, f, null);
  } else {
    t.true(r.verdict !== 'fast' && r.verdict !== 'relay', `not for the fast path (${r.verdict})`);
    t.is(r.retval, TC_ACT_UNSPEC);
    t.deepEqual(Buffer.from(r.out), Buffer.from(f), 'left unchanged for the router');
    checkXdp(t, f, null);
  }
  return r;
}

function ipv6(
  src: Uint8Array,
  dst: Uint8Array,
  o: { hops?: number; nh?: number; payload?: number; plen?: number } = {},
): Uint8Array {
  const n = o.payload ?? 16;
  const b = new Uint8Array(40 + n);
  writeHeader(b, 0, o.plen ?? n, o.nh ?? 17, o.hops ?? 64, src, dst);
  for (let i = 40; i < b.length; i++) b[i] = i & 0xff;
  return b;
}

function echo(src: Uint8Array, dst: Uint8Array, type = 128): Uint8Array {
  const b = ipv6(src, dst, { nh: 58, payload: 16 });
  b[40] = type;
  b[41] = 0;
  fillChecksum(b, 0, 58, 40, 16, 2);
  return b;
}

function rs(): Uint8Array {
  const b = new Uint8Array(64);
  return b.subarray(0, writeRouterSolicit(b, 0));
}

interface Case {
  name: string;
  payload: Uint8Array;
  v4?: number;
  sport?: number;
  dst?: number;
  dport?: number;
  opts?: FrameOptions;
  outer?: Outer;
  want: FromPeersVerdict;
}

const CASES: Case[] = [
  { name: "a peer's UDP packet to the Internet", payload: ipv6(peerAddr, isp), want: 'fast' },
  { name: "a peer's echo request", payload: echo(peerAddr, isp), want: 'fast' },
  {
    name: 'no UDP checksum (allowed over IPv4)',
    payload: ipv6(peerAddr, isp),
    opts: { udpChecksum: 'zero' },
    want: 'fast',
  },
  { name: 'the largest packet, 1280 bytes', payload: ipv6(peerAddr, isp, { payload: 1240 }), want: 'fast' },
  { name: 'a packet with odd length', payload: ipv6(peerAddr, isp, { payload: 1 }), want: 'fast' },
  { name: 'hop limit 2 (leaves with 1)', payload: ipv6(peerAddr, isp, { hops: 2 }), want: 'fast' },
  {
    name: 'a wrong UDP checksum (the kernel drops it)',
    payload: ipv6(peerAddr, isp),
    opts: { udpChecksum: 'bad' },
    outer: 'dropped',
    want: 'udp_checksum',
  },
  {
    name: 'a wrong IPv4 checksum',
    payload: ipv6(peerAddr, isp),
    opts: { badIpChecksum: true },
    outer: 'dropped',
    want: 'ipv4_unusual',
  },
  {
    name: 'IPv4 options',
    payload: ipv6(peerAddr, isp),
    opts: { ipOptions: 4 },
    outer: 'unusual',
    want: 'ipv4_unusual',
  },
  {
    name: 'a first fragment',
    payload: ipv6(peerAddr, isp),
    opts: { fragWord: 0x2000 },
    outer: 'dropped',
    want: 'ipv4_unusual',
  },
  {
    name: 'an Ethernet trailer past the IPv4 length',
    payload: ipv6(peerAddr, isp),
    opts: { trailer: 6 },
    outer: 'unusual',
    want: 'ipv4_unusual',
  },
  { name: 'to another port', payload: ipv6(peerAddr, isp), dport: PORT + 1, outer: 'dropped', want: 'not_6bed4' },
  { name: 'to another address', payload: ipv6(peerAddr, isp), dst: PEER, outer: 'dropped', want: 'not_6bed4' },
  { name: 'TCP, not UDP', payload: ipv6(peerAddr, isp), opts: { protocol: 6 }, outer: 'dropped', want: 'not_6bed4' },
  {
    name: 'a loopback source (martian)',
    payload: ipv6(makeAddress(prefix.bytes, parseIPv4('127.0.0.1'), SPORT, 1), isp),
    v4: parseIPv4('127.0.0.1'),
    outer: 'dropped',
    want: 'ipv4_unusual',
  },
  {
    name: 'from port 0',
    payload: ipv6(makeAddress(prefix.bytes, PEER, 0, 1), isp),
    sport: 0,
    want: 'source_port_zero',
  },
  { name: 'a keepalive', payload: new Uint8Array(0), want: 'keepalive' },
  { name: 'shorter than an IPv6 header', payload: ipv6(peerAddr, isp).subarray(0, 39), want: 'short' },
  { name: 'longer than 1280', payload: ipv6(peerAddr, isp, { payload: 1241 }), want: 'oversize' },
  {
    name: 'version 4 inside',
    payload: (() => {
      const b = ipv6(peerAddr, isp);
      b[0] = 0x45;
      return b;
    })(),
    want: 'not_ipv6',
  },
  {
    name: 'payload length past the datagram',
    payload: ipv6(peerAddr, isp, { payload: 16, plen: 17 }),
    want: 'bad_length',
  },
  {
    name: 'trailing bytes after the payload length (the engine trims them)',
    payload: ipv6(peerAddr, isp, { payload: 16, plen: 8 }),
    want: 'bad_length',
  },
  { name: 'a Router Solicitation', payload: rs(), want: 'nd' },
  { name: 'a Neighbour Solicitation type', payload: echo(peerAddr, isp, 135), want: 'nd' },
  { name: 'a multicast destination', payload: ipv6(peerAddr, parseIPv6('ff0e::1')), want: 'multicast' },
  {
    name: 'a source of another port',
    payload: ipv6(makeAddress(prefix.bytes, PEER, SPORT + 1, 1), isp),
    want: 'spoofed',
  },
  {
    name: 'a source of another IPv4',
    payload: ipv6(makeAddress(prefix.bytes, PEER + 1, SPORT, 1), isp),
    want: 'spoofed',
  },
  { name: 'a source outside the /64', payload: ipv6(parseIPv6('2001:db8:ffff::99'), isp), want: 'spoofed' },
  { name: 'hop limit 1', payload: ipv6(peerAddr, isp, { hops: 1 }), want: 'hop_limit' },
  { name: 'hop limit 0', payload: ipv6(peerAddr, isp, { hops: 0 }), want: 'hop_limit' },
  {
    name: 'to another peer (a relay)',
    payload: ipv6(peerAddr, makeAddress(prefix.bytes, OTHER_PEER, 5000, 1)),
    want: 'relay',
  },
  {
    name: 'an echo request to another peer (a relay)',
    payload: echo(peerAddr, makeAddress(prefix.bytes, OTHER_PEER, 5000, 1)),
    want: 'relay',
  },
  {
    name: 'a 1280-byte relay',
    payload: ipv6(peerAddr, makeAddress(prefix.bytes, OTHER_PEER, 5000, 1), { payload: 1240 }),
    want: 'relay',
  },
  {
    name: 'a relay with hop limit 2',
    payload: ipv6(peerAddr, makeAddress(prefix.bytes, OTHER_PEER, 65535, 9), { hops: 2 }),
    want: 'relay',
  },
  {
    name: 'a relay without UDP checksum (the router sends one)',
    payload: ipv6(peerAddr, makeAddress(prefix.bytes, OTHER_PEER, 5000, 1)),
    opts: { udpChecksum: 'zero' },
    want: 'relay_unchecked',
  },
  {
    name: 'a relay to another network of the host',
    payload: ipv6(peerAddr, makeAddress(prefix.bytes, SECOND_NIC, 5000, 1)),
    want: 'bad_destination',
  },
  {
    name: 'a relay to loopback',
    payload: ipv6(peerAddr, makeAddress(prefix.bytes, parseIPv4('127.0.0.1'), 5000, 1)),
    want: 'bad_destination',
  },
  {
    name: "a relay to the router's IPv4 on another port",
    payload: ipv6(peerAddr, makeAddress(prefix.bytes, ROUTER, 22, 0)),
    want: 'bad_destination',
  },
  { name: "a peer's TCP segment to the Internet", payload: ipv6(peerAddr, isp, { nh: 6, payload: 20 }), want: 'fast' },
  { name: 'a 1280-byte TCP segment', payload: ipv6(peerAddr, isp, { nh: 6, payload: 1240 }), want: 'fast' },
  {
    name: 'a TCP segment without UDP checksum',
    payload: ipv6(peerAddr, isp, { nh: 6, payload: 33 }),
    opts: { udpChecksum: 'zero' },
    want: 'fast',
  },
  { name: 'a TCP segment with hop limit 2', payload: ipv6(peerAddr, isp, { nh: 6, hops: 2 }), want: 'fast' },
  {
    name: 'a TCP segment with a wrong UDP checksum (the kernel drops it)',
    payload: ipv6(peerAddr, isp, { nh: 6 }),
    opts: { udpChecksum: 'bad' },
    outer: 'dropped',
    want: 'udp_checksum',
  },
  {
    name: 'a TCP segment relayed to another peer',
    payload: ipv6(peerAddr, makeAddress(prefix.bytes, OTHER_PEER, 5000, 1), { nh: 6 }),
    want: 'relay',
  },
  {
    name: 'to a local (port 0) address of the /64',
    payload: ipv6(peerAddr, makeAddress(prefix.bytes, ROUTER, 0, 5)),
    want: 'fast',
  },
  {
    name: "to the router's own 6bed4 address",
    payload: echo(peerAddr, makeAddress(prefix.bytes, ROUTER, PORT, 0)),
    want: 'fast',
  },
];

for (const c of CASES) {
  rootTest(t_(`${c.name}: ${c.want}`), (t) => {
    const v4 = c.v4 ?? PEER,
      sport = c.sport ?? SPORT;
    const f = frame(v4, sport, c.dst ?? ROUTER, c.dport ?? PORT, c.payload, c.opts);
    const r = check(t, f, c.payload, v4, sport, c.outer, c.opts?.udpChecksum !== 'zero');
    t.is(r.verdict, c.want);
  });
}

rootTest(
  t_('random datagrams: the fast path takes exactly what the engine hands to the kernel or relays, byte for byte'),
  (t) => {
    const V4S = [PEER, OTHER_PEER, parseIPv4('100.64.1.2')];
    const arb = fc.record({
      v4: fc.constantFrom(...V4S),
      sport: fc.constantFrom(0, SPORT, 1, 65535),
      src: fc.constantFrom('own', 'own-lanip', 'other-port', 'outside', 'link-local'),
      dst: fc.constantFrom('isp', 'relay', 'refused', 'local', 'multicast', 'router', 'router-port', 'random'),
      relayPort: fc.constantFrom(0, 1, 6000, 65535),
      randomDst: fc.uint8Array({ minLength: 16, maxLength: 16 }),
      hops: fc.constantFrom(0, 1, 2, 64, 255),
      nh: fc.constantFrom(17, 6, 58, 0, 44),
      icmpType: fc.integer({ min: 128, max: 140 }),
      payload: fc.integer({ min: 0, max: 1260 }),
      plenDelta: fc.constantFrom(0, 0, 0, -1, 1, -8),
      version: fc.constantFrom(6, 6, 6, 4, 0),
      truncate: fc.constantFrom(0, 0, 0, 1, 30),
      udpChecksum: fc.constantFrom('good', 'good', 'zero', 'bad' as const),
    });
    fc.assert(
      fc.property(arb, (a) => {
        const src =
          a.src === 'outside'
            ? parseIPv6('2001:db8:ffff::5')
            : a.src === 'link-local'
              ? parseIPv6('fe80::1')
              : makeAddress(
                  prefix.bytes,
                  a.v4,
                  a.src === 'other-port' ? a.sport + 1 : a.sport,
                  a.src === 'own-lanip' ? 77 : 1,
                );
        const dst = {
          isp,
          relay: makeAddress(prefix.bytes, parseIPv4('203.0.113.9'), a.relayPort, 1),
          refused: makeAddress(prefix.bytes, SECOND_NIC, a.relayPort, 1),
          local: makeAddress(prefix.bytes, ROUTER, 0, 9),
          multicast: parseIPv6('ff02::1'),
          router: makeAddress(prefix.bytes, ROUTER, PORT, 0),
          'router-port': makeAddress(prefix.bytes, ROUTER, a.relayPort, 0),
          random: a.randomDst,
        }[a.dst];
        let p = ipv6(src, dst, {
          hops: a.hops,
          nh: a.nh,
          payload: a.payload,
          plen: Math.max(0, a.payload + a.plenDelta),
        });
        if (a.nh === 58 && a.payload > 0) p[40] = a.icmpType;
        p[0] = (a.version << 4) | (p[0]! & 0x0f);
        if (a.truncate) p = p.subarray(0, Math.max(0, p.length - a.truncate));
        const f = frame(a.v4, a.sport, ROUTER, PORT, p, { udpChecksum: a.udpChecksum as 'good' | 'zero' | 'bad' });
        check(t, f, p, a.v4, a.sport, a.udpChecksum === 'bad' ? 'dropped' : 'plain', a.udpChecksum !== 'zero');
      }),
      { numRuns: 1000 },
    );
  },
);

rootTest(t_("IPv6 from the wire is the kernel's, whatever its source: only the router's mark is handed on"), (t) => {
  const packet = ipv6(peerAddr, isp);
  const f = new Uint8Array(ETH + packet.length);
  f.set([2, 0, 0, 0, 0, 1], 6);
  f.set([0x86, 0xdd], 12);
  f.set(packet, ETH);
  for (const smac of [
    Uint8Array.from([2, 0, 0, 0, 0, 1]),
    Uint8Array.from(prog!.xdpMark, (b, i) => (i === 5 ? b ^ 1 : b)),
  ]) {
    f.set(smac, 6);
    const r = runBpf(f);
    t.is(r.verdict, 'not_6bed4');
    t.is(r.retval, TC_ACT_UNSPEC);
    t.deepEqual(Buffer.from(r.out), Buffer.from(f), 'left to the kernel, unchanged');
    const x = runCounted('fromPeersXdp', f);
    t.is(x.retval, XDP_PASS);
    t.deepEqual(x.moved, []);
    t.deepEqual(Buffer.from(x.out), Buffer.from(f));
  }
  // The control: the mark is what the tc stage goes by.
  f.set(prog!.xdpMark, 6);
  t.is(runBpf(f).verdict, 'xdp_handed');
});

rootTest(
  t_(
    "with the GRO pair: a peer's TCP goes by its sending end, as the same packet to its receiving end's MAC; the rest as before",
  ),
  (t) => {
    const GRO = { ifindex: 9, rxIfindex: 10, mac: Uint8Array.from([2, 0, 0x5e, 0, 0x53, 0x10]) };
    const p2 = programs(7);
    try {
      p2.update({ gro: GRO });
      const run = (f: Uint8Array) => {
        const before = p2.counters().fromPeers;
        const r = p2.run('fromPeers', f);
        const after = p2.counters().fromPeers;
        return { ...r, moved: FROM_PEERS_VERDICTS.filter((v) => after[v].packets !== before[v].packets) };
      };
      for (const c of CASES) {
        const v4 = c.v4 ?? PEER,
          sport = c.sport ?? SPORT;
        const f = frame(v4, sport, c.dst ?? ROUTER, c.dport ?? PORT, c.payload, c.opts);
        const plain = runBpf(f);
        const r = run(f);
        if (plain.verdict === 'fast' && c.payload[6] === 6) {
          t.deepEqual(r.moved, ['fast', 'gro_sent'], c.name);
          t.is(r.retval, TC_ACT_REDIRECT, c.name);
          const want = Uint8Array.from(plain.out);
          want.set(GRO.mac, 0);
          want.set(p2.xdpMark, 6); // from the mark, which the receiving end's stage looks for
          t.deepEqual(Buffer.from(r.out), Buffer.from(want), `${c.name}: the same packet, to the pair's receiving end`);
        } else {
          t.deepEqual(r.moved, [plain.verdict], c.name);
          t.is(r.retval, plain.retval, c.name);
          t.deepEqual(Buffer.from(r.out), Buffer.from(plain.out), `${c.name}: as without the pair`);
        }
      }
    } finally {
      p2.close();
    }
  },
);

rootTest(t_('off (TUN ifindex 0): every frame goes to the router, nothing is counted'), (t) => {
  const p2 = programs(0);
  try {
    for (const payload of [ipv6(peerAddr, isp), ipv6(peerAddr, makeAddress(prefix.bytes, OTHER_PEER, 5000, 1))]) {
      const f = frame(PEER, SPORT, ROUTER, PORT, payload);
      const r = p2.run('fromPeers', f);
      t.is(r.retval, TC_ACT_UNSPEC);
      t.deepEqual(Buffer.from(r.out), Buffer.from(f));
    }
    t.true(Object.values(p2.counters().fromPeers).every((c) => c.packets === 0));
  } finally {
    p2.close();
  }
});

rootTest(
  t_('refused destinations follow the host: a relay target that becomes local goes to the router, and back'),
  (t) => {
    const to = makeAddress(prefix.bytes, OTHER_PEER, 5000, 1);
    const f = frame(PEER, SPORT, ROUTER, PORT, ipv6(peerAddr, to));
    try {
      prog!.setRefused(refusedRanges([...LOCAL, { start: OTHER_PEER, end: OTHER_PEER }], false));
      t.is(runBpf(f).verdict, 'bad_destination');
      prog!.setRefused(REFUSED);
      t.is(runBpf(f).verdict, 'relay');
      // More prefixes than the trie holds: nothing can be checked, so every relay goes to the router.
      prog!.setRefused(
        Array.from({ length: 5000 }, (_, i) => ({
          start: parseIPv4('100.64.0.0') + i * 4,
          end: parseIPv4('100.64.0.0') + i * 4 + 1,
        })),
      );
      t.is(runBpf(f).verdict, 'bad_destination');
    } finally {
      prog!.setRefused(REFUSED);
    }
  },
);
