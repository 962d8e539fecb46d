// The packets the load generators send, built once into reusable batches.
// Everything is a real, checksummed IPv6/UDP packet, so a kernel or router
// that inspected more than it should would still see valid traffic.
//
// The many-peer generators rewrite, per packet, the low 8 bytes of the
// destination (6→4) or source (4→6) address (the embedded IPv4, port and
// lanip) and patch the checksums from precomputed partial sums, so that
// 100,000 distinct peers cost the same few operations per packet as one.
import { IPV6_HEADER, NH_UDP } from '../agent/protocol/constants.js';
import { writeAddress } from '../agent/protocol/address.js';
import { fillChecksum, fold, sumWords } from '../agent/protocol/checksum.js';
import { OFF_DST, OFF_SRC, writeHeader } from '../agent/protocol/ipv6.js';
import type { Batch } from '../agent/io/batch.js';

/** Smallest packet we generate: IPv6 header + UDP header, no payload. */
export const MIN_SIZE = IPV6_HEADER + 8;
/** UDP port used for inner traffic (discard); sinks match on it. */
export const SINK_PORT = 9;

/** Writes a `size`-byte IPv6/UDP packet src → dst (port 9 → 9) at off, with a valid checksum. */
export function writeUdp6(
  out: Uint8Array,
  off: number,
  size: number,
  src: Uint8Array,
  dst: Uint8Array,
  hops = 64,
): void {
  if (!Number.isInteger(size) || size < MIN_SIZE || size > 65535)
    throw new RangeError(`packet size ${size}: use ${MIN_SIZE}..65535`);
  const udpLen = size - IPV6_HEADER;
  writeHeader(out, off, udpLen, NH_UDP, hops, src, dst);
  const u = off + IPV6_HEADER;
  out[u] = 0;
  out[u + 1] = SINK_PORT;
  out[u + 2] = 0;
  out[u + 3] = SINK_PORT;
  out[u + 4] = udpLen >>> 8;
  out[u + 5] = udpLen & 0xff;
  // A recognisable, non-zero payload (so nothing could mistake it for padding).
  for (let i = 8; i < udpLen; i++) out[u + i] = (i * 7) & 0xff;
  fillChecksum(out, off, NH_UDP, u, udpLen, 6);
}

/** Fills every entry of b with the same packet (entry i at i * b.slot). */
export function fillBatch(b: Batch, size: number, src: Uint8Array, dst: Uint8Array): void {
  if (size > b.slot) throw new RangeError(`packet size ${size} exceeds the batch slot ${b.slot}`);
  for (let i = 0; i < b.cap; i++) {
    b.off[i] = i * b.slot;
    b.len[i] = size;
    writeUdp6(b.data, b.off[i]!, size, src, dst);
  }
}

/** Peer k of n: IPv4 first + ⌊k / portsPerIP⌋, port 1024 + k mod portsPerIP. */
export interface PeerPlan {
  firstIPv4: number;
  count: number;
  portsPerIP: number;
}

export const FIRST_PEER_PORT = 1024;
const MAX_PORTS_PER_IP = 50_000;

/** Spreads `count` peers over as few IPv4 addresses as the port range allows. */
export function peerPlan(firstIPv4: number, count: number): PeerPlan {
  if (!Number.isInteger(count) || count < 1) throw new RangeError(`peer count ${count}: use a positive integer`);
  const portsPerIP = Math.min(count, MAX_PORTS_PER_IP);
  return { firstIPv4, count, portsPerIP };
}

/** Number of distinct IPv4 addresses a plan uses. */
export function planIPv4s(p: PeerPlan): number {
  return Math.ceil(p.count / p.portsPerIP);
}

export function peerOf(p: PeerPlan, k: number): { ipv4: number; port: number } {
  return { ipv4: (p.firstIPv4 + Math.floor(k / p.portsPerIP)) >>> 0, port: FIRST_PEER_PORT + (k % p.portsPerIP) };
}

/**
 * Sum of the UDP checksum's words for the IPv6/UDP packet at off, leaving
 * out the checksum field and the 8 bytes at vary (the low half of the source
 * or destination address, which a cycler rewrites per packet). Adding those
 * 8 bytes back and folding gives the checksum.
 */
function partialSum(d: Uint8Array, off: number, len: number, vary: number): number {
  const u = off + IPV6_HEADER,
    udpLen = len - IPV6_HEADER;
  let acc = sumWords(d, off + 8, 32) - sumWords(d, vary, 8); // the addresses, but for the varying half
  acc += udpLen + NH_UDP;
  acc += sumWords(d, u, 6); // ports and length
  acc += sumWords(d, u + 8, udpLen - 8); // payload
  return acc;
}

function storeChecksum(d: Uint8Array, off: number, base: number, vary: number): void {
  let c = ~fold(base + sumWords(d, vary, 8)) & 0xffff;
  if (c === 0) c = 0xffff;
  d[off + IPV6_HEADER + 6] = c >>> 8;
  d[off + IPV6_HEADER + 7] = c & 0xff;
}

/**
 * Rewrites the destinations of a batch filled by fillBatch, cycling through
 * the peers of a plan (6bed4 addresses under prefix8). Keeps checksums valid.
 */
export class PeerCycler {
  private k = 0;
  private readonly base: number;
  private readonly prefix8: Uint8Array;

