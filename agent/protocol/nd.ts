// Neighbour Discovery messages as 6bed4 uses them over the tunnel (RFC 4861
// shapes, 6bed4 contents): RS from peers, RA with the peer's /114, NS/NA for
// the router's own address. Builders write a whole IPv6 packet into a caller's
// buffer and return its length; validators read in place.
import {
  IPV6_HEADER,
  NH_ICMPV6,
  ND_NEIGHBOR_ADVERT,
  ND_NEIGHBOR_SOLICIT,
  ND_OPT_PREFIX_INFO,
  ND_OPT_SOURCE_LLADDR,
  ND_OPT_TARGET_LLADDR,
  ND_ROUTER_ADVERT,
  ND_ROUTER_SOLICIT,
  PEER_PREFIX_LEN,
} from './constants.js';
import { fillChecksum, upperChecksum } from './checksum.js';
import { OFF_SRC, payloadLength, readU32, writeHeader } from './ipv6.js';
import type { Prefix } from '../../lib/ip.js';

export const ALL_NODES = Uint8Array.of(0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1);
export const ALL_ROUTERS = Uint8Array.of(0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2);
/** The router's link-local source for RA/NA: fe80:: with an all-zero interface id. */
export const ROUTER_LINK_LOCAL = Uint8Array.of(0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
export const UNSPECIFIED = new Uint8Array(16);

/**
 * An ICMPv6 message fit for ND: next header 58 directly after the fixed header,
 * hop limit 255 (so it cannot have been forwarded), code 0, the ICMPv6 length
 * equal to the payload length, a correct checksum. Returns the ICMPv6 type or -1.
 */
export function ndType(b: Uint8Array, off: number, len: number): number {
  if (len < IPV6_HEADER + 8 || b[off + 6] !== NH_ICMPV6 || b[off + 7] !== 255) return -1;
  const icmpLen = payloadLength(b, off);
  if (IPV6_HEADER + icmpLen > len) return -1;
  if (b[off + IPV6_HEADER + 1] !== 0) return -1;
  if (upperChecksum(b, off, NH_ICMPV6, off + IPV6_HEADER, icmpLen) !== 0) return -1;
  return b[off + IPV6_HEADER]!;
}

/** RS as stock peers send it: 8-byte body, or 16 with one source link-layer option. */
export function isRouterSolicit(b: Uint8Array, off: number, len: number): boolean {
  if (ndType(b, off, len) !== ND_ROUTER_SOLICIT) return false;
  const icmpLen = payloadLength(b, off);
  if (icmpLen === 8) return true;
  const o = off + IPV6_HEADER + 8;
  return icmpLen === 16 && b[o] === ND_OPT_SOURCE_LLADDR && b[o + 1] === 1;
}

/** NS: 24-byte body, or 32 with one option. Returns the target's offset, or -1. */
export function neighborSolicitTarget(b: Uint8Array, off: number, len: number): number {
  if (ndType(b, off, len) !== ND_NEIGHBOR_SOLICIT) return -1;
  const icmpLen = payloadLength(b, off);
  if (icmpLen !== 24 && icmpLen !== 32) return -1;
  return off + IPV6_HEADER + 8;
}

/**
 * Router Advertisement for one peer: its /114 (its 6bed4 address with lanip 0,
 * built from the observed IPv4 and port) on-link and autonomous, then each
 * extra routed prefix neither on-link nor autonomous. withdraw=true sends zero
 * lifetimes, telling the peer to stop using that /114.
 *
 * old114, when given (the peer's NAT mapping changed), is withdrawn with zero
 * lifetimes, and the current /114 follows it once more: peers read the /114
 * options in different ways, and each must end up on the current one. The
 * stock 6bed4peer takes the LAST on-link autonomous /114 whatever its
 * lifetimes (its RA parser in test/stock/6bed4/src/6bed4peer.c); sixbed4
 * peers before this form took the FIRST; peers that honour lifetimes (ours
 * now, RFC 4862) take the one with a lifetime and drop the withdrawn one.
 * [current, routes..., old (0), current] serves all three. RFC 4861 allows a
 * prefix in more than one option; the repeat says the same thing again.
 */
export function writeRouterAdvert(
  out: Uint8Array,
  off: number,
  dst: Uint8Array,
  peer114: Uint8Array,
  routes: readonly Prefix[],
  withdraw = false,
  old114?: Uint8Array,
): number {
  const icmp = off + IPV6_HEADER;
  const icmpLen = 16 + 32 * (1 + routes.length + (old114 ? 2 : 0));
  writeHeader(out, off, icmpLen, NH_ICMPV6, 255, ROUTER_LINK_LOCAL, dst);
  out[icmp] = ND_ROUTER_ADVERT;
  out[icmp + 1] = 0;
  out[icmp + 4] = 0; // cur hop limit: unspecified
  out[icmp + 5] = 0x18; // M=0 O=0, preference "low" as the stock router
  out[icmp + 6] = 0xff;
  out[icmp + 7] = 0xff; // router lifetime
  out.fill(0xff, icmp + 8, icmp + 16); // reachable time, retrans timer
  writePrefixOption(out, icmp + 16, peer114, PEER_PREFIX_LEN, 0xc0, withdraw ? 0 : 0xffffffff);
  for (let i = 0; i < routes.length; i++) {
    writePrefixOption(out, icmp + 48 + 32 * i, routes[i]!.bytes, routes[i]!.length, 0x00, withdraw ? 0 : 0xffffffff);
  }
  // The /114 of a mapping the peer's NAT no longer uses, with zero lifetimes, then the current one again (above).
  if (old114) {
    writePrefixOption(out, icmp + 48 + 32 * routes.length, old114, PEER_PREFIX_LEN, 0xc0, 0);
    writePrefixOption(out, icmp + 80 + 32 * routes.length, peer114, PEER_PREFIX_LEN, 0xc0, withdraw ? 0 : 0xffffffff);
  }
  fillChecksum(out, off, NH_ICMPV6, icmp, icmpLen, 2);
  return IPV6_HEADER + icmpLen;
}

function writePrefixOption(
  out: Uint8Array,
  o: number,
  prefix: Uint8Array,
  length: number,
  flags: number,
  life: number,
): void {
  out[o] = ND_OPT_PREFIX_INFO;
  out[o + 1] = 4;
  out[o + 2] = length;
  out[o + 3] = flags;
  writeU32(out, o + 4, life);
  writeU32(out, o + 8, life);
  writeU32(out, o + 12, 0);
  out.set(prefix.subarray(0, 16), o + 16);
}

/** Neighbour Advertisement (R and S set) with one target link-layer option. */
export function writeNeighborAdvert(
  out: Uint8Array,
  off: number,
  src: Uint8Array,
  dst: Uint8Array,
  target: Uint8Array,
  lla: Uint8Array,
  flags = 0xc0,
): number {
  const icmp = off + IPV6_HEADER;
  writeHeader(out, off, 32, NH_ICMPV6, 255, src, dst);
  out[icmp] = ND_NEIGHBOR_ADVERT;
  out[icmp + 1] = 0;
  out[icmp + 4] = flags;
  out[icmp + 5] = 0;
  out[icmp + 6] = 0;
  out[icmp + 7] = 0;
  out.set(target.subarray(0, 16), icmp + 8);
  out[icmp + 24] = ND_OPT_TARGET_LLADDR;
  out[icmp + 25] = 1;
  out.set(lla.subarray(0, 6), icmp + 26);
  fillChecksum(out, off, NH_ICMPV6, icmp, 32, 2);
  return IPV6_HEADER + 32;
}

/** Router Solicitation as stock peers send it: from ::, to ff02::2, optional source link-layer option. */
export function writeRouterSolicit(
  out: Uint8Array,
  off: number,
  src: Uint8Array = UNSPECIFIED,
  lla?: Uint8Array,
): number {
  const icmp = off + IPV6_HEADER;
  const icmpLen = lla ? 16 : 8;
  writeHeader(out, off, icmpLen, NH_ICMPV6, 255, src, ALL_ROUTERS);
  out[icmp] = ND_ROUTER_SOLICIT;
  out.fill(0, icmp + 1, icmp + 8);
  if (lla) {
    out[icmp + 8] = ND_OPT_SOURCE_LLADDR;
    out[icmp + 9] = 1;
    out.set(lla.subarray(0, 6), icmp + 10);
  }
  fillChecksum(out, off, NH_ICMPV6, icmp, icmpLen, 2);
  return IPV6_HEADER + icmpLen;
}

/** Neighbour Solicitation for target, optionally with a source link-layer option. */
export function writeNeighborSolicit(
  out: Uint8Array,
  off: number,
  src: Uint8Array,
  dst: Uint8Array,
  target: Uint8Array,
  lla?: Uint8Array,
): number {
  const icmp = off + IPV6_HEADER;
  const icmpLen = lla ? 32 : 24;
  writeHeader(out, off, icmpLen, NH_ICMPV6, 255, src, dst);
  out[icmp] = ND_NEIGHBOR_SOLICIT;
  out.fill(0, icmp + 1, icmp + 8);
  out.set(target.subarray(0, 16), icmp + 8);
  if (lla) {
    out[icmp + 24] = ND_OPT_SOURCE_LLADDR;
    out[icmp + 25] = 1;
    out.set(lla.subarray(0, 6), icmp + 26);
  }
  fillChecksum(out, off, NH_ICMPV6, icmp, icmpLen, 2);
  return IPV6_HEADER + icmpLen;
}

export interface RouterAdvert {
  /** The /114 the router assigned: the peer's 6bed4 address with lanip 0. */
  readonly prefix114: Uint8Array;
  readonly validLifetime: number;
  /** Extra routed prefixes (not on-link). */
  readonly routes: { bytes: Uint8Array; length: number }[];
  /** /114s withdrawn (zero valid lifetime) besides the one taken: earlier NAT mappings. */
  readonly withdrawn: Uint8Array[];
}

/**
 * Reads an RA the way a 6bed4 peer must: from fe80::, valid ND; ours is the
 * first on-link autonomous /114 with a valid lifetime (or, when all are
 * withdrawn, the first of them, with lifetime 0), the order of the options
 * aside (writeRouterAdvert says why). Returns null for anything else.
 */
export function parseRouterAdvert(b: Uint8Array, off: number, len: number): RouterAdvert | null {
  if (ndType(b, off, len) !== ND_ROUTER_ADVERT) return null;
  for (let i = 0; i < 16; i++) if (b[off + OFF_SRC + i] !== ROUTER_LINK_LOCAL[i]) return null;
  const end = off + IPV6_HEADER + payloadLength(b, off);
  let o = off + IPV6_HEADER + 16;
  let prefix114: Uint8Array | null = null;
  let validLifetime = 0;
  const routes: { bytes: Uint8Array; length: number }[] = [],
    zero: Uint8Array[] = [];
  while (o + 2 <= end) {
    const optLen = b[o + 1]! * 8;
    if (optLen === 0 || o + optLen > end) return null; // malformed option list: drop the whole RA
    if (b[o] === ND_OPT_PREFIX_INFO && optLen === 32) {
      const bytes = Uint8Array.from(b.subarray(o + 16, o + 32));
      // Ours only when on-link and autonomous, as the stock peer insists.
      if (b[o + 2] === PEER_PREFIX_LEN && (b[o + 3]! & 0xc0) === 0xc0) {
        const life = readU32(b, o + 4);
        if (life === 0) zero.push(bytes);
        else if (prefix114 === null) {
          prefix114 = bytes;
          validLifetime = life;
        }
      } else if (!(b[o + 3]! & 0x80)) {
        routes.push({ bytes, length: b[o + 2]! });
      }
    }
    o += optLen;
  }
  const current = prefix114;
  if (current)
    return { prefix114: current, validLifetime, routes, withdrawn: zero.filter((z) => !equalBytes(z, current)) };
  return zero.length ? { prefix114: zero[0]!, validLifetime: 0, routes, withdrawn: zero.slice(1) } : null;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function writeU32(out: Uint8Array, o: number, v: number): void {
  out[o] = v >>> 24;
  out[o + 1] = (v >>> 16) & 0xff;
  out[o + 2] = (v >>> 8) & 0xff;
  out[o + 3] = v & 0xff;
}
