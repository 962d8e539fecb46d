// What an attacker throws at a 6bed4 router, as datagram payloads: random
// bytes and structured junk that goes deep into the rules (broken headers,
// ND with hostile options, extension-header chains, spoofed sources, relays
// to multicast/broadcast/loopback/the host, hop limits 0 and 1, lying
// lengths). Every kind is built for a sender at own.ipv4:own.port, so the
// "valid source" kinds pass the originator check and reach the deeper rules.
// None of it may make the router send anything to the native side.
import { makeAddress } from '../agent/protocol/address.js';
import { fillChecksum } from '../agent/protocol/checksum.js';
import { writeHeader } from '../agent/protocol/ipv6.js';
import { ALL_ROUTERS, ROUTER_LINK_LOCAL, writeNeighborSolicit, writeRouterSolicit } from '../agent/protocol/nd.js';
import { parseIPv4, parseIPv6, type Prefix } from '../lib/ip.js';

export interface JunkTarget {
  prefix: Prefix;
  /** The flooder as the router sees it. */
  own: { ipv4: number; port: number };
  routerV4: number;
  routerPort: number;
  /** A native IPv6 host behind the router (the ISP): spoofed packets aim there. */
  native: Uint8Array;
}

/** A deterministic PRNG, so a run can be repeated exactly. */
export function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 0x100000000;
  };
}

type Maker = (r: () => number, t: JunkTarget) => Uint8Array;

const udp6 = (src: Uint8Array, dst: Uint8Array, hops: number, payload = 8, nh = 17): Uint8Array => {
  const b = new Uint8Array(40 + payload);
  writeHeader(b, 0, payload, nh, hops, src, dst);
  return b;
};
const rand = (r: () => number, n: number) => Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
const ownAddr = (t: JunkTarget) => makeAddress(t.prefix.bytes, t.own.ipv4, t.own.port, 1);
const relayTo = (t: JunkTarget, v4: string, port: number) => makeAddress(t.prefix.bytes, parseIPv4(v4), port, 1);