  constructor(
    private readonly b: Batch,
    prefix8: Uint8Array,
    private readonly plan: PeerPlan,
  ) {
    this.prefix8 = prefix8.subarray(0, 8);
    // The same for every entry: same size, source and payload.
    this.base = partialSum(b.data, b.off[0]!, b.len[0]!, b.off[0]! + OFF_DST + 8);
  }

  /** Gives entries [0, n) the next n peers. */
  next(n: number): void {
    const d = this.b.data,
      plan = this.plan;
    let k = this.k;
    for (let i = 0; i < n; i++) {
      const off = this.b.off[i]!;
      const ipv4 = (plan.firstIPv4 + Math.floor(k / plan.portsPerIP)) >>> 0;
      writeAddress(d, off + OFF_DST, this.prefix8, ipv4, FIRST_PEER_PORT + (k % plan.portsPerIP), 1);
      storeChecksum(d, off, this.base, off + OFF_DST + 8);
      if (++k === plan.count) k = 0;
    }
    this.k = k;
  }
}

/** IPv4 + UDP headers in front of the IPv6 packet of a 4→6 datagram. */
export const IPV4_UDP = 28;

/**
 * Fills every entry of b with an IPv4/UDP datagram to dstV4:dstPort carrying
 * a `size`-byte IPv6/UDP packet to innerDst, as a peer would send it (TUN
 * generator of the 4→6 many-peers rows: sources are set by PeerSourceCycler).
 */
export function fillBatch4(
  b: Batch,
  size: number,
  dstV4: number,
  dstPort: number,
  innerDst: Uint8Array,
  prefix8: Uint8Array,
): void {
  const total = IPV4_UDP + size;
  if (total > b.slot) throw new RangeError(`datagram size ${total} exceeds the batch slot ${b.slot}`);
  // The cycler rewrites only the low half of the source: the /64 must be in place already.
  const placeholder = new Uint8Array(16);
  placeholder.set(prefix8.subarray(0, 8));
  for (let i = 0; i < b.cap; i++) {
    const off = (b.off[i] = i * b.slot);
    b.len[i] = total;
    const d = b.data;
    d.fill(0, off, off + IPV4_UDP);
    d[off] = 0x45;
    d[off + 2] = total >>> 8;
    d[off + 3] = total & 0xff;
    d[off + 6] = 0x40; // don't fragment
    d[off + 8] = 64;
    d[off + 9] = NH_UDP;
    d[off + 16] = dstV4 >>> 24;
    d[off + 17] = (dstV4 >>> 16) & 0xff;
    d[off + 18] = (dstV4 >>> 8) & 0xff;
    d[off + 19] = dstV4 & 0xff;
    const udpLen = 8 + size;
    d[off + 22] = dstPort >>> 8;
    d[off + 23] = dstPort & 0xff;
    d[off + 24] = udpLen >>> 8;
    d[off + 25] = udpLen & 0xff;
    // UDP checksum 0: "none", allowed over IPv4; the IPv6 packet inside has its own.
    writeUdp6(d, off + IPV4_UDP, size, placeholder, innerDst);
  }
}

/**
 * Gives the datagrams of a fillBatch4 batch the sources of successive peers:
 * IPv4 source and UDP source port, and the matching 6bed4 source address of
 * the IPv6 packet inside (so the router's originator check passes), with the
 * IPv4 header and inner UDP checksums kept valid.
 */
export class PeerSourceCycler {
  private k = 0;
  private readonly base6: number;
  private readonly base4: number;
  private readonly prefix8: Uint8Array;

  constructor(
    private readonly b: Batch,
    prefix8: Uint8Array,
    private readonly plan: PeerPlan,
  ) {
    this.prefix8 = prefix8.subarray(0, 8);
    const off = b.off[0]!,
      inner = off + IPV4_UDP;
    this.base6 = partialSum(b.data, inner, b.len[0]! - IPV4_UDP, inner + OFF_SRC + 8);
    // IPv4 header words but the checksum (10..11) and the source (12..15).
    this.base4 = sumWords(b.data, off, 10) + sumWords(b.data, off + 16, 4);
  }

  next(n: number): void {
    const d = this.b.data,
      plan = this.plan;
    let k = this.k;
    for (let i = 0; i < n; i++) {
      const off = this.b.off[i]!,
        inner = off + IPV4_UDP;
      const ipv4 = (plan.firstIPv4 + Math.floor(k / plan.portsPerIP)) >>> 0;
      const port = FIRST_PEER_PORT + (k % plan.portsPerIP);
      d[off + 12] = ipv4 >>> 24;
      d[off + 13] = (ipv4 >>> 16) & 0xff;
      d[off + 14] = (ipv4 >>> 8) & 0xff;
      d[off + 15] = ipv4 & 0xff;
      const c4 = ~fold(this.base4 + (ipv4 >>> 16) + (ipv4 & 0xffff)) & 0xffff;
      d[off + 10] = c4 >>> 8;
      d[off + 11] = c4 & 0xff;
      d[off + 20] = port >>> 8;
      d[off + 21] = port & 0xff;
      writeAddress(d, inner + OFF_SRC, this.prefix8, ipv4, port, 1);
      storeChecksum(d, inner, this.base6, inner + OFF_SRC + 8);
      if (++k === plan.count) k = 0;
    }
    this.k = k;
  }
}