/** The kinds, by name (the name says what the router should do with it). */
export const JUNK: Record<string, Maker> = {
  random: (r) => rand(r, Math.floor(r() * 1400)),
  randomV6: (r) => {
    const b = rand(r, 40 + Math.floor(r() * 200));
    b[0] = 0x60 | (b[0]! & 0x0f);
    return b;
  },
  short: (r) => {
    const b = rand(r, 1 + Math.floor(r() * 38));
    b[0] = 0x60;
    return b;
  },
  ipv4: (r) => {
    const b = rand(r, 60);
    b[0] = 0x45;
    return b;
  },
  oversize: (r, t) => {
    const b = udp6(ownAddr(t), t.native, 64, 1300 - 40);
    b.set(rand(r, 8), 48);
    return b;
  },
  lyingLonger: (_r, t) => {
    const b = udp6(ownAddr(t), t.native, 64, 100);
    return b.subarray(0, 60);
  },
  lyingShorter: (_r, t) => {
    const b = udp6(ownAddr(t), t.native, 64, 8);
    const c = new Uint8Array(200);
    c.set(b);
    return c;
  },
  rs: () => {
    const b = new Uint8Array(64);
    return b.subarray(0, writeRouterSolicit(b, 0));
  },
  rsHostileOption: (r) => {
    // RS with an option of length 0 (an infinite loop for naive parsers) and a wrong checksum half the time.
    const b = new Uint8Array(64);
    const n = writeRouterSolicit(b, 0, undefined, Uint8Array.of(1, 2, 3, 4, 5, 6));
    b[49] = 0;
    if (r() < 0.5) b[42] ^= 0xff;
    return b.subarray(0, n);
  },
  rsLongOptions: (_r) => {
    const b = new Uint8Array(40 + 8 + 8 * 60);
    writeHeader(b, 0, 8 + 8 * 60, 58, 255, new Uint8Array(16), ALL_ROUTERS);
    b[40] = 133;
    for (let o = 48; o < b.length; o += 8) {
      b[o] = 1;
      b[o + 1] = 1;
    }
    fillChecksum(b, 0, 58, 40, 8 + 8 * 60, 2);
    return b;
  },
  nsForeign: (_r, t) => {
    const b = new Uint8Array(100);
    return b.subarray(0, writeNeighborSolicit(b, 0, ownAddr(t), ROUTER_LINK_LOCAL, t.native));
  },
  nsHostileOption: (_r, t) => {
    const b = new Uint8Array(100);
    const n = writeNeighborSolicit(
      b,
      0,
      ownAddr(t),
      ROUTER_LINK_LOCAL,
      ROUTER_LINK_LOCAL,
      Uint8Array.of(1, 2, 3, 4, 5, 6),
    );
    b[65] = 0;
    fillChecksum(b, 0, 58, 40, n - 40, 2);
    return b.subarray(0, n);
  },
  nsSpoofed: (r, t) => {
    const b = new Uint8Array(100);
    return b.subarray(
      0,
      writeNeighborSolicit(
        b,
        0,
        makeAddress(t.prefix.bytes, Math.floor(r() * 2 ** 32), 1 + Math.floor(r() * 65535), 1),
        ROUTER_LINK_LOCAL,
        ROUTER_LINK_LOCAL,
      ),
    );
  },
  raFromPeer: (_r, t) => {
    const b = udp6(ROUTER_LINK_LOCAL, ownAddr(t), 255, 16, 58);
    b[40] = 134;
    fillChecksum(b, 0, 58, 40, 16, 2);
    return b;
  },
  redirect: (_r, t) => {
    const b = udp6(ownAddr(t), ROUTER_LINK_LOCAL, 255, 40, 58);
    b[40] = 137;
    fillChecksum(b, 0, 58, 40, 40, 2);
    return b;
  },
  spoofedInPrefix: (r, t) =>
    udp6(makeAddress(t.prefix.bytes, Math.floor(r() * 2 ** 32), 1 + Math.floor(r() * 65535), 1), t.native, 64),
  spoofedOtherPort: (r, t) =>
    udp6(
      makeAddress(t.prefix.bytes, t.own.ipv4, (t.own.port + 1 + Math.floor(r() * 1000)) & 0xffff || 1, 1),
      t.native,
      64,
    ),
  spoofedLocal: (_r, t) => udp6(makeAddress(t.prefix.bytes, t.own.ipv4, 0, 0x11), t.native, 64),
  spoofedOutside: (r) =>
    udp6(parseIPv6(`2001:db8:ffff::${Math.floor(r() * 65535).toString(16)}`), parseIPv6('2001:db8:ffff::1'), 64),
  spoofedLinkLocal: (_r, t) => {
    const a = ownAddr(t);
    a.set([0xfe, 0x80, 0, 0, 0, 0, 0, 0]);
    return udp6(a, t.native, 64);
  },
  multicastDst: (_r, t) => udp6(ownAddr(t), parseIPv6('ff0e::1'), 64),
  relayMulticast: (_r, t) => udp6(ownAddr(t), relayTo(t, '224.0.0.1', 9), 64),
  relayBroadcast: (_r, t) => udp6(ownAddr(t), relayTo(t, '255.255.255.255', 9), 64),
  relayLoopback: (_r, t) => udp6(ownAddr(t), relayTo(t, '127.0.0.1', 53), 64),
  relayMetadata: (_r, t) => udp6(ownAddr(t), relayTo(t, '169.254.169.254', 80), 64),
  relayRouterPort: (_r, t) => udp6(ownAddr(t), makeAddress(t.prefix.bytes, t.routerV4, 22, 1), 64),
  relayZeroNet: (_r, t) => udp6(ownAddr(t), relayTo(t, '0.0.0.0', 9), 64),
  hopLimit0: (_r, t) => udp6(ownAddr(t), t.native, 0),
  hopLimit1: (_r, t) => udp6(ownAddr(t), t.native, 1),
  errorHopLimit1: (_r, t) => {
    const b = udp6(ownAddr(t), t.native, 1, 8, 58);
    b[40] = 1;
    return b;
  },
  extChainError: (_r, t) => {
    // hop-by-hop → destination options → ICMPv6 Destination Unreachable, hop limit 1: no error back.
    const b = udp6(ownAddr(t), t.native, 1, 24, 0);
    b[40] = 60;
    b[48] = 58;
    b[56] = 1;
    return b;
  },
  extChainLong: (r, t) => {
    const n = 1 + Math.floor(r() * 30);
    const b = udp6(ownAddr(t), t.native, Math.floor(r() * 2), 8 * n + 8, 60);
    for (let i = 0; i < n; i++) {
      b[40 + 8 * i] = i === n - 1 ? 58 : 60;
      b[41 + 8 * i] = 0;
    }
    b[40 + 8 * n] = 1;
    return b;
  },
  extChainLying: (r, t) => {
    const b = udp6(ownAddr(t), t.native, 1, 16, 0);
    b[40] = 60;
    b[41] = 200 + Math.floor(r() * 55);
    return b;
  },
  fragmentLater: (_r, t) => {
    const b = udp6(ownAddr(t), t.native, 1, 16, 44);
    b[40] = 58;
    b[43] = 0x08;
    return b;
  },
  keepalive: () => new Uint8Array(0),
};

/** `count` datagrams drawn from every kind (or those named) in turn, with per-datagram randomness from seed. */
export function junkSet(t: JunkTarget, count: number, seed = 1, only?: readonly string[]): Uint8Array[] {
  const r = prng(seed);
  for (const k of only ?? []) if (!JUNK[k]) throw new Error(`no junk kind ${k}: use ${Object.keys(JUNK).join(', ')}`);
  const kinds = only ? only.map((k) => JUNK[k]!) : Object.values(JUNK);
  return Array.from({ length: count }, (_, i) => kinds[i % kinds.length]!(r, t));
}
